#include "graph/executor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"

struct graph_exec {
    const graph *g;
    const kernel_table *k; /* the level the weights were packed for */
    size_t count;
    float **data;    /* per node: where its output lives during a run */
    size_t *offset;  /* per node: arena offset, SIZE_MAX when not in the arena */
    const packed_weights **packed; /* per linear / conv node: its weight */
    weight_cache *own_cache;       /* when the caller gave none */
    arena memory;
    /* per-thread scratch for kernels that need it (attention): sized at the
     * first run for the pool, kept after */
    size_t scratch_per_thread;
    int scratch_threads;
    unsigned char *scratch;
    graph_profile *profile;
};

/* ---- memory plan ---- */

typedef struct interval {
    graph_id node;
    size_t bytes;
    size_t first, last; /* node indices during which the data is live */
    size_t offset;
} interval;

static graph_id storage_root(const graph *g, graph_id id)
{
    const graph_node *n = graph_node_at(g, id);
    while (n->op == GRAPH_OP_VIEW) {
        id = n->inputs[0];
        n = graph_node_at(g, id);
    }
    return id;
}

static int by_size_descending(const void *a, const void *b)
{
    const interval *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Greedy by size: place the largest block first, each at the lowest offset
 * that overlaps no placed block whose lifetime it shares. Near-optimal for
 * the long chains of a UNet, and cheap for a few thousand nodes. */
/* offsets (n entries) may be NULL: the peak alone. */
static kiln_status plan_memory(const graph *g, size_t *offsets, size_t *arena_bytes)
{
    size_t n = graph_node_count(g);
    size_t *last_use = malloc(n * sizeof *last_use);
    interval *items = malloc(n * sizeof *items);
    size_t *placed = malloc(n * sizeof *placed);
    kiln_status st = KILN_OK;
    if (!last_use || !items || !placed) {
        st = err_set(KILN_ERR_NOMEM, "cannot allocate the memory plan for %zu nodes", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        last_use[i] = i;
    for (size_t i = 0; i < n; i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        for (int k = 0; k < node->n_inputs; k++)
            if (node->inputs[k] != GRAPH_NONE) {
                graph_id root = storage_root(g, node->inputs[k]);
                if (last_use[root] < i)
                    last_use[root] = i;
            }
        if (graph_is_output(g, (graph_id)i))
            last_use[storage_root(g, (graph_id)i)] = n;
    }

    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        if (offsets)
            offsets[i] = SIZE_MAX;
        if (node->op == GRAPH_OP_INPUT || node->op == GRAPH_OP_WEIGHT || node->op == GRAPH_OP_VIEW)
            continue;
        items[count++] = (interval){.node = (graph_id)i,
                                    .bytes = arena_round_up(tensor_nbytes(&node->out)),
                                    .first = i,
                                    .last = last_use[i]};
    }
    qsort(items, count, sizeof *items, by_size_descending);

    size_t peak = 0, n_placed = 0;
    for (size_t i = 0; i < count; i++) {
        interval *it = &items[i];
        size_t offset = 0;
        /* slide past every live-overlapping block in address order */
        for (int moved = 1; moved;) {
            moved = 0;
            for (size_t j = 0; j < n_placed; j++) {
                const interval *other = &items[placed[j]];
                if (other->last < it->first || it->last < other->first)
                    continue;
                if (offset < other->offset + other->bytes && other->offset < offset + it->bytes) {
                    offset = other->offset + other->bytes;
                    moved = 1;
                }
            }
        }
        it->offset = offset;
        placed[n_placed++] = i;
        if (offsets)
            offsets[it->node] = offset;
        if (offset + it->bytes > peak)
            peak = offset + it->bytes;
    }
    *arena_bytes = peak;
done:
    free(last_use);
    free(items);
    free(placed);
    return st;
}

/* Weights in the form their readers want: packed for the matrix kernels,
 * f32 for everything else (biases, norms, embeddings); a weight only the
 * matrix kernels read is never converted whole. */
static kiln_status prepare_weights(graph_exec *e, weight_cache *cache)
{
    const graph *g = e->g;
    for (size_t i = 0; i < e->count; i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        for (int k = 0; k < node->n_inputs; k++) {
            graph_id in = node->inputs[k];
            const graph_node *src = graph_node_at(g, in);
            if (!src || src->op != GRAPH_OP_WEIGHT || e->data[in])
                continue;
            if (k == 1 && (node->op == GRAPH_OP_LINEAR || node->op == GRAPH_OP_CONV2D))
                continue;
            kiln_status st = weight_cache_f32(cache, &src->out, (const float **)&e->data[in]);
            if (st != KILN_OK)
                return err_wrap(st, "weight '%s': ", src->name);
        }
        if (node->op != GRAPH_OP_LINEAR && node->op != GRAPH_OP_CONV2D)
            continue;
        const tensor *w = &graph_node_at(g, node->inputs[1])->out;
        int64_t taps = node->op == GRAPH_OP_CONV2D ? w->shape[2] * w->shape[3] : 1;
        kiln_status st = weight_cache_packed(cache, w, w->shape[0], w->shape[1], taps, e->k->gemm_nr, &e->packed[i]);
        if (st != KILN_OK)
            return err_wrap(st, "weight of '%s': ", node->name);
    }
    return KILN_OK;
}

kiln_status graph_exec_create(const graph *g, weight_cache *cache, graph_exec **out)
{
    if (graph_status(g) != KILN_OK)
        return graph_status(g);
    graph_exec *e = calloc(1, sizeof *e);
    if (!e)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a graph executor");
    e->g = g;
    e->k = kernels_get();
    e->count = graph_node_count(g);
    e->data = calloc(e->count ? e->count : 1, sizeof *e->data);
    e->offset = calloc(e->count ? e->count : 1, sizeof *e->offset);
    e->packed = calloc(e->count ? e->count : 1, sizeof *e->packed);
    kiln_status st = KILN_OK;
    if (!e->data || !e->offset || !e->packed) {
        st = err_set(KILN_ERR_NOMEM, "cannot allocate a graph executor");
        goto fail;
    }
    if (!cache) {
        if ((st = weight_cache_create(KILN_DTYPE_F32, &e->own_cache)) != KILN_OK)
            goto fail;
        cache = e->own_cache;
    }
    if ((st = prepare_weights(e, cache)) != KILN_OK)
        goto fail;
    size_t bytes = 0;
    st = plan_memory(g, e->offset, &bytes);
    if (st != KILN_OK)
        goto fail;
    st = arena_init(&e->memory, bytes);
    if (st != KILN_OK)
        goto fail;
    for (size_t i = 0; i < e->count; i++)
        if (e->offset[i] != SIZE_MAX)
            e->data[i] = arena_at(&e->memory, e->offset[i]);
    LOG_DEBUG("graph: %zu nodes, activation arena %.1f MiB", e->count, (double)bytes / (1024.0 * 1024.0));
    *out = e;
    return KILN_OK;
fail:
    graph_exec_destroy(e);
    return st;
}

void graph_exec_destroy(graph_exec *e)
{
    if (!e)
        return;
    arena_deinit(&e->memory);
    weight_cache_destroy(e->own_cache);
    free(e->scratch);
    free(e->data);
    free(e->offset);
    free(e->packed);
    free(e);
}

kiln_status graph_plan_bytes(const graph *g, size_t *bytes)
{
    if (graph_status(g) != KILN_OK)
        return graph_status(g);
    return plan_memory(g, NULL, bytes);
}

void graph_exec_set_profile(graph_exec *e, graph_profile *p)
{
    e->profile = p;
}

size_t graph_exec_arena_bytes(const graph_exec *e)
{
    return e->memory.size;
}

kiln_status graph_exec_bind(graph_exec *e, graph_id input, const float *data)
{
    const graph_node *node = graph_node_at(e->g, input);
    if (!node || node->op != GRAPH_OP_INPUT)
        return err_set(KILN_ERR_INVALID, "graph node %d is not an input", (int)input);
    e->data[input] = (float *)data;
    return KILN_OK;
}

const float *graph_exec_output(const graph_exec *e, graph_id id)
{
    if (!graph_is_output(e->g, id))
        return NULL;
    return e->data[storage_root(e->g, id)];
}

/* ---- running the ops ---- */

typedef struct op_ctx {
    const kernel_table *k;
    const graph_node *node;
    const packed_weights *w; /* linear and conv */
    unsigned char *scratch;  /* thread i's is scratch + i * scratch_stride */
    size_t scratch_stride;
    const tensor *in[GRAPH_MAX_INPUTS];
    const float *x[GRAPH_MAX_INPUTS];
    float *y;
    int64_t tiles_n; /* 2-d ops: tiles along the second dim */
    int64_t tile_m, tile_n;
    conv2d_geom conv;
    attention_geom attn;
} op_ctx;

static int64_t last_dim(const tensor *t)
{
    return t->shape[t->ndim - 1];
}

static int64_t rows_of(const tensor *t)
{
    return tensor_numel(t) / last_dim(t);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Tiles run weight-panel by weight-panel: a panel stays in cache while
 * every row block streams past it. */
static void run_linear(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t m_total = rows_of(c->in[0]), n_total = last_dim(&c->node->out), k = last_dim(c->in[0]);
    int64_t tiles_m = (m_total + c->tile_m - 1) / c->tile_m;
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t m0 = (tile % tiles_m) * c->tile_m, n0 = (tile / tiles_m) * c->tile_n;
        c->k->linear_f32(c->x[0], k, c->w, c->x[2], c->y, n_total, m0, min64(m0 + c->tile_m, m_total), n0,
                         min64(n0 + c->tile_n, n_total));
    }
}

static void run_conv2d(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t pixels = c->conv.batch * c->conv.out_h * c->conv.out_w;
    int64_t tiles_m = (pixels + c->tile_m - 1) / c->tile_m;
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t p0 = (tile % tiles_m) * c->tile_m, c0 = (tile / tiles_m) * c->tile_n;
        c->k->conv2d_f32(&c->conv, c->x[0], c->w, c->x[2], NULL, c->y, p0, min64(p0 + c->tile_m, pixels), c0,
                         min64(c0 + c->tile_n, c->conv.out_c));
    }
}

static void run_group_norm(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    int64_t ch = last_dim(x), hw = rows_of(x) / x->shape[0];
    const graph_params *prm = &c->node->params;
    c->k->group_norm_f32(c->x[0], c->y, hw, ch, prm->norm.groups, prm->norm.eps, c->x[1], c->x[2], prm->norm.silu,
                         begin, end);
}

static void run_layer_norm(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    c->k->layer_norm_f32(c->x[0], c->y, last_dim(c->in[0]), c->node->params.norm.eps, c->x[1], c->x[2], begin, end);
}

static void run_attention(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    c->k->attention_f32(&c->attn, c->x[0], c->x[1], c->x[2], c->y, begin, end,
                        c->scratch + (size_t)thread * c->scratch_stride);
}

static void run_elementwise(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    switch (c->node->op) {
    case GRAPH_OP_ADD:
        c->k->add_f32(c->x[0], c->x[1], c->y, begin, end);
        break;
    case GRAPH_OP_SILU:
        c->k->silu_f32(c->x[0], c->y, begin, end);
        break;
    case GRAPH_OP_GELU:
        c->k->gelu_f32(c->x[0], c->y, begin, end);
        break;
    case GRAPH_OP_QUICK_GELU:
        c->k->quick_gelu_f32(c->x[0], c->y, begin, end);
        break;
    default:
        break;
    }
}

static void run_add_channel_bias(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    c->k->add_channel_bias_f32(c->x[0], c->x[1], c->y, rows_of(x) / x->shape[0], last_dim(x), begin, end);
}

static void run_geglu(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    c->k->geglu_f32(c->x[0], c->y, last_dim(&c->node->out), begin, end);
}

static void run_concat(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t ca = last_dim(c->in[0]), cb = last_dim(c->in[1]);
    for (int64_t r = begin; r < end; r++) {
        memcpy(c->y + r * (ca + cb), c->x[0] + r * ca, (size_t)ca * sizeof(float));
        memcpy(c->y + r * (ca + cb) + ca, c->x[1] + r * cb, (size_t)cb * sizeof(float));
    }
}

/* rows of the output image: (batch, out_y) pairs; source index
 * floor(dst * in / out), PyTorch's nearest */
static void run_upsample(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    int64_t h = x->shape[1], w = x->shape[2], ch = x->shape[3];
    int64_t out_h = c->node->out.shape[1], out_w = c->node->out.shape[2];
    for (int64_t r = begin; r < end; r++) {
        int64_t b = r / out_h, oy = r % out_h;
        const float *src = c->x[0] + ((b * h + oy * h / out_h) * w) * ch;
        float *dst = c->y + r * out_w * ch;
        for (int64_t ox = 0; ox < out_w; ox++)
            memcpy(dst + ox * ch, src + (ox * w / out_w) * ch, (size_t)ch * sizeof(float));
    }
}

/* LDM's timestep_embedding: [cos(t f_i), sin(t f_i)] with
 * f_i = exp(-ln(max_period) i / half), in float32 as PyTorch computes it. */
static void timestep_embed(const op_ctx *c)
{
    int64_t batch = c->in[0]->shape[0];
    int dim = c->node->params.timestep.dim, half = dim / 2;
    float neg_log = (float)-log((double)c->node->params.timestep.max_period);
    for (int64_t b = 0; b < batch; b++) {
        float t = c->x[0][b];
        for (int i = 0; i < half; i++) {
            float freq = expf(neg_log * (float)i / (float)half);
            float arg = t * freq;
            c->y[b * dim + i] = cosf(arg);
            c->y[b * dim + half + i] = sinf(arg);
        }
    }
}

static kiln_status embed_tokens(const op_ctx *c)
{
    const tensor *ids = c->in[0], *table = c->in[1];
    int64_t batch = ids->shape[0], len = ids->shape[1], vocab = table->shape[0], ch = table->shape[1];
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < len; t++) {
            float idf = c->x[0][b * len + t];
            int64_t id = (int64_t)idf;
            if (!(idf >= 0.0f) || id >= vocab || (float)id != idf)
                return err_set(KILN_ERR_INVALID, "graph node '%s': token id %g at [%lld, %lld] outside the vocabulary of %lld",
                               c->node->name, (double)idf, (long long)b, (long long)t, (long long)vocab);
            const float *row = c->x[1] + id * ch, *pos = c->x[2] + t * ch;
            float *out = c->y + (b * len + t) * ch;
            for (int64_t i = 0; i < ch; i++)
                out[i] = row[i] + pos[i];
        }
    return KILN_OK;
}

