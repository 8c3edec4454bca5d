#include "perf/planner.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/kernels.h"
#include "models/model_graphs.h"
#include "models/vae_tiles.h"

/* The process without its tensors: code, libc, the tokenizer's tables,
 * the images, the PNG and JSON buffers of a request. Measured (kiln
 * generate, peak RSS less the prepared weights and the largest graph's
 * arena and scratch): 5 MB for the tiny test model at 512x512 x 8 images,
 * 12 MB for the shipped model at 512x512; SD 1.5 at 512x512 in f16 peaked
 * below its weights and activations alone (pages not yet touched). The
 * margin covers allocator slack. */
#define PROCESS_OVERHEAD_BYTES ((size_t)24 << 20)

#define MAX_WEIGHTS 8192

typedef struct weight_tally {
    const void *seen[MAX_WEIGHTS];
    size_t count, bytes;
} weight_tally;

static int already_counted(weight_tally *t, const void *data)
{
    for (size_t i = 0; i < t->count; i++)
        if (t->seen[i] == data)
            return 1;
    if (t->count < MAX_WEIGHTS)
        t->seen[t->count++] = data;
    return 0;
}

/* Adds the prepared size of every weight the graph reads, once each. */
static void tally_weights(const graph *g, kiln_dtype pack_dtype, int nr, weight_tally *t)
{
    for (size_t i = 0; i < graph_node_count(g); i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        for (int k = 0; k < node->n_inputs; k++) {
            const graph_node *w = graph_node_at(g, node->inputs[k]);
            if (!w || w->op != GRAPH_OP_WEIGHT || already_counted(t, w->out.data))
                continue;
            if (k == 1 && (node->op == GRAPH_OP_LINEAR || node->op == GRAPH_OP_CONV2D)) {
                int64_t taps = w->out.ndim == 4 ? w->out.shape[2] * w->out.shape[3] : 1;
                t->bytes += kernels_packed_elements(nr, w->out.shape[0], w->out.shape[1], taps) *
                            kiln_dtype_size(pack_dtype);
            } else if (k == 1 && node->op == GRAPH_OP_EMBED_TOKENS) {
                t->bytes += tensor_nbytes(&w->out); /* kept in the file's dtype */
            } else {
                t->bytes += (size_t)tensor_numel(&w->out) * sizeof(float);
            }
        }
    }
}

/* The plain attention path's block for the graph's largest attention:
 * one head's score matrix and its packed k and v^T (executor.c). */
