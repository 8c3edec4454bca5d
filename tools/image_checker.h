/*
 * image_checker.h - tells what a picture of kiln's "shapes" data set shows,
 * by plain image analysis (no model), so that tests can ask whether a
 * generated image shows what its prompt asked for.
 *
 * The data set (tools/shapes/): 64x64 RGB, a plain background, one shape.
 *   shapes      circle, square (axis-aligned), triangle (isosceles, apex up,
 *               base = height), cross (a plus sign, arms 0.4 of its size)
 *   colours     red green blue yellow purple orange white black; the
 *               background is any of them but the shape's, or gray
 *   sizes       small (bounding box 16 px), large (28 px)
 *   positions   bounding-box centre at x, y in {16, 32, 48} (jitter: the
 *               generator's +-2 px; the checker allows +-3 and more):
 *               "top left" "top" "top right" "left" "center" "right"
 *               "bottom left" "bottom" "bottom right"
 *   captions    "a small red circle on a blue background, top left"
 * Other image sizes are read with the geometry scaled (positions by width
 * and height over 64, sizes by the smaller of the two over 64); a picture
 * over 256 px on its shorter side is shrunk by a whole factor first (the
 * mean of each f x f block), its measurements given back in its own pixels.
 *
 * How it looks (image_checker.c says why each step is there): a background
 * model (a robust plane per channel, fitted to the border, then to all of
 * the background); the foreground as pixels closer to the shape's colour
 * than to the local background; the largest 4-connected region with its
 * holes filled; then its colour (median of its interior, nearest named
 * colour by RGB and CIELAB distance together), its shape (the best
 * intersection-over-union with each ideal shape fitted to the region, with
 * soft edges where the picture's are), its size and position (from the
 * fitted shape).
 *
 * Everything here is thread-safe: no state outside the arguments.
 */
#ifndef KILN_TOOLS_IMAGE_CHECKER_H
#define KILN_TOOLS_IMAGE_CHECKER_H

#include <stdint.h>

#include "kiln.h"

/* The attributes a caption names and a verdict gives. */
typedef enum image_attr {
    IMAGE_ATTR_SHAPE,
    IMAGE_ATTR_COLOUR,
    IMAGE_ATTR_BACKGROUND,
    IMAGE_ATTR_POSITION,
    IMAGE_ATTR_SIZE,
    IMAGE_ATTR_COUNT
} image_attr;

/* Shapes, in the order of image_verdict.shape_scores. */
typedef enum image_shape {
    IMAGE_SHAPE_CIRCLE,
    IMAGE_SHAPE_SQUARE,
    IMAGE_SHAPE_TRIANGLE,
    IMAGE_SHAPE_CROSS,
    IMAGE_SHAPE_COUNT
} image_shape;

#define IMAGE_NAME_MAX 16

typedef struct image_verdict {
    /* 1: a foreground region was found. 0: none (an image of one colour, or
     * nothing larger than a speck): shape and colour are "none", position
     * and size "", and only the background is named. */
    int found;

    /* Names as captions spell them. shape is "unknown" when the region fits
     * no ideal shape (best score below IMAGE_MIN_SHAPE_SCORE); colour and
     * background may be "gray", which no caption asks of a shape. */
    char shape[IMAGE_NAME_MAX];
    char colour[IMAGE_NAME_MAX];
    char background[IMAGE_NAME_MAX];
    char position[IMAGE_NAME_MAX];
    char size[8];

    /* 0..1 per attribute, indexed by image_attr: how far the measurement is
     * from the decision boundary (1: far; near 0: a coin toss). confidence
     * is the smallest of them. */
    float attr_confidence[IMAGE_ATTR_COUNT];
    float confidence;

    /* ---- measurements, in pixels of this image, for diagnostics ---- */
    int area;                      /* pixels in the region */
    int bbox_x0, bbox_y0;          /* its bounding box: first pixel ... */
    int bbox_x1, bbox_y1;          /* ... one past the last */
    float centroid_x, centroid_y;  /* mean of pixel centres */
    float fill_ratio;              /* area / bounding-box area */
    float aspect;                  /* bounding-box width / height */
    float corner_fill;             /* occupancy of the 4 bbox corners (20% x 20% each) */
    float top_bottom_width;        /* row width at 25% of the height over width at 75% */
    float shape_scores[IMAGE_SHAPE_COUNT]; /* best IoU with each ideal shape */
    float fit_x, fit_y, fit_size;  /* centre and size of the best-fitting ideal shape */
    float colour_rgb[3];           /* the region's interior colour (median) */
    float background_rgb[3];       /* the background's colour (median) */
    float contrast;                /* RGB distance between the two */
    float noise;                   /* estimated noise of the background, sigma per channel */
    float edge_softness;           /* share of the shape's colour 2 px outside its edge */
    float edge_blur;               /* the Gaussian blur that implies, sigma in px (0: sharp) */
} image_verdict;

/* Below this IoU with every ideal shape, the shape is "unknown". */
#define IMAGE_MIN_SHAPE_SCORE 0.55f

/* Looks at a width x height RGB image (rows top to bottom, 3 bytes a pixel,
 * borrowed for the call) and fills *out. An image with no foreground is not
 * an error: *out says found = 0. Errors: KILN_ERR_INVALID (rgb or out NULL,
 * or the image smaller than 8x8 or larger than KILN_MAX_INIT_PIXELS),
 * KILN_ERR_NOMEM; *out is untouched on failure. Thread-safe. */
kiln_status image_check(const uint8_t *rgb, int width, int height, image_verdict *out);

/* What a caption asks for: each field a name as in image_verdict, or ""
 * where the caption leaves it open. */
typedef struct image_expectation {
    char shape[IMAGE_NAME_MAX];
    char colour[IMAGE_NAME_MAX];
    char background[IMAGE_NAME_MAX];
    char position[IMAGE_NAME_MAX];
    char size[8];
} image_expectation;

/* Reads a caption in the data set's form ("a small red circle on a blue
 * background, top left"; case, punctuation and word order are forgiving:
 * "grey", "centre", "middle", "big" and plurals are understood, other words
 * ignored) into *out, zeroed first. A colour word directly before
 * "background" names the background; another names the shape. Returns the
 * number of attributes found (0..IMAGE_ATTR_COUNT), or -1 when caption or
 * out is NULL or the caption names two different values for one attribute
 * ("a red blue circle"). */
int image_parse_caption(const char *caption, image_expectation *out);

/* The verdict's value of one attribute ("" for an attribute out of range). */
const char *image_verdict_value(const image_verdict *v, image_attr attr);

/* The caption's value of one attribute ("" when open or out of range). */
const char *image_expectation_value(const image_expectation *e, image_attr attr);

/* "shape", "colour", "background", "position", "size". */
const char *image_attr_name(image_attr attr);

/* 1 if the verdict agrees with e on attr (or e leaves attr open), else 0. */
int image_verdict_matches_attr(const image_verdict *v, const image_expectation *e, image_attr attr);

/* 1 if the verdict agrees with e on every attribute, else 0. When mismatched
 * is not NULL it gets a bit (1u << attr) per attribute that disagrees. */
int image_verdict_matches(const image_verdict *v, const image_expectation *e, unsigned *mismatched);

#endif
