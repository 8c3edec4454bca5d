/*
 * The shipped shapes model (assets/models/shapes) end to end, through the
 * public API (include/kiln.h; internal code only to check the noise and to
 * hash the model file):
 *
 *   1. Accuracy: one image per held-out prompt (tools/shapes/heldout_prompts.tsv,
 *      combinations never seen in training) at the model's defaults, judged
 *      by the image checker (tools/image_checker.h) against the row's
 *      attributes; shape, colour and position must reach issue 4's bars,
 *      with the weights at f32, f16 and bf16.
 *   2. Parity: the cases of tests/data/golden/shapes_parity.safetensors
 *      (written by tools/shapes/sample.py golden, PyTorch in float64) run with
 *      exactly their settings must give PyTorch's picture.
 *
 * Environment:
 *   KILN_TEST_KEEP_DIR=DIR          every held-out image kept as DIR/heldout-NN.png
 *   KILN_SHAPES_GOLDEN=FILE         a parity golden other than the committed one (then required)
 *   KILN_REQUIRE_SHAPES_GOLDEN=1    a missing golden fails (SHAPES_GOLDEN_REQUIRED below)
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image_checker.h"
#include "pipeline/parameters.h"
#include "pipeline/rng.h"
#include "test_support.h"

/* What the shipped model must reach on the held-out prompts, one image
 * each: the thresholds of issue 4. */
#define MIN_SHAPE_ACCURACY 0.90
#define MIN_COLOUR_ACCURACY 0.90
#define MIN_POSITION_ACCURACY 0.80

/* What the model shipped now does reach, less a margin of about four
 * prompts: the floor every faster path must keep (a path that draws worse
 * pictures fails here). The interim model (see its MODEL_CARD.md) reads
 * shape 80.6%, colour 93.1%, position 97.2% in this test at f32, f16, bf16
 * and NCHW alike (58, 67 and 70 of 72); issue 4 stays open until a model
 * reaches the bars above, and then these become those bars. */
#define FLOOR_SHAPE_ACCURACY 0.75
#define FLOOR_COLOUR_ACCURACY 0.87
#define FLOOR_POSITION_ACCURACY 0.91

/* Image i of the held-out run uses seed SEED_BASE + i. */
#define SEED_BASE 1000

/* 0 while tests/data/golden/shapes_parity.safetensors is not committed: a
 * missing golden is reported, and fails only with
 * KILN_REQUIRE_SHAPES_GOLDEN=1. Set to 1 once it is in the tree. */
#define SHAPES_GOLDEN_REQUIRED 1

/* Parity tolerance. kiln_result holds only the 8-bit image
 * round((v + 1) * 127.5) (no float image, no latent), so the golden's float
 * image is rounded the same way and compared byte by byte.
 *
 * The parity tests have no whole-pipeline bar to borrow: whole models are
 * held to MODEL_TOL = 1e-4 of max |ref| per forward pass (test_parity.c),
 * sampler trajectories to 1e-4 + 1e-5 |x| (SAMPLERS.md 5.4). 1e-4 on an
 * image in [-1, 1] is 0.013 of a level: an error that size moves a byte
 * only where the value sits within 0.013 of a rounding boundary, about 1.3%
 * of them, and by one level. So the same bar here reads: at most
 * PARITY_MAX_DIFFERING of the bytes differ, none by more than
 * PARITY_MAX_LEVELS. (PyTorch's own float32 run lands ~4e-6 from the float64
 * golden: metadata kiln.golden.f32_vs_f64.) The share catches a small
 * error everywhere (a schedule off by a little), the levels a large one
 * somewhere; the second level is margin for error growing over the steps. */
#define PARITY_MAX_LEVELS 2
#define PARITY_MAX_DIFFERING 0.01

#define HELDOUT_MAX_ROWS 256

/* ---- the model ---- */

typedef struct session {
    kiln_engine *engine;
    kiln_model *model;
    kiln_model_info info;
} session;

/* The shipped model with its weights as precision ("f32", "f16", "bf16"). */
static int open_model(session *s, const char *precision)
{
    memset(s, 0, sizeof *s);
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    mo.precision = precision;
    if (kiln_engine_create(NULL, &s->engine) != KILN_OK ||
        kiln_model_load(s->engine, KILN_SHAPES_MODEL, &mo, &s->model) != KILN_OK) {
        CHECK(0, "loading the shipped model %s: %s", KILN_SHAPES_MODEL, kiln_last_error());
        kiln_engine_destroy(s->engine);
        s->engine = NULL;
        return -1;
    }
    kiln_model_get_info(s->model, &s->info);
    return 0;
}

