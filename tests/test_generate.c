/*
 * kiln_generate end to end on a tiny random-weight model of the real
 * architecture (written by tools/random_model.c into a temporary folder):
 * reproducibility across runs, thread counts and batch sizes, img2img,
 * cancellation, refusals that name the field, and the PNG output.
 */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/image_io.h"
#include "random_model.h"
#include "test_support.h"
#include "tiny_model.h"

static kiln_request base_request(void)
{
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = "a red circle on a blue background";
    r.negative_prompt = "blurry";
    r.steps = 3;
    r.seed = 1234;
    r.sampler = "euler_a";
    return r;
}

static int same_pixels(const kiln_image *a, const kiln_image *b)
{
    return a->width == b->width && a->height == b->height &&
           memcmp(a->rgb, b->rgb, (size_t)a->width * a->height * 3) == 0;
}

static void test_txt2img_is_reproducible(void)
{
    model_session one, two;
    if (model_session_open(&one, tiny_model(), 1, NULL) != 0 || model_session_open(&two, tiny_model(), 2, NULL) != 0)
        return;
    kiln_request r = base_request();
    r.num_images = 2;
    kiln_result *a = NULL, *b = NULL, *c = NULL;
    CHECK(kiln_generate(one.model, &r, &a) == KILN_OK, "generate: %s", kiln_last_error());
    CHECK(kiln_generate(two.model, &r, &b) == KILN_OK, "generate: %s", kiln_last_error());
    r.batch_size = 2;
    CHECK(kiln_generate(two.model, &r, &c) == KILN_OK, "generate batched: %s", kiln_last_error());
    if (a && b && c) {
        CHECK(a->count == 2 && a->images[0].width == 64 && a->images[0].height == 64,
              "expected 2 images of 64x64 (the model's native size), got %d of %dx%d", a->count, a->images[0].width,
              a->images[0].height);
        CHECK(a->images[0].seed == 1234 && a->images[1].seed == 1235, "seeds %llu, %llu: expected seed + i",
              (unsigned long long)a->images[0].seed, (unsigned long long)a->images[1].seed);
        for (int i = 0; i < 2; i++) {
            CHECK(same_pixels(&a->images[i], &b->images[i]), "image %d differs between 1 and 2 threads", i);
            CHECK(same_pixels(&a->images[i], &c->images[i]), "image %d differs between batch 1 and batch 2", i);
        }
        CHECK(!same_pixels(&a->images[0], &a->images[1]), "images of different seeds must differ");
        CHECK(strstr(a->images[1].parameters, "Seed: 1235") && strstr(a->images[1].parameters, "Sampler: Euler a") &&
                  strstr(a->images[1].parameters, "Negative prompt: blurry"),
              "parameters text: %s", a->images[1].parameters);
    }
    /* image 1 of the batch equals the same image made alone */
    kiln_result *alone = NULL;
    r.num_images = 1;
    r.batch_size = 0;
    r.seed = 1235;
    CHECK(kiln_generate(one.model, &r, &alone) == KILN_OK, "generate: %s", kiln_last_error());
    if (a && alone)
        CHECK(same_pixels(&a->images[1], &alone->images[0]), "image 1 of a batch differs from the same seed alone");
    kiln_result_destroy(a);
    kiln_result_destroy(b);
    kiln_result_destroy(c);
    kiln_result_destroy(alone);
    model_session_close(&one);
    model_session_close(&two);
}

/* Sizes that are multiples of 8 but not of 64 give odd feature maps in the
 * UNet; the way up must meet its skips (nearest upsampling to their size). */
static void test_sizes_not_multiples_of_64(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_request r = base_request();
    r.width = 72;
    r.height = 80;
    kiln_result *res = NULL;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK && res->images[0].width == 72 && res->images[0].height == 80,
          "72x80: %s", kiln_last_error());
    kiln_result_destroy(res);
    model_session_close(&s);
}

