#include "graph/executor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "kernels/nchw.h"
#include "kernels/norm_stats.h"
#include "kernels/winograd.h"

struct graph_exec {
    const graph *g;
    const kernel_table *k; /* the level the weights were packed for */
    graph_exec_options opt;
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
    /* the plain attention's score matrix and packed operands: one block
     * for the largest attention node (under the static plan) */
    size_t plain_bytes;
    float *plain;
    /* Winograd: the transformed weights of the convolution running now,
     * sized for the largest that takes that path */
    size_t winograd_floats;
    float *winograd_u;
    /* the arena, scratch and Winograd weights are faulted in (the first
     * run after they were allocated or their pages released does it) */
    int resident;
    /* alloc_as_you_go: per node, 1 when it owns a malloc'd output; and the
     * nodes whose storage is freed after node i ran, as lists (free_head[i],
     * then free_next[j] until GRAPH_NONE) */
    unsigned char *owned;
    graph_id *free_head, *free_next;
    /* fusion: an ADD folded into the convolution before it (the conv adds
     * the other operand as its residual and the ADD reads as its storage):
     * alias[add] = conv, residual[conv] = the other operand; a nearest
     * upsampling folded into the convolution after it (which reads the
     * upsampling's input at half resolution): alias[upsample] = its input;
     * GRAPH_NONE elsewhere. NULL when nothing was fused. */
    graph_id *alias, *residual;
    size_t fused, folded;
    size_t live_bytes, peak_bytes;
    graph_profile *profile;
    graph_trace_fn trace;
    void *trace_ctx;
    /* check_finite: per thread, what its part of an output held; and the
     * first node of the last run found to hold a NaN or Inf */
    struct finite_slot *finite_slots;
    int finite_threads;
    graph_nonfinite nonfinite;
    uint64_t check_ns; /* the last run's time in the check */
    /* group norms across runs (graph_exec_set_norm_stats): the caller's
     * statistics, and during a run the next group norm's first entry */
    graph_norm_mode norm_mode;
    double *norm_stats;
    graph_norm_region norm_region;
    size_t norm_next;
    float *norm_affine; /* SHARED: a group norm's per-channel scale and shift, per batch element */
};

void graph_exec_options_defaults(graph_exec_options *o)
{
    memset(o, 0, sizeof *o);
    o->fast_math = 1;
}

/* ---- which convolutions run by Winograd ---- */

static conv2d_geom conv_geometry(const graph *g, const graph_node *node)
{
    const tensor *x = &graph_node_at(g, node->inputs[0])->out, *out = &node->out;
    const graph_params *p = &node->params;
    return (conv2d_geom){.batch = tensor_batch(x), .in_h = tensor_height(x), .in_w = tensor_width(x),
                         .in_c = tensor_channels(x), .out_h = tensor_height(out), .out_w = tensor_width(out),
                         .out_c = tensor_channels(out), .kernel = p->conv.kernel, .stride = p->conv.stride,
                         .pad_top = p->conv.pad_top, .pad_left = p->conv.pad_left};
}

static int is_nchw(const tensor *t)
{
    return t->layout == TENSOR_LAYOUT_NCHW;
}

/* Winograd pays where there are enough tiles to share each transformed
 * weight: its weights are transformed on every run, 4x their size. SD
 * 1.5's UNet at 256x256, batch 2, node by node (kiln generate --trace,
 * Winograd on against off, two runs each, 2026-12-07 Xeon, 2 threads):
 * 2x the direct kernel at 128 tiles (the 32x32 level, 320-640 channels);
 * 8% slower in sum at 32 tiles (the 16x16 level, 640-1920 channels: 227
 * against 207 ms a step). bench_kernels agrees: slower at 8 tiles of
 * 1280. */
#define WINOGRAD_MIN_TILES 64

/* Below that, F(2x2, 3x3) from this many tiles of 2x2: its transformed
 * weights are 16/9 of the direct ones, and it does 4/9 of the multiplies.
 * Paired in-process runs against the direct kernel (bench_kernels shapes,
 * weights cold, 2 threads, the same Xeon, 2026-12-07): the UNet's 16x16
 * level at batch 2 (128 tiles) 1.21-1.39x over seven shapes of 320-2560
 * inputs; at batch 1 (64 tiles) 1.07-1.15x, within the machine's noise;
 * the 8x8 level at batch 2 (32 tiles) 0.70x. At 32x32 and above F(4x4)
 * is as fast or faster (0.79-1.07 of F(2x2)'s time). */
#define WINOGRAD2_MIN_TILES 128

/* The Winograd variant that runs a convolution, or -1 for the direct
 * kernel. Winograd's kernels are NHWC: channels-first convolutions run
 * direct. */
static int winograd_variant_of(const kernel_table *k, int direct_conv, const graph_node *node, const conv2d_geom *g)
{
    if (direct_conv || is_nchw(&node->out) || !winograd_fits(g))
        return -1;
    if (k->winograd_conv_f32[WINOGRAD_F4] && winograd_tiles(g, WINOGRAD_F4) >= WINOGRAD_MIN_TILES)
        return WINOGRAD_F4;
    if (k->winograd_conv_f32[WINOGRAD_F2] && winograd_tiles(g, WINOGRAD_F2) >= WINOGRAD2_MIN_TILES)
        return WINOGRAD_F2;
    return -1;
}

/* What a Winograd convolution holds: its group's transformed weights
 * (floats) and a thread's scratch for the largest tile block (one thread's:
 * later runs may have fewer threads, and so larger blocks). */
static void winograd_needs(const kernel_table *k, const conv2d_geom *g, winograd_variant v, size_t *weight_floats,
                           size_t *thread_bytes)
{
    int64_t group = winograd_group_channels(g, v, k->gemm_nr);
    *weight_floats = winograd_weight_floats(v, k->gemm_nr, group, g->in_c);
    *thread_bytes = arena_round_up(winograd_scratch_bytes(g, v, winograd_block_tiles(g, v, 1), group));
}

/* ---- memory plan ---- */

typedef struct interval {
    graph_id node;
    size_t bytes;
    size_t first, last; /* node indices during which the data is live */
    size_t offset;
} interval;

/* The node whose storage id's data lives in: through views, and through
 * fused ADDs to their convolution (alias may be NULL). */
static graph_id storage_root(const graph *g, const graph_id *alias, graph_id id)
{
    for (;;) {
        const graph_node *n = graph_node_at(g, id);
        if (n->op == GRAPH_OP_VIEW)
            id = n->inputs[0];
        else if (alias && alias[id] != GRAPH_NONE)
            id = alias[id];
        else
            return id;
    }
}

static int by_size_descending(const void *a, const void *b)
{
    const interval *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* The index of the last node that reads each node's storage (views
 * count for their root); n for outputs, which live to the end. */
static void compute_last_use(const graph *g, const graph_id *alias, size_t *last_use)
{
    size_t n = graph_node_count(g);
    for (size_t i = 0; i < n; i++)
        last_use[i] = i;
    for (size_t i = 0; i < n; i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        for (int k = 0; k < node->n_inputs; k++)
            if (node->inputs[k] != GRAPH_NONE) {
                graph_id root = storage_root(g, alias, node->inputs[k]);
                if (last_use[root] < i)
                    last_use[root] = i;
            }
        if (graph_is_output(g, (graph_id)i))
            last_use[storage_root(g, alias, (graph_id)i)] = n;
    }
}

/* Nodes whose output needs storage of its own (not inputs, weights, views
 * or fused ADDs). */
static int needs_storage(const graph *g, const graph_id *alias, graph_id id)
{
    const graph_node *node = graph_node_at(g, id);
    if (alias && alias[id] != GRAPH_NONE)
        return 0;
    return node->op != GRAPH_OP_INPUT && node->op != GRAPH_OP_WEIGHT && node->op != GRAPH_OP_VIEW;
}

/* Greedy by size: place the largest block first, each at the lowest offset
 * that overlaps no placed block whose lifetime it shares. Near-optimal for
 * the long chains of a UNet, and cheap for a few thousand nodes. */
