/*
 * nchw.c - the channels-first kernels: im2col convolution, group norm over
 * contiguous groups, bias, concat, upsampling and the transpose between the
 * layouts.
 */
#include "kernels/nchw.h"

#include <math.h>
#include <string.h>

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

size_t nchw_conv2d_scratch_floats(const conv2d_geom *g)
{
    int64_t k = (int64_t)g->kernel * g->kernel * g->in_c;
    return (size_t)(NCHW_CONV_BLOCK * (k + g->out_c));
}

void nchw_conv2d_f32(const kernel_table *k, const conv2d_geom *g, const float *x, const packed_weights *w,
                     const float *bias, const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0,
                     int64_t c1, float *scratch)
{
    const int64_t ksize = g->kernel, taps = ksize * ksize, ic = g->in_c, kdim = taps * ic;
    const int64_t in_hw = g->in_h * g->in_w, out_hw = g->out_h * g->out_w, rows = p1 - p0;
    float *patches = scratch, *product = scratch + NCHW_CONV_BLOCK * kdim;
    /* im2col: one row per output pixel, K ordered taps then channels as the
     * packed OHWI weights are. Pixel by pixel: a row is written once, in
     * order, and the strided reads of its taps fall on the lines the next
     * tap and the next pixel read again (channel by channel instead,
     * whose writes stride by a whole row, measured no faster) */
    for (int64_t r = 0; r < rows; r++) {
        int64_t q = p0 + r, b = q / out_hw, pix = q % out_hw;
        int64_t oy = pix / g->out_w, ox = pix % g->out_w;
        float *row = patches + r * kdim;
        const float *xb = x + b * ic * in_hw;
        for (int64_t t = 0; t < taps; t++) {
            int64_t iy = oy * g->stride + t / ksize - g->pad_top, ix = ox * g->stride + t % ksize - g->pad_left;
            float *dst = row + t * ic;
            if (iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w) {
                memset(dst, 0, (size_t)ic * sizeof *dst);
                continue;
            }
            const float *src = xb + iy * g->in_w + ix;
            for (int64_t c = 0; c < ic; c++)
                dst[c] = src[c * in_hw];
        }
    }
    /* the same packed weights as one matrix [out_c, taps * in_c]: panels
     * [n / nr][taps][k][nr] are [n / nr][1][taps * k][nr] */
    packed_weights flat = *w;
    flat.k = kdim;
    flat.taps = 1;
    int64_t cols = c1 - c0;
    k->linear_f32(patches, kdim, &flat, bias, product - c0, cols, 0, rows, c0, c1);
    /* scatter to the channel planes: a channel at a time, so each write is a
     * run along one plane */
    for (int64_t r0 = 0; r0 < rows;) {
        int64_t q = p0 + r0, b = q / out_hw, pix = q % out_hw;
        int64_t run = min64(rows - r0, out_hw - pix);
        for (int64_t oc = c0; oc < c1; oc++) {
            int64_t at = (b * g->out_c + oc) * out_hw + pix;
            float *dst = y + at;
            const float *src = product + r0 * cols + (oc - c0);
            if (residual) {
                const float *res = residual + at;
                for (int64_t i = 0; i < run; i++)
                    dst[i] = src[i * cols] + res[i];
            } else {
                for (int64_t i = 0; i < run; i++)
                    dst[i] = src[i * cols];
            }
        }
        r0 += run;
    }
}

/* Sums of n floats into double, in 16 float lanes per chunk of 256 values:
 * lane-wise adds vectorize without reassociating, and a chunk's partial
 * sums are short enough to keep float's rounding far below the tolerance
 * of a norm. With center set, of (x - center)^2 instead. */
