/*
 * test_image_checker.c - the shapes image checker (tools/image_checker.c)
 * against pictures drawn by tests/shape_render.c, with the bars it must
 * clear:
 *   - every combination of the data set (4 shapes x 8 colours x 8
 *     backgrounds x 9 positions x 2 sizes = 4,608), clean, jitter -3..3:
 *     100% on every attribute; hard-edged at the jitter's extremes (every
 *     8th combination): 100%;
 *   - the same 4,608 with the faults of generated pictures mixed at random
 *     (blur 0.3..1.5 px, noise up to 15, +-20 per channel on shape and
 *     background, shape brightness 0.85..1.1, a background gradient up to
 *     +-25, up to 3 blotches of +-20, up to 6 specks): shape >= 98%, colour
 *     >= 99%, background >= 99.5%, position 100%, size >= 99.5%;
 *   - each fault alone at its limit (blur up to 2 px, noise 20, shifts of
 *     exactly +-20, brightness 0.8..1.1, gradient 30, 3 blotches of +-25, 8
 *     specks), every 16th combination: the same bars;
 *   - other sizes (48x64 .. 640x384), clean: 100%, measurements in pixels
 *     of the picture;
 * and captions, matching, and bad input. The tables are printed; the first
 * misses of a set are printed with their measurements, and with
 * KILN_CHECKER_DUMP=DIR written there as PNGs (for check_image).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image_checker.h"
#include "shape_render.h"
#include "test_support.h"

/* ---- accuracy bookkeeping ----------------------------------------------- */

typedef struct tally {
    const char *name;
    int images;
    int right[IMAGE_ATTR_COUNT];
    int all_right;
    int shown; /* failures printed so far */
} tally;

static void scene_expectation(const render_scene *s, image_expectation *e)
{
    char caption[128];
    render_caption(s, caption, sizeof caption);
    int n = image_parse_caption(caption, e);
    CHECK(n == IMAGE_ATTR_COUNT, "caption '%s': expected %d attributes, got %d", caption, IMAGE_ATTR_COUNT, n);
}

/* Checks one picture of scene s and counts its attributes; prints the first
 * few misses with the measurements that led there. */
static void tally_one(tally *t, const render_scene *s, const uint8_t *rgb, int w, int h, int show_limit)
{
    image_expectation want;
    scene_expectation(s, &want);
    image_verdict v;
    kiln_status st = image_check(rgb, w, h, &v);
    CHECK(st == KILN_OK, "image_check: status %d (%s)", st, kiln_last_error());
    if (st != KILN_OK)
        return;
    t->images++;
    unsigned bad = 0;
    image_verdict_matches(&v, &want, &bad);
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
        t->right[a] += !(bad & (1u << a));
    t->all_right += bad == 0;
    if (bad && t->shown < show_limit) {
        t->shown++;
        char caption[128];
        render_caption(s, caption, sizeof caption);
        /* KILN_CHECKER_DUMP=DIR keeps the missed pictures, for check_image */
        const char *dump = getenv("KILN_CHECKER_DUMP");
        if (dump && *dump) {
            char path[512];
            snprintf(path, sizeof path, "%s/miss-%s-%d.png", dump, t->name, t->shown);
            for (char *p = path + strlen(dump) + 1; *p; p++)
                *p = *p == ' ' || *p == ',' ? '_' : *p;
            kiln_image img = {.width = w, .height = h, .rgb = (uint8_t *)rgb, .parameters = caption};
            if (kiln_image_write_png(&img, path, 1) != KILN_OK)
                fprintf(stderr, "could not write %s: %s\n", path, kiln_last_error());
        }
        printf("  miss [%s] %dx%d '%s' (jitter %+.0f,%+.0f): got %s %s %s on %s, %s; "
               "fill %.2f scores c%.2f s%.2f t%.2f x%.2f fit (%.1f,%.1f) %.1f px, colour (%.0f,%.0f,%.0f) "
               "bg (%.0f,%.0f,%.0f) noise %.1f\n",
               t->name, w, h, caption, s->jitter_x, s->jitter_y, v.size, v.colour, v.shape, v.background, v.position,
               v.fill_ratio, v.shape_scores[0], v.shape_scores[1], v.shape_scores[2], v.shape_scores[3], v.fit_x,
               v.fit_y, v.fit_size, v.colour_rgb[0], v.colour_rgb[1], v.colour_rgb[2], v.background_rgb[0],
               v.background_rgb[1], v.background_rgb[2], v.noise);
    }
}