static void test_every_sampler_runs(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    const char *samplers[] = {"euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "lcm", "DPM++ 2M Karras"};
    for (size_t i = 0; i < sizeof samplers / sizeof samplers[0]; i++) {
        kiln_request r = base_request();
        r.sampler = samplers[i];
        r.rng = i % 2 ? "philox" : "torch-cpu";
        kiln_result *res = NULL;
        kiln_status st = kiln_generate(s.model, &r, &res);
        CHECK(st == KILN_OK && res && res->count == 1, "sampler %s: %s", samplers[i], kiln_last_error());
        kiln_result_destroy(res);
    }
    model_session_close(&s);
}

static void test_img2img(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    /* a 100x80 init image: resized to the 64x64 asked for */
    uint8_t *init = malloc(100 * 80 * 3);
    for (int i = 0; i < 100 * 80 * 3; i++)
        init[i] = (uint8_t)(i * 7);
    kiln_request r = base_request();
    r.init_rgb = init;
    r.init_width = 100;
    r.init_height = 80;
    r.strength = 0.5f;
    r.steps = 4;
    kiln_result *res = NULL;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK, "img2img: %s", kiln_last_error());
    if (res) {
        CHECK(res->count == 1 && res->images[0].width == 64, "img2img: %d images", res->count);
        CHECK(res->timings.unet_evals == 3, "strength 0.5 of 4 steps runs 3 (A1111's rule), ran %d",
              res->timings.unet_evals);
        CHECK(strstr(res->images[0].parameters, "Denoising strength: 0.5") != NULL, "parameters: %s",
              res->images[0].parameters);
    }
    kiln_result_destroy(res);
    free(init);
    model_session_close(&s);
}

static int cancel_after_two(void *user, const kiln_progress *p)
{
    int *calls = user;
    ++*calls;
    return *calls >= 2 && p->images_done >= 1;
}

static void test_cancel_keeps_finished_images(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_request r = base_request();
    r.num_images = 3;
    r.batch_size = 1; /* one image per batch, so one is finished before the cancel */
    int calls = 0;
    r.on_progress = cancel_after_two;
    r.user = &calls;
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s.model, &r, &res);
    CHECK(st == KILN_ERR_CANCELLED, "expected a cancel, got %s", kiln_status_string(st));
    CHECK(res && res->count == 1, "the finished image must be kept: %d", res ? res->count : -1);
    kiln_result_destroy(res);
    model_session_close(&s);
}

typedef struct image_log {
    int calls, stop_at;
    int index[8];
    uint64_t seed[8];
    int had_parameters;
    uint8_t first_pixels[16];
} image_log;

static int log_image(void *user, const kiln_image *img, int index)
{
    image_log *log = user;
    if (log->calls < 8) {
        log->index[log->calls] = index;
        log->seed[log->calls] = img->seed;
    }
    log->had_parameters += img->parameters && strstr(img->parameters, "Seed: ") != NULL;
    if (log->calls == 0)
        memcpy(log->first_pixels, img->rgb, sizeof log->first_pixels);
    log->calls++;
    return log->stop_at && log->calls >= log->stop_at;
}

/* on_image: each image as it is finished, in order, with its parameters,
 * the same pixels the result keeps; a non-zero return cancels after it. */
static void test_image_callback(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_request r = base_request();
    r.num_images = 3;
    r.batch_size = 2; /* two batches: 2 + 1 */
    image_log log = {0};
    r.on_image = log_image;
    r.user = &log;
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s.model, &r, &res);
    CHECK(st == KILN_OK && res && res->count == 3, "status %s", kiln_status_string(st));
    CHECK(log.calls == 3 && log.had_parameters == 3, "calls %d, with parameters %d", log.calls, log.had_parameters);
    for (int i = 0; i < 3 && i < log.calls; i++)
        CHECK(log.index[i] == i && log.seed[i] == r.seed + (uint64_t)i, "call %d: index %d, seed %llu", i,
              log.index[i], (unsigned long long)log.seed[i]);
    if (res && res->count)
        CHECK(memcmp(res->images[0].rgb, log.first_pixels, sizeof log.first_pixels) == 0,
              "the result's first image differs from the one handed out");
    kiln_result_destroy(res);

    image_log stop = {.stop_at = 1};
    r.user = &stop;
    res = NULL;
    st = kiln_generate(s.model, &r, &res);
    CHECK(st == KILN_ERR_CANCELLED && res && res->count == 1 && stop.calls == 1,
          "cancel from on_image: status %s, count %d, calls %d", kiln_status_string(st), res ? res->count : -1,
          stop.calls);
    CHECK(res && res->count == 1 && res->images[0].parameters, "the kept image has its parameters");
    kiln_result_destroy(res);
    model_session_close(&s);
}