/* Splits an m x n output into tiles in multiples of the kernel's own tile,
 * enough of them to keep every thread busy: skinny outputs (the time
 * embedding, a few tokens) are split across their columns. */
static void set_tiles(op_ctx *c, int64_t m, int64_t n, int threads)
{
    int64_t mr = c->k->gemm_mr > 0 ? c->k->gemm_mr : 1, nr = c->w->nr > 0 ? c->w->nr : 8;
    c->tile_n = nr;
    c->tile_m = 8 * mr;
    if (c->tile_m > m)
        c->tile_m = (m + mr - 1) / mr * mr;
    int64_t tiles = ((m + c->tile_m - 1) / c->tile_m) * ((n + c->tile_n - 1) / c->tile_n);
    if (tiles < 4 * threads && c->tile_n > nr)
        c->tile_n = nr;
    while (((m + c->tile_m - 1) / c->tile_m) * ((n + c->tile_n - 1) / c->tile_n) < 4 * threads && c->tile_m > mr)
        c->tile_m -= mr;
    c->tiles_n = (n + c->tile_n - 1) / c->tile_n;
}

static attention_geom attention_geometry(const graph_exec *e, const graph_node *node)
{
    const tensor *q = &graph_node_at(e->g, node->inputs[0])->out, *k = &graph_node_at(e->g, node->inputs[1])->out;
    const tensor *v = &graph_node_at(e->g, node->inputs[2])->out;
    int heads = node->params.attention.heads;
    return (attention_geom){.batch = q->shape[0], .heads = heads, .q_len = q->shape[1], .kv_len = k->shape[1],
                            .head_dim = q->shape[2] / heads, .q_stride = q->shape[2], .k_stride = k->shape[2],
                            .v_stride = v->shape[2], .o_stride = node->out.shape[2],
                            .scale = node->params.attention.scale, .causal = node->params.attention.causal};
}

