/*
 * norm_stats.h - group normalization in two halves, for statistics that
 * span several runs of a graph (a VAE decoded tile by tile normalizes each
 * tile with the statistics of the whole image, graph/executor.h): sums
 * over a region of the input, and the statistics folded into a scale and
 * shift per channel (also for a norm split across threads by rows:
 * kernels.h channel_sums_f32). Channels last, the normalization itself is
 * the kernel table's channel_affine_f32.
 *
 * Plain C only: the sums run only in a tiled decode (one pass over an
 * activation), the folding once per norm.
 */
#ifndef KILN_KERNELS_NORM_STATS_H
#define KILN_KERNELS_NORM_STATS_H

#include <stdint.h>

/* For the (batch, group) items [i0, i1) of batch * groups: adds the sum of
 * x [batch, h, w, c] over rows [y0, y1), columns [x0, x1) and the group's
 * c / groups channels to sums[3 * item], the sum of squares to
 * sums[3 * item + 1] and the count of values to sums[3 * item + 2]. */
void group_norm_sums_f32(const float *x, int64_t h, int64_t w, int64_t c, int64_t groups, int64_t y0, int64_t y1,
                         int64_t x0, int64_t x1, double *sums, int64_t i0, int64_t i1);

/* The statistics of one batch element's groups (sums as
 * group_norm_sums_f32 leaves them: mean sum / count, variance sum of
 * squares / count - mean^2) folded with gamma and beta into a per-channel
 * scale and shift, so that the normalization is y = x * scale + shift. */
void group_norm_affine_f32(const double *sums, int64_t c, int64_t groups, float eps, const float *gamma,
                           const float *beta, float *scale, float *shift);

/* The same from per-channel sums (kernels.h channel_sums_f32: the sum of
 * each channel in sums[ch], of its squares in sums[c + ch]), each over
 * count values. */
void group_norm_affine_from_channels_f32(const double *sums, double count, int64_t c, int64_t groups, float eps,
                                         const float *gamma, const float *beta, float *scale, float *shift);

/* The same two halves for channels-first x [batch, c, h, w] (graph/layout.h):
 * sums as group_norm_sums_f32, and y = x * scale + shift over the channel
 * planes [r0, r1) of batch * c, each hw long, plane (b, ch) taking
 * affine[2 * b * c + ch] as its scale and affine[(2 * b + 1) * c + ch] as
 * its shift (one batch element's scales, then its shifts). */
void group_norm_sums_nchw_f32(const float *x, int64_t h, int64_t w, int64_t c, int64_t groups, int64_t y0,
                              int64_t y1, int64_t x0, int64_t x1, double *sums, int64_t i0, int64_t i1);
void channel_affine_nchw_f32(const float *x, float *y, int64_t c, int64_t hw, const float *affine, int64_t r0,
                             int64_t r1);

#endif
