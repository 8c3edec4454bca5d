/*
 * Debug mode (kiln_request.debug, issue 6): the executor's NaN/Inf check
 * and the validation against the f32 reference path.
 *
 *   - the executor names the first node whose output is non-finite, with
 *     its count and first index, and changes no output bit;
 *   - a tiny model with a NaN planted in one weight: the report names the
 *     node that reads it, its graph and its sampler step;
 *   - the best configuration against the reference: PSNR and latent
 *     error within the bounds test_optimizations.c's tolerances give;
 *   - a model loaded at f16 (and bf16): the reference is loaded again at
 *     f32, the PSNR finite and within its bound;
 *   - debug on and off give the same pixels;
 *   - the reference reports progress as "validate", and can be cancelled.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/executor.h"
#include "kiln.h"
#include "test_support.h"
#include "tiny_model.h"

/* ---- the executor ---- */

/* x [2, 3, 4] -> linear (w [5, 4], w[1][2] = value) -> silu, and a second
 * branch silu(x) that runs first. */
static void test_executor_names_first_nonfinite(void)
{
    float w[5 * 4], x[2 * 3 * 4];
    test_rng r = test_rng_seed(1);
    for (int i = 0; i < 20; i++)
        w[i] = test_rng_uniform(&r, -1, 1);
    for (int i = 0; i < 24; i++)
        x[i] = test_rng_uniform(&r, -1, 1);
    tpool *pool = NULL;
    if (tpool_create(2, &pool) != KILN_OK)
        return;
    float outputs[2][2 * 3 * 5];
    for (int planted = 0; planted < 2; planted++) {
        w[1 * 4 + 2] = planted ? NAN : 0.5f;
        graph *g = NULL;
        graph_exec *e = NULL;
        graph_create(&g);
        int64_t xs[3] = {2, 3, 4}, ws[2] = {5, 4};
        tensor tw;
        tensor_init(&tw, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 2, ws, w);
        graph_id in = graph_input(g, "x", TENSOR_LAYOUT_PLAIN, 3, xs);
        graph_id early = graph_silu(g, "early", in);
        graph_id lin = graph_linear(g, "proj", in, graph_weight(g, "proj.weight", &tw), GRAPH_NONE);
        graph_id out = graph_silu(g, "act", lin);
        graph_mark_output(g, out);
        graph_mark_output(g, early);
        graph_exec_options o;
        graph_exec_options_defaults(&o);
        o.check_finite = 1;
        if (graph_exec_create_with(g, NULL, &o, &e) != KILN_OK) {
            CHECK(0, "executor: %s", kiln_last_error());
            graph_destroy(g);
            continue;
        }
        graph_exec_bind(e, in, x);
        CHECK(graph_exec_run(e, pool) == KILN_OK, "run: %s", kiln_last_error());
        graph_nonfinite nf;
        graph_exec_nonfinite(e, &nf);
        if (planted)
            /* w row 1 holds the NaN: output column 1 of all 6 rows; it
             * reaches 'act' too, but the first node is the one kept */
            CHECK(nf.found && strcmp(nf.name, "proj") == 0 && nf.op == GRAPH_OP_LINEAR && nf.count == 6 &&
                      nf.first_index == 1 && isnan(nf.first_value) && nf.ndim == 3 && nf.shape[2] == 5,
                  "expected node 'proj' (linear, [2, 3, 5]) with 6 NaN from index 1; got found %d '%s' (%s) "
                  "count %lld first %lld",
                  nf.found, nf.found ? nf.name : "", nf.found ? graph_op_name(nf.op) : "", (long long)nf.count,
                  (long long)nf.first_index);
        else {
            CHECK(!nf.found, "finite graph: found '%s'", nf.found ? nf.name : "");
            memcpy(outputs[0], graph_exec_output(e, out), sizeof outputs[0]);
        }
        graph_exec_destroy(e);
        graph_destroy(g);
    }
    /* the check reads, never writes: the same bits as without it */
    {
        w[1 * 4 + 2] = 0.5f;
        graph *g = NULL;
        graph_exec *e = NULL;
        graph_create(&g);
        int64_t xs[3] = {2, 3, 4}, ws[2] = {5, 4};
        tensor tw;
        tensor_init(&tw, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 2, ws, w);
        graph_id in = graph_input(g, "x", TENSOR_LAYOUT_PLAIN, 3, xs);
        graph_id lin = graph_linear(g, "proj", in, graph_weight(g, "proj.weight", &tw), GRAPH_NONE);
        graph_id out = graph_silu(g, "act", lin);
        graph_mark_output(g, out);
        if (graph_exec_create_with(g, NULL, NULL, &e) == KILN_OK) {
            graph_exec_bind(e, in, x);
            CHECK(graph_exec_run(e, pool) == KILN_OK, "run: %s", kiln_last_error());
            memcpy(outputs[1], graph_exec_output(e, out), sizeof outputs[1]);
            CHECK(memcmp(outputs[0], outputs[1], sizeof outputs[0]) == 0,
                  "output with the check differs from without it");
            graph_nonfinite nf;
            graph_exec_nonfinite(e, &nf);
            CHECK(!nf.found, "check off: nothing recorded");
        }
        graph_exec_destroy(e);
        graph_destroy(g);
    }
    /* an Inf in the input: the first node reading it ('early', it runs
     * first) is named */
    {
        graph *g = NULL;
        graph_exec *e = NULL;
        graph_create(&g);
        int64_t xs[3] = {2, 3, 4}, ws[2] = {5, 4};
        tensor tw;
        tensor_init(&tw, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 2, ws, w);
        graph_id in = graph_input(g, "x", TENSOR_LAYOUT_PLAIN, 3, xs);
        graph_id early = graph_silu(g, "early", in);
        graph_id lin = graph_linear(g, "proj", in, graph_weight(g, "proj.weight", &tw), GRAPH_NONE);
        graph_mark_output(g, early);
        graph_mark_output(g, lin);
        graph_exec_options o;
        graph_exec_options_defaults(&o);
        o.check_finite = 1;
        if (graph_exec_create_with(g, NULL, &o, &e) == KILN_OK) {
            float xi[24];
            memcpy(xi, x, sizeof xi);
            xi[17] = INFINITY;
            graph_exec_bind(e, in, xi);
            CHECK(graph_exec_run(e, pool) == KILN_OK, "run: %s", kiln_last_error());
            graph_nonfinite nf;
            graph_exec_nonfinite(e, &nf);
            CHECK(nf.found && strcmp(nf.name, "early") == 0 && nf.count == 1 && nf.first_index == 17 &&
                      isinf(nf.first_value) && nf.first_value > 0,
                  "expected 'early' with one +Inf at 17; got found %d '%s' count %lld first %lld", nf.found,
                  nf.found ? nf.name : "", (long long)nf.count, (long long)nf.first_index);
            /* the next run, finite again, reports nothing */
            graph_exec_bind(e, in, x);
            CHECK(graph_exec_run(e, pool) == KILN_OK, "run: %s", kiln_last_error());
            graph_exec_nonfinite(e, &nf);
            CHECK(!nf.found, "a finite run after a non-finite one must report nothing, got '%s'",
                  nf.found ? nf.name : "");
        }
        graph_exec_destroy(e);
        graph_destroy(g);
    }
    tpool_destroy(pool);
}

