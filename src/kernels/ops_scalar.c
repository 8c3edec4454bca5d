/*
 * ops_scalar.c - the plain C kernels: the specification every faster kernel
 * is tested against, and the path used on CPUs without SIMD kernels.
 * Written to be obviously right; speed comes from the ISA files.
 */
#include <math.h>

#include "core/half.h"
#include "kernels/kernels.h"

/* A packed weight as f32 (the packing may hold F16 or BF16). */
static inline float weight_at(const packed_weights *pw, int64_t index)
{
    if (pw->dtype == KILN_DTYPE_F16)
        return half_f16_to_f32(((const uint16_t *)pw->data)[index]);
    if (pw->dtype == KILN_DTYPE_BF16)
        return half_bf16_to_f32(((const uint16_t *)pw->data)[index]);
    return ((const float *)pw->data)[index];
}

/* Both matrix kernels read the scalar packing (nr == 0): w[n][taps][k]. */
static void linear_f32_scalar(const float *x, int64_t ldx, const packed_weights *pw, const float *bias, float *y,
                              int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    const int64_t k = pw->k;
    for (int64_t m = m0; m < m1; m++) {
        const float *xr = x + m * ldx;
        for (int64_t n = n0; n < n1; n++) {
            int64_t wr = n * k;
            float sum = 0.0f;
            for (int64_t i = 0; i < k; i++)
                sum += xr[i] * weight_at(pw, wr + i);
            y[m * ldy + n] = sum + (bias ? bias[n] : 0.0f);
        }
    }
}

static void conv2d_f32_scalar(const conv2d_geom *g, const float *x, const packed_weights *pw, const float *bias,
                              const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0, int64_t c1)
{
    const int64_t ksize = g->kernel;
    for (int64_t p = p0; p < p1; p++) {
        int64_t ox = p % g->out_w;
        int64_t oy = (p / g->out_w) % g->out_h;
        int64_t b = p / (g->out_w * g->out_h);
        float *yp = y + p * g->out_c;
        for (int64_t oc = c0; oc < c1; oc++) {
            float sum = 0.0f;
            for (int64_t ky = 0; ky < ksize; ky++) {
                int64_t iy = oy * g->stride + ky - g->pad_top;
                if (iy < 0 || iy >= g->in_h)
                    continue;
                for (int64_t kx = 0; kx < ksize; kx++) {
                    int64_t ix = ox * g->stride + kx - g->pad_left;
                    if (ix < 0 || ix >= g->in_w)
                        continue;
                    const float *xp = conv2d_input_at(g, x, b, iy, ix);
                    int64_t wp = ((oc * ksize + ky) * ksize + kx) * g->in_c;
                    for (int64_t ic = 0; ic < g->in_c; ic++)
                        sum += xp[ic] * weight_at(pw, wp + ic);
                }
            }
            if (bias)
                sum += bias[oc];
            if (residual)
                sum += residual[p * g->out_c + oc];
            yp[oc] = sum;
        }
    }
}

static float silu(float v)
{
    return v / (1.0f + expf(-v));
}

static float gelu(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

static void group_norm_f32_scalar(const float *x, float *y, int64_t hw, int64_t c, int64_t groups, float eps,
                                  const float *gamma, const float *beta, int fuse_silu, int64_t i0, int64_t i1)
{
    const int64_t cg = c / groups;
    for (int64_t i = i0; i < i1; i++) {
        int64_t b = i / groups, g = i % groups;
        const float *xb = x + b * hw * c + g * cg;
        float *yb = y + b * hw * c + g * cg;
        /* two passes in double: the mean first, then the variance around it */
        double sum = 0.0;
        for (int64_t p = 0; p < hw; p++)
            for (int64_t j = 0; j < cg; j++)
                sum += xb[p * c + j];
        double mean = sum / (double)(hw * cg);
        double sq = 0.0;
        for (int64_t p = 0; p < hw; p++)
            for (int64_t j = 0; j < cg; j++) {
                double d = xb[p * c + j] - mean;
                sq += d * d;
            }
        float inv = (float)(1.0 / sqrt(sq / (double)(hw * cg) + eps));
        float fmean = (float)mean;
        for (int64_t p = 0; p < hw; p++)
            for (int64_t j = 0; j < cg; j++) {
                int64_t ch = g * cg + j;
                float v = (xb[p * c + j] - fmean) * inv * gamma[ch] + beta[ch];
                yb[p * c + j] = fuse_silu ? silu(v) : v;
            }
    }
}

static void channel_sums_f32_scalar(const float *x, int64_t c, int64_t r0, int64_t r1, double *sums)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        for (int64_t ch = 0; ch < c; ch++) {
            sums[ch] += xr[ch];
            sums[c + ch] += (double)xr[ch] * xr[ch];
        }
    }
}

static void channel_affine_f32_scalar(const float *x, float *y, int64_t c, const float *scale, const float *shift,
                                      int fuse_silu, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        for (int64_t ch = 0; ch < c; ch++) {
            float v = xr[ch] * scale[ch] + shift[ch];
            yr[ch] = fuse_silu ? silu(v) : v;
        }
    }
}

