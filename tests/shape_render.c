#include "shape_render.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_support.h"

const char *const render_shape_names[RENDER_SHAPE_COUNT] = {"circle", "square", "triangle", "cross"};
const char *const render_colour_names[RENDER_COLOUR_COUNT] = {"red",    "green", "blue",  "yellow", "purple",
                                                              "orange", "white", "black", "gray"};
const uint8_t render_colour_rgb[RENDER_COLOUR_COUNT][3] = {
    {220, 40, 40},  {40, 180, 60},  {40, 80, 220}, {240, 220, 40},  {140, 60, 180},
    {245, 140, 30}, {245, 245, 245}, {20, 20, 20},  {128, 128, 128},
};
const char *const render_position_names[RENDER_POSITION_COUNT] = {
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
};

/* Whether (u, v), relative to the shape's centre in units of its size, is
 * inside it. */
static int inside(int shape, float u, float v)
{
    if (fabsf(u) > 0.5f || fabsf(v) > 0.5f)
        return 0;
    switch (shape) {
    case RENDER_CIRCLE:
        return u * u + v * v <= 0.25f;
    case RENDER_SQUARE:
        return 1;
    case RENDER_TRIANGLE: /* apex at v = -0.5, base at v = +0.5 as wide as the shape is tall */
        return fabsf(u) <= 0.5f * (v + 0.5f);
    case RENDER_CROSS:    /* arms 0.4 of the size thick */
        return fabsf(u) <= 0.2f || fabsf(v) <= 0.2f;
    default:
        return 0;
    }
}

/* A roughly normal number, mean 0 and variance 1, from the sum of four
 * 16-bit uniforms (Irwin-Hall; tails cut at 3.46 sigma, which noise for a
 * test needs no more than it needs the speed of logf and sincosf). */