static void close_model(session *s)
{
    kiln_model_destroy(s->model);
    kiln_engine_destroy(s->engine);
    memset(s, 0, sizeof *s);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- 1. accuracy over the held-out prompts ---- */

typedef struct heldout_row {
    char prompt[256];
    image_expectation want;
} heldout_row;

/* Splits line at tabs in place into at most max fields; returns the count. */
static int split_tabs(char *line, char **fields, int max)
{
    int n = 0;
    for (char *p = line; n < max;) {
        fields[n++] = p;
        p = strchr(p, '\t');
        if (!p)
            break;
        *p++ = '\0';
    }
    return n;
}

static int set_field(char *dst, size_t size, const char *value, const char *what, int line)
{
    if (strlen(value) >= size) {
        CHECK(0, "%s line %d: %s '%s' is longer than the checker's names", KILN_SHAPES_HELDOUT, line, what, value);
        return -1;
    }
    snprintf(dst, size, "%s", value);
    return 0;
}

/* Reads the held-out prompts (a '#' header, then prompt, shape, colour,
 * background, position, size, cx, cy separated by tabs) into rows;
 * returns the count, or -1 (with a failure recorded). */
static int read_heldout(heldout_row *rows, int max)
{
    FILE *f = fopen(KILN_SHAPES_HELDOUT, "r");
    if (!f) {
        CHECK(0, "cannot open %s: %s", KILN_SHAPES_HELDOUT, strerror(errno));
        return -1;
    }
    char line[1024];
    int n = 0, line_no = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        line_no++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        if (n == max) {
            CHECK(0, "%s: more than %d rows", KILN_SHAPES_HELDOUT, max);
            bad = 1;
            break;
        }
        char *fields[9];
        int count = split_tabs(line, fields, 9);
        if (count != 8) {
            CHECK(0, "%s line %d: expected 8 tab-separated fields, got %d", KILN_SHAPES_HELDOUT, line_no, count);
            bad = 1;
            continue;
        }
        heldout_row *r = &rows[n];
        memset(r, 0, sizeof *r);
        image_expectation *e = &r->want;
        if (set_field(r->prompt, sizeof r->prompt, fields[0], "prompt", line_no) ||
            set_field(e->shape, sizeof e->shape, fields[1], "shape", line_no) ||
            set_field(e->colour, sizeof e->colour, fields[2], "colour", line_no) ||
            set_field(e->background, sizeof e->background, fields[3], "background", line_no) ||
            set_field(e->position, sizeof e->position, fields[4], "position", line_no) ||
            set_field(e->size, sizeof e->size, fields[5], "size", line_no)) {
            bad = 1;
            continue;
        }
        /* the caption must say what the columns say, or the columns and the
         * prompt test different things */
        image_expectation parsed;
        memset(&parsed, 0, sizeof parsed);
        int found = image_parse_caption(r->prompt, &parsed);
        CHECK(found == IMAGE_ATTR_COUNT && memcmp(&parsed, e, sizeof parsed) == 0,
              "%s line %d: the prompt '%s' reads as %s %s %s on %s, %s (%d attributes); the columns say %s %s %s on %s, %s",
              KILN_SHAPES_HELDOUT, line_no, r->prompt, parsed.size, parsed.colour, parsed.shape, parsed.background,
              parsed.position, found, e->size, e->colour, e->shape, e->background, e->position);
        n++;
    }
    fclose(f);
    CHECK(n > 0, "%s: no rows", KILN_SHAPES_HELDOUT);
    return bad || n == 0 ? -1 : n;
}

/* The attributes tallied: the checker's five, and shape with colour. */
enum { TALLY_SHAPE_COLOUR = IMAGE_ATTR_COUNT, TALLY_COUNT };

static const char *tally_name(int t)
{
    return t == TALLY_SHAPE_COLOUR ? "shape and colour" : image_attr_name((image_attr)t);
}

