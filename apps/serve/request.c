/*
 * request.c - an A1111-style generation request (JSON) into job_params.
 *
 * Fields follow AUTOMATIC1111's /sdapi/v1/txt2img and img2img: prompt,
 * negative_prompt, seed (-1: random), steps, cfg_scale, width, height,
 * batch_size, n_iter, sampler_name (or the older sampler_index),
 * denoising_strength, init_images (base64 PNG, or a data: URL), send_images;
 * and kiln's own precision ("f32", "f16", "bf16"), rng ("torch-cpu", "philox"),
 * num_images (any count, made in batches of batch_size; replaces n_iter) and
 * the optimization switches of kiln_optimizations under their own names:
 * attention ("tiled", "plain"), attention_tile (integer), layout ("nhwc",
 * "nchw"), fusion, winograd, fast_math and vae_tiling (true/false or "on"/"off"),
 * memory ("plan", "alloc"), threads and vae_tile (integers). A switch that
 * cannot run here is not refused: the answer reports what ran and why.
 * debug (true/false) runs in debug mode (kiln_request.debug): the answer
 * carries the report (the first NaN/Inf node, PSNR and latent error
 * against the f32 reference).
 * Fields A1111 has and kiln does not (styles, subseed, restore_faces, ...)
 * are ignored, as A1111 ignores what it does not know; a null value means
 * "not given". A known field with a value of the wrong type or outside
 * kiln.h's limits is refused, naming the field and what it allows.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "pipeline/image_io.h"
#include "pipeline/samplers.h"
#include "serve.h"

/* ---- samplers and precisions ---- */

const serve_sampler serve_samplers[] = {
    {"euler_a", "Euler a"},   {"euler", "Euler"}, {"dpmpp_2m", "DPM++ 2M"}, {"dpmpp_2m_karras", "DPM++ 2M Karras"},
    {"ddim", "DDIM"},         {"lcm", "LCM"},
};
const int serve_sampler_count = (int)(sizeof serve_samplers / sizeof serve_samplers[0]);

const serve_sampler *serve_sampler_find(const char *name)
{
    sampler_kind kind;
    int karras;
    /* the library's parser knows every alias; map its answer onto the list */
    if (sampler_parse(name, &kind, &karras) != 0)
        return NULL;
    const char *a1111 = sampler_a1111_name(kind, karras);
    for (int i = 0; i < serve_sampler_count; i++)
        if (strcmp(serve_samplers[i].a1111_name, a1111) == 0)
            return &serve_samplers[i];
    return NULL; /* a variant the API does not list (e.g. "Euler Karras") */
}

static const char *const precision_names[SERVE_PRECISION_COUNT] = {"f32", "f16", "bf16"};
/* a serve_precision is the kiln_precision of the same name */
_Static_assert((int)SERVE_F32 == (int)KILN_PRECISION_F32 && (int)SERVE_F16 == (int)KILN_PRECISION_F16 &&
                   (int)SERVE_BF16 == (int)KILN_PRECISION_BF16 && (int)SERVE_PRECISION_COUNT == (int)KILN_PRECISION_COUNT,
               "serve and kiln precisions line up");

const char *serve_precision_name(serve_precision p)
{
    return p >= 0 && p < SERVE_PRECISION_COUNT ? precision_names[p] : "?";
}

int serve_precision_parse(const char *name, serve_precision *out)
{
    for (int i = 0; i < SERVE_PRECISION_COUNT; i++)
        if (strcmp(name, precision_names[i]) == 0) {
            *out = (serve_precision)i;
            return 0;
        }
    return -1;
}

void job_params_free(job_params *p)
{
    free(p->prompt);
    free(p->negative_prompt);
    free(p->init_rgb);
    json_decref(p->parameters);
    memset(p, 0, sizeof *p);
}

/* ---- errors ---- */

