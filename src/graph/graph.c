#include "graph/graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

struct graph {
    graph_node *nodes;
    size_t count, capacity;
    unsigned char *is_output;
    char *scope;
    kiln_status status;
};

static const char *const op_names[GRAPH_OP_COUNT] = {
    [GRAPH_OP_INPUT] = "input",
    [GRAPH_OP_WEIGHT] = "weight",
    [GRAPH_OP_VIEW] = "view",
    [GRAPH_OP_LINEAR] = "linear",
    [GRAPH_OP_CONV2D] = "conv2d",
    [GRAPH_OP_GROUP_NORM] = "group_norm",
    [GRAPH_OP_LAYER_NORM] = "layer_norm",
    [GRAPH_OP_ATTENTION] = "attention",
    [GRAPH_OP_ADD] = "add",
    [GRAPH_OP_ADD_CHANNEL_BIAS] = "add_channel_bias",
    [GRAPH_OP_SILU] = "silu",
    [GRAPH_OP_GELU] = "gelu",
    [GRAPH_OP_QUICK_GELU] = "quick_gelu",
    [GRAPH_OP_GEGLU] = "geglu",
    [GRAPH_OP_CONCAT_CHANNELS] = "concat_channels",
    [GRAPH_OP_UPSAMPLE_NEAREST] = "upsample_nearest",
    [GRAPH_OP_TIMESTEP_EMBED] = "timestep_embed",
    [GRAPH_OP_EMBED_TOKENS] = "embed_tokens",
    [GRAPH_OP_TRANSPOSE] = "transpose",
};
_Static_assert(sizeof op_names / sizeof op_names[0] == GRAPH_OP_COUNT, "one name per op");

const char *graph_op_name(graph_op op)
{
    return (unsigned)op < GRAPH_OP_COUNT ? op_names[op] : "unknown";
}

kiln_status graph_create(graph **out)
{
    graph *g = calloc(1, sizeof *g);
    if (!g)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a graph");
    *out = g;
    return KILN_OK;
}

void graph_destroy(graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->count; i++)
        free((char *)g->nodes[i].name);
    free(g->nodes);
    free(g->is_output);
    free(g->scope);
    free(g);
}

kiln_status graph_status(const graph *g)
{
    return g->status;
}

void graph_poison(graph *g, kiln_status status)
{
    if (g->status == KILN_OK)
        g->status = status;
}

size_t graph_node_count(const graph *g)
{
    return g->count;
}

const graph_node *graph_node_at(const graph *g, graph_id id)
{
    return id >= 0 && (size_t)id < g->count ? &g->nodes[id] : NULL;
}

void graph_set_scope(graph *g, const char *scope)
{
    free(g->scope);
    g->scope = scope ? strdup(scope) : NULL;
    if (scope && !g->scope && g->status == KILN_OK)
        g->status = err_set(KILN_ERR_NOMEM, "cannot allocate a graph scope name");
}

void graph_mark_output(graph *g, graph_id id)
{
    if (g->status == KILN_OK && id >= 0 && (size_t)id < g->count)
        g->is_output[id] = 1;
}

int graph_is_output(const graph *g, graph_id id)
{
    return id >= 0 && (size_t)id < g->count && g->is_output[id];
}

/* Records the first failure; every later builder call becomes a no-op. */
static graph_id fail(graph *g, kiln_status code, const char *name, const char *fmt, const char *detail)
{
    if (g->status == KILN_OK)
        g->status = err_set(code, "graph node '%s%s%s': %s%s", g->scope ? g->scope : "", g->scope ? "/" : "",
                            name, fmt, detail ? detail : "");
    return GRAPH_NONE;
}

static const graph_node *input_node(graph *g, graph_id id)
{
    return id >= 0 && (size_t)id < g->count ? &g->nodes[id] : NULL;
}

/* Appends a node; inputs must exist (GRAPH_NONE is allowed for optional ones
 * after the first). Returns its id or GRAPH_NONE. */
