/*
 * samplers.c - the denoising loops. Each cites what it implements; the
 * k-diffusion ones share the denoiser wrapper below.
 */
#include "pipeline/samplers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"

static const char *const names[SAMPLER_KIND_COUNT] = {"euler", "euler_a", "dpmpp_2m", "ddim", "lcm"};
static const char *const a1111_names[SAMPLER_KIND_COUNT] = {"Euler", "Euler a", "DPM++ 2M", "DDIM", "LCM"};
_Static_assert(sizeof names / sizeof names[0] == SAMPLER_KIND_COUNT, "one name per sampler");
_Static_assert(sizeof a1111_names / sizeof a1111_names[0] == SAMPLER_KIND_COUNT, "one A1111 name per sampler");

const char *sampler_name(sampler_kind kind)
{
    return (unsigned)kind < SAMPLER_KIND_COUNT ? names[kind] : "unknown";
}

const char *sampler_a1111_name(sampler_kind kind, int karras)
{
    if (kind == SAMPLER_DPMPP_2M && karras)
        return "DPM++ 2M Karras";
    if (kind == SAMPLER_EULER && karras)
        return "Euler Karras";
    if (kind == SAMPLER_EULER_A && karras)
        return "Euler a Karras";
    return (unsigned)kind < SAMPLER_KIND_COUNT ? a1111_names[kind] : "unknown";
}

int sampler_parse(const char *name, sampler_kind *kind, int *karras)
{
    static const struct {
        const char *name;
        sampler_kind kind;
        int karras;
    } aliases[] = {
        {"euler", SAMPLER_EULER, 0},         {"euler_a", SAMPLER_EULER_A, 0},
        {"dpmpp_2m", SAMPLER_DPMPP_2M, 0},   {"dpmpp_2m_karras", SAMPLER_DPMPP_2M, 1},
        {"ddim", SAMPLER_DDIM, 0},           {"lcm", SAMPLER_LCM, 0},
        {"euler_karras", SAMPLER_EULER, 1},  {"euler_a_karras", SAMPLER_EULER_A, 1},
        {"Euler", SAMPLER_EULER, 0},         {"Euler a", SAMPLER_EULER_A, 0},
        {"DPM++ 2M", SAMPLER_DPMPP_2M, 0},   {"DPM++ 2M Karras", SAMPLER_DPMPP_2M, 1},
        {"DDIM", SAMPLER_DDIM, 0},           {"LCM", SAMPLER_LCM, 0},
        {"Euler Karras", SAMPLER_EULER, 1},  {"Euler a Karras", SAMPLER_EULER_A, 1},
        {"euler_ancestral", SAMPLER_EULER_A, 0},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(name, aliases[i].name) == 0) {
            *kind = aliases[i].kind;
            *karras = aliases[i].karras;
            return 0;
        }
    return -1;
}

/* ---- step plans ---- */

static int is_kdiffusion(sampler_kind kind)
{
    return kind == SAMPLER_EULER || kind == SAMPLER_EULER_A || kind == SAMPLER_DPMPP_2M;
}

void sampler_plan_free(sampler_plan *plan)
{
    free(plan->sigmas);
    free(plan->timesteps);
    free(plan->alphas);
    free(plan->alphas_prev);
    memset(plan, 0, sizeof *plan);
}

/* img2img runs the last t_enc + 1 calls of the full plan, as A1111 does:
 * t_enc = floor(min(strength, 0.999) * steps). */
static int calls_to_run(const sampler_settings *s, int full)
{
    if (s->strength <= 0.0f || s->strength >= 1.0f)
        return full;
    int t_enc = (int)(fmin((double)s->strength, 0.999) * (double)full);
    return t_enc + 1 < full ? t_enc + 1 : full;
}

