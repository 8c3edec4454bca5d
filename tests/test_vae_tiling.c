/*
 * Tiled VAE decoding (kiln_optimizations.vae_tiling, models/vae_tiles.h).
 *
 *   - the layout: tiles of one size, covering the latent from edge to
 *     edge, neighbours overlapping by at least a quarter tile;
 *   - the blend: a decoder that is local (nearest upsampling) gives the
 *     same pixels tiled as whole, so the tiles land where they belong and
 *     the ramps add up to one;
 *   - group norms across runs: statistics gathered region by region and
 *     then shared give what each norm's own statistics give, NHWC and
 *     with the graph rewritten channels first;
 *   - the shipped shapes model: tiled against untiled decoding of the same
 *     latent (the same request), PSNR above the bound stated below, at a
 *     size that is a multiple of the tile and at one that is not; an image
 *     within one tile is decoded whole, bit for bit; debug mode measures
 *     the same difference against its untiled reference;
 *   - the memory plan: the decoder's planned arena with tiles is smaller
 *     than without, and a request that fits only with tiles is refused
 *     with a message that suggests them and the bytes they save;
 *   - vae_tile values out of range or off the multiple are refused, naming
 *     the field.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/executor.h"
#include "graph/layout.h"
#include "kiln.h"
#include "models/vae_tiles.h"
#include "test_support.h"
#include "tiny_model.h"

/* ---- layout ---- */

static void check_axis(int len, int tile_px, int factor, int n, const int *start, int size)
{
    int tile = tile_px / factor;
    if (len <= tile) {
        CHECK(n == 1 && start[0] == 0 && size == len, "len %d, tile %d: one tile of %d expected, got %d of %d", len,
              tile, len, n, size);
        return;
    }
    CHECK(size == tile && n >= 2 && n <= VAE_TILES_MAX, "len %d, tile %d: %d tiles of %d", len, tile, n, size);
    CHECK(start[0] == 0 && start[n - 1] + size == len, "len %d, tile %d: tiles from %d to %d, not edge to edge",
          len, tile, start[0], start[n - 1] + size);
    int quarter = tile / 4 > 0 ? tile / 4 : 1;
    for (int i = 1; i < n; i++) {
        int overlap = start[i - 1] + size - start[i];
        CHECK(start[i] > start[i - 1] && overlap >= quarter,
              "len %d, tile %d: tiles %d and %d overlap by %d; at least %d expected", len, tile, i - 1, i, overlap,
              quarter);
    }
}

static void test_layout(void)
{
    static const int factors[] = {8, 4};
    static const int tiles_px[] = {64, 96, 256, 512};
    for (size_t f = 0; f < sizeof factors / sizeof factors[0]; f++)
        for (size_t t = 0; t < sizeof tiles_px / sizeof tiles_px[0]; t++)
            for (int px = KILN_MIN_SIZE; px <= KILN_MAX_SIZE; px += 8 * factors[f] / 4) {
                int len = px / factors[f];
                vae_tiles vt;
                vae_tiles_layout(len, 3 + len / 2, factors[f], tiles_px[t], &vt);
                check_axis(len, tiles_px[t], factors[f], vt.rows, vt.y, vt.tile_h);
                check_axis(3 + len / 2, tiles_px[t], factors[f], vt.cols, vt.x, vt.tile_w);
            }
    vae_tiles whole;
    vae_tiles_layout(100, 60, 8, 0, &whole);
    CHECK(vae_tiles_count(&whole) == 1 && whole.tile_h == 100 && whole.tile_w == 60 &&
              vae_tiles_buffer_bytes(&whole, 4, 3) == 0,
          "no tiling: the latent whole, no blend buffers");
    /* SD at 512x512 in the default tiles: 64 latent pixels in tiles of 32 */
    vae_tiles sd;
    vae_tiles_layout(64, 64, 8, VAE_TILE_DEFAULT, &sd);
    CHECK(sd.rows == 3 && sd.cols == 3 && sd.y[1] == 16 && sd.tile_h == 32,
          "512x512 at factor 8: 3x3 tiles of 32 at 0, 16, 32 expected; got %dx%d of %d, second at %d", sd.rows,
          sd.cols, sd.tile_h, sd.y[1]);
}

/* ---- the blend, with a decoder that is local ---- */

/* A stand-in decoder: nearest 2x upsampling of a [1, h, w, 3] latent, which
 * maps each latent pixel to its own 2x2 block and nothing else. */
