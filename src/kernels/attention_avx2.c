/*
 * attention_avx2.c - fused multi-head attention with AVX2 + FMA: the
 * AVX-512 kernel's method (attention_avx512.c: keys in blocks transposed
 * once per tile, an online softmax with lazy rescaling in base 2, the
 * output accumulated in registers) fitted to sixteen 8-lane registers.
 *
 * The micro-tile is 3 queries x 32 keys: twelve registers of scores, three
 * for the queries' broadcasts and one for the keys' vector in turn, per
 * channel 4 loads and 3 broadcasts for 12 multiply-adds. P V goes over
 * the head's channels 24 at a time (9 accumulators, 3 value vectors, a
 * broadcast): a 40-wide head is a run of 24 and one of 16.
 *
 * exp is 2^x as a polynomial (vmath_avx2.h); with fast math off
 * (attention_avx2_precise.c), libm's exp2f.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/vmath_avx2.h"

#define TQ 3             /* queries per micro-tile: 3 x 4 ymm of scores */
#define SUBTILES 16      /* micro-tiles sharing each transposed key block, by default */
#define MAX_SUBTILES 32  /* the most a tile may have (attention_geom.tile_q up to 96) */
#define BK 32            /* keys per block */
#define BV (BK / 8)      /* vectors of scores per query */
#define PV_VECS 3        /* channel vectors per P V run */

/* All ones in the lanes below count (of 8), zeros above. */
static inline __m256 first_lanes(int64_t count)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int c = count > 8 ? 8 : count < 0 ? 0 : (int)count;
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(c), lane));
}

/* The running softmax of one micro-tile's rows, in base 2 (see
 * attention_avx512.c): the sum kept per lane, reduced when the tile ends. */
typedef struct softmax_rows {
    __m256 sum[TQ];
    float max[TQ];
} softmax_rows;

/* A row keeps its max until a block's scores pass it by this much: 2^8
 * before normalization (lazy rescaling, as in attention_avx512.c). */
#define RESCALE_THRESHOLD 8.0f

/* out[r] = out[r] * correction[r] + sum_j probs[r][j] v[j] over the vecs
 * vectors of channels from e (the last one masked by last: the head's
 * end); correction NULL when no row rescaled. */
static inline __attribute__((always_inline)) void
accumulate_values(float *acc, int64_t dv, int64_t e, const int vecs, __m256i last, const float *vrow,
                  int64_t v_stride, int keys, const float probs[TQ][BK], const float *correction)
{
    __m256 o[TQ][PV_VECS];
    for (int r = 0; r < TQ; r++)
        for (int c = 0; c < vecs; c++) {
            o[r][c] = _mm256_load_ps(acc + r * dv + e + 8 * c);
            if (correction)
                o[r][c] = _mm256_mul_ps(o[r][c], _mm256_set1_ps(correction[r]));
        }
    for (int j = 0; j < keys; j++) {
        const float *vj = vrow + j * v_stride + e;
        __m256 v[PV_VECS];
        for (int c = 0; c < vecs; c++)
            v[c] = c + 1 < vecs ? _mm256_loadu_ps(vj + 8 * c) : _mm256_maskload_ps(vj + 8 * c, last);
        for (int r = 0; r < TQ; r++) {
            __m256 p = _mm256_broadcast_ss(&probs[r][j]);
            for (int c = 0; c < vecs; c++)
                o[r][c] = _mm256_fmadd_ps(p, v[c], o[r][c]);
        }
    }
    for (int r = 0; r < TQ; r++)
        for (int c = 0; c < vecs; c++)
            _mm256_store_ps(acc + r * dv + e + 8 * c, o[r][c]);
}

/* Scores of one micro-tile (queries t0..t0+rows) against one transposed
 * key block of n keys from j0, folded into its running softmax and
 * output. g->scale is positive (ATTENTION_F32 sees to it). */