static void expect_refused(model_session *s, kiln_request r, const char *field)
{
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s->model, &r, &res);
    CHECK(st == KILN_ERR_INVALID && res == NULL, "%s: expected invalid, got %s", field, kiln_status_string(st));
    CHECK(strstr(kiln_last_error(), field) != NULL, "the message must name '%s': %s", field, kiln_last_error());
}

static void test_bad_requests_are_refused(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 1, NULL) != 0)
        return;
    kiln_request r = base_request();
    r.width = 100;
    expect_refused(&s, r, "width");
    r = base_request();
    r.height = 4096;
    expect_refused(&s, r, "height");
    r = base_request();
    r.steps = 151;
    expect_refused(&s, r, "steps");
    r = base_request();
    r.cfg_scale = 31;
    expect_refused(&s, r, "cfg_scale");
    r = base_request();
    r.num_images = 65;
    expect_refused(&s, r, "num_images");
    r = base_request();
    r.sampler = "heun";
    expect_refused(&s, r, "sampler");
    r = base_request();
    r.rng = "lcg";
    expect_refused(&s, r, "rng");
    r = base_request();
    char *long_prompt = malloc(KILN_MAX_PROMPT_BYTES + 2);
    memset(long_prompt, 'a', KILN_MAX_PROMPT_BYTES + 1);
    long_prompt[KILN_MAX_PROMPT_BYTES + 1] = '\0';
    r.prompt = long_prompt;
    expect_refused(&s, r, "prompt");
    free(long_prompt);
    r = base_request();
    uint8_t pixel[3] = {0};
    r.init_rgb = pixel;
    r.init_width = r.init_height = 1;
    r.strength = 0;
    expect_refused(&s, r, "strength");
    model_session_close(&s);
}

static void test_png_output(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_request r = base_request();
    kiln_result *res = NULL;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK, "generate: %s", kiln_last_error());
    if (res) {
        char path[512];
        snprintf(path, sizeof path, "%s/out.png", test_tmp_dir());
        CHECK(kiln_image_write_png(&res->images[0], path, 0) == KILN_OK, "write: %s", kiln_last_error());
        CHECK(kiln_image_write_png(&res->images[0], path, 0) == KILN_ERR_IO, "a second write must not overwrite");
        CHECK(strstr(kiln_last_error(), "exists") != NULL, "message: %s", kiln_last_error());
        CHECK(kiln_image_write_png(&res->images[0], path, 1) == KILN_OK, "overwrite when asked: %s", kiln_last_error());
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        CHECK(kiln_image_read_png(path, &rgb, &w, &h) == KILN_OK, "read back: %s", kiln_last_error());
        CHECK(w == 64 && h == 64 && rgb && memcmp(rgb, res->images[0].rgb, 64 * 64 * 3) == 0,
              "PNG read back differs from the image written");
        free(rgb);
        snprintf(path, sizeof path, "%s/no-such-dir/out.png", test_tmp_dir());
        CHECK(kiln_image_write_png(&res->images[0], path, 0) == KILN_ERR_IO, "writing into a missing directory");
        CHECK(strstr(kiln_last_error(), "no-such-dir") != NULL, "message names the path: %s", kiln_last_error());
    }
    kiln_result_destroy(res);
    model_session_close(&s);
}