static int local_decoder(int h, int w, model_graph *mg)
{
    memset(mg, 0, sizeof *mg);
    int64_t shape[4] = {1, h, w, 3};
    if (graph_create(&mg->g) != KILN_OK)
        return -1;
    mg->in[0] = graph_input(mg->g, "latent", TENSOR_LAYOUT_NHWC, 4, shape);
    mg->in[1] = mg->in[2] = GRAPH_NONE;
    mg->out = graph_upsample_nearest(mg->g, "up", mg->in[0]);
    graph_mark_output(mg->g, mg->out);
    mg->kind = MODEL_GRAPH_DECODER;
    mg->batch = 1, mg->h = h, mg->w = w;
    if (graph_exec_create(mg->g, NULL, &mg->exec) != KILN_OK) {
        CHECK(0, "stand-in decoder: %s", kiln_last_error());
        return -1;
    }
    return 0;
}

static int tiles_seen;

static void count_tile(void *ctx, graph_exec *exec)
{
    (void)ctx, (void)exec;
    tiles_seen++;
}

static void test_blend_is_exact_for_a_local_decoder(void)
{
    tpool *pool = NULL;
    if (tpool_create(2, &pool) != KILN_OK)
        return;
    /* a square, an axis within one tile, sizes off the tile's multiple */
    static const int sizes[][3] = {{48, 48, 64}, {20, 70, 64}, {37, 53, 96}, {33, 129, 64}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int h = sizes[s][0], w = sizes[s][1];
        vae_tiles vt;
        vae_tiles_layout(h, w, 2, sizes[s][2], &vt);
        model_graph mg;
        if (local_decoder(vt.tile_h, vt.tile_w, &mg) != 0)
            break;
        size_t nl = (size_t)h * w * 3, ni = nl * 4;
        float *latent = malloc(nl * sizeof *latent), *image = malloc(ni * sizeof *image);
        test_rng r = test_rng_seed(5 + s);
        for (size_t i = 0; i < nl; i++)
            latent[i] = test_rng_uniform(&r, -1, 1);
        tiles_seen = 0;
        kiln_status st = vae_tiles_decode(&vt, &mg, pool, latent, image, count_tile, NULL);
        CHECK(st == KILN_OK, "%dx%d: %s", w, h, kiln_last_error());
        CHECK(tiles_seen == vae_tiles_count(&vt) && tiles_seen > 1, "%dx%d: %d tiles run, %d laid out", w, h,
              tiles_seen, vae_tiles_count(&vt));
        /* the weights of a pixel sum to one up to float rounding: 1e-6 relative */
        double worst = 0;
        for (int y = 0; y < 2 * h && st == KILN_OK; y++)
            for (int x = 0; x < 2 * w; x++)
                for (int c = 0; c < 3; c++) {
                    float want = latent[((size_t)(y / 2) * w + x / 2) * 3 + c];
                    double e = fabs((double)image[((size_t)y * 2 * w + x) * 3 + c] - want);
                    worst = isnan(e) ? INFINITY : fmax(worst, e);
                }
        CHECK(worst <= 1e-6, "%dx%d in %d tiles: tiled nearest upsampling is %g from the whole one; 1e-6 allowed",
              w, h, vae_tiles_count(&vt), worst);
        /* a decoder built for another shape is refused */
        vae_tiles other;
        vae_tiles_layout(h + 40, w + 40, 2, sizes[s][2] * 2, &other);
        CHECK(vae_tiles_decode(&other, &mg, pool, latent, image, NULL, NULL) == KILN_ERR_SHAPE,
              "a decoder of another tile shape must be refused");
        free(latent);
        free(image);
        model_graph_clear(&mg);
    }
    tpool_destroy(pool);
}

/* ---- group norms across runs ---- */

/* x [2, 4, 6, 8] -> group norm (4 groups, SiLU) -> nearest 2x -> group norm
 * (2 groups): the same outputs from the norms' own statistics as from
 * statistics gathered over two halves (rows, then at twice the resolution
 * the same rows scaled) and shared. */