kiln_status sampler_plan_create(const sd_schedule *sched, const sampler_settings *s, sampler_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    int max_steps = s->kind == SAMPLER_LCM ? 50 : SCHEDULE_STEPS;
    if (s->steps < 1 || s->steps > max_steps)
        return err_set(KILN_ERR_INVALID, "steps is %d; %s allows 1 to %d", s->steps, sampler_name(s->kind), max_steps);
    if ((unsigned)s->kind >= SAMPLER_KIND_COUNT)
        return err_set(KILN_ERR_INVALID, "unknown sampler %d", (int)s->kind);

    if (is_kdiffusion(s->kind)) {
        double *full = malloc(((size_t)s->steps + 1) * sizeof *full);
        if (!full)
            return err_set(KILN_ERR_NOMEM, "cannot allocate a schedule of %d steps", s->steps);
        if (s->karras)
            schedule_sigmas_karras(sched, s->steps, full);
        else
            schedule_sigmas(sched, s->steps, full);
        plan->calls = calls_to_run(s, s->steps);
        plan->sigmas = malloc(((size_t)plan->calls + 1) * sizeof *plan->sigmas);
        if (plan->sigmas)
            memcpy(plan->sigmas, full + (s->steps - plan->calls), ((size_t)plan->calls + 1) * sizeof *full);
        free(full);
        if (!plan->sigmas)
            return err_set(KILN_ERR_NOMEM, "cannot allocate a schedule of %d steps", s->steps);
        return KILN_OK;
    }

    int full_ts[SCHEDULE_STEPS];
    int full;
    if (s->kind == SAMPLER_DDIM) {
        int ascending[SCHEDULE_STEPS];
        full = schedule_ddim_timesteps(s->steps, ascending);
        for (int i = 0; i < full; i++)
            full_ts[i] = ascending[full - 1 - i];
    } else {
        full = s->steps;
        schedule_lcm_timesteps(s->steps, full_ts);
    }
    plan->calls = calls_to_run(s, full);
    int first = full - plan->calls;
    plan->timesteps = malloc((size_t)plan->calls * sizeof *plan->timesteps);
    plan->alphas = malloc((size_t)plan->calls * sizeof *plan->alphas);
    plan->alphas_prev = malloc((size_t)plan->calls * sizeof *plan->alphas_prev);
    if (!plan->timesteps || !plan->alphas || !plan->alphas_prev) {
        sampler_plan_free(plan);
        return err_set(KILN_ERR_NOMEM, "cannot allocate a schedule of %d steps", s->steps);
    }
    for (int i = 0; i < plan->calls; i++) {
        int k = first + i;
        int t = full_ts[k];
        plan->timesteps[i] = t;
        plan->alphas[i] = sched->alphas_cumprod[t];
        if (k + 1 < full)
            plan->alphas_prev[i] = sched->alphas_cumprod[full_ts[k + 1]];
        else /* LDM steps to alphas_cumprod[0]; LCM's last step has none */
            plan->alphas_prev[i] = s->kind == SAMPLER_DDIM ? sched->alphas_cumprod[0] : sched->alphas_cumprod[t];
    }
    return KILN_OK;
}

void sampler_start(const sampler_plan *plan, const sampler_settings *s, const float *init, const float *noise,
                   float *x, size_t n)
{
    if (is_kdiffusion(s->kind)) {
        /* x = init + noise * sigma_max of the plan (txt2img: init = 0) */
        float sigma = (float)plan->sigmas[0];
        for (size_t i = 0; i < n; i++)
            x[i] = (init ? init[i] : 0.0f) + noise[i] * sigma;
        return;
    }
    /* DDIM / LCM start from unit noise (txt2img) or q(x_t | x_0) at the
     * first timestep: sqrt(a) x0 + sqrt(1 - a) eps (img2img) */
    if (!init) {
        memcpy(x, noise, n * sizeof *x);
        return;
    }
    float sa = (float)sqrt(plan->alphas[0]), s1a = (float)sqrt(1.0 - plan->alphas[0]);
    for (size_t i = 0; i < n; i++)
        x[i] = sa * init[i] + s1a * noise[i];
}

/* ---- k-diffusion ---- */

typedef struct kdiff {
    const sd_schedule *sched;
    const sampler_model *model;
    float *x_in, *out;
    size_t n;
} kdiff;