static graph_id add_node(graph *g, graph_op op, const char *name, int n_inputs, const graph_id *inputs,
                         const tensor *out)
{
    if (g->status != KILN_OK)
        return GRAPH_NONE;
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i] != GRAPH_NONE && !input_node(g, inputs[i]))
            return fail(g, KILN_ERR_INVALID, name, "input does not exist", NULL);
    if (g->count == g->capacity) {
        size_t capacity = g->capacity ? g->capacity * 2 : 256;
        graph_node *nodes = realloc(g->nodes, capacity * sizeof *nodes);
        unsigned char *is_output = realloc(g->is_output, capacity);
        if (nodes)
            g->nodes = nodes;
        if (is_output)
            g->is_output = is_output;
        if (!nodes || !is_output)
            return fail(g, KILN_ERR_NOMEM, name, "cannot grow the graph", NULL);
        g->capacity = capacity;
    }
    size_t len = (g->scope ? strlen(g->scope) + 1 : 0) + strlen(name) + 1;
    char *full = malloc(len);
    if (!full)
        return fail(g, KILN_ERR_NOMEM, name, "cannot allocate a node name", NULL);
    snprintf(full, len, "%s%s%s", g->scope ? g->scope : "", g->scope ? "/" : "", name);

    graph_node *node = &g->nodes[g->count];
    memset(node, 0, sizeof *node);
    node->op = op;
    node->n_inputs = n_inputs;
    for (int i = 0; i < GRAPH_MAX_INPUTS; i++)
        node->inputs[i] = i < n_inputs ? inputs[i] : GRAPH_NONE;
    node->out = *out;
    node->out.data = NULL;
    node->name = full;
    g->is_output[g->count] = 0;
    return (graph_id)g->count++;
}

static const tensor *shape_of(graph *g, graph_id id)
{
    const graph_node *n = input_node(g, id);
    return n ? &n->out : NULL;
}

static int64_t last_dim(const tensor *t)
{
    return t->ndim ? t->shape[t->ndim - 1] : 1;
}

static const char *shape_text(const tensor *t, char *buf, size_t size)
{
    return tensor_shape_str(t->shape, t->ndim, buf, size);
}

/* Fails unless every listed input exists (the sticky error covers inputs
 * that were themselves the result of a failed call). */
#define REQUIRE_INPUTS(g, name, ...)                                                                     \
    do {                                                                                                 \
        if ((g)->status != KILN_OK)                                                                      \
            return GRAPH_NONE;                                                                           \
        graph_id ids_[] = {__VA_ARGS__};                                                                 \
        for (size_t i_ = 0; i_ < sizeof ids_ / sizeof ids_[0]; i_++)                                     \
            if (!shape_of((g), ids_[i_]))                                                                \
                return fail((g), KILN_ERR_INVALID, (name), "missing input", NULL);                       \
    } while (0)

graph_id graph_input(graph *g, const char *name, tensor_layout layout, int ndim, const int64_t *shape)
{
    tensor t;
    if (g->status != KILN_OK)
        return GRAPH_NONE;
    if (tensor_init(&t, KILN_DTYPE_F32, layout, ndim, shape, NULL) != KILN_OK)
        return fail(g, KILN_ERR_SHAPE, name, kiln_last_error(), NULL);
    return add_node(g, GRAPH_OP_INPUT, name, 0, NULL, &t);
}

graph_id graph_weight(graph *g, const char *name, const tensor *t)
{
    if (g->status != KILN_OK)
        return GRAPH_NONE;
    if ((t->dtype != KILN_DTYPE_F32 && t->dtype != KILN_DTYPE_F16 && t->dtype != KILN_DTYPE_BF16) || !t->data)
        return fail(g, KILN_ERR_UNSUPPORTED, name, "weights must be F32, F16 or BF16 with data", NULL);
    graph_id id = add_node(g, GRAPH_OP_WEIGHT, name, 0, NULL, t);
    if (id != GRAPH_NONE)
        g->nodes[id].out.data = t->data;
    return id;
}