static double percent(int right, int total)
{
    return total ? 100.0 * right / total : 0.0;
}

static void tally_header(void)
{
    printf("  %-22s %6s %8s %8s %8s %8s %8s %8s\n", "set", "images", "shape", "colour", "backgr.", "position", "size",
           "all");
}

static void tally_print(const tally *t)
{
    printf("  %-22s %6d", t->name, t->images);
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++)
        printf(" %7.2f%%", percent(t->right[a], t->images));
    printf(" %7.2f%%\n", percent(t->all_right, t->images));
}

/* Requires at least bar[a] percent right on each attribute. */
static void tally_require(const tally *t, const double bar[IMAGE_ATTR_COUNT])
{
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++) {
        double got = percent(t->right[a], t->images);
        CHECK(got >= bar[a], "%s: %s right in %.2f%% of %d images, the bar is %.2f%%", t->name,
              image_attr_name((image_attr)a), got, t->images, bar[a]);
    }
}

/* Calls fn for every combination of the data set: 4 shapes x 8 colours x 8
 * backgrounds (9 less the shape's colour) x 9 positions x 2 sizes = 4,608.
 * stride > 1 visits every stride-th. */
typedef void (*scene_fn)(const render_scene *s, int index, void *user);
static void for_each_scene(int stride, scene_fn fn, void *user)
{
    int index = 0;
    for (int shape = 0; shape < RENDER_SHAPE_COUNT; shape++)
        for (int colour = 0; colour < RENDER_SHAPE_COLOUR_COUNT; colour++)
            for (int background = 0; background < RENDER_COLOUR_COUNT; background++) {
                if (background == colour)
                    continue;
                for (int position = 0; position < RENDER_POSITION_COUNT; position++)
                    for (int large = 0; large < 2; large++, index++) {
                        if (index % stride)
                            continue;
                        render_scene s = {shape, colour, background, position, large, 0, 0};
                        fn(&s, index, user);
                    }
            }
}

#define W 64
#define H 64

/* ---- clean pictures: every attribute right ------------------------------- */

typedef struct clean_run {
    tally t;
    int hard_edges;
    test_rng rng;
} clean_run;

static void clean_one(const render_scene *scene, int index, void *user)
{
    clean_run *run = user;
    render_scene s = *scene;
    if (run->hard_edges) { /* the extremes of the jitter, corner by corner */
        s.jitter_x = index & 1 ? 3.0f : -3.0f;
        s.jitter_y = index & 2 ? 3.0f : -3.0f;
    } else { /* the data set's: whole pixels, -3..3 */
        s.jitter_x = (float)((int)(test_rng_next(&run->rng) % 7) - 3);
        s.jitter_y = (float)((int)(test_rng_next(&run->rng) % 7) - 3);
    }
    render_faults f = {.hard_edges = run->hard_edges};
    uint8_t rgb[W * H * 3];
    render_shapes(&s, &f, W, H, rgb);
    tally_one(&run->t, &s, rgb, W, H, 10);
}

static void test_clean_every_combination(void)
{
    static const double all[IMAGE_ATTR_COUNT] = {100, 100, 100, 100, 100};
    clean_run soft = {{.name = "clean, soft edges"}, 0, test_rng_seed(1)};
    clean_run hard = {{.name = "clean, hard, jitter 3"}, 1, test_rng_seed(2)};
    for_each_scene(1, clean_one, &soft);
    for_each_scene(8, clean_one, &hard);
    tally_header();
    tally_print(&soft.t);
    tally_print(&hard.t);
    CHECK_EQ_INT(soft.t.images, 4608);
    tally_require(&soft.t, all);
    tally_require(&hard.t, all);
}

/* ---- degraded pictures --------------------------------------------------- */

/* The faults of a generated picture, drawn at random up to these limits. */
typedef struct fault_limits {
    float blur_lo, blur_hi; /* sigma, px */
    float noise;            /* sigma per channel */
    int shift;              /* per channel, shape and background apart */
    float gain_lo, gain_hi; /* the shape's brightness (0: 1) */
    float gradient;         /* per channel, centre to edge */
    int blotches;
    float blotch_amp;
    int specks;
    int at_limit;           /* 1: each fault at its limit (shifts +-shift), not up to it */
} fault_limits;

