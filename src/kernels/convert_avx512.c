/* Element type conversions with AVX-512, 16 values at a time; tails use
 * masked loads and stores. */
#include <immintrin.h>

#include "kernels/kernels.h"

static __mmask16 tail_mask(size_t remaining)
{
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1);
}

static void f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m256i h = _mm256_maskz_loadu_epi16(m, src + i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(h));
    }
}

static void f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 f = _mm512_maskz_loadu_ps(m, src + i);
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
    }
}

static void bf16_to_f32_avx512(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i));
        _mm512_mask_storeu_epi32(dst + i, m, _mm512_slli_epi32(wide, 16));
    }
}

/* Integer rounding rather than vcvtneps2bf16: that instruction flushes
 * subnormal inputs to zero, and conversions here must match the reference
 * bit for bit. */
static void f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n)
{
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF);
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    const __m512i quiet = _mm512_set1_epi32(0x400000);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512i bits = _mm512_maskz_loadu_epi32(m, src + i);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
        __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, bias));
        __mmask16 is_nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, abs_mask), inf);
        rounded = _mm512_mask_or_epi32(rounded, is_nan, bits, quiet);
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16)));
    }
}

void convert_register_avx512(kernel_table *t)
{
    t->f16_to_f32 = f16_to_f32_avx512;
    t->f32_to_f16 = f32_to_f16_avx512;
    t->bf16_to_f32 = bf16_to_f32_avx512;
    t->f32_to_bf16 = f32_to_bf16_avx512;
}
