/*
 * image_checker.c - what a "shapes" picture shows, by image analysis.
 *
 * Generated images are the input, so every step assumes soft edges, colour
 * shifts, noise, a background that is not flat and stray specks:
 *
 *  1. Background: a plane a + b*u + c*v per channel, fitted to the border
 *     ring with outliers rejected (a large shape may cover a fifth of the
 *     ring); a plane rather than one colour because generated backgrounds
 *     drift across the picture.
 *  2. A first foreground: distance of the 3x3-smoothed image from the
 *     plane above a threshold set by the border's own noise; its largest
 *     region gives the shape's colour (the median of its eroded interior,
 *     away from blurred edges).
 *  3. The foreground proper: a pixel is shape when it lies past halfway
 *     from the local background towards the shape's colour. The 50% point
 *     of a blurred edge is where the sharp edge was, so sizes survive blur
 *     at any contrast. Under noise a 3x3 majority vote cleans the mask;
 *     then the largest 4-connected region (specks are separate regions, or
 *     small bumps on it) with its holes filled (blotches inside the shape).
 *     The background plane is refitted to everything away from the region
 *     and the step runs again.
 *  4. Shape: the intersection-over-union of the region with each ideal
 *     shape, placed two ways: in the region's bounding box (right when the
 *     shape is cut by the image border), and from its area and centroid
 *     (right when a speck stuck to the shape stretches the box). IoU folds
 *     the usual features into one number: the fill ratio of the box (circle
 *     0.785, square 1, triangle 0.5, cross 0.64), the width profile
 *     (a triangle widens downwards, a cross is narrow-wide-narrow) and the
 *     corners (a square has them, a circle not). Those features are still
 *     measured and reported, for diagnostics.
 *  5. Size and position from the best-fitting ideal shape: its size against
 *     22 px (between 16 and 28), its centre against 24 and 40 px (between
 *     16, 32 and 48), all scaled to the image.
 *  6. Colours: the nearest named colour by RGB and CIELAB distance
 *     together (see nearest_colour: each alone confuses a pair that the
 *     other keeps apart).
 */
#include "image_checker.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* The data set's geometry, on its 64 px images. */
#define REF_SIZE 64.0f
#define COLUMN_LEFT_EDGE 24.0f  /* between x = 16 and 32 */
#define COLUMN_RIGHT_EDGE 40.0f /* between x = 32 and 48 */
#define HALF_CELL 8.0f          /* distance from a position to an edge */
#define SIZE_EDGE 22.0f         /* between 16 and 28 */
#define SIZE_HALF_GAP 6.0f

#define MIN_IMAGE_SIDE 8
#define MAX_WORK_SIDE 256 /* larger pictures are shrunk to 128..255 on their shorter side */

typedef struct named_colour {
    const char *name;
    float rgb[3];
} named_colour;

/* The data set's colours; gray only ever as a background, but a gray shape
 * is named so, so that it matches no caption. */
static const named_colour palette[] = {
    {"red", {220, 40, 40}},     {"green", {40, 180, 60}},   {"blue", {40, 80, 220}},
    {"yellow", {240, 220, 40}}, {"purple", {140, 60, 180}}, {"orange", {245, 140, 30}},
    {"white", {245, 245, 245}}, {"black", {20, 20, 20}},    {"gray", {128, 128, 128}},
};
#define PALETTE_COUNT ((int)(sizeof palette / sizeof palette[0]))

static const char *const shape_names[IMAGE_SHAPE_COUNT] = {"circle", "square", "triangle", "cross"};
_Static_assert(sizeof shape_names / sizeof shape_names[0] == IMAGE_SHAPE_COUNT, "one name per shape");

/* Area of each ideal shape over its bounding box's. */
static const float shape_fill[IMAGE_SHAPE_COUNT] = {0.78539816f, 1.0f, 0.5f, 0.64f};

static const char *const attr_names[IMAGE_ATTR_COUNT] = {"shape", "colour", "background", "position", "size"};
_Static_assert(sizeof attr_names / sizeof attr_names[0] == IMAGE_ATTR_COUNT, "one name per attribute");

