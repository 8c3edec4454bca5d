/*
 * gemm_avx512.c - the matrix kernels with AVX-512: linear layers and
 * convolutions (as implicit GEMM: no im2col, each tap reads the input in
 * place), on weights packed in panels of 32 output channels.
 *
 * The micro-kernel computes a 12 x 32 output tile: 24 zmm accumulators,
 * two weight vectors loaded and twelve activations broadcast per k, which
 * keeps both FMA units busy without running out of registers (32). A tile
 * is computed over the whole reduction before it is stored, so each output
 * element is one sum in a fixed order: results do not depend on how the
 * work was split across threads or batched.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/gemm_avx512_tile.h"

#define ROW(r)                                                                                           \
    {                                                                                                    \
        __m512 av = _mm512_set1_ps(a[r][i]);                                                             \
        c[2 * (r)] = _mm512_fmadd_ps(av, b0, c[2 * (r)]);                                                \
        c[2 * (r) + 1] = _mm512_fmadd_ps(av, b1, c[2 * (r) + 1]);                                        \
    }
#define ALL_ROWS ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11)

/* The weights come from memory in a model step (a UNet's are gigabytes)
 * and the hardware prefetchers stop at every 4 KB page of a panel, so the
 * kernels ask for the panel a fixed number of k ahead themselves: paired
 * runs on 2 threads with the weights cold (bench_kernels --cold) took the
 * 1280- and 2560-channel convolutions and the text encoder's layers 5-30%
 * faster at 8 to 32 k ahead, and left warm shapes within noise. */
#ifndef PREFETCH_STEPS
#define PREFETCH_STEPS 16
#endif
#define PREFETCH(p) _mm_prefetch((const char *)((p) + PREFETCH_STEPS * NR), _MM_HINT_T0)

/* One block of the reduction: c += a[r][0..k) . b[0..k)[32] for the 12
 * rows, with f32 weights. */
static inline __attribute__((always_inline)) void tap_12x32(const float *const a[MR], const float *b, int64_t k,
                                                            const char *ahead, int fetch, __m512 c[2 * MR])
{
    for (int64_t i = 0; i < k; i++) {
        PREFETCH(b);
        if (fetch)
            _mm_prefetch(ahead + i * 64, _MM_HINT_T1);
        PREFETCH(b + 16); /* 32 floats a step: two lines */
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        b += NR;
        ALL_ROWS
    }
}

/* The same with f16 weights, widened as they are loaded: half the bytes
 * to stream, two conversions per 24 multiply-adds. */
static inline __attribute__((always_inline)) void tap_12x32_f16(const float *const a[MR], const uint16_t *b,
                                                                int64_t k, const char *ahead, int fetch,
                                                                __m512 c[2 * MR])
{
    for (int64_t i = 0; i < k; i++) {
        PREFETCH(b);
        if (fetch)
            _mm_prefetch(ahead + i * 64, _MM_HINT_T1);
        __m512 b0 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)b));
        __m512 b1 = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(b + 16)));
        b += NR;
        ALL_ROWS
    }
}
/* The same with bf16 weights: a bf16 is the top half of an f32, so
 * widening is a zero-extend and a shift. This runs on any AVX-512 CPU;
 * gemm_avx512_bf16.c has the dot products of the CPUs with AVX512_BF16. */
static inline __attribute__((always_inline)) void tap_12x32_bf16(const float *const a[MR], const uint16_t *b,
                                                                 int64_t k, const char *ahead, int fetch,
                                                                 __m512 c[2 * MR])
{
    for (int64_t i = 0; i < k; i++) {
        PREFETCH(b);
        if (fetch)
            _mm_prefetch(ahead + i * 64, _MM_HINT_T1);
        __m512 b0 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256((const __m256i *)b)), 16));
        __m512 b1 = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256((const __m256i *)(b + 16))), 16));
        b += NR;
        ALL_ROWS
    }
}
#undef ALL_ROWS
#undef ROW

/* The block of panel elements [offset, offset + k * NR) into c, fetching
 * the weights at ahead (64 bytes a k) into L2 when it is not NULL. */
static inline __attribute__((always_inline)) void tap_weights(const packed_weights *w, const float *const a[MR],
                                                              int64_t offset, int64_t k, const char *ahead,
                                                              int fetch, __m512 c[2 * MR])
{
    if (w->dtype == KILN_DTYPE_F16)
        tap_12x32_f16(a, (const uint16_t *)w->data + offset, k, ahead, fetch, c);
    else if (w->dtype == KILN_DTYPE_BF16)
        tap_12x32_bf16(a, (const uint16_t *)w->data + offset, k, ahead, fetch, c);
    else
        tap_12x32(a, (const float *)w->data + offset, k, ahead, fetch, c);
}

/* a loop without the fetch where there is nothing to fetch: its extra
 * load slot cost the compute-bound shapes 2-5% */
static inline void tap_block(const packed_weights *w, const float *const a[MR], int64_t offset, int64_t k,
                             const char *ahead, __m512 c[2 * MR])
{
    if (ahead)
        tap_weights(w, a, offset, k, ahead, 1, c);
    else
        tap_weights(w, a, offset, k, NULL, 0, c);
}

#define KC 256
#define VEC __m512
#define GEMM_LINEAR linear_f32_avx512
#define GEMM_CONV2D conv2d_f32_avx512
#include "kernels/gemm_driver.h"

/* 16 independent FMA chains of 16 lanes: enough in flight to cover a
 * 4-cycle latency on two FMA units. */
static double fma_peak_avx512(int64_t rounds)
{
    __m512 a[16];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < 16; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    __m512 sum = a[0];
    for (int i = 1; i < 16; i++)
        sum = _mm512_add_ps(sum, a[i]);
    volatile float sink = _mm512_reduce_add_ps(sum);
    (void)sink;
    return 2.0 * 16.0 * 16.0 * (double)rounds;
}

void gemm_register_avx512(kernel_table *t)
{
    t->fma_peak = fma_peak_avx512;
    t->gemm_mr = MR;
    t->gemm_nr = NR;
    t->linear_f32 = linear_f32_avx512;
    t->conv2d_f32 = conv2d_f32_avx512;
}
