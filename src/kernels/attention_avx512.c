/*
 * attention_avx512.c - fused multi-head attention with AVX-512: for a tile
 * of up to 12 queries of one head, keys are visited in blocks of 16; the
 * scores of a block are a 12 x 16 micro-GEMM against the block's keys
 * (transposed once into scratch), turned into probabilities with an online
 * softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022) and
 * accumulated into the output tile at once. The full score matrix is
 * never formed: memory is O(tile), not O(queries x keys).
 *
 * exp is a polynomial (vmath_avx512.h): relative error under 2e-7; with
 * fast math off (attention_avx512_precise.c), libm's expf.
 *
 * The query tile (attention_geom.tile_q) is chosen at run time: 12 to 96
 * queries in steps of 12, 48 by default.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/vmath_avx512.h"

#define TQ 12          /* queries per micro-tile: 12 zmm of scores */
#define SUBTILES 4     /* micro-tiles sharing each transposed key block, by default */
#define MAX_SUBTILES 8 /* the most a tile may have (attention_geom.tile_q up to 96) */
#define BK 16          /* keys per block: one zmm of scores per query */

/* Micro-tiles per tile: tile_q rounded down to whole micro-tiles, within
 * [1, MAX_SUBTILES]; 0 gives the default. A larger tile shares each key
 * transpose among more queries, at TQ * d floats of scratch per micro-tile. */
static int subtiles_of(const attention_geom *g)
{
    if (g->tile_q <= 0)
        return SUBTILES;
    int n = g->tile_q / TQ;
    return n < 1 ? 1 : n > MAX_SUBTILES ? MAX_SUBTILES : n;
}

/* Scratch: a block's keys transposed [d][16], and the output of every
 * query of the tile [subtiles * TQ][d], accumulated in f32. */
static size_t attention_scratch_avx512(const attention_geom *g)
{
    size_t d = (size_t)((g->head_dim + 15) / 16 * 16);
    return (d * BK + (size_t)subtiles_of(g) * TQ * d) * sizeof(float) + 64;
}

/* The running softmax of one micro-tile's rows. */
typedef struct softmax_rows {
    float max[TQ], sum[TQ];
} softmax_rows;

/* Scores of one micro-tile (queries t0..t0+rows) against one transposed
 * key block, folded into its running softmax and output. The probability
 * times value product is itself a 12 x 16-channel micro-GEMM per slice of
 * the head: twelve output rows stay in registers while the block's 16
 * value rows stream past. */
static void micro_tile_block(const attention_geom *g, const float *const qrow[TQ], int64_t t0, int rows,
                             const float *kt, const float *vb, int64_t j0, int n, softmax_rows *sm, float *acc)
{
    const int64_t d = g->head_dim, dv = (d + 15) / 16 * 16;
    const __m512 scale = _mm512_set1_ps(g->scale);
    __m512 s[TQ];
    for (int r = 0; r < TQ; r++)
        s[r] = _mm512_setzero_ps();
    for (int64_t e = 0; e < d; e++) {
        __m512 ke = _mm512_load_ps(kt + e * BK);
        for (int r = 0; r < TQ; r++)
            s[r] = _mm512_fmadd_ps(_mm512_set1_ps(qrow[r][e]), ke, s[r]);
    }
    /* probabilities of the block (0 where masked or past the tile's rows)
     * and each row's rescale of what it had accumulated */
    float probs[TQ][BK] __attribute__((aligned(64)));
    float correction[TQ];
    int keys_used = 0;
    for (int r = 0; r < TQ; r++) {
        int64_t visible = r >= rows ? 0 : g->causal ? t0 + r + 1 - j0 : n;
        if (visible > n)
            visible = n;
        correction[r] = 1.0f;
        if (visible <= 0) {
            _mm512_store_ps(probs[r], _mm512_setzero_ps());
            continue;
        }
        if (visible > keys_used)
            keys_used = (int)visible;
        __mmask16 live = (__mmask16)((1u << visible) - 1);
        __m512 sr = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), live, _mm512_mul_ps(s[r], scale));
        float block_max = _mm512_reduce_max_ps(sr);
        float new_max = block_max > sm->max[r] ? block_max : sm->max[r];
        correction[r] = sm->max[r] == -INFINITY ? 0.0f : expf(sm->max[r] - new_max);
        __m512 p = _mm512_maskz_mov_ps(live, exp_ps(_mm512_sub_ps(sr, _mm512_set1_ps(new_max))));
        sm->sum[r] = sm->sum[r] * correction[r] + _mm512_reduce_add_ps(p);
        sm->max[r] = new_max;
        _mm512_store_ps(probs[r], p);
    }
    for (int64_t e = 0; e < dv; e += 16) {
        __mmask16 m = d - e >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - e)) - 1);
        __m512 o[TQ];
        for (int r = 0; r < TQ; r++)
            o[r] = _mm512_mul_ps(_mm512_load_ps(acc + r * dv + e), _mm512_set1_ps(correction[r]));
        for (int j = 0; j < keys_used; j++) {
            __m512 vj = _mm512_maskz_loadu_ps(m, vb + (j0 + j) * g->v_stride + e);
            for (int r = 0; r < TQ; r++)
                o[r] = _mm512_fmadd_ps(_mm512_set1_ps(probs[r][j]), vj, o[r]);
        }
        for (int r = 0; r < TQ; r++)
            _mm512_store_ps(acc + r * dv + e, o[r]);
    }
}

