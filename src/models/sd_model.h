/*
 * sd_model.h - a Stable Diffusion 1.x/2.x checkpoint ready to build graphs
 * from: its weights, the three architectures read from them, its tokenizer
 * and the settings it wants.
 *
 * Two layouts load through the same code: the original single file
 * (model.diffusion_model.*, first_stage_model.*,
 * cond_stage_model.transformer.text_model.*) and the diffusers folder
 * (unet/, vae/, text_encoder/, tokenizer/), whose names are mapped to the
 * original ones.
 */
#ifndef KILN_MODELS_SD_MODEL_H
#define KILN_MODELS_SD_MODEL_H

#include "models/clip_text.h"
#include "models/tokenizer.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/weight_store.h"

#define SD_UNET_PREFIX "model.diffusion_model."
#define SD_VAE_PREFIX "first_stage_model."
#define SD_CLIP_PREFIX "cond_stage_model.transformer.text_model."

typedef struct sd_model {
    char *path;
    int is_folder;
    weight_store *ws;
    unet_config unet;
    vae_config vae;
    clip_text_config clip;
    tok_tokenizer *tokenizer;

    /* from the metadata where present, else SD 1.x's */
    int native_resolution;   /* kiln.resolution; 512 */
    int v_prediction;        /* kiln.unet.prediction_type == "v_prediction" */
    int zero_terminal_snr;   /* kiln.scheduler.rescale_betas_zero_snr == "true" */
    float latent_scale;      /* kiln.vae.scale_factor; 0.18215 */
    int default_steps;       /* kiln.default.steps; 20 */
    float default_cfg;       /* kiln.default.cfg_scale; 7.5 */
    char default_sampler[32]; /* kiln.default.sampler; "euler_a" */
    char name[64];           /* file name without extension */
} sd_model;

/* Loads path (a .safetensors file or a diffusers folder). The tokenizer is
 * read from tokenizer_dir if given, else from a tokenizer/ folder beside
 * the file (or inside the folder). Errors name the file or tensor at fault. */
kiln_status sd_model_load(const char *path, const char *tokenizer_dir, sd_model **out);
void sd_model_destroy(sd_model *m);

/* A weight_release_fn (graph/weight_cache.h) with the model as ctx: a
 * tensor packed into a cache no longer needs its pages of the file
 * resident, and letting each go as soon as it is packed keeps the peak at
 * the packed weights, not the packed weights plus the file. */
void sd_model_release_file_range(void *model, const void *data, size_t bytes);

/* Builders reading this model's weights for each component. */
model_build sd_model_builder(const sd_model *m, graph *g, const char *prefix);

#endif
