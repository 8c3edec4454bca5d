/*
 * samplers.h - the denoising loops: Euler, Euler ancestral, DPM++ 2M (with
 * Karras sigmas as an option), DDIM and LCM.
 *
 * Euler, Euler ancestral and DPM++ 2M follow k-diffusion (what AUTOMATIC1111
 * runs): sigmas from schedule_sigmas(), latents start as noise * sigma_max,
 * the model sees x / sqrt(sigma^2 + 1) at the timestep sigma maps to. DDIM
 * is LDM's sampler (uniform timesteps, eta 0) and LCM is diffusers'
 * LCMScheduler; both work in the alpha parameterisation and start from
 * plain unit noise.
 *
 * A sampler works element-wise on a whole batch of latents; the model
 * callback (guidance, batching) and the noise callback (which image gets
 * which generator) are the pipeline's.
 */
#ifndef KILN_PIPELINE_SAMPLERS_H
#define KILN_PIPELINE_SAMPLERS_H

#include <stddef.h>

#include "kiln.h"
#include "pipeline/schedule.h"

typedef enum sampler_kind {
    SAMPLER_EULER,
    SAMPLER_EULER_A,
    SAMPLER_DPMPP_2M,
    SAMPLER_DDIM,
    SAMPLER_LCM,
    SAMPLER_KIND_COUNT
} sampler_kind;

typedef struct sampler_model {
    void *ctx;
    /* The model's output (eps, or v when v_prediction) for input x_in of n
     * values at timestep t, guidance already applied. */
    kiln_status (*predict)(void *ctx, const float *x_in, float t, float *out);
    /* n standard-normal values for the noise a sampler adds at step `step`. */
    kiln_status (*noise)(void *ctx, int step, float *out);
    /* Called after each step; a non-zero return stops with KILN_ERR_CANCELLED. */
    int (*progress)(void *ctx, int step, int steps);
    int v_prediction;
} sampler_model;

typedef struct sampler_settings {
    sampler_kind kind;
    int steps;   /* as asked; DDIM may run one more (see schedule_ddim_timesteps) */
    int karras;  /* Karras sigmas (k-diffusion samplers only) */
    /* img2img: 0 < strength <= 1 denoises only the last part of the
     * schedule; 1 (and txt2img) runs all of it. */
    float strength;
} sampler_settings;

/* "euler", "euler_a", "dpmpp_2m", "ddim", "lcm"; also parses A1111 names
 * ("Euler a", "DPM++ 2M", "DPM++ 2M Karras", ...). Returns 0 or -1. */
int sampler_parse(const char *name, sampler_kind *kind, int *karras);
const char *sampler_name(sampler_kind kind);
/* The name AUTOMATIC1111 shows, for the PNG parameters ("Euler a", "DPM++ 2M Karras"). */
const char *sampler_a1111_name(sampler_kind kind, int karras);

/* What a run will do: the model calls in order, with the sigma (k-diffusion
 * samplers) or the integer timestep and alphas (DDIM, LCM) of each. */
typedef struct sampler_plan {
    int calls;           /* model evaluations */
    double *sigmas;      /* k-diffusion: calls + 1 values, the last 0 */
    int *timesteps;      /* DDIM, LCM: per call, in call order */
    double *alphas;      /* DDIM, LCM: alphas_cumprod at the call's timestep */
    double *alphas_prev; /* ... and at the one it steps to */
} sampler_plan;

/* Errors: KILN_ERR_INVALID (steps out of range: 1..1000, LCM 1..50),
 * KILN_ERR_NOMEM. */
kiln_status sampler_plan_create(const sd_schedule *sched, const sampler_settings *s, sampler_plan *plan);
void sampler_plan_free(sampler_plan *plan);

/* Prepares the starting latents in x (n values): from noise for txt2img
 * (init == NULL), or from the encoded init image plus noise for img2img.
 * noise holds n standard-normal values. */
void sampler_start(const sampler_plan *plan, const sampler_settings *s, const float *init, const float *noise,
                   float *x, size_t n);

/* Runs the loop on x in place. Errors: the model's, KILN_ERR_CANCELLED,
 * KILN_ERR_NOMEM. */
kiln_status sampler_run(const sd_schedule *sched, const sampler_settings *s, const sampler_plan *plan,
                        const sampler_model *model, float *x, size_t n);

#endif