static void describe_verdict(const image_verdict *v, char *out, size_t size)
{
    if (!v->found)
        snprintf(out, size, "no shape on a %s background", v->background);
    else
        snprintf(out, size, "%s %s %s on a %s background, %s (confidence %.2f)", v->size, v->colour, v->shape,
                 v->background, v->position, (double)v->confidence);
}

/* The request for held-out row i: everything but prompt and seed left to
 * the model's defaults. */
/* The optimizations the held-out requests run with (NULL: the defaults). */
static const kiln_optimizations *heldout_opt;

static kiln_request heldout_request(const heldout_row *row, int i)
{
    kiln_request r;
    kiln_request_defaults(&r);
    r.optimizations = heldout_opt;
    r.prompt = row->prompt;
    r.negative_prompt = "";
    r.seed = SEED_BASE + (uint64_t)i;
    return r;
}

/* kiln_request_defaults leaves sampler, steps, guidance and size to the
 * model's metadata: the result must report those, and spelling them out
 * must give the same pixels. */
static void check_defaults_apply(session *s, const heldout_row *row, const kiln_result *res)
{
    const kiln_model_info *in = &s->info;
    const kiln_image *img = &res->images[0];
    CHECK(res->width == in->native_resolution && res->height == in->native_resolution &&
              img->width == in->native_resolution && img->height == in->native_resolution,
          "defaults: expected %dx%d (kiln.resolution), got %dx%d", in->native_resolution, in->native_resolution,
          img->width, img->height);
    CHECK(res->cfg_scale == in->default_cfg, "defaults: expected cfg %g (kiln.default.cfg_scale), got %g",
          (double)in->default_cfg, (double)res->cfg_scale);
    char steps[32];
    snprintf(steps, sizeof steps, "Steps: %d,", in->default_steps);
    CHECK(img->parameters && strstr(img->parameters, steps), "defaults: expected '%s' (kiln.default.steps) in: %s",
          steps, img->parameters ? img->parameters : "(null)");

    kiln_request r = heldout_request(row, 0);
    r.width = r.height = in->native_resolution;
    r.steps = in->default_steps;
    r.cfg_scale = in->default_cfg;
    r.sampler = in->default_sampler;
    r.rng = "torch-cpu";
    kiln_result *spelled = NULL;
    kiln_status st = kiln_generate(s->model, &r, &spelled);
    CHECK(st == KILN_OK, "generating with the defaults spelled out: %s", kiln_last_error());
    if (st == KILN_OK)
        CHECK(spelled->images[0].width == img->width && spelled->images[0].height == img->height &&
                  memcmp(spelled->images[0].rgb, img->rgb, (size_t)img->width * img->height * 3) == 0,
              "the model's defaults spelled out give other pixels than the request left unset");
    kiln_result_destroy(spelled);
}

static void keep_image(const char *dir, int i, const kiln_image *img)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        CHECK(0, "KILN_TEST_KEEP_DIR: cannot make %s: %s", dir, strerror(errno));
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/heldout-%02d.png", dir, i);
    CHECK(kiln_image_write_png(img, path, 1) == KILN_OK, "keeping %s: %s", path, kiln_last_error());
}

/* The held-out accuracy with the weights at one precision: every
 * precision (and the optimizations on by default, Winograd among them)
 * must keep the floors. */