static void test_norm_stats_across_runs(void)
{
    float gamma[8], beta[8], x[2 * 4 * 6 * 8];
    test_rng r = test_rng_seed(3);
    for (int i = 0; i < 8; i++)
        gamma[i] = test_rng_uniform(&r, 0.5f, 1.5f), beta[i] = test_rng_uniform(&r, -0.5f, 0.5f);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = test_rng_uniform(&r, -2, 3);
    int64_t xs[4] = {2, 4, 6, 8}, cs[1] = {8};
    tensor tg, tb;
    tensor_init(&tg, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 1, cs, gamma);
    tensor_init(&tb, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 1, cs, beta);
    graph *g = NULL, *g2 = NULL;
    graph_exec *e = NULL, *e2 = NULL;
    tpool *pool = NULL;
    graph_create(&g);
    graph_id in = graph_input(g, "x", TENSOR_LAYOUT_NHWC, 4, xs);
    graph_id wg = graph_weight(g, "gamma", &tg), wb = graph_weight(g, "beta", &tb);
    graph_id a = graph_group_norm(g, "norm1", in, wg, wb, 4, 1e-6f, 1);
    graph_id out = graph_group_norm(g, "norm2", graph_upsample_nearest(g, "up", a), wg, wb, 2, 1e-6f, 0);
    graph_mark_output(g, out);
    if (tpool_create(2, &pool) != KILN_OK || graph_exec_create(g, NULL, &e) != KILN_OK) {
        CHECK(0, "norm graph: %s", kiln_last_error());
        goto done;
    }
    CHECK_EQ_INT(graph_norm_stats_size(g), 3 * 2 * (4 + 2));
    graph_exec_bind(e, in, x);
    size_t n = 2 * 8 * 12 * 8;
    float *own = malloc(n * sizeof *own);
    double stats[3 * 2 * (4 + 2)];
    memset(stats, 0, sizeof stats);
    graph_exec_run(e, pool);
    memcpy(own, graph_exec_output(e, out), n * sizeof *own);
    graph_norm_region top = {.y0 = 0, .y1 = 1, .x0 = 0, .x1 = 6, .h = 4, .w = 6};
    graph_norm_region bottom = {.y0 = 1, .y1 = 4, .x0 = 0, .x1 = 6, .h = 4, .w = 6};
    graph_exec_set_norm_stats(e, GRAPH_NORM_COLLECT, stats, &top);
    graph_exec_run(e, pool);
    graph_exec_set_norm_stats(e, GRAPH_NORM_COLLECT, stats, &bottom);
    graph_exec_run(e, pool);
    CHECK(stats[2] == 4 * 6 * 2 && stats[3 * 8 + 2] == 8 * 12 * 4,
          "the counts must cover each norm's input once: %g of 48 and %g of 384", stats[2], stats[3 * 8 + 2]);
    CHECK(graph_exec_set_norm_stats(e, GRAPH_NORM_SHARED, stats, NULL) == KILN_OK, "%s", kiln_last_error());
    graph_exec_run(e, pool);
    double worst = test_max_abs_diff(own, graph_exec_output(e, out), n);
    CHECK(worst <= 1e-5, "shared statistics of the whole against each norm's own: %g apart; 1e-5 allowed", worst);
    graph_exec_set_norm_stats(e, GRAPH_NORM_OWN, NULL, NULL);
    graph_exec_run(e, pool);
    CHECK(test_max_abs_diff(own, graph_exec_output(e, out), n) == 0, "back to its own statistics: the same bits");

    /* channels first (layout nchw): the same statistics from planes, the
     * same outputs; the second norm's input went through the first in
     * another summation order, so its sums agree to float rounding
     * (measured 1.3e-7 relative) */
    graph_id map[16];
    CHECK(graph_create(&g2) == KILN_OK && graph_node_count(g) <= 16 && graph_to_nchw(g, g2, map) == KILN_OK &&
              graph_exec_create(g2, NULL, &e2) == KILN_OK,
          "nchw norm graph: %s", kiln_last_error());
    if (e2) {
        double stats2[3 * 2 * (4 + 2)];
        memset(stats2, 0, sizeof stats2);
        graph_exec_bind(e2, map[in], x);
        graph_exec_run(e2, pool);
        double own_err = test_max_abs_diff(own, graph_exec_output(e2, map[out]), n);
        graph_exec_set_norm_stats(e2, GRAPH_NORM_COLLECT, stats2, &top);
        graph_exec_run(e2, pool);
        graph_exec_set_norm_stats(e2, GRAPH_NORM_COLLECT, stats2, &bottom);
        graph_exec_run(e2, pool);
        double stats_err = 0;
        for (size_t i = 0; i < sizeof stats / sizeof stats[0]; i++)
            stats_err = fmax(stats_err, fabs(stats2[i] - stats[i]) / fmax(1.0, fabs(stats[i])));
        graph_exec_set_norm_stats(e2, GRAPH_NORM_SHARED, stats2, NULL);
        graph_exec_run(e2, pool);
        double shared_err = test_max_abs_diff(own, graph_exec_output(e2, map[out]), n);
        CHECK(own_err <= 1e-5 && stats_err <= 1e-6 && shared_err <= 1e-5,
              "nchw against nhwc: own statistics %g apart, gathered sums %g (relative), shared %g; allowed 1e-5, "
              "1e-6, 1e-5",
              own_err, stats_err, shared_err);
    }
    free(own);
done:
    graph_exec_destroy(e);
    graph_destroy(g);
    graph_exec_destroy(e2);
    graph_destroy(g2);
    tpool_destroy(pool);
}