static float clampf(float x, float lo, float hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* ---- colour ------------------------------------------------------------ */

static float srgb_to_linear(float c)
{
    c = clampf(c, 0.0f, 255.0f) / 255.0f;
    return c <= 0.04045f ? c / 12.92f : powf((c + 0.055f) / 1.055f, 2.4f);
}

static float lab_f(float t)
{
    return t > 0.008856f ? cbrtf(t) : 7.787f * t + 16.0f / 116.0f;
}

/* sRGB (0..255) to CIELAB, D65 white. */
static void rgb_to_lab(const float rgb[3], float lab[3])
{
    float r = srgb_to_linear(rgb[0]), g = srgb_to_linear(rgb[1]), b = srgb_to_linear(rgb[2]);
    float x = (0.4124f * r + 0.3576f * g + 0.1805f * b) / 0.95047f;
    float y = 0.2126f * r + 0.7152f * g + 0.0722f * b;
    float z = (0.0193f * r + 0.1192f * g + 0.9505f * b) / 1.08883f;
    float fx = lab_f(x), fy = lab_f(y), fz = lab_f(z);
    lab[0] = 116.0f * fy - 16.0f;
    lab[1] = 500.0f * (fx - fy);
    lab[2] = 200.0f * (fy - fz);
}

/* Index of the palette colour nearest rgb, and in *confidence how much
 * nearer it is than the runner-up, 0..1. The distance adds RGB and CIELAB
 * distances, each over the typical gap between neighbours of the palette
 * in that space (100 and 45). RGB alone follows per-channel drift, which
 * is how generated colours go wrong, but it takes a dim yellow for orange
 * and a dim orange for red; CIELAB alone follows brightness, but turns a
 * bluish orange red and a reddish purple blue. Tried on 3,600 sampled
 * drifts of each kind: per channel +-20 twice over, the sum misses 5, RGB
 * 3, CIELAB 12; brightness 0.8..1.1 with +-20 per channel, the sum 3, RGB
 * 29, CIELAB 0. */
static int nearest_colour(const float rgb[3], float *confidence)
{
    float lab[3];
    rgb_to_lab(rgb, lab);
    int best = 0;
    float d1 = INFINITY, d2 = INFINITY;
    for (int i = 0; i < PALETTE_COUNT; i++) {
        float p[3], dl = 0, dr = 0;
        rgb_to_lab(palette[i].rgb, p);
        for (int c = 0; c < 3; c++) {
            dl += (lab[c] - p[c]) * (lab[c] - p[c]);
            dr += (rgb[c] - palette[i].rgb[c]) * (rgb[c] - palette[i].rgb[c]);
        }
        float d = sqrtf(dr) / 100.0f + sqrtf(dl) / 45.0f;
        if (d < d1) {
            d2 = d1;
            d1 = d;
            best = i;
        } else if (d < d2) {
            d2 = d;
        }
    }
    *confidence = d1 + d2 > 0 ? (d2 - d1) / (d2 + d1) : 0.0f;
    return best;
}

/* ---- statistics -------------------------------------------------------- */

/* Per-channel median of the pixels listed in idx. */
static void median_rgb(const uint8_t *rgb, const int *idx, int count, float out[3])
{
    for (int c = 0; c < 3; c++) {
        int hist[256] = {0};
        for (int i = 0; i < count; i++)
            hist[rgb[3 * (size_t)idx[i] + c]]++;
        int half = (count + 1) / 2, seen = 0, v = 0;
        while (v < 255 && seen + hist[v] < half)
            seen += hist[v++];
        out[c] = (float)v;
    }
}

/* Median of count non-negative values, by a histogram of half units up to
 * 256 (larger values land in the last bin: only medians of background
 * residuals are asked for, which are small). */
#define DIST_BINS 512
static float median_distance(const float *values, int count, int *hist)
{
    memset(hist, 0, DIST_BINS * sizeof *hist);
    for (int i = 0; i < count; i++) {
        int b = (int)(values[i] * 2.0f);
        hist[b < 0 ? 0 : b >= DIST_BINS ? DIST_BINS - 1 : b]++;
    }
    int half = (count + 1) / 2, seen = 0, b = 0;
    while (b < DIST_BINS - 1 && seen + hist[b] < half)
        seen += hist[b++];
    return ((float)b + 0.5f) / 2.0f;
}

/* ---- the background plane ---------------------------------------------- */

typedef struct plane {
    float a[3], bu[3], bv[3]; /* value = a + bu*u + bv*v, u and v in [-1, 1] across the image */
    float su, sv;             /* u = (x + 0.5) * su - 1 */
} plane;

/* out[3 * (y * w + x) + c] = the plane at image pixel (ox + x, oy + y),
 * channel c, for a w x h window. */
static void plane_fill(const plane *p, int ox, int oy, int w, int h, float *out)
{
    for (int y = 0; y < h; y++) {
        float v = ((float)(oy + y) + 0.5f) * p->sv - 1.0f;
        for (int x = 0; x < w; x++) {
            float u = ((float)(ox + x) + 0.5f) * p->su - 1.0f;
            for (int c = 0; c < 3; c++)
                out[3 * ((size_t)y * w + x) + c] = p->a[c] + p->bu[c] * u + p->bv[c] * v;
        }
    }
}

/* Least squares over the pixels with keep[i] set; keeps the old plane when
 * they do not pin down a slope (too few, or all on a line). */
static void plane_fit(plane *p, const uint8_t *rgb, const int *idx, const float *us, const float *vs,
                      const uint8_t *keep, int count)
{
    /* float sums of a few hundred terms of |u|, |v| <= 1 and z <= 255 keep
     * 6 digits, plenty; the solve is in double */
    float fn = 0, fsu = 0, fsv = 0, fsuu = 0, fsuv = 0, fsvv = 0, fr[3] = {0}, fru[3] = {0}, frv[3] = {0};
    for (int i = 0; i < count; i++) {
        if (!keep[i])
            continue;
        float u = us[i], v = vs[i];
        const uint8_t *px = rgb + 3 * (size_t)idx[i];
        fn += 1;
        fsu += u, fsv += v, fsuu += u * u, fsuv += u * v, fsvv += v * v;
        for (int c = 0; c < 3; c++) {
            float z = px[c];
            fr[c] += z, fru[c] += z * u, frv[c] += z * v;
        }
    }
    double n = fn, su = fsu, sv = fsv, suu = fsuu, suv = fsuv, svv = fsvv;
    double r[3] = {fr[0], fr[1], fr[2]}, ru[3] = {fru[0], fru[1], fru[2]}, rv[3] = {frv[0], frv[1], frv[2]};
    if (n < 3)
        return;
    /* the normal equations [n su sv; su suu suv; sv suv svv] x = [r ru rv], by Cramer's rule */
    double det = n * (suu * svv - suv * suv) - su * (su * svv - suv * sv) + sv * (su * suv - suu * sv);
    if (fabs(det) < 1e-9 * n * n * n) {
        for (int c = 0; c < 3; c++)
            p->a[c] = (float)(r[c] / n), p->bu[c] = p->bv[c] = 0;
        return;
    }
    for (int c = 0; c < 3; c++) {
        double a = r[c] * (suu * svv - suv * suv) - su * (ru[c] * svv - suv * rv[c]) + sv * (ru[c] * suv - suu * rv[c]);
        double bu = n * (ru[c] * svv - suv * rv[c]) - r[c] * (su * svv - suv * sv) + sv * (su * rv[c] - ru[c] * sv);
        double bv = n * (suu * rv[c] - ru[c] * suv) - su * (su * rv[c] - ru[c] * sv) + r[c] * (su * suv - suu * sv);
        p->a[c] = (float)(a / det), p->bu[c] = (float)(bu / det), p->bv[c] = (float)(bv / det);
    }
}

/* Buffers for one image, or for the window around the shape (which may
 * use less of them than they hold: n <= capacity). */
typedef struct workspace {
    int w, h, n;
    float *dist;     /* [n] */
    float *scratch;  /* [n] */
    float *us, *vs;  /* [n] plane coordinates of a sample */
    int *idx;        /* [n] pixel indices of a sample */
    int *label;      /* [n] */
    int *stack;      /* [n] */
    int *sums;       /* [n, 3] row sums for the 3x3 box */
    float *bgimg;    /* [n, 3] the background plane, pixel by pixel */
    uint8_t *keep;   /* [n] */
    uint8_t *mask;   /* [n] */
    uint8_t *tmp;    /* [n] */
    uint8_t *core;   /* [n] */
    uint8_t *counts; /* [n] row counts for 3x3 votes */
    uint8_t *rgb;    /* [n, 3] the window's pixels (the window workspace only) */
    int hist[DIST_BINS];
} workspace;

/* One allocation for all the buffers of a w x h workspace; NULL if out of
 * memory. Free with free(). */
static workspace *workspace_create(int w, int h)
{
    size_t n = (size_t)w * (size_t)h;
    size_t per_pixel = 4 * sizeof(float) + 3 * sizeof(int) /* dist scratch us vs, idx label stack */
                       + 3 * sizeof(int) + 3 * sizeof(float) /* sums, bgimg */
                       + 5 + 3;                             /* keep mask tmp core counts, rgb */
    size_t bytes = sizeof(workspace) + n * per_pixel;
    workspace *ws = malloc(bytes);
    if (!ws)
        return NULL;
    ws->w = w, ws->h = h, ws->n = (int)n;
    char *p = (char *)(ws + 1); /* 4-byte items first, then bytes: all aligned */
    ws->dist = (float *)p, p += n * sizeof(float);
    ws->scratch = (float *)p, p += n * sizeof(float);
    ws->us = (float *)p, p += n * sizeof(float);
    ws->vs = (float *)p, p += n * sizeof(float);
    ws->idx = (int *)p, p += n * sizeof(int);
    ws->label = (int *)p, p += n * sizeof(int);
    ws->stack = (int *)p, p += n * sizeof(int);
    ws->sums = (int *)p, p += 3 * n * sizeof(int);
    ws->bgimg = (float *)p, p += 3 * n * sizeof(float);
    ws->keep = (uint8_t *)p, p += n;
    ws->mask = (uint8_t *)p, p += n;
    ws->tmp = (uint8_t *)p, p += n;
    ws->core = (uint8_t *)p, p += n;
    ws->counts = (uint8_t *)p, p += n;
    ws->rgb = (uint8_t *)p;
    return ws;
}

/* Uses ws (made for at least w x h pixels) for a w x h window. */
static void workspace_resize(workspace *ws, int w, int h)
{
    ws->w = w, ws->h = h, ws->n = w * h;
}

/* Fits the background plane to the count pixels of the image (width w) in
 * ws->idx, rejecting those far from it (the shape where it reaches the
 * border, specks), and returns the noise: the sigma per channel of the kept
 * residuals, read from their median norm (1.54 sigma for Gaussian noise in
 * 3 channels). */
static float background_fit(workspace *ws, const uint8_t *rgb, int w, int count, plane *p, int refit)
{
    if (!refit) { /* start from the median colour; a refit starts from p */
        float start[3];
        median_rgb(rgb, ws->idx, count, start);
        for (int c = 0; c < 3; c++)
            p->a[c] = start[c], p->bu[c] = p->bv[c] = 0;
    }
    for (int i = 0; i < count; i++) {
        ws->us[i] = ((float)(ws->idx[i] % w) + 0.5f) * p->su - 1.0f;
        ws->vs[i] = ((float)(ws->idx[i] / w) + 0.5f) * p->sv - 1.0f;
    }
    float med = 0;
    for (int iter = 0; iter < (refit ? 2 : 3); iter++) {
        for (int i = 0; i < count; i++) {
            const uint8_t *px = rgb + 3 * (size_t)ws->idx[i];
            float d2 = 0;
            for (int c = 0; c < 3; c++) {
                float d = (float)px[c] - (p->a[c] + p->bu[c] * ws->us[i] + p->bv[c] * ws->vs[i]);
                d2 += d * d;
            }
            ws->scratch[i] = sqrtf(d2);
        }
        med = median_distance(ws->scratch, count, ws->hist);
        float limit = fmaxf(6.0f, 3.0f * med);
        for (int i = 0; i < count; i++)
            ws->keep[i] = ws->scratch[i] <= limit;
        plane_fit(p, rgb, ws->idx, ws->us, ws->vs, ws->keep, count);
    }
    return med / 1.54f;
}

/* ---- masks ------------------------------------------------------------- */

/* Keeps only the largest 4-connected region of the mask; returns its area. */
static int keep_largest(workspace *ws, uint8_t *mask)
{
    int w = ws->w, h = ws->h, n = ws->n;
    memset(ws->label, 0, (size_t)ws->w * (size_t)ws->h * sizeof *ws->label);
    int next = 0, best = 0, best_area = 0;
    for (int start = 0; start < n; start++) {
        if (!mask[start] || ws->label[start])
            continue;
        int id = ++next, area = 0, top = 0;
        ws->label[start] = id;
        ws->stack[top++] = start;
        while (top) {
            int i = ws->stack[--top], x = i % w, y = i / w;
            area++;
            int nb[4] = {x > 0 ? i - 1 : -1, x < w - 1 ? i + 1 : -1, y > 0 ? i - w : -1, y < h - 1 ? i + w : -1};
            for (int k = 0; k < 4; k++) {
                if (nb[k] >= 0 && mask[nb[k]] && !ws->label[nb[k]]) {
                    ws->label[nb[k]] = id;
                    ws->stack[top++] = nb[k];
                }
            }
        }
        if (area > best_area)
            best_area = area, best = id;
    }
    for (int i = 0; i < n; i++)
        mask[i] = best && ws->label[i] == best;
    return best_area;
}

/* Bounding box (x0, y0, x1, y1 exclusive) of a mask; x1 = 0 when empty. */
static void mask_box(const uint8_t *mask, int w, int h, int box[4])
{
    box[0] = w, box[1] = h, box[2] = 0, box[3] = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (mask[y * w + x]) {
                box[0] = x < box[0] ? x : box[0], box[1] = y < box[1] ? y : box[1];
                box[2] = x + 1 > box[2] ? x + 1 : box[2], box[3] = y + 1 > box[3] ? y + 1 : box[3];
            }
}

/* Sets every pixel of a hole in the region to mask: every pixel that the
 * outside cannot reach. Only the region's bounding box can hold holes, so
 * the flood starts on the ring just around it (or the window's edge) and
 * stays inside. It goes 4-connected: a background pixel that touches the
 * outside only at a corner counts as a hole too, which only smooths the
 * region's edge. */
static void fill_holes(workspace *ws, uint8_t *mask)
{
    int w = ws->w, h = ws->h, top = 0, box[4];
    mask_box(mask, w, h, box);
    if (box[2] == 0)
        return;
    int x0 = box[0] > 0 ? box[0] - 1 : 0, y0 = box[1] > 0 ? box[1] - 1 : 0;
    int x1 = box[2] < w ? box[2] : w - 1, y1 = box[3] < h ? box[3] : h - 1; /* inclusive */
    uint8_t *outside = ws->tmp;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            int i = y * w + x;
            outside[i] = 0;
            if ((x == x0 || y == y0 || x == x1 || y == y1) && !mask[i]) {
                outside[i] = 1;
                ws->stack[top++] = i;
            }
        }
    while (top) {
        int i = ws->stack[--top], x = i % w, y = i / w;
        int nb[4] = {x > x0 ? i - 1 : -1, x < x1 ? i + 1 : -1, y > y0 ? i - w : -1, y < y1 ? i + w : -1};
        for (int k = 0; k < 4; k++) {
            if (nb[k] >= 0 && !mask[nb[k]] && !outside[nb[k]]) {
                outside[nb[k]] = 1;
                ws->stack[top++] = nb[k];
            }
        }
    }
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++)
            mask[y * w + x] |= !outside[y * w + x];
}

