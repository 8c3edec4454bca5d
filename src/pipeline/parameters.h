/*
 * parameters.h - the "parameters" text that AUTOMATIC1111's web UI writes
 * into its PNGs and other SD tools read back:
 *
 *   a red circle on a blue background
 *   Negative prompt: blurry
 *   Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5
 */
#ifndef KILN_PIPELINE_PARAMETERS_H
#define KILN_PIPELINE_PARAMETERS_H

#include <stdint.h>

#include "kiln.h"
#include "pipeline/samplers.h"

typedef struct image_parameters {
    const char *prompt, *negative_prompt;
    int steps;
    sampler_kind sampler;
    int karras;
    float cfg_scale;
    uint64_t seed;
    int width, height;
    const char *model_hash; /* 10 hex digits, or NULL */
    const char *model_name;
    float denoising_strength; /* img2img only: > 0 */
    const char *rng;          /* NULL: the default (torch-cpu) */
} image_parameters;

/* A malloc'd string. Errors: KILN_ERR_NOMEM. */
kiln_status parameters_format(const image_parameters *p, char **out);

/* The first 10 hex digits of the file's SHA-256 (AUTOMATIC1111's "Model
 * hash") into out[11]. Errors: KILN_ERR_IO naming the file. */
kiln_status parameters_model_hash(const char *path, char out[11]);

#endif