static int fail(api_error *err, const char *field, json_t *allowed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(api_error *err, const char *field, json_t *allowed, const char *fmt, ...)
{
    err->status = 400;
    err->kind = "invalid_field";
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    err->allowed = allowed;
    return -1;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static json_t *range(double lo, double hi)
{
    return json_pack("{s:f, s:f}", "min", lo, "max", hi);
}

static json_t *int_range(long long lo, long long hi)
{
    return json_pack("{s:I, s:I}", "min", (json_int_t)lo, "max", (json_int_t)hi);
}

/* The value of a field, or NULL when absent or null. */
static json_t *field(json_t *root, const char *name)
{
    json_t *v = json_object_get(root, name);
    return v && !json_is_null(v) ? v : NULL;
}

/* An integer field within [lo, hi]: 0 (with *out set, or untouched when the
 * field is absent), or -1 with err filled. Integral reals (20.0) pass. */
static int get_int(json_t *root, const char *name, long long lo, long long hi, long long *out, api_error *err)
{
    json_t *v = field(root, name);
    if (!v)
        return 0;
    long long n;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        n = (long long)json_real_value(v);
    } else {
        return fail(err, name, int_range(lo, hi), "%s must be an integer from %lld to %lld, got %s", name, lo, hi,
                    type_name(v));
    }
    if (n < lo || n > hi)
        return fail(err, name, int_range(lo, hi), "%s must be an integer from %lld to %lld, got %lld", name, lo, hi,
                    n);
    *out = n;
    return 0;
}

static int get_number(json_t *root, const char *name, double lo, double hi, int open_lo, double *out,
                      api_error *err)
{
    json_t *v = field(root, name);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return fail(err, name, range(lo, hi), "%s must be a number from %g%s to %g, got %s", name, lo,
                    open_lo ? " (exclusive)" : "", hi, type_name(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi) || (open_lo && x <= lo))
        return fail(err, name, range(lo, hi), "%s must be a number from %g%s to %g, got %g", name, lo,
                    open_lo ? " (exclusive)" : "", hi, x);
    *out = x;
    return 0;
}

static int get_string(json_t *root, const char *name, size_t max_bytes, const char **out, api_error *err)
{
    json_t *v = field(root, name);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return fail(err, name, NULL, "%s must be a string, got %s", name, type_name(v));
    if (json_string_length(v) > max_bytes)
        return fail(err, name, json_pack("{s:I}", "max_bytes", (json_int_t)max_bytes),
                    "%s is %zu bytes; at most %zu are allowed", name, json_string_length(v), max_bytes);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(err, name, NULL, "%s must not contain NUL characters", name);
    *out = json_string_value(v);
    return 0;
}

static int get_bool(json_t *root, const char *name, int *out, api_error *err)
{
    json_t *v = field(root, name);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return fail(err, name, NULL, "%s must be true or false, got %s", name, type_name(v));
    *out = json_is_true(v);
    return 0;
}

static int get_size(json_t *root, const char *name, int *out, api_error *err)
{
    long long n = -1;
    if (get_int(root, name, KILN_MIN_SIZE, KILN_MAX_SIZE, &n, err) != 0) {
        json_object_set_new(err->allowed, "multiple_of", json_integer(KILN_SIZE_MULTIPLE));
        return -1;
    }
    if (n < 0)
        return 0;
    if (n % KILN_SIZE_MULTIPLE)
        return fail(err, name,
                    json_pack("{s:i, s:i, s:i}", "min", KILN_MIN_SIZE, "max", KILN_MAX_SIZE, "multiple_of",
                              KILN_SIZE_MULTIPLE),
                    "%s must be a multiple of %d from %d to %d, got %lld", name, KILN_SIZE_MULTIPLE, KILN_MIN_SIZE,
                    KILN_MAX_SIZE, n);
    *out = (int)n;
    return 0;
}

static json_t *sampler_names(void)
{
    json_t *a = json_array();
    for (int i = 0; i < serve_sampler_count; i++) {
        json_array_append_new(a, json_string(serve_samplers[i].name));
        json_array_append_new(a, json_string(serve_samplers[i].a1111_name));
    }
    return a;
}

static uint64_t random_seed(void)
{
    uint32_t s;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint32_t)(ts.tv_nsec ^ ts.tv_sec);
    }
    return s; /* A1111 draws seeds below 2^32 */
}

/* The optimization switches other than precision: a string, an integer or
 * a boolean, checked by kiln_optimizations_set. */
