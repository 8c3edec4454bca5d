/*
 * fuzz_request.c - request_parse, the JSON request reader of `kiln serve`
 * (apps/serve/request.c), on any bytes: the body of a txt2img and of an
 * img2img request, without a server.
 *
 * A body is either refused or parsed. A refusal has an HTTP status of 400
 * (500 only for out of memory), a kind the API documents, a one-line
 * message, a field that is "" or one the request format knows, and an
 * "allowed" that is NULL or JSON that serializes; the job_params are left
 * as they were. A parse gives values inside kiln.h's limits (sizes, steps,
 * cfg, image counts, prompt bytes), batches that cover the images asked
 * for, a sampler from the API's list, and the request echoed back as a
 * JSON object without its init images. That echo is what the server
 * answers with and logs: written out and read again as a txt2img request
 * it must parse to the same job (the seed too, when the request gave one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "serve.h"

static const char *const known_fields[] = {
    "prompt",     "negative_prompt", "seed",          "steps",       "cfg_scale", "width",
    "height",     "batch_size",      "n_iter",        "num_images",  "sampler_index", "sampler_name",
    "precision",  "rng",             "send_images",   "denoising_strength", "init_images",
};

static int known_field(const char *name)
{
    for (size_t i = 0; i < sizeof known_fields / sizeof known_fields[0]; i++)
        if (strcmp(name, known_fields[i]) == 0)
            return 1;
    return 0;
}

static void check_refusal(const api_error *err, int img2img)
{
    FUZZ_CHECK(err->status == 400 || (err->status == 500 && strcmp(err->kind, "out_of_memory") == 0),
               "status %d (%s)", err->status, err->detail);
    FUZZ_CHECK(err->kind && (strcmp(err->kind, "invalid_field") == 0 || strcmp(err->kind, "malformed_json") == 0 ||
                             strcmp(err->kind, "out_of_memory") == 0),
               "kind '%s'", err->kind ? err->kind : "(null)");
    FUZZ_CHECK(memchr(err->field, '\0', sizeof err->field) && memchr(err->detail, '\0', sizeof err->detail),
               "field or detail not terminated");
    FUZZ_CHECK(err->detail[0] != '\0', "a refusal without a message (kind %s)", err->kind);
    FUZZ_CHECK(err->field[0] == '\0' || known_field(err->field), "refusal names the field '%s'", err->field);
    FUZZ_CHECK(strcmp(err->kind, "invalid_field") != 0 || err->field[0] != '\0', "invalid_field without a field: %s",
               err->detail);
    FUZZ_CHECK(img2img || strcmp(err->field, "init_images") != 0, "txt2img refused for init_images: %s", err->detail);
    if (err->allowed) {
        char *text = json_dumps(err->allowed, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(text != NULL, "allowed of '%s' does not serialize", err->field);
        free(text);
    }
}

static void check_parsed(const job_params *p, int img2img)
{
    FUZZ_CHECK(p->prompt && p->negative_prompt, "a prompt is NULL");
    FUZZ_CHECK(strlen(p->prompt) <= KILN_MAX_PROMPT_BYTES && strlen(p->negative_prompt) <= KILN_MAX_PROMPT_BYTES,
               "prompts of %zu and %zu bytes", strlen(p->prompt), strlen(p->negative_prompt));
    FUZZ_CHECK(p->width == 0 || (p->width >= KILN_MIN_SIZE && p->width <= KILN_MAX_SIZE &&
                                 p->width % KILN_SIZE_MULTIPLE == 0),
               "width %d", p->width);
    FUZZ_CHECK(p->height == 0 || (p->height >= KILN_MIN_SIZE && p->height <= KILN_MAX_SIZE &&
                                  p->height % KILN_SIZE_MULTIPLE == 0),
               "height %d", p->height);
    FUZZ_CHECK(p->steps >= 0 && p->steps <= KILN_MAX_STEPS, "steps %d", p->steps);
    FUZZ_CHECK(p->cfg_scale == -1.0f || (p->cfg_scale >= 0 && p->cfg_scale <= KILN_MAX_CFG), "cfg_scale %g",
               (double)p->cfg_scale);
    FUZZ_CHECK(p->num_images >= 1 && p->num_images <= KILN_MAX_IMAGES, "num_images %d", p->num_images);
    FUZZ_CHECK(p->batch_size >= 1 && p->batch_size <= KILN_MAX_IMAGES && p->n_iter >= 1, "batch_size %d, n_iter %d",
               p->batch_size, p->n_iter);
    FUZZ_CHECK((long long)p->batch_size * p->n_iter >= p->num_images &&
                   (long long)p->batch_size * (p->n_iter - 1) < p->num_images,
               "%d batches of %d for %d images", p->n_iter, p->batch_size, p->num_images);
    int listed = p->sampler == NULL;
    for (int i = 0; i < serve_sampler_count; i++)
        listed |= p->sampler == &serve_samplers[i];
    FUZZ_CHECK(listed, "a sampler outside the list");
    FUZZ_CHECK(p->rng && (strcmp(p->rng, "torch-cpu") == 0 || strcmp(p->rng, "philox") == 0), "rng '%s'",
               p->rng ? p->rng : "(null)");
    FUZZ_CHECK(p->precision >= 0 && p->precision < SERVE_PRECISION_COUNT, "precision %d", (int)p->precision);
    FUZZ_CHECK(p->send_images == 0 || p->send_images == 1, "send_images %d", p->send_images);
    FUZZ_CHECK(p->img2img == img2img, "img2img %d, asked %d", p->img2img, img2img);
    if (img2img) {
        FUZZ_CHECK(p->strength > 0 && p->strength <= 1, "strength %g", (double)p->strength);
        FUZZ_CHECK(p->init_rgb && p->init_width > 0 && p->init_height > 0 &&
                       (long long)p->init_width * p->init_height <= KILN_MAX_INIT_PIXELS,
                   "init image %dx%d", p->init_width, p->init_height);
        /* every pixel is there (ASan checks the allocation) */
        volatile unsigned sum = 0;
        size_t bytes = (size_t)p->init_width * (size_t)p->init_height * 3;
        for (size_t i = 0; i < bytes; i += 61)
            sum += p->init_rgb[i];
        sum += p->init_rgb[bytes - 1];
        (void)sum;
    } else {
        FUZZ_CHECK(p->strength == 1.0f && !p->init_rgb, "txt2img with an init image or strength %g",
                   (double)p->strength);
    }
    FUZZ_CHECK(json_is_object(p->parameters), "the echoed request is not an object");
    json_t *init = json_object_get(p->parameters, "init_images");
    FUZZ_CHECK(!init || json_is_null(init), "the echoed request keeps its init images");
}