/* offsets (n entries) may be NULL: the peak alone. */
static kiln_status plan_memory(const graph *g, const graph_id *alias, size_t *offsets, size_t *arena_bytes)
{
    size_t n = graph_node_count(g);
    size_t *last_use = malloc((n ? n : 1) * sizeof *last_use);
    interval *items = malloc((n ? n : 1) * sizeof *items);
    size_t *placed = malloc((n ? n : 1) * sizeof *placed);
    kiln_status st = KILN_OK;
    if (!last_use || !items || !placed) {
        st = err_set(KILN_ERR_NOMEM, "cannot allocate the memory plan for %zu nodes", n);
        goto done;
    }
    compute_last_use(g, alias, last_use);

    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        if (offsets)
            offsets[i] = SIZE_MAX;
        if (!needs_storage(g, alias, (graph_id)i))
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

/* Whether every reader of weight w reads it as a token table. */
static int token_table_only(const graph *g, graph_id w)
{
    for (size_t i = 0; i < graph_node_count(g); i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        for (int k = 0; k < node->n_inputs; k++)
            if (node->inputs[k] == w && !(node->op == GRAPH_OP_EMBED_TOKENS && k == 1))
                return 0;
    }
    return 1;
}

/* Weights in the form their readers want: packed for the matrix kernels,
 * a token table in the file's dtype (embed_tokens widens the rows it
 * reads), f32 for everything else (biases, norms, position embeddings);
 * a weight only the matrix kernels read is never converted whole. */
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
            if (k == 1 && node->op == GRAPH_OP_EMBED_TOKENS && token_table_only(g, in)) {
                kiln_status st = weight_cache_copy(cache, &src->out, (const void **)&e->data[in]);
                if (st != KILN_OK)
                    return err_wrap(st, "weight '%s': ", src->name);
                continue;
            }
            kiln_status st = weight_cache_f32(cache, &src->out, (const float **)&e->data[in]);
            if (st != KILN_OK)
                return err_wrap(st, "weight '%s': ", src->name);
        }
        if (node->op != GRAPH_OP_LINEAR && node->op != GRAPH_OP_CONV2D)
            continue;
        const tensor *w = &graph_node_at(g, node->inputs[1])->out;
        /* a 1x1 convolution may hold its weight as the matrix [out, in] */
        int64_t taps = node->op == GRAPH_OP_CONV2D && w->ndim == 4 ? w->shape[2] * w->shape[3] : 1;
        kiln_status st = weight_cache_packed(cache, w, w->shape[0], w->shape[1], taps, e->k->gemm_nr, &e->packed[i]);
        if (st != KILN_OK)
            return err_wrap(st, "weight of '%s': ", node->name);
    }
    return KILN_OK;
}

/* Fusion: ADD(a, b) where one operand is a convolution that nothing else
 * reads and the other was computed before it becomes the convolution's
 * residual (its kernel adds it as it stores each tile), saving the ADD's
 * pass over memory and its buffer. The sum is the same in every bit:
 * (conv + bias) + other, one rounding, either way.
 *
 * A nearest x2 upsampling read only by a convolution is not run: the
 * convolution reads its input at half resolution (conv2d_geom.upsample),
 * so the upsampled tensor, four times its input, is neither written nor
 * read back. The same values are read: bit for bit the same result. (It
 * saves a pass over memory, not the peak: in SD's decoder the resnet after
 * the last upsampling holds more.) */
/* *alias and *residual: NULL when nothing fuses; *folded: upsamplings. */
static kiln_status plan_fusion(const graph *g, graph_id **alias_out, graph_id **residual_out, size_t *fused_out,
                               size_t *folded_out)
{
    size_t count = graph_node_count(g), n = count ? count : 1;
    int *readers = calloc(n, sizeof *readers);
    graph_id *alias = malloc(n * sizeof *alias), *residual = malloc(n * sizeof *residual);
    *alias_out = *residual_out = NULL;
    *fused_out = *folded_out = 0;
    if (!readers || !alias || !residual) {
        free(readers), free(alias), free(residual);
        return err_set(KILN_ERR_NOMEM, "cannot allocate the fusion plan for %zu nodes", count);
    }
    for (size_t i = 0; i < count; i++) {
        alias[i] = residual[i] = GRAPH_NONE;
        const graph_node *node = graph_node_at(g, (graph_id)i);
        for (int k = 0; k < node->n_inputs; k++)
            if (node->inputs[k] != GRAPH_NONE)
                readers[node->inputs[k]]++;
    }
    size_t fused = 0;
    for (size_t i = 0; i < count; i++) {
        const graph_node *add = graph_node_at(g, (graph_id)i);
        if (add->op != GRAPH_OP_ADD)
            continue;
        graph_id a = add->inputs[0], b = add->inputs[1];
        graph_id conv = a > b ? a : b, other = a > b ? b : a;
        const graph_node *c = graph_node_at(g, conv);
        if (a == b || c->op != GRAPH_OP_CONV2D || readers[conv] != 1 || graph_is_output(g, conv) ||
            residual[conv] != GRAPH_NONE || tensor_numel(&c->out) != tensor_numel(&add->out))
            continue;
        alias[i] = conv;
        residual[conv] = other;
        fused++;
    }
    size_t folded = 0;
    for (size_t i = 0; i < count; i++) {
        const graph_node *conv = graph_node_at(g, (graph_id)i);
        if (conv->op != GRAPH_OP_CONV2D)
            continue;
        graph_id up = conv->inputs[0];
        const graph_node *u = graph_node_at(g, up);
        if (u->op != GRAPH_OP_UPSAMPLE_NEAREST || readers[up] != 1 || graph_is_output(g, up) || is_nchw(&u->out))
            continue; /* the channels-first convolution gathers its own input (kernels/nchw.c) */
        const tensor *half = &graph_node_at(g, u->inputs[0])->out;
        if (u->out.shape[1] != 2 * half->shape[1] || u->out.shape[2] != 2 * half->shape[2])
            continue; /* upsampling to a size, not x2 (graph_upsample_nearest_to) */
        alias[up] = u->inputs[0];
        folded++;
    }
    free(readers);
    if (!fused && !folded) {
        free(alias), free(residual);
        return KILN_OK;
    }
    *alias_out = alias, *residual_out = residual, *fused_out = fused, *folded_out = folded;
    return KILN_OK;
}

/* alloc_as_you_go: which node's storage each node's run lets go of. */
static kiln_status prepare_frees(graph_exec *e)
{
    size_t n = e->count ? e->count : 1;
    size_t *last_use = malloc(n * sizeof *last_use);
    e->owned = calloc(n, 1);
    e->free_head = malloc(n * sizeof *e->free_head);
    e->free_next = malloc(n * sizeof *e->free_next);
    if (!last_use || !e->owned || !e->free_head || !e->free_next) {
        free(last_use);
        return err_set(KILN_ERR_NOMEM, "cannot allocate the free lists for %zu nodes", e->count);
    }
    compute_last_use(e->g, e->alias, last_use);
    for (size_t i = 0; i < e->count; i++)
        e->free_head[i] = e->free_next[i] = GRAPH_NONE;
    for (size_t i = 0; i < e->count; i++) {
        e->offset[i] = SIZE_MAX;
        if (!needs_storage(e->g, e->alias, (graph_id)i))
            continue;
        e->owned[i] = 1;
        if (last_use[i] < e->count) {
            e->free_next[i] = e->free_head[last_use[i]];
            e->free_head[last_use[i]] = (graph_id)i;
        }
    }
    free(last_use);
    return KILN_OK;
}

/* alloc_as_you_go: frees every node's storage still held. */
static void release_all(graph_exec *e)
{
    if (!e->owned)
        return;
    for (size_t i = 0; i < e->count; i++)
        if (e->owned[i] && e->data[i]) {
            free(e->data[i]);
            e->data[i] = NULL;
        }
    e->live_bytes = 0;
}

kiln_status graph_exec_create(const graph *g, weight_cache *cache, graph_exec **out)
{
    return graph_exec_create_with(g, cache, NULL, out);
}