static size_t plain_attention_bytes(const graph *g, int nr)
{
    size_t most = 0;
    for (size_t i = 0; i < graph_node_count(g); i++) {
        const graph_node *node = graph_node_at(g, (graph_id)i);
        if (node->op != GRAPH_OP_ATTENTION)
            continue;
        const tensor *q = &graph_node_at(g, node->inputs[0])->out, *k = &graph_node_at(g, node->inputs[1])->out;
        int64_t d = q->shape[2] / node->params.attention.heads;
        size_t bytes = ((size_t)(q->shape[1] * k->shape[1]) + kernels_packed_elements(nr, k->shape[1], d, 1) +
                        kernels_packed_elements(nr, d, k->shape[1], 1) + 48) *
                       sizeof(float);
        if (bytes > most)
            most = bytes;
    }
    return most;
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Builds a graph (weights are not prepared) for its plan's bytes as r
 * asks it run: channels-first (r->nchw), with its kernels' scratch
 * (graph_kernel_scratch_bytes: tiled attention, Winograd, the
 * channels-first gather) for r->threads; *plain (may be NULL) is raised to
 * its plain attention block. */
static kiln_status plan_graph(const sd_model *m, model_graph_kind kind, int batch, int h, int w,
                              const plan_request *r, int nr, weight_tally *t, size_t *bytes, size_t *plain)
{
    graph *g;
    kiln_status st = graph_create(&g);
    if (st != KILN_OK)
        return st;
    graph_id in[3];
    graph_id out = model_graph_build(m, g, kind, batch, h, w, in);
    graph_mark_output(g, out);
    if (r->nchw && kind != MODEL_GRAPH_TEXT) {
        /* the transposes the rewrite adds hold activations too */
        model_graph mg = {.g = g, .kind = kind, .in = {in[0], in[1], in[2]}, .out = out};
        st = model_graph_to_nchw(&mg);
        g = mg.g;
        if (st != KILN_OK) {
            graph_destroy(g);
            return st;
        }
    }
    st = graph_plan_bytes(g, bytes);
    if (st == KILN_OK) {
        graph_exec_options o = {.plain_attention = r->plain_attention, .attention_tile = r->attention_tile,
                                .direct_conv = !r->winograd};
        *bytes += graph_kernel_scratch_bytes(g, kernels_get(), &o, r->threads > 0 ? r->threads : 1);
    }
    if (st == KILN_OK && t)
        tally_weights(g, r->pack_dtype, nr, t);
    if (st == KILN_OK && plain)
        *plain = max_size(*plain, plain_attention_bytes(g, nr));
    graph_destroy(g);
    return st;
}

/* The VAE decoder's bytes when decoding in tiles of tile_px (0: whole):
 * the plan of its graph at one tile's shape (with its kernel scratch), and
 * the blend buffers beside it; *tiles (may be NULL) is the tile count. */
static kiln_status plan_decoder(const sd_model *m, int lh, int lw, int tile_px, const plan_request *r, int nr,
                                weight_tally *t, size_t *bytes, size_t *plain, int *tiles)
{
    vae_tiles vt;
    vae_tiles_layout(lh, lw, vae_factor(&m->vae), tile_px, &vt);
    size_t arena = 0;
    kiln_status st = plan_graph(m, MODEL_GRAPH_DECODER, 1, vt.tile_h, vt.tile_w, r, nr, t, &arena, plain);
    if (st != KILN_OK)
        return st;
    *bytes = arena + vae_tiles_buffer_bytes(&vt, m->vae.z_channels, m->vae.image_channels);
    if (tiles)
        *tiles = vae_tiles_count(&vt);
    return KILN_OK;
}

static double mb(size_t bytes)
{
    return (double)bytes / 1048576.0;
}

kiln_status planner_plan(const sd_model *m, const plan_request *r, batch_plan *out)
{
    batch_plan p;
    memset(&p, 0, sizeof p);
    p.budget_bytes = r->budget_bytes;
    int factor = vae_factor(&m->vae), lh = r->height / factor, lw = r->width / factor;
    int nr = kernels_get()->gemm_nr, rows_per_image = r->guided ? 2 : 1;
    weight_tally *tally = calloc(1, sizeof *tally);
    if (!tally)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the planner");

    size_t unet1 = 0, unet2 = 0, plain = 0;
    size_t *pl = r->plain_attention ? &plain : NULL;
    kiln_status st = plan_graph(m, MODEL_GRAPH_TEXT, 2, 0, 0, r, nr, tally, &p.text_bytes, pl);
    if (st == KILN_OK)
        st = plan_graph(m, MODEL_GRAPH_UNET, rows_per_image, lh, lw, r, nr, tally, &unet1, pl);
    if (st == KILN_OK)
        st = plan_graph(m, MODEL_GRAPH_UNET, 2 * rows_per_image, lh, lw, r, nr, NULL, &unet2, NULL);
    if (st == KILN_OK)
        st = plan_decoder(m, lh, lw, r->vae_tile, r, nr, tally, &p.decoder_bytes, pl, &p.vae_tiles);
    if (st == KILN_OK && r->img2img)
        st = plan_graph(m, MODEL_GRAPH_ENCODER, 1, r->height, r->width, r, nr, tally, &p.encoder_bytes, pl);
    p.weight_bytes = tally->bytes;
    free(tally);
    if (st != KILN_OK)
        return st;

    /* the UNet's arena grows linearly with the batch: its plan at two sizes
     * gives the slope (the kernel scratch, the same at both, cancels) */
    p.unet_bytes_per_image = unet2 > unet1 ? unet2 - unet1 : unet1;
    size_t fixed_activation = unet1 - (unet2 > unet1 ? unet2 - unet1 : 0);
    /* the plain attention's score matrix and packed operands (one head at
     * a time); the tiled kernel's scratch is in each graph's bytes */
    p.overhead_bytes = PROCESS_OVERHEAD_BYTES + plain;
    /* The graphs run one after another and each gives its pages back when
     * it is done (graph_exec_release_pages): the text encoder, then per
     * micro-batch the UNet's steps, then the decoder image by image (the
     * encoder first, for img2img). So the activations' peak is the largest
     * of them, not their sum; the UNet's grows with the batch. */
    size_t others = max_size(max_size(p.text_bytes, p.decoder_bytes), p.encoder_bytes);
    size_t base = p.weight_bytes + p.overhead_bytes;

    int limit = r->images;
    if (r->max_batch > 0 && r->max_batch < limit)
        limit = r->max_batch;
    if (limit < 1)
        limit = 1;
    int batch = 1;
    if (r->budget_bytes) {
        if (base + max_size(others, fixed_activation + p.unet_bytes_per_image) > r->budget_bytes) {
            size_t need = base + max_size(others, fixed_activation + p.unet_bytes_per_image);
            double f32_extra = r->pack_dtype != KILN_DTYPE_F32 ? 0.0 : mb(p.weight_bytes) / 2.0;
            /* what tiles of the default size would save: the decoder of a
             * large image is often the largest arena of all */
            char tiling[160] = "";
            size_t tiled = 0;
            int tiles = 1;
            size_t rest = max_size(max_size(p.text_bytes, p.encoder_bytes), fixed_activation + p.unet_bytes_per_image);
            if (!r->vae_tile &&
                plan_decoder(m, lh, lw, VAE_TILE_DEFAULT, r, nr, NULL, &tiled, NULL, &tiles) == KILN_OK &&
                tiles > 1 && tiled < p.decoder_bytes && p.decoder_bytes > rest) {
                size_t saved = p.decoder_bytes - max_size(tiled, rest);
                snprintf(tiling, sizeof tiling,
                         "vae_tiling on (--vae-tiling on) would save %.0f MB (the VAE decoder's %.0f MB down to "
                         "%.0f)%s; ",
                         mb(saved), mb(p.decoder_bytes), mb(tiled), need - saved <= r->budget_bytes ? ", enough to fit" : "");
            }
            return err_set(KILN_ERR_INVALID,
                           "max_memory: one %dx%d image needs %.0f MB (weights %.0f, process %.0f, and the "
                           "largest of the activations of the UNet %.0f, the VAE decoder %.0f, the text encoder "
                           "%.0f%s) but the budget is %.0f MB; %s%s%s",
                           r->width, r->height, mb(need), mb(p.weight_bytes), mb(p.overhead_bytes),
                           mb(p.unet_bytes_per_image + fixed_activation), mb(p.decoder_bytes), mb(p.text_bytes),
                           r->img2img ? ", the VAE encoder" : "", mb(r->budget_bytes), tiling,
                           f32_extra > 0 ? "precision f16 or bf16 would save about half the weights' bytes; " : "",
                           r->vae_tile ? "a smaller vae_tile, width or height shrinks the activations"
                                       : "a smaller width and height shrink the activations");
        }
        while (batch < limit &&
               base + max_size(others, fixed_activation + (size_t)(batch + 1) * p.unet_bytes_per_image) <=
                   r->budget_bytes)
            batch++;
    } else {
        batch = limit;
    }
    p.batch = batch;
    p.micro_batches = (r->images + batch - 1) / batch;
    p.unet_bytes = fixed_activation + (size_t)batch * p.unet_bytes_per_image;
    p.activation_bytes = max_size(others, p.unet_bytes);
    p.total_bytes = base + p.activation_bytes;
    *out = p;
    return KILN_OK;
}

size_t planner_default_budget(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (size_t)(kb * 1024ull / 10ull * 8ull);
}

size_t planner_parse_size(const char *text)
{
    if (!text || !isdigit((unsigned char)*text))
        return 0;
    char *end;
    double v = strtod(text, &end);
    double unit = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        unit = 1024.0, end++;
        break;
    case 'M':
        unit = 1048576.0, end++;
        break;
    case 'G':
        unit = 1073741824.0, end++;
        break;
    case 'T':
        unit = 1099511627776.0, end++;
        break;
    default:
        break;
    }
    if (toupper((unsigned char)*end) == 'B' || toupper((unsigned char)*end) == 'I')
        end++;
    if (*end == 'B')
        end++;
    if (*end != '\0' || !(v > 0) || v * unit > 1.8e19)
        return 0;
    return (size_t)(v * unit);
}
