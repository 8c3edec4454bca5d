/*
 * kernels.h - the table of compute kernels, one per instruction set level.
 *
 * Every entry has a plain C version (the specification, in *_scalar.c) and
 * may have faster ones per ISA (*_avx2.c, *_avx512.c, compiled with their own
 * target flags). The table for a level starts from the one below it and
 * replaces what that level does better, so every entry is always filled.
 * Tables are built once; kernels_get() follows cpu_isa(), so KILN_ISA or
 * cpu_set_isa() changes which one callers get.
 */
#ifndef KILN_KERNELS_KERNELS_H
#define KILN_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* The weight operand of a matrix multiply or convolution, packed once for
 * the kernel level that reads it:
 *   nr == 0  the scalar layout: [n][taps][k] (OHWI for a convolution)
 *   nr > 0   panels of nr output channels: [n / nr][taps][k][nr], the last
 *            panel zero-padded; what the SIMD micro-kernels stream through
 * taps is kernel * kernel for a convolution and 1 for a linear layer. */
typedef struct packed_weights {
    int nr;
    kiln_dtype dtype;  /* F32, F16 or BF16 (half the memory; widened to f32 in the kernel) */
    int64_t n, k, taps;
    const void *data;  /* 64-byte aligned */
} packed_weights;

/* Elements a packed copy holds (times the dtype's size for bytes). */
size_t kernels_packed_elements(int nr, int64_t n, int64_t k, int64_t taps);

/* Packs PyTorch's layout, src[n][k][taps] (a linear layer's [n][k], a
 * convolution's [out][in][kh][kw]), of dtype F32, F16 or BF16, into dst
 * as dst_dtype (F32, F16 or BF16; kernels_packed_elements(...) of them). */
void kernels_pack_weights(const void *src, kiln_dtype src_dtype, kiln_dtype dst_dtype, int nr, int64_t n, int64_t k,
                          int64_t taps, void *dst);

/* The columns a packed copy has: n rounded up to whole panels. */
int64_t kernels_packed_columns(int nr, int64_t n);

/* kernels_pack_weights for columns (output channels) [j0, j1) of
 * [0, kernels_packed_columns(nr, n)) only (those past n are zeros): calls
 * on disjoint ranges may run at once. */
void kernels_pack_weights_columns(const void *src, kiln_dtype src_dtype, kiln_dtype dst_dtype, int nr, int64_t n,
                                  int64_t k, int64_t taps, int64_t j0, int64_t j1, void *dst);

/* The order in which a caller should hand out the tiles of an m x n
 * matrix product (or convolution with taps taps per output channel): 1,
 * a row block at a time with every weight panel in turn; 0, a weight
 * panel at a time with every row block in turn. Whichever operand is the
 * larger is then read once and the smaller again per tile of the other:
 * with more activation rows than weights (the UNet's 4,096-token layers
 * at 512x512, the VAE's large convolutions) a row block stays in L2 while
 * the panels stream past; otherwise (the 1280-channel layers, the text
 * encoder) a panel stays while the rows stream. Paired runs of both
 * orders on 2 threads, 12 x 32 tiles in 96 x 32 calls (linear m x n x k;
 * conv batch 2, h x w, in -> out): rows outer 8192x320x320 1.37x,
 * 8192x2560x320 1.45x, 8192x320x1280 1.29x, 2048x640x640 1.11x, conv 64x64
 * 320->320 1.06x, 128x128 256->256 1.08x; panels outer 2048x5120x640
 * 1.06x, 512x1280x1280 1.14x, conv 32x32 640->640 1.07x, 16x16 1280->1280
 * 1.08x. */
static inline int gemm_rows_outer(int64_t m, int64_t n, int64_t k, int64_t taps, size_t l2)
{
    /* A linear layer (or 1x1 convolution) of k inputs also goes rows outer
     * when its activations (m x k) do not fit in a core's L2 (l2 bytes),
     * since each weight panel would fetch them again from L3. Paired runs
     * (2026-12-07 Xeon, L2 2 MB, 2 threads, 5 x 2 alternations) of the
     * shapes where this changes the order: 2048x2560x320 1.09x,
     * 2048x5120x640 1.07x, 1024x5120x640 1.02x; where the activations fit
     * (512x5120x640, 128x10240x1280) panels outer stays ahead (0.96-0.99x
     * for rows). */
    return m > n * taps || (taps == 1 && (size_t)(m * k) * sizeof(float) > l2);
}