static void heldout_accuracy(const char *precision)
{
    heldout_row *rows = calloc(HELDOUT_MAX_ROWS, sizeof *rows);
    int n = rows ? read_heldout(rows, HELDOUT_MAX_ROWS) : -1;
    session s;
    if (n < 0 || open_model(&s, precision) != 0) {
        free(rows);
        return;
    }
    const char *keep = strcmp(precision, "f32") == 0 ? getenv("KILN_TEST_KEEP_DIR") : NULL;
    printf("    %s: %s, %d steps, cfg %g, %dx%d, %s weights, %d threads; seeds %d..%d, one image per prompt\n",
           s.info.name, s.info.default_sampler, s.info.default_steps, (double)s.info.default_cfg,
           s.info.native_resolution, s.info.native_resolution, precision, kiln_engine_threads(s.engine), SEED_BASE,
           SEED_BASE + n - 1);

    int right[TALLY_COUNT] = {0}, judged = 0;
    double generate_s = 0;
    for (int i = 0; i < n; i++) {
        /* one request per prompt: a kiln_request has one prompt, its
         * num_images vary only the seed */
        kiln_request r = heldout_request(&rows[i], i);
        kiln_result *res = NULL;
        double t0 = now_s();
        kiln_status st = kiln_generate(s.model, &r, &res);
        generate_s += now_s() - t0;
        CHECK(st == KILN_OK && res->count == 1, "row %d '%s': generate: %s", i, rows[i].prompt, kiln_last_error());
        if (st != KILN_OK) {
            kiln_result_destroy(res);
            continue;
        }
        const kiln_image *img = &res->images[0];
        if (i == 0)
            check_defaults_apply(&s, &rows[i], res);
        if (keep && *keep)
            keep_image(keep, i, img);
        image_verdict v;
        st = image_check(img->rgb, img->width, img->height, &v);
        CHECK(st == KILN_OK, "row %d: image_check: %s", i, kiln_last_error());
        if (st == KILN_OK) {
            judged++;
            unsigned bad = 0;
            image_verdict_matches(&v, &rows[i].want, &bad);
            for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
                right[a] += !(bad & (1u << a));
            right[TALLY_SHAPE_COLOUR] += !(bad & ((1u << IMAGE_ATTR_SHAPE) | (1u << IMAGE_ATTR_COLOUR)));
            if (bad) {
                char saw[160], wrong[96] = "";
                describe_verdict(&v, saw, sizeof saw);
                for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
                    if (bad & (1u << a))
                        snprintf(wrong + strlen(wrong), sizeof wrong - strlen(wrong), "%s%s", wrong[0] ? " " : "",
                                 image_attr_name((image_attr)a));
                printf("    miss %2d seed %llu  '%s'\n             saw %s  [wrong: %s]\n", i,
                       (unsigned long long)img->seed, rows[i].prompt, saw, wrong);
            }
        }
        kiln_result_destroy(res);
    }
    printf("    generated %d images in %.1f s (%.2f s each)\n", n, generate_s, n ? generate_s / n : 0.0);

    static const double required[TALLY_COUNT] = {
        [IMAGE_ATTR_SHAPE] = MIN_SHAPE_ACCURACY,
        [IMAGE_ATTR_COLOUR] = MIN_COLOUR_ACCURACY,
        [IMAGE_ATTR_POSITION] = MIN_POSITION_ACCURACY,
    };
    static const double floor_of[TALLY_COUNT] = {
        [IMAGE_ATTR_SHAPE] = FLOOR_SHAPE_ACCURACY,
        [IMAGE_ATTR_COLOUR] = FLOOR_COLOUR_ACCURACY,
        [IMAGE_ATTR_POSITION] = FLOOR_POSITION_ACCURACY,
    };
    printf("    %-18s %5s %5s %8s %9s %7s\n", "attribute", "right", "of", "accuracy", "issue 4", "floor");
    for (int t = 0; t < TALLY_COUNT; t++) {
        double acc = judged ? (double)right[t] / judged : 0.0;
        char req[16] = "-", low[16] = "-";
        if (required[t] > 0)
            snprintf(req, sizeof req, "%.0f%%%s", 100.0 * required[t], acc >= required[t] ? "" : " (no)");
        if (floor_of[t] > 0)
            snprintf(low, sizeof low, "%.0f%%", 100.0 * floor_of[t]);
        printf("    %-18s %5d %5d %7.1f%% %9s %7s\n", tally_name(t), right[t], judged, 100.0 * acc, req, low);
    }
    fflush(stdout); /* the table before the failures (stderr) it explains */
    CHECK(judged == n, "judged %d of %d held-out images", judged, n);
    for (int t = 0; t < TALLY_COUNT; t++) {
        double acc = judged ? (double)right[t] / judged : 0.0;
        CHECK(acc >= floor_of[t],
              "%s weights: %s accuracy %.1f%% (%d of %d held-out prompts): below the shipped model's %.0f%%",
              precision, tally_name(t), 100.0 * acc, right[t], judged, 100.0 * floor_of[t]);
    }
    close_model(&s);
    free(rows);
}

static void test_heldout_accuracy(void)
{
    heldout_accuracy("f32");
}

static void test_heldout_accuracy_f16(void)
{
    heldout_accuracy("f16");
}

static void test_heldout_accuracy_bf16(void)
{
    heldout_accuracy("bf16");
}

/* Channels first (layout nchw, Winograd off with it): the same floors.
 * The images differ from NHWC's by float rounding only. */