/* ---- the shipped model: tiled against whole ---- */

/* PSNR of tiled against whole decoding of the same latent, measured on
 * the shipped model (its 20 euler steps, seed 11; the same at the scalar,
 * AVX2 and AVX-512 levels): 192x192 in 128-pixel tiles 30.7 dB, 200x136
 * 31.2 dB, 200x136 in the smallest tiles (64 pixels, 16 latent) 22.3 dB.
 * (The VAEs shipped before read 27.9, 29.4, 19.4 and, before 2026-12-07,
 * 29.9, 31.8, 22.7 dB.)
 * The bounds leave about 3 dB. What remains is the mid-block attention,
 * which sees one tile, and the zeros past a tile's edge that the decoder's
 * 3x3 convolutions reach through the overlap: the smaller the tile, the
 * more of it is edge. Misplaced or unblended tiles fall far below (and
 * test_blend_is_exact_for_a_local_decoder pins them exactly). */

static double psnr(const kiln_image *a, const kiln_image *b)
{
    size_t n = (size_t)a->width * a->height * 3;
    double sq = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a->rgb[i] - b->rgb[i];
        sq += e * e;
    }
    return sq == 0 ? INFINITY : 10.0 * log10(255.0 * 255.0 / (sq / (double)n));
}

static kiln_result *generate(model_session *s, int width, int height, int tiling, int tile, int debug)
{
    kiln_optimizations o;
    kiln_optimizations_defaults(&o);
    o.precision = kiln_model_precision(s->model);
    o.vae_tiling = tiling;
    o.vae_tile = tile;
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = "a large red circle on a blue background, top left";
    r.width = width;
    r.height = height;
    r.seed = 11;
    r.optimizations = &o;
    r.debug = debug;
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s->model, &r, &res);
    CHECK(st == KILN_OK, "%dx%d, vae_tiling %d, tile %d: %s", width, height, tiling, tile, kiln_last_error());
    return st == KILN_OK ? res : NULL;
}

