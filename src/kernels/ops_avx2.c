/*
 * ops_avx2.c - normalizations and element-wise ops with AVX2 + FMA, 8 at a
 * time; the few values past the last full vector go through the scalar
 * reference (kernels_for(KILN_ISA_SCALAR)), which agrees within the same
 * bounds. Group norm is ops_avx512.c's two halves: per-channel sums in
 * double, then x * scale + shift with SiLU fused.
 */
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/vmath_avx2.h"

static const kernel_table *scalar(void)
{
    return kernels_for(KILN_ISA_SCALAR);
}

/* Sums in double, four channels at a time; a channel count that is not a
 * multiple of 8 (the VAE and UNet have none) goes to the scalar kernel. */
static void channel_sums_f32_avx2(const float *x, int64_t c, int64_t r0, int64_t r1, double *sums)
{
    if (c % 8 != 0) {
        scalar()->channel_sums_f32(x, c, r0, r1, sums);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        for (int64_t ch = 0; ch < c; ch += 4) {
            __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(xr + ch));
            _mm256_storeu_pd(sums + ch, _mm256_add_pd(_mm256_loadu_pd(sums + ch), v));
            _mm256_storeu_pd(sums + c + ch, _mm256_fmadd_pd(v, v, _mm256_loadu_pd(sums + c + ch)));
        }
    }
}

static void channel_affine_f32_avx2(const float *x, float *y, int64_t c, const float *scale, const float *shift,
                                    int silu, int64_t r0, int64_t r1)
{
    if (c % 8 != 0) {
        scalar()->channel_affine_f32(x, y, c, scale, shift, silu, r0, r1);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        for (int64_t ch = 0; ch < c; ch += 8) {
            __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(xr + ch), _mm256_loadu_ps(scale + ch),
                                       _mm256_loadu_ps(shift + ch));
            _mm256_storeu_ps(yr + ch, silu ? silu8_ps(v) : v);
        }
    }
}

static void layer_norm_f32_avx2(const float *x, float *y, int64_t c, float eps, const float *gamma, const float *beta,
                                int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        __m256 s = _mm256_setzero_ps();
        int64_t i = 0;
        float tail = 0;
        for (; i + 8 <= c; i += 8)
            s = _mm256_add_ps(s, _mm256_loadu_ps(xr + i));
        for (; i < c; i++)
            tail += xr[i];
        float mean = (reduce_add8(s) + tail) / (float)c;
        __m256 vm = _mm256_set1_ps(mean), q = _mm256_setzero_ps();
        float qtail = 0;
        for (i = 0; i + 8 <= c; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vm);
            q = _mm256_fmadd_ps(d, d, q);
        }
        for (; i < c; i++)
            qtail += (xr[i] - mean) * (xr[i] - mean);
        float inv = 1.0f / sqrtf((reduce_add8(q) + qtail) / (float)c + eps);
        __m256 vi = _mm256_set1_ps(inv);
        for (i = 0; i + 8 <= c; i += 8) {
            __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vi);
            _mm256_storeu_ps(yr + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
        }
        for (; i < c; i++)
            yr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
    }
}

#define UNARY(name, vec_expr, ref)                                                                       \
    static void name(const float *x, float *y, int64_t i0, int64_t i1)                                   \
    {                                                                                                    \
        int64_t i = i0;                                                                                  \
        for (; i + 8 <= i1; i += 8) {                                                                    \
            __m256 v = _mm256_loadu_ps(x + i);                                                           \
            _mm256_storeu_ps(y + i, vec_expr);                                                           \
        }                                                                                                \
        if (i < i1)                                                                                      \
            scalar()->ref(x, y, i, i1);                                                                  \
    }

UNARY(silu_f32_avx2, silu8_ps(v), silu_f32)
UNARY(gelu_f32_avx2, gelu8_ps(v), gelu_f32)
UNARY(quick_gelu_f32_avx2,
      _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8_ps(_mm256_mul_ps(_mm256_set1_ps(-1.702f), v)))),
      quick_gelu_f32)
#undef UNARY

static void add_f32_avx2(const float *a, const float *b, float *y, int64_t i0, int64_t i1)
{
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < i1; i++)
        y[i] = a[i] + b[i];
}

static void add_channel_bias_f32_avx2(const float *x, const float *bias, float *y, int64_t hw, int64_t c, int64_t r0,
                                      int64_t r1)
{
    for (int64_t r = r0; r < r1; r++)
        add_f32_avx2(x + r * c, bias + (r / hw) * c, y + r * c, 0, c);
}

static void geglu_f32_avx2(const float *x, float *y, int64_t n, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * 2 * n;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + r * n + i, _mm256_mul_ps(_mm256_loadu_ps(xr + i), gelu8_ps(_mm256_loadu_ps(xr + n + i))));
        for (; i < n; i++) {
            float gate = xr[n + i];
            y[r * n + i] = xr[i] * 0.5f * gate * (1.0f + erff(gate * 0.70710678118654752f));
        }
    }
}

/* The plain attention path's softmax, 8 scores at a time: as the scalar
 * kernel (product, then minus the row's maximum, the sum in double), the
 * scores past the last full vector through expf. */
static void softmax_f32_avx2(float *x, int64_t n, int64_t ld, float scale, int causal, int64_t r0, int64_t r1)
{
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int64_t r = r0; r < r1; r++) {
        float *row = x + r * ld;
        int64_t valid = causal && r + 1 < n ? r + 1 : n, body = valid / 8 * 8, j;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        for (j = 0; j < body; j += 8)
            vmax = _mm256_max_ps(vmax, _mm256_mul_ps(_mm256_loadu_ps(row + j), vscale));
        float max = reduce_max8(vmax);
        for (; j < valid; j++)
            if (row[j] * scale > max)
                max = row[j] * scale;

        const __m256 vm = _mm256_set1_ps(max);
        __m256d sum_lo = _mm256_setzero_pd(), sum_hi = _mm256_setzero_pd();
        for (j = 0; j < body; j += 8) {
            __m256 e = exp8_ps(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(row + j), vscale), vm));
            _mm256_storeu_ps(row + j, e);
            sum_lo = _mm256_add_pd(sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            sum_hi = _mm256_add_pd(sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        double lanes[4];
        _mm256_storeu_pd(lanes, _mm256_add_pd(sum_lo, sum_hi));
        double total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
        for (; j < valid; j++) {
            row[j] = expf(row[j] * scale - max);
            total += row[j];
        }

        float inv = total > 0.0 ? (float)(1.0 / total) : 0.0f;
        const __m256 vinv = _mm256_set1_ps(inv);
        for (j = 0; j < body; j += 8)
            _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), vinv));
        for (; j < valid; j++)
            row[j] *= inv;
        for (; j < n; j++)
            row[j] = 0.0f;
    }
}

#ifdef KILN_PRECISE_MATH
#define OPS_REGISTER ops_register_avx2_precise
#else
#define OPS_REGISTER ops_register_avx2
#endif
void OPS_REGISTER(kernel_table *t)
{
    t->channel_sums_f32 = channel_sums_f32_avx2;
    t->channel_affine_f32 = channel_affine_f32_avx2;
    t->layer_norm_f32 = layer_norm_f32_avx2;
    t->add_f32 = add_f32_avx2;
    t->silu_f32 = silu_f32_avx2;
    t->gelu_f32 = gelu_f32_avx2;
    t->quick_gelu_f32 = quick_gelu_f32_avx2;
    t->add_channel_bias_f32 = add_channel_bias_f32_avx2;
    t->geglu_f32 = geglu_f32_avx2;
    t->softmax_f32 = softmax_f32_avx2;
}