/* f16 weights change the pixels a little, not the picture: PSNR against
 * the f32 image (8-bit, peak 255) of at least 35 dB. */
static void test_f16_precision(void)
{
    model_session f32, f16;
    if (model_session_open(&f32, tiny_model(), 2, NULL) != 0 || model_session_open(&f16, tiny_model(), 2, "f16") != 0)
        return;
    kiln_request r = base_request();
    kiln_result *a = NULL, *b = NULL;
    CHECK(kiln_generate(f32.model, &r, &a) == KILN_OK, "f32: %s", kiln_last_error());
    CHECK(kiln_generate(f16.model, &r, &b) == KILN_OK, "f16: %s", kiln_last_error());
    if (a && b) {
        double se = 0;
        size_t n = (size_t)a->images[0].width * a->images[0].height * 3;
        for (size_t i = 0; i < n; i++) {
            double d = (double)a->images[0].rgb[i] - b->images[0].rgb[i];
            se += d * d;
        }
        double psnr = se == 0 ? 99.0 : 10.0 * log10(255.0 * 255.0 / (se / (double)n));
        printf("    f16 weights vs f32: PSNR %.1f dB\n", psnr);
        CHECK(psnr >= 35.0, "f16 weights: PSNR %.1f dB against f32, expected >= 35", psnr);
    }
    kiln_result_destroy(a);
    kiln_result_destroy(b);
    model_session_close(&f32);
    model_session_close(&f16);
    kiln_engine *e = NULL;
    kiln_model *m = NULL;
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    mo.precision = "f8";
    kiln_engine_create(NULL, &e);
    CHECK(kiln_model_load(e, tiny_model(), &mo, &m) == KILN_ERR_INVALID && strstr(kiln_last_error(), "precision"),
          "an unknown precision must be refused naming the field: %s", kiln_last_error());
    kiln_model_destroy(m);
    kiln_engine_destroy(e);
}

/* A model on an engine with this memory budget. */
static int open_budgeted(model_session *s, size_t budget)
{
    memset(s, 0, sizeof *s);
    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = 2;
    eo.max_memory = budget;
    if (!tiny_model() || kiln_engine_create(&eo, &s->engine) != KILN_OK ||
        kiln_model_load(s->engine, tiny_model(), NULL, &s->model) != KILN_OK) {
        CHECK(0, "opening the tiny model: %s", kiln_last_error());
        return -1;
    }
    return 0;
}

/* The batch comes from the memory plan: everything at once when it fits,
 * never more than batch_size asks, as many as a budget holds, and a
 * request that cannot fit is refused up front naming max_memory. The
 * graphs run one at a time, so the peak is the largest one's: the request
 * decodes in small tiles so that the UNet's arena, which grows with the
 * batch, is the largest and the budget decides the batch. */