kiln_status graph_exec_create_with(const graph *g, weight_cache *cache, const graph_exec_options *o,
                                   graph_exec **out)
{
    if (graph_status(g) != KILN_OK)
        return graph_status(g);
    graph_exec *e = calloc(1, sizeof *e);
    if (!e)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a graph executor");
    e->g = g;
    if (o)
        e->opt = *o;
    else
        graph_exec_options_defaults(&e->opt);
    e->k = kernels_for_math(cpu_isa(), e->opt.fast_math);
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
    if (!e->opt.unfused && (st = plan_fusion(g, &e->alias, &e->residual, &e->fused, &e->folded)) != KILN_OK)
        goto fail;
    if (e->opt.alloc_as_you_go) {
        if ((st = prepare_frees(e)) != KILN_OK)
            goto fail;
        LOG_DEBUG("graph: %zu nodes, activations allocated as they go", e->count);
        *out = e;
        return KILN_OK;
    }
    size_t bytes = 0;
    st = plan_memory(g, e->alias, e->offset, &bytes);
    if (st != KILN_OK)
        goto fail;
    st = arena_init(&e->memory, bytes);
    if (st != KILN_OK)
        goto fail;
    for (size_t i = 0; i < e->count; i++)
        if (e->offset[i] != SIZE_MAX)
            e->data[i] = arena_at(&e->memory, e->offset[i]);
    e->peak_bytes = bytes;
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
    if (e->data)
        release_all(e);
    arena_deinit(&e->memory);
    weight_cache_destroy(e->own_cache);
    free(e->scratch);
    free(e->plain);
    free(e->winograd_u);
    free(e->owned);
    free(e->free_head);
    free(e->free_next);
    free(e->alias);
    free(e->residual);
    free(e->data);
    free(e->offset);
    free(e->packed);
    free(e->finite_slots);
    free(e->norm_affine);
    free(e);
}

kiln_status graph_plan_bytes(const graph *g, size_t *bytes)
{
    if (graph_status(g) != KILN_OK)
        return graph_status(g);
    /* as a default executor runs it: fused */
    graph_id *alias = NULL, *residual = NULL;
    size_t fused = 0, folded = 0;
    kiln_status st = plan_fusion(g, &alias, &residual, &fused, &folded);
    if (st == KILN_OK)
        st = plan_memory(g, alias, NULL, bytes);
    free(alias);
    free(residual);
    return st;
}

size_t graph_norm_stats_size(const graph *g)
{
    size_t doubles = 0;
    for (size_t i = 0; i < graph_node_count(g); i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        if (node->op == GRAPH_OP_GROUP_NORM)
            doubles += 3 * (size_t)graph_node_at(g, node->inputs[0])->out.shape[0] * node->params.norm.groups;
    }
    return doubles;
}

kiln_status graph_exec_set_norm_stats(graph_exec *e, graph_norm_mode mode, double *stats,
                                      const graph_norm_region *region)
{
    if (stats && mode == GRAPH_NORM_SHARED && !e->norm_affine) {
        /* the largest group norm's scale and shift: made once, kept */
        size_t floats = 0;
        for (size_t i = 0; i < e->count; i++) {
            const graph_node *node = graph_node_at(e->g, (graph_id)i);
            if (node->op != GRAPH_OP_GROUP_NORM)
                continue;
            const tensor *x = &graph_node_at(e->g, node->inputs[0])->out;
            int64_t ch = is_nchw(x) ? x->shape[1] : x->shape[x->ndim - 1];
            size_t need = 2 * (size_t)x->shape[0] * (size_t)ch;
            floats = need > floats ? need : floats;
        }
        if (!(e->norm_affine = malloc((floats ? floats : 1) * sizeof *e->norm_affine)))
            return err_set(KILN_ERR_NOMEM, "cannot allocate the group norms' shared statistics");
    }
    e->norm_mode = stats ? mode : GRAPH_NORM_OWN;
    e->norm_stats = e->norm_mode == GRAPH_NORM_OWN ? NULL : stats;
    memset(&e->norm_region, 0, sizeof e->norm_region);
    if (region && mode == GRAPH_NORM_COLLECT)
        e->norm_region = *region;
    return KILN_OK;
}

void graph_exec_set_profile(graph_exec *e, graph_profile *p)
{
    e->profile = p;
}

void graph_exec_set_trace(graph_exec *e, graph_trace_fn fn, void *ctx)
{
    e->trace = fn;
    e->trace_ctx = fn ? ctx : NULL;
}

size_t graph_exec_arena_bytes(const graph_exec *e)
{
    return e->memory.size;
}

size_t graph_exec_peak_bytes(const graph_exec *e)
{
    return e->peak_bytes;
}

size_t graph_exec_scratch_bytes(const graph_exec *e)
{
    return e->scratch_per_thread * (size_t)e->scratch_threads + (e->plain ? e->plain_bytes : 0) +
           e->winograd_floats * sizeof(float);
}

void graph_exec_release_pages(graph_exec *e)
{
    e->resident = 0;
    arena_release_pages(&e->memory);
    memory_release_pages(e->scratch, e->scratch_per_thread * (size_t)e->scratch_threads);
    memory_release_pages(e->plain, e->plain ? e->plain_bytes : 0);
    memory_release_pages(e->winograd_u, e->winograd_floats * sizeof(float));
}

size_t graph_exec_winograd_convs(const graph_exec *e)
{
    size_t count = 0;
    for (size_t i = 0; i < e->count; i++) {
        const graph_node *node = graph_node_at(e->g, (graph_id)i);
        if (node->op == GRAPH_OP_CONV2D) {
            conv2d_geom cg = conv_geometry(e->g, node);
            count += (size_t)(winograd_variant_of(e->k, e->opt.direct_conv, node, &cg) >= 0);
        }
    }
    return count;
}

size_t graph_exec_fused_adds(const graph_exec *e)
{
    return e->fused;
}

size_t graph_exec_folded_upsamples(const graph_exec *e)
{
    return e->folded;
}

const graph_exec_options *graph_exec_get_options(const graph_exec *e)
{
    return &e->opt;
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
    return e->data[storage_root(e->g, e->alias, id)];
}

/* ---- running the ops ---- */

typedef struct op_ctx {
    const kernel_table *k;
    const graph_node *node;
    const packed_weights *w; /* linear and conv */
    const float *residual;   /* conv: a fused ADD's other operand, or NULL */
    unsigned char *scratch;  /* thread i's is scratch + i * scratch_stride */
    size_t scratch_stride;
    const tensor *in[GRAPH_MAX_INPUTS];
    const float *x[GRAPH_MAX_INPUTS];
    float *y;
    int64_t tiles_n; /* 2-d ops: tiles along the second dim */
    int64_t tile_m, tile_n;
    int rows_outer; /* matrix ops: tiles go panel by panel within a row block (set_tiles) */
    int silu;        /* group norm: SiLU fused into its last pass */
    double *norm_sums;     /* group norm across runs: this node's statistics */
    const float *norm_affine; /* SHARED: scale then shift, c each, per batch element */
    int64_t norm_rows[2], norm_cols[2]; /* group norm, COLLECT: the region of its input */
    conv2d_geom conv;
    float *winograd_u;           /* Winograd: the group's transformed weights */
    int64_t winograd_g0, winograd_g1; /* Winograd: the group of output channels */
    int64_t winograd_block;      /* Winograd: tiles per item */
    winograd_variant winograd_v; /* Winograd: which F(m x m, 3x3) */
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

/* Where tile number `tile` of a matrix op starts: rows m0, columns n0
 * (set_tiles chose the order). */
static void tile_origin(const op_ctx *c, int64_t tile, int64_t tiles_m, int64_t *m0, int64_t *n0)
{
    if (c->rows_outer) {
        *m0 = (tile / c->tiles_n) * c->tile_m;
        *n0 = (tile % c->tiles_n) * c->tile_n;
    } else {
        *m0 = (tile % tiles_m) * c->tile_m;
        *n0 = (tile / tiles_m) * c->tile_n;
    }
}

static void run_linear(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t m_total = rows_of(c->in[0]), n_total = last_dim(&c->node->out), k = last_dim(c->in[0]);
    int64_t tiles_m = (m_total + c->tile_m - 1) / c->tile_m;
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t m0, n0;
        tile_origin(c, tile, tiles_m, &m0, &n0);
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
        int64_t p0, c0;
        tile_origin(c, tile, tiles_m, &p0, &c0);
        c->k->conv2d_f32(&c->conv, c->x[0], c->w, c->x[2], c->residual, c->y, p0, min64(p0 + c->tile_m, pixels), c0,
                         min64(c0 + c->tile_n, c->conv.out_c));
    }
}

