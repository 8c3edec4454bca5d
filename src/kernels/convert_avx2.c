/* Element type conversions with AVX2 + F16C, 8 values at a time; tails go
 * through the scalar reference so results match it exactly. */
#include <immintrin.h>

#include "core/half.h"
#include "kernels/kernels.h"

static void f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = half_f16_to_f32(src[i]);
}

static void f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = half_f32_to_f16(src[i]);
}

static void bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(wide, 16));
    }
    for (; i < n; i++)
        dst[i] = half_bf16_to_f32(src[i]);
}

/* Round to nearest even by adding 0x7FFF plus the lowest kept bit; NaNs are
 * kept NaN by setting the quiet bit instead of rounding (which could carry
 * them into infinity). */
static __m256i round_to_bf16_avx2(__m256i bits)
{
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    __m256i abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF));
    __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F800000));
    __m256i quiet = _mm256_or_si256(bits, _mm256_set1_epi32(0x400000));
    return _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet, is_nan), 16);
}

static void f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i lo = round_to_bf16_avx2(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i hi = round_to_bf16_avx2(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* packus works within 128-bit lanes; the permute restores order */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + i), packed);
    }
    for (; i < n; i++)
        dst[i] = half_f32_to_bf16(src[i]);
}

void convert_register_avx2(kernel_table *t)
{
    t->f16_to_f32 = f16_to_f32_avx2;
    t->f32_to_f16 = f32_to_f16_avx2;
    t->bf16_to_f32 = bf16_to_f32_avx2;
    t->f32_to_bf16 = f32_to_bf16_avx2;
}