static void test_memory_plan(void)
{
    model_session s;
    if (open_budgeted(&s, SIZE_MAX) != 0)
        return;
    kiln_request r = base_request();
    r.num_images = 4;
    r.width = r.height = 256;
    kiln_optimizations o;
    kiln_optimizations_defaults(&o);
    o.vae_tiling = 1;
    o.vae_tile = 64;
    r.optimizations = &o;
    kiln_result *res = NULL;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK, "generate: %s", kiln_last_error());
    size_t base = 0, per_image = 0;
    if (res) {
        const kiln_plan *p = &res->plan;
        CHECK(p->batch == 4 && p->micro_batches == 1, "unlimited: batch %d x %d", p->batch, p->micro_batches);
        per_image = p->bytes_per_image;
        base = p->total_bytes - 4 * per_image;
        CHECK(per_image > 0 && p->total_bytes > p->weight_bytes + p->activation_bytes &&
                  p->activation_bytes >= p->decoder_bytes,
              "plan bytes: per image %zu, weights %zu, activations %zu, decoder %zu, total %zu", per_image,
              p->weight_bytes, p->activation_bytes, p->decoder_bytes, p->total_bytes);
        /* the premise: one image's UNet arena outweighs a tile's decoder */
        CHECK(p->activation_bytes - 3 * per_image > p->decoder_bytes,
              "the UNet must be the largest graph: activations %zu (per image %zu), decoder %zu", p->activation_bytes,
              per_image, p->decoder_bytes);
    }
    kiln_result_destroy(res);
    res = NULL;
    r.batch_size = 3;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK && res->plan.batch == 3 && res->plan.micro_batches == 2,
          "batch_size 3 of 4 images: batch %d x %d", res ? res->plan.batch : -1, res ? res->plan.micro_batches : -1);
    kiln_result_destroy(res);
    res = NULL;
    model_session_close(&s);

    /* room for the base and two and a half images: batches of 2 */
    if (per_image && open_budgeted(&s, base + 2 * per_image + per_image / 2) == 0) {
        r.batch_size = 0;
        CHECK(kiln_generate(s.model, &r, &res) == KILN_OK && res->plan.batch == 2 && res->plan.micro_batches == 2,
              "a budget for 2.5 images: batch %d x %d (%s)", res ? res->plan.batch : -1,
              res ? res->plan.micro_batches : -1, kiln_last_error());
        kiln_result_destroy(res);
        res = NULL;
        model_session_close(&s);
    }
    /* no room for one image */
    if (open_budgeted(&s, 1 << 20) == 0) {
        kiln_status st = kiln_generate(s.model, &r, &res);
        CHECK(st == KILN_ERR_INVALID && res == NULL && strstr(kiln_last_error(), "max_memory"),
              "a request over budget must be refused naming max_memory: %s", kiln_last_error());
        model_session_close(&s);
    }
}

/* ---- the op profile, the step times and the timeline ---- */

typedef struct trace_log {
    int count, cap;
    kiln_trace_event *ev; /* names kept only for stages (copied) */
    char (*stage)[32];
} trace_log;

static void collect(void *user, const kiln_trace_event *ev)
{
    trace_log *t = user;
    if (t->count == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 1024;
        t->ev = realloc(t->ev, (size_t)t->cap * sizeof *t->ev);
        t->stage = realloc(t->stage, (size_t)t->cap * sizeof *t->stage);
    }
    t->ev[t->count] = *ev;
    snprintf(t->stage[t->count], sizeof t->stage[0], "%s", strcmp(ev->kind, "stage") == 0 ? ev->name : "");
    t->ev[t->count].name = t->ev[t->count].graph = NULL;
    t->ev[t->count].kind = strcmp(ev->kind, "stage") == 0 ? "stage" : "node";
    if (ev->graph)
        t->ev[t->count].graph = !strcmp(ev->graph, "unet") ? "unet" : !strcmp(ev->graph, "text") ? "text" : "vae";
    t->count++;
}