static const fault_limits degraded_limits = {
    .blur_lo = 0.3f, .blur_hi = 1.5f, .noise = 15.0f, .shift = 20, .gain_lo = 0.85f, .gain_hi = 1.1f,
    .gradient = 25.0f, .blotches = 3, .blotch_amp = 20.0f, .specks = 6,
};

typedef struct degraded_run {
    tally t;
    fault_limits lim;
    test_rng rng;
} degraded_run;

static int rand_int(test_rng *r, int lo, int hi)
{
    return lo + (int)(test_rng_next(r) % (uint64_t)(hi - lo + 1));
}

static void draw_faults(test_rng *r, const fault_limits *lim, render_faults *f)
{
    int worst = lim->at_limit;
    memset(f, 0, sizeof *f);
    f->hard_edges = rand_int(r, 0, 1);
    f->blur = lim->blur_hi > 0 ? test_rng_uniform(r, lim->blur_lo, lim->blur_hi) : 0;
    f->noise = worst ? lim->noise : test_rng_uniform(r, 0, lim->noise);
    for (int c = 0; c < 3; c++) {
        f->shape_shift[c] = worst ? (rand_int(r, 0, 1) ? lim->shift : -lim->shift) : rand_int(r, -lim->shift, lim->shift);
        f->background_shift[c] =
            worst ? (rand_int(r, 0, 1) ? lim->shift : -lim->shift) : rand_int(r, -lim->shift, lim->shift);
    }
    f->shape_gain = lim->gain_hi > 0 ? test_rng_uniform(r, lim->gain_lo, lim->gain_hi) : 1.0f;
    f->gradient = worst ? lim->gradient : test_rng_uniform(r, 0, lim->gradient);
    f->blotches = worst ? lim->blotches : rand_int(r, 0, lim->blotches);
    f->blotch_amp = lim->blotch_amp;
    f->specks = worst ? lim->specks : rand_int(r, 0, lim->specks);
    f->seed = test_rng_next(r);
}

static void degraded_one(const render_scene *scene, int index, void *user)
{
    degraded_run *run = user;
    render_scene s = *scene;
    s.jitter_x = (float)rand_int(&run->rng, -3, 3);
    s.jitter_y = (float)rand_int(&run->rng, -3, 3);
    render_faults f;
    draw_faults(&run->rng, &run->lim, &f);
    uint8_t rgb[W * H * 3];
    render_shapes(&s, &f, W, H, rgb);
    tally_one(&run->t, &s, rgb, W, H, 12);
}

/* The bar on the full degraded set; what it misses is in the report. */
static const double degraded_bar[IMAGE_ATTR_COUNT] = {
    [IMAGE_ATTR_SHAPE] = 98.0, [IMAGE_ATTR_COLOUR] = 99.0, [IMAGE_ATTR_BACKGROUND] = 99.5,
    [IMAGE_ATTR_POSITION] = 100.0, [IMAGE_ATTR_SIZE] = 99.5,
};

static void test_degraded_every_combination(void)
{
    degraded_run all = {{.name = "degraded, all faults"}, degraded_limits, test_rng_seed(3)};
    for_each_scene(1, degraded_one, &all);
    tally_header();
    tally_print(&all.t);
    tally_require(&all.t, degraded_bar);
}

/* Each fault alone, at its limit (beyond the mixed set's), over every 16th
 * combination: where misses of the mixed set would come from. */
static void test_degraded_fault_by_fault(void)
{
    static const struct {
        const char *name;
        fault_limits lim;
    } sets[] = {
        {"blur 1.2", {.blur_lo = 1.2f, .blur_hi = 1.2f, .at_limit = 1}},
        {"blur 1.5", {.blur_lo = 1.5f, .blur_hi = 1.5f, .at_limit = 1}},
        {"blur 1.75", {.blur_lo = 1.75f, .blur_hi = 1.75f, .at_limit = 1}},
        {"blur 2.0", {.blur_lo = 2.0f, .blur_hi = 2.0f, .at_limit = 1}},
        {"noise 10", {.noise = 10.0f, .at_limit = 1}},
        {"noise 20", {.noise = 20.0f, .at_limit = 1}},
        {"colour shift 20", {.shift = 20, .at_limit = 1}},
        {"brightness 0.8-1.1", {.gain_lo = 0.8f, .gain_hi = 1.1f, .at_limit = 1}},
        {"gradient 30", {.gradient = 30.0f, .at_limit = 1}},
        {"blotches 3x25", {.blotches = 3, .blotch_amp = 25.0f, .at_limit = 1}},
        {"specks 8", {.specks = 8, .at_limit = 1}},
    };
    static const double bar[IMAGE_ATTR_COUNT] = {98.0, 99.0, 99.5, 100.0, 99.5};
    tally_header();
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        degraded_run run = {{.name = sets[i].name}, sets[i].lim, test_rng_seed(10 + i)};
        for_each_scene(16, degraded_one, &run);
        tally_print(&run.t);
        tally_require(&run.t, bar);
    }
}

