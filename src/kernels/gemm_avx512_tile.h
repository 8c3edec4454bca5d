/*
 * gemm_avx512_tile.h - the 12 x 32 output tile of the AVX-512 matrix
 * kernels (gemm_avx512.c with f32 multiply-adds, gemm_avx512_bf16.c with
 * bf16 dot products): 24 zmm accumulators, how a tile starts and how it
 * is stored. Include after immintrin.h and kernels.h, in a file compiled
 * for AVX-512.
 */
#ifndef KILN_KERNELS_GEMM_AVX512_TILE_H
#define KILN_KERNELS_GEMM_AVX512_TILE_H

#define MR 12
#define NR 32

/* Inputs of a convolution tap that fall in the padding read from here. */
#define ZERO_ROW_FLOATS 4096
static const float zero_row[ZERO_ROW_FLOATS] __attribute__((aligned(64)));

static inline void column_masks(int64_t cols, __mmask16 *m0, __mmask16 *m1)
{
    *m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    *m1 = cols >= 32 ? (__mmask16)0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
}

/* Starts a tile: zero for the first block of the reduction, else the
 * partial sums stored by the previous block. */
static inline void load_tile(__m512 c[2 * MR], int first, int rows, float *const y[MR], int64_t cols)
{
    if (first) {
        for (int i = 0; i < 2 * MR; i++)
            c[i] = _mm512_setzero_ps();
        return;
    }
    __mmask16 m0, m1;
    column_masks(cols, &m0, &m1);
    for (int r = 0; r < MR; r++) {
        int row = r < rows ? r : rows - 1;
        c[2 * r] = _mm512_maskz_loadu_ps(m0, y[row]);
        c[2 * r + 1] = _mm512_maskz_loadu_ps(m1, y[row] + 16);
    }
}

/* Stores the rows that exist and the columns below cols; on the last block
 * of the reduction, with bias and residual added. */
static inline void store_tile(__m512 c[2 * MR], int last, int rows, float *const y[MR], const float *const res[MR],
                              const float *bias, int64_t cols)
{
    __mmask16 m0, m1;
    column_masks(cols, &m0, &m1);
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (last && bias) {
        b0 = _mm512_maskz_loadu_ps(m0, bias);
        b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    for (int r = 0; r < rows; r++) {
        __m512 v0 = c[2 * r], v1 = c[2 * r + 1];
        if (last) {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
            if (res) {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, res[r]));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, res[r] + 16));
            }
        }
        _mm512_mask_storeu_ps(y[r], m0, v0);
        _mm512_mask_storeu_ps(y[r] + 16, m1, v1);
    }
}

#endif