static void test_profile_and_timeline(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_request r = base_request();
    r.sampler = "euler"; /* one UNet evaluation per step */
    r.num_images = 4;
    r.batch_size = 3; /* micro-batches of 3 and 1 */
    trace_log log = {0};
    r.on_trace = collect;
    r.user = &log;
    kiln_result *res = NULL;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK, "generate: %s", kiln_last_error());
    if (!res) {
        model_session_close(&s);
        return;
    }
    /* 3 steps in each of 2 micro-batches; runs: text 1 + UNet 6 + decode 4 */
    CHECK_EQ_INT(res->step_count, 6);
    CHECK_EQ_INT(res->timings.unet_evals, 6);
    CHECK_EQ_INT(res->graph_runs, 11);
    double steps_sum = 0;
    for (int i = 0; i < res->step_count; i++) {
        CHECK(res->step_s[i] > 0, "step %d took %g s", i, res->step_s[i]);
        steps_sum += res->step_s[i];
    }
    CHECK(steps_sum <= res->timings.denoise_s + 1e-6 && steps_sum > 0.5 * res->timings.denoise_s,
          "steps add up to %g s of a %g s denoise", steps_sum, res->timings.denoise_s);
    double share = 0, seconds = 0, profile_gflop = 0;
    int64_t nodes = 0;
    int conv = 0;
    for (int i = 0; i < res->op_count; i++) {
        const kiln_op_profile *o = &res->ops[i];
        share += o->share;
        seconds += o->seconds;
        nodes += o->nodes;
        profile_gflop += o->gflop;
        CHECK(i == 0 || res->ops[i - 1].seconds >= o->seconds, "ops must be slowest first (%s before %s)",
              res->ops[i - 1].name, o->name);
        CHECK(strcmp(o->name, "input") && strcmp(o->name, "weight"), "op kind '%s' does no work", o->name);
        if (!strcmp(o->name, "conv2d")) {
            conv = 1;
            CHECK(o->gflop > 0 && fabs(o->gflops - o->gflop / o->seconds) < 1e-6 * o->gflops,
                  "conv2d: %g GFLOP in %g s reported as %g GFLOP/s", o->gflop, o->seconds, o->gflops);
        }
    }
    CHECK(conv, "the profile must have conv2d");
    CHECK(fabs(share - 1.0) < 1e-9, "shares add up to %.12f", share);
    CHECK(seconds <= res->timings.total_s, "ops took %g s of a %g s generation", seconds, res->timings.total_s);

    /* the timeline: a slice per node the profile counted, stages around them */
    int node_events = 0, steps_seen = 0, text = 0, denoise = 0, decode = 0;
    int per_step[2][4] = {{0}};
    double trace_gflop = 0;
    for (int i = 0; i < log.count; i++) {
        const kiln_trace_event *e = &log.ev[i];
        CHECK(e->dur_s >= 0 && e->start_s >= 0, "event %d: start %g, duration %g", i, e->start_s, e->dur_s);
        CHECK(e->flops >= 0 && (strcmp(e->kind, "stage") != 0 || e->flops == 0), "event %d (%s): %g flops", i,
              e->kind, e->flops);
        if (strcmp(e->kind, "stage") != 0) {
            node_events++;
            trace_gflop += e->flops * 1e-9;
            if (e->graph && !strcmp(e->graph, "unet") && e->batch >= 0 && e->batch < 2 && e->step >= 1 &&
                e->step <= 3)
                per_step[e->batch][e->step]++;
            else if (e->graph && !strcmp(e->graph, "unet"))
                CHECK(0, "UNet node outside a step: batch %d step %d", e->batch, e->step);
            continue;
        }
        text += !strcmp(log.stage[i], "text");
        denoise += !strcmp(log.stage[i], "denoise");
        decode += !strcmp(log.stage[i], "decode");
        if (!strncmp(log.stage[i], "step ", 5)) {
            steps_seen++;
            /* every node of this step lies inside it */
            for (int j = 0; j < log.count; j++)
                if (strcmp(log.ev[j].kind, "stage") && log.ev[j].batch == e->batch && log.ev[j].step == e->step &&
                    log.ev[j].graph && !strcmp(log.ev[j].graph, "unet"))
                    CHECK(log.ev[j].start_s >= e->start_s &&
                              log.ev[j].start_s + log.ev[j].dur_s <= e->start_s + e->dur_s + 1e-9,
                          "node at %g+%g outside step %d [%g, %g]", log.ev[j].start_s, log.ev[j].dur_s, e->step,
                          e->start_s, e->start_s + e->dur_s);
        }
    }
    CHECK_EQ_INT(node_events, nodes);
    /* the slices carry the work the profile sums per op kind */
    CHECK(profile_gflop > 0 && fabs(trace_gflop - profile_gflop) <= 1e-9 * profile_gflop,
          "the node slices carry %.9g GFLOP, the profile %.9g", trace_gflop, profile_gflop);
    CHECK(text == 1 && denoise == 2 && decode == 2 && steps_seen == 6,
          "stages: text %d (1), denoise %d (2), decode %d (2), steps %d (6)", text, denoise, decode, steps_seen);
    for (int b = 0; b < 2; b++)
        for (int st = 1; st <= 3; st++)
            CHECK(per_step[b][st] > 0 && per_step[b][st] == per_step[0][1],
                  "batch %d step %d has %d UNet nodes, step 1 of batch 0 %d", b, st, per_step[b][st], per_step[0][1]);
    kiln_result_destroy(res);
    free(log.ev);
    free(log.stage);

    /* without on_trace the executors were left detached: a second request runs and profiles alone */
    r.on_trace = NULL;
    r.num_images = 1;
    res = NULL;
    CHECK(kiln_generate(s.model, &r, &res) == KILN_OK && res->graph_runs == 1 + 3 + 1 && res->step_count == 3,
          "second request: %d graph runs (5), %d steps (3)", res ? res->graph_runs : -1, res ? res->step_count : -1);
    kiln_result_destroy(res);
    model_session_close(&s);
}

