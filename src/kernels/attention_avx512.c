/*
 * attention_avx512.c - fused multi-head attention with AVX-512: for a tile
 * of queries of one head, keys are visited in blocks of 64; the scores of
 * a block are a 6 x 64 micro-GEMM against the block's keys (transposed
 * once into scratch for the whole tile), turned into probabilities with an
 * online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al.
 * 2022) and accumulated into the output tile at once. The full score
 * matrix is never formed: memory is O(tile), not O(queries x keys).
 *
 * Blocks of 64 keys (four vectors of scores per query) keep the softmax's
 * per-block work small beside the 2 x 64 x head_dim multiply-adds it
 * serves; with 16 keys per block it cost as much as the products. That
 * work is the exps and, per query, a vector max and a compare: a row's
 * max moves (a horizontal reduction and a rescale) only when a block's
 * scores pass it by a margin, and its sum stays in a vector until the end.
 * Measured on the 1024-token self-attention, the softmax had been as long
 * as the Q K^T products.
 *
 * exp is 2^x as a polynomial (vmath_avx512.h, with the log2(e) folded into
 * the scale): relative error under 2.2e-7; with fast math off
 * (attention_avx512_precise.c), libm's exp2f.
 *
 * The query tile (attention_geom.tile_q) is chosen at run time: 6 to 96
 * queries in steps of 6, 48 by default.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/vmath_avx512.h"

#define TQ 6            /* queries per micro-tile: 6 x 4 zmm of scores */
#define SUBTILES 8      /* micro-tiles sharing each transposed key block, by default */
#define MAX_SUBTILES 16 /* the most a tile may have (attention_geom.tile_q up to 96; see attention_driver.h) */
#define BK 64           /* keys per block */
#define BV (BK / 16)    /* vectors of scores per query */

/* The running softmax of one micro-tile's rows, in base 2: a row's
 * probabilities are 2^(s * scale * log2(e) - max) and its sum is kept per
 * lane, reduced once when the tile ends. */
typedef struct softmax_rows {
    __m512 sum[TQ];
    float max[TQ];
} softmax_rows;

/* A row keeps its max until a block's scores pass it by this much (in
 * base 2: probabilities up to 2^8 before normalization), so most blocks
 * rescale nothing (lazy rescaling, as in FlashAttention-3/4): the max is
 * only a reference the exponents are taken from, and any reference at or
 * above a block's scores minus the threshold keeps every term finite. */
#define RESCALE_THRESHOLD 8.0f

static __mmask16 first_lanes(int64_t count)
{
    return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}

/* out[r] = out[r] * correction[r] + sum_j probs[r][j] v[j] over the vecs
 * vectors of channels from e (the last one masked by last: the head's
 * end); correction NULL when no row rescaled. The 6 x vecs outputs stay
 * in registers while the block's value rows stream past: per key, vecs
 * loads and six broadcasts feed 6 x vecs multiply-adds. */
static inline __attribute__((always_inline)) void
accumulate_values(float *acc, int64_t dv, int64_t e, const int vecs, __mmask16 last, const float *vrow,
                  int64_t v_stride, int keys, const float probs[TQ][BK], const float *correction)
{
    __m512 o[TQ][4];
    for (int r = 0; r < TQ; r++)
        for (int c = 0; c < vecs; c++) {
            o[r][c] = _mm512_load_ps(acc + r * dv + e + 16 * c);
            if (correction)
                o[r][c] = _mm512_mul_ps(o[r][c], _mm512_set1_ps(correction[r]));
        }
    for (int j = 0; j < keys; j++) {
        const float *vj = vrow + j * v_stride + e;
        __m512 v[4];
        for (int c = 0; c < vecs; c++)
            v[c] = c + 1 < vecs ? _mm512_loadu_ps(vj + 16 * c) : _mm512_maskz_loadu_ps(last, vj + 16 * c);
        for (int r = 0; r < TQ; r++) {
            __m512 p = _mm512_set1_ps(probs[r][j]);
            for (int c = 0; c < vecs; c++)
                o[r][c] = _mm512_fmadd_ps(p, v[c], o[r][c]);
        }
    }
    for (int r = 0; r < TQ; r++)
        for (int c = 0; c < vecs; c++)
            _mm512_store_ps(acc + r * dv + e + 16 * c, o[r][c]);
}