static void test_heldout_accuracy_nchw(void)
{
    kiln_optimizations o;
    kiln_optimizations_defaults(&o);
    o.layout = KILN_LAYOUT_NCHW;
    heldout_opt = &o;
    heldout_accuracy("f32");
    heldout_opt = NULL;
}

/* ---- 2. parity with PyTorch ---- */

/* as kiln's to_byte and sample.py's to_uint8: round((v + 1) * 127.5),
 * ties to even, clamped */
static int golden_level(float v)
{
    double x = ((double)v + 1.0) * 127.5;
    x = x < 0 ? 0 : x > 255 ? 255 : x;
    return (int)nearbyint(x);
}

/* The golden tensor as f32 (malloc'd) if it has exactly the shape given;
 * NULL with a failure recorded otherwise. */
static float *read_golden(kiln_weights *w, const char *name, int ndim, const int64_t *shape)
{
    const kiln_tensor_desc *t = kiln_weights_find(w, name);
    CHECK(t != NULL, "%s: tensor %s missing", kiln_weights_path(w), name);
    if (!t)
        return NULL;
    size_t count = 1;
    int same = t->ndim == ndim;
    for (int i = 0; i < ndim; i++) {
        count *= (size_t)shape[i];
        same = same && t->shape[i] == shape[i];
    }
    CHECK(same, "%s: %s has %d dims [%lld, %lld, ...], expected %d dims [%lld, %lld, ...]", kiln_weights_path(w), name,
          t->ndim, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), ndim, (long long)shape[0],
          (long long)(ndim > 1 ? shape[1] : 0));
    float *data = same ? malloc(count * sizeof *data) : NULL;
    if (!data)
        return NULL;
    kiln_status st = kiln_weights_read_f32(w, t, data, count);
    CHECK(st == KILN_OK, "%s: reading %s: %s", kiln_weights_path(w), name, kiln_last_error());
    if (st != KILN_OK) {
        free(data);
        return NULL;
    }
    return data;
}

typedef struct golden_case {
    const char *name, *prompt, *negative_prompt, *sampler, *rng;
    uint64_t seed;
    int steps, model_calls, width, height;
    float cfg_scale;
} golden_case;

static int read_case(json_t *c, size_t index, golden_case *out)
{
    memset(out, 0, sizeof *out);
    json_t *name = json_object_get(c, "name"), *prompt = json_object_get(c, "prompt"),
           *negative = json_object_get(c, "negative_prompt"), *sampler = json_object_get(c, "sampler"),
           *rng = json_object_get(c, "rng"), *seed = json_object_get(c, "seed"), *steps = json_object_get(c, "steps"),
           *calls = json_object_get(c, "model_calls"), *cfg = json_object_get(c, "cfg_scale"),
           *width = json_object_get(c, "width"), *height = json_object_get(c, "height"),
           *images = json_object_get(c, "num_images");
    int ok = json_is_string(name) && json_is_string(prompt) && json_is_string(negative) && json_is_string(sampler) &&
             json_is_string(rng) && json_is_integer(seed) && json_integer_value(seed) >= 0 && json_is_integer(steps) &&
             json_is_number(cfg) && json_is_integer(width) && json_is_integer(height) &&
             (!calls || json_is_integer(calls)) && (!images || json_integer_value(images) == 1);
    CHECK(ok, "kiln.golden.cases[%zu]: expected name, prompt, negative_prompt, sampler, rng (strings), seed, steps, "
              "width, height (integers), cfg_scale (number), one image", index);
    if (!ok)
        return -1;
    *out = (golden_case){.name = json_string_value(name), .prompt = json_string_value(prompt),
                         .negative_prompt = json_string_value(negative), .sampler = json_string_value(sampler),
                         .rng = json_string_value(rng), .seed = (uint64_t)json_integer_value(seed),
                         .steps = (int)json_integer_value(steps),
                         .model_calls = calls ? (int)json_integer_value(calls) : -1,
                         .width = (int)json_integer_value(width), .height = (int)json_integer_value(height),
                         .cfg_scale = (float)json_number_value(cfg)};
    return 0;
}

/* The golden's first noise draw against kiln's generator: when the images
 * differ, this says whether the noise is to blame. */
