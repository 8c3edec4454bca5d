/*
 * layout.c - the channels-first rewrite (layout.h): one walk over the
 * nodes in order, each copied with its images NCHW where its op reads and
 * writes them so, transposes made on demand where a layout meets an op
 * that needs the other.
 */
#include "graph/layout.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"

static int is_image(const tensor *t)
{
    return t->ndim == 4 && t->layout == TENSOR_LAYOUT_NHWC;
}

/* A linear layer on an image: the matrix of a 1x1 convolution on NHWC
 * data (models/build.c, mb_conv1x1), which NCHW data needs as the
 * convolution. */
static int is_pointwise_conv(const graph *g, const graph_node *node)
{
    return node->op == GRAPH_OP_LINEAR && is_image(&graph_node_at(g, node->inputs[0])->out);
}

/* Ops with an NCHW kernel whose output and image inputs go channels first. */
static int goes_nchw(const graph *g, const graph_node *node)
{
    if (node->op == GRAPH_OP_CONV2D || is_pointwise_conv(g, node))
        return 1;
    if (!is_image(&node->out))
        return 0;
    switch (node->op) {
    case GRAPH_OP_ADD:
    case GRAPH_OP_CONCAT_CHANNELS:
        return is_image(&graph_node_at(g, node->inputs[0])->out) && is_image(&graph_node_at(g, node->inputs[1])->out);
    case GRAPH_OP_GROUP_NORM:
    case GRAPH_OP_SILU:
    case GRAPH_OP_ADD_CHANNEL_BIAS:
    case GRAPH_OP_UPSAMPLE_NEAREST:
        return is_image(&graph_node_at(g, node->inputs[0])->out);
    default:
        return 0;
    }
}

typedef struct rewrite {
    const graph *src;
    graph *dst;
    graph_id *orig, *nchw; /* per src node: dst's node in src's layout, and NCHW */
} rewrite;

/* dst's node with src node id's value in the layout asked, transposing (once)
 * when only the other exists. */
static graph_id value_in(rewrite *r, graph_id id, int nchw)
{
    graph_id *want = nchw ? &r->nchw[id] : &r->orig[id], have = nchw ? r->orig[id] : r->nchw[id];
    if (*want == GRAPH_NONE) {
        char name[512];
        snprintf(name, sizeof name, "%s/%s", graph_node_at(r->src, id)->name, nchw ? "to_nchw" : "to_nhwc");
        *want = graph_transpose(r->dst, name, have, nchw ? TENSOR_LAYOUT_NCHW : TENSOR_LAYOUT_NHWC);
    }
    return *want;
}

kiln_status graph_to_nchw(const graph *src, graph *dst, graph_id *map)
{
    size_t n = graph_node_count(src);
    rewrite r = {.src = src, .dst = dst, .orig = map, .nchw = malloc((n ? n : 1) * sizeof(graph_id))};
    if (!r.nchw)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the layout rewrite of %zu nodes", n);
    for (size_t i = 0; i < n; i++)
        map[i] = r.nchw[i] = GRAPH_NONE;
    for (size_t i = 0; i < n && graph_status(dst) == KILN_OK; i++) {
        const graph_node *node = graph_node_at(src, (graph_id)i);
        graph_node proto = *node;
        int nchw = goes_nchw(src, node);
        graph_id in[GRAPH_MAX_INPUTS];
        for (int k = 0; k < node->n_inputs; k++) {
            graph_id j = node->inputs[k];
            in[k] = j == GRAPH_NONE ? GRAPH_NONE : value_in(&r, j, nchw && is_image(&graph_node_at(src, j)->out));
        }
        tensor out = node->out;
        if (nchw) {
            out = tensor_image(KILN_DTYPE_F32, TENSOR_LAYOUT_NCHW, out.shape[0], out.shape[3], out.shape[1],
                               out.shape[2], NULL);
            if (is_pointwise_conv(src, node)) {
                proto.op = GRAPH_OP_CONV2D;
                proto.params.conv.kernel = proto.params.conv.stride = 1;
                proto.params.conv.pad_top = proto.params.conv.pad_left = 0;
                proto.params.conv.pad_bottom = proto.params.conv.pad_right = 0;
            }
        }
        graph_id id = graph_append_like(dst, &proto, in, &out);
        (nchw ? r.nchw : r.orig)[i] = id;
    }
    for (size_t i = 0; i < n && graph_status(dst) == KILN_OK; i++)
        if (graph_is_output(src, (graph_id)i))
            graph_mark_output(dst, value_in(&r, (graph_id)i, 0));
    free(r.nchw);
    return graph_status(dst);
}

size_t graph_transpose_count(const graph *g)
{
    size_t count = 0;
    for (size_t i = 0; i < graph_node_count(g); i++)
        count += graph_node_at(g, (graph_id)i)->op == GRAPH_OP_TRANSPOSE;
    return count;
}