static void test_shipped_model_tiled_against_whole(void)
{
    model_session s;
    if (model_session_open(&s, KILN_SHAPES_MODEL, 2, NULL) != 0)
        return;
    static const struct {
        int width, height, tile, tiles;
        double min_db;
    } cases[] = {
        {192, 192, 128, 4, 27.5}, /* latent 48 in tiles of 32: 2 a side, at 0 and 16 */
        {200, 136, 128, 4, 28.0}, /* not a multiple of the tile: 50 x 34 latent, 2 x 2 tiles */
        {200, 136, 64, 12, 19.0}, /* the smallest tiles: 16 latent pixels, 4 x 3 */
        {64, 64, 64, 1, INFINITY}, /* the model's own size: within one tile, decoded whole */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kiln_result *whole = generate(&s, cases[i].width, cases[i].height, 0, 0, 0);
        kiln_result *tiled = generate(&s, cases[i].width, cases[i].height, 1, cases[i].tile, 0);
        if (whole && tiled) {
            CHECK(tiled->count == 1 && tiled->images[0].width == cases[i].width &&
                      tiled->images[0].height == cases[i].height,
                  "%dx%d tiled: %d images of %dx%d", cases[i].width, cases[i].height, tiled->count,
                  tiled->images[0].width, tiled->images[0].height);
            CHECK(tiled->plan.vae_tiles == cases[i].tiles && whole->plan.vae_tiles == 1,
                  "%dx%d in %d-pixel tiles: %d tiles expected, the plan says %d (whole: %d)", cases[i].width,
                  cases[i].height, cases[i].tile, cases[i].tiles, tiled->plan.vae_tiles, whole->plan.vae_tiles);
            double db = psnr(&tiled->images[0], &whole->images[0]);
            printf("  %dx%d in %d tiles of %d pixels: PSNR %.2f dB against whole\n", cases[i].width,
                   cases[i].height, tiled->plan.vae_tiles, cases[i].tile, db);
            if (cases[i].tiles == 1)
                CHECK(isinf(db), "%dx%d within one tile must decode whole, bit for bit: PSNR %.2f dB",
                      cases[i].width, cases[i].height, db);
            else
                CHECK(db >= cases[i].min_db && !isinf(db),
                      "%dx%d in %d-pixel tiles against whole: PSNR %.2f dB; at least %.0f expected (and not "
                      "identical)",
                      cases[i].width, cases[i].height, cases[i].tile, db, cases[i].min_db);
        }
        kiln_result_destroy(whole);
        kiln_result_destroy(tiled);
    }
    /* debug mode's reference decodes whole: its PSNR is the tiling's */
    kiln_result *dbg = generate(&s, 192, 192, 1, 128, 1);
    if (dbg) {
        printf("  debug mode, 192x192 tiled: PSNR %.2f dB against the untiled f32 reference\n",
               dbg->debug.psnr_min_db);
        CHECK(dbg->debug.validated && dbg->debug.psnr_min_db >= 27.0 && dbg->debug.psnr_min_db < 58.0,
              "debug mode must compare tiled with whole: validated %d, PSNR %.2f dB (reference: %s)",
              dbg->debug.validated, dbg->debug.psnr_min_db, dbg->debug.reference);
        CHECK(!dbg->debug.nonfinite.found, "no NaN or Inf in a tiled decode: %s", dbg->debug.nonfinite.node);
    }
    kiln_result_destroy(dbg);
    model_session_close(&s);
}

/* ---- the memory plan ---- */

static int plan(model_session *s, int size, int tiling, kiln_plan *out)
{
    kiln_optimizations o;
    kiln_optimizations_defaults(&o);
    o.precision = kiln_model_precision(s->model);
    o.vae_tiling = tiling;
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = "a red circle";
    r.width = r.height = size;
    r.optimizations = &o;
    return kiln_model_plan(s->model, &r, out) == KILN_OK ? 0 : -1;
}

static void test_plan_sizes_the_decoder_for_a_tile(void)
{
    model_session s;
    if (model_session_open(&s, KILN_SHAPES_MODEL, 2, NULL) != 0)
        return;
    kiln_plan whole, tiled, small_whole, small_tiled;
    if (plan(&s, 512, 0, &whole) != 0 || plan(&s, 512, 1, &tiled) != 0 || plan(&s, 128, 0, &small_whole) != 0 ||
        plan(&s, 128, 1, &small_tiled) != 0) {
        CHECK(0, "planning: %s", kiln_last_error());
        model_session_close(&s);
        return;
    }
    printf("  512x512 decoder arena: whole %.1f MB, in %d tiles %.1f MB\n", whole.decoder_bytes / 1048576.0,
           tiled.vae_tiles, tiled.decoder_bytes / 1048576.0);
    /* 512 pixels at the shipped VAE's factor 4: 128 latent in tiles of 64, 3 a side. The widest
     * activations are at full resolution, so a tile's arena is about a quarter of the whole one,
     * plus the blended image (3 MB) */
    CHECK(tiled.vae_tiles == 9 && whole.vae_tiles == 1, "512x512: 9 tiles expected, got %d", tiled.vae_tiles);
    CHECK(tiled.decoder_bytes * 2 < whole.decoder_bytes,
          "512x512: the tiled decoder must plan under half the whole one's bytes: %zu against %zu",
          tiled.decoder_bytes, whole.decoder_bytes);
    /* the graphs run one at a time: the peak is the largest arena, at 512x512 the whole decoder's; tiled,
     * the peak falls to the next largest (the tile's decoder or the UNet's) */
    CHECK(whole.activation_bytes == whole.decoder_bytes && tiled.activation_bytes >= tiled.decoder_bytes &&
              tiled.activation_bytes < whole.activation_bytes &&
              whole.total_bytes - tiled.total_bytes == whole.activation_bytes - tiled.activation_bytes,
          "the peak must be the largest graph's, and shrink by what the decoder saves: activations whole %zu "
          "(decoder %zu), tiled %zu (decoder %zu); totals %zu, %zu",
          whole.activation_bytes, whole.decoder_bytes, tiled.activation_bytes, tiled.decoder_bytes,
          whole.total_bytes, tiled.total_bytes);
    CHECK(small_tiled.vae_tiles == 1 && small_tiled.decoder_bytes == small_whole.decoder_bytes,
          "128x128 is within one tile: the same plan as whole (%zu against %zu)", small_tiled.decoder_bytes,
          small_whole.decoder_bytes);

    /* a budget between the two: whole is refused, suggesting tiles; tiled fits */
    size_t budget = (whole.total_bytes + tiled.total_bytes) / 2;
    model_session tight;
    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = 2;
    eo.max_memory = budget;
    memset(&tight, 0, sizeof tight);
    if (kiln_engine_create(&eo, &tight.engine) == KILN_OK &&
        kiln_model_load(tight.engine, KILN_SHAPES_MODEL, NULL, &tight.model) == KILN_OK) {
        kiln_plan p;
        CHECK(plan(&tight, 512, 0, &p) != 0 && strstr(kiln_last_error(), "max_memory") &&
                  strstr(kiln_last_error(), "--vae-tiling on") && strstr(kiln_last_error(), "would save") &&
                  strstr(kiln_last_error(), "enough to fit"),
              "a budget of %zu bytes: whole decoding must be refused, suggesting tiles: %s", budget,
              kiln_last_error());
        printf("  refusal: %s\n", kiln_last_error());
        CHECK(plan(&tight, 512, 1, &p) == 0 && p.total_bytes <= budget, "tiled must fit %zu bytes: %s", budget,
              kiln_last_error());
    } else {
        CHECK(0, "a session with a budget: %s", kiln_last_error());
    }
    model_session_close(&tight);
    model_session_close(&s);
}