/* ---- end to end on the tiny model ---- */

static kiln_result *generate(model_session *s, int debug, int num_images)
{
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = "a red circle on a blue background";
    r.negative_prompt = "blurry";
    r.steps = 3;
    r.seed = 99;
    r.sampler = "euler";
    r.num_images = num_images;
    r.debug = debug;
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s->model, &r, &res);
    CHECK(st == KILN_OK, "generate (debug %d): %s", debug, kiln_last_error());
    return st == KILN_OK ? res : NULL;
}

/* A copy of the tiny model (beside it, so it shares its tokenizer/) with
 * the first value of one tensor set to NaN. */
static char *model_with_nan(const char *tensor_name, const char *file_name)
{
    const char *src = tiny_model();
    if (!src)
        return NULL;
    char *path = malloc(strlen(test_tmp_dir()) + strlen(file_name) + 2);
    sprintf(path, "%s/%s", test_tmp_dir(), file_name);
    kiln_weights *w = NULL;
    if (kiln_weights_open(src, &w) != KILN_OK) {
        CHECK(0, "opening %s: %s", src, kiln_last_error());
        free(path);
        return NULL;
    }
    const kiln_tensor_desc *t = kiln_weights_find(w, tensor_name);
    CHECK(t && t->dtype == KILN_DTYPE_F32, "the tiny model has no f32 tensor '%s'", tensor_name);
    uint64_t offset = t ? t->offset : 0;
    kiln_weights_destroy(w);
    if (!t) {
        free(path);
        return NULL;
    }
    FILE *in = fopen(src, "rb"), *out = fopen(path, "wb");
    char buf[65536];
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    float nan = NAN;
    int ok = in && out && fseek(out, (long)offset, SEEK_SET) == 0 && fwrite(&nan, sizeof nan, 1, out) == 1;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = 0;
    CHECK(ok, "writing %s", path);
    if (!ok) {
        free(path);
        return NULL;
    }
    return path;
}

