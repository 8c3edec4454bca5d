/*
 * norm_stats.c - group normalization with statistics gathered elsewhere:
 * the sums, and the normalization with them.
 */
#include "kernels/norm_stats.h"

#include <math.h>

void group_norm_sums_f32(const float *x, int64_t h, int64_t w, int64_t c, int64_t groups, int64_t y0, int64_t y1,
                         int64_t x0, int64_t x1, double *sums, int64_t i0, int64_t i1)
{
    const int64_t cg = c / groups;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / groups, g = i % groups;
        /* one pass: the sums are kept in double, and the variance comes out
         * of them once every region is in */
        double sum = 0.0, sq = 0.0;
        for (int64_t y = y0; y < y1; y++)
            for (int64_t xx = x0; xx < x1; xx++) {
                const float *p = x + ((b * h + y) * w + xx) * c + g * cg;
                for (int64_t j = 0; j < cg; j++) {
                    sum += p[j];
                    sq += (double)p[j] * p[j];
                }
            }
        sums[3 * i] += sum;
        sums[3 * i + 1] += sq;
        sums[3 * i + 2] += (double)((y1 - y0) * (x1 - x0) * cg);
    }
}

/* One group's scale and shift per channel from its sum, sum of squares and
 * count. */
static void fold_group(double sum, double sq, double n, int64_t ch0, int64_t ch1, float eps, const float *gamma,
                       const float *beta, float *scale, float *shift)
{
    n = n > 0 ? n : 1.0;
    double mean = sum / n, var = sq / n - mean * mean;
    double inv = 1.0 / sqrt((var > 0 ? var : 0.0) + eps);
    for (int64_t ch = ch0; ch < ch1; ch++) {
        scale[ch] = (float)(inv * gamma[ch]);
        shift[ch] = (float)(beta[ch] - mean * inv * gamma[ch]);
    }
}

void group_norm_affine_f32(const double *sums, int64_t c, int64_t groups, float eps, const float *gamma,
                           const float *beta, float *scale, float *shift)
{
    const int64_t cg = c / groups;
    for (int64_t g = 0; g < groups; g++)
        fold_group(sums[3 * g], sums[3 * g + 1], sums[3 * g + 2], g * cg, (g + 1) * cg, eps, gamma, beta, scale,
                   shift);
}

void group_norm_affine_from_channels_f32(const double *sums, double count, int64_t c, int64_t groups, float eps,
                                         const float *gamma, const float *beta, float *scale, float *shift)
{
    const int64_t cg = c / groups;
    for (int64_t g = 0; g < groups; g++) {
        double sum = 0.0, sq = 0.0;
        for (int64_t ch = g * cg; ch < (g + 1) * cg; ch++)
            sum += sums[ch], sq += sums[c + ch];
        fold_group(sum, sq, count * (double)cg, g * cg, (g + 1) * cg, eps, gamma, beta, scale, shift);
    }
}

void group_norm_sums_nchw_f32(const float *x, int64_t h, int64_t w, int64_t c, int64_t groups, int64_t y0,
                              int64_t y1, int64_t x0, int64_t x1, double *sums, int64_t i0, int64_t i1)
{
    const int64_t cg = c / groups;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / groups, g = i % groups;
        double sum = 0.0, sq = 0.0;
        for (int64_t ch = g * cg; ch < (g + 1) * cg; ch++)
            for (int64_t y = y0; y < y1; y++) {
                const float *p = x + ((b * c + ch) * h + y) * w;
                for (int64_t xx = x0; xx < x1; xx++) {
                    sum += p[xx];
                    sq += (double)p[xx] * p[xx];
                }
            }
        sums[3 * i] += sum;
        sums[3 * i + 1] += sq;
        sums[3 * i + 2] += (double)((y1 - y0) * (x1 - x0) * cg);
    }
}

void channel_affine_nchw_f32(const float *x, float *y, int64_t c, int64_t hw, const float *affine, int64_t r0,
                             int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / c, ch = r % c;
        float scale = affine[2 * b * c + ch], shift = affine[(2 * b + 1) * c + ch];
        const float *xr = x + r * hw;
        float *yr = y + r * hw;
        for (int64_t j = 0; j < hw; j++)
            yr[j] = xr[j] * scale + shift;
    }
}