/* Convolution geometry. Activations are NHWC. */
typedef struct conv2d_geom {
    int64_t batch, in_h, in_w, in_c;
    int64_t out_h, out_w, out_c;
    int kernel, stride;
    int pad_top, pad_left; /* bottom and right follow from the output size */
    int upsample;          /* 1: x is stored at half of in_h x in_w (both even), each stored pixel
                              standing for a 2x2 block: nearest upsampling read, never written */
} conv2d_geom;

/* Where the input pixel (b, iy, ix) of a convolution lies in x, for iy and
 * ix inside in_h and in_w. */
static inline const float *conv2d_input_at(const conv2d_geom *g, const float *x, int64_t b, int64_t iy, int64_t ix)
{
    int s = g->upsample;
    return x + ((b * (g->in_h >> s) + (iy >> s)) * (g->in_w >> s) + (ix >> s)) * g->in_c;
}

/* The Winograd convolutions of a kernel table: F(2x2, 3x3) and F(4x4, 3x3). */
typedef enum winograd_variant { WINOGRAD_F2, WINOGRAD_F4, WINOGRAD_VARIANTS } winograd_variant;

/* Multi-head attention over token-major tensors: token t of batch b starts
 * at b * len * stride + t * stride, and head h is channels
 * [h * head_dim, (h + 1) * head_dim) of it. Heads need no transposes. */
typedef struct attention_geom {
    int64_t batch, heads, q_len, kv_len, head_dim;
    int64_t q_stride, k_stride, v_stride, o_stride; /* floats from one token to the next */
    float scale;                                    /* usually 1 / sqrt(head_dim) */
    int causal;                                     /* query i sees keys 0..i only */
    int tile_q; /* queries a tiled kernel computes together (a multiple of the table's
                   attention_tile_step up to attention_tile_max); 0: the table's default */
} attention_geom;

/*
 * Work is split by the caller (the graph executor) into ranges; a kernel
 * computes the part of its output in the range it is given, reads what it
 * needs, allocates nothing and starts no threads.
 */
