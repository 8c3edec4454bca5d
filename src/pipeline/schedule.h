/*
 * schedule.h - SD's noise schedule and the step plans samplers follow.
 *
 * The training schedule is DDPM's scaled-linear betas (0.00085 to 0.012
 * over 1000 steps, linear in sqrt(beta)). Everything here is computed in
 * double, from the formulas (tests/data/golden/SAMPLERS.md, sections 1-2);
 * values become float only where they enter a float32 tensor operation.
 */
#ifndef KILN_PIPELINE_SCHEDULE_H
#define KILN_PIPELINE_SCHEDULE_H

#define SCHEDULE_STEPS 1000

typedef struct sd_schedule {
    int n; /* 1000 */
    double alphas_cumprod[SCHEDULE_STEPS];
    double sigmas[SCHEDULE_STEPS]; /* sqrt((1 - acp) / acp) */
    double log_sigmas[SCHEDULE_STEPS];
} sd_schedule;

void schedule_init(sd_schedule *s, double beta_start, double beta_end);
void schedule_init_sd(sd_schedule *s); /* 0.00085, 0.012 */

/* torch.linspace's scalar formula: counts up from a for the first half and
 * down from b for the second. */
double schedule_linspace(double a, double b, int n, int i);

/* k-diffusion's DiscreteSchedule: t in [0, 999] to sigma by interpolating
 * log-sigma between the neighbouring steps, and back. */
double schedule_t_to_sigma(const sd_schedule *s, double t);
double schedule_sigma_to_t(const sd_schedule *s, double sigma);

/* steps + 1 sigmas: t_to_sigma(linspace(999, 0, steps)) then 0 (get_sigmas). */
void schedule_sigmas(const sd_schedule *s, int steps, double *out);

/* Karras et al. 2022, eq. 5: steps sigmas from sigma_max to sigma_min
 * evenly spaced in sigma^(1/7), then 0; sigma_min/max are the schedule's own
 * (as A1111's "Karras" samplers use). */
void schedule_sigmas_karras(const sd_schedule *s, int steps, double *out);

/* LDM's make_ddim_timesteps("uniform") after A1111's step adjustment: the
 * number of timesteps written (ascending) into out, which holds up to
 * SCHEDULE_STEPS. It can exceed the steps asked for (30 runs 31). */
int schedule_ddim_timesteps(int steps, int *out);

/* diffusers' LCMScheduler.set_timesteps (original_inference_steps 50): the
 * steps timesteps in call order (descending). steps is 1..50. */
void schedule_lcm_timesteps(int steps, int *out);

#endif