graph_id graph_view(graph *g, graph_id x, tensor_layout layout, int ndim, const int64_t *shape)
{
    REQUIRE_INPUTS(g, "view", x);
    tensor t;
    if (tensor_init(&t, KILN_DTYPE_F32, layout, ndim, shape, NULL) != KILN_OK)
        return fail(g, KILN_ERR_SHAPE, "view", kiln_last_error(), NULL);
    const tensor *src = shape_of(g, x);
    if (tensor_numel(&t) != tensor_numel(src)) {
        char a[96], b[96];
        char detail[220];
        snprintf(detail, sizeof detail, "%s to %s", shape_text(src, a, sizeof a), shape_text(&t, b, sizeof b));
        return fail(g, KILN_ERR_SHAPE, "view", "element counts differ: ", detail);
    }
    return add_node(g, GRAPH_OP_VIEW, "view", 1, &x, &t);
}

graph_id graph_linear(graph *g, const char *name, graph_id x, graph_id w, graph_id b)
{
    REQUIRE_INPUTS(g, name, x, w);
    const tensor *xt = shape_of(g, x), *wt = shape_of(g, w);
    char a[96], c[96], detail[220];
    if (wt->ndim != 2 || wt->shape[1] != last_dim(xt)) {
        snprintf(detail, sizeof detail, "x %s, weight %s (expected [n, %lld])", shape_text(xt, a, sizeof a),
                 shape_text(wt, c, sizeof c), (long long)last_dim(xt));
        return fail(g, KILN_ERR_SHAPE, name, "weight does not fit: ", detail);
    }
    if (b != GRAPH_NONE) {
        const tensor *bt = shape_of(g, b);
        if (!bt || tensor_numel(bt) != wt->shape[0])
            return fail(g, KILN_ERR_SHAPE, name, "bias length differs from the weight's rows", NULL);
    }
    tensor out = *xt;
    out.shape[out.ndim - 1] = wt->shape[0];
    graph_id in[3] = {x, w, b};
    return add_node(g, GRAPH_OP_LINEAR, name, 3, in, &out);
}

graph_id graph_conv2d(graph *g, const char *name, graph_id x, graph_id w, graph_id b, int stride, int pad_top,
                      int pad_left, int pad_bottom, int pad_right)
{
    REQUIRE_INPUTS(g, name, x, w);
    const tensor *xt = shape_of(g, x), *wt = shape_of(g, w);
    char a[96], c[96], detail[220];
    if (xt->layout != TENSOR_LAYOUT_NHWC || wt->ndim != 4 || wt->shape[2] != wt->shape[3] ||
        wt->shape[1] != xt->shape[3] || stride < 1) {
        snprintf(detail, sizeof detail, "x %s (%s), weight %s (expected [out, %lld, k, k])",
                 shape_text(xt, a, sizeof a), tensor_layout_name(xt->layout), shape_text(wt, c, sizeof c),
                 (long long)(xt->ndim == 4 ? xt->shape[3] : -1));
        return fail(g, KILN_ERR_SHAPE, name, "convolution does not fit: ", detail);
    }
    int k = (int)wt->shape[2];
    int64_t out_h = (xt->shape[1] + pad_top + pad_bottom - k) / stride + 1;
    int64_t out_w = (xt->shape[2] + pad_left + pad_right - k) / stride + 1;
    if (out_h < 1 || out_w < 1)
        return fail(g, KILN_ERR_SHAPE, name, "input smaller than the kernel", NULL);
    if (b != GRAPH_NONE && tensor_numel(shape_of(g, b)) != wt->shape[0])
        return fail(g, KILN_ERR_SHAPE, name, "bias length differs from the output channels", NULL);
    tensor out = tensor_image(KILN_DTYPE_F32, TENSOR_LAYOUT_NHWC, xt->shape[0], wt->shape[0], out_h, out_w, NULL);
    graph_id in[3] = {x, w, b};
    graph_id id = add_node(g, GRAPH_OP_CONV2D, name, 3, in, &out);
    if (id != GRAPH_NONE) {
        graph_params *p = &g->nodes[id].params;
        p->conv.kernel = k;
        p->conv.stride = stride;
        p->conv.pad_top = pad_top;
        p->conv.pad_left = pad_left;
        p->conv.pad_bottom = pad_bottom;
        p->conv.pad_right = pad_right;
    }
    return id;
}