static void layer_norm_f32_scalar(const float *x, float *y, int64_t c, float eps, const float *gamma,
                                  const float *beta, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        double sum = 0.0;
        for (int64_t i = 0; i < c; i++)
            sum += xr[i];
        double mean = sum / (double)c;
        double sq = 0.0;
        for (int64_t i = 0; i < c; i++) {
            double d = xr[i] - mean;
            sq += d * d;
        }
        float inv = (float)(1.0 / sqrt(sq / (double)c + eps));
        float fmean = (float)mean;
        for (int64_t i = 0; i < c; i++)
            yr[i] = (xr[i] - fmean) * inv * gamma[i] + beta[i];
    }
}

/* The plain softmax: one pass for the row's maximum, one for the
 * exponentials, accumulated straight into the output row. */
static size_t attention_scratch_scalar(const attention_geom *g)
{
    return 0;
}

static void attention_f32_scalar(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                                 int64_t i0, int64_t i1, void *scratch)
{
    const int64_t d = g->head_dim;
    for (int64_t i = i0; i < i1; i++) {
        int64_t t = i % g->q_len;
        int64_t h = (i / g->q_len) % g->heads;
        int64_t b = i / (g->q_len * g->heads);
        const float *qr = q + (b * g->q_len + t) * g->q_stride + h * d;
        const float *kb = k + b * g->kv_len * g->k_stride + h * d;
        const float *vb = v + b * g->kv_len * g->v_stride + h * d;
        float *orow = o + (b * g->q_len + t) * g->o_stride + h * d;
        int64_t keys = g->causal ? t + 1 : g->kv_len;
        if (keys > g->kv_len)
            keys = g->kv_len;

        float max = -INFINITY;
        for (int64_t j = 0; j < keys; j++) {
            float s = 0.0f;
            for (int64_t e = 0; e < d; e++)
                s += qr[e] * kb[j * g->k_stride + e];
            s *= g->scale;
            if (s > max)
                max = s;
        }
        for (int64_t e = 0; e < d; e++)
            orow[e] = 0.0f;
        double total = 0.0;
        for (int64_t j = 0; j < keys; j++) {
            float s = 0.0f;
            for (int64_t e = 0; e < d; e++)
                s += qr[e] * kb[j * g->k_stride + e];
            float p = expf(s * g->scale - max);
            total += p;
            for (int64_t e = 0; e < d; e++)
                orow[e] += p * vb[j * g->v_stride + e];
        }
        float inv = total > 0.0 ? (float)(1.0 / total) : 0.0f;
        for (int64_t e = 0; e < d; e++)
            orow[e] *= inv;
    }
}

static void softmax_f32_scalar(float *x, int64_t n, int64_t ld, float scale, int causal, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        float *row = x + r * ld;
        int64_t valid = causal && r + 1 < n ? r + 1 : n;
        float max = -INFINITY;
        for (int64_t j = 0; j < valid; j++)
            if (row[j] * scale > max)
                max = row[j] * scale;
        double total = 0.0;
        for (int64_t j = 0; j < valid; j++) {
            row[j] = expf(row[j] * scale - max);
            total += row[j];
        }
        float inv = total > 0.0 ? (float)(1.0 / total) : 0.0f;
        for (int64_t j = 0; j < valid; j++)
            row[j] *= inv;
        for (int64_t j = valid; j < n; j++)
            row[j] = 0.0f;
    }
}

static void add_f32_scalar(const float *a, const float *b, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++)
        y[i] = a[i] + b[i];
}

static void silu_f32_scalar(const float *x, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++)
        y[i] = silu(x[i]);
}

static void gelu_f32_scalar(const float *x, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++)
        y[i] = gelu(x[i]);
}

static void quick_gelu_f32_scalar(const float *x, float *y, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++)
        y[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

static void add_channel_bias_f32_scalar(const float *x, const float *bias, float *y, int64_t hw, int64_t c,
                                        int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *br = bias + (r / hw) * c;
        for (int64_t i = 0; i < c; i++)
            y[r * c + i] = x[r * c + i] + br[i];
    }
}

static void geglu_f32_scalar(const float *x, float *y, int64_t n, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] = x[r * 2 * n + i] * gelu(x[r * 2 * n + n + i]);
}

static double fma_peak_scalar(int64_t rounds)
{
    float acc[8] = {0};
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < 8; i++)
            acc[i] = acc[i] * 0.999999f + 1e-7f;
    volatile float sink = acc[0] + acc[7];
    (void)sink;
    return 16.0 * (double)rounds;
}

void ops_register_scalar(kernel_table *t)
{
    t->fma_peak = fma_peak_scalar;
    t->gemm_mr = 1;
    t->gemm_nr = 0;
    t->linear_f32 = linear_f32_scalar;
    t->conv2d_f32 = conv2d_f32_scalar;
    t->group_norm_f32 = group_norm_f32_scalar;
    t->channel_sums_f32 = channel_sums_f32_scalar;
    t->channel_affine_f32 = channel_affine_f32_scalar;
    t->layer_norm_f32 = layer_norm_f32_scalar;
    t->attention_f32 = attention_f32_scalar;
    t->attention_scratch = attention_scratch_scalar;
    t->attention_tile = t->attention_tile_step = t->attention_tile_max = 0;
    t->softmax_f32 = softmax_f32_scalar;
    t->add_f32 = add_f32_scalar;
    t->silu_f32 = silu_f32_scalar;
    t->gelu_f32 = gelu_f32_scalar;
    t->quick_gelu_f32 = quick_gelu_f32_scalar;
    t->add_channel_bias_f32 = add_channel_bias_f32_scalar;
    t->geglu_f32 = geglu_f32_scalar;
}
