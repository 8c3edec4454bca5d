/*
 * shape_render.h - draws pictures of kiln's "shapes" data set in C, for the
 * image checker's tests: the conventions of tools/shapes/ (see
 * tools/image_checker.h), written down a second time and independently of
 * the checker, plus the faults a generated picture has (blur, noise, colour
 * shifts, a background gradient, blotches, specks).
 */
#ifndef KILN_TESTS_SHAPE_RENDER_H
#define KILN_TESTS_SHAPE_RENDER_H

#include <stdint.h>

enum { RENDER_CIRCLE, RENDER_SQUARE, RENDER_TRIANGLE, RENDER_CROSS, RENDER_SHAPE_COUNT };

/* The 8 shape colours, then gray (a background only). */
enum { RENDER_COLOUR_COUNT = 9, RENDER_SHAPE_COLOUR_COUNT = 8, RENDER_GRAY = 8 };

/* Positions, rows top to bottom: index = 3 * row + column. */
enum { RENDER_POSITION_COUNT = 9 };

extern const char *const render_shape_names[RENDER_SHAPE_COUNT];
extern const char *const render_colour_names[RENDER_COLOUR_COUNT];
extern const uint8_t render_colour_rgb[RENDER_COLOUR_COUNT][3];
extern const char *const render_position_names[RENDER_POSITION_COUNT];

typedef struct render_scene {
    int shape;            /* RENDER_CIRCLE ... */
    int colour;           /* 0..7 */
    int background;       /* 0..8, not colour */
    int position;         /* 0..8 */
    int large;            /* 28 px instead of 16 (at 64x64) */
    float jitter_x, jitter_y; /* pixels at 64x64, the data set's are -3..3 */
} render_scene;

typedef struct render_faults {
    int hard_edges;       /* 1: each pixel all shape or all background; 0: coverage from 16 samples */
    float blur;           /* Gaussian sigma, pixels at 64x64 */
    float noise;          /* additive Gaussian noise, sigma per channel */
    float shape_gain;     /* the shape's colour times this (0: 1), before the shift */
    int shape_shift[3];   /* added to the shape's colour */
    int background_shift[3];
    float gradient;       /* background drift: each channel ramps by up to +-gradient
                             from the centre to the edge, in a random direction */
    int blotches;         /* soft discs of 2..6 px radius, each shifting the colour under it */
    float blotch_amp;     /* by up to +-blotch_amp per channel */
    int specks;           /* 1..2 px squares of a random palette colour anywhere */
    uint64_t seed;        /* for the random parts */
} render_faults;

/* Draws the scene into rgb (width * height * 3 bytes, rows top to bottom).
 * Geometry scales as the checker's: positions by width/64 and height/64, the
 * size by min(width, height)/64. faults may be NULL (clean, soft edges). */
void render_shapes(const render_scene *scene, const render_faults *faults, int width, int height, uint8_t *rgb);

/* The scene's caption in the data set's form, e.g. "a small red circle on
 * a blue background, top left". */
void render_caption(const render_scene *scene, char *buf, int size);

#endif
