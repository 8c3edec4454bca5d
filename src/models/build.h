/*
 * build.h - what the model builders share: turning module names into
 * weight nodes and the common layers (linear, conv, norms) into graph ops.
 *
 * Errors stick to the graph (graph_poison), like the graph's own, so a
 * builder reads as the forward pass it describes and checks once at the end.
 */
#ifndef KILN_MODELS_BUILD_H
#define KILN_MODELS_BUILD_H

#include "graph/graph.h"
#include "models/weight_store.h"

typedef struct model_build {
    graph *g;
    weight_store *ws;
    const char *prefix; /* put before every module name: "model.diffusion_model." */
    /* Optional: told the node that holds each traced module's output
     * ("input_blocks.3", "decoder.mid.attn_1"), for parity tests and debug
     * dumps; the hook may mark it as a graph output. */
    void (*trace)(void *ctx, const char *module, graph_id id);
    void *trace_ctx;
} model_build;

/* Reports id as the output of module to the trace hook, if any; returns id. */
graph_id mb_trace(model_build *b, const char *module, graph_id id);

/* prefix + module + "." + part, e.g. "first_stage_model." "decoder.conv_in" "weight" */
void mb_name(const model_build *b, const char *module, const char *part, char *buf, size_t size);

/* 1 when the tensor prefix + module + "." + part exists. */
int mb_has(const model_build *b, const char *module, const char *part);

/* The shape of that tensor: its ndim, and dims into shape (may be NULL);
 * 0 when absent. */
int mb_shape(const model_build *b, const char *module, const char *part, int64_t shape[8]);

/* A weight node for module.part with the expected shape. */
graph_id mb_param(model_build *b, const char *module, const char *part, weight_kind kind, int ndim,
                  const int64_t *shape);

/* Layers. module names the PyTorch module ("input_blocks.1.0.in_layers.2"),
 * whose .weight and .bias are read. */
graph_id mb_linear(model_build *b, graph_id x, const char *module, int64_t out, int64_t in, int bias);
graph_id mb_conv(model_build *b, graph_id x, const char *module, int64_t out, int64_t in, int kernel, int stride,
                 int pad);
/* A 1x1 convolution stored as [out, in, 1, 1] or a linear [out, in]: the same
 * matrix on NHWC data. */
graph_id mb_conv1x1(model_build *b, graph_id x, const char *module, int64_t out, int64_t in);
graph_id mb_group_norm(model_build *b, graph_id x, const char *module, int64_t c, int groups, float eps, int silu);
graph_id mb_layer_norm(model_build *b, graph_id x, const char *module, int64_t c, float eps);

/* NHWC [b, h, w, c] <-> tokens [b, h*w, c], no copy. */
graph_id mb_to_tokens(model_build *b, graph_id x);
graph_id mb_to_image(model_build *b, graph_id tokens, int64_t h, int64_t w);

/* A metadata integer, or fallback when absent or not a number. */
int mb_meta_int(const model_build *b, const char *key, int fallback);

#endif