/* Scores of one micro-tile (queries t0..t0+rows) against one transposed
 * key block of n keys from j0, folded into its running softmax and
 * output. g->scale is positive (ATTENTION_F32 sees to it). */
static void micro_tile_block(const attention_geom *g, const float *const qrow[TQ], int64_t t0, int rows,
                             const float *kt, const float *vb, int64_t j0, int n, softmax_rows *sm, float *acc)
{
    const int64_t d = g->head_dim, dv = (d + 15) / 16 * 16;
    __m512 s[TQ][BV];
    for (int r = 0; r < TQ; r++)
        for (int c = 0; c < BV; c++)
            s[r][c] = _mm512_setzero_ps();
    for (int64_t e = 0; e < d; e++) {
        const float *ke = kt + e * BK;
        __m512 k0 = _mm512_load_ps(ke), k1 = _mm512_load_ps(ke + 16), k2 = _mm512_load_ps(ke + 32),
               k3 = _mm512_load_ps(ke + 48);
        for (int r = 0; r < TQ; r++) {
            __m512 qe = _mm512_set1_ps(qrow[r][e]);
            s[r][0] = _mm512_fmadd_ps(qe, k0, s[r][0]);
            s[r][1] = _mm512_fmadd_ps(qe, k1, s[r][1]);
            s[r][2] = _mm512_fmadd_ps(qe, k2, s[r][2]);
            s[r][3] = _mm512_fmadd_ps(qe, k3, s[r][3]);
        }
    }
    /* per row: the block's largest score; only when it passes the row's
     * max by the threshold, a new max and the rescale of what the row had
     * (a horizontal reduction and an exp, rare after the first block);
     * then the probabilities, summed lane by lane */
    const __m512 scale2 = _mm512_set1_ps(g->scale * (float)M_LOG2E), minus_inf = _mm512_set1_ps(-INFINITY);
    float correction[TQ];
    float probs[TQ][BK] __attribute__((aligned(64)));
    int keys_used = 0, rescaled = 0;
    for (int r = 0; r < TQ; r++) {
        int64_t seen = r >= rows ? 0 : g->causal ? t0 + r + 1 - j0 : n;
        int visible = seen > n ? n : seen < 0 ? 0 : (int)seen;
        correction[r] = 1.0f;
        if (visible == 0) {
            for (int c = 0; c < BV; c++)
                _mm512_store_ps(probs[r] + 16 * c, _mm512_setzero_ps());
            continue;
        }
        if (visible > keys_used)
            keys_used = visible;
        if (visible < BK)
            for (int c = 0; c < BV; c++)
                s[r][c] = _mm512_mask_mov_ps(minus_inf, first_lanes(visible - 16 * c), s[r][c]);
        __m512 top = _mm512_mul_ps(_mm512_max_ps(_mm512_max_ps(s[r][0], s[r][1]), _mm512_max_ps(s[r][2], s[r][3])),
                                   scale2);
        if (_mm512_cmp_ps_mask(top, _mm512_set1_ps(sm->max[r] + RESCALE_THRESHOLD), _CMP_GT_OQ)) {
            float block_max = _mm512_reduce_max_ps(top);
            correction[r] = sm->max[r] == -INFINITY ? 0.0f : exp2f(sm->max[r] - block_max);
            sm->sum[r] = _mm512_mul_ps(sm->sum[r], _mm512_set1_ps(correction[r]));
            sm->max[r] = block_max;
            rescaled = 1;
        }
        __m512 max = _mm512_set1_ps(sm->max[r]), sum = sm->sum[r];
        for (int c = 0; c < BV; c++) {
            __m512 p = exp2_ps(_mm512_fmsub_ps(s[r][c], scale2, max));
            if (visible < BK)
                p = _mm512_maskz_mov_ps(first_lanes(visible - 16 * c), p);
            sum = _mm512_add_ps(sum, p);
            _mm512_store_ps(probs[r] + 16 * c, p);
        }
        sm->sum[r] = sum;
    }
    /* the head's channels in runs of up to four vectors: 40 is one run
     * of three (the last half full), 80 four and one, 160 four, four and
     * two */
    const float *vrow = vb + j0 * g->v_stride, *corr = rescaled ? correction : NULL;
    for (int64_t e = 0; e < d; e += 64) {
        int64_t left = (d - e + 15) / 16;
        __mmask16 last = first_lanes(d - e - 16 * ((left < 4 ? left : 4) - 1));
        switch (left) {
        case 1: accumulate_values(acc, dv, e, 1, last, vrow, g->v_stride, keys_used, probs, corr); break;
        case 2: accumulate_values(acc, dv, e, 2, last, vrow, g->v_stride, keys_used, probs, corr); break;
        case 3: accumulate_values(acc, dv, e, 3, last, vrow, g->v_stride, keys_used, probs, corr); break;
        default: accumulate_values(acc, dv, e, 4, last, vrow, g->v_stride, keys_used, probs, corr); break;
        }
    }
}

