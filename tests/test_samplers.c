/*
 * Schedules and samplers against tools/sampler_reference.py
 * (tests/data/golden/samplers.safetensors; the spec is SAMPLERS.md beside
 * it): the schedules to 1e-12, every sampler step by step with the fixed
 * model of SAMPLERS.md 5.1, and the stored noise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/samplers.h"
#include "pipeline/schedule.h"
#include "test_support.h"

static kiln_weights *golden;

static kiln_weights *open_golden(void)
{
    if (!golden) {
        char *path = test_data_path("golden/samplers.safetensors");
        CHECK(kiln_weights_open(path, &golden) == KILN_OK, "cannot open %s: %s", path, kiln_last_error());
        free(path);
    }
    return golden;
}

/* The tensor's raw bytes (F32, F64 or I64) and element count; NULL if absent. */
static const void *tensor(const char *name, kiln_dtype dtype, size_t *count)
{
    const kiln_tensor_desc *t = kiln_weights_find(golden, name);
    CHECK(t != NULL, "golden tensor %s missing", name);
    if (!t)
        return NULL;
    CHECK(t->dtype == dtype, "%s: dtype %s", name, kiln_dtype_name(t->dtype));
    *count = t->nbytes / kiln_dtype_size(t->dtype);
    return kiln_weights_data(golden, t);
}

static double f64_at(const void *p, size_t i)
{
    double v;
    memcpy(&v, (const char *)p + 8 * i, 8);
    return v;
}

static float f32_at(const void *p, size_t i)
{
    float v;
    memcpy(&v, (const char *)p + 4 * i, 4);
    return v;
}

static void test_training_schedule(void)
{
    if (!open_golden())
        return;
    sd_schedule s;
    schedule_init_sd(&s);
    size_t n;
    const void *acp = tensor("sched.alphas_cumprod", KILN_DTYPE_F64, &n);
    const void *sig = tensor("sched.sigmas", KILN_DTYPE_F64, &n);
    if (!acp || !sig)
        return;
    double worst = 0;
    for (size_t i = 0; i < 1000; i++) {
        worst = fmax(worst, fabs(s.alphas_cumprod[i] - f64_at(acp, i)) / f64_at(acp, i));
        worst = fmax(worst, fabs(s.sigmas[i] - f64_at(sig, i)) / f64_at(sig, i));
    }
    CHECK(worst < 1e-12, "alphas_cumprod / sigmas differ by %.3e relative", worst);
}

/* The zero-terminal-SNR rescale against tools/sampler_reference.py's
 * Schedule(zero_terminal_snr=True) (float64 numpy, printed with repr): the
 * first step unchanged, the last one 2^-24 (sigma 4096), the rest shifted. */
static void test_zero_terminal_snr(void)
{
    static const struct {
        int t;
        double alphas_cumprod, sigma;
    } expected[] = {
        {0, 0.99915, 0.029167158151720367},
        {1, 0.9982334461401823, 0.04206756583188789},
        {250, 0.6524570153414769, 0.7298410903629242},
        {500, 0.24101878275731575, 1.774557474287331},
        {998, 1.967888056621291e-07, 2254.237978336996},
        {999, 5.960464477539063e-08, 4095.9998779296857},
    };
    sd_schedule s;
    schedule_init_sd(&s);
    schedule_rescale_zero_terminal_snr(&s);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        int t = expected[i].t;
        double acp_err = fabs(s.alphas_cumprod[t] - expected[i].alphas_cumprod) / expected[i].alphas_cumprod;
        double sigma_err = fabs(s.sigmas[t] - expected[i].sigma) / expected[i].sigma;
        CHECK(acp_err < 1e-9 && sigma_err < 1e-9, "t %d: alphas_cumprod %.17g sigma %.17g, expected %.17g %.17g", t,
              s.alphas_cumprod[t], s.sigmas[t], expected[i].alphas_cumprod, expected[i].sigma);
    }
    for (int t = 1; t < s.n; t++)
        CHECK(s.sigmas[t] > s.sigmas[t - 1], "sigmas must rise with t (t %d)", t);
    double sigmas[5];
    schedule_sigmas(&s, 4, sigmas); /* reference get_sigmas(4): 4096, 3.50093314, 0.986896518, 0.0291671582, 0 */
    CHECK(fabs(sigmas[0] - 4095.9998779296857) < 1e-6 && fabs(sigmas[1] - 3.50093314) < 1e-6 &&
              fabs(sigmas[3] - 0.0291671582) < 1e-9 && sigmas[4] == 0.0,
          "get_sigmas(4): %.10g %.10g %.10g %.10g %g", sigmas[0], sigmas[1], sigmas[2], sigmas[3], sigmas[4]);
}