/* out = the number of set pixels in each 3x3 window of in (the edge
 * replicated), rows first with the row counts in tmp. */
static void count3(const uint8_t *in, uint8_t *out, uint8_t *tmp, int w, int h)
{
    for (int y = 0; y < h; y++) {
        const uint8_t *row = in + (size_t)y * w;
        uint8_t *t = tmp + (size_t)y * w;
        for (int x = 0; x < w; x++)
            t[x] = (uint8_t)(row[x > 0 ? x - 1 : x] + row[x] + row[x < w - 1 ? x + 1 : x]);
    }
    for (int y = 0; y < h; y++) {
        const uint8_t *up = tmp + (size_t)(y > 0 ? y - 1 : y) * w, *mid = tmp + (size_t)y * w;
        const uint8_t *down = tmp + (size_t)(y < h - 1 ? y + 1 : y) * w;
        uint8_t *o = out + (size_t)y * w;
        for (int x = 0; x < w; x++)
            o[x] = (uint8_t)(up[x] + mid[x] + down[x]);
    }
}

/* 3x3 majority vote (5 of 9), the edge replicated. */
static void majority3(workspace *ws, const uint8_t *in, uint8_t *out)
{
    count3(in, out, ws->counts, ws->w, ws->h);
    for (int i = 0; i < ws->n; i++)
        out[i] = out[i] >= 5;
}

/* out = in with every pixel whose 4 neighbours (inside the window) are not
 * all set cleared; the edge does not erode, so a shape cut by the image
 * border keeps its interior there. */
static void erode4(const uint8_t *in, uint8_t *out, int w, int h)
{
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            int i = y * w + x;
            out[i] = in[i] && (x == 0 || in[i - 1]) && (x == w - 1 || in[i + 1]) && (y == 0 || in[i - w]) &&
                     (y == h - 1 || in[i + w]);
        }
    }
}