static void micro_tile_block(const attention_geom *g, const float *const qrow[TQ], int64_t t0, int rows,
                             const float *kt, const float *vb, int64_t j0, int n, softmax_rows *sm, float *acc)
{
    const int64_t d = g->head_dim, dv = (d + 7) / 8 * 8;
    /* the twelve accumulators as named variables: kept in an array, they
     * were stored to the stack on every channel (compiled by clang 14) */
    __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00,
           s20 = s00, s21 = s00, s22 = s00, s23 = s00;
    for (int64_t e = 0; e < d; e++) {
        const float *ke = kt + e * BK;
        __m256 q0 = _mm256_broadcast_ss(qrow[0] + e), q1 = _mm256_broadcast_ss(qrow[1] + e),
               q2 = _mm256_broadcast_ss(qrow[2] + e), k;
        k = _mm256_load_ps(ke);
        s00 = _mm256_fmadd_ps(q0, k, s00), s10 = _mm256_fmadd_ps(q1, k, s10), s20 = _mm256_fmadd_ps(q2, k, s20);
        k = _mm256_load_ps(ke + 8);
        s01 = _mm256_fmadd_ps(q0, k, s01), s11 = _mm256_fmadd_ps(q1, k, s11), s21 = _mm256_fmadd_ps(q2, k, s21);
        k = _mm256_load_ps(ke + 16);
        s02 = _mm256_fmadd_ps(q0, k, s02), s12 = _mm256_fmadd_ps(q1, k, s12), s22 = _mm256_fmadd_ps(q2, k, s22);
        k = _mm256_load_ps(ke + 24);
        s03 = _mm256_fmadd_ps(q0, k, s03), s13 = _mm256_fmadd_ps(q1, k, s13), s23 = _mm256_fmadd_ps(q2, k, s23);
    }
    __m256 s[TQ][BV] = {{s00, s01, s02, s03}, {s10, s11, s12, s13}, {s20, s21, s22, s23}};
    /* per row: the block's largest score; only when it passes the row's
     * max by the threshold, a new max and the rescale of what the row had;
     * then the probabilities, summed lane by lane */
    const __m256 scale2 = _mm256_set1_ps(g->scale * (float)M_LOG2E), minus_inf = _mm256_set1_ps(-INFINITY);
    float correction[TQ];
    float probs[TQ][BK] __attribute__((aligned(32)));
    int keys_used = 0, rescaled = 0;
    for (int r = 0; r < TQ; r++) {
        int64_t seen = r >= rows ? 0 : g->causal ? t0 + r + 1 - j0 : n;
        int visible = seen > n ? n : seen < 0 ? 0 : (int)seen;
        correction[r] = 1.0f;
        if (visible == 0) {
            for (int c = 0; c < BV; c++)
                _mm256_store_ps(probs[r] + 8 * c, _mm256_setzero_ps());
            continue;
        }
        if (visible > keys_used)
            keys_used = visible;
        if (visible < BK)
            for (int c = 0; c < BV; c++)
                s[r][c] = _mm256_blendv_ps(minus_inf, s[r][c], first_lanes(visible - 8 * c));
        __m256 top = _mm256_mul_ps(_mm256_max_ps(_mm256_max_ps(s[r][0], s[r][1]), _mm256_max_ps(s[r][2], s[r][3])),
                                   scale2);
        if (_mm256_movemask_ps(_mm256_cmp_ps(top, _mm256_set1_ps(sm->max[r] + RESCALE_THRESHOLD), _CMP_GT_OQ))) {
            float block_max = reduce_max8(top);
            correction[r] = sm->max[r] == -INFINITY ? 0.0f : exp2f(sm->max[r] - block_max);
            sm->sum[r] = _mm256_mul_ps(sm->sum[r], _mm256_set1_ps(correction[r]));
            sm->max[r] = block_max;
            rescaled = 1;
        }
        __m256 max = _mm256_set1_ps(sm->max[r]), sum = sm->sum[r];
        for (int c = 0; c < BV; c++) {
            __m256 p = exp2_8_ps(_mm256_fmsub_ps(s[r][c], scale2, max));
            if (visible < BK)
                p = _mm256_and_ps(p, first_lanes(visible - 8 * c));
            sum = _mm256_add_ps(sum, p);
            _mm256_store_ps(probs[r] + 8 * c, p);
        }
        sm->sum[r] = sum;
    }
    const float *vrow = vb + j0 * g->v_stride, *corr = rescaled ? correction : NULL;
    for (int64_t e = 0; e < d; e += 8 * PV_VECS) {
        int64_t left = (d - e + 7) / 8;
        int vecs = left < PV_VECS ? (int)left : PV_VECS;
        __m256i last = _mm256_castps_si256(first_lanes(d - e - 8 * (vecs - 1)));
        switch (vecs) {
        case 1: accumulate_values(acc, dv, e, 1, last, vrow, g->v_stride, keys_used, probs, corr); break;
        case 2: accumulate_values(acc, dv, e, 2, last, vrow, g->v_stride, keys_used, probs, corr); break;
        default: accumulate_values(acc, dv, e, 3, last, vrow, g->v_stride, keys_used, probs, corr); break;
        }
    }
}

/* the driver's hooks for one micro-tile's rows */
static inline void rows_start(softmax_rows *sm)
{
    for (int r = 0; r < TQ; r++)
        sm->max[r] = -INFINITY, sm->sum[r] = _mm256_setzero_ps();
}

static inline float row_sum(const softmax_rows *sm, int r)
{
    return reduce_add8(sm->sum[r]);
}

static inline void store_scaled(float *dst, const float *acc, int64_t d, float s)
{
    __m256 scale = _mm256_set1_ps(s);
    for (int64_t e = 0; e < d; e += 8)
        _mm256_maskstore_ps(dst + e, _mm256_castps_si256(first_lanes(d - e)),
                            _mm256_mul_ps(_mm256_load_ps(acc + e), scale));
}

#define LANES 8
#define ATTENTION_F32 attention_f32_avx2
#define ATTENTION_SCRATCH attention_scratch_avx2
#include "kernels/attention_driver.h"

#ifdef KILN_PRECISE_MATH
#define ATTENTION_REGISTER attention_register_avx2_precise
#else
#define ATTENTION_REGISTER attention_register_avx2
#endif
void ATTENTION_REGISTER(kernel_table *t)
{
    t->attention_f32 = attention_f32_avx2;
    t->attention_scratch = attention_scratch_avx2;
    t->attention_tile = SUBTILES * TQ;
    t->attention_tile_step = TQ;
    t->attention_tile_max = MAX_SUBTILES * TQ;
}