typedef struct kernel_table {
    kiln_isa isa;

    /* The tile the matrix kernels are built around: rows of output (pixels
     * or tokens) and output channels; nr is also the packing the level's
     * kernels read (packed_weights.nr). Callers split work in multiples of
     * these. */
    int gemm_mr, gemm_nr;

    /* y[m, n] = bias[n] + sum_k x[m, k] w[n, k] for m in [m0, m1), n in
     * [n0, n1) (n0 a multiple of w->nr); x and y rows are ldx and ldy floats
     * apart; bias may be NULL. With bf16 weights and the bf16 dot products
     * on (kernels_bf16_dot), x is rounded to bf16 as it is read. */
    void (*linear_f32)(const float *x, int64_t ldx, const packed_weights *w, const float *bias, float *y,
                       int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1);

    /* Output pixels [p0, p1) of batch * out_h * out_w and output channels
     * [c0, c1) (c0 a multiple of w->nr): y = conv(x, w) + bias (+ residual,
     * same shape as y, if not NULL). bias may be NULL. Rounds x to bf16
     * as linear_f32 does. */
    void (*conv2d_f32)(const conv2d_geom *g, const float *x, const packed_weights *w, const float *bias,
                       const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0, int64_t c1);

    /* Winograd F(m x m, 3x3), for 3x3 stride-1 convolutions, one entry per
     * variant (winograd.h has the sizes): F(4x4) does a quarter of the
     * multiplies of conv2d_f32 and F(2x2) 4/9 of them, with rounding
     * errors a few times larger. The output channels go a group [g0, g1)
     * at a time (g0 a multiple of w->nr): winograd_weights_f32[v]
     * transforms channels [c0, c1) of the group (c0 a multiple of w->nr)
     * into u, winograd_points(v) x winograd_point_elements(w->nr, g1 - g0,
     * w->k) floats for the group, 64-byte aligned; winograd_conv_f32[v] then
     * computes the group's channels of the output tiles [t0, t1) of
     * winograd_tiles(g, v) from that u, with bias and residual as
     * conv2d_f32, in scratch of winograd_scratch_bytes(g, v, t1 - t0, g1 - g0)
     * bytes, 64-byte aligned. */
    void (*winograd_weights_f32[WINOGRAD_VARIANTS])(const packed_weights *w, int64_t g0, int64_t g1, float *u,
                                                    int64_t c0, int64_t c1);
    void (*winograd_conv_f32[WINOGRAD_VARIANTS])(const conv2d_geom *g, const float *x, const packed_weights *w,
                                                 const float *u, int64_t g0, int64_t g1, const float *bias,
                                                 const float *residual, float *y, int64_t t0, int64_t t1,
                                                 void *scratch);

    /* Group normalization of x [batch, hw, c] for the (batch, group) pairs
     * [i0, i1) of batch * groups, then y = norm * gamma + beta, then SiLU if
     * silu is set. y may be x. The reference (scalar only): the executor
     * runs the two halves below. */
    void (*group_norm_f32)(const float *x, float *y, int64_t hw, int64_t c, int64_t groups, float eps,
                           const float *gamma, const float *beta, int silu, int64_t i0, int64_t i1);

    /* Group normalization in two halves, for a norm split across threads
     * by rows: contiguous memory, where a split by groups has each thread
     * stride through every pixel for a few channels (3x slower on the
     * VAE's 128-channel 512x512 norms). channel_sums_f32 adds x to
     * sums[ch] and x^2 to sums[c + ch], in double, over rows [r0, r1) of
     * x [rows, c]; channel_affine_f32 writes y = x * scale[ch] + shift[ch],
     * then SiLU if silu is set, for rows [r0, r1). y may be x. */
    void (*channel_sums_f32)(const float *x, int64_t c, int64_t r0, int64_t r1, double *sums);
    void (*channel_affine_f32)(const float *x, float *y, int64_t c, const float *scale, const float *shift, int silu,
                               int64_t r0, int64_t r1);

    /* Layer normalization of rows [r0, r1) of length c. y may be x. */
    void (*layer_norm_f32)(const float *x, float *y, int64_t c, float eps, const float *gamma, const float *beta,
                           int64_t r0, int64_t r1);

    /* softmax(q k^T * scale) v for the (batch, head, query) items [i0, i1)
     * of batch * heads * q_len, in that order (query fastest). scratch is
     * the calling thread's own, of attention_scratch(g) bytes, 64-byte
     * aligned. */
    void (*attention_f32)(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                          int64_t i0, int64_t i1, void *scratch);
    size_t (*attention_scratch)(const attention_geom *g);
    /* The query tile of attention_f32: its default, the step its sizes
     * come in and the largest; all 0 when the kernel is untiled (one query
     * at a time, tile_q ignored). Items handed to one call should be a
     * multiple of the tile. */
    int attention_tile, attention_tile_step, attention_tile_max;

    /* Softmax in place over rows [r0, r1) of x (row r at x + r * ld, n
     * values): x = exp(s x - max) / sum. With causal set, row r keeps its
     * first r + 1 values and the rest become 0. */
    void (*softmax_f32)(float *x, int64_t n, int64_t ld, float scale, int causal, int64_t r0, int64_t r1);

    /* 1 when exp and erf are the polynomial approximations of
     * vmath_*.h (bounds stated there); 0 when they are libm's. */
    int fast_math;

    /* The machine's peak, measured: runs `rounds` rounds of independent
     * multiply-adds (enough chains to cover the FMA latency) and returns
     * the floating-point operations done, for benchmarks to time. */
    double (*fma_peak)(int64_t rounds);

    /* Where the CPU has AVX512_BF16 (NULL elsewhere): the same loop of
     * vdpbf16ps (two products per lane), and the matrix kernels on bf16
     * inputs with f32 sums, for bf16 weights only: x is rounded to bf16
     * (to nearest even) as it is read. linear_f32 and conv2d_f32 call
     * these for bf16 weights when kernels_bf16_dot() says so. */
    double (*bf16_dot_peak)(int64_t rounds);
    void (*linear_bf16_dot)(const float *x, int64_t ldx, const packed_weights *w, const float *bias, float *y,
                            int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
    void (*conv2d_bf16_dot)(const conv2d_geom *g, const float *x, const packed_weights *w, const float *bias,
                            const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0, int64_t c1);

    /* Element-wise over [i0, i1). y may alias an input. */
    void (*add_f32)(const float *a, const float *b, float *y, int64_t i0, int64_t i1);
    void (*silu_f32)(const float *x, float *y, int64_t i0, int64_t i1);
    void (*gelu_f32)(const float *x, float *y, int64_t i0, int64_t i1);       /* exact, with erf */
    void (*quick_gelu_f32)(const float *x, float *y, int64_t i0, int64_t i1); /* x * sigmoid(1.702 x) */

    /* x [rows, hw, c] + bias [rows, c] broadcast over hw, for the rows of
     * batch * hw in [r0, r1). y may be x. */
    void (*add_channel_bias_f32)(const float *x, const float *bias, float *y, int64_t hw, int64_t c, int64_t r0,
                                 int64_t r1);

    /* GEGLU: x [rows, 2n] -> y [rows, n], y = x[:, :n] * gelu(x[:, n:]), rows [r0, r1). */
    void (*geglu_f32)(const float *x, float *y, int64_t n, int64_t r0, int64_t r1);

    /* element type conversions of n contiguous values; narrowing rounds to
     * nearest even (see core/half.h, the reference) */
    void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);
    void (*bf16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*f32_to_bf16)(const float *src, uint16_t *dst, size_t n);
} kernel_table;