static void test_step_tables(void)
{
    if (!open_golden())
        return;
    sd_schedule s;
    schedule_init_sd(&s);
    double sigmas[64];
    int ts[1000];
    for (int steps = 1; steps <= 50; steps++) {
        char name[64];
        size_t n;
        for (int karras = 0; karras < 2; karras++) {
            snprintf(name, sizeof name, "sched.%s.n%d.sigmas", karras ? "karras" : "kdiff", steps);
            const void *want = tensor(name, KILN_DTYPE_F64, &n);
            snprintf(name, sizeof name, "sched.%s.n%d.t", karras ? "karras" : "kdiff", steps);
            const void *want_t = tensor(name, KILN_DTYPE_F64, &n);
            if (!want || !want_t)
                return;
            if (karras)
                schedule_sigmas_karras(&s, steps, sigmas);
            else
                schedule_sigmas(&s, steps, sigmas);
            for (int i = 0; i <= steps; i++) {
                double w = f64_at(want, (size_t)i);
                CHECK(fabs(sigmas[i] - w) <= 1e-12 * fabs(w), "%s n=%d sigma[%d]: expected %.15g, got %.15g",
                      karras ? "karras" : "normal", steps, i, w, sigmas[i]);
                if (i < steps) {
                    double t = schedule_sigma_to_t(&s, sigmas[i]), wt = f64_at(want_t, (size_t)i);
                    CHECK(fabs(t - wt) <= 1e-9, "%s n=%d t[%d]: expected %.15g, got %.15g", karras ? "karras" : "normal",
                          steps, i, wt, t);
                }
            }
        }
        snprintf(name, sizeof name, "sched.ddim.n%d.timesteps", steps);
        const void *ddim = tensor(name, KILN_DTYPE_I64, &n);
        int count = schedule_ddim_timesteps(steps, ts);
        CHECK((size_t)count == n, "ddim n=%d: expected %zu timesteps, got %d", steps, n, count);
        for (int i = 0; ddim && i < count && (size_t)i < n; i++) {
            int64_t w;
            memcpy(&w, (const char *)ddim + 8 * i, 8);
            CHECK(ts[i] == w, "ddim n=%d ts[%d]: expected %lld, got %d", steps, i, (long long)w, ts[i]);
        }
        snprintf(name, sizeof name, "sched.lcm.n%d.timesteps", steps);
        const void *lcm = tensor(name, KILN_DTYPE_I64, &n);
        schedule_lcm_timesteps(steps, ts);
        for (int i = 0; lcm && i < steps; i++) {
            int64_t w;
            memcpy(&w, (const char *)lcm + 8 * i, 8);
            CHECK(ts[i] == w, "lcm n=%d ts[%d]: expected %lld, got %d", steps, i, (long long)w, ts[i]);
        }
    }
}

/* ---- whole runs with the fixed model ---- */

typedef struct fixed_model {
    float cfg; /* 1: a single conditional call */
    const void *want_x_in, *want_t, *noise;
    size_t values, calls;
    int noise_draws;
    double worst_x_in, worst_t;
    char run[64];
} fixed_model;

/* model(x_in, t, c) = 0.8 tanh(x_in) + 0.1 sin(t / 100) + 0.05 c x_in,
 * guided: uncond + cfg (cond - uncond) (SAMPLERS.md 5.1) */
