/*
 * winograd_driver.h - 3x3 stride-1 convolution by Winograd's minimal
 * filtering, F(m x m, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2015): an m x m block of outputs from an
 * (m + 2) x (m + 2) block of inputs, with (m + 2)^2 multiplies per channel
 * pair instead of 9 m^2: F(4x4) 36 instead of 144, F(2x2) 16 instead of 36.
 *
 * Include it in a file compiled for one level after defining
 *   WINOGRAD_ISA                      the level (its table supplies the
 *                                     matrix kernel and the f16/bf16 widening)
 *   WG_M                              the tile side, 4 or 2
 *   WINOGRAD_WEIGHTS, WINOGRAD_CONV   the names of the functions to define
 * It may be included once per tile side in one file: its own functions
 * carry the side in their names, and it undefines WG_M and the two names
 * at its end.
 *
 * The transforms are plain loops over channels, which the compiler turns
 * into the level's vectors; the products of each point are the level's own
 * linear_f32, so they run at its matrix speed.
 *
 * The matrices are Lavin's, V = B^T d B (input), U = G g G^T (weights),
 * Y = A^T M A (output), where M is the sum over input channels of U * V
 * point by point; F(4x4) interpolates at 0, 1, -1, 2, -2 and infinity,
 * F(2x2) at 0, 1, -1 and infinity.
 */
#include <string.h>

#include "kernels/winograd.h"

#ifndef KILN_WINOGRAD_DRIVER_SHARED
#define KILN_WINOGRAD_DRIVER_SHARED

/* input channels the input transform works on at once: its temporaries
 * stay in L1 */
#define WG_CHANNELS 64

/* Inputs of a tile that fall in the padding read from here. */
static const float wg_zero_row[WINOGRAD_MAX_CHANNELS] __attribute__((aligned(64)));

static int64_t wg_min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* count values of w's data from element offset on, widened to f32. */
static void wg_widen(const kernel_table *self, const packed_weights *w, int64_t offset, int64_t count, float *dst)
{
    const uint16_t *half = (const uint16_t *)w->data + offset;
    if (w->dtype == KILN_DTYPE_F16)
        self->f16_to_f32(half, dst, (size_t)count);
    else if (w->dtype == KILN_DTYPE_BF16)
        self->bf16_to_f32(half, dst, (size_t)count);
    else
        memcpy(dst, (const float *)w->data + offset, (size_t)count * sizeof *dst);
}
#endif

#define WG_ALPHA (WG_M + 2)
#define WG_POINTS (WG_ALPHA * WG_ALPHA)
#define WG_CAT_(a, b) a##b
#define WG_CAT(a, b) WG_CAT_(a, b)
#define WG(name) WG_CAT(name, WG_M) /* wg_input_tile4, wg_input_tile2, ... */

/* The one-dimensional transforms, each from values `is` floats apart to
 * values `os` floats apart: a column of 3 weights to its points (G g), a
 * tile's row of inputs to its points (B^T d), a row of points to the
 * outputs (A^T m). */
#if WG_M == 4
static inline void WG(wg_weight_1d)(const float *g, int64_t is, float *u, int64_t os)
{
    float g0 = g[0], g1 = g[is], g2 = g[2 * is];
    float even = g0 * (1.0f / 24.0f) + g2 * (1.0f / 6.0f), odd = g1 * (1.0f / 12.0f);
    float sum = (g0 + g2) * (-1.0f / 6.0f), mid = g1 * (-1.0f / 6.0f);
    u[0] = g0 * 0.25f;
    u[os] = sum + mid;
    u[2 * os] = sum - mid;
    u[3 * os] = even + odd;
    u[4 * os] = even - odd;
    u[5 * os] = g2;
}

static inline void WG(wg_input_1d)(const float *d, int64_t is, float *v, int64_t os)
{
    float d0 = d[0], d1 = d[is], d2 = d[2 * is], d3 = d[3 * is], d4 = d[4 * is], d5 = d[5 * is];
    float a = d4 - 4.0f * d2, b = d3 - 4.0f * d1, c = d4 - d2, e = 2.0f * (d3 - d1);
    v[0] = 4.0f * d0 - 5.0f * d2 + d4;
    v[os] = a + b;
    v[2 * os] = a - b;
    v[3 * os] = c + e;
    v[4 * os] = c - e;
    v[5 * os] = 4.0f * d1 - 5.0f * d3 + d5;
}

