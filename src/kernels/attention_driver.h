/*
 * attention_driver.h - the loops around a fused attention micro-tile,
 * shared by the ISA files (as gemm_driver.h is by the matrix kernels):
 * items to tiles of queries, a head's keys transposed into blocks, the
 * tile's output normalized at the end. Include it after defining
 *   TQ, SUBTILES, MAX_SUBTILES, BK   queries per micro-tile, micro-tiles
 *                                    per tile by default and at most, keys
 *                                    per block
 *   LANES                            floats per vector (the output rows'
 *                                    padding)
 *   ATTENTION_F32, ATTENTION_SCRATCH the names of the functions to define
 * and, for one micro-tile's rows, the softmax_rows type and
 *   rows_start(softmax_rows *)       every row empty (max -inf, sum 0)
 *   row_sum(const softmax_rows *, r) row r's sum of probabilities
 *   store_scaled(dst, acc, d, s)     dst[0, d) = acc[0, d) * s
 *   micro_tile_block(...)            one key block into a micro-tile
 */

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

/* A row of the tile's output: the head's channels rounded up to vectors. */
static int64_t padded_dim(const attention_geom *g)
{
    return (g->head_dim + LANES - 1) / LANES * LANES;
}

/* Scratch: keys transposed, [d][BK] per block (every block of a head when
 * they fit, else one), and the output of every query of the tile
 * [subtiles * TQ][padded d], accumulated in f32. */
static size_t ATTENTION_SCRATCH(const attention_geom *g)
{
    size_t blocks = head_keys_fit(g) ? (size_t)key_blocks(g) : 1;
    return (blocks * (size_t)g->head_dim * BK + (size_t)(subtiles_of(g) * TQ * padded_dim(g))) * sizeof(float) + 64;
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

/* One tile: queries [t0, t0 + count) of head h in batch b, count up to
 * MAX_SUBTILES * TQ. With head_keys set, kt holds every block of the
 * head's keys transposed; otherwise each block is transposed into kt
 * here, once for all the tile's queries. */
static void attention_tile(const attention_geom *g, const float *q, const float *k, const float *v, float *o,
                           int64_t b, int64_t h, int64_t t0, int count, int head_keys, float *kt, float *acc)
{
    const int64_t d = g->head_dim, dv = padded_dim(g);
    const float *kb = k + b * g->kv_len * g->k_stride + h * d;
    const float *vb = v + b * g->kv_len * g->v_stride + h * d;
    int subtiles = (count + TQ - 1) / TQ;
    const float *qrow[MAX_SUBTILES][TQ];
    softmax_rows sm[MAX_SUBTILES];
    for (int st = 0; st < subtiles; st++) {
        int rows = count - st * TQ < TQ ? count - st * TQ : TQ;
        for (int r = 0; r < TQ; r++)
            qrow[st][r] = q + (b * g->q_len + t0 + st * TQ + (r < rows ? r : rows - 1)) * g->q_stride + h * d;
        rows_start(&sm[st]);
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
        float sum = row_sum(&sm[r / TQ], r % TQ);
        store_scaled(o + (b * g->q_len + t0 + r) * g->o_stride + h * d, acc + r * dv, d,
                     sum > 0.0f ? 1.0f / sum : 0.0f);
    }
}

static void ATTENTION_F32(const attention_geom *g, const float *q, const float *k, const float *v, float *o, int64_t i0,
                          int64_t i1, void *scratch)
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