/* Channels first: an item is a block of output pixels and a run of output
 * channels; each gathers its block's patches into its thread's scratch. */
static void run_conv2d_nchw(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t pixels = c->conv.batch * c->conv.out_h * c->conv.out_w;
    int64_t blocks = (pixels + NCHW_CONV_BLOCK - 1) / NCHW_CONV_BLOCK;
    float *scratch = (float *)(c->scratch + (size_t)thread * c->scratch_stride);
    for (int64_t item = begin; item < end; item++) {
        int64_t p0 = (item % blocks) * NCHW_CONV_BLOCK, c0 = (item / blocks) * c->tile_n;
        nchw_conv2d_f32(c->k, &c->conv, c->x[0], c->w, c->x[2], c->residual, c->y, p0,
                        min64(p0 + NCHW_CONV_BLOCK, pixels), c0, min64(c0 + c->tile_n, c->conv.out_c), scratch);
    }
}

/* Winograd, first phase: the weights of a panel of output channels per
 * item. */
static void run_winograd_weights(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t lanes = c->w->nr > 0 ? c->w->nr : 1;
    c->k->winograd_weights_f32[c->winograd_v](c->w, c->winograd_g0, c->winograd_g1, c->winograd_u,
                                              c->winograd_g0 + begin * lanes,
                                              min64(c->winograd_g0 + end * lanes, c->winograd_g1));
}

/* second phase: a block of output tiles per item */
static void run_winograd_tiles(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t tiles = winograd_tiles(&c->conv, c->winograd_v);
    for (int64_t b = begin; b < end; b++) {
        int64_t t0 = b * c->winograd_block;
        c->k->winograd_conv_f32[c->winograd_v](&c->conv, c->x[0], c->w, c->winograd_u, c->winograd_g0,
                                               c->winograd_g1, c->x[2], c->residual, c->y, t0,
                                               min64(t0 + c->winograd_block, tiles),
                                               c->scratch + (size_t)thread * c->scratch_stride);
    }
}

/* Channels and pixels per batch element of a group norm's input: an
 * image in either layout, or [b, .., c]. */
static void norm_sizes(const tensor *x, int64_t *ch, int64_t *hw)
{
    *ch = is_nchw(x) ? x->shape[1] : last_dim(x);
    *hw = tensor_numel(x) / x->shape[0] / *ch;
}

/* Channels first: (batch, group) items, each a contiguous run of its
 * channels' planes. */
static void run_group_norm_nchw(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t ch, hw;
    norm_sizes(c->in[0], &ch, &hw);
    const graph_params *prm = &c->node->params;
    nchw_group_norm_f32(c->k, c->x[0], c->y, hw, ch, prm->norm.groups, prm->norm.eps, c->x[1], c->x[2], c->silu,
                        begin, end);
}

static void run_group_norm_sums(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    int64_t ch, hw;
    norm_sizes(x, &ch, &hw);
    if (is_nchw(x)) {
        group_norm_sums_nchw_f32(c->x[0], x->shape[2], x->shape[3], ch, c->node->params.norm.groups,
                                 c->norm_rows[0], c->norm_rows[1], c->norm_cols[0], c->norm_cols[1], c->norm_sums,
                                 begin, end);
        return;
    }
    int64_t h = x->ndim == 4 ? x->shape[1] : 1, w = x->ndim == 4 ? x->shape[2] : hw;
    group_norm_sums_f32(c->x[0], h, w, ch, c->node->params.norm.groups, c->norm_rows[0], c->norm_rows[1],
                        c->norm_cols[0], c->norm_cols[1], c->norm_sums, begin, end);
}

/* NCHW: channel planes of [batch * c, hw], each with its batch element's
 * scale and shift. */
static void run_group_norm_shared_nchw(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    int64_t ch, hw;
    norm_sizes(c->in[0], &ch, &hw);
    channel_affine_nchw_f32(c->x[0], c->y, ch, hw, c->norm_affine, begin, end);
}

/* Rows of [batch * hw, c]: each batch element's scale and shift (affine:
 * per batch element, c scales then c shifts), then SiLU if c->silu. */
static void run_channel_affine(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    int64_t ch = last_dim(x), hw = rows_of(x) / x->shape[0];
    while (begin < end) {
        int64_t b = begin / hw, stop = (b + 1) * hw < end ? (b + 1) * hw : end;
        const float *affine = c->norm_affine + 2 * b * ch;
        c->k->channel_affine_f32(c->x[0], c->y, ch, affine, affine + ch, c->silu, begin, stop);
        begin = stop;
    }
}

/* A group norm split by rows, first half: the thread's rows summed per
 * channel into its scratch, per batch element (2 * c doubles each). */
static void run_channel_sums(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    int64_t ch = last_dim(x), hw = rows_of(x) / x->shape[0];
    double *sums = (double *)(c->scratch + (size_t)thread * c->scratch_stride);
    while (begin < end) {
        int64_t b = begin / hw, stop = (b + 1) * hw < end ? (b + 1) * hw : end;
        c->k->channel_sums_f32(c->x[0], ch, begin, stop, sums + 2 * b * ch);
        begin = stop;
    }
}

/* Scratch of a row-split group norm (channels last), per thread: its sums
 * (2 * c doubles per batch element), then room for the scale and shift
 * (2 * c floats per batch element; thread 0's is used). */
static size_t group_norm_rows_scratch(const tensor *x)
{
    size_t per_batch = (size_t)(2 * last_dim(x));
    return (size_t)x->shape[0] * per_batch * (sizeof(double) + sizeof(float));
}

/* Where a group norm across runs counts (COLLECT): the region scaled to its
 * input; all of an input that is not an image. */