static inline void WG(wg_output_1d)(const float *m, int64_t is, float *o, int64_t os)
{
    float m0 = m[0], m1 = m[is], m2 = m[2 * is], m3 = m[3 * is], m4 = m[4 * is], m5 = m[5 * is];
    float p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
    o[0] = m0 + p12 + p34;
    o[os] = n12 + 2.0f * n34;
    o[2 * os] = p12 + 4.0f * p34;
    o[3 * os] = n12 + 8.0f * n34 + m5;
}
#elif WG_M == 2
static inline void WG(wg_weight_1d)(const float *g, int64_t is, float *u, int64_t os)
{
    float g0 = g[0], g1 = g[is], g2 = g[2 * is];
    float half = (g0 + g2) * 0.5f, mid = g1 * 0.5f;
    u[0] = g0;
    u[os] = half + mid;
    u[2 * os] = half - mid;
    u[3 * os] = g2;
}

static inline void WG(wg_input_1d)(const float *d, int64_t is, float *v, int64_t os)
{
    float d0 = d[0], d1 = d[is], d2 = d[2 * is], d3 = d[3 * is];
    v[0] = d0 - d2;
    v[os] = d1 + d2;
    v[2 * os] = d2 - d1;
    v[3 * os] = d1 - d3;
}

static inline void WG(wg_output_1d)(const float *m, int64_t is, float *o, int64_t os)
{
    float m0 = m[0], m1 = m[is], m2 = m[2 * is], m3 = m[3 * is];
    o[0] = m0 + m1 + m2;
    o[os] = m1 - m2 - m3;
}
#else
#error "winograd_driver.h: WG_M must be 4 or 2"
#endif

/* Output channels [c0, c1) of w (panels of w->nr lanes; one channel per
 * panel in the scalar layout [n][taps][k]) to their points: point i of the
 * group [g0, g1) is a linear layer's packed weight of g1 - g0 outputs and
 * k inputs at u + i * winograd_point_elements(w->nr, g1 - g0, k). */
static void WINOGRAD_WEIGHTS(const packed_weights *w, int64_t g0, int64_t g1, float *u, int64_t c0, int64_t c1)
{
    enum { WIDTH = WINOGRAD_CHUNK * WINOGRAD_MAX_LANES };
    const kernel_table *self = kernels_for(WINOGRAD_ISA);
    const int64_t lanes = w->nr > 0 ? w->nr : 1, k = w->k, point = winograd_point_elements(w->nr, g1 - g0, k);
    float g[9][WIDTH], col[WG_ALPHA][3][WIDTH];
    for (int64_t p = c0 / lanes; p < (c1 + lanes - 1) / lanes; p++)
        for (int64_t k0 = 0; k0 < k; k0 += WINOGRAD_CHUNK) {
            int64_t width = wg_min(WINOGRAD_CHUNK, k - k0) * lanes;
            for (int t = 0; t < 9; t++)
                wg_widen(self, w, ((p * 9 + t) * k + k0) * lanes, width, g[t]);
            for (int kx = 0; kx < 3; kx++)
                for (int64_t e = 0; e < width; e++)
                    WG(wg_weight_1d)(&g[kx][e], 3 * WIDTH, &col[0][kx][e], 3 * WIDTH);
            float *dst = u + ((p - g0 / lanes) * k + k0) * lanes;
            for (int i = 0; i < WG_ALPHA; i++) {
                float *row = dst + i * WG_ALPHA * point;
                for (int64_t e = 0; e < width; e++)
                    WG(wg_weight_1d)(&col[i][0][e], WIDTH, &row[e], point);
            }
        }
}

/* Tile tile's inputs to its points: point i of channel c goes to
 * v[i * ld + c]. */
static void WG(wg_input_tile)(const conv2d_geom *g, const float *x, int64_t tile, float *v, int64_t ld)
{
    int64_t tiles_w = (g->out_w + WG_M - 1) / WG_M, tiles_h = (g->out_h + WG_M - 1) / WG_M;
    int64_t tx = tile % tiles_w, ty = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    const float *d[WG_POINTS];
    for (int r = 0; r < WG_ALPHA; r++)
        for (int s = 0; s < WG_ALPHA; s++) {
            int64_t iy = ty * WG_M + r - g->pad_top, ix = tx * WG_M + s - g->pad_left;
            d[r * WG_ALPHA + s] = iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w
                                      ? wg_zero_row
                                      : conv2d_input_at(g, x, b, iy, ix);
        }
    for (int64_t c0 = 0; c0 < g->in_c; c0 += WG_CHANNELS) {
        int64_t cc = wg_min(WG_CHANNELS, g->in_c - c0);
        float t[WG_POINTS][WG_CHANNELS];
        for (int s = 0; s < WG_ALPHA; s++)
            for (int64_t c = 0; c < cc; c++) {
                float column[WG_ALPHA];
                for (int r = 0; r < WG_ALPHA; r++)
                    column[r] = d[r * WG_ALPHA + s][c0 + c];
                WG(wg_input_1d)(column, 1, &t[s][c], WG_ALPHA * WG_CHANNELS);
            }
        for (int r = 0; r < WG_ALPHA; r++) {
            float *out = v + r * WG_ALPHA * ld + c0;
            for (int64_t c = 0; c < cc; c++)
                WG(wg_input_1d)(&t[r * WG_ALPHA][c], WG_CHANNELS, &out[c], ld);
        }
    }
}