graph_id graph_group_norm(graph *g, const char *name, graph_id x, graph_id gamma, graph_id beta, int groups,
                          float eps, int silu)
{
    REQUIRE_INPUTS(g, name, x, gamma, beta);
    const tensor *xt = shape_of(g, x);
    int64_t c = last_dim(xt);
    if (xt->ndim < 2 || groups < 1 || c % groups != 0)
        return fail(g, KILN_ERR_SHAPE, name, "channels must divide into the groups", NULL);
    if (tensor_numel(shape_of(g, gamma)) != c || tensor_numel(shape_of(g, beta)) != c)
        return fail(g, KILN_ERR_SHAPE, name, "scale and shift must have one value per channel", NULL);
    graph_id in[3] = {x, gamma, beta};
    graph_id id = add_node(g, GRAPH_OP_GROUP_NORM, name, 3, in, xt);
    if (id != GRAPH_NONE) {
        g->nodes[id].params.norm.groups = groups;
        g->nodes[id].params.norm.eps = eps;
        g->nodes[id].params.norm.silu = silu;
    }
    return id;
}

graph_id graph_layer_norm(graph *g, const char *name, graph_id x, graph_id gamma, graph_id beta, float eps)
{
    REQUIRE_INPUTS(g, name, x, gamma, beta);
    const tensor *xt = shape_of(g, x);
    int64_t c = last_dim(xt);
    if (tensor_numel(shape_of(g, gamma)) != c || tensor_numel(shape_of(g, beta)) != c)
        return fail(g, KILN_ERR_SHAPE, name, "scale and shift must have one value per channel", NULL);
    graph_id in[3] = {x, gamma, beta};
    graph_id id = add_node(g, GRAPH_OP_LAYER_NORM, name, 3, in, xt);
    if (id != GRAPH_NONE)
        g->nodes[id].params.norm.eps = eps;
    return id;
}

graph_id graph_attention(graph *g, const char *name, graph_id q, graph_id k, graph_id v, int heads, int causal)
{
    REQUIRE_INPUTS(g, name, q, k, v);
    const tensor *qt = shape_of(g, q), *kt = shape_of(g, k), *vt = shape_of(g, v);
    if (qt->ndim != 3 || kt->ndim != 3 || vt->ndim != 3 || qt->shape[0] != kt->shape[0] ||
        kt->shape[0] != vt->shape[0] || kt->shape[1] != vt->shape[1] || qt->shape[2] != kt->shape[2] ||
        kt->shape[2] != vt->shape[2])
        return fail(g, KILN_ERR_SHAPE, name, "q, k, v must be [b, tokens, channels] with matching sizes", NULL);
    if (heads < 1 || qt->shape[2] % heads != 0)
        return fail(g, KILN_ERR_SHAPE, name, "channels must divide into the heads", NULL);
    graph_id in[3] = {q, k, v};
    graph_id id = add_node(g, GRAPH_OP_ATTENTION, name, 3, in, qt);
    if (id != GRAPH_NONE) {
        graph_params *p = &g->nodes[id].params;
        p->attention.heads = heads;
        p->attention.causal = causal;
        p->attention.scale = 1.0f / sqrtf((float)(qt->shape[2] / heads));
    }
    return id;
}

static graph_id unary(graph *g, graph_op op, const char *name, graph_id x)
{
    REQUIRE_INPUTS(g, name, x);
    return add_node(g, op, name, 1, &x, shape_of(g, x));
}

graph_id graph_silu(graph *g, const char *name, graph_id x)
{
    return unary(g, GRAPH_OP_SILU, name, x);
}

graph_id graph_gelu(graph *g, const char *name, graph_id x)
{
    return unary(g, GRAPH_OP_GELU, name, x);
}

graph_id graph_quick_gelu(graph *g, const char *name, graph_id x)
{
    return unary(g, GRAPH_OP_QUICK_GELU, name, x);
}