static kiln_status predict(void *ctx, const float *x_in, float t, float *out)
{
    fixed_model *fm = ctx;
    size_t call = fm->calls++;
    for (size_t i = 0; i < fm->values; i++) {
        float base = 0.8f * tanhf(x_in[i]) + 0.1f * sinf(t / 100.0f);
        float cond = base + 0.05f * x_in[i];
        out[i] = fm->cfg == 1.0f ? cond : base + fm->cfg * (cond - base);
        float want = f32_at(fm->want_x_in, call * fm->values + i);
        fm->worst_x_in = fmax(fm->worst_x_in, fabs((double)x_in[i] - want) / (1.0 + fabs(want)));
    }
    fm->worst_t = fmax(fm->worst_t, fabs((double)t - f64_at(fm->want_t, call)));
    return KILN_OK;
}

static kiln_status noise(void *ctx, int step, float *out)
{
    fixed_model *fm = ctx;
    fm->noise_draws++;
    for (size_t i = 0; i < fm->values; i++)
        out[i] = f32_at(fm->noise, (size_t)fm->noise_draws * fm->values + i);
    return KILN_OK;
}

static void run_case(const char *run, const char *sampler, int steps, int v_prediction)
{
    if (!open_golden())
        return;
    sd_schedule sched;
    schedule_init_sd(&sched);
    sampler_settings s = {.steps = steps, .strength = 1.0f};
    CHECK(sampler_parse(sampler, &s.kind, &s.karras) == 0, "sampler %s", sampler);
    char name[96];
    size_t n_noise, n_x, n_in, n_t;
    fixed_model fm = {.cfg = s.kind == SAMPLER_LCM ? 1.0f : 7.5f, .values = 4 * 8 * 8};
    snprintf(fm.run, sizeof fm.run, "run.%s.n%d", run, steps);
    fm.noise = tensor("run.noise", KILN_DTYPE_F32, &n_noise);
    snprintf(name, sizeof name, "%s.x", fm.run);
    const void *want_x = tensor(name, KILN_DTYPE_F32, &n_x);
    snprintf(name, sizeof name, "%s.x_in", fm.run);
    fm.want_x_in = tensor(name, KILN_DTYPE_F32, &n_in);
    snprintf(name, sizeof name, "%s.t", fm.run);
    fm.want_t = tensor(name, KILN_DTYPE_F64, &n_t);
    if (!fm.noise || !want_x || !fm.want_x_in || !fm.want_t)
        return;

    sampler_plan plan;
    CHECK(sampler_plan_create(&sched, &s, &plan) == KILN_OK, "%s: plan: %s", fm.run, kiln_last_error());
    CHECK((size_t)plan.calls == n_t, "%s: expected %zu model calls, plan has %d", fm.run, n_t, plan.calls);
    float x[256], first_noise[256];
    for (size_t i = 0; i < fm.values; i++)
        first_noise[i] = f32_at(fm.noise, i);
    sampler_start(&plan, &s, NULL, first_noise, x, fm.values);
    double worst_start = 0;
    for (size_t i = 0; i < fm.values; i++)
        worst_start = fmax(worst_start, fabs((double)x[i] - f32_at(want_x, i)));
    CHECK(worst_start <= 1e-5, "%s: initial latent differs by %.3e", fm.run, worst_start);

    sampler_model model = {.ctx = &fm, .predict = predict, .noise = noise, .v_prediction = v_prediction};
    kiln_status st = sampler_run(&sched, &s, &plan, &model, x, fm.values);
    CHECK(st == KILN_OK, "%s: run: %s", fm.run, kiln_last_error());
    CHECK(fm.calls == (size_t)plan.calls, "%s: %zu model calls for a plan of %d", fm.run, fm.calls, plan.calls);

    /* |a - b| <= 1e-4 + 1e-5 |b| (SAMPLERS.md 5.4) */
    double worst = 0;
    const size_t last = (size_t)plan.calls * fm.values;
    for (size_t i = 0; i < fm.values; i++) {
        double want = f32_at(want_x, last + i);
        worst = fmax(worst, fabs((double)x[i] - want) - 1e-5 * fabs(want));
    }
    printf("    %-28s final |err| %.2e, model inputs %.2e, timesteps %.2e, %d noise draws\n", fm.run, worst,
           fm.worst_x_in, fm.worst_t, fm.noise_draws);
    CHECK(worst <= 1e-4, "%s: final latent off by %.3e", fm.run, worst);
    CHECK(fm.worst_x_in <= 1e-4, "%s: model input off by %.3e", fm.run, fm.worst_x_in);
    CHECK(fm.worst_t <= 1e-3, "%s: timestep off by %.3e", fm.run, fm.worst_t);
    sampler_plan_free(&plan);
}