/* The shape's colour: the median of the region's interior, eroded up to
 * twice while at least a quarter of it remains (blurred edges mix in the
 * background). */
static void region_colour(workspace *ws, const uint8_t *rgb, const uint8_t *mask, int area, float out[3])
{
    int w = ws->w, h = ws->h, n = ws->n;
    memcpy(ws->core, mask, (size_t)ws->w * (size_t)ws->h);
    for (int k = 0; k < 2; k++) {
        erode4(ws->core, ws->tmp, w, h);
        int left = 0;
        for (int i = 0; i < n; i++)
            left += ws->tmp[i];
        if (left < 4 || left < area / 4)
            break;
        memcpy(ws->core, ws->tmp, (size_t)ws->w * (size_t)ws->h);
    }
    int count = 0;
    for (int i = 0; i < n; i++)
        if (ws->core[i])
            ws->idx[count++] = i;
    median_rgb(rgb, ws->idx, count, out);
}

/* ---- shapes ------------------------------------------------------------ */

/* Every shape is one run of u per row of its unit bounding box:
 * |u - 0.5| <= the half width returned for row v (v in [0, 1], 0 at the
 * top), or -1 outside the box. */
static float shape_half_width(image_shape s, float v)
{
    if (v < 0 || v > 1)
        return -1;
    switch (s) {
    case IMAGE_SHAPE_CIRCLE:
        return sqrtf(fmaxf(0.0f, 0.25f - (v - 0.5f) * (v - 0.5f)));
    case IMAGE_SHAPE_SQUARE:
        return 0.5f;
    case IMAGE_SHAPE_TRIANGLE: /* apex (0.5, 0), base along v = 1 */
        return 0.5f * v;
    case IMAGE_SHAPE_CROSS:    /* arms 0.4 thick */
        return fabsf(v - 0.5f) <= 0.2f ? 0.5f : 0.2f;
    default:
        return -1;
    }
}

typedef struct placement {
    float cx, cy, sw, sh; /* centre and size, pixels of the image */
} placement;

/* The region: a mask over a window of the image (zero outside it). */
typedef struct region {
    const uint8_t *mask;
    int ox, oy, w, h;   /* the window */
    int img_w, img_h;
    int box[4];         /* bounding box in the image: x0, y0, x1, y1 (exclusive) */
    float *buf, *buf2;  /* img_w * img_h floats each, for shape_iou_blurred */
} region;

#define IOU_SUBROWS 4

/* The shape at pl along image row y: the runs [a[k], b[k]) in image x of
 * IOU_SUBROWS rows sampled down the pixel (empty where b <= a). */
static void shape_runs(image_shape s, const placement *pl, int y, float a[IOU_SUBROWS], float b[IOU_SUBROWS])
{
    for (int k = 0; k < IOU_SUBROWS; k++) {
        float v = ((float)y + ((float)k + 0.5f) / IOU_SUBROWS - pl->cy) / pl->sh + 0.5f;
        float half = shape_half_width(s, v) * pl->sw;
        a[k] = pl->cx - half, b[k] = pl->cx + half;
    }
}

/* How much of pixel column x the runs cover, 0..1: exact across, sampled
 * down. Plain comparisons: fminf and fmaxf are calls where NaN rules bind. */
static float runs_cover(int x, const float a[IOU_SUBROWS], const float b[IOU_SUBROWS])
{
    float cover = 0, left = (float)x, right = left + 1.0f;
    for (int k = 0; k < IOU_SUBROWS; k++) {
        float lo = a[k] > left ? a[k] : left, hi = b[k] < right ? b[k] : right;
        cover += hi > lo ? hi - lo : 0.0f;
    }
    return cover * (1.0f / IOU_SUBROWS);
}

static int region_at(const region *r, int x, int y)
{
    int wx = x - r->ox, wy = y - r->oy;
    return wx >= 0 && wy >= 0 && wx < r->w && wy < r->h && r->mask[wy * r->w + wx];
}

/* The box of shape s at pl widened by pad, joined with the region's box and
 * clipped to the image. */
static void iou_box(const region *r, const placement *pl, int pad, int box[4])
{
    int x0 = (int)floorf(pl->cx - pl->sw / 2) - pad, x1 = (int)ceilf(pl->cx + pl->sw / 2) + pad;
    int y0 = (int)floorf(pl->cy - pl->sh / 2) - pad, y1 = (int)ceilf(pl->cy + pl->sh / 2) + pad;
    x0 = x0 < r->box[0] ? x0 : r->box[0], y0 = y0 < r->box[1] ? y0 : r->box[1];
    x1 = x1 > r->box[2] ? x1 : r->box[2], y1 = y1 > r->box[3] ? y1 : r->box[3];
    box[0] = x0 < 0 ? 0 : x0, box[1] = y0 < 0 ? 0 : y0;
    box[2] = x1 > r->img_w ? r->img_w : x1, box[3] = y1 > r->img_h ? r->img_h : y1;
}

/* IoU of the region with shape s placed at pl, both clipped to the image;
 * the ideal shape's pixels count by how much of them it covers. */
static float shape_iou(const region *r, image_shape s, const placement *pl)
{
    if (pl->sw <= 0 || pl->sh <= 0)
        return 0;
    int box[4];
    iou_box(r, pl, 1, box);
    float inter = 0, uni = 0;
    for (int y = box[1]; y < box[3]; y++) {
        float a[IOU_SUBROWS], b[IOU_SUBROWS];
        shape_runs(s, pl, y, a, b);
        for (int x = box[0]; x < box[2]; x++) {
            float cover = runs_cover(x, a, b);
            if (region_at(r, x, y))
                inter += cover, uni += 1.0f;
            else
                uni += cover;
        }
    }
    return uni > 0 ? inter / uni : 0;
}

/* The same for the shape as a soft edge segments: blurred by a Gaussian of
 * sigma px, then cut at one half. That rounds convex corners and fills
 * concave ones (a small cross under a strong blur segments as a rounded
 * blob that a sharp circle fits better than a sharp cross does). */
#define BLUR_MAX_RADIUS 32
static float shape_iou_blurred(const region *r, image_shape s, const placement *pl, float sigma)
{
    if (pl->sw <= 0 || pl->sh <= 0 || sigma <= 0)
        return shape_iou(r, s, pl);
    int radius = (int)ceilf(3.0f * sigma);
    radius = radius > BLUR_MAX_RADIUS ? BLUR_MAX_RADIUS : radius;
    float kernel[2 * BLUR_MAX_RADIUS + 1], total = 0;
    for (int k = -radius; k <= radius; k++)
        total += kernel[k + radius] = expf(-0.5f * (float)(k * k) / (sigma * sigma));
    for (int k = 0; k <= 2 * radius; k++)
        kernel[k] /= total;

    int box[4];
    iou_box(r, pl, radius + 1, box);
    int bw = box[2] - box[0], bh = box[3] - box[1];
    float *cover = r->buf, *tmp = r->buf2; /* [bh, bw] */
    for (int y = 0; y < bh; y++) {
        float a[IOU_SUBROWS], b[IOU_SUBROWS];
        shape_runs(s, pl, box[1] + y, a, b);
        for (int x = 0; x < bw; x++)
            cover[y * bw + x] = runs_cover(box[0] + x, a, b);
    }
    for (int y = 0; y < bh; y++) /* across; nothing outside the box */
        for (int x = 0; x < bw; x++) {
            float sum = 0;
            for (int k = -radius; k <= radius; k++)
                if (x + k >= 0 && x + k < bw)
                    sum += kernel[k + radius] * cover[y * bw + x + k];
            tmp[y * bw + x] = sum;
        }
    float inter = 0, uni = 0;
    for (int y = 0; y < bh; y++) /* down, then compare */
        for (int x = 0; x < bw; x++) {
            float sum = 0;
            for (int k = -radius; k <= radius; k++)
                if (y + k >= 0 && y + k < bh)
                    sum += kernel[k + radius] * tmp[(y + k) * bw + x];
            int t = sum > 0.5f, m = region_at(r, box[0] + x, box[1] + y);
            inter += (float)(t && m);
            uni += (float)(t || m);
        }
    return uni > 0 ? inter / uni : 0;
}

