/*
 * winograd_driver.h - 3x3 stride-1 convolution by Winograd's minimal
 * filtering, F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2015): a 4x4 block of outputs from a 6x6
 * block of inputs with 36 multiplies per channel pair instead of 144.
 *
 * Include it in a file compiled for one level after defining
 *   WINOGRAD_ISA                      the level (its table supplies the
 *                                     matrix kernel and the f16/bf16 widening)
 *   WINOGRAD_WEIGHTS, WINOGRAD_CONV   the names of the functions to define
 * The transforms are plain loops over channels, which the compiler turns
 * into the level's vectors; the 36 products per tile are the level's own
 * linear_f32, so they run at its matrix speed.
 *
 * The matrices are Lavin's, with interpolation points 0, 1, -1, 2, -2 and
 * infinity: V = B^T d B (input), U = G g G^T (weights), Y = A^T M A
 * (output), where M is the sum over input channels of U * V point by point.
 */
#include <string.h>

#include "kernels/winograd.h"

/* input channels the input transform works on at once: its temporaries
 * stay in L1 */
#define WG_CHANNELS 64

/* Inputs of a tile that fall in the padding read from here. */
static const float wg_zero_row[WINOGRAD_MAX_CHANNELS] __attribute__((aligned(64)));

static int64_t wg_min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* One column of a 3x3 kernel to its 6 points: G g. */
#define WG_WEIGHT_1D(g0, g1, g2, u0, u1, u2, u3, u4, u5)                                                      \
    do {                                                                                                       \
        float even_ = (g0) * (1.0f / 24.0f) + (g2) * (1.0f / 6.0f), odd_ = (g1) * (1.0f / 12.0f);              \
        float sum_ = ((g0) + (g2)) * (-1.0f / 6.0f), mid_ = (g1) * (-1.0f / 6.0f);                             \
        u0 = (g0) * 0.25f;                                                                                     \
        u1 = sum_ + mid_;                                                                                      \
        u2 = sum_ - mid_;                                                                                      \
        u3 = even_ + odd_;                                                                                     \
        u4 = even_ - odd_;                                                                                     \
        u5 = (g2);                                                                                             \
    } while (0)

/* Six inputs to their 6 points: B^T d. */
#define WG_INPUT_1D(d0, d1, d2, d3, d4, d5, v0, v1, v2, v3, v4, v5)                                           \
    do {                                                                                                       \
        float a_ = (d4) - 4.0f * (d2), b_ = (d3) - 4.0f * (d1);                                                \
        float c_ = (d4) - (d2), e_ = 2.0f * ((d3) - (d1));                                                     \
        v0 = 4.0f * (d0) - 5.0f * (d2) + (d4);                                                                 \
        v1 = a_ + b_;                                                                                          \
        v2 = a_ - b_;                                                                                          \
        v3 = c_ + e_;                                                                                          \
        v4 = c_ - e_;                                                                                          \
        v5 = 4.0f * (d1) - 5.0f * (d3) + (d5);                                                                 \
    } while (0)

/* Six points back to 4 outputs: A^T m. */
#define WG_OUTPUT_1D(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3)                                                  \
    do {                                                                                                       \
        float p12_ = (m1) + (m2), n12_ = (m1) - (m2), p34_ = (m3) + (m4), n34_ = (m3) - (m4);                  \
        o0 = (m0) + p12_ + p34_;                                                                               \
        o1 = n12_ + 2.0f * n34_;                                                                               \
        o2 = p12_ + 4.0f * p34_;                                                                               \
        o3 = n12_ + 8.0f * n34_ + (m5);                                                                        \
    } while (0)

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

/* Output channels [c0, c1) of w (panels of w->nr lanes; one channel per
 * panel in the scalar layout [n][taps][k]) to their 36 points: point i of
 * the group [g0, g1) is a linear layer's packed weight of g1 - g0 outputs
 * and k inputs at u + i * winograd_point_elements(w->nr, g1 - g0, k). */
static void WINOGRAD_WEIGHTS(const packed_weights *w, int64_t g0, int64_t g1, float *u, int64_t c0, int64_t c1)
{
    const kernel_table *self = kernels_for(WINOGRAD_ISA);
    const int64_t lanes = w->nr > 0 ? w->nr : 1, k = w->k, point = winograd_point_elements(w->nr, g1 - g0, k);
    float g[9][WINOGRAD_CHUNK * WINOGRAD_MAX_LANES], col[6][3][WINOGRAD_CHUNK * WINOGRAD_MAX_LANES];
    for (int64_t p = c0 / lanes; p < (c1 + lanes - 1) / lanes; p++)
        for (int64_t k0 = 0; k0 < k; k0 += WINOGRAD_CHUNK) {
            int64_t width = wg_min(WINOGRAD_CHUNK, k - k0) * lanes;
            for (int t = 0; t < 9; t++)
                wg_widen(self, w, ((p * 9 + t) * k + k0) * lanes, width, g[t]);
            for (int kx = 0; kx < 3; kx++)
                for (int64_t e = 0; e < width; e++)
                    WG_WEIGHT_1D(g[kx][e], g[3 + kx][e], g[6 + kx][e], col[0][kx][e], col[1][kx][e],
                                 col[2][kx][e], col[3][kx][e], col[4][kx][e], col[5][kx][e]);
            float *dst = u + ((p - g0 / lanes) * k + k0) * lanes;
            for (int i = 0; i < 6; i++) {
                float *row = dst + i * 6 * point;
                for (int64_t e = 0; e < width; e++)
                    WG_WEIGHT_1D(col[i][0][e], col[i][1][e], col[i][2][e], row[e], row[point + e],
                                 row[2 * point + e], row[3 * point + e], row[4 * point + e], row[5 * point + e]);
            }
        }
}