static kiln_status run_node(graph_exec *e, graph_id id, tpool *pool)
{
    const graph_node *node = graph_node_at(e->g, id);
    op_ctx c = {.k = e->k, .node = node, .w = e->packed[id], .y = e->data[id], .scratch = e->scratch,
                .scratch_stride = e->scratch_per_thread};
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i] != GRAPH_NONE) {
            c.in[i] = &graph_node_at(e->g, node->inputs[i])->out;
            c.x[i] = e->data[node->inputs[i]];
        }
    int threads = tpool_size(pool);
    const tensor *out = &node->out;

    switch (node->op) {
    case GRAPH_OP_INPUT:
    case GRAPH_OP_WEIGHT:
        break;
    case GRAPH_OP_VIEW:
        e->data[id] = e->data[node->inputs[0]];
        break;
    case GRAPH_OP_LINEAR: {
        int64_t m = rows_of(c.in[0]), n = last_dim(out);
        set_tiles(&c, m, n, threads);
        tpool_for(pool, ((m + c.tile_m - 1) / c.tile_m) * c.tiles_n, 1, TPOOL_DYNAMIC, run_linear, &c);
        break;
    }
    case GRAPH_OP_CONV2D: {
        const tensor *x = c.in[0];
        const graph_params *p = &node->params;
        c.conv = (conv2d_geom){.batch = x->shape[0], .in_h = x->shape[1], .in_w = x->shape[2], .in_c = x->shape[3],
                               .out_h = out->shape[1], .out_w = out->shape[2], .out_c = out->shape[3],
                               .kernel = p->conv.kernel, .stride = p->conv.stride, .pad_top = p->conv.pad_top,
                               .pad_left = p->conv.pad_left};
        int64_t pixels = c.conv.batch * c.conv.out_h * c.conv.out_w;
        set_tiles(&c, pixels, c.conv.out_c, threads);
        tpool_for(pool, ((pixels + c.tile_m - 1) / c.tile_m) * c.tiles_n, 1, TPOOL_DYNAMIC, run_conv2d, &c);
        break;
    }
    case GRAPH_OP_GROUP_NORM: {
        /* a few groups per item: long contiguous channel runs per pixel, and
         * still several items per thread */
        int64_t groups = node->params.norm.groups, grain = groups / 4 > 0 ? groups / 4 : 1;
        tpool_for(pool, c.in[0]->shape[0] * groups, grain, TPOOL_DYNAMIC, run_group_norm, &c);
        break;
    }
    case GRAPH_OP_LAYER_NORM:
        tpool_for(pool, rows_of(c.in[0]), 8, TPOOL_DYNAMIC, run_layer_norm, &c);
        break;
    case GRAPH_OP_ATTENTION: {
        c.attn = attention_geometry(e, node);
        int heads = node->params.attention.heads;
        tpool_for(pool, c.attn.batch * heads * c.attn.q_len, 48, TPOOL_DYNAMIC, run_attention, &c);
        break;
    }
    case GRAPH_OP_ADD:
    case GRAPH_OP_SILU:
    case GRAPH_OP_GELU:
    case GRAPH_OP_QUICK_GELU:
        tpool_for(pool, tensor_numel(out), 16384, TPOOL_STATIC, run_elementwise, &c);
        break;
    case GRAPH_OP_ADD_CHANNEL_BIAS:
        tpool_for(pool, rows_of(out), 64, TPOOL_STATIC, run_add_channel_bias, &c);
        break;
    case GRAPH_OP_GEGLU:
        tpool_for(pool, rows_of(out), 16, TPOOL_STATIC, run_geglu, &c);
        break;
    case GRAPH_OP_CONCAT_CHANNELS:
        tpool_for(pool, rows_of(out), 64, TPOOL_STATIC, run_concat, &c);
        break;
    case GRAPH_OP_UPSAMPLE_NEAREST:
        tpool_for(pool, out->shape[0] * out->shape[1], 4, TPOOL_STATIC, run_upsample, &c);
        break;
    case GRAPH_OP_TIMESTEP_EMBED:
        timestep_embed(&c);
        break;
    case GRAPH_OP_EMBED_TOKENS:
        return embed_tokens(&c);
    case GRAPH_OP_COUNT:
        break;
    }
    return KILN_OK;
}