static void norm_region_of(const graph_exec *e, const tensor *x, op_ctx *c)
{
    const graph_norm_region *r = &e->norm_region;
    int image = x->ndim == 4 && x->layout != TENSOR_LAYOUT_PLAIN;
    int64_t h = image ? tensor_height(x) : 1, w = image ? tensor_width(x) : rows_of(x) / x->shape[0];
    if (!image || r->h <= 0 || r->w <= 0) {
        c->norm_rows[0] = 0, c->norm_rows[1] = h;
        c->norm_cols[0] = 0, c->norm_cols[1] = w;
        return;
    }
    c->norm_rows[0] = r->y0 * h / r->h, c->norm_rows[1] = r->y1 * h / r->h;
    c->norm_cols[0] = r->x0 * w / r->w, c->norm_cols[1] = r->x1 * w / r->w;
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
    if (is_nchw(x))
        nchw_add_channel_bias_f32(c->x[0], c->x[1], c->y, x->shape[2] * x->shape[3], begin, end);
    else
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
    if (is_nchw(c->in[0])) {
        int64_t hw = c->in[0]->shape[2] * c->in[0]->shape[3];
        nchw_concat_f32(c->x[0], c->x[1], c->y, c->in[0]->shape[1], c->in[1]->shape[1], hw, begin, end);
        return;
    }
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
    if (is_nchw(x)) {
        nchw_upsample_nearest_f32(c->x[0], c->y, x->shape[2], x->shape[3], c->node->out.shape[2],
                                  c->node->out.shape[3], begin, end);
        return;
    }
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

/* (batch, row block) items: NHWC to NCHW transposes [h*w, c] per batch
 * element, the way back [c, h*w] */
static void run_transpose(void *p, int64_t begin, int64_t end, int thread)
{
    op_ctx *c = p;
    const tensor *x = c->in[0];
    int64_t hw = tensor_height(x) * tensor_width(x), ch = tensor_channels(x);
    if (is_nchw(x))
        transpose_f32(c->x[0], c->y, ch, hw, begin, end);
    else
        transpose_f32(c->x[0], c->y, hw, ch, begin, end);
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

/* The table is in its own dtype (prepare_weights): each row read is
 * widened into the output, then the position's embedding added. */
static kiln_status embed_tokens(const op_ctx *c)
{
    const tensor *ids = c->in[0], *table = c->in[1];
    int64_t batch = ids->shape[0], len = ids->shape[1], vocab = table->shape[0], ch = table->shape[1];
    const void *rows = c->x[1];
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < len; t++) {
            float idf = c->x[0][b * len + t];
            int64_t id = (int64_t)idf;
            if (!(idf >= 0.0f) || id >= vocab || (float)id != idf)
                return err_set(KILN_ERR_INVALID, "graph node '%s': token id %g at [%lld, %lld] outside the vocabulary of %lld",
                               c->node->name, (double)idf, (long long)b, (long long)t, (long long)vocab);
            const float *pos = c->x[2] + t * ch;
            float *out = c->y + (b * len + t) * ch;
            if (table->dtype == KILN_DTYPE_F16)
                c->k->f16_to_f32((const uint16_t *)rows + id * ch, out, (size_t)ch);
            else if (table->dtype == KILN_DTYPE_BF16)
                c->k->bf16_to_f32((const uint16_t *)rows + id * ch, out, (size_t)ch);
            else
                memcpy(out, (const float *)rows + id * ch, (size_t)ch * sizeof *out);
            for (int64_t i = 0; i < ch; i++)
                out[i] += pos[i];
        }
    return KILN_OK;
}

/* Splits an m x n output into tiles in multiples of the kernel's own tile,
 * enough of them to keep every thread busy: skinny outputs (the time
 * embedding, a few tokens) are split across their columns. The order of
 * the tiles is gemm_rows_outer's. */
static void set_tiles(op_ctx *c, int64_t m, int64_t n, int threads)
{
    c->rows_outer = gemm_rows_outer(m, n, c->w->k, c->w->taps, cpu_l2_bytes());
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

static attention_geom attention_geometry_in(const graph *gr, const graph_node *node, int tile_q)
{
    const tensor *q = &graph_node_at(gr, node->inputs[0])->out, *k = &graph_node_at(gr, node->inputs[1])->out;
    const tensor *v = &graph_node_at(gr, node->inputs[2])->out;
    int heads = node->params.attention.heads;
    return (attention_geom){.batch = q->shape[0], .heads = heads, .q_len = q->shape[1], .kv_len = k->shape[1],
                            .head_dim = q->shape[2] / heads, .q_stride = q->shape[2], .k_stride = k->shape[2],
                            .v_stride = v->shape[2], .o_stride = node->out.shape[2],
                            .scale = node->params.attention.scale, .causal = node->params.attention.causal,
                            .tile_q = tile_q};
}

static attention_geom attention_geometry(const graph_exec *e, const graph_node *node)
{
    return attention_geometry_in(e->g, node, e->opt.attention_tile);
}

/* ---- the plain attention path ----
 *
 * What attention was before fused kernels, kept as the ablation's
 * baseline: for each (batch, head) the whole score matrix S = q k^T is
 * written out with the matrix kernels, softmax runs over its rows, and
 * O = P v is a second matrix product. The operands k and v^T are packed
 * per head as the matrix kernels want their weight operand. Memory is
 * q_len x kv_len floats, against the tiled kernel's O(tile). */

typedef struct plain_layout {
    size_t scores, packed_k, packed_v; /* floats of each part */
} plain_layout;

static plain_layout plain_parts(const kernel_table *k, const attention_geom *g)
{
    size_t align = ARENA_ALIGN / sizeof(float);
    plain_layout l;
    l.scores = ((size_t)(g->q_len * g->kv_len) + align - 1) / align * align;
    l.packed_k = (kernels_packed_elements(k->gemm_nr, g->kv_len, g->head_dim, 1) + align - 1) / align * align;
    l.packed_v = (kernels_packed_elements(k->gemm_nr, g->head_dim, g->kv_len, 1) + align - 1) / align * align;
    return l;
}

static size_t plain_bytes(const kernel_table *k, const attention_geom *g)
{
    plain_layout l = plain_parts(k, g);
    return (l.scores + l.packed_k + l.packed_v) * sizeof(float);
}

/* src is an n x k matrix with rows row_stride and elements col_stride
 * floats apart; packs it as the weight operand w[n][k] of linear_f32. */
static void pack_operand(const float *src, int64_t n, int64_t k, int64_t row_stride, int64_t col_stride, int nr,
                         float *dst)
{
    if (nr <= 0) {
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < k; i++)
                dst[j * k + i] = src[j * row_stride + i * col_stride];
        return;
    }
    int64_t panels = (n + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t i = 0; i < k; i++) {
            float *out = dst + (p * k + i) * nr;
            for (int64_t c = 0; c < nr; c++) {
                int64_t j = p * nr + c;
                out[c] = j < n ? src[j * row_stride + i * col_stride] : 0.0f;
            }
        }
}

typedef struct gemm_job {
    const kernel_table *k;
    const float *x;
    int64_t ldx;
    const packed_weights *w;
    float *y;
    int64_t ldy, m, n, tile_m, tile_n, tiles_m;
} gemm_job;

static void run_gemm(void *p, int64_t begin, int64_t end, int thread)
{
    gemm_job *j = p;
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t m0 = (tile % j->tiles_m) * j->tile_m, n0 = (tile / j->tiles_m) * j->tile_n;
        j->k->linear_f32(j->x, j->ldx, j->w, NULL, j->y, j->ldy, m0, min64(m0 + j->tile_m, j->m), n0,
                         min64(n0 + j->tile_n, j->n));
    }
}

/* y[m, n] = x[m, :] . w[n, :] over the pool, in the kernel's tiles. */
static void parallel_gemm(const kernel_table *k, const float *x, int64_t ldx, const packed_weights *w, float *y,
                          int64_t ldy, int64_t m, int64_t n, tpool *pool)
{
    int64_t mr = k->gemm_mr > 0 ? k->gemm_mr : 1;
    gemm_job j = {.k = k, .x = x, .ldx = ldx, .w = w, .y = y, .ldy = ldy, .m = m, .n = n,
                  .tile_m = 8 * mr, .tile_n = k->gemm_nr > 0 ? k->gemm_nr : 8};
    j.tiles_m = (m + j.tile_m - 1) / j.tile_m;
    tpool_for(pool, j.tiles_m * ((n + j.tile_n - 1) / j.tile_n), 1, TPOOL_DYNAMIC, run_gemm, &j);
}

typedef struct softmax_job {
    const kernel_table *k;
    float *s;
    int64_t n;
    float scale;
    int causal;
} softmax_job;

static void run_softmax(void *p, int64_t begin, int64_t end, int thread)
{
    softmax_job *j = p;
    j->k->softmax_f32(j->s, j->n, j->n, j->scale, j->causal, begin, end);
}

/* work: plain_bytes(k, g) of 64-byte aligned scratch */
static void attention_plain(const kernel_table *k, const attention_geom *g, const float *q, const float *kk,
                            const float *v, float *o, float *work, tpool *pool)
{
    plain_layout l = plain_parts(k, g);
    float *scores = work, *pk = work + l.scores, *pv = pk + l.packed_k; /* [q_len, kv_len], K, V^T */
    const int64_t d = g->head_dim;
    packed_weights wk = {.nr = k->gemm_nr, .dtype = KILN_DTYPE_F32, .n = g->kv_len, .k = d, .taps = 1, .data = pk};
    packed_weights wv = {.nr = k->gemm_nr, .dtype = KILN_DTYPE_F32, .n = d, .k = g->kv_len, .taps = 1, .data = pv};
    for (int64_t b = 0; b < g->batch; b++)
        for (int64_t h = 0; h < g->heads; h++) {
            const float *qb = q + b * g->q_len * g->q_stride + h * d;
            const float *kb = kk + b * g->kv_len * g->k_stride + h * d;
            const float *vb = v + b * g->kv_len * g->v_stride + h * d;
            float *ob = o + b * g->q_len * g->o_stride + h * d;
            pack_operand(kb, g->kv_len, d, g->k_stride, 1, k->gemm_nr, pk);
            parallel_gemm(k, qb, g->q_stride, &wk, scores, g->kv_len, g->q_len, g->kv_len, pool);
            softmax_job sj = {.k = k, .s = scores, .n = g->kv_len, .scale = g->scale, .causal = g->causal};
            tpool_for(pool, g->q_len, 16, TPOOL_DYNAMIC, run_softmax, &sj);
            pack_operand(vb, d, g->kv_len, 1, g->v_stride, k->gemm_nr, pv);
            parallel_gemm(k, scores, g->kv_len, &wv, ob, g->o_stride, g->q_len, d, pool);
        }
}