static int get_optimizations(json_t *root, kiln_optimizations *o, api_error *err)
{
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        if (k == KILN_OPT_PRECISION)
            continue;
        const char *name = kiln_opt_name((kiln_opt)k);
        json_t *v = field(root, name);
        if (!v)
            continue;
        char text[32];
        if (json_is_string(v))
            snprintf(text, sizeof text, "%.31s", json_string_value(v));
        else if (json_is_boolean(v))
            snprintf(text, sizeof text, "%s", json_is_true(v) ? "on" : "off");
        else if (json_is_integer(v))
            snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
        else
            return fail(err, name, json_string(kiln_opt_allowed((kiln_opt)k)), "%s must be %s, got %s", name,
                        kiln_opt_allowed((kiln_opt)k), type_name(v));
        if (kiln_optimizations_set(o, name, text) != KILN_OK)
            return fail(err, name, json_string(kiln_opt_allowed((kiln_opt)k)), "%s", kiln_last_error());
    }
    return 0;
}

/* init_images[0]: base64 PNG, bare or as a data: URL */
static int get_init_image(json_t *root, job_params *p, api_error *err)
{
    json_t *v = field(root, "init_images");
    if (!v)
        return fail(err, "init_images", NULL, "img2img needs init_images: a list with one base64 PNG");
    if (!json_is_array(v))
        return fail(err, "init_images", NULL, "init_images must be a list of base64 PNG strings, got %s",
                    type_name(v));
    if (json_array_size(v) != 1)
        return fail(err, "init_images", json_pack("{s:i, s:i}", "min", 1, "max", 1),
                    "init_images must hold exactly one image, got %zu", json_array_size(v));
    json_t *s = json_array_get(v, 0);
    if (!json_is_string(s))
        return fail(err, "init_images", NULL, "init_images[0] must be a base64 PNG string, got %s", type_name(s));
    const char *text = json_string_value(s);
    size_t len = json_string_length(s);
    if (strncmp(text, "data:", 5) == 0) {
        const char *comma = memchr(text, ',', len);
        if (!comma || !strstr(text, ";base64,") || strstr(text, ";base64,") + 7 != comma)
            return fail(err, "init_images", NULL, "init_images[0]: a data: URL must be data:image/png;base64,...");
        len -= (size_t)(comma + 1 - text);
        text = comma + 1;
    }
    uint8_t *png = NULL;
    size_t png_len = 0;
    if (base64_decode(text, len, &png, &png_len) != 0)
        return fail(err, "init_images", NULL, "init_images[0] is not valid base64");
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    kiln_status st = png_decode_rgb(png, png_len, "init_images[0]", KILN_MAX_INIT_PIXELS, &rgb, &w, &h);
    free(png);
    if (st != KILN_OK)
        return fail(err, "init_images", json_pack("{s:s, s:I}", "format", "png", "max_pixels",
                                                  (json_int_t)KILN_MAX_INIT_PIXELS),
                    "%s", kiln_last_error());
    p->init_rgb = rgb;
    p->init_width = w;
    p->init_height = h;
    return 0;
}

