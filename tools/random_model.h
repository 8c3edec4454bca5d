/*
 * random_model.h - writing Stable Diffusion checkpoints with random
 * weights, for tests and benchmarks: any size of the real architecture, in
 * the single-file or the diffusers layout.
 *
 * The tensor list comes from kiln's own builders run against a recording
 * weight store, so a written model has exactly the tensors kiln (and the
 * original checkpoints) name. Values are seeded and reproducible.
 */
#ifndef KILN_TOOLS_RANDOM_MODEL_H
#define KILN_TOOLS_RANDOM_MODEL_H

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"

typedef struct random_model_spec {
    const char *name; /* preset name */
    unet_config unet;
    vae_config vae;
    clip_text_config clip;
    int resolution;   /* native size, written to the metadata */
} random_model_spec;

/* "sd15" (the full SD 1.5 architecture, 1.07 G parameters) or "tiny" (the
 * same structure, ~1 M parameters, 64 px, a 1,000-token vocabulary).
 * Returns 0 and fills *out, or -1 for an unknown name. */
int random_model_preset(const char *name, random_model_spec *out);

typedef struct random_model_options {
    int diffusers;        /* write a diffusers folder instead of one file */
    kiln_dtype dtype;     /* KILN_DTYPE_F32, F16 or BF16 */
    uint64_t seed;
    const char *tokenizer_from; /* CLIP vocab.json + merges.txt to copy (cut
                                   to the model's vocabulary) into tokenizer/ */
} random_model_options;

/* Writes the model to path (a .safetensors file, or a folder for diffusers;
 * the tokenizer goes beside the file or inside the folder). Errors name the
 * file at fault. */
kiln_status random_model_write(const random_model_spec *spec, const random_model_options *o, const char *path);

#endif