graph_id graph_add(graph *g, const char *name, graph_id a, graph_id b)
{
    REQUIRE_INPUTS(g, name, a, b);
    const tensor *at = shape_of(g, a), *bt = shape_of(g, b);
    if (tensor_numel(at) != tensor_numel(bt) || last_dim(at) != last_dim(bt)) {
        char x[96], y[96], detail[220];
        snprintf(detail, sizeof detail, "%s and %s", shape_text(at, x, sizeof x), shape_text(bt, y, sizeof y));
        return fail(g, KILN_ERR_SHAPE, name, "shapes differ: ", detail);
    }
    graph_id in[2] = {a, b};
    return add_node(g, GRAPH_OP_ADD, name, 2, in, at);
}

graph_id graph_add_channel_bias(graph *g, const char *name, graph_id x, graph_id bias)
{
    REQUIRE_INPUTS(g, name, x, bias);
    const tensor *xt = shape_of(g, x), *bt = shape_of(g, bias);
    if (xt->ndim < 2 || bt->ndim != 2 || bt->shape[0] != xt->shape[0] || bt->shape[1] != last_dim(xt))
        return fail(g, KILN_ERR_SHAPE, name, "bias must be [batch, channels] of x", NULL);
    graph_id in[2] = {x, bias};
    return add_node(g, GRAPH_OP_ADD_CHANNEL_BIAS, name, 2, in, xt);
}

graph_id graph_geglu(graph *g, const char *name, graph_id x)
{
    REQUIRE_INPUTS(g, name, x);
    const tensor *xt = shape_of(g, x);
    if (last_dim(xt) % 2 != 0)
        return fail(g, KILN_ERR_SHAPE, name, "GEGLU needs an even last dim", NULL);
    tensor out = *xt;
    out.shape[out.ndim - 1] /= 2;
    return add_node(g, GRAPH_OP_GEGLU, name, 1, &x, &out);
}

graph_id graph_concat_channels(graph *g, const char *name, graph_id a, graph_id b)
{
    REQUIRE_INPUTS(g, name, a, b);
    const tensor *at = shape_of(g, a), *bt = shape_of(g, b);
    int same = at->ndim == bt->ndim && at->layout == bt->layout;
    for (int i = 0; same && i + 1 < at->ndim; i++)
        same = at->shape[i] == bt->shape[i];
    if (!same)
        return fail(g, KILN_ERR_SHAPE, name, "inputs differ in more than their channels", NULL);
    tensor out = *at;
    out.shape[out.ndim - 1] += last_dim(bt);
    graph_id in[2] = {a, b};
    return add_node(g, GRAPH_OP_CONCAT_CHANNELS, name, 2, in, &out);
}

graph_id graph_upsample_nearest_to(graph *g, const char *name, graph_id x, int64_t out_h, int64_t out_w)
{
    REQUIRE_INPUTS(g, name, x);
    const tensor *xt = shape_of(g, x);
    if (xt->layout != TENSOR_LAYOUT_NHWC)
        return fail(g, KILN_ERR_SHAPE, name, "upsampling needs an NHWC image", NULL);
    if (out_h < xt->shape[1] || out_w < xt->shape[2])
        return fail(g, KILN_ERR_SHAPE, name, "upsampling to a smaller size", NULL);
    tensor out = *xt;
    out.shape[1] = out_h;
    out.shape[2] = out_w;
    return add_node(g, GRAPH_OP_UPSAMPLE_NEAREST, name, 1, &x, &out);
}

graph_id graph_upsample_nearest(graph *g, const char *name, graph_id x)
{
    const tensor *xt = shape_of(g, x);
    if (g->status != KILN_OK || !xt)
        return graph_upsample_nearest_to(g, name, x, 0, 0);
    return graph_upsample_nearest_to(g, name, x, 2 * xt->shape[1], 2 * xt->shape[2]);
}

graph_id graph_timestep_embed(graph *g, const char *name, graph_id t, int dim, float max_period)
{
    REQUIRE_INPUTS(g, name, t);
    const tensor *tt = shape_of(g, t);
    if (tt->ndim != 1 || dim < 2 || dim % 2 != 0)
        return fail(g, KILN_ERR_SHAPE, name, "timesteps must be [batch] and the dim even", NULL);
    int64_t shape[2] = {tt->shape[0], dim};
    tensor out;
    tensor_init(&out, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 2, shape, NULL);
    graph_id id = add_node(g, GRAPH_OP_TIMESTEP_EMBED, name, 1, &t, &out);
    if (id != GRAPH_NONE) {
        g->nodes[id].params.timestep.dim = dim;
        g->nodes[id].params.timestep.max_period = max_period;
    }
    return id;
}