/* ---- other image sizes --------------------------------------------------- */

static void test_other_sizes(void)
{
    /* 512 and 640x384 are shrunk by the checker (by 4 and 3) */
    static const int sizes[][2] = {{128, 128}, {96, 96}, {128, 96}, {48, 64}, {256, 256}, {512, 512}, {640, 384}};
    static const double all[IMAGE_ATTR_COUNT] = {100, 100, 100, 100, 100};
    test_rng rng = test_rng_seed(4);
    tally_header();
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        char name[32];
        snprintf(name, sizeof name, "clean %dx%d", w, h);
        tally t = {.name = name};
        uint8_t *rgb = malloc((size_t)w * h * 3);
        CHECK(rgb != NULL, "malloc");
        if (!rgb)
            return;
        int count = w * h > 256 * 256 ? 4 : w * h > 128 * 128 ? 10 : w * h > 64 * 64 ? 50 : 100;
        for (int i = 0; i < count; i++) {
            render_scene s = {rand_int(&rng, 0, 3), rand_int(&rng, 0, 7), 0, rand_int(&rng, 0, 8), rand_int(&rng, 0, 1),
                              (float)rand_int(&rng, -3, 3), (float)rand_int(&rng, -3, 3)};
            s.background = (s.colour + rand_int(&rng, 1, 8)) % RENDER_COLOUR_COUNT;
            render_shapes(&s, NULL, w, h, rgb);
            tally_one(&t, &s, rgb, w, h, 5);
            /* the measurements are in the picture's own pixels, shrunk or not */
            image_verdict v;
            if (image_check(rgb, w, h, &v) == KILN_OK) {
                float scale = (float)(w < h ? w : h) / 64.0f, size = (s.large ? 28.0f : 16.0f) * scale;
                float cx = (16.0f * (float)(1 + s.position % 3) + s.jitter_x) * (float)w / 64.0f;
                float cy = (16.0f * (float)(1 + s.position / 3) + s.jitter_y) * (float)h / 64.0f;
                CHECK(fabsf(v.fit_size - size) < 0.1f * size + 1.5f && fabsf(v.fit_x - cx) < 0.1f * size + 1.5f &&
                          fabsf(v.fit_y - cy) < 0.1f * size + 1.5f,
                      "%dx%d: a %.0f px shape at (%.1f, %.1f) measured %.1f px at (%.1f, %.1f)", w, h, size, cx, cy,
                      v.fit_size, v.fit_x, v.fit_y);
            }
        }
        free(rgb);
        tally_print(&t);
        tally_require(&t, all);
    }
}

/* ---- captions ------------------------------------------------------------ */

static void expect_caption(const char *caption, int count, const char *shape, const char *colour, const char *background,
                           const char *position, const char *size)
{
    image_expectation e;
    int n = image_parse_caption(caption, &e);
    CHECK(n == count, "'%s': expected %d attributes, got %d", caption, count, n);
    if (n < 0)
        return;
    const char *want[IMAGE_ATTR_COUNT] = {shape, colour, background, position, size};
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++) {
        const char *got = image_expectation_value(&e, (image_attr)a);
        CHECK(strcmp(got, want[a]) == 0, "'%s': %s expected '%s', got '%s'", caption, image_attr_name((image_attr)a),
              want[a], got);
    }
}