static double sum_floats(const float *p, int64_t n, int squares, float center)
{
    double total = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t len = min64(256, n - i0);
        float lane[16] = {0};
        int64_t i = 0;
        if (squares)
            for (; i + 16 <= len; i += 16)
                for (int j = 0; j < 16; j++) {
                    float d = p[i0 + i + j] - center;
                    lane[j] += d * d;
                }
        else
            for (; i + 16 <= len; i += 16)
                for (int j = 0; j < 16; j++)
                    lane[j] += p[i0 + i + j];
        double part = 0.0;
        for (int j = 0; j < 16; j++)
            part += lane[j];
        for (; i < len; i++) {
            float d = squares ? p[i0 + i] - center : p[i0 + i];
            part += squares ? (double)d * d : (double)d;
        }
        total += part;
    }
    return total;
}

void nchw_group_norm_f32(const kernel_table *k, const float *x, float *y, int64_t hw, int64_t c, int64_t groups,
                         float eps, const float *gamma, const float *beta, int silu, int64_t i0, int64_t i1)
{
    const int64_t cg = c / groups, n = cg * hw;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / groups, g = i % groups;
        const float *xg = x + (b * c + g * cg) * hw;
        float *yg = y + (b * c + g * cg) * hw;
        double mean = sum_floats(xg, n, 0, 0.0f) / (double)n;
        float fmean = (float)mean;
        /* the variance around the float mean: what the normalization
         * subtracts below */
        double var = sum_floats(xg, n, 1, fmean) / (double)n;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (int64_t j = 0; j < cg; j++) {
            int64_t ch = g * cg + j;
            float scale = inv * gamma[ch], shift = beta[ch];
            const float *xp = xg + j * hw;
            float *yp = yg + j * hw;
            for (int64_t p = 0; p < hw; p++)
                yp[p] = (xp[p] - fmean) * scale + shift;
            if (silu)
                k->silu_f32(yp, yp, 0, hw);
        }
    }
}

void nchw_add_channel_bias_f32(const float *x, const float *bias, float *y, int64_t hw, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        float v = bias[r];
        const float *xp = x + r * hw;
        float *yp = y + r * hw;
        for (int64_t p = 0; p < hw; p++)
            yp[p] = xp[p] + v;
    }
}

void nchw_concat_f32(const float *a, const float *b, float *y, int64_t ca, int64_t cb, int64_t hw, int64_t b0,
                     int64_t b1)
{
    for (int64_t i = b0; i < b1; i++) {
        memcpy(y + i * (ca + cb) * hw, a + i * ca * hw, (size_t)(ca * hw) * sizeof *y);
        memcpy(y + (i * (ca + cb) + ca) * hw, b + i * cb * hw, (size_t)(cb * hw) * sizeof *y);
    }
}

void nchw_upsample_nearest_f32(const float *x, float *y, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                               int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        int64_t plane = r / out_h, oy = r % out_h;
        const float *src = x + (plane * h + oy * h / out_h) * w;
        float *dst = y + r * out_w;
        if (out_w == 2 * w)
            for (int64_t ox = 0; ox < w; ox++)
                dst[2 * ox] = dst[2 * ox + 1] = src[ox];
        else
            for (int64_t ox = 0; ox < out_w; ox++)
                dst[ox] = src[ox * w / out_w];
    }
}

void transpose_f32(const float *x, float *y, int64_t rows, int64_t cols, int64_t i0, int64_t i1)
{
    int64_t blocks = (rows + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / blocks, r0 = (i % blocks) * TRANSPOSE_BLOCK, r1 = min64(r0 + TRANSPOSE_BLOCK, rows);
        const float *xb = x + b * rows * cols;
        float *yb = y + b * rows * cols;
        /* square tiles: a tile's reads and writes both stay within a few
         * cache lines per row */
        for (int64_t c0 = 0; c0 < cols; c0 += TRANSPOSE_BLOCK) {
            int64_t c1 = min64(c0 + TRANSPOSE_BLOCK, cols);
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++)
                    yb[c * rows + r] = xb[r * cols + c];
        }
    }
}
