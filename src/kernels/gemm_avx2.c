/*
 * gemm_avx2.c - the matrix kernels with AVX2 + FMA: the same scheme as
 * gemm_avx512.c (panels of weights packed once, implicit-GEMM
 * convolution, the reduction in L1-sized blocks, each output one sum in a
 * fixed order) on a 6 x 16 tile: 12 ymm accumulators, two weight vectors
 * and six broadcasts per step, within AVX2's 16 registers.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"

#define MR 6
#define NR 16
#define KC 256

/* Inputs of a convolution tap that fall in the padding read from here. */
#define ZERO_ROW_FLOATS 4096
static const float zero_row[ZERO_ROW_FLOATS] __attribute__((aligned(64)));

/* The twelve accumulators are named variables for the loop: passed in as
 * an array, they were stored to the stack after every multiply-add
 * (clang 14), one store per FMA, which held the kernel to half its peak. */
#define ACC_IN                                                                                           \
    __m256 c00 = c[0], c01 = c[1], c10 = c[2], c11 = c[3], c20 = c[4], c21 = c[5], c30 = c[6], c31 = c[7], \
           c40 = c[8], c41 = c[9], c50 = c[10], c51 = c[11];                                             \
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
#define ACC_OUT                                                                                          \
    c[0] = c00, c[1] = c01, c[2] = c10, c[3] = c11, c[4] = c20, c[5] = c21, c[6] = c30, c[7] = c31,      \
    c[8] = c40, c[9] = c41, c[10] = c50, c[11] = c51;
#define ROW(r)                                                                                           \
    {                                                                                                    \
        __m256 av = _mm256_broadcast_ss(a##r + i);                                                       \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                      \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                                                      \
    }
#define ALL_ROWS ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)

/* The weights come from memory in a model step and the hardware
 * prefetchers stop at every 4 KB page of a panel: the kernels ask for the
 * panel PREFETCH_STEPS k ahead (gemm_avx512.c has the measurements). */
#ifndef PREFETCH_STEPS
#define PREFETCH_STEPS 32
#endif
#define PREFETCH(p) _mm_prefetch((const char *)((p) + PREFETCH_STEPS * NR), _MM_HINT_T0)

static inline void tap_6x16(const float *const a[MR], const float *b, int64_t k, __m256 c[2 * MR])
{
    ACC_IN
    for (int64_t i = 0; i < k; i++) {
        PREFETCH(b);
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        b += NR;
        ALL_ROWS
    }
    ACC_OUT
}

static inline void tap_6x16_f16(const float *const a[MR], const uint16_t *b, int64_t k, __m256 c[2 * MR])
{
    ACC_IN
    for (int64_t i = 0; i < k; i++) {
        PREFETCH(b);
        __m256 b0 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)b));
        __m256 b1 = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(b + 8)));
        b += NR;
        ALL_ROWS
    }
    ACC_OUT
}
/* bf16 weights: the top half of an f32, widened by zero-extend and shift */
static inline void tap_6x16_bf16(const float *const a[MR], const uint16_t *b, int64_t k, __m256 c[2 * MR])
{
    ACC_IN
    for (int64_t i = 0; i < k; i++) {
        PREFETCH(b);
        __m256 b0 = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const __m128i *)b)), 16));
        __m256 b1 = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const __m128i *)(b + 8))), 16));
        b += NR;
        ALL_ROWS
    }
    ACC_OUT
}
#undef ALL_ROWS
#undef ROW
#undef ACC_OUT
#undef ACC_IN

static inline void tap_block(const packed_weights *w, const float *const a[MR], int64_t offset, int64_t k,
                             const char *ahead, __m256 c[2 * MR])
{
    (void)ahead; /* not tried with the 6 x 16 tile */
    if (w->dtype == KILN_DTYPE_F16)
        tap_6x16_f16(a, (const uint16_t *)w->data + offset, k, c);
    else if (w->dtype == KILN_DTYPE_BF16)
        tap_6x16_bf16(a, (const uint16_t *)w->data + offset, k, c);
    else
        tap_6x16(a, (const float *)w->data + offset, k, c);
}

/* AVX2 has no masked float stores of arbitrary width that are cheap to
 * build; tails go through a small buffer instead. */
static inline void store_row(float *dst, __m256 v0, __m256 v1, int64_t cols)
{
    if (cols >= NR) {
        _mm256_storeu_ps(dst, v0);
        _mm256_storeu_ps(dst + 8, v1);
        return;
    }
    float buf[NR];
    _mm256_storeu_ps(buf, v0);
    _mm256_storeu_ps(buf + 8, v1);
    memcpy(dst, buf, (size_t)cols * sizeof *dst);
}

static inline void load_row(const float *src, __m256 *v0, __m256 *v1, int64_t cols)
{
    if (cols >= NR) {
        *v0 = _mm256_loadu_ps(src);
        *v1 = _mm256_loadu_ps(src + 8);
        return;
    }
    float buf[NR] = {0};
    memcpy(buf, src, (size_t)cols * sizeof *buf);
    *v0 = _mm256_loadu_ps(buf);
    *v1 = _mm256_loadu_ps(buf + 8);
}

static inline void load_tile(__m256 c[2 * MR], int first, int rows, float *const y[MR], int64_t cols)
{
    for (int r = 0; r < MR; r++) {
        if (first)
            c[2 * r] = c[2 * r + 1] = _mm256_setzero_ps();
        else
            load_row(y[r < rows ? r : rows - 1], &c[2 * r], &c[2 * r + 1], cols);
    }
}

static inline void store_tile(__m256 c[2 * MR], int last, int rows, float *const y[MR], const float *const res[MR],
                              const float *bias, int64_t cols)
{
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    if (last && bias)
        load_row(bias, &b0, &b1, cols);
    for (int r = 0; r < rows; r++) {
        __m256 v0 = c[2 * r], v1 = c[2 * r + 1];
        if (last) {
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
            if (res) {
                __m256 r0, r1;
                load_row(res[r], &r0, &r1, cols);
                v0 = _mm256_add_ps(v0, r0);
                v1 = _mm256_add_ps(v1, r1);
            }
        }
        store_row(y[r], v0, v1, cols);
    }
}

#define VEC __m256
#define GEMM_LINEAR linear_f32_avx2
#define GEMM_CONV2D conv2d_f32_avx2
#include "kernels/gemm_driver.h"

/* 12 independent FMA chains of 8 lanes: enough in flight to cover a
 * 4-5-cycle latency on two FMA units. */
static double fma_peak_avx2(int64_t rounds)
{
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    __m256 sum = a[0];
    for (int i = 1; i < 12; i++)
        sum = _mm256_add_ps(sum, a[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    volatile float sink = lanes[0] + lanes[7];
    (void)sink;
    return 2.0 * 8.0 * 12.0 * (double)rounds;
}

void gemm_register_avx2(kernel_table *t)
{
    t->fma_peak = fma_peak_avx2;
    t->gemm_mr = MR;
    t->gemm_nr = NR;
    t->linear_f32 = linear_f32_avx2;
    t->conv2d_f32 = conv2d_f32_avx2;
}
