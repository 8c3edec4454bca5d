/*
 * graph.h - the graph IR: what a model computes, built once per (model,
 * batch, height, width) and replayed every step.
 *
 * Builders append nodes and compute nothing. Each node has one op, up to
 * GRAPH_MAX_INPUTS input nodes, its parameters and the shape of its output;
 * shapes are checked as nodes are added. A builder does not check each call:
 * the first error sticks to the graph (graph_status), later calls return
 * GRAPH_NONE, and the caller checks once at the end.
 *
 * Activations are f32, NHWC for images ([batch, h, w, c]) and token-major
 * for sequences ([batch, tokens, c]); graph/layout.h rewrites a built graph
 * to hold its images NCHW ([batch, c, h, w]), the tensor's layout tag
 * saying which a node's output is. Weights are graph constants that point
 * at memory the model owns (F32, F16 or BF16, in PyTorch's layout); the
 * executor's weight cache prepares them for the kernels.
 */
#ifndef KILN_GRAPH_GRAPH_H
#define KILN_GRAPH_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "kiln.h"

#define GRAPH_MAX_INPUTS 4
#define GRAPH_NONE (-1)

typedef int32_t graph_id;

typedef enum graph_op {
    GRAPH_OP_INPUT,  /* data bound before each run */
    GRAPH_OP_WEIGHT, /* constant owned by the model */
    GRAPH_OP_VIEW,   /* the input's data under another shape, no copy */

    GRAPH_OP_LINEAR,           /* x [.., k] . w[n, k]^T + b */
    GRAPH_OP_CONV2D,           /* NHWC (or NCHW) x, w [out, in, k, k] as PyTorch stores it ([out, in] for 1x1), + b */
    GRAPH_OP_GROUP_NORM,       /* optionally followed by SiLU */
    GRAPH_OP_LAYER_NORM,       /* over the last dim */
    GRAPH_OP_ATTENTION,        /* softmax(q k^T s) v, heads interleaved in channels */
    GRAPH_OP_ADD,              /* same shapes */
    GRAPH_OP_ADD_CHANNEL_BIAS, /* [b, .., c] + [b, c] */
    GRAPH_OP_SILU,
    GRAPH_OP_GELU,
    GRAPH_OP_QUICK_GELU,
    GRAPH_OP_GEGLU,            /* [.., 2n] -> [.., n] */
    GRAPH_OP_CONCAT_CHANNELS,  /* along the last dim */
    GRAPH_OP_UPSAMPLE_NEAREST, /* NHWC, x2 */
    GRAPH_OP_TIMESTEP_EMBED,   /* [b] timesteps -> [b, dim] sinusoids */
    GRAPH_OP_EMBED_TOKENS,     /* [b, t] ids (as f32) -> table rows + positions */
    GRAPH_OP_TRANSPOSE,        /* an image NHWC <-> NCHW, copied: the output's layout says which way */
    GRAPH_OP_COUNT
} graph_op;

typedef union graph_params {
    struct {
        int kernel, stride, pad_top, pad_left, pad_bottom, pad_right;
    } conv;
    struct {
        int groups, silu;
        float eps;
    } norm;
    struct {
        int heads, causal;
        float scale;
    } attention;
    struct {
        int dim;
        float max_period;
    } timestep;
} graph_params;

typedef struct graph_node {
    graph_op op;
    int n_inputs;
    graph_id inputs[GRAPH_MAX_INPUTS];
    graph_params params;
    tensor out;         /* shape, layout, dtype; data is set by the executor */
    const char *name;   /* "input_blocks.1.1/attn1.to_q" for traces and errors; owned by the graph */
} graph_node;

typedef struct graph graph;

/* Errors: KILN_ERR_NOMEM. */
kiln_status graph_create(graph **out);
void graph_destroy(graph *g);

/* KILN_OK, or the first error met while building. */
kiln_status graph_status(const graph *g);

/* Makes a builder's own failure (say, a missing weight) the graph's sticky
 * error, keeping the message already set. The first error wins. */