static void test_captions(void)
{
    expect_caption("a small red circle on a blue background, top left", 5, "circle", "red", "blue", "top left", "small");
    expect_caption("a large black cross on a gray background, center", 5, "cross", "black", "gray", "center", "large");
    expect_caption("A Large WHITE triangle on a grey background, bottom right.", 5, "triangle", "white", "gray",
                   "bottom right", "large");
    expect_caption("a small orange square on a yellow background, right", 5, "square", "orange", "yellow", "right",
                   "small");
    expect_caption("a purple square", 2, "square", "purple", "", "", "");
    expect_caption("an orange square, top", 3, "square", "orange", "", "top", "");
    expect_caption("green background", 1, "", "", "green", "", "");
    expect_caption("a circle on blue, in the top", 3, "circle", "", "blue", "top", "");
    expect_caption("a big plus in the centre", 3, "cross", "", "", "center", "large");
    expect_caption("two triangles, lower left", 2, "triangle", "", "", "bottom left", "");
    expect_caption("middle left", 1, "", "", "", "left", "");
    expect_caption("", 0, "", "", "", "", "");
    expect_caption("a photograph of nothing in particular", 0, "", "", "", "", "");

    image_expectation e;
    CHECK_EQ_INT(image_parse_caption(NULL, &e), -1);
    CHECK_EQ_INT(image_parse_caption("a red circle", NULL), -1);
    CHECK_EQ_INT(image_parse_caption("a red blue circle", &e), -1);
    CHECK_EQ_INT(image_parse_caption("a circle and a square", &e), -1);
    CHECK_EQ_INT(image_parse_caption("a small large circle", &e), -1);
    CHECK_EQ_INT(image_parse_caption("top bottom", &e), -1);
    CHECK_EQ_INT(image_parse_caption("left right", &e), -1);
    CHECK_EQ_INT(image_parse_caption("on a red background and a blue background", &e), -1);
    /* a long caption is cut at word boundaries, not overflowed */
    char longer[2048];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    CHECK_EQ_INT(image_parse_caption(longer, &e), 0);
}

/* The caption of a scene matches the verdict on its picture; a caption that
 * changes one attribute fails on exactly that one. */
static void test_matching(void)
{
    render_scene s = {RENDER_TRIANGLE, 3, RENDER_GRAY, 8, 1, 1, -2}; /* large yellow triangle on gray, bottom right */
    uint8_t rgb[W * H * 3];
    render_shapes(&s, NULL, W, H, rgb);
    image_verdict v;
    CHECK_EQ_INT(image_check(rgb, W, H, &v), KILN_OK);
    image_expectation e;
    unsigned bad = 99;
    image_parse_caption("a large yellow triangle on a gray background, bottom right", &e);
    CHECK(image_verdict_matches(&v, &e, &bad) && bad == 0, "expected a match, mismatched 0x%x", bad);
    CHECK(v.found && v.confidence > 0.3f, "found %d, confidence %.2f", v.found, v.confidence);
    image_parse_caption("yellow", &e);
    CHECK(image_verdict_matches(&v, &e, NULL), "a caption of one attribute matches");

    static const char *const wrong[IMAGE_ATTR_COUNT] = {
        "a large yellow circle on a gray background, bottom right",
        "a large orange triangle on a gray background, bottom right",
        "a large yellow triangle on a white background, bottom right",
        "a large yellow triangle on a gray background, bottom left",
        "a small yellow triangle on a gray background, bottom right",
    };
    for (int a = 0; a < IMAGE_ATTR_COUNT; a++) {
        image_parse_caption(wrong[a], &e);
        CHECK(!image_verdict_matches(&v, &e, &bad) && bad == 1u << a, "'%s': expected mismatch 0x%x, got 0x%x",
              wrong[a], 1u << a, bad);
        CHECK_EQ_INT(image_verdict_matches_attr(&v, &e, (image_attr)a), 0);
    }
    CHECK(strcmp(image_attr_name(IMAGE_ATTR_BACKGROUND), "background") == 0, "attr name");
    CHECK(strcmp(image_attr_name(IMAGE_ATTR_COUNT), "") == 0, "attr name out of range");
    CHECK(strcmp(image_verdict_value(&v, IMAGE_ATTR_COUNT), "") == 0, "value out of range");
}

/* ---- bad input ----------------------------------------------------------- */