/* The echo, written and read again as txt2img: the same job. */
static void check_echo(const job_params *p, const char *body, size_t len)
{
    char *text = json_dumps(p->parameters, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "the echoed request does not serialize");
    job_params again;
    api_error err;
    int rc = request_parse(text, strlen(text), 0, SERVE_F16, &again, &err);
    FUZZ_CHECK(rc == 0, "the echo\n%s\nis refused: %s (field '%s')", text, err.detail, err.field);
    FUZZ_CHECK(strcmp(again.prompt, p->prompt) == 0 && strcmp(again.negative_prompt, p->negative_prompt) == 0,
               "prompts changed in the echo");
    FUZZ_CHECK(again.width == p->width && again.height == p->height && again.steps == p->steps &&
                   again.cfg_scale == p->cfg_scale && again.num_images == p->num_images &&
                   again.batch_size == p->batch_size && again.n_iter == p->n_iter && again.sampler == p->sampler &&
                   strcmp(again.rng, p->rng) == 0 && again.send_images == p->send_images,
               "the echo\n%s\nparses to another job", text);
    /* a missing precision took the default given: F16 here, F32 the first time */
    json_t *given = json_object_get(p->parameters, "precision");
    FUZZ_CHECK(again.precision == p->precision || !given || json_is_null(given), "precision changed in the echo");
    json_t *seed = json_object_get(p->parameters, "seed");
    if (json_is_integer(seed) && json_integer_value(seed) >= 0)
        FUZZ_CHECK(again.seed == p->seed, "seed %llu read back as %llu", (unsigned long long)p->seed,
                   (unsigned long long)again.seed);
    (void)body;
    (void)len;
    job_params_free(&again);
    free(text);
}

static void run(const uint8_t *data, size_t size, int img2img)
{
    job_params p;
    memset(&p, 0xA5, sizeof p);
    job_params before = p;
    api_error err;
    int rc = request_parse((const char *)data, size, img2img, SERVE_F32, &p, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "request_parse returned %d", rc);
        FUZZ_CHECK(memcmp(&p, &before, sizeof p) == 0, "a refused request wrote its out-parameter");
        check_refusal(&err, img2img);
        json_decref(err.allowed);
        return;
    }
    check_parsed(&p, img2img);
    check_echo(&p, (const char *)data, size);
    job_params_free(&p);
}

int fuzz_request(const uint8_t *data, size_t size)
{
    run(data, size, 0);
    run(data, size, 1);
    return 0;
}

#ifndef KILN_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_request(data, size);
}
#endif