/* ---- names ------------------------------------------------------------- */

static void set_name(char *dst, size_t size, const char *name)
{
    snprintf(dst, size, "%s", name);
}

static const char *position_name(int col, int row)
{
    static const char *const names[3][3] = {
        {"top left", "top", "top right"},
        {"left", "center", "right"},
        {"bottom left", "bottom", "bottom right"},
    };
    return names[row][col];
}

/* Which of the three columns (or rows) a centre at t falls in, thresholds
 * scaled by extent / 64; *confidence from the distance to the nearest. */
static int cell_of(float t, float extent, float *confidence)
{
    float scale = extent / REF_SIZE, lo = COLUMN_LEFT_EDGE * scale, hi = COLUMN_RIGHT_EDGE * scale;
    float margin = fminf(fabsf(t - lo), fabsf(t - hi));
    *confidence = clampf(margin / (HALF_CELL * scale), 0, 1);
    return t < lo ? 0 : t < hi ? 1 : 2;
}

/* ---- the steps ----------------------------------------------------------- */

/* ws->dist = the distance of the 3x3-smoothed image (edge replicated) from
 * the plane bg; the box is summed rows first. */
static void box_distance(workspace *ws, const uint8_t *rgb, const plane *bg)
{
    int w = ws->w, h = ws->h;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = rgb + 3 * (size_t)y * w;
        int *sum = ws->sums + 3 * (size_t)y * w;
        for (int x = 0; x < w; x++) {
            int l = x > 0 ? x - 1 : x, r = x < w - 1 ? x + 1 : x;
            for (int c = 0; c < 3; c++)
                sum[3 * x + c] = row[3 * l + c] + row[3 * x + c] + row[3 * r + c];
        }
    }
    for (int y = 0; y < h; y++) {
        const int *up = ws->sums + 3 * (size_t)(y > 0 ? y - 1 : y) * w;
        const int *mid = ws->sums + 3 * (size_t)y * w;
        const int *down = ws->sums + 3 * (size_t)(y < h - 1 ? y + 1 : y) * w;
        float v = ((float)y + 0.5f) * bg->sv - 1.0f, row_b[3], step[3];
        for (int c = 0; c < 3; c++) { /* the plane at x = 0 of this row, and its step along x */
            row_b[c] = bg->a[c] + bg->bv[c] * v + bg->bu[c] * (0.5f * bg->su - 1.0f);
            step[c] = bg->bu[c] * bg->su;
        }
        for (int x = 0; x < w; x++) {
            float d2 = 0;
            for (int c = 0; c < 3; c++) {
                float d = (float)(up[3 * x + c] + mid[3 * x + c] + down[3 * x + c]) * (1.0f / 9.0f) -
                          (row_b[c] + step[c] * (float)x);
                d2 += d * d;
            }
            ws->dist[(size_t)y * w + x] = sqrtf(d2);
        }
    }
}

/* Segments the shape in the window ws (its pixels in ws->rgb, the
 * background in ws->bgimg) given the shape's colour: pixels past halfway
 * from the background to it, voted clean under noise, the largest region,
 * holes filled. Returns the area. */
static int segment(workspace *ws, const float fg[3], float noise)
{
    for (int i = 0; i < ws->n; i++) {
        const float *b = ws->bgimg + 3 * (size_t)i;
        float num = 0, den = 0;
        for (int c = 0; c < 3; c++) {
            float d = fg[c] - b[c];
            num += ((float)ws->rgb[3 * (size_t)i + c] - b[c]) * d;
            den += d * d;
        }
        ws->mask[i] = den > 0 && num > 0.5f * den;
    }
    if (noise > 3.0f) {
        majority3(ws, ws->mask, ws->tmp);
        memcpy(ws->mask, ws->tmp, (size_t)ws->w * (size_t)ws->h);
    }
    int area = keep_largest(ws, ws->mask);
    if (area > 0)
        fill_holes(ws, ws->mask);
    area = 0;
    for (int i = 0; i < ws->n; i++)
        area += ws->mask[i];
    return area;
}

/* Lists in ws->idx (an image-sized workspace) up to about
 * BACKGROUND_SAMPLES pixels, evenly spread, outside the box widened by
 * margin (the blurred edge of the shape stays out); returns how many. */
#define BACKGROUND_SAMPLES 256
static int background_pixels(workspace *ws, const int box[4], int margin)
{
    int w = ws->w, h = ws->h;
    int x0 = box[0] - margin, y0 = box[1] - margin, x1 = box[2] + margin, y1 = box[3] + margin;
    x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0, x1 = x1 > w ? w : x1, y1 = y1 > h ? h : y1;
    int total = ws->n - (x1 > x0 && y1 > y0 ? (x1 - x0) * (y1 - y0) : 0);
    int stride = total / BACKGROUND_SAMPLES + 1, m = 0, skip = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if ((x < x0 || x >= x1 || y < y0 || y >= y1) && --skip < 0) {
                ws->idx[m++] = y * w + x;
                skip = stride - 1;
            }
    return m;
}

/* Phi, the standard normal distribution function. */
static float normal_cdf(float x)
{
    return 0.5f * erfcf(-x * 0.70710678f);
}

/* How soft the region's edges are: the mean share of the shape's colour
 * in the pixels two steps outside the region (the ring at Chebyshev
 * distance 2), ws->bgimg being the background. Across a straight edge
 * blurred by a Gaussian of sigma that is Phi(-1.5 / sigma): 0 for a sharp
 * edge, 0.07 at sigma 1 px, 0.23 at 2. Noise averages out over the ring;
 * each pixel's share is clamped to [-1, 1] so that a speck cannot weigh
 * much. */
static float edge_softness(workspace *ws, const float fg[3])
{
    int n = ws->n;
    count3(ws->mask, ws->tmp, ws->counts, ws->w, ws->h);
    for (int i = 0; i < n; i++)
        ws->core[i] = ws->tmp[i] > 0; /* the region and ring 1 */
    count3(ws->core, ws->tmp, ws->counts, ws->w, ws->h);
    float sum = 0;
    int count = 0;
    for (int i = 0; i < n; i++) {
        if (!ws->tmp[i] || ws->core[i])
            continue;
        const float *b = ws->bgimg + 3 * (size_t)i;
        float num = 0, den = 0;
        for (int c = 0; c < 3; c++) {
            float d = fg[c] - b[c];
            num += ((float)ws->rgb[3 * (size_t)i + c] - b[c]) * d;
            den += d * d;
        }
        sum += den > 0 ? clampf(num / den, -1.0f, 1.0f) : 0.0f;
        count++;
    }
    return count ? fmaxf(0.0f, sum / (float)count) : 0.0f;
}

