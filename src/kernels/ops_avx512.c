/*
 * ops_avx512.c - normalizations and element-wise ops with AVX-512: group
 * norm's two halves (per-channel sums; scale, shift and SiLU fused), layer
 * norm, GEGLU, the activations, adds. exp
 * and erf are the polynomials of vmath_avx512.h; everything else is exact
 * float arithmetic in a different order from the scalar reference.
 */
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/vmath_avx512.h"

/* Sums in double, eight channels at a time (widened to one vector). */
static void channel_sums_f32_avx512(const float *x, int64_t c, int64_t r0, int64_t r1, double *sums)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        for (int64_t ch = 0; ch < c; ch += 8) {
            __mmask8 m = (__mmask8)tail_mask16(c - ch);
            __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, xr + ch));
            _mm512_mask_storeu_pd(sums + ch, m, _mm512_add_pd(_mm512_maskz_loadu_pd(m, sums + ch), v));
            _mm512_mask_storeu_pd(sums + c + ch, m, _mm512_fmadd_pd(v, v, _mm512_maskz_loadu_pd(m, sums + c + ch)));
        }
    }
}

static void channel_affine_f32_avx512(const float *x, float *y, int64_t c, const float *scale, const float *shift,
                                      int silu, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        for (int64_t ch = 0; ch < c; ch += 16) {
            __mmask16 m = tail_mask16(c - ch);
            __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xr + ch), _mm512_maskz_loadu_ps(m, scale + ch),
                                       _mm512_maskz_loadu_ps(m, shift + ch));
            _mm512_mask_storeu_ps(yr + ch, m, silu ? silu_ps(v) : v);
        }
    }
}

static void layer_norm_f32_avx512(const float *x, float *y, int64_t c, float eps, const float *gamma,
                                  const float *beta, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        __m512 s = _mm512_setzero_ps();
        for (int64_t i = 0; i < c; i += 16)
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail_mask16(c - i), xr + i));
        float mean = _mm512_reduce_add_ps(s) / (float)c;
        __m512 vm = _mm512_set1_ps(mean), q = _mm512_setzero_ps();
        for (int64_t i = 0; i < c; i += 16) {
            __mmask16 m = tail_mask16(c - i);
            __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr + i), vm);
            q = _mm512_fmadd_ps(d, d, q);
        }
        __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(q) / (float)c + eps));
        for (int64_t i = 0; i < c; i += 16) {
            __mmask16 m = tail_mask16(c - i);
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), vm), inv);
            _mm512_mask_storeu_ps(yr + i, m,
                                  _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, gamma + i), _mm512_maskz_loadu_ps(m, beta + i)));
        }
    }
}

static void add_f32_avx512(const float *a, const float *b, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i += 16) {
        __mmask16 m = tail_mask16(i1 - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

static void silu_f32_avx512(const float *x, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i += 16) {
        __mmask16 m = tail_mask16(i1 - i);
        _mm512_mask_storeu_ps(y + i, m, silu_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static void gelu_f32_avx512(const float *x, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i += 16) {
        __mmask16 m = tail_mask16(i1 - i);
        _mm512_mask_storeu_ps(y + i, m, gelu_ps(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

static void quick_gelu_f32_avx512(const float *x, float *y, int64_t i0, int64_t i1)
{
    const __m512 one = _mm512_set1_ps(1.0f), k = _mm512_set1_ps(-1.702f);
    for (int64_t i = i0; i < i1; i += 16) {
        __mmask16 m = tail_mask16(i1 - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(v, _mm512_add_ps(one, exp_ps(_mm512_mul_ps(k, v)))));
    }
}

static void add_channel_bias_f32_avx512(const float *x, const float *bias, float *y, int64_t hw, int64_t c,
                                        int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *br = bias + (r / hw) * c;
        for (int64_t i = 0; i < c; i += 16) {
            __mmask16 m = tail_mask16(c - i);
            _mm512_mask_storeu_ps(y + r * c + i, m,
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + r * c + i), _mm512_maskz_loadu_ps(m, br + i)));
        }
    }
}

static void geglu_f32_avx512(const float *x, float *y, int64_t n, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * 2 * n;
        for (int64_t i = 0; i < n; i += 16) {
            __mmask16 m = tail_mask16(n - i);
            __m512 a = _mm512_maskz_loadu_ps(m, xr + i), gate = _mm512_maskz_loadu_ps(m, xr + n + i);
            _mm512_mask_storeu_ps(y + r * n + i, m, _mm512_mul_ps(a, gelu_ps(gate)));
        }
    }
}

#ifdef KILN_PRECISE_MATH
#define OPS_REGISTER ops_register_avx512_precise
#else
#define OPS_REGISTER ops_register_avx512
#endif
void OPS_REGISTER(kernel_table *t)
{
    t->channel_sums_f32 = channel_sums_f32_avx512;
    t->channel_affine_f32 = channel_affine_f32_avx512;
    t->layer_norm_f32 = layer_norm_f32_avx512;
    t->add_f32 = add_f32_avx512;
    t->silu_f32 = silu_f32_avx512;
    t->gelu_f32 = gelu_f32_avx512;
    t->quick_gelu_f32 = quick_gelu_f32_avx512;
    t->add_channel_bias_f32 = add_channel_bias_f32_avx512;
    t->geglu_f32 = geglu_f32_avx512;
}