/* Tile tile's 6x6 inputs to their 36 points: point i of channel c goes to
 * v[i * ld + c]. */
static void wg_input_tile(const conv2d_geom *g, const float *x, int64_t tile, float *v, int64_t ld)
{
    int64_t tiles_w = (g->out_w + 3) / 4, tiles_h = (g->out_h + 3) / 4;
    int64_t tx = tile % tiles_w, ty = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    const float *d[36];
    for (int r = 0; r < 6; r++)
        for (int s = 0; s < 6; s++) {
            int64_t iy = ty * 4 + r - g->pad_top, ix = tx * 4 + s - g->pad_left;
            d[r * 6 + s] = iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w
                               ? wg_zero_row
                               : conv2d_input_at(g, x, b, iy, ix);
        }
    for (int64_t c0 = 0; c0 < g->in_c; c0 += WG_CHANNELS) {
        int64_t cc = wg_min(WG_CHANNELS, g->in_c - c0);
        float t[36][WG_CHANNELS];
        for (int s = 0; s < 6; s++)
            for (int64_t c = 0; c < cc; c++)
                WG_INPUT_1D(d[s][c0 + c], d[6 + s][c0 + c], d[12 + s][c0 + c], d[18 + s][c0 + c], d[24 + s][c0 + c],
                            d[30 + s][c0 + c], t[s][c], t[6 + s][c], t[12 + s][c], t[18 + s][c], t[24 + s][c],
                            t[30 + s][c]);
        for (int r = 0; r < 6; r++) {
            float *out = v + r * 6 * ld + c0;
            for (int64_t c = 0; c < cc; c++)
                WG_INPUT_1D(t[r * 6][c], t[r * 6 + 1][c], t[r * 6 + 2][c], t[r * 6 + 3][c], t[r * 6 + 4][c],
                            t[r * 6 + 5][c], out[c], out[ld + c], out[2 * ld + c], out[3 * ld + c], out[4 * ld + c],
                            out[5 * ld + c]);
        }
    }
}

/* Tile tile's 36 points, point i of output channel c0 + c at m[i * ld + c],
 * back to its 4x4 outputs of channels [c0, c0 + cc) (the pixels inside the
 * image), plus bias and residual. */
static void wg_output_tile(const conv2d_geom *g, const float *m, int64_t ld, int64_t tile, int64_t c0, int64_t cc,
                           const float *bias, const float *residual, float *y)
{
    int64_t tiles_w = (g->out_w + 3) / 4, tiles_h = (g->out_h + 3) / 4;
    int64_t tx = tile % tiles_w, ty = (tile / tiles_w) % tiles_h, b = tile / (tiles_w * tiles_h);
    int rows = (int)wg_min(4, g->out_h - ty * 4), cols = (int)wg_min(4, g->out_w - tx * 4);
    const int64_t n = g->out_c;
    float t[24][WINOGRAD_MAX_LANES], o[4][WINOGRAD_MAX_LANES], zero[WINOGRAD_MAX_LANES] = {0};
    const float *add = bias ? bias + c0 : zero;
    for (int s = 0; s < 6; s++) {
        const float *in = m + s * ld;
        for (int64_t c = 0; c < cc; c++)
            WG_OUTPUT_1D(in[c], in[6 * ld + c], in[12 * ld + c], in[18 * ld + c], in[24 * ld + c], in[30 * ld + c],
                         t[s][c], t[6 + s][c], t[12 + s][c], t[18 + s][c]);
    }
    for (int r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cc; c++)
            WG_OUTPUT_1D(t[r * 6][c], t[r * 6 + 1][c], t[r * 6 + 2][c], t[r * 6 + 3][c], t[r * 6 + 4][c],
                         t[r * 6 + 5][c], o[0][c], o[1][c], o[2][c], o[3][c]);
        for (int j = 0; j < cols; j++) {
            int64_t pixel = (b * g->out_h + ty * 4 + r) * g->out_w + tx * 4 + j;
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
 * scratch: winograd_scratch_bytes(g, t1 - t0, g1 - g0) bytes, 64-byte
 * aligned. */
static void WINOGRAD_CONV(const conv2d_geom *g, const float *x, const packed_weights *w, const float *u, int64_t g0,
                          int64_t g1, const float *bias, const float *residual, float *y, int64_t t0, int64_t t1,
                          void *scratch)
{
    const kernel_table *self = kernels_for(WINOGRAD_ISA);
    const int64_t tiles = t1 - t0, k = g->in_c, n = g1 - g0;
    /* the matrix kernels load weights aligned, and rows are best so */
    float *v = scratch, *m = v + winograd_align(36 * tiles * k);
    for (int64_t t = 0; t < tiles; t++)
        wg_input_tile(g, x, t0 + t, v + t * k, tiles * k);
    packed_weights point = {.nr = w->nr, .dtype = KILN_DTYPE_F32, .n = n, .k = k, .taps = 1};
    for (int i = 0; i < 36; i++) {
        point.data = u + i * winograd_point_elements(w->nr, n, k);
        self->linear_f32(v + i * tiles * k, k, &point, NULL, m + i * tiles * n, n, 0, tiles, 0, n);
    }
    for (int64_t t = 0; t < tiles; t++)
        for (int64_t c0 = 0; c0 < n; c0 += WINOGRAD_MAX_LANES)
            wg_output_tile(g, m + t * n + c0, tiles * n, t0 + t, g0 + c0, wg_min(WINOGRAD_MAX_LANES, n - c0), bias,
                           residual, y);
}
