/*
 * gemm_avx512_bf16.c - the matrix kernels with AVX512_BF16's dot products,
 * for weights packed as bf16: linear layers and convolutions (implicit
 * GEMM, as gemm_avx512.c) where each vdpbf16ps adds two products of bf16
 * pairs to each of 16 f32 sums.
 *
 * The weights keep the packing every other kernel reads ([k][32] per
 * panel): two consecutive k rows of a panel are interleaved into the pairs
 * the instruction multiplies with two permutes, which lets Winograd, the
 * channels-first path and the scalar reference share one packed copy. The
 * activations are rounded to bf16 (to nearest even) a block of the
 * reduction at a time, into the stack, then broadcast a pair at a time:
 * the inputs of every product are bf16, the sums f32, as in PyTorch's bf16
 * autocast. A tile still sums its reduction in one fixed order, so results
 * do not depend on the split across threads.
 *
 * Whether it pays is the CPU's business: one vdpbf16ps does twice the work
 * of an FMA, but some cores issue it at a quarter of the FMA's rate (the
 * tables in kernels.c measure both before choosing it).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/gemm_avx512_tile.h"

#define KC 256

/* Element 2j of the low pair vector is column j of the first k row and
 * element 2j + 1 column j of the second (indices from 32 pick the second
 * operand of the permute); the high vector does the same for columns
 * 16..31. */
static const uint16_t interleave_low[32] __attribute__((aligned(64))) = {
    0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39, 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
static const uint16_t interleave_high[32] __attribute__((aligned(64))) = {
    16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
    24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};

/* n floats of src (n <= KC) as bf16 into dst, zero-padded to an even
 * count so that the last pair is whole. */
static inline void round_row(const float *src, int64_t n, uint16_t *dst)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512(dst + i, (__m512i)v);
    }
    if (i < n) {
        int64_t left = n - i;
        __mmask16 lo = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        __mmask16 hi = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + i + 16), _mm512_maskz_loadu_ps(lo, src + i));
        _mm512_storeu_si512(dst + i, (__m512i)v); /* dst holds KC + 32 values: the zeros past n land in it */
    }
}

#define ROW(r)                                                                                           \
    {                                                                                                    \
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)pairs[r][i]);                                     \
        c[2 * (r)] = _mm512_dpbf16_ps(c[2 * (r)], av, b0);                                               \
        c[2 * (r) + 1] = _mm512_dpbf16_ps(c[2 * (r) + 1], av, b1);                                       \
    }
#define ALL_ROWS ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11)

/* One block of the reduction (k <= KC): c += a[r][0..k) . b[0..k)[32] for
 * the 12 rows, b bf16 weights at a panel's [k][32]. */
static inline void tap_12x32_dot(const float *const a[MR], const uint16_t *b, int64_t k, __m512 c[2 * MR])
{
    /* each row's pairs as one 32-bit value: (a[2i], a[2i + 1]) as bf16 */
    uint32_t pairs[MR][(KC + 32) / 2] __attribute__((aligned(64)));
    for (int r = 0; r < MR; r++)
        round_row(a[r], k, (uint16_t *)pairs[r]);
    const __m512i low = _mm512_load_si512(interleave_low), high = _mm512_load_si512(interleave_high);
    int64_t whole = k / 2;
    for (int64_t i = 0; i < whole; i++) {
        __m512i first = _mm512_load_si512(b), second = _mm512_load_si512(b + NR);
        b += 2 * NR;
        __m512bh b0 = (__m512bh)_mm512_permutex2var_epi16(first, low, second);
        __m512bh b1 = (__m512bh)_mm512_permutex2var_epi16(first, high, second);
        ALL_ROWS
    }
    if (k & 1) { /* the last k row pairs with zeros (its activations' partners are zero too) */
        int64_t i = whole;
        __m512i first = _mm512_load_si512(b), second = _mm512_setzero_si512();
        __m512bh b0 = (__m512bh)_mm512_permutex2var_epi16(first, low, second);
        __m512bh b1 = (__m512bh)_mm512_permutex2var_epi16(first, high, second);
        ALL_ROWS
    }
}
#undef ALL_ROWS
#undef ROW

/* The block of panel elements [offset, offset + k * NR) into c; only bf16
 * weights come here (kernels.c routes the others to gemm_avx512.c). */
static inline void tap_block(const packed_weights *w, const float *const a[MR], int64_t offset, int64_t k,
                             const char *ahead, __m512 c[2 * MR])
{
    (void)ahead; /* compute-bound: no prefetch gained here */
    tap_12x32_dot(a, (const uint16_t *)w->data + offset, k, c);
}

#define VEC __m512
#define GEMM_LINEAR linear_bf16_dot_avx512
#define GEMM_CONV2D conv2d_bf16_dot_avx512
#include "kernels/gemm_driver.h"

/* 16 independent chains of vdpbf16ps, 32 multiply-adds each. */
static double bf16_dot_peak_avx512(int64_t rounds)
{
    __m512 a[16];
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80); /* (1, 1) */
    const __m512bh y = (__m512bh)_mm512_set1_epi32(0x33803380); /* (6e-8, 6e-8) */
    for (int i = 0; i < 16; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < 16; i++)
            a[i] = _mm512_dpbf16_ps(a[i], x, y);
    __m512 sum = a[0];
    for (int i = 1; i < 16; i++)
        sum = _mm512_add_ps(sum, a[i]);
    volatile float sink = _mm512_reduce_add_ps(sum);
    (void)sink;
    return 2.0 * 32.0 * 16.0 * (double)rounds;
}

void gemm_register_avx512_bf16(kernel_table *t)
{
    t->bf16_dot_peak = bf16_dot_peak_avx512;
    t->linear_bf16_dot = linear_bf16_dot_avx512;
    t->conv2d_bf16_dot = conv2d_bf16_dot_avx512;
}
