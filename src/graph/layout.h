/*
 * layout.h - the channels-first rewrite of a built graph: what the layout
 * switch (kiln_optimizations.layout nchw) runs, to measure what channels
 * last buys against the layout PyTorch uses by default.
 *
 * Images the layout-aware ops make and read (conv2d, group norm, add, add
 * channel bias, SiLU, concat, upsampling) become NCHW; a linear layer on an
 * image (a 1x1 convolution kept as a matrix on NHWC data) becomes the 1x1
 * convolution it is. Where an op that knows only NHWC or tokens (views to
 * tokens, linear, layer norm, attention) meets an NCHW image, a transpose
 * node copies it back, as PyTorch's permute + reshape does around a
 * transformer block: one pair per transformer block or VAE attention, one
 * after each image input and one before each image output, which stay NHWC
 * for the caller.
 */
#ifndef KILN_GRAPH_LAYOUT_H
#define KILN_GRAPH_LAYOUT_H

#include "graph/graph.h"

/* Appends the NCHW form of src (complete, without error) to dst, an empty
 * graph. map (graph_node_count(src) entries) gets for each node of src the
 * node of dst that holds its value in src's layout, or GRAPH_NONE where
 * dst holds it only NCHW; inputs and outputs always have one, and dst's
 * outputs are those of src's. src is unchanged. Errors: dst's (sticky) and
 * KILN_ERR_NOMEM. */
kiln_status graph_to_nchw(const graph *src, graph *dst, graph_id *map);

/* Transpose nodes of g: what the rewrite added. */
size_t graph_transpose_count(const graph *g);

#endif
