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

/* The last alphas_cumprod of a schedule rescaled to zero terminal SNR: 2^-24
 * rather than 0, as diffusers' Euler scheduler keeps it, so that sigma_max
 * stays finite (4096) for every sampler. */
#define SCHEDULE_ZERO_SNR_LAST (1.0 / 16777216.0)

/* Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are
 * Flawed" (diffusers' rescale_betas_zero_snr): shifts and scales
 * sqrt(alphas_cumprod) so the first step keeps its value and the last one has
 * no signal left, then recomputes the sigmas. SD's own schedule leaves about
 * 7% of the picture in its last step, from which a model learns to read the
 * layout instead of the prompt; a model trained with this rescale says so in
 * its metadata (kiln.scheduler.rescale_betas_zero_snr). */
void schedule_rescale_zero_terminal_snr(sd_schedule *s);

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