/* The table for a level (clamped to what was compiled in). Lives for the
 * process. Thread-safe. */
const kernel_table *kernels_for(kiln_isa isa);

/* The table for the level in use (cpu_isa()). */
const kernel_table *kernels_get(void);

/* The same level with fast math on (the default: exp and erf as vector
 * polynomials) or off (the same kernels calling libm's expf and erff lane by
 * lane). At the scalar level both are libm. */
const kernel_table *kernels_for_math(kiln_isa isa, int fast_math);

/* Whether bf16 weights are multiplied by AVX512_BF16's dot products (the
 * activations rounded to bf16) rather than widened to f32 for FMAs: only
 * at the avx512 level of a CPU with the instructions, and by default only
 * where they are faster: the first call times both loops on one core
 * (about 20 ms). KILN_BF16_DOT=on|off|auto overrides. Thread-safe. */
int kernels_bf16_dot(void);

/* Sets the choice for the process: 1 on (where available), 0 off, -1 auto
 * (measured). For tests and benchmarks; not while kernels run. */
void kernels_set_bf16_dot(int mode);

/* Why kernels_bf16_dot() says what it says, with the rates it measured
 * (a static string). */
const char *kernels_bf16_dot_reason(void);

/* Each ISA file fills in what it has. */
void ops_register_scalar(kernel_table *t);
void gemm_register_avx2(kernel_table *t);
void gemm_register_avx512(kernel_table *t);
void gemm_register_avx512_bf16(kernel_table *t);
void attention_register_avx2(kernel_table *t);
void attention_register_avx512(kernel_table *t);
void ops_register_avx2(kernel_table *t);
void ops_register_avx512(kernel_table *t);
void winograd_register_scalar(kernel_table *t);
void winograd_register_avx2(kernel_table *t);
void winograd_register_avx512(kernel_table *t);
/* the same files compiled with KILN_PRECISE_MATH (libm exp and erf) */
void attention_register_avx2_precise(kernel_table *t);
void attention_register_avx512_precise(kernel_table *t);
void ops_register_avx2_precise(kernel_table *t);
void ops_register_avx512_precise(kernel_table *t);
void convert_register_scalar(kernel_table *t);
void convert_register_avx2(kernel_table *t);
void convert_register_avx512(kernel_table *t);

#endif