int request_parse(const char *body, size_t len, int img2img, serve_precision default_precision, job_params *out,
                  api_error *err)
{
    memset(err, 0, sizeof *err);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        fail(err, NULL, NULL, "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
             jerr.column);
        err->kind = "malformed_json";
        return -1;
    }
    if (!json_is_object(root)) {
        fail(err, NULL, NULL, "the body must be a JSON object, got %s", type_name(root));
        err->kind = "malformed_json";
        json_decref(root);
        return -1;
    }

    job_params p;
    memset(&p, 0, sizeof p);
    p.cfg_scale = -1.0f;
    p.rng = "torch-cpu";
    p.precision = default_precision;
    kiln_optimizations_defaults(&p.optimizations);
    p.optimizations.threads = 0; /* the server's engine */
    p.img2img = img2img;
    p.strength = 0.75f;
    p.send_images = 1;
    p.tuned = -1;
    const char *prompt = "", *negative = "", *sampler = NULL, *precision = NULL, *rng = NULL;
    long long seed = -1, steps = 0, batch_size = 1, n_iter = 1, num_images = 0;
    double cfg = -1, strength = 0.75;

    if (get_string(root, "prompt", KILN_MAX_PROMPT_BYTES, &prompt, err) ||
        get_string(root, "negative_prompt", KILN_MAX_PROMPT_BYTES, &negative, err) ||
        get_int(root, "seed", -1, INT64_MAX, &seed, err) || get_int(root, "steps", 1, KILN_MAX_STEPS, &steps, err) ||
        get_number(root, "cfg_scale", 0, KILN_MAX_CFG, 0, &cfg, err) || get_size(root, "width", &p.width, err) ||
        get_size(root, "height", &p.height, err) ||
        get_int(root, "batch_size", 1, KILN_MAX_IMAGES, &batch_size, err) ||
        get_int(root, "n_iter", 1, KILN_MAX_IMAGES, &n_iter, err) ||
        get_int(root, "num_images", 1, KILN_MAX_IMAGES, &num_images, err) || get_string(root, "sampler_index", 64, &sampler, err) ||
        get_string(root, "sampler_name", 64, &sampler, err) || get_string(root, "precision", 16, &precision, err) ||
        get_string(root, "rng", 16, &rng, err) || get_bool(root, "send_images", &p.send_images, err) ||
        get_number(root, "denoising_strength", 0, 1, 1, &strength, err) ||
        get_optimizations(root, &p.optimizations, err) || get_bool(root, "tuned", &p.tuned, err))
        goto fail;
    if (get_bool(root, "debug", &p.debug, err))
        goto fail;
    if (num_images > 0) /* kiln's own: any count, in batches of batch_size (the last may be smaller) */
        n_iter = (num_images + batch_size - 1) / batch_size;
    else if (batch_size * n_iter > KILN_MAX_IMAGES) {
        fail(err, "n_iter", json_pack("{s:i}", "max_images", KILN_MAX_IMAGES),
             "batch_size x n_iter must be at most %d images, got %lld x %lld", KILN_MAX_IMAGES, batch_size, n_iter);
        goto fail;
    }
    if (sampler && *sampler) {
        p.sampler = serve_sampler_find(sampler);
        if (!p.sampler) {
            fail(err, "sampler_name", sampler_names(), "sampler_name '%s' is unknown", sampler);
            goto fail;
        }
    }
    if (precision && serve_precision_parse(precision, &p.precision) != 0) {
        fail(err, "precision", json_pack("[s, s, s]", "f32", "f16", "bf16"), "precision '%s' is unknown", precision);
        goto fail;
    }
    /* the model is chosen by precision: the switches run in its precision */
    p.optimizations.precision = (kiln_precision)p.precision;
    if (rng) {
        if (strcmp(rng, "torch-cpu") == 0)
            p.rng = "torch-cpu";
        else if (strcmp(rng, "philox") == 0)
            p.rng = "philox";
        else {
            fail(err, "rng", json_pack("[s, s]", "torch-cpu", "philox"), "rng '%s' is unknown", rng);
            goto fail;
        }
    }
    if (img2img && get_init_image(root, &p, err) != 0)
        goto fail;

    p.steps = (int)steps;
    p.cfg_scale = (float)cfg;
    p.seed = seed < 0 ? random_seed() : (uint64_t)seed;
    p.batch_size = (int)batch_size;
    p.n_iter = (int)n_iter;
    p.num_images = (int)(num_images > 0 ? num_images : batch_size * n_iter);
    p.strength = img2img ? (float)strength : 1.0f;
    p.prompt = strdup(prompt);
    p.negative_prompt = strdup(negative);
    /* A1111 answers with the request, init images left out unless asked */
    p.parameters = json_deep_copy(root);
    if (p.parameters && json_object_get(p.parameters, "init_images"))
        json_object_set_new(p.parameters, "init_images", json_null());
    if (!p.prompt || !p.negative_prompt || !p.parameters) {
        err->status = 500;
        err->kind = "out_of_memory";
        snprintf(err->detail, sizeof err->detail, "out of memory reading the request");
        job_params_free(&p);
        json_decref(root);
        return -1;
    }
    json_decref(root);
    *out = p;
    return 0;
fail:
    job_params_free(&p);
    json_decref(root);
    return -1;
}