/* CompVisDenoiser / CompVisVDenoiser: denoised = c_skip x + c_out F(c_in x, t(sigma)),
 * with sigma_data = 1 (Karras et al. 2022, table 1). */
static kiln_status denoise(kdiff *k, const float *x, double sigma, float *denoised)
{
    float c_in = (float)(1.0 / sqrt(sigma * sigma + 1.0));
    for (size_t i = 0; i < k->n; i++)
        k->x_in[i] = x[i] * c_in;
    kiln_status st = k->model->predict(k->model->ctx, k->x_in, (float)schedule_sigma_to_t(k->sched, sigma), k->out);
    if (st != KILN_OK)
        return st;
    if (k->model->v_prediction) {
        float c_skip = (float)(1.0 / (sigma * sigma + 1.0));
        float c_out = (float)(-sigma / sqrt(sigma * sigma + 1.0));
        for (size_t i = 0; i < k->n; i++)
            denoised[i] = x[i] * c_skip + k->out[i] * c_out;
    } else {
        float s = (float)sigma;
        for (size_t i = 0; i < k->n; i++)
            denoised[i] = x[i] - k->out[i] * s;
    }
    return KILN_OK;
}

static int report(const sampler_model *m, int step, int steps)
{
    return m->progress && m->progress(m->ctx, step, steps);
}

/*
 * Euler: sample_euler, Karras et al. 2022 alg. 2 without churn:
 *   x += (x - D) / sigma * (sigma_next - sigma).
 * Euler ancestral: step to sigma_down, then add fresh noise of sigma_up
 *   (k-diffusion's get_ancestral_step, eta = 1); no noise into sigma = 0.
 * DPM++ 2M: DPM-Solver++(2M), Lu et al. 2022 alg. 2, in lambda = -log sigma.
 */
static kiln_status run_kdiffusion(const sd_schedule *sched, const sampler_settings *s, const sampler_plan *plan,
                                  const sampler_model *m, float *x, size_t n)
{
    float *buf = malloc(5 * n * sizeof *buf);
    if (!buf)
        return err_set(KILN_ERR_NOMEM, "sampler: cannot allocate %zu latent values", 5 * n);
    float *denoised = buf, *old_denoised = buf + n, *noise = buf + 2 * n;
    kdiff k = {.sched = sched, .model = m, .x_in = buf + 3 * n, .out = buf + 4 * n, .n = n};
    const double *sigmas = plan->sigmas;
    kiln_status st = KILN_OK;

    for (int i = 0; i < plan->calls; i++) {
        double sigma = sigmas[i], sigma_next = sigmas[i + 1];
        st = denoise(&k, x, sigma, denoised);
        if (st != KILN_OK)
            break;
        switch (s->kind) {
        case SAMPLER_EULER: {
            float inv = (float)(1.0 / sigma), dt = (float)(sigma_next - sigma);
            for (size_t j = 0; j < n; j++)
                x[j] += (x[j] - denoised[j]) * inv * dt;
            break;
        }
        case SAMPLER_EULER_A: {
            double up = 0.0;
            if (sigma_next > 0.0)
                up = fmin(sigma_next, sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) /
                                           (sigma * sigma)));
            double down = sqrt(fmax(sigma_next * sigma_next - up * up, 0.0));
            float inv = (float)(1.0 / sigma), dt = (float)(down - sigma);
            for (size_t j = 0; j < n; j++)
                x[j] += (x[j] - denoised[j]) * inv * dt;
            if (sigma_next > 0.0) {
                st = m->noise(m->ctx, i, noise);
                if (st != KILN_OK)
                    goto done;
                float upf = (float)up;
                for (size_t j = 0; j < n; j++)
                    x[j] += noise[j] * upf;
            }
            break;
        }
        case SAMPLER_DPMPP_2M: {
            if (sigma_next == 0.0) {
                memcpy(x, denoised, n * sizeof *x);
            } else {
                double t = -log(sigma), t_next = -log(sigma_next), h = t_next - t;
                float ratio = (float)(sigma_next / sigma), em = (float)expm1(-h);
                if (i == 0) {
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] - em * denoised[j];
                } else {
                    double h_last = t - (-log(sigmas[i - 1])), r = h_last / h;
                    float a = (float)(1.0 + 1.0 / (2.0 * r)), b = (float)(1.0 / (2.0 * r));
                    for (size_t j = 0; j < n; j++)
                        x[j] = ratio * x[j] - em * (a * denoised[j] - b * old_denoised[j]);
                }
            }
            memcpy(old_denoised, denoised, n * sizeof *x);
            break;
        }
        default:
            break;
        }
        if (report(m, i + 1, plan->calls)) {
            st = err_set(KILN_ERR_CANCELLED, "generation cancelled after step %d of %d", i + 1, plan->calls);
            break;
        }
    }