/* Tile tile's points, point i of output channel c0 + c at m[i * ld + c],
 * back to its m x m outputs of channels [c0, c0 + cc) (the pixels inside
 * the image), plus bias and residual. */
static void WG(wg_output_tile)(const conv2d_geom *g, const float *m, int64_t ld, int64_t tile, int64_t c0,
                               int64_t cc, const float *bias, const float *residual, float *y)
{
    int64_t tiles_w = (g->out_w + WG_M - 1) / WG_M, tiles_h = (g->out_h + WG_M - 1) / WG_M;
    int64_t tx = tile % tiles_w, ty = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    int rows = (int)wg_min(WG_M, g->out_h - ty * WG_M), cols = (int)wg_min(WG_M, g->out_w - tx * WG_M);
    const int64_t n = g->out_c;
    float t[WG_M * WG_ALPHA][WINOGRAD_MAX_LANES], o[WG_M][WINOGRAD_MAX_LANES], zero[WINOGRAD_MAX_LANES] = {0};
    const float *add = bias ? bias + c0 : zero;
    for (int s = 0; s < WG_ALPHA; s++)
        for (int64_t c = 0; c < cc; c++)
            WG(wg_output_1d)(m + s * ld + c, WG_ALPHA * ld, &t[s][c], WG_ALPHA * WINOGRAD_MAX_LANES);
    for (int r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cc; c++)
            WG(wg_output_1d)(&t[r * WG_ALPHA][c], WINOGRAD_MAX_LANES, &o[0][c], WINOGRAD_MAX_LANES);
        for (int j = 0; j < cols; j++) {
            int64_t pixel = (b * g->out_h + ty * WG_M + r) * g->out_w + tx * WG_M + j;
            float *dst = y + pixel * n + c0;
            if (residual) {
                const float *res = residual + pixel * n + c0;
                for (int64_t c = 0; c < cc; c++)
                    dst[c] = o[j][c] + add[c] + res[c];
            } else {
                for (int64_t c = 0; c < cc; c++)
                    dst[c] = o[j][c] + add[c];
            }
        }
    }
}

/* Output channels [g0, g1) of the tiles [t0, t1), from the group's
 * weights WINOGRAD_WEIGHTS transformed into u: the tiles' inputs are
 * transformed, then point by point multiplied by the weights (each
 * point's inputs stay in cache while every panel of its weights streams
 * past), then the products transformed back, a panel's width at a time.
 * scratch: winograd_scratch_bytes(g, v, t1 - t0, g1 - g0) bytes, 64-byte
 * aligned. */
static void WINOGRAD_CONV(const conv2d_geom *g, const float *x, const packed_weights *w, const float *u, int64_t g0,
                          int64_t g1, const float *bias, const float *residual, float *y, int64_t t0, int64_t t1,
                          void *scratch)
{
    const kernel_table *self = kernels_for(WINOGRAD_ISA);
    const int64_t tiles = t1 - t0, k = g->in_c, n = g1 - g0;
    /* the matrix kernels load weights aligned, and rows are best so */
    float *v = scratch, *m = v + winograd_align(WG_POINTS * tiles * k);
    for (int64_t t = 0; t < tiles; t++)
        WG(wg_input_tile)(g, x, t0 + t, v + t * k, tiles * k);
    packed_weights point = {.nr = w->nr, .dtype = KILN_DTYPE_F32, .n = n, .k = k, .taps = 1};
    for (int i = 0; i < WG_POINTS; i++) {
        point.data = u + i * winograd_point_elements(w->nr, n, k);
        self->linear_f32(v + i * tiles * k, k, &point, NULL, m + i * tiles * n, n, 0, tiles, 0, n);
    }
    for (int64_t t = 0; t < tiles; t++)
        for (int64_t c0 = 0; c0 < n; c0 += WINOGRAD_MAX_LANES)
            WG(wg_output_tile)(g, m + t * n + c0, tiles * n, t0 + t, g0 + c0, wg_min(WINOGRAD_MAX_LANES, n - c0),
                               bias, residual, y);
}

#undef WG
#undef WG_CAT
#undef WG_CAT_
#undef WG_POINTS
#undef WG_ALPHA
#undef WG_M
#undef WINOGRAD_WEIGHTS
#undef WINOGRAD_CONV
