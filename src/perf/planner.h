/*
 * planner.h - how many images fit in one UNet batch, from the memory
 * plan's exact bytes instead of guessed constants.
 *
 * The bytes a generation needs are: the prepared weights (matrix weights
 * packed in the chosen precision, every other weight as f32), the largest
 * of the graphs' activations (text encoder, UNet at the batch, VAE decoder:
 * one tile's, with the blend buffers, when decoding in tiles; each with its
 * kernels' scratch: tiled attention, Winograd), as they run one after
 * another and each gives its pages back when done, the plain attention's
 * score matrix when asked for, and a fixed allowance for the process
 * itself. Each arena is the static
 * plan's peak (graph_plan_bytes), computed without allocating anything, so
 * a request that cannot fit is refused before the first large allocation.
 */
#ifndef KILN_PERF_PLANNER_H
#define KILN_PERF_PLANNER_H

#include <stddef.h>

#include "models/sd_model.h"

typedef struct batch_plan {
    int batch;           /* images per UNet evaluation (CFG runs twice as many rows) */
    int micro_batches;   /* evaluations of the sampler loop: ceil(images / batch) */
    size_t weight_bytes; /* prepared weights */
    size_t text_bytes, unet_bytes, decoder_bytes, encoder_bytes; /* arenas and scratch at this batch */
    size_t activation_bytes;     /* the largest of the four: they are never resident together */
    int vae_tiles;               /* tiles the VAE decodes an image in; 1: whole */
    size_t unet_bytes_per_image; /* what one more image in the batch costs */
    size_t overhead_bytes;       /* the process, tokenizer, plain attention's scratch */
    size_t total_bytes;
    size_t budget_bytes;
} batch_plan;

typedef struct plan_request {
    int width, height;   /* pixels */
    int images;
    int max_batch;       /* 0: as many as fit */
    int guided;          /* CFG: two UNet rows per image */
    int img2img;         /* the VAE encoder is alive too */
    kiln_dtype pack_dtype;
    int threads;
    int plain_attention; /* the plain path's score matrix is allowed for */
    int attention_tile;  /* the tiled kernel's query tile (graph_exec_options.attention_tile); 0: its default */
    int winograd;        /* Winograd convolutions' transformed weights and tile scratch are allowed for */
    int vae_tile;        /* decoding in tiles of this many pixels a side (models/vae_tiles.h); 0: whole */
    int nchw;            /* the graphs rewritten channels first (graph/layout.h), transposes and all */
    size_t budget_bytes; /* 0: no limit */
} plan_request;

/* Plans the largest batch (up to max_batch and images) whose total fits the
 * budget. Errors: KILN_ERR_INVALID when even one image does not fit, with
 * the bytes needed and what would make it fit (with the bytes tiled VAE
 * decoding would save, when it is off and would save some); the builders'
 * errors. Tiling is suggested, never turned on here: a request's
 * vae_tiling 0 cannot tell "off" from "not asked", and an ablation or
 * debug mode's reference asks for off and must get it. */
kiln_status planner_plan(const sd_model *m, const plan_request *r, batch_plan *out);

/* The default budget: 80% of the memory the OS reports available now
 * (MemAvailable), or 0 when it cannot be read. */
size_t planner_default_budget(void);

/* "4G", "2500M", "512k", "1073741824" -> bytes; 0 on a malformed size. */
size_t planner_parse_size(const char *text);

#endif