graph_id graph_embed_tokens(graph *g, const char *name, graph_id ids, graph_id table, graph_id positions)
{
    REQUIRE_INPUTS(g, name, ids, table, positions);
    const tensor *it = shape_of(g, ids), *tt = shape_of(g, table), *pt = shape_of(g, positions);
    if (it->ndim != 2 || tt->ndim != 2 || pt->ndim != 2 || tt->shape[1] != pt->shape[1] ||
        it->shape[1] > pt->shape[0])
        return fail(g, KILN_ERR_SHAPE, name, "ids [b, t], table [vocab, c], positions [>= t, c] expected", NULL);
    int64_t shape[3] = {it->shape[0], it->shape[1], tt->shape[1]};
    tensor out;
    tensor_init(&out, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 3, shape, NULL);
    graph_id in[3] = {ids, table, positions};
    return add_node(g, GRAPH_OP_EMBED_TOKENS, name, 3, in, &out);
}

graph_id graph_transpose(graph *g, const char *name, graph_id x, tensor_layout to)
{
    REQUIRE_INPUTS(g, name, x);
    const tensor *xt = shape_of(g, x);
    tensor_layout from = to == TENSOR_LAYOUT_NCHW ? TENSOR_LAYOUT_NHWC : TENSOR_LAYOUT_NCHW;
    if ((to != TENSOR_LAYOUT_NCHW && to != TENSOR_LAYOUT_NHWC) || xt->ndim != 4 || xt->layout != from)
        return fail(g, KILN_ERR_SHAPE, name, "a transpose takes an NHWC image to NCHW or back", NULL);
    tensor out = tensor_image(KILN_DTYPE_F32, to, tensor_batch(xt), tensor_channels(xt), tensor_height(xt),
                              tensor_width(xt), NULL);
    return add_node(g, GRAPH_OP_TRANSPOSE, name, 1, &x, &out);
}

graph_id graph_append_like(graph *g, const graph_node *proto, const graph_id *inputs, const tensor *out)
{
    if (g->status != KILN_OK)
        return GRAPH_NONE;
    /* the full name as it is: no scope put before it again */
    char *scope = g->scope;
    g->scope = NULL;
    graph_id id = add_node(g, proto->op, proto->name, proto->n_inputs, inputs, out);
    g->scope = scope;
    if (id != GRAPH_NONE) {
        g->nodes[id].params = proto->params;
        if (proto->op == GRAPH_OP_WEIGHT)
            g->nodes[id].out.data = proto->out.data;
    }
    return id;
}

double graph_node_flops(const graph *g, graph_id id)
{
    const graph_node *n = graph_node_at(g, id);
    if (!n)
        return 0;
    const tensor *out = &n->out;
    switch (n->op) {
    case GRAPH_OP_LINEAR: {
        const tensor *w = &graph_node_at(g, n->inputs[1])->out;
        return 2.0 * (double)(tensor_numel(out) / out->shape[out->ndim - 1]) * (double)w->shape[0] * (double)w->shape[1];
    }
    case GRAPH_OP_CONV2D: {
        const tensor *w = &graph_node_at(g, n->inputs[1])->out;
        return 2.0 * (double)tensor_numel(out) * (double)(w->shape[1] * n->params.conv.kernel * n->params.conv.kernel);
    }
    case GRAPH_OP_ATTENTION: {
        const tensor *q = &graph_node_at(g, n->inputs[0])->out, *k = &graph_node_at(g, n->inputs[1])->out;
        /* q k^T and p v: two products of q_len x kv_len x channels */
        return 4.0 * (double)q->shape[0] * (double)q->shape[1] * (double)k->shape[1] * (double)q->shape[2];
    }
    default:
        return 0;
    }
}