/* the driver's hooks for one micro-tile's rows */
static inline void rows_start(softmax_rows *sm)
{
    for (int r = 0; r < TQ; r++)
        sm->max[r] = -INFINITY, sm->sum[r] = _mm512_setzero_ps();
}

static inline float row_sum(const softmax_rows *sm, int r)
{
    return _mm512_reduce_add_ps(sm->sum[r]);
}

static inline void store_scaled(float *dst, const float *acc, int64_t d, float s)
{
    __m512 scale = _mm512_set1_ps(s);
    for (int64_t e = 0; e < d; e += 16)
        _mm512_mask_storeu_ps(dst + e, first_lanes(d - e), _mm512_mul_ps(_mm512_load_ps(acc + e), scale));
}

#define LANES 16
#define ATTENTION_F32 attention_f32_avx512
#define ATTENTION_SCRATCH attention_scratch_avx512
#include "kernels/attention_driver.h"

/* The plain path's softmax over materialised score rows. */
static void softmax_f32_avx512(float *x, int64_t n, int64_t ld, float scale, int causal, int64_t r0, int64_t r1)
{
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t r = r0; r < r1; r++) {
        float *row = x + r * ld;
        int64_t valid = causal && r + 1 < n ? r + 1 : n;
        __m512 vmax = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < valid; j += 16) {
            __mmask16 m = valid - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (valid - j)) - 1);
            vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), vs));
        }
        __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), sum = _mm512_setzero_ps();
        for (int64_t j = 0; j < valid; j += 16) {
            __mmask16 m = valid - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (valid - j)) - 1);
            __m512 p = _mm512_maskz_mov_ps(m, exp_ps(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, row + j), vs, max)));
            sum = _mm512_add_ps(sum, p);
            _mm512_mask_storeu_ps(row + j, m, p);
        }
        float total = _mm512_reduce_add_ps(sum);
        __m512 inv = _mm512_set1_ps(total > 0.0f ? 1.0f / total : 0.0f);
        for (int64_t j = 0; j < valid; j += 16) {
            __mmask16 m = valid - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (valid - j)) - 1);
            _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), inv));
        }
        for (int64_t j = valid; j < n; j++)
            row[j] = 0.0f;
    }
}

#ifdef KILN_PRECISE_MATH
#define ATTENTION_REGISTER attention_register_avx512_precise
#else
#define ATTENTION_REGISTER attention_register_avx512
#endif
void ATTENTION_REGISTER(kernel_table *t)
{
    t->attention_f32 = attention_f32_avx512;
    t->attention_scratch = attention_scratch_avx512;
    t->attention_tile = SUBTILES * TQ;
    t->attention_tile_step = TQ;
    t->attention_tile_max = MAX_SUBTILES * TQ;
    t->softmax_f32 = softmax_f32_avx512;
}