static void test_planted_nan_is_named(void)
{
    static const struct {
        const char *tensor, *file;
        const char *node, *op, *graph;
        int step;
        int64_t count;
    } cases[] = {
        /* q_proj's weight row 0: column 0 of every token of both prompts
         * (negative and positive, 77 tokens each) */
        {"cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", "nan_text.safetensors",
         "encoder.layers.0.self_attn.q_proj", "linear", "text_encoder", -1, 2 * 77},
        /* the UNet's first convolution: read at the first sampler step */
        {"model.diffusion_model.input_blocks.0.0.weight", "nan_unet.safetensors", "input_blocks.0.0", "conv2d", "unet",
         0, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = model_with_nan(cases[i].tensor, cases[i].file);
        model_session s;
        if (model_session_open(&s, path, 2, NULL) != 0) {
            free(path);
            continue;
        }
        kiln_result *res = generate(&s, 1, 1);
        if (res) {
            const kiln_nonfinite *nf = &res->debug.nonfinite;
            CHECK(res->debug.enabled && nf->found, "%s: a NaN weight must be found", cases[i].tensor);
            CHECK(strcmp(nf->node, cases[i].node) == 0 && strcmp(nf->op, cases[i].op) == 0 &&
                      strcmp(nf->graph, cases[i].graph) == 0 && nf->step == cases[i].step,
                  "%s: expected node '%s' (%s) in the %s at step %d; got '%s' (%s) in the %s at step %d",
                  cases[i].tensor, cases[i].node, cases[i].op, cases[i].graph, cases[i].step, nf->node, nf->op,
                  nf->graph, nf->step);
            CHECK(nf->count > 0 && isnan(nf->first_value) && (cases[i].count < 0 || nf->count == cases[i].count),
                  "%s: expected %lld NaN values, got %lld (first value %g)", cases[i].tensor,
                  (long long)cases[i].count, (long long)nf->count, (double)nf->first_value);
            printf("  %s: node '%s' (%s, %s, step %d): %lld bad values, first at %lld\n", cases[i].file, nf->node,
                   nf->op, nf->graph, nf->step, (long long)nf->count, (long long)nf->first_index);
            kiln_result_destroy(res);
        }
        model_session_close(&s);
        free(path);
    }
}

/* From test_optimizations.c's tolerances: an image at most M levels of 255
 * apart anywhere and m on average has a mean squared error of at most
 * M * m, so a PSNR of at least 10 log10(255^2 / (M m)):
 *   best configuration (f32): M 2, m 0.05  -> 58.1 dB
 *   f16 weights:              M 4, m 0.3   -> 47.3 dB
 *   bf16 weights:             M 16, m 2.0  -> 33.1 dB */
#define PSNR_F32_DB 58.0
#define PSNR_F16_DB 47.0
#define PSNR_BF16_DB 33.0
/* Final latents after 3 steps, as a fraction of the reference's largest
 * |z| (about 80 on the tiny random model). Measured here: the f32 best
 * configuration 3.6e-6 (summation order, exp within 2e-7), f16 weights
 * 9e-4, bf16 1.3e-2. Allowed: about ten times. */
#define LATENT_F32_TOL 5e-5
#define LATENT_F16_TOL 1e-2
#define LATENT_BF16_TOL 1e-1

static void test_defaults_against_reference(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_result *plain = generate(&s, 0, 2), *dbg = generate(&s, 1, 2);
    if (plain && dbg) {
        const kiln_debug_report *d = &dbg->debug;
        CHECK(!plain->debug.enabled, "without debug the report is off");
        CHECK(d->enabled && !d->nonfinite.found, "debug: nothing non-finite in the tiny model, found '%s'",
              d->nonfinite.node);
        CHECK(d->validated && d->images == 2, "validated %d over %d images: %s", d->validated, d->images, d->reference);
        CHECK(strstr(d->reference, "plain attention") && !strstr(d->reference, "loaded again"),
              "an f32 model is its own reference: '%s'", d->reference);
        for (int i = 0; i < d->images; i++)
            CHECK(d->psnr_db[i] >= PSNR_F32_DB, "image %d: PSNR %.2f dB against the f32 reference, allowed %.0f and up",
                  i, d->psnr_db[i], PSNR_F32_DB);
        CHECK(d->psnr_min_db <= d->psnr_mean_db && d->psnr_min_db == fmin(d->psnr_db[0], d->psnr_db[1]),
              "min %.2f, mean %.2f", d->psnr_min_db, d->psnr_mean_db);
        CHECK(d->latent_max_abs > 0.1 && d->latent_max_error <= LATENT_F32_TOL * d->latent_max_abs,
              "max latent error %.3g (latents up to %.3g), allowed %.0e of that", d->latent_max_error,
              d->latent_max_abs, LATENT_F32_TOL);
        printf("  best vs reference: PSNR min %.2f dB, mean %.2f dB, latent error %.3g of %.3g\n", d->psnr_min_db,
               d->psnr_mean_db, d->latent_max_error, d->latent_max_abs);
        /* the images returned are those of the normal run */
        CHECK(plain->count == dbg->count, "count %d vs %d", plain->count, dbg->count);
        for (int i = 0; i < plain->count && i < dbg->count; i++)
            CHECK(memcmp(plain->images[i].rgb, dbg->images[i].rgb,
                         (size_t)plain->images[i].width * plain->images[i].height * 3) == 0 &&
                      plain->images[i].seed == dbg->images[i].seed,
                  "image %d differs with debug on", i);
    }
    kiln_result_destroy(plain);
    kiln_result_destroy(dbg);
    /* the same model again without debug: still the same pixels (the
     * reference's graphs do not linger in what the next request runs) */
    kiln_result *again = generate(&s, 0, 1), *first = generate(&s, 0, 1);
    if (again && first)
        CHECK(memcmp(again->images[0].rgb, first->images[0].rgb, (size_t)again->width * again->height * 3) == 0,
              "generation after debug differs");
    kiln_result_destroy(again);
    kiln_result_destroy(first);
    model_session_close(&s);
}

static void test_half_precision_against_reference(void)
{
    static const struct {
        const char *name;
        double psnr, latent;
    } halves[] = {{"f16", PSNR_F16_DB, LATENT_F16_TOL}, {"bf16", PSNR_BF16_DB, LATENT_BF16_TOL}};
    for (size_t i = 0; i < sizeof halves / sizeof halves[0]; i++) {
        model_session s;
        if (model_session_open(&s, tiny_model(), 2, halves[i].name) != 0)
            continue;
        kiln_result *plain = generate(&s, 0, 1), *dbg = generate(&s, 1, 1);
        if (plain && dbg) {
            const kiln_debug_report *d = &dbg->debug;
            CHECK(d->validated && strstr(d->reference, "loaded again at f32"),
                  "%s: the reference must load the model again at f32: %s", halves[i].name, d->reference);
            /* the tiny model's weights are f32: rounding them changes pixels */
            CHECK(isfinite(d->psnr_min_db) && d->psnr_min_db >= halves[i].psnr,
                  "%s: PSNR %.2f dB against the f32 reference, allowed %.0f and up (and finite)", halves[i].name,
                  d->psnr_min_db, halves[i].psnr);
            CHECK(d->latent_max_error > 0 && d->latent_max_error <= halves[i].latent * d->latent_max_abs,
                  "%s: max latent error %.3g (latents up to %.3g), allowed above 0 up to %.0e of that",
                  halves[i].name, d->latent_max_error, d->latent_max_abs, halves[i].latent);
            CHECK(memcmp(plain->images[0].rgb, dbg->images[0].rgb, (size_t)plain->width * plain->height * 3) == 0,
                  "%s: image differs with debug on", halves[i].name);
            printf("  %s vs f32 reference: PSNR %.2f dB, latent error %.3g of %.3g\n", halves[i].name,
                   d->psnr_min_db, d->latent_max_error, d->latent_max_abs);
        }
        kiln_result_destroy(plain);
        kiln_result_destroy(dbg);
        model_session_close(&s);
    }
}

/* The reference's progress comes as the "validate" stage; a cancel there
 * keeps every image and says the validation did not run. */
typedef struct stages_seen {
    int denoise, validate, cancel_in_validate;
} stages_seen;

static int watch_stages(void *user, const kiln_progress *p)
{
    stages_seen *s = user;
    if (strcmp(p->stage, "validate") == 0) {
        s->validate++;
        return s->cancel_in_validate;
    }
    s->denoise += strcmp(p->stage, "denoise") == 0;
    return 0;
}

static void test_validation_progress_and_cancel(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    for (int cancel = 0; cancel < 2; cancel++) {
        kiln_request r;
        kiln_request_defaults(&r);
        r.prompt = "a red circle";
        r.steps = 3;
        r.seed = 5;
        r.num_images = 2;
        r.debug = 1;
        stages_seen seen = {.cancel_in_validate = cancel};
        r.on_progress = watch_stages;
        r.user = &seen;
        kiln_result *res = NULL;
        kiln_status st = kiln_generate(s.model, &r, &res);
        if (!cancel) {
            CHECK(st == KILN_OK && res && res->debug.validated && seen.denoise > 0 && seen.validate > 0,
                  "progress through the reference: status %d, denoise %d, validate %d calls: %s", st, seen.denoise,
                  seen.validate, kiln_last_error());
        } else {
            CHECK(st == KILN_ERR_CANCELLED && res && res->count == 2 && !res->debug.validated &&
                      strstr(res->debug.reference, "cancelled") && seen.validate == 1,
                  "cancel in validation: status %d, %d images, validated %d, '%s', %d validate calls", st,
                  res ? res->count : -1, res ? res->debug.validated : -1, res ? res->debug.reference : "",
                  seen.validate);
        }
        kiln_result_destroy(res);
    }
    model_session_close(&s);
}

TEST_MAIN(TEST(test_executor_names_first_nonfinite), TEST(test_planted_nan_is_named),
          TEST(test_defaults_against_reference), TEST(test_half_precision_against_reference),
          TEST(test_validation_progress_and_cancel))