static float gaussian(test_rng *r)
{
    uint64_t bits = test_rng_next(r);
    float sum = (float)(bits & 0xffff) + (float)((bits >> 16) & 0xffff) + (float)((bits >> 32) & 0xffff) +
                (float)(bits >> 48);
    return (sum * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

/* Separable Gaussian blur of the window [x0, x1) x [y0, y1) of a [h, w, 3]
 * float image, reading past the window into the image (its edge
 * replicated). The rest of the picture (background, gradient, blotches) is
 * smooth, where a blur changes next to nothing, so only the window around
 * the shape is blurred: most of the cost of a render otherwise. */
static void blur(float *img, int w, int h, float sigma, int x0, int y0, int x1, int y1)
{
    int radius = (int)ceilf(3.0f * sigma);
    if (radius < 1)
        return;
    x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0, x1 = x1 > w ? w : x1, y1 = y1 > h ? h : y1;
    int ww = x1 - x0, rows = (y1 - y0) + 2 * radius; /* the rows the second pass reads */
    if (ww <= 0 || y1 <= y0)
        return;
    float *kernel = malloc((size_t)(2 * radius + 1) * sizeof *kernel);
    float *across = malloc((size_t)rows * ww * 3 * sizeof *across); /* [rows, ww, 3] */
    if (!kernel || !across) {
        fprintf(stderr, "shape_render: out of memory\n");
        exit(1);
    }
    float total = 0;
    for (int k = -radius; k <= radius; k++)
        total += kernel[k + radius] = expf(-0.5f * (float)(k * k) / (sigma * sigma));
    for (int k = 0; k <= 2 * radius; k++)
        kernel[k] /= total;
    for (int r = 0; r < rows; r++) {
        int y = y0 - radius + r;
        y = y < 0 ? 0 : y >= h ? h - 1 : y;
        const float *row = img + 3 * (size_t)y * w;
        for (int x = 0; x < ww; x++) {
            float sum[3] = {0, 0, 0};
            for (int k = -radius; k <= radius; k++) {
                int xx = x0 + x + k;
                xx = xx < 0 ? 0 : xx >= w ? w - 1 : xx;
                for (int c = 0; c < 3; c++)
                    sum[c] += kernel[k + radius] * row[3 * xx + c];
            }
            for (int c = 0; c < 3; c++)
                across[3 * ((size_t)r * ww + x) + c] = sum[c];
        }
    }
    for (int y = y0; y < y1; y++)
        for (int x = 0; x < ww; x++) {
            float sum[3] = {0, 0, 0};
            for (int k = 0; k <= 2 * radius; k++)
                for (int c = 0; c < 3; c++)
                    sum[c] += kernel[k] * across[3 * ((size_t)(y - y0 + k) * ww + x) + c];
            for (int c = 0; c < 3; c++)
                img[3 * ((size_t)y * w + x0 + x) + c] = sum[c];
        }
    free(kernel);
    free(across);
}

void render_shapes(const render_scene *scene, const render_faults *faults, int width, int height, uint8_t *rgb)
{
    static const render_faults clean = {0};
    const render_faults *f = faults ? faults : &clean;
    test_rng rng = test_rng_seed(f->seed);
    int w = width, h = height;
    float sx = (float)w / 64.0f, sy = (float)h / 64.0f, ss = sx < sy ? sx : sy;
    float cx = (16.0f * (float)(1 + scene->position % 3) + scene->jitter_x) * sx;
    float cy = (16.0f * (float)(1 + scene->position / 3) + scene->jitter_y) * sy;
    float size = (scene->large ? 28.0f : 16.0f) * ss;

    float fg[3], bg[3], ramp[3];
    for (int c = 0; c < 3; c++) {
        fg[c] = render_colour_rgb[scene->colour][c] * (f->shape_gain > 0 ? f->shape_gain : 1.0f) +
                (float)f->shape_shift[c];
        bg[c] = render_colour_rgb[scene->background][c] + (float)f->background_shift[c];
        ramp[c] = test_rng_uniform(&rng, -f->gradient, f->gradient);
    }
    float angle = test_rng_uniform(&rng, 0.0f, 6.2831853f), ca = cosf(angle), sa = sinf(angle);

    float *img = malloc((size_t)w * h * 3 * sizeof *img);
    if (!img) {
        fprintf(stderr, "shape_render: out of memory\n");
        exit(1);
    }
    /* only pixels near the shape's box can be covered */
    int bx0 = (int)floorf(cx - size / 2) - 1, bx1 = (int)ceilf(cx + size / 2) + 1;
    int by0 = (int)floorf(cy - size / 2) - 1, by1 = (int)ceilf(cy + size / 2) + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int hits = 0, samples = f->hard_edges ? 1 : 16;
            if (x < bx0 || x > bx1 || y < by0 || y > by1)
                samples = 1;
            for (int s = 0; s < samples; s++) {
                float px = (float)x + (f->hard_edges ? 0.5f : ((float)(s % 4) + 0.5f) / 4.0f);
                float py = (float)y + (f->hard_edges ? 0.5f : ((float)(s / 4) + 0.5f) / 4.0f);
                hits += inside(scene->shape, (px - cx) / size, (py - cy) / size);
            }
            float cover = (float)hits / (float)samples;
            /* the ramp: +-1 from the centre to the edge along the direction */
            float t = (((float)x + 0.5f) / (float)w * 2.0f - 1.0f) * ca + (((float)y + 0.5f) / (float)h * 2.0f - 1.0f) * sa;
            for (int c = 0; c < 3; c++)
                img[3 * (y * w + x) + c] = cover * fg[c] + (1.0f - cover) * (bg[c] + ramp[c] * t);
        }

    for (int b = 0; b < f->blotches; b++) {
        float bx = test_rng_uniform(&rng, 0, (float)w), by = test_rng_uniform(&rng, 0, (float)h);
        float radius = test_rng_uniform(&rng, 2.0f, 6.0f) * ss, shift[3];
        for (int c = 0; c < 3; c++)
            shift[c] = test_rng_uniform(&rng, -f->blotch_amp, f->blotch_amp);
        /* exp(-9) is nothing: 3 radii suffice */
        int x0 = (int)(bx - 3 * radius), x1 = (int)(bx + 3 * radius), y0 = (int)(by - 3 * radius),
            y1 = (int)(by + 3 * radius);
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < h; y++)
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < w; x++) {
                float d2 = ((float)x + 0.5f - bx) * ((float)x + 0.5f - bx) + ((float)y + 0.5f - by) * ((float)y + 0.5f - by);
                float weight = expf(-d2 / (radius * radius));
                for (int c = 0; c < 3; c++)
                    img[3 * (y * w + x) + c] += weight * shift[c];
            }
    }

    if (f->blur > 0) {
        int pad = (int)ceilf(3.0f * f->blur * ss) + 1;
        blur(img, w, h, f->blur * ss, bx0 - pad, by0 - pad, bx1 + 1 + pad, by1 + 1 + pad);
    }

    if (f->noise > 0)
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            img[i] += f->noise * gaussian(&rng);

    for (int k = 0; k < f->specks; k++) {
        int side = 1 + (int)(test_rng_next(&rng) % 2);
        int x0 = (int)(test_rng_next(&rng) % (uint64_t)w), y0 = (int)(test_rng_next(&rng) % (uint64_t)h);
        const uint8_t *colour = render_colour_rgb[test_rng_next(&rng) % RENDER_COLOUR_COUNT];
        for (int y = y0; y < y0 + side && y < h; y++)
            for (int x = x0; x < x0 + side && x < w; x++)
                for (int c = 0; c < 3; c++)
                    img[3 * (y * w + x) + c] = colour[c];
    }

    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        float v = img[i] + 0.5f; /* rounded by the conversion, without a call to roundf */
        rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    free(img);
}

void render_caption(const render_scene *scene, char *buf, int size)
{
    snprintf(buf, (size_t)size, "a %s %s %s on a %s background, %s", scene->large ? "large" : "small",
             render_colour_names[scene->colour], render_shape_names[scene->shape],
             render_colour_names[scene->background], render_position_names[scene->position]);
}