/* The blur sigma whose ring-2 share (see edge_softness) is softness. */
static float blur_from_softness(float softness)
{
    if (softness < 0.002f)
        return 0;
    softness = fminf(softness, 0.4f);
    float lo = 0.05f, hi = 20.0f; /* Phi(-1.5 / sigma) grows with sigma */
    for (int k = 0; k < 30; k++) {
        float mid = 0.5f * (lo + hi);
        if (normal_cdf(-1.5f / mid) < softness)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5f * (lo + hi);
}

/* edge_blur reads low, by a tenth to a fifth (rings round small shapes are
 * much corner); a sharp but noisy edge reads up to 1 px */
#define BLUR_CORRECTION 1.15f

/* Fills the shape attributes and measurements of v from the region. */
static void describe_region(const region *r, int area, image_verdict *v)
{
    const uint8_t *mask = r->mask;
    double sx = 0, sy = 0;
    for (int y = 0; y < r->h; y++)
        for (int x = 0; x < r->w; x++)
            if (mask[y * r->w + x])
                sx += x + 0.5, sy += y + 0.5;
    const int *box = r->box;
    int bw = box[2] - box[0], bh = box[3] - box[1];
    v->area = area;
    v->bbox_x0 = box[0], v->bbox_y0 = box[1], v->bbox_x1 = box[2], v->bbox_y1 = box[3];
    v->centroid_x = (float)(sx / area) + (float)r->ox, v->centroid_y = (float)(sy / area) + (float)r->oy;
    v->fill_ratio = (float)area / (float)(bw * bh);
    v->aspect = (float)bw / (float)bh;

#define AT(x, y) mask[((y) - r->oy) * r->w + (x) - r->ox]
    /* corners: 20% x 20% of the box each */
    int cw = (bw + 2) / 5, ch = (bh + 2) / 5, corner_px = 0, corner_on = 0;
    for (int y = box[1]; y < box[3]; y++)
        for (int x = box[0]; x < box[2]; x++) {
            int in_x = x < box[0] + cw || x >= box[2] - cw, in_y = y < box[1] + ch || y >= box[3] - ch;
            if (in_x && in_y)
                corner_px++, corner_on += AT(x, y);
        }
    v->corner_fill = corner_px ? (float)corner_on / (float)corner_px : 0;
    int row_top = box[1] + bh / 4, row_bottom = box[1] + (3 * bh) / 4, wt = 0, wb = 0;
    for (int x = box[0]; x < box[2]; x++)
        wt += AT(x, row_top), wb += AT(x, row_bottom);
    v->top_bottom_width = wb ? (float)wt / (float)wb : (float)wt;
#undef AT

    /* the ideal shapes, placed in the box and from the moments */
    placement boxed = {(float)(box[0] + box[2]) * 0.5f, (float)(box[1] + box[3]) * 0.5f, (float)bw, (float)bh};
    placement places[IMAGE_SHAPE_COUNT][2];
    float scores[IMAGE_SHAPE_COUNT][2];
    for (int s = 0; s < IMAGE_SHAPE_COUNT; s++) {
        float side = sqrtf((float)area / shape_fill[s]);
        /* a triangle's centroid lies a sixth of its height below its box's centre */
        placement moments = {v->centroid_x, v->centroid_y - (s == IMAGE_SHAPE_TRIANGLE ? side / 6 : 0), side, side};
        places[s][0] = boxed, places[s][1] = moments;
        for (int p = 0; p < 2; p++)
            scores[s][p] = shape_iou(r, (image_shape)s, &places[s][p]);
    }
    /* Close calls between the two best are settled by both again as the
     * edges' blur would segment them: the right shape blurred fits a blurred
     * region better than a wrong one. At one blur for both, the one the
     * edges show: were each shape to pick its own, a blurred square would
     * fit a ragged sharp circle. Clean pictures seldom get here (the right
     * shape leads by 0.1 to 0.2 or more). */
    int order[IMAGE_SHAPE_COUNT] = {0, 1, 2, 3};
    for (int i = 0; i < IMAGE_SHAPE_COUNT; i++)
        for (int j = i + 1; j < IMAGE_SHAPE_COUNT; j++)
            if (fmaxf(scores[order[j]][0], scores[order[j]][1]) > fmaxf(scores[order[i]][0], scores[order[i]][1])) {
                int t = order[i];
                order[i] = order[j], order[j] = t;
            }
    float scale = (float)(r->img_w < r->img_h ? r->img_w : r->img_h) / REF_SIZE;
    float sigma = BLUR_CORRECTION * v->edge_blur;
    if (fmaxf(scores[order[0]][0], scores[order[0]][1]) - fmaxf(scores[order[1]][0], scores[order[1]][1]) < 0.08f &&
        sigma >= 0.8f * scale) {
        for (int k = 0; k < 2; k++)
            for (int p = 0; p < 2; p++)
                scores[order[k]][p] = shape_iou_blurred(r, (image_shape)order[k], &places[order[k]][p], sigma);
    }
    int best = 0;
    for (int s = 0; s < IMAGE_SHAPE_COUNT; s++) {
        v->shape_scores[s] = fmaxf(scores[s][0], scores[s][1]);
        if (v->shape_scores[s] > v->shape_scores[best])
            best = s;
    }
    placement best_place = scores[best][0] >= scores[best][1] ? places[best][0] : places[best][1];
    float second = 0;
    for (int s = 0; s < IMAGE_SHAPE_COUNT; s++)
        if (s != best)
            second = fmaxf(second, v->shape_scores[s]);
    float top = v->shape_scores[best];
    if (top < IMAGE_MIN_SHAPE_SCORE) {
        set_name(v->shape, sizeof v->shape, "unknown");
        v->attr_confidence[IMAGE_ATTR_SHAPE] = 0;
        best_place = boxed;
    } else {
        set_name(v->shape, sizeof v->shape, shape_names[best]);
        /* a clean fit leads the next shape by 0.2 or more */
        v->attr_confidence[IMAGE_ATTR_SHAPE] = clampf((top - second) / 0.2f, 0, 1);
    }
    v->fit_x = best_place.cx, v->fit_y = best_place.cy;
    v->fit_size = fmaxf(best_place.sw, best_place.sh);

    float cx, cy;
    int col = cell_of(v->fit_x, (float)r->img_w, &cx), row = cell_of(v->fit_y, (float)r->img_h, &cy);
    set_name(v->position, sizeof v->position, position_name(col, row));
    v->attr_confidence[IMAGE_ATTR_POSITION] = fminf(cx, cy);

    set_name(v->size, sizeof v->size, v->fit_size < SIZE_EDGE * scale ? "small" : "large");
    v->attr_confidence[IMAGE_ATTR_SIZE] =
        clampf(fabsf(v->fit_size - SIZE_EDGE * scale) / (SIZE_HALF_GAP * scale), 0, 1);
}

/* Steps 3 to 5 in the window win (x0, y0, x1, y1 exclusive) of the image,
 * starting from the first foreground in full->mask, with ws for the
 * window's buffers. Updates the background plane and noise; fills v (found,
 * the shape's attributes, its colour and the background's). *touches says
 * whether the region reaches an edge of the window that is not the
 * image's (the window was too small). */
static void analyse_window(workspace *full, workspace *ws, const uint8_t *rgb, const int win[4], plane *bg,
                           float *noise, int min_area, image_verdict *v, int *touches)
{
    int w = full->w, h = full->h, ox = win[0], oy = win[1], ww = win[2] - win[0], wh = win[3] - win[1];
    workspace_resize(ws, ww, wh);
    for (int y = 0; y < wh; y++) {
        memcpy(ws->rgb + 3 * (size_t)y * ww, rgb + 3 * ((size_t)(oy + y) * w + ox), 3 * (size_t)ww);
        memcpy(ws->mask + (size_t)y * ww, full->mask + (size_t)(oy + y) * w + ox, (size_t)ww);
    }
    int area = 0, box[4] = {0}, count = 0;
    for (int i = 0; i < ws->n; i++)
        area += ws->mask[i];
    float fg[3];
    region_colour(ws, ws->rgb, ws->mask, area, fg);
    for (int pass = 0; pass < 2; pass++) {
        plane_fill(bg, ox, oy, ww, wh, ws->bgimg);
        area = segment(ws, fg, *noise);
        if (area < min_area)
            break;
        mask_box(ws->mask, ww, wh, box);
        int image_box[4] = {box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy};
        count = background_pixels(full, image_box, (w < h ? w : h) / 32 + 1);
        if (count >= 16)
            *noise = background_fit(full, rgb, w, count, bg, 1);
        region_colour(ws, ws->rgb, ws->mask, area, fg);
    }
    *touches = 0;
    if (area >= min_area) {
        v->found = 1;
        for (int c = 0; c < 3; c++)
            v->colour_rgb[c] = fg[c];
        median_rgb(rgb, full->idx, count, v->background_rgb);
        plane_fill(bg, ox, oy, ww, wh, ws->bgimg);
        v->edge_softness = edge_softness(ws, fg);
        v->edge_blur = blur_from_softness(v->edge_softness);
        *touches = (box[0] == 0 && ox > 0) || (box[1] == 0 && oy > 0) || (box[2] == ww && win[2] < w) ||
                   (box[3] == wh && win[3] < h);
        region r = {ws->mask, ox,          oy,          ww,          wh,         w, h,
                    {box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy}, full->dist, full->scratch};
        describe_region(&r, area, v);
    }
}

/* image_check on an image of at most MAX_WORK_SIDE on its shorter side. */
static kiln_status check_pixels(const uint8_t *rgb, int width, int height, image_verdict *out)
{
    int w = width, h = height, n = w * h;
    workspace *ws = workspace_create(w, h), *win_ws = workspace_create(w, h);
    if (!ws || !win_ws) {
        free(ws);
        free(win_ws);
        return err_set(KILN_ERR_NOMEM, "image_check: no memory for a %dx%d image", width, height);
    }
    image_verdict v;
    memset(&v, 0, sizeof v);
    plane bg = {.su = 2.0f / (float)w, .sv = 2.0f / (float)h};

    /* 1. the background from the border ring, 2 px wide at 64 */
    int ring = (w < h ? w : h) / 32, count = 0;
    ring = ring < 1 ? 1 : ring;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (x < ring || y < ring || x >= w - ring || y >= h - ring)
                ws->idx[count++] = y * w + x;
    float noise = background_fit(ws, rgb, w, count, &bg, 0);

    /* 2. a first foreground: the smoothed image's distance to the plane
     * over a threshold from the ring's own (smoothed) residuals */
    box_distance(ws, rgb, &bg);
    for (int i = 0; i < count; i++)
        ws->scratch[i] = ws->dist[ws->idx[i]];
    float threshold = fmaxf(12.0f, 3.0f * median_distance(ws->scratch, count, ws->hist));
    for (int i = 0; i < n; i++)
        ws->mask[i] = ws->dist[i] > threshold;
    int area = keep_largest(ws, ws->mask);
    int min_area = n / 256 > 4 ? n / 256 : 4; /* 16 px at 64x64; the smallest shape has 128 */

    if (area >= min_area) {
        /* 3.-5. in a window around it, widened to the whole image if the
         * region turns out to reach past the window */
        int box[4], margin = (w < h ? w : h) / 16 + 1;
        mask_box(ws->mask, w, h, box);
        int win[4] = {box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin};
        win[0] = win[0] < 0 ? 0 : win[0], win[1] = win[1] < 0 ? 0 : win[1];
        win[2] = win[2] > w ? w : win[2], win[3] = win[3] > h ? h : win[3];
        plane first_bg = bg;
        float first_noise = noise;
        int touches = 0;
        analyse_window(ws, win_ws, rgb, win, &bg, &noise, min_area, &v, &touches);
        if (touches) {
            int whole[4] = {0, 0, w, h};
            memset(&v, 0, sizeof v);
            bg = first_bg, noise = first_noise;
            analyse_window(ws, win_ws, rgb, whole, &bg, &noise, min_area, &v, &touches);
        }
    }

    /* 6. colours */
    float conf;
    if (!v.found) {
        /* no shape: the background is everything (every few pixels) */
        int stride = n / (4 * BACKGROUND_SAMPLES) + 1;
        count = 0;
        for (int i = 0; i < n; i += stride)
            ws->idx[count++] = i;
        median_rgb(rgb, ws->idx, count, v.background_rgb);
        set_name(v.shape, sizeof v.shape, "none");
        set_name(v.colour, sizeof v.colour, "none");
        v.attr_confidence[IMAGE_ATTR_SHAPE] = v.attr_confidence[IMAGE_ATTR_COLOUR] = 1;
        v.attr_confidence[IMAGE_ATTR_POSITION] = v.attr_confidence[IMAGE_ATTR_SIZE] = 1;
    } else {
        set_name(v.colour, sizeof v.colour, palette[nearest_colour(v.colour_rgb, &conf)].name);
        v.attr_confidence[IMAGE_ATTR_COLOUR] = conf;
        float d2 = 0;
        for (int c = 0; c < 3; c++)
            d2 += (v.colour_rgb[c] - v.background_rgb[c]) * (v.colour_rgb[c] - v.background_rgb[c]);
        v.contrast = sqrtf(d2);
    }
    set_name(v.background, sizeof v.background, palette[nearest_colour(v.background_rgb, &conf)].name);
    v.attr_confidence[IMAGE_ATTR_BACKGROUND] = conf;
    v.noise = noise;
    v.confidence = 1;
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
        v.confidence = fminf(v.confidence, v.attr_confidence[a]);
    *out = v;
    free(ws);
    free(win_ws);
    return KILN_OK;
}

kiln_status image_check(const uint8_t *rgb, int width, int height, image_verdict *out)
{
    if (!rgb || !out)
        return err_set(KILN_ERR_INVALID, "image_check: %s is NULL", rgb ? "out" : "the image");
    if (width < MIN_IMAGE_SIDE || height < MIN_IMAGE_SIDE)
        return err_set(KILN_ERR_INVALID, "image_check: image is %dx%d, at least %dx%d is needed", width, height,
                       MIN_IMAGE_SIDE, MIN_IMAGE_SIDE);
    if ((int64_t)width * height > KILN_MAX_INIT_PIXELS)
        return err_set(KILN_ERR_INVALID, "image_check: image is %dx%d, more than %d pixels", width, height,
                       KILN_MAX_INIT_PIXELS);
    int shorter = width < height ? width : height;
    if (shorter <= MAX_WORK_SIDE)
        return check_pixels(rgb, width, height, out);

    /* A large picture is looked at shrunk by a whole factor f, each pixel
     * the mean of f x f: the shapes are large and plain, and the workspace
     * (120 bytes a pixel) stays small. */
    int f = shorter / (MAX_WORK_SIDE / 2), sw = width / f, sh = height / f;
    uint8_t *small = malloc((size_t)sw * sh * 3);
    if (!small)
        return err_set(KILN_ERR_NOMEM, "image_check: no memory to shrink a %dx%d image", width, height);
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int dy = 0; dy < f; dy++)
                    for (int dx = 0; dx < f; dx++)
                        sum += rgb[3 * ((size_t)(y * f + dy) * width + x * f + dx) + c];
                small[3 * ((size_t)y * sw + x) + c] = (uint8_t)((sum + f * f / 2) / (f * f));
            }
    image_verdict v;
    kiln_status st = check_pixels(small, sw, sh, &v);
    free(small);
    if (st != KILN_OK)
        return st;
    /* measurements back in pixels of the picture */
    float ff = (float)f;
    v.area *= f * f;
    v.bbox_x0 *= f, v.bbox_y0 *= f, v.bbox_x1 *= f, v.bbox_y1 *= f;
    v.centroid_x *= ff, v.centroid_y *= ff, v.fit_x *= ff, v.fit_y *= ff, v.fit_size *= ff, v.edge_blur *= ff;
    *out = v;
    return KILN_OK;
}