/* ---- bad values ---- */

static void test_bad_tiles_are_refused(void)
{
    static const char *bad[] = {"32", "100", "2056", "4096", "-8", "256px", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_optimizations o;
        kiln_optimizations_defaults(&o);
        CHECK(kiln_optimizations_set(&o, "vae_tile", bad[i]) == KILN_ERR_INVALID &&
                  strstr(kiln_last_error(), "vae_tile") && strstr(kiln_last_error(), "multiples of 8") &&
                  o.vae_tile == 0,
              "vae_tile '%s' must be refused naming the field and what it allows: %s", bad[i], kiln_last_error());
    }
    static const char *good[] = {"0", "64", "72", "256", "2048"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        kiln_optimizations o;
        kiln_optimizations_defaults(&o);
        CHECK(kiln_optimizations_set(&o, "vae-tile", good[i]) == KILN_OK && o.vae_tile == atoi(good[i]),
              "vae_tile '%s' must be taken: %s", good[i], kiln_last_error());
    }
    /* set straight in the struct: refused by kiln_generate and kiln_model_optimizations */
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    static const int bad_values[] = {100, 4096, 8, -64};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        kiln_optimizations o, active;
        kiln_opt_report rep[KILN_OPT_COUNT];
        kiln_optimizations_defaults(&o);
        o.vae_tiling = 1;
        o.vae_tile = bad_values[i];
        CHECK(kiln_model_optimizations(s.model, &o, &active, rep) == KILN_ERR_INVALID &&
                  strstr(kiln_last_error(), "vae_tile"),
              "vae_tile %d: kiln_model_optimizations must refuse it naming the field: %s", bad_values[i],
              kiln_last_error());
        kiln_request r;
        kiln_request_defaults(&r);
        r.prompt = "a red circle";
        r.steps = 1;
        r.optimizations = &o;
        kiln_result *res = NULL;
        CHECK(kiln_generate(s.model, &r, &res) == KILN_ERR_INVALID && strstr(kiln_last_error(), "vae_tile") &&
                  res == NULL,
              "vae_tile %d: kiln_generate must refuse it naming the field: %s", bad_values[i], kiln_last_error());
    }
    model_session_close(&s);
}

TEST_MAIN(TEST(test_layout), TEST(test_blend_is_exact_for_a_local_decoder), TEST(test_norm_stats_across_runs),
          TEST(test_bad_tiles_are_refused),
          TEST(test_plan_sizes_the_decoder_for_a_tile), TEST(test_shipped_model_tiled_against_whole))