static void check_noise(kiln_weights *w, const golden_case *c)
{
    char name[160];
    snprintf(name, sizeof name, "golden.%s.noise", c->name);
    const kiln_tensor_desc *t = kiln_weights_find(w, name); /* [1, 4, h, w] */
    if (!t)
        return;
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    rng_kind kind;
    if (want && got && kiln_weights_read_f32(w, t, want, n) == KILN_OK && rng_parse(c->rng, &kind) == 0) {
        rng_stream stream;
        rng_init(&stream, kind, c->seed);
        rng_randn(&stream, got, n);
        CHECK(memcmp(got, want, n * sizeof *got) == 0, "%s: the initial noise (%s, seed %llu) differs from torch's",
              c->name, c->rng, (unsigned long long)c->seed);
    } else {
        CHECK(0, "%s: reading %s (rng %s): %s", c->name, name, c->rng, kiln_last_error());
    }
    free(got);
    free(want);
}

static void run_golden_case(session *s, kiln_weights *w, const golden_case *c, json_t *f32_vs_f64)
{
    char name[160], torch_f32[64] = "not recorded";
    snprintf(name, sizeof name, "golden.%s.image", c->name);
    json_t *max_abs = json_object_get(json_object_get(f32_vs_f64, name), "max_abs");
    if (json_is_number(max_abs))
        snprintf(torch_f32, sizeof torch_f32, "max abs %.2g (%.5f levels)", json_number_value(max_abs),
                 json_number_value(max_abs) * 127.5);
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = c->prompt;
    r.negative_prompt = c->negative_prompt;
    r.seed = c->seed;
    r.sampler = c->sampler;
    r.steps = c->steps;
    r.cfg_scale = c->cfg_scale;
    r.width = c->width;
    r.height = c->height;
    r.rng = c->rng;
    r.num_images = 1;
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s->model, &r, &res);
    CHECK(st == KILN_OK && res->count == 1, "%s: generate: %s", c->name, kiln_last_error());
    if (st != KILN_OK) {
        kiln_result_destroy(res);
        return;
    }
    /* kiln_result.steps is the model calls the sampler made (DDIM adjusts
     * the count as A1111 does); the golden's model_calls counts the same */
    if (c->model_calls >= 0)
        CHECK(res->steps == c->model_calls, "%s: %s %d steps: kiln ran %d model calls, PyTorch %d", c->name, c->sampler,
              c->steps, res->steps, c->model_calls);

    int64_t shape[4] = {1, 3, c->height, c->width}; /* [1, 3, H, W], NCHW */
    float *want = read_golden(w, name, 4, shape);
    const kiln_image *img = &res->images[0];
    if (want && img->width == c->width && img->height == c->height) {
        size_t hw = (size_t)c->width * c->height, differ = 0, worst_at = 0;
        int worst = 0;
        double sum = 0;
        for (size_t i = 0; i < hw; i++)
            for (int ch = 0; ch < 3; ch++) {
                int a = img->rgb[i * 3 + ch], b = golden_level(want[(size_t)ch * hw + i]);
                int d = abs(a - b);
                differ += d != 0;
                sum += d;
                if (d > worst) {
                    worst = d;
                    worst_at = i * 3 + ch;
                }
            }
        double share = (double)differ / (double)(3 * hw);
        printf("    %-6s %-8s %2d steps cfg %-4g seed %-4llu  max |kiln - golden| %d level(s), %zu of %zu bytes "
               "differ (%.3f%%), mean %.5f levels; PyTorch f32 vs the golden: %s\n",
               c->name, c->sampler, c->steps, (double)c->cfg_scale, (unsigned long long)c->seed, worst, differ,
               3 * hw, 100.0 * share, sum / (double)(3 * hw), torch_f32);
        CHECK(share <= PARITY_MAX_DIFFERING,
              "%s '%s': %zu of %zu bytes (%.2f%%) differ from PyTorch's image; allowed %.1f%%", c->name, c->prompt,
              differ, 3 * hw, 100.0 * share, 100.0 * PARITY_MAX_DIFFERING);
        CHECK(worst <= PARITY_MAX_LEVELS,
              "%s '%s': kiln's image differs from PyTorch's by %d levels (at x %zu y %zu channel %zu: kiln %d, golden "
              "%d = round((%.6f + 1) * 127.5)); allowed %d",
              c->name, c->prompt, worst, worst_at / 3 % (size_t)c->width, worst_at / 3 / (size_t)c->width,
              worst_at % 3, img->rgb[worst_at], golden_level(want[worst_at % 3 * hw + worst_at / 3]),
              (double)want[worst_at % 3 * hw + worst_at / 3], PARITY_MAX_LEVELS);
    } else if (want) {
        CHECK(0, "%s: kiln made %dx%d, the golden is %dx%d", c->name, img->width, img->height, c->width, c->height);
    }
    free(want);
    kiln_result_destroy(res);
}

