#include "pipeline/schedule.h"

#include <math.h>

double schedule_linspace(double a, double b, int n, int i)
{
    if (n == 1)
        return a;
    double step = (b - a) / (double)(n - 1);
    return i < n / 2 ? a + step * (double)i : b - step * (double)(n - 1 - i);
}

static void schedule_set_sigmas(sd_schedule *s)
{
    for (int i = 0; i < s->n; i++) {
        double acp = s->alphas_cumprod[i];
        s->sigmas[i] = sqrt((1.0 - acp) / acp);
        s->log_sigmas[i] = log(s->sigmas[i]);
    }
}

void schedule_init(sd_schedule *s, double beta_start, double beta_end)
{
    s->n = SCHEDULE_STEPS;
    double a = sqrt(beta_start), b = sqrt(beta_end), cumprod = 1.0;
    for (int i = 0; i < SCHEDULE_STEPS; i++) {
        double root = schedule_linspace(a, b, SCHEDULE_STEPS, i);
        cumprod *= 1.0 - root * root;
        s->alphas_cumprod[i] = cumprod;
    }
    schedule_set_sigmas(s);
}

void schedule_init_sd(sd_schedule *s)
{
    schedule_init(s, 0.00085, 0.012);
}

void schedule_rescale_zero_terminal_snr(sd_schedule *s)
{
    double first = sqrt(s->alphas_cumprod[0]), last = sqrt(s->alphas_cumprod[s->n - 1]);
    double gain = first / (first - last);
    for (int i = 0; i < s->n; i++) {
        double root = (sqrt(s->alphas_cumprod[i]) - last) * gain;
        s->alphas_cumprod[i] = root * root;
    }
    s->alphas_cumprod[s->n - 1] = SCHEDULE_ZERO_SNR_LAST;
    schedule_set_sigmas(s);
}

double schedule_t_to_sigma(const sd_schedule *s, double t)
{
    if (t <= 0.0)
        return s->sigmas[0];
    if (t >= (double)(s->n - 1))
        return s->sigmas[s->n - 1];
    int low = (int)floor(t), high = (int)ceil(t);
    double w = t - (double)low;
    return exp((1.0 - w) * s->log_sigmas[low] + w * s->log_sigmas[high]);
}

double schedule_sigma_to_t(const sd_schedule *s, double sigma)
{
    double log_sigma = log(sigma);
    /* the largest step whose log-sigma is at or below ours, kept one short
     * of the end so that there is a step above it */
    int low = 0;
    for (int i = 0; i < s->n; i++)
        if (log_sigma - s->log_sigmas[i] >= 0.0)
            low = i;
    if (low > s->n - 2)
        low = s->n - 2;
    double lo = s->log_sigmas[low], hi = s->log_sigmas[low + 1];
    double w = (lo - log_sigma) / (lo - hi);
    if (w < 0.0)
        w = 0.0;
    if (w > 1.0)
        w = 1.0;
    return (1.0 - w) * (double)low + w * (double)(low + 1);
}

void schedule_sigmas(const sd_schedule *s, int steps, double *out)
{
    for (int i = 0; i < steps; i++)
        out[i] = schedule_t_to_sigma(s, schedule_linspace((double)(s->n - 1), 0.0, steps, i));
    out[steps] = 0.0;
}

void schedule_sigmas_karras(const sd_schedule *s, int steps, double *out)
{
    const double rho = 7.0;
    double min_inv = pow(s->sigmas[0], 1.0 / rho), max_inv = pow(s->sigmas[s->n - 1], 1.0 / rho);
    for (int i = 0; i < steps; i++) {
        double ramp = schedule_linspace(0.0, 1.0, steps, i);
        out[i] = pow(max_inv + ramp * (min_inv - max_inv), rho);
    }
    out[steps] = 0.0;
}

int schedule_ddim_timesteps(int steps, int *out)
{
    /* A1111's adjust_steps_if_invalid: a step count whose stride divides
     * 999 would put the last timestep at 1000 */
    if (999 % (SCHEDULE_STEPS / steps) == 0)
        steps = 999 / (SCHEDULE_STEPS / steps) + 1;
    int c = SCHEDULE_STEPS / steps, n = 0;
    for (int t = 0; t < SCHEDULE_STEPS; t += c)
        out[n++] = t + 1;
    return n;
}

void schedule_lcm_timesteps(int steps, int *out)
{
    const int original = 50, k = SCHEDULE_STEPS / original;
    for (int i = 0; i < steps; i++) {
        /* origin reversed: 999, 979, ..., 19; index floor(linspace(0, 50, steps, endpoint=False)) */
        int index = (int)floor((double)i * (double)original / (double)steps);
        out[i] = (original - index) * k - 1;
    }
}
