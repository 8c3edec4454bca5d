/*
 * model_graphs.h - the graphs a Stable Diffusion model runs, built for one
 * shape and kept: the text encoder, the UNet, the VAE decoder and encoder.
 * A graph is rebuilt (and its memory replanned) only when its shape
 * changes; its weights come prepared from the model's weight cache.
 */
#ifndef KILN_MODELS_MODEL_GRAPHS_H
#define KILN_MODELS_MODEL_GRAPHS_H

#include "graph/executor.h"
#include "models/sd_model.h"

typedef enum model_graph_kind {
    MODEL_GRAPH_TEXT,    /* input_ids [b, positions] (f32) -> hidden states [b, positions, width] */
    MODEL_GRAPH_UNET,    /* x [b, h, w, c], timesteps [b], context [b, positions, ctx] -> eps [b, h, w, c] */
    MODEL_GRAPH_DECODER, /* latent [b, h, w, z] (unscaled) -> image [b, h*f, w*f, 3] */
    MODEL_GRAPH_ENCODER, /* image [b, h, w, 3] -> moments [b, h/f, w/f, 2z] */
    MODEL_GRAPH_KIND_COUNT
} model_graph_kind;

typedef struct model_graph {
    graph *g;
    graph_exec *exec;
    model_graph_kind kind;
    int batch, h, w;        /* the shape it was built for (latent size for the UNet and decoder) */
    graph_id in[3], out;
} model_graph;

/* Adds the graph of that kind and shape to g (inputs in in[], GRAPH_NONE
 * for those the kind lacks; the output returned); nothing is prepared or
 * allocated: also how plans are made. */
graph_id model_graph_build(const sd_model *m, graph *g, model_graph_kind kind, int batch, int h, int w, graph_id in[3]);

/* Makes c the graph of that kind and shape (building it if c holds another).
 * Errors: the builders' and the executor's (missing tensors, memory). */
kiln_status model_graph_get(const sd_model *m, weight_cache *cache, model_graph *c, model_graph_kind kind, int batch,
                            int h, int w);
/* The same, run with the executor options o (NULL: the defaults); a graph
 * held with other options gets a new executor. */
kiln_status model_graph_get_with(const sd_model *m, weight_cache *cache, model_graph *c, model_graph_kind kind,
                                 int batch, int h, int w, const graph_exec_options *o);
/* Replaces c's graph (built, no executor yet) by its channels-first form
 * (graph/layout.h), its inputs and output renumbered: what
 * graph_exec_options.nchw asks of model_graph_get_with. Errors: the
 * graph's own, KILN_ERR_NOMEM. */
kiln_status model_graph_to_nchw(model_graph *c);
void model_graph_clear(model_graph *c);

#endif