/* The model's file hash as the golden's model_sha256 starts: a golden of
 * another model cannot match, and should say so rather than differ. */
static int golden_is_of_model(json_t *cases)
{
    char hash[11];
    if (parameters_model_hash(KILN_SHAPES_MODEL, hash) != KILN_OK) {
        CHECK(0, "hashing %s: %s", KILN_SHAPES_MODEL, kiln_last_error());
        return 0;
    }
    json_t *c0 = json_array_get(cases, 0);
    const char *sha = json_string_value(json_object_get(c0, "model_sha256"));
    if (!sha)
        return 1; /* not recorded: let the pixels speak */
    CHECK(strncmp(sha, hash, 10) == 0,
          "the parity golden was made from a model with sha256 %.16s..., the shipped model's starts %s: regenerate it "
          "with tools/shapes/sample.py golden",
          sha, hash);
    return strncmp(sha, hash, 10) == 0;
}

static void test_parity_with_pytorch(void)
{
    const char *override = getenv("KILN_SHAPES_GOLDEN");
    const char *require = getenv("KILN_REQUIRE_SHAPES_GOLDEN");
    int required = SHAPES_GOLDEN_REQUIRED || (require && strcmp(require, "1") == 0) || (override && *override);
    char *path = override && *override ? strdup(override) : test_data_path("golden/shapes_parity.safetensors");
    if (access(path, F_OK) != 0) {
        /* ctest shows test_shapes_parity as skipped on "SHAPES PARITY SKIPPED" */
        fprintf(stderr,
                "\n    ************************************************************************\n"
                "    * SHAPES PARITY %s: %s is missing\n"
                "    * write it with: /usr/bin/python3 tools/shapes/sample.py golden\n"
                "    ************************************************************************\n\n",
                required ? "FAILED" : "SKIPPED", path);
        CHECK(!required, "the parity golden %s is missing and required (SHAPES_GOLDEN_REQUIRED, "
                         "KILN_REQUIRE_SHAPES_GOLDEN or KILN_SHAPES_GOLDEN)", path);
        free(path);
        return;
    }
    kiln_weights *w = NULL;
    json_t *cases = NULL, *f32_vs_f64 = NULL;
    session s = {0};
    CHECK(kiln_weights_open(path, &w) == KILN_OK, "opening the parity golden: %s", kiln_last_error());
    if (!w)
        goto done;
    const char *text = kiln_weights_metadata_get(w, "kiln.golden.cases");
    json_error_t jerr;
    cases = text ? json_loads(text, 0, &jerr) : NULL;
    CHECK(json_is_array(cases) && json_array_size(cases) > 0,
          "%s: metadata kiln.golden.cases must be a non-empty JSON list (%s)", path,
          text ? jerr.text : "the key is missing");
    if (!json_is_array(cases) || json_array_size(cases) == 0 || !golden_is_of_model(cases) || open_model(&s, "f32") != 0)
        goto done;
    const char *errs = kiln_weights_metadata_get(w, "kiln.golden.f32_vs_f64");
    f32_vs_f64 = errs ? json_loads(errs, 0, NULL) : NULL;
    printf("    golden %s; kiln's latent is not in kiln_result: the image alone is compared\n", path);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        golden_case c;
        if (read_case(json_array_get(cases, i), i, &c) != 0)
            continue;
        check_noise(w, &c);
        run_golden_case(&s, w, &c, f32_vs_f64);
    }
done:
    close_model(&s);
    json_decref(cases);
    json_decref(f32_vs_f64);
    kiln_weights_destroy(w);
    free(path);
}

TEST_MAIN(TEST(test_heldout_accuracy), TEST(test_heldout_accuracy_f16), TEST(test_heldout_accuracy_bf16),
          TEST(test_heldout_accuracy_nchw),
          TEST(test_parity_with_pytorch))