/* BF16 files load and generate; a file missing a tensor is refused at load,
 * naming the tensor and the shape expected. */
static void test_bf16_and_missing_tensors(void)
{
    random_model_spec spec;
    random_model_preset("tiny", &spec);
    char *tokenizer = test_shared_path("clip-tokenizer");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/bf16", test_tmp_dir());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tiny-bf16.safetensors", dir);
    random_model_options o = {.dtype = KILN_DTYPE_BF16, .seed = 7, .tokenizer_from = tokenizer};
    CHECK(random_model_write(&spec, &o, path) == KILN_OK, "writing a bf16 model: %s", kiln_last_error());
    free(tokenizer);
    kiln_engine *e = NULL;
    kiln_model *m = NULL;
    kiln_result *res = NULL;
    kiln_engine_create(NULL, &e);
    CHECK(kiln_model_load(e, path, NULL, &m) == KILN_OK, "loading bf16: %s", kiln_last_error());
    kiln_request r = base_request();
    if (m)
        CHECK(kiln_generate(m, &r, &res) == KILN_OK && res->count == 1, "bf16 generate: %s", kiln_last_error());
    kiln_result_destroy(res);
    kiln_model_destroy(m);
    m = NULL;

    /* rename one tensor in the header (same length, so the file stays valid) */
    FILE *f = fopen(path, "r+b");
    char header[65536];
    size_t n = f ? fread(header, 1, sizeof header, f) : 0;
    const char *victim = "input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight";
    char *at = n ? memmem(header, n, victim, strlen(victim)) : NULL;
    CHECK(at != NULL, "tensor %s not found in the header", victim);
    if (at) {
        at[strlen(victim) - 1] = 'X';
        fseek(f, at - header, SEEK_SET);
        fwrite(at, 1, strlen(victim), f);
    }
    if (f)
        fclose(f);
    kiln_status st = kiln_model_load(e, path, NULL, &m);
    CHECK(st == KILN_ERR_FORMAT && m == NULL, "a missing tensor must fail the load, got %s", kiln_status_string(st));
    CHECK(strstr(kiln_last_error(), "attn2.to_v.weight") && strstr(kiln_last_error(), "[32, 32]"),
          "the message must name the tensor and its shape: %s", kiln_last_error());
    kiln_model_destroy(m);
    kiln_engine_destroy(e);
}

static void test_cleanup(void)
{
    tiny_model_free();
}

TEST_MAIN(TEST(test_txt2img_is_reproducible), TEST(test_profile_and_timeline), TEST(test_sizes_not_multiples_of_64), TEST(test_every_sampler_runs), TEST(test_img2img),
          TEST(test_cancel_keeps_finished_images), TEST(test_image_callback), TEST(test_bad_requests_are_refused), TEST(test_png_output),
          TEST(test_f16_precision), TEST(test_memory_plan), TEST(test_bf16_and_missing_tensors), TEST(test_cleanup))