/* ---- captions ---------------------------------------------------------- */

const char *image_attr_name(image_attr attr)
{
    return (unsigned)attr < IMAGE_ATTR_COUNT ? attr_names[attr] : "";
}

const char *image_verdict_value(const image_verdict *v, image_attr attr)
{
    switch (attr) {
    case IMAGE_ATTR_SHAPE: return v->shape;
    case IMAGE_ATTR_COLOUR: return v->colour;
    case IMAGE_ATTR_BACKGROUND: return v->background;
    case IMAGE_ATTR_POSITION: return v->position;
    case IMAGE_ATTR_SIZE: return v->size;
    default: return "";
    }
}

const char *image_expectation_value(const image_expectation *e, image_attr attr)
{
    switch (attr) {
    case IMAGE_ATTR_SHAPE: return e->shape;
    case IMAGE_ATTR_COLOUR: return e->colour;
    case IMAGE_ATTR_BACKGROUND: return e->background;
    case IMAGE_ATTR_POSITION: return e->position;
    case IMAGE_ATTR_SIZE: return e->size;
    default: return "";
    }
}

int image_verdict_matches_attr(const image_verdict *v, const image_expectation *e, image_attr attr)
{
    const char *want = image_expectation_value(e, attr);
    return !want[0] || strcmp(want, image_verdict_value(v, attr)) == 0;
}