static void test_euler(void)
{
    int steps[] = {1, 2, 10, 20};
    for (int i = 0; i < 4; i++)
        run_case("euler", "euler", steps[i], 0);
    run_case("euler_v", "euler", 10, 1);
}

static void test_euler_ancestral(void)
{
    int steps[] = {1, 2, 10, 20};
    for (int i = 0; i < 4; i++)
        run_case("euler_a", "euler_a", steps[i], 0);
}

static void test_dpmpp_2m(void)
{
    int steps[] = {1, 2, 10, 20};
    for (int i = 0; i < 4; i++) {
        run_case("dpmpp_2m", "dpmpp_2m", steps[i], 0);
        run_case("dpmpp_2m_karras", "dpmpp_2m_karras", steps[i], 0);
    }
    run_case("dpmpp_2m_v", "dpmpp_2m", 10, 1);
}

static void test_ddim(void)
{
    int steps[] = {1, 2, 10, 20};
    for (int i = 0; i < 4; i++)
        run_case("ddim", "ddim", steps[i], 0);
}

static void test_lcm(void)
{
    int steps[] = {1, 2, 4, 8};
    for (int i = 0; i < 4; i++)
        run_case("lcm", "lcm", steps[i], 0);
}

static void test_img2img_plan(void)
{
    sd_schedule sched;
    schedule_init_sd(&sched);
    sampler_settings s = {.kind = SAMPLER_EULER, .steps = 20, .strength = 0.5f};
    sampler_plan plan;
    CHECK(sampler_plan_create(&sched, &s, &plan) == KILN_OK, "plan: %s", kiln_last_error());
    /* A1111: t_enc = floor(0.5 * 20) = 10; the last 11 sigmas of the full schedule */
    double full[21];
    schedule_sigmas(&sched, 20, full);
    CHECK(plan.calls == 11, "img2img at strength 0.5 of 20 steps: expected 11 calls, got %d", plan.calls);
    CHECK(plan.sigmas[0] == full[9] && plan.sigmas[11] == 0.0, "img2img starts at sigma %g, expected %g",
          plan.sigmas[0], full[9]);
    sampler_plan_free(&plan);

    s.steps = 51;
    s.kind = SAMPLER_LCM;
    CHECK(sampler_plan_create(&sched, &s, &plan) == KILN_ERR_INVALID, "LCM with 51 steps must be refused");
}

static void test_names(void)
{
    sampler_kind k;
    int karras;
    CHECK(sampler_parse("DPM++ 2M Karras", &k, &karras) == 0 && k == SAMPLER_DPMPP_2M && karras, "A1111 name");
    CHECK(sampler_parse("euler_a", &k, &karras) == 0 && k == SAMPLER_EULER_A && !karras, "kiln name");
    CHECK(sampler_parse("heun", &k, &karras) != 0, "unknown sampler accepted");
    CHECK(strcmp(sampler_a1111_name(SAMPLER_EULER_A, 0), "Euler a") == 0, "A1111 display name");
}

static void close_golden(void)
{
    kiln_weights_destroy(golden);
    golden = NULL;
}

TEST_MAIN(TEST(test_training_schedule), TEST(test_zero_terminal_snr), TEST(test_step_tables), TEST(test_euler), TEST(test_euler_ancestral),
          TEST(test_dpmpp_2m), TEST(test_ddim), TEST(test_lcm), TEST(test_img2img_plan), TEST(test_names),
          TEST(close_golden))