void graph_poison(graph *g, kiln_status status);

size_t graph_node_count(const graph *g);
const graph_node *graph_node_at(const graph *g, graph_id id);

/* Names given to the nodes created from now on are "<scope>/<name>". The
 * string is copied. */
void graph_set_scope(graph *g, const char *scope);

/* Outputs are kept alive to the end of a run and readable after it. */
void graph_mark_output(graph *g, graph_id id);
int graph_is_output(const graph *g, graph_id id);

/* ---- sources ---- */
graph_id graph_input(graph *g, const char *name, tensor_layout layout, int ndim, const int64_t *shape);
/* A constant (F32, F16 or BF16): t->data must stay valid while the graph
 * and its executors live. */
graph_id graph_weight(graph *g, const char *name, const tensor *t);
/* The same data under another shape with the same element count. */
graph_id graph_view(graph *g, graph_id x, tensor_layout layout, int ndim, const int64_t *shape);

/* ---- ops (name: the last part of the node's name, e.g. "to_q") ---- */
graph_id graph_linear(graph *g, const char *name, graph_id x, graph_id w, graph_id b);
graph_id graph_conv2d(graph *g, const char *name, graph_id x, graph_id w, graph_id b, int stride, int pad_top,
                      int pad_left, int pad_bottom, int pad_right);
graph_id graph_group_norm(graph *g, const char *name, graph_id x, graph_id gamma, graph_id beta, int groups,
                          float eps, int silu);
graph_id graph_layer_norm(graph *g, const char *name, graph_id x, graph_id gamma, graph_id beta, float eps);
graph_id graph_attention(graph *g, const char *name, graph_id q, graph_id k, graph_id v, int heads, int causal);
graph_id graph_add(graph *g, const char *name, graph_id a, graph_id b);
graph_id graph_add_channel_bias(graph *g, const char *name, graph_id x, graph_id bias);
graph_id graph_silu(graph *g, const char *name, graph_id x);
graph_id graph_gelu(graph *g, const char *name, graph_id x);
graph_id graph_quick_gelu(graph *g, const char *name, graph_id x);
graph_id graph_geglu(graph *g, const char *name, graph_id x);
graph_id graph_concat_channels(graph *g, const char *name, graph_id a, graph_id b);
graph_id graph_upsample_nearest(graph *g, const char *name, graph_id x);
/* Nearest upsampling to out_h x out_w (PyTorch's interpolate(size=...):
 * source index floor(dst * in / out)); what a UNet does when an odd
 * feature map went down, so the way up meets its skip connection. */
graph_id graph_upsample_nearest_to(graph *g, const char *name, graph_id x, int64_t out_h, int64_t out_w);
graph_id graph_timestep_embed(graph *g, const char *name, graph_id t, int dim, float max_period);
/* ids [b, t] (token ids stored as f32, exact below 2^24), table [vocab, c],
 * positions [max_t, c] -> [b, t, c]. */
graph_id graph_embed_tokens(graph *g, const char *name, graph_id ids, graph_id table, graph_id positions);

/* An image [b, h, w, c] NHWC to [b, c, h, w] NCHW, or the way back: a
 * copy with the other layout. */
graph_id graph_transpose(graph *g, const char *name, graph_id x, tensor_layout to);

/* For passes that rewrite a graph into another: appends a node like proto
 * (op, params, its full name, a weight's data) with the given inputs
 * (proto->n_inputs of them, ids in g) and output tensor out (data ignored
 * except for weights, where proto's is kept). Shapes are the caller's to
 * get right. Returns the id or GRAPH_NONE (the error sticks to g). */
graph_id graph_append_like(graph *g, const graph_node *proto, const graph_id *inputs, const tensor *out);

const char *graph_op_name(graph_op op);

/* Floating-point operations a node performs (a multiply-add counts 2):
 * the matrix products of linear, conv2d and attention; 0 for the rest. */
double graph_node_flops(const graph *g, graph_id id);

#endif
