/*
 * diffusers.h - the names of the diffusers folder layout, from the
 * original checkpoint's, following diffusers' own conversion scripts
 * (convert_original_stable_diffusion_to_diffusers.py).
 *
 * Each map takes a canonical name (with its original prefix) and writes the
 * name the component's file uses, or returns 0 for names of other
 * components. They look at the file for what the names do not say (blocks
 * per level, levels).
 */
#ifndef KILN_MODELS_DIFFUSERS_H
#define KILN_MODELS_DIFFUSERS_H

#include <stddef.h>

#include "kiln.h"

int diffusers_unet_name(const kiln_weights *w, const char *canonical, char *buf, size_t size);
int diffusers_vae_name(const kiln_weights *w, const char *canonical, char *buf, size_t size);

/* The same from the counts the names need, for writing a folder. w may be
 * NULL (the VAE's attention then gets the current diffusers names). */
typedef struct diffusers_layout {
    int unet_blocks_per_level; /* layers_per_block */
    int vae_levels;            /* len(block_out_channels) */
} diffusers_layout;

int diffusers_unet_name_in(const diffusers_layout *layout, const char *canonical, char *buf, size_t size);
int diffusers_vae_name_in(const diffusers_layout *layout, const kiln_weights *w, const char *canonical, char *buf,
                          size_t size);
int diffusers_text_encoder_name(const kiln_weights *w, const char *canonical, char *buf, size_t size);

/* Reads what the folder's config.json files say that the weights do not
 * (heads, activation, prediction type, latent scale, native size) into the
 * store's metadata under kiln's keys ("kiln.unet.num_heads", ...). Missing
 * files are fine (SD 1.x's values apply); malformed ones are
 * KILN_ERR_FORMAT naming the file and line. */
typedef struct weight_store weight_store;
kiln_status diffusers_read_configs(const char *dir, weight_store *ws);

#endif