static void test_bad_input(void)
{
    image_verdict v, untouched;
    memset(&v, 0x5a, sizeof v);
    memcpy(&untouched, &v, sizeof v);
    uint8_t one[3] = {1, 2, 3};
    uint8_t rgb[W * H * 3];

    CHECK_EQ_INT(image_check(NULL, W, H, &v), KILN_ERR_INVALID);
    CHECK(strstr(kiln_last_error(), "NULL") != NULL, "message: %s", kiln_last_error());
    CHECK_EQ_INT(image_check(rgb, W, H, NULL), KILN_ERR_INVALID);
    CHECK_EQ_INT(image_check(rgb, 0, 0, &v), KILN_ERR_INVALID);
    CHECK(strstr(kiln_last_error(), "0x0") != NULL, "message: %s", kiln_last_error());
    CHECK_EQ_INT(image_check(one, 1, 1, &v), KILN_ERR_INVALID);
    CHECK(strstr(kiln_last_error(), "1x1") != NULL, "message: %s", kiln_last_error());
    CHECK_EQ_INT(image_check(rgb, -64, 64, &v), KILN_ERR_INVALID);
    CHECK_EQ_INT(image_check(rgb, 64, 7, &v), KILN_ERR_INVALID);
    CHECK_EQ_INT(image_check(rgb, 100000, 100000, &v), KILN_ERR_INVALID);
    CHECK(memcmp(&v, &untouched, sizeof v) == 0, "the verdict is untouched on failure");

    /* one colour: no foreground, the background named */
    for (int c = 0; c < RENDER_COLOUR_COUNT; c++) {
        for (int i = 0; i < W * H; i++)
            memcpy(rgb + 3 * i, render_colour_rgb[c], 3);
        CHECK_EQ_INT(image_check(rgb, W, H, &v), KILN_OK);
        CHECK(!v.found && !strcmp(v.shape, "none") && !strcmp(v.colour, "none") && !v.position[0] && !v.size[0],
              "one colour: expected no foreground, got found %d shape '%s' colour '%s'", v.found, v.shape, v.colour);
        CHECK(!strcmp(v.background, render_colour_names[c]), "background expected %s, got %s", render_colour_names[c],
              v.background);
        image_expectation e;
        image_parse_caption("a red circle", &e);
        CHECK(!image_verdict_matches(&v, &e, NULL), "no foreground matches no shape");
    }
    /* noise alone, and a few specks alone, are not a shape */
    test_rng rng = test_rng_seed(5);
    for (int i = 0; i < W * H * 3; i++)
        rgb[i] = (uint8_t)(128 + (int)(test_rng_next(&rng) % 17) - 8);
    CHECK_EQ_INT(image_check(rgb, W, H, &v), KILN_OK);
    CHECK(!v.found, "noise: expected no foreground, got %s of %d px", v.shape, v.area);
    for (int i = 0; i < W * H; i++)
        memcpy(rgb + 3 * i, render_colour_rgb[2], 3);
    for (int k = 0; k < 6; k++) {
        int x = (int)(test_rng_next(&rng) % (W - 2)), y = (int)(test_rng_next(&rng) % (H - 2));
        for (int d = 0; d < 4; d++)
            memcpy(rgb + 3 * ((y + d / 2) * W + x + d % 2), render_colour_rgb[0], 3);
    }
    CHECK_EQ_INT(image_check(rgb, W, H, &v), KILN_OK);
    CHECK(!v.found, "specks: expected no foreground, got %s of %d px", v.shape, v.area);
    /* the smallest accepted image; a picture of fine stripes (no plain
     * background); a shape covering nearly all of the picture: verdicts,
     * whatever they are, not crashes */
    CHECK_EQ_INT(image_check(rgb, 8, 8, &v), KILN_OK);
    for (int i = 0; i < W * H; i++)
        memcpy(rgb + 3 * i, render_colour_rgb[i % 2 ? 0 : 6], 3);
    CHECK_EQ_INT(image_check(rgb, W, H, &v), KILN_OK);
    for (int i = 0; i < W * H; i++) {
        int x = i % W, y = i / W;
        memcpy(rgb + 3 * i, render_colour_rgb[x > 0 && y > 0 && x < W - 1 && y < H - 1 ? 3 : 2], 3);
    }
    CHECK_EQ_INT(image_check(rgb, W, H, &v), KILN_OK);
}

TEST_MAIN(TEST(test_clean_every_combination), TEST(test_degraded_every_combination), TEST(test_degraded_fault_by_fault),
          TEST(test_other_sizes), TEST(test_captions), TEST(test_matching), TEST(test_bad_input))