int image_verdict_matches(const image_verdict *v, const image_expectation *e, unsigned *mismatched)
{
    unsigned bad = 0;
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
        if (!image_verdict_matches_attr(v, e, (image_attr)a))
            bad |= 1u << a;
    if (mismatched)
        *mismatched = bad;
    return bad == 0;
}

/* Sets an attribute once; a second, different value is a contradiction. */
static int put(char *dst, size_t size, const char *value)
{
    if (dst[0] && strcmp(dst, value) != 0)
        return -1;
    snprintf(dst, size, "%s", value);
    return 0;
}

static int colour_word(const char *word)
{
    if (!strcmp(word, "grey"))
        word = "gray";
    for (int i = 0; i < PALETTE_COUNT; i++)
        if (!strcmp(word, palette[i].name))
            return i;
    return -1;
}

static int shape_word(const char *word)
{
    static const char *const plurals[IMAGE_SHAPE_COUNT] = {"circles", "squares", "triangles", "crosses"};
    for (int s = 0; s < IMAGE_SHAPE_COUNT; s++)
        if (!strcmp(word, shape_names[s]) || !strcmp(word, plurals[s]) || (s == IMAGE_SHAPE_CROSS && !strcmp(word, "plus")))
            return s;
    return -1;
}

#define CAPTION_MAX_WORDS 64
#define CAPTION_WORD_MAX 24

int image_parse_caption(const char *caption, image_expectation *out)
{
    if (!caption || !out)
        return -1;
    image_expectation e;
    memset(&e, 0, sizeof e);

    char words[CAPTION_MAX_WORDS][CAPTION_WORD_MAX];
    int count = 0;
    for (const char *p = caption; *p && count < CAPTION_MAX_WORDS;) {
        if (!isalpha((unsigned char)*p)) {
            p++;
            continue;
        }
        size_t len = 0;
        while (isalpha((unsigned char)*p)) {
            if (len + 1 < CAPTION_WORD_MAX)
                words[count][len++] = (char)tolower((unsigned char)*p);
            p++;
        }
        words[count++][len] = '\0';
    }

    int vertical = -1, horizontal = -1, centred = 0; /* 0 top/left, 2 bottom/right */
    for (int i = 0; i < count; i++) {
        const char *word = words[i];
        int c = colour_word(word), s = shape_word(word);
        if (c >= 0) {
            int is_bg = (i + 1 < count && (!strcmp(words[i + 1], "background") || !strcmp(words[i + 1], "backdrop"))) ||
                        (i > 0 && !strcmp(words[i - 1], "on") && !(i + 1 < count && shape_word(words[i + 1]) >= 0));
            if (put(is_bg ? e.background : e.colour, IMAGE_NAME_MAX, palette[c].name))
                return -1;
        } else if (s >= 0) {
            if (put(e.shape, sizeof e.shape, shape_names[s]))
                return -1;
        } else if (!strcmp(word, "small") || !strcmp(word, "large") || !strcmp(word, "big")) {
            if (put(e.size, sizeof e.size, word[0] == 's' ? "small" : "large"))
                return -1;
        } else if (!strcmp(word, "top") || !strcmp(word, "upper") || !strcmp(word, "bottom") || !strcmp(word, "lower")) {
            int row = word[0] == 't' || word[0] == 'u' ? 0 : 2;
            if (vertical >= 0 && vertical != row)
                return -1;
            vertical = row;
        } else if (!strcmp(word, "left") || !strcmp(word, "right")) {
            int col = word[0] == 'l' ? 0 : 2;
            if (horizontal >= 0 && horizontal != col)
                return -1;
            horizontal = col;
        } else if (!strcmp(word, "center") || !strcmp(word, "centre") || !strcmp(word, "middle") ||
                   !strcmp(word, "centered") || !strcmp(word, "centred")) {
            centred = 1;
        }
    }
    if (vertical >= 0 || horizontal >= 0 || centred)
        snprintf(e.position, sizeof e.position, "%s",
                 position_name(horizontal >= 0 ? horizontal : 1, vertical >= 0 ? vertical : 1));

    int found = 0;
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
        found += image_expectation_value(&e, (image_attr)a)[0] != '\0';
    *out = e;
    return found;
}