/* Scratch for every thread of the pool: allocated once, not per step. */
static kiln_status ensure_scratch(graph_exec *e, int threads)
{
    if (e->scratch_threads >= threads)
        return KILN_OK;
    size_t per_thread = 0;
    for (size_t i = 0; i < e->count; i++) {
        const graph_node *node = graph_node_at(e->g, (graph_id)i);
        if (node->op == GRAPH_OP_ATTENTION) {
            attention_geom g = attention_geometry(e, node);
            size_t bytes = arena_round_up(e->k->attention_scratch(&g));
            if (bytes > per_thread)
                per_thread = bytes;
        }
    }
    free(e->scratch);
    e->scratch = NULL;
    e->scratch_threads = 0;
    if (per_thread && posix_memalign((void **)&e->scratch, ARENA_ALIGN, per_thread * (size_t)threads) != 0)
        return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes of kernel scratch", per_thread * (size_t)threads);
    e->scratch_per_thread = per_thread;
    e->scratch_threads = threads;
    return KILN_OK;
}

kiln_status graph_exec_run(graph_exec *e, tpool *pool)
{
    kiln_status st = ensure_scratch(e, tpool_size(pool));
    if (st != KILN_OK)
        return st;
    for (size_t i = 0; i < e->count; i++) {
        const graph_node *node = graph_node_at(e->g, (graph_id)i);
        if (node->op == GRAPH_OP_INPUT && !e->data[i])
            return err_set(KILN_ERR_INVALID, "graph input '%s' has no data bound", node->name);
    }
    graph_profile *prof = e->profile;
    for (size_t i = 0; i < e->count; i++) {
        uint64_t start = prof ? clock_now_ns() : 0;
        st = run_node(e, (graph_id)i, pool);
        if (st != KILN_OK)
            return st;
        if (prof) {
            graph_op op = graph_node_at(e->g, (graph_id)i)->op;
            prof->seconds[op] += (double)(clock_now_ns() - start) * 1e-9;
            prof->flops[op] += graph_node_flops(e->g, (graph_id)i);
            prof->nodes[op]++;
        }
    }
    if (prof)
        prof->runs++;
    return KILN_OK;
}
