/*
 * nchw.h - kernels for activations stored channels first ([batch, c, h, w]),
 * the layout a graph runs in after graph/layout.h rewrote it: what the
 * layout switch measures channels-last against.
 *
 * Plain C that the compiler vectorizes at the baseline ISA; the matrix work
 * of a convolution goes through the table's linear_f32 micro-kernels on the
 * same packed weights as the NHWC path. Like the table's kernels they
 * compute the part of the output in the range given, allocate nothing and
 * start no threads.
 */
#ifndef KILN_KERNELS_NCHW_H
#define KILN_KERNELS_NCHW_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Output pixels a convolution gathers at once (nchw_conv2d_f32). */
#define NCHW_CONV_BLOCK 64

/* Floats of scratch nchw_conv2d_f32 needs per call: the gathered block of
 * input patches and its product before the scatter. */
size_t nchw_conv2d_scratch_floats(const conv2d_geom *g);

/* Convolution of x [batch, in_c, in_h, in_w] into y [batch, out_c, out_h,
 * out_w] (g's sizes are the logical ones), for the output pixels [p0, p1)
 * of batch * out_h * out_w (at most NCHW_CONV_BLOCK of them) and output
 * channels [c0, c1) (c0 a multiple of w->nr): y = conv(x, w) + bias (+
 * residual, NCHW like y, if not NULL). The classic im2col + GEMM of Caffe
 * and ggml: the block's patches are gathered into scratch as rows in the
 * packed weights' K order (taps, then channels), multiplied by k's
 * linear_f32, and the product scattered to the channel planes. */
void nchw_conv2d_f32(const kernel_table *k, const conv2d_geom *g, const float *x, const packed_weights *w,
                     const float *bias, const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0,
                     int64_t c1, float *scratch);

/* Group normalization of x [batch, c, hw] for the (batch, group) items [i0,
 * i1) of batch * groups: each group is one contiguous run of c / groups *
 * hw values. Then y = norm * gamma + beta, then SiLU if silu is set, by
 * k's silu_f32 on each channel plane while it is in cache (the same exp as
 * the NHWC kernels of that table). y may be x. Sums in double, two
 * passes, as the table's reference. */
void nchw_group_norm_f32(const kernel_table *k, const float *x, float *y, int64_t hw, int64_t c, int64_t groups,
                         float eps, const float *gamma, const float *beta, int silu, int64_t i0, int64_t i1);

/* y = x + bias[b, ch] over the channel planes [r0, r1) of batch * c, each
 * hw long. y may be x. */
void nchw_add_channel_bias_f32(const float *x, const float *bias, float *y, int64_t hw, int64_t r0, int64_t r1);

/* y [batch, ca + cb, hw] = a [batch, ca, hw] then b [batch, cb, hw] for
 * the batch elements [b0, b1). */
void nchw_concat_f32(const float *a, const float *b, float *y, int64_t ca, int64_t cb, int64_t hw, int64_t b0,
                     int64_t b1);

/* Nearest upsampling of x [planes, h, w] to [planes, out_h, out_w], source
 * index floor(dst * in / out) (PyTorch's nearest), for the output rows
 * [r0, r1) of planes * out_h. */
void nchw_upsample_nearest_f32(const float *x, float *y, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                               int64_t r0, int64_t r1);

/* Rows of a transpose: y [batch, cols, rows] = x [batch, rows, cols]^T per
 * batch element (NHWC to NCHW is rows = h*w, cols = c; the way back the
 * other), for the blocks [i0, i1) of batch * ceil(rows / TRANSPOSE_BLOCK)
 * row blocks. */
#define TRANSPOSE_BLOCK 32
void transpose_f32(const float *x, float *y, int64_t rows, int64_t cols, int64_t i0, int64_t i1);

#endif