/* One tile: queries [t0, t0 + count) of head h in batch b, count up to
 * MAX_SUBTILES * TQ; each key block is transposed once for all of them. */
static void attention_tile(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                           int64_t b, int64_t h, int64_t t0, int count, float *kt, float *acc)
{
    const int64_t d = g->head_dim, dv = (d + 15) / 16 * 16;
    const float *kb = k + b * g->kv_len * g->k_stride + h * d;
    const float *vb = v + b * g->kv_len * g->v_stride + h * d;
    int subtiles = (count + TQ - 1) / TQ;
    const float *qrow[MAX_SUBTILES][TQ];
    softmax_rows sm[MAX_SUBTILES];
    for (int st = 0; st < subtiles; st++) {
        int rows = count - st * TQ < TQ ? count - st * TQ : TQ;
        for (int r = 0; r < TQ; r++)
            qrow[st][r] = q + (b * g->q_len + t0 + st * TQ + (r < rows ? r : rows - 1)) * g->q_stride + h * d;
        for (int r = 0; r < TQ; r++)
            sm[st].max[r] = -INFINITY, sm[st].sum[r] = 0.0f;
    }
    memset(acc, 0, (size_t)(subtiles * TQ * dv) * sizeof *acc);
    /* causal: the tile's last query sees keys up to itself */
    int64_t keys = g->causal ? t0 + count : g->kv_len;
    if (keys > g->kv_len)
        keys = g->kv_len;
    for (int64_t j0 = 0; j0 < keys; j0 += BK) {
        int n = keys - j0 < BK ? (int)(keys - j0) : BK;
        /* transpose the block's keys: kt[e][j] */
        for (int j = 0; j < BK; j++) {
            const float *kr = kb + (j0 + (j < n ? j : n - 1)) * g->k_stride;
            for (int64_t e = 0; e < d; e++)
                kt[e * BK + j] = kr[e];
        }
        for (int st = 0; st < subtiles; st++) {
            int rows = count - st * TQ < TQ ? count - st * TQ : TQ;
            micro_tile_block(g, qrow[st], t0 + st * TQ, rows, kt, vb, j0, n, &sm[st], acc + st * TQ * dv);
        }
    }
    for (int r = 0; r < count; r++) {
        const softmax_rows *s = &sm[r / TQ];
        float sum = s->sum[r % TQ];
        float *dst = o + (b * g->q_len + t0 + r) * g->o_stride + h * d;
        __m512 inv = _mm512_set1_ps(sum > 0.0f ? 1.0f / sum : 0.0f);
        for (int64_t e = 0; e < d; e += 16) {
            __mmask16 m = d - e >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - e)) - 1);
            _mm512_mask_storeu_ps(dst + e, m, _mm512_mul_ps(_mm512_load_ps(acc + r * dv + e), inv));
        }
    }
}

static void attention_f32_avx512(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                                 int64_t i0, int64_t i1, void *scratch)
{
    const int64_t dv = (g->head_dim + 15) / 16 * 16;
    float *kt = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *acc = kt + dv * BK;
    const int64_t tile = (int64_t)subtiles_of(g) * TQ;
    /* items are (batch, head, query), query fastest: tiles never cross a head */
    for (int64_t i = i0; i < i1;) {
        int64_t t = i % g->q_len, bh = i / g->q_len;
        int64_t run = g->q_len - t;
        if (run > i1 - i)
            run = i1 - i;
        if (run > tile)
            run = tile;
        attention_tile(g, q, k, v, o, bh / g->heads, bh % g->heads, t, (int)run, kt, acc);
        i += run;
    }
}

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
