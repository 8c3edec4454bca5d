#include "models/model_graphs.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "graph/layout.h"

graph_id model_graph_build(const sd_model *m, graph *g, model_graph_kind kind, int batch, int h, int w, graph_id in[3])
{
    /* inputs a kind does not have stay GRAPH_NONE: callers map all three */
    in[0] = in[1] = in[2] = GRAPH_NONE;
    switch (kind) {
    case MODEL_GRAPH_TEXT: {
        model_build b = sd_model_builder(m, g, SD_CLIP_PREFIX);
        int64_t shape[2] = {batch, m->clip.positions};
        in[0] = graph_input(g, "input_ids", TENSOR_LAYOUT_PLAIN, 2, shape);
        return clip_text_build(&b, &m->clip, in[0]);
    }
    case MODEL_GRAPH_UNET: {
        const unet_config *c = &m->unet;
        model_build b = sd_model_builder(m, g, SD_UNET_PREFIX);
        int64_t x_shape[4] = {batch, h, w, c->in_channels}, t_shape[1] = {batch};
        int64_t ctx_shape[3] = {batch, m->clip.positions, c->context_dim};
        in[0] = graph_input(g, "x", TENSOR_LAYOUT_NHWC, 4, x_shape);
        in[1] = graph_input(g, "timesteps", TENSOR_LAYOUT_PLAIN, 1, t_shape);
        in[2] = graph_input(g, "context", TENSOR_LAYOUT_PLAIN, 3, ctx_shape);
        return unet_build(&b, c, in[0], in[1], in[2]);
    }
    case MODEL_GRAPH_DECODER: {
        model_build b = sd_model_builder(m, g, SD_VAE_PREFIX);
        int64_t shape[4] = {batch, h, w, m->vae.z_channels};
        in[0] = graph_input(g, "latent", TENSOR_LAYOUT_NHWC, 4, shape);
        return vae_build_decoder(&b, &m->vae, in[0]);
    }
    case MODEL_GRAPH_ENCODER: {
        model_build b = sd_model_builder(m, g, SD_VAE_PREFIX);
        int64_t shape[4] = {batch, h, w, m->vae.image_channels};
        in[0] = graph_input(g, "image", TENSOR_LAYOUT_NHWC, 4, shape);
        return vae_build_encoder(&b, &m->vae, in[0]);
    }
    default:
        return GRAPH_NONE;
    }
}

kiln_status model_graph_to_nchw(model_graph *c)
{
    kiln_status st = graph_status(c->g);
    if (st != KILN_OK)
        return st;
    graph *nchw = NULL;
    size_t n = graph_node_count(c->g);
    graph_id *map = malloc((n ? n : 1) * sizeof *map);
    if (!map)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the layout rewrite of %zu nodes", n);
    if ((st = graph_create(&nchw)) == KILN_OK && (st = graph_to_nchw(c->g, nchw, map)) == KILN_OK) {
        for (int i = 0; i < 3; i++)
            c->in[i] = c->in[i] == GRAPH_NONE ? GRAPH_NONE : map[c->in[i]];
        c->out = map[c->out];
        graph_destroy(c->g);
        c->g = nchw;
        nchw = NULL;
    }
    graph_destroy(nchw);
    free(map);
    return st;
}

void model_graph_clear(model_graph *c)
{
    graph_exec_destroy(c->exec);
    graph_destroy(c->g);
    memset(c, 0, sizeof *c);
}

kiln_status model_graph_get(const sd_model *m, weight_cache *cache, model_graph *c, model_graph_kind kind, int batch,
                            int h, int w)
{
    return model_graph_get_with(m, cache, c, kind, batch, h, w, NULL);
}

kiln_status model_graph_get_with(const sd_model *m, weight_cache *cache, model_graph *c, model_graph_kind kind,
                                 int batch, int h, int w, const graph_exec_options *o)
{
    graph_exec_options opt;
    if (o)
        opt = *o;
    else
        graph_exec_options_defaults(&opt);
    if (c->exec && c->kind == kind && c->batch == batch && c->h == h && c->w == w &&
        memcmp(graph_exec_get_options(c->exec), &opt, sizeof opt) == 0)
        return KILN_OK;
    model_graph_clear(c);
    kiln_status st = graph_create(&c->g);
    if (st != KILN_OK)
        return st;
    c->in[0] = c->in[1] = c->in[2] = GRAPH_NONE;
    c->out = model_graph_build(m, c->g, kind, batch, h, w, c->in);
    graph_mark_output(c->g, c->out);
    if (opt.nchw && kind != MODEL_GRAPH_TEXT && (st = model_graph_to_nchw(c)) != KILN_OK) {
        model_graph_clear(c);
        return st;
    }
    /* preparing reads weights from the mapped file: not from one cut short
     * since it was opened (a SIGBUS) or rewritten (mixed weights) */
    st = wstore_check_files(m->ws);
    if (st != KILN_OK) {
        model_graph_clear(c);
        return st;
    }
    st = graph_exec_create_with(c->g, cache, &opt, &c->exec);
    if (st != KILN_OK) {
        model_graph_clear(c);
        return st;
    }
    /* the cache now holds every weight this graph reads, in the kernels'
     * form: the file's pages need not stay resident */
    wstore_drop_file_pages(m->ws);
    c->kind = kind, c->batch = batch, c->h = h, c->w = w;
    return KILN_OK;
}