done:
    free(buf);
    return st;
}

/* ---- alpha-parameterised samplers ---- */

/*
 * DDIM: Song et al. 2020, eq. 12 with eta = 0, as LDM's DDIMSampler:
 *   x0 = (x - sqrt(1 - a) e) / sqrt(a);  x = sqrt(a_prev) x0 + sqrt(1 - a_prev) e.
 * LCM: Luo et al. 2023, as diffusers' LCMScheduler: the consistency boundary
 *   condition c_skip x + c_out x0, then fresh noise to the next timestep
 *   (none after the last).
 */
static kiln_status run_alpha(const sampler_settings *s, const sampler_plan *plan, const sampler_model *m, float *x,
                             size_t n)
{
    float *buf = malloc(3 * n * sizeof *buf);
    if (!buf)
        return err_set(KILN_ERR_NOMEM, "sampler: cannot allocate %zu latent values", 3 * n);
    float *out = buf, *eps = buf + n, *x0 = buf + 2 * n;
    kiln_status st = KILN_OK;
    for (int i = 0; i < plan->calls; i++) {
        double a = plan->alphas[i], ap = plan->alphas_prev[i];
        float sa = (float)sqrt(a), s1a = (float)sqrt(1.0 - a);
        st = m->predict(m->ctx, x, (float)plan->timesteps[i], out);
        if (st != KILN_OK)
            break;
        for (size_t j = 0; j < n; j++) {
            if (m->v_prediction) {
                eps[j] = sa * out[j] + s1a * x[j];
                x0[j] = sa * x[j] - s1a * out[j];
            } else {
                eps[j] = out[j];
                x0[j] = (x[j] - s1a * out[j]) / sa;
            }
        }
        float sp = (float)sqrt(ap), s1p = (float)sqrt(1.0 - ap);
        if (s->kind == SAMPLER_DDIM) {
            for (size_t j = 0; j < n; j++)
                x[j] = sp * x0[j] + s1p * eps[j];
        } else {
            double scaled = 10.0 * plan->timesteps[i];
            float c_skip = (float)(0.25 / (scaled * scaled + 0.25));
            float c_out = (float)(scaled / sqrt(scaled * scaled + 0.25));
            for (size_t j = 0; j < n; j++)
                x[j] = c_out * x0[j] + c_skip * x[j];
            if (i + 1 < plan->calls) {
                st = m->noise(m->ctx, i, out);
                if (st != KILN_OK)
                    break;
                for (size_t j = 0; j < n; j++)
                    x[j] = sp * x[j] + s1p * out[j];
            }
        }
        if (report(m, i + 1, plan->calls)) {
            st = err_set(KILN_ERR_CANCELLED, "generation cancelled after step %d of %d", i + 1, plan->calls);
            break;
        }
    }
    free(buf);
    return st;
}

kiln_status sampler_run(const sd_schedule *sched, const sampler_settings *s, const sampler_plan *plan,
                        const sampler_model *m, float *x, size_t n)
{
    return is_kdiffusion(s->kind) ? run_kdiffusion(sched, s, plan, m, x, n) : run_alpha(s, plan, m, x, n);
}
