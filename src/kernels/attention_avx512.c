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
#define MAX_SUBTILES 16 /* the most a tile may have (attention_geom.tile_q up to 96) */
#define BK 64           /* keys per block */
#define BV (BK / 16)    /* vectors of scores per query */

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

/* A head's keys, transposed block by block, are kept for all the tiles of
 * a call when they take at most this much (1024 tokens of 40 channels:
 * 160 KB; 4096 of 40: 640 KB; the VAE's 4096 of 512 at 512x512: 8 MB, per
 * thread); otherwise each tile transposes each block again. At 2 MB the
 * VAE's attention took the second way and ran 1.5x slower (bench_kernels
 * "vae attn", 0.79 -> 0.53 s on 2 threads); 16 MB is a quarter of the
 * score matrix the plain path holds for it. The memory plan counts what
 * attention_scratch says (graph_kernel_scratch_bytes). */
#define HEAD_KEYS_MAX_BYTES ((size_t)16 << 20)

static int64_t key_blocks(const attention_geom *g)
{
    return (g->kv_len + BK - 1) / BK;
}

static int head_keys_fit(const attention_geom *g)
{
    return (size_t)(key_blocks(g) * g->head_dim * BK) * sizeof(float) <= HEAD_KEYS_MAX_BYTES;
}

/* Scratch: keys transposed, [d][BK] per block (every block of a head when
 * they fit, else one), and the output of every query of the tile
 * [subtiles * TQ][d], accumulated in f32. */
static size_t attention_scratch_avx512(const attention_geom *g)
{
    size_t d = (size_t)((g->head_dim + 15) / 16 * 16), blocks = head_keys_fit(g) ? (size_t)key_blocks(g) : 1;
    return (blocks * (size_t)g->head_dim * BK + (size_t)subtiles_of(g) * TQ * d) * sizeof(float) + 64;
}

/* Keys [j0, j0 + BK) of a head (kb, rows k_stride apart; n of them exist:
 * the others repeat the last, to be scored and masked) to kt[e][j]. */
static void transpose_block(const attention_geom *g, const float *kb, int64_t j0, int n, float *kt)
{
    for (int j = 0; j < BK; j++) {
        const float *kr = kb + (j0 + (j < n ? j : n - 1)) * g->k_stride;
        for (int64_t e = 0; e < g->head_dim; e++)
            kt[e * BK + j] = kr[e];
    }
}

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
 * output. g->scale is positive (attention_f32_avx512 sees to it). */
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

/* One tile: queries [t0, t0 + count) of head h in batch b, count up to
 * MAX_SUBTILES * TQ. With head_keys set, kt holds every block of the
 * head's keys transposed; otherwise each block is transposed into kt
 * here, once for all the tile's queries. */
static void attention_tile(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                           int64_t b, int64_t h, int64_t t0, int count, int head_keys, float *kt, float *acc)
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
            sm[st].max[r] = -INFINITY, sm[st].sum[r] = _mm512_setzero_ps();
    }
    memset(acc, 0, (size_t)(subtiles * TQ * dv) * sizeof *acc);
    /* causal: the tile's last query sees keys up to itself */
    int64_t keys = g->causal ? t0 + count : g->kv_len;
    if (keys > g->kv_len)
        keys = g->kv_len;
    for (int64_t j0 = 0; j0 < keys; j0 += BK) {
        int n = keys - j0 < BK ? (int)(keys - j0) : BK;
        const float *block = kt;
        if (head_keys)
            block = kt + (j0 / BK) * d * BK;
        else
            transpose_block(g, kb, j0, n, kt);
        for (int st = 0; st < subtiles; st++) {
            int rows = count - st * TQ < TQ ? count - st * TQ : TQ;
            micro_tile_block(g, qrow[st], t0 + st * TQ, rows, block, vb, j0, n, &sm[st], acc + st * TQ * dv);
        }
    }
    for (int r = 0; r < count; r++) {
        const softmax_rows *s = &sm[r / TQ];
        float sum = _mm512_reduce_add_ps(s->sum[r % TQ]);
        float *dst = o + (b * g->q_len + t0 + r) * g->o_stride + h * d;
        __m512 inv = _mm512_set1_ps(sum > 0.0f ? 1.0f / sum : 0.0f);
        for (int64_t e = 0; e < d; e += 16)
            _mm512_mask_storeu_ps(dst + e, first_lanes(d - e), _mm512_mul_ps(_mm512_load_ps(acc + r * dv + e), inv));
    }
}

static void attention_f32_avx512(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                                 int64_t i0, int64_t i1, void *scratch)
{
    /* the running max is taken over raw scores: it needs scale > 0 (the
     * models' 1 / sqrt(head_dim)); anything else takes the reference */
    if (!(g->scale > 0.0f)) {
        kernels_for(KILN_ISA_SCALAR)->attention_f32(g, q, k, v, o, i0, i1, NULL);
        return;
    }
    const int64_t d = g->head_dim;
    const int fit = head_keys_fit(g);
    float *kt = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *acc = kt + (fit ? key_blocks(g) : 1) * d * BK;
    const int64_t tile = (int64_t)subtiles_of(g) * TQ;
    /* items are (batch, head, query), query fastest: tiles never cross a
     * head; a head's keys are transposed once when the call has more
     * than one tile of it (the scratch is the thread's, reused by other
     * calls: nothing is kept between calls) */
    for (int64_t i = i0; i < i1;) {
        int64_t t = i % g->q_len, bh = i / g->q_len, b = bh / g->heads, h = bh % g->heads;
        int64_t in_head = g->q_len - t < i1 - i ? g->q_len - t : i1 - i;
        int head_keys = fit && in_head > tile;
        if (head_keys) {
            const float *kb = k + b * g->kv_len * g->k_stride + h * d;
            for (int64_t j0 = 0; j0 < g->kv_len; j0 += BK)
                transpose_block(g, kb, j0, g->kv_len - j0 < BK ? (int)(g->kv_len - j0) : BK, kt + (j0 / BK) * d * BK);
        }
        for (int64_t end = i + in_head; i < end;) {
            int64_t run = end - i < tile ? end - i : tile;
            attention_tile(g, q, k, v, o, b, h, i % g->q_len, (int)run, head_keys, kt, acc);
            i += run;
        }
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
