/*
 * vmath_avx512.h - exp and erf on 16 floats, for the AVX-512 kernels.
 * Include only from files compiled with the AVX-512 flags.
 *
 *   exp_ps: relative error under 2e-7 (vs libm expf) for x in [-87, 88];
 *           0 below -87.3, inf above 88.7.
 *   exp2_ps: 2^x, relative error under 2.2e-7 for x in [-126, 127];
 *           fewer operations than exp_ps (no clamps, no split of ln 2),
 *           for callers that bring their argument to base 2 anyway.
 *   erf_ps: absolute error under 1.5e-7 (Abramowitz & Stegun 7.1.26 with
 *           the exp above).
 */
#ifndef KILN_KERNELS_VMATH_AVX512_H
#define KILN_KERNELS_VMATH_AVX512_H

#include <immintrin.h>
#include <math.h>

#ifdef KILN_PRECISE_MATH
/* Fast math off: libm lane by lane, for the kernels compiled a second time
 * with KILN_PRECISE_MATH (the *_precise.c files). */
#define LANE_BY_LANE(name, libm_function)                                                            \
    static inline __m512 name(__m512 x)                                                              \
    {                                                                                                \
        float v[16] __attribute__((aligned(64)));                                                    \
        _mm512_store_ps(v, x);                                                                       \
        for (int i = 0; i < 16; i++)                                                                 \
            v[i] = libm_function(v[i]);                                                              \
        return _mm512_load_ps(v);                                                                    \
    }
LANE_BY_LANE(exp_ps, expf)
LANE_BY_LANE(exp2_ps, exp2f)
LANE_BY_LANE(erf_ps, erff)
#undef LANE_BY_LANE
#else
/* x = n ln2 + r with |r| <= ln2/2; e^r by Cephes' expf polynomial; 2^n by
 * scalef (which also gives 0 and inf at the ends). */
static inline __m512 exp_ps(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* x = n + f with |f| <= 1/2; 2^f by a degree-5 polynomial fitted for
 * relative error (Chebyshev nodes, reweighted towards minimax: 7.5e-8 in
 * exact arithmetic, 2.1e-7 evaluated in f32); 2^n by scalef. */
static inline __m512 exp2_ps(__m512 x)
{
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.3276471291e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6755409613e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5507130921e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022120237e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314694405e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001192e+0f));
    return _mm512_scalef_ps(p, n);
}

/* erf(x) = sign(x) (1 - poly(t) e^(-x^2)), t = 1 / (1 + p |x|) */
static inline __m512 erf_ps(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, one));
    __m512 poly = _mm512_set1_ps(1.061405429f);
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453152027f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
    poly = _mm512_mul_ps(poly, t);
    __m512 e = exp_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax));
    __m512 y = _mm512_fnmadd_ps(poly, e, one);
    /* copy the sign of x */
    const __m512i sign = _mm512_set1_epi32((int)0x80000000);
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y),
                                               _mm512_and_si512(_mm512_castps_si512(x), sign)));
}
#endif /* KILN_PRECISE_MATH */

static inline __m512 silu_ps(__m512 x)
{
    __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline __m512 gelu_ps(__m512 x)
{
    __m512 half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
    __m512 e = erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_fmadd_ps(half_x, e, half_x);
}

static inline __mmask16 tail_mask16(int64_t remaining)
{
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1);
}

#endif
