/*
 * vmath_avx2.h - exp, 2^x and erf on 8 floats, for the AVX2 kernels (the same
 * polynomials as vmath_avx512.h, with the same error bounds: exp within
 * 2e-7 relative, erf within 1.5e-7 absolute). Include only from files
 * compiled with the AVX2 flags.
 */
#ifndef KILN_KERNELS_VMATH_AVX2_H
#define KILN_KERNELS_VMATH_AVX2_H

#include <immintrin.h>
#include <math.h>

#ifdef KILN_PRECISE_MATH
/* Fast math off: libm lane by lane (see vmath_avx512.h). */
#define LANE_BY_LANE(name, libm_function)                                                            \
    static inline __m256 name(__m256 x)                                                              \
    {                                                                                                \
        float v[8] __attribute__((aligned(32)));                                                     \
        _mm256_store_ps(v, x);                                                                       \
        for (int i = 0; i < 8; i++)                                                                  \
            v[i] = libm_function(v[i]);                                                              \
        return _mm256_load_ps(v);                                                                    \
    }
LANE_BY_LANE(exp8_ps, expf)
LANE_BY_LANE(exp2_8_ps, exp2f)
LANE_BY_LANE(erf8_ps, erff)
#undef LANE_BY_LANE
#else
static inline __m256 exp8_ps(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3f)), _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n by building the exponent bits (n is in [-126, 127] after the clamp) */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* 2^x: the polynomial of vmath_avx512.h's exp2_ps (relative error 2.1e-7);
 * 2^n by building the exponent bits, so x is clamped to [-126, 127]
 * (below, 2^-126 where 0 is due: callers that need the 0 mask it). */
static inline __m256 exp2_8_ps(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.3276471291e-3f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6755409613e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5507130921e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022120237e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314694405e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0000001192e+0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 erf8_ps(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000));
    __m256 ax = _mm256_andnot_ps(sign_mask, x);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), ax, one));
    __m256 poly = _mm256_set1_ps(1.061405429f);
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    poly = _mm256_mul_ps(poly, t);
    __m256 e = exp8_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax), ax));
    __m256 y = _mm256_fnmadd_ps(poly, e, one);
    return _mm256_or_ps(y, _mm256_and_ps(x, sign_mask));
}
#endif /* KILN_PRECISE_MATH */

static inline __m256 silu8_ps(__m256 x)
{
    __m256 e = exp8_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 gelu8_ps(__m256 x)
{
    __m256 half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5f));
    __m256 e = erf8_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_fmadd_ps(half_x, e, half_x);
}

/* The sum and the maximum of the 8 lanes. */
static inline float reduce_add8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float reduce_max8(__m256 x)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

#endif