/* The plain path's block: kept for the executor's life under the static
 * plan, malloc'd and freed around the node when allocating as it goes. */
static kiln_status run_attention_plain_node(graph_exec *e, op_ctx *c, tpool *pool)
{
    size_t bytes = plain_bytes(e->k, &c->attn);
    float *work = e->plain;
    if (e->opt.alloc_as_you_go || !work || e->plain_bytes < bytes) {
        work = NULL;
        if (posix_memalign((void **)&work, ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0)
            return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes for the attention scores of '%s'", bytes,
                           c->node->name);
        if (e->opt.alloc_as_you_go) {
            e->live_bytes += bytes;
            if (e->live_bytes > e->peak_bytes)
                e->peak_bytes = e->live_bytes;
        } else {
            free(e->plain);
            e->plain = work;
            e->plain_bytes = bytes;
        }
    }
    attention_plain(e->k, &c->attn, c->x[0], c->x[1], c->x[2], c->y, work, pool);
    if (e->opt.alloc_as_you_go) {
        free(work);
        e->live_bytes -= bytes;
    }
    return KILN_OK;
}

static kiln_status run_node(graph_exec *e, graph_id id, tpool *pool)
{
    const graph_node *node = graph_node_at(e->g, id);
    op_ctx c = {.k = e->k, .node = node, .w = e->packed[id], .y = e->data[id], .scratch = e->scratch,
                .scratch_stride = e->scratch_per_thread, .silu = node->params.norm.silu};
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
    case GRAPH_OP_ADD:
        if (e->alias && e->alias[id] != GRAPH_NONE) {
            e->data[id] = e->data[e->alias[id]]; /* its convolution added it */
            break;
        }
        tpool_for(pool, tensor_numel(out), 16384, TPOOL_STATIC, run_elementwise, &c);
        break;
    case GRAPH_OP_LINEAR: {
        int64_t m = rows_of(c.in[0]), n = last_dim(out);
        set_tiles(&c, m, n, threads);
        tpool_for(pool, ((m + c.tile_m - 1) / c.tile_m) * c.tiles_n, 1, TPOOL_DYNAMIC, run_linear, &c);
        break;
    }
    case GRAPH_OP_CONV2D: {
        if (e->residual && e->residual[id] != GRAPH_NONE)
            c.residual = e->data[e->residual[id]];
        c.conv = conv_geometry(e->g, node);
        c.conv.upsample = e->alias && e->alias[node->inputs[0]] != GRAPH_NONE &&
                          graph_node_at(e->g, node->inputs[0])->op == GRAPH_OP_UPSAMPLE_NEAREST;
        int variant = winograd_variant_of(e->k, e->opt.direct_conv, node, &c.conv);
        if (variant >= 0) {
            c.winograd_v = (winograd_variant)variant;
            int64_t lanes = c.w->nr > 0 ? c.w->nr : 1, tiles = winograd_tiles(&c.conv, c.winograd_v);
            int64_t group = winograd_group_channels(&c.conv, c.winograd_v, c.w->nr);
            c.winograd_u = e->winograd_u;
            c.winograd_block = winograd_block_tiles(&c.conv, c.winograd_v, threads);
            for (c.winograd_g0 = 0; c.winograd_g0 < c.conv.out_c; c.winograd_g0 += group) {
                c.winograd_g1 = min64(c.winograd_g0 + group, c.conv.out_c);
                tpool_for(pool, (c.winograd_g1 - c.winograd_g0 + lanes - 1) / lanes, 1, TPOOL_DYNAMIC,
                          run_winograd_weights, &c);
                tpool_for(pool, (tiles + c.winograd_block - 1) / c.winograd_block, 1, TPOOL_DYNAMIC,
                          run_winograd_tiles, &c);
            }
            break;
        }
        int64_t pixels = c.conv.batch * c.conv.out_h * c.conv.out_w;
        if (is_nchw(out)) {
            /* whole blocks of channels; split them only when there are too
             * few pixel blocks to go round the threads */
            int64_t blocks = (pixels + NCHW_CONV_BLOCK - 1) / NCHW_CONV_BLOCK, lanes = c.w->nr > 0 ? c.w->nr : 1;
            int64_t splits = blocks >= 2 * threads ? 1 : (2 * threads + blocks - 1) / blocks;
            int64_t per = (c.conv.out_c + splits - 1) / splits;
            c.tile_n = (per + lanes - 1) / lanes * lanes;
            int64_t runs = (c.conv.out_c + c.tile_n - 1) / c.tile_n;
            tpool_for(pool, blocks * runs, 1, TPOOL_DYNAMIC, run_conv2d_nchw, &c);
            break;
        }
        set_tiles(&c, pixels, c.conv.out_c, threads);
        tpool_for(pool, ((pixels + c.tile_m - 1) / c.tile_m) * c.tiles_n, 1, TPOOL_DYNAMIC, run_conv2d, &c);
        break;
    }
    case GRAPH_OP_GROUP_NORM: {
        /* where the work goes by (batch, group) items (statistics across
         * runs, channels first): a few groups per item, and still several
         * items per thread */
        int64_t groups = node->params.norm.groups, grain = groups / 4 > 0 ? groups / 4 : 1;
        int64_t items = c.in[0]->shape[0] * groups, norm_ch, norm_hw;
        norm_sizes(c.in[0], &norm_ch, &norm_hw);
        int silu = node->params.norm.silu, shared = 0;
        if (e->opt.unfused)
            c.silu = 0;
        if (e->norm_stats && e->norm_mode != GRAPH_NORM_OWN) {
            c.norm_sums = e->norm_stats + e->norm_next;
            e->norm_next += 3 * (size_t)items;
            shared = e->norm_mode == GRAPH_NORM_SHARED;
            if (!shared) {
                norm_region_of(e, c.in[0], &c);
                tpool_for(pool, items, grain, TPOOL_DYNAMIC, run_group_norm_sums, &c);
            }
        }
        if (shared) {
            /* the statistics folded into a scale and shift per channel,
             * then one pass over contiguous rows */
            int64_t ch = norm_ch, batch = c.in[0]->shape[0];
            for (int64_t b = 0; b < batch; b++)
                group_norm_affine_f32(c.norm_sums + 3 * b * groups, ch, groups, node->params.norm.eps, c.x[1],
                                      c.x[2], e->norm_affine + 2 * b * ch, e->norm_affine + (2 * b + 1) * ch);
            c.norm_affine = e->norm_affine;
            if (is_nchw(c.in[0]))
                tpool_for(pool, batch * ch, 4, TPOOL_STATIC, run_group_norm_shared_nchw, &c);
            else
                tpool_for(pool, rows_of(c.in[0]), 64, TPOOL_STATIC, run_channel_affine, &c);
        } else if (!is_nchw(c.in[0])) {
            /* split by rows, not groups: every thread reads whole pixels
             * (a split by groups has each stride through all of them for
             * a few channels); the threads' sums are added up in thread
             * 0's, folded into a scale and shift per channel, and the
             * rows are read once more to normalize */
            int64_t batch = c.in[0]->shape[0], rows = rows_of(c.in[0]);
            size_t sums_n = (size_t)(2 * batch * norm_ch);
            for (int t = 0; t < threads; t++)
                memset(c.scratch + (size_t)t * c.scratch_stride, 0, sums_n * sizeof(double));
            tpool_for(pool, rows, 64, TPOOL_STATIC, run_channel_sums, &c);
            double *total = (double *)c.scratch;
            for (int t = 1; t < threads; t++) {
                const double *part = (const double *)(c.scratch + (size_t)t * c.scratch_stride);
                for (size_t i = 0; i < sums_n; i++)
                    total[i] += part[i];
            }
            float *affine = (float *)(total + sums_n);
            for (int64_t b = 0; b < batch; b++)
                group_norm_affine_from_channels_f32(total + 2 * b * norm_ch, (double)norm_hw, norm_ch, groups,
                                                    node->params.norm.eps, c.x[1], c.x[2],
                                                    affine + 2 * b * norm_ch, affine + (2 * b + 1) * norm_ch);
            c.norm_affine = affine;
            tpool_for(pool, rows, 64, TPOOL_STATIC, run_channel_affine, &c);
        } else
            tpool_for(pool, items, grain, TPOOL_DYNAMIC, run_group_norm_nchw, &c);
        if (silu && (e->opt.unfused || (shared && is_nchw(c.in[0])))) {
            /* fusion off (or channels-first shared statistics, whose kernel
             * has no SiLU): the SiLU as its own pass over the output, as an
             * unfused graph runs it */
            op_ctx s = c;
            graph_node silu_node = *node;
            silu_node.op = GRAPH_OP_SILU;
            s.node = &silu_node;
            s.x[0] = c.y;
            tpool_for(pool, tensor_numel(out), 16384, TPOOL_STATIC, run_elementwise, &s);
        }
        break;
    }
    case GRAPH_OP_LAYER_NORM:
        tpool_for(pool, rows_of(c.in[0]), 8, TPOOL_DYNAMIC, run_layer_norm, &c);
        break;
    case GRAPH_OP_ATTENTION: {
        c.attn = attention_geometry(e, node);
        if (e->opt.plain_attention)
            return run_attention_plain_node(e, &c, pool);
        int heads = node->params.attention.heads;
        /* hand out whole query tiles, as the kernel rounds them */
        int64_t grain = 48, step = e->k->attention_tile_step;
        if (e->k->attention_tile_max > 0) {
            grain = c.attn.tile_q > 0 ? c.attn.tile_q / step * step : e->k->attention_tile;
            grain = grain < step ? step : grain > e->k->attention_tile_max ? e->k->attention_tile_max : grain;
        }
        /* in runs of whole tiles, about four per thread: a kernel shares
         * work (a head's transposed keys) across the tiles of one call */
        int64_t items = c.attn.batch * heads * c.attn.q_len, run = items / (4 * (int64_t)threads) / grain * grain;
        tpool_for(pool, items, run > grain ? run : grain, TPOOL_DYNAMIC, run_attention, &c);
        break;
    }
    case GRAPH_OP_SILU:
    case GRAPH_OP_GELU:
    case GRAPH_OP_QUICK_GELU:
        tpool_for(pool, tensor_numel(out), 16384, TPOOL_STATIC, run_elementwise, &c);
        break;
    case GRAPH_OP_ADD_CHANNEL_BIAS:
        if (is_nchw(out))
            tpool_for(pool, out->shape[0] * out->shape[1], 4, TPOOL_STATIC, run_add_channel_bias, &c);
        else
            tpool_for(pool, rows_of(out), 64, TPOOL_STATIC, run_add_channel_bias, &c);
        break;
    case GRAPH_OP_GEGLU:
        tpool_for(pool, rows_of(out), 16, TPOOL_STATIC, run_geglu, &c);
        break;
    case GRAPH_OP_CONCAT_CHANNELS:
        if (is_nchw(out))
            tpool_for(pool, out->shape[0], 1, TPOOL_STATIC, run_concat, &c);
        else
            tpool_for(pool, rows_of(out), 64, TPOOL_STATIC, run_concat, &c);
        break;
    case GRAPH_OP_UPSAMPLE_NEAREST:
        if (e->alias && e->alias[id] != GRAPH_NONE) {
            e->data[id] = e->data[e->alias[id]]; /* its convolution reads it at half resolution */
            break;
        }
        /* NHWC: (batch, row); NCHW: (plane, row) */
        tpool_for(pool, is_nchw(out) ? out->shape[0] * out->shape[1] * out->shape[2] : out->shape[0] * out->shape[1],
                  4, TPOOL_STATIC, run_upsample, &c);
        break;
    case GRAPH_OP_TRANSPOSE: {
        const tensor *x = c.in[0];
        int64_t rows = is_nchw(x) ? tensor_channels(x) : tensor_height(x) * tensor_width(x);
        tpool_for(pool, x->shape[0] * ((rows + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK), 1, TPOOL_STATIC,
                  run_transpose, &c);
        break;
    }
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

/* What a run of g with options o holds beside its arena (kernel level k):
 * per thread, the largest scratch of any node (the tiled attention's
 * (kernels.h attention_scratch), a channels-first convolution's gathered
 * patches, a Winograd convolution's tile block, a group norm's sums); and
 * the largest Winograd transformed weights, in floats. */
static void kernel_scratch_needs(const graph *g, const kernel_table *k, const graph_exec_options *o,
                                 size_t *per_thread, size_t *winograd_floats)
{
    *per_thread = 0, *winograd_floats = 0;
    for (size_t i = 0; i < graph_node_count(g); i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        if (node->op == GRAPH_OP_ATTENTION && !o->plain_attention) {
            attention_geom ag = attention_geometry_in(g, node, o->attention_tile);
            size_t bytes = arena_round_up(k->attention_scratch(&ag));
            if (bytes > *per_thread)
                *per_thread = bytes;
        }
        if (node->op == GRAPH_OP_GROUP_NORM && !is_nchw(&graph_node_at(g, node->inputs[0])->out)) {
            size_t bytes = arena_round_up(group_norm_rows_scratch(&graph_node_at(g, node->inputs[0])->out));
            if (bytes > *per_thread)
                *per_thread = bytes;
        }
        if (node->op != GRAPH_OP_CONV2D)
            continue;
        conv2d_geom cg = conv_geometry(g, node);
        if (is_nchw(&node->out)) {
            size_t bytes = arena_round_up(nchw_conv2d_scratch_floats(&cg) * sizeof(float));
            if (bytes > *per_thread)
                *per_thread = bytes;
        }
        int variant = winograd_variant_of(k, o->direct_conv, node, &cg);
        if (variant >= 0) {
            size_t u, bytes;
            winograd_needs(k, &cg, (winograd_variant)variant, &u, &bytes);
            if (bytes > *per_thread)
                *per_thread = bytes;
            if (u > *winograd_floats)
                *winograd_floats = u;
        }
    }
}

size_t graph_kernel_scratch_bytes(const graph *g, const kernel_table *k, const graph_exec_options *o, int threads)
{
    size_t per_thread, winograd_floats;
    kernel_scratch_needs(g, k, o, &per_thread, &winograd_floats);
    return winograd_floats * sizeof(float) + per_thread * (size_t)threads;
}

/* Scratch for every thread of the pool: allocated once, not per step. */
static kiln_status ensure_scratch(graph_exec *e, int threads)
{
    if (e->scratch_threads >= threads)
        return KILN_OK;
    size_t per_thread, winograd_floats;
    kernel_scratch_needs(e->g, e->k, &e->opt, &per_thread, &winograd_floats);
    if (winograd_floats > e->winograd_floats) {
        free(e->winograd_u);
        e->winograd_u = NULL;
        e->winograd_floats = 0;
        if (posix_memalign((void **)&e->winograd_u, ARENA_ALIGN, winograd_floats * sizeof(float)) != 0)
            return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes of Winograd weights",
                           winograd_floats * sizeof(float));
        e->winograd_floats = winograd_floats;
    }
    e->resident = 0;
    free(e->scratch);
    e->scratch = NULL;
    e->scratch_threads = 0;
    if (per_thread && posix_memalign((void **)&e->scratch, ARENA_ALIGN, per_thread * (size_t)threads) != 0)
        return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes of kernel scratch", per_thread * (size_t)threads);
    e->scratch_per_thread = per_thread;
    e->scratch_threads = threads;
    return KILN_OK;
}

/* ---- check_finite ---- */

/* A thread's count and first bad index over its part of an output, on a
 * cache line of its own. */
typedef struct finite_slot {
    int64_t count, first;
    float value;
    unsigned char pad[64 - 2 * sizeof(int64_t) - sizeof(float)];
} finite_slot;

typedef struct finite_job {
    const float *y;
    finite_slot *slots;
} finite_job;

/* An exponent of all ones is NaN or Inf. Tested on the bits, so the loop
 * vectorizes and no fast-math flag can fold the test away. */
static inline int nonfinite_at(const float *y, int64_t i)
{
    uint32_t bits;
    memcpy(&bits, &y[i], sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

static void run_finite_scan(void *p, int64_t begin, int64_t end, int thread)
{
    finite_job *j = p;
    int64_t count = 0;
    for (int64_t i = begin; i < end; i++)
        count += nonfinite_at(j->y, i);
    finite_slot *s = &j->slots[thread];
    if (!count)
        return;
    if (s->count == 0 || begin < s->first)
        for (int64_t i = begin; i < end; i++)
            if (nonfinite_at(j->y, i)) {
                if (s->count == 0 || i < s->first) {
                    s->first = i;
                    s->value = j->y[i];
                }
                break;
            }
    s->count += count;
}

static kiln_status ensure_finite_slots(graph_exec *e, int threads)
{
    if (e->finite_threads >= threads)
        return KILN_OK;
    free(e->finite_slots);
    e->finite_threads = 0;
    e->finite_slots = NULL;
    if (posix_memalign((void **)&e->finite_slots, 64, (size_t)threads * sizeof *e->finite_slots) != 0)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the finite check for %d threads", threads);
    e->finite_threads = threads;
    return KILN_OK;
}

/* Records node id in e->nonfinite if its output holds a NaN or Inf. */
static void check_node_finite(graph_exec *e, graph_id id, tpool *pool)
{
    const graph_node *node = graph_node_at(e->g, id);
    if (node->op == GRAPH_OP_INPUT || node->op == GRAPH_OP_WEIGHT || node->op == GRAPH_OP_VIEW ||
        (e->alias && e->alias[id] != GRAPH_NONE) || !e->data[id])
        return;
    int threads = tpool_size(pool);
    for (int t = 0; t < threads; t++)
        e->finite_slots[t] = (finite_slot){.count = 0, .first = 0};
    finite_job j = {.y = e->data[id], .slots = e->finite_slots};
    int64_t n = tensor_numel(&node->out);
    tpool_for(pool, n, 65536, TPOOL_STATIC, run_finite_scan, &j);
    graph_nonfinite *r = &e->nonfinite;
    for (int t = 0; t < threads; t++) {
        const finite_slot *s = &e->finite_slots[t];
        if (!s->count)
            continue;
        if (!r->found || s->first < r->first_index) {
            r->first_index = s->first;
            r->first_value = s->value;
        }
        r->found = 1;
        r->count += s->count;
    }
    if (!r->found)
        return;
    r->node = id;
    r->name = node->name;
    r->op = node->op;
    r->ndim = node->out.ndim;
    for (int d = 0; d < TENSOR_MAX_DIMS; d++)
        r->shape[d] = d < node->out.ndim ? node->out.shape[d] : 0;
}

void graph_exec_nonfinite(const graph_exec *e, graph_nonfinite *out)
{
    *out = e->nonfinite;
}

double graph_exec_check_seconds(const graph_exec *e)
{
    return (double)e->check_ns * 1e-9;
}

/* The memory a run writes, faulted in before the run by every thread a
 * slice at a time, so that the kernels' times are their own. Left to
 * them, the first run of a graph after its pages were given back paid up
 * to 9 us a page inside them (both threads of a group norm faulting the
 * same pages). SD 1.5 at 256x256 (kiln generate --trace, 2026-12-07 Xeon,
 * a VM whose every new page costs the host a fault too): the VAE
 * decoder's nodes 1,730 ms on their first run against 1,038 after this
 * and 400 ms of populating its 223 MiB; the UNet's first step ~300 ms
 * over the next in the nodes against 220-290 ms of populating 133 MiB. */
enum { POPULATE_SLICE = 2 << 20 };

typedef struct populate_ctx {
    unsigned char *base;
    size_t bytes;
} populate_ctx;

static void run_populate(void *p, int64_t begin, int64_t end, int thread)
{
    const populate_ctx *c = p;
    size_t offset = (size_t)begin * POPULATE_SLICE, stop = (size_t)end * POPULATE_SLICE;
    memory_populate_pages(c->base + offset, (stop < c->bytes ? stop : c->bytes) - offset);
}

static void populate(tpool *pool, void *base, size_t bytes)
{
    populate_ctx c = {base, bytes};
    if (base && bytes)
        tpool_for(pool, (int64_t)((bytes + POPULATE_SLICE - 1) / POPULATE_SLICE), 1, TPOOL_DYNAMIC, run_populate, &c);
}

static void make_resident(graph_exec *e, tpool *pool)
{
    uint64_t start = clock_now_ns();
    size_t scratch = e->scratch_per_thread * (size_t)e->scratch_threads, u = e->winograd_floats * sizeof(float);
    populate(pool, e->memory.base, e->memory.size);
    populate(pool, e->scratch, scratch);
    populate(pool, e->winograd_u, u);
    LOG_DEBUG("graph: populated %.1f + %.1f + %.1f MiB in %.1f ms", e->memory.size / 1048576.0, scratch / 1048576.0,
              u / 1048576.0, (double)(clock_now_ns() - start) * 1e-6);
    e->resident = 1;
}

kiln_status graph_exec_run(graph_exec *e, tpool *pool)
{
    kiln_status st = ensure_scratch(e, tpool_size(pool));
    if (st != KILN_OK)
        return st;
    if (!e->resident)
        make_resident(e, pool);
    for (size_t i = 0; i < e->count; i++) {
        const graph_node *node = graph_node_at(e->g, (graph_id)i);
        if (node->op == GRAPH_OP_INPUT && !e->data[i])
            return err_set(KILN_ERR_INVALID, "graph input '%s' has no data bound", node->name);
    }
    memset(&e->nonfinite, 0, sizeof e->nonfinite);
    e->check_ns = 0;
    e->norm_next = 0;
    if (e->opt.check_finite && (st = ensure_finite_slots(e, tpool_size(pool))) != KILN_OK)
        return st;
    graph_profile *prof = e->profile;
    if (e->opt.alloc_as_you_go)
        release_all(e); /* the last run's outputs */
    for (size_t i = 0; i < e->count; i++) {
        uint64_t start = prof || e->trace ? clock_now_ns() : 0;
        if (e->opt.alloc_as_you_go && e->owned[i]) {
            size_t bytes = arena_round_up(tensor_nbytes(&graph_node_at(e->g, (graph_id)i)->out));
            if (posix_memalign((void **)&e->data[i], ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0) {
                e->data[i] = NULL;
                release_all(e);
                return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes for the output of '%s'", bytes,
                               graph_node_at(e->g, (graph_id)i)->name);
            }
            e->live_bytes += bytes;
            if (e->live_bytes > e->peak_bytes)
                e->peak_bytes = e->live_bytes;
        }
        st = run_node(e, (graph_id)i, pool);
        if (st != KILN_OK) {
            release_all(e);
            return st;
        }
        if (e->opt.check_finite && !e->nonfinite.found) {
            /* before the frees below, while its output is held; not
             * counted in the node's profiled time */
            uint64_t check_start = clock_now_ns();
            check_node_finite(e, (graph_id)i, pool);
            uint64_t check_ns = clock_now_ns() - check_start;
            e->check_ns += check_ns;
            if (prof)
                start += check_ns;
        }
        if (e->opt.alloc_as_you_go)
            for (graph_id j = e->free_head[i]; j != GRAPH_NONE; j = e->free_next[j]) {
                free(e->data[j]);
                e->data[j] = NULL;
                e->live_bytes -= arena_round_up(tensor_nbytes(&graph_node_at(e->g, j)->out));
            }
        if (prof || e->trace) {
            uint64_t end = clock_now_ns();
            graph_op op = graph_node_at(e->g, (graph_id)i)->op;
            if (prof) {
                prof->seconds[op] += (double)(end - start) * 1e-9;
                prof->flops[op] += graph_node_flops(e->g, (graph_id)i);
                prof->nodes[op]++;
            }
            if (e->trace && op != GRAPH_OP_INPUT && op != GRAPH_OP_WEIGHT)
                e->trace(e->trace_ctx, e->g, (graph_id)i, start, end);
        }
    }
    if (prof)
        prof->runs++;
    return KILN_OK;
}
