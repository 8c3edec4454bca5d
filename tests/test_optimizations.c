/*
 * The optimization switches (kiln_optimizations): each alternative path
 * against its reference, and the report of what ran.
 *
 *   - attention: the plain path (score matrix, softmax, P.v through the
 *     matrix kernels) and the tiled kernel at every tile size, against the
 *     scalar reference kernel, fast math on and off;
 *   - softmax, SiLU, GELU with fast math off (libm) and on (polynomials)
 *     against the scalar reference;
 *   - memory alloc-as-you-go vs the static plan, fusion off vs on: the same
 *     bits, through the executor and through kiln_generate;
 *   - layout nchw: the tiny model's UNet, VAE decoder and encoder rewritten
 *     channels first against NHWC on the same inputs, the transposes the
 *     rewrite adds, fusion and the memory plan under it;
 *   - kiln_generate on the tiny random model with each switch flipped from
 *     the best configuration, against the f32 reference path (plain
 *     attention, fast math off, fusion off, alloc), within the tolerances
 *     stated at each check;
 *   - the result's report: asked, active, and why for what cannot run here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/half.h"
#include "core/threadpool.h"
#include "graph/executor.h"
#include "graph/layout.h"
#include "kernels/kernels.h"
#include "models/model_graphs.h"
#include "kiln.h"
#include "test_support.h"
#include "tiny_model.h"

static float *random_floats(test_rng *r, size_t n, float scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = test_rng_uniform(r, -scale, scale);
    return x;
}

/* ---- attention through the executor ---- */

typedef struct attn_case {
    int64_t batch, heads, q_len, kv_len, head_dim;
    int causal;
} attn_case;

/* Runs one attention node with the executor options o; out gets q_len x
 * channels x batch floats. */
static int run_attention_graph(const attn_case *t, const float *q, const float *k, const float *v,
                               const graph_exec_options *o, float *out)
{
    graph *g = NULL;
    graph_exec *e = NULL;
    int64_t ch = t->heads * t->head_dim;
    int64_t qs[3] = {t->batch, t->q_len, ch}, ks[3] = {t->batch, t->kv_len, ch};
    if (graph_create(&g) != KILN_OK)
        return -1;
    graph_id iq = graph_input(g, "q", TENSOR_LAYOUT_PLAIN, 3, qs);
    graph_id ik = graph_input(g, "k", TENSOR_LAYOUT_PLAIN, 3, ks);
    graph_id iv = graph_input(g, "v", TENSOR_LAYOUT_PLAIN, 3, ks);
    graph_id a = graph_attention(g, "attn", iq, ik, iv, (int)t->heads, t->causal);
    graph_mark_output(g, a);
    tpool *pool = NULL;
    int rc = -1;
    if (tpool_create(2, &pool) != KILN_OK || graph_exec_create_with(g, NULL, o, &e) != KILN_OK) {
        CHECK(0, "attention graph: %s", kiln_last_error());
        goto done;
    }
    graph_exec_bind(e, iq, q);
    graph_exec_bind(e, ik, k);
    graph_exec_bind(e, iv, v);
    /* twice: the second run reuses (plan) or re-allocates (alloc) everything */
    for (int run = 0; run < 2; run++)
        if (graph_exec_run(e, pool) != KILN_OK) {
            CHECK(0, "attention run: %s", kiln_last_error());
            goto done;
        }
    memcpy(out, graph_exec_output(e, a), (size_t)(t->batch * t->q_len * ch) * sizeof *out);
    rc = 0;
done:
    graph_exec_destroy(e);
    graph_destroy(g);
    tpool_destroy(pool);
    return rc;
}

static void reference_attention(const attn_case *t, const float *q, const float *k, const float *v, float *out)
{
    int64_t ch = t->heads * t->head_dim;
    attention_geom geom = {.batch = t->batch, .heads = t->heads, .q_len = t->q_len, .kv_len = t->kv_len,
                           .head_dim = t->head_dim, .q_stride = ch, .k_stride = ch, .v_stride = ch, .o_stride = ch,
                           .scale = 1.0f / sqrtf((float)t->head_dim), .causal = t->causal};
    kernels_for(KILN_ISA_SCALAR)->attention_f32(&geom, q, k, v, out, 0, t->batch * t->heads * t->q_len, NULL);
}

/* Sums of up to a few hundred products in another order, softmax with
 * exp within 2e-7: outputs (averages of values in [-1, 1]) agree to 2e-5. */
#define ATTENTION_TOL 2e-5

static void test_attention_paths_match_reference(void)
{
    static const attn_case cases[] = {
        {2, 3, 37, 29, 40, 0},  /* odd lengths, head_dim not a multiple of 16 */
        {1, 8, 64, 77, 40, 0},  /* UNet cross-attention-like */
        {2, 2, 19, 19, 24, 1},  /* causal, as the text encoder */
        {1, 1, 100, 100, 64, 0}, /* VAE-like: one head */
        {1, 2, 1, 1, 8, 0},     /* one token */
    };
    static const int tiles[] = {0, 12, 24, 36, 48, 50, 96, 1000};
    test_rng r = test_rng_seed(11);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const attn_case *t = &cases[c];
        int64_t ch = t->heads * t->head_dim;
        size_t nq = (size_t)(t->batch * t->q_len * ch), nk = (size_t)(t->batch * t->kv_len * ch);
        float *q = random_floats(&r, nq, 2.0f), *k = random_floats(&r, nk, 2.0f), *v = random_floats(&r, nk, 1.0f);
        float *want = calloc(nq, sizeof *want), *got = calloc(nq, sizeof *got), *tiled = calloc(nq, sizeof *tiled);
        reference_attention(t, q, k, v, want);
        for (int plain = 0; plain < 2; plain++)
            for (int fast = 0; fast < 2; fast++)
                for (int alloc = 0; alloc < 2; alloc++) {
                    graph_exec_options o;
                    graph_exec_options_defaults(&o);
                    o.plain_attention = plain, o.fast_math = fast, o.alloc_as_you_go = alloc;
                    if (run_attention_graph(t, q, k, v, &o, got) != 0)
                        continue;
                    double err = test_max_abs_diff(got, want, nq);
                    CHECK(err <= ATTENTION_TOL,
                          "case %zu (b%lld h%lld q%lld kv%lld d%lld%s) %s attention, fast math %s, %s: max abs "
                          "error %.3g against the scalar reference, allowed %.1g",
                          c, (long long)t->batch, (long long)t->heads, (long long)t->q_len, (long long)t->kv_len,
                          (long long)t->head_dim, t->causal ? " causal" : "", plain ? "plain" : "tiled",
                          fast ? "on" : "off", alloc ? "alloc" : "plan", err, ATTENTION_TOL);
                }
        /* every tile size gives the same bits: a query's sum runs over the
         * same key blocks in the same order whatever its tile */
        graph_exec_options o;
        graph_exec_options_defaults(&o);
        if (run_attention_graph(t, q, k, v, &o, tiled) == 0)
            for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
                o.attention_tile = tiles[i];
                if (run_attention_graph(t, q, k, v, &o, got) == 0)
                    CHECK(memcmp(got, tiled, nq * sizeof *got) == 0,
                          "case %zu: tile %d differs from the default tile (max abs %.3g); expected the same bits", c,
                          tiles[i], test_max_abs_diff(got, tiled, nq));
            }
        free(q), free(k), free(v), free(want), free(got), free(tiled);
    }
}

/* ---- Winograd and direct convolutions through the executor ---- */

/* Winograd's rounding is a few times the direct sum's (test_kernels.c):
 * outputs agree to 2e-5 of the largest. */
#define WINOGRAD_TOL 2e-5

/* Convolutions in a row, as a UNet has them: 3x3 over 2 x 8 x 7 tiles
 * (Winograd), 3x3 plus a residual add (Winograd, the add fused into it),
 * two 3x3 stride 2 (direct), then 3x3 over 2 x 2 x 2 tiles, too few
 * (direct). */
static int run_conv_graph(const graph_exec_options *o, int threads, const float *x, const float *w, float *out,
                          size_t *winograd_convs, size_t out_floats)
{
    enum { C = 24, H = 30, W = 26 };
    graph *g = NULL;
    graph_exec *e = NULL;
    int64_t xs[4] = {2, H, W, C}, ws[4] = {C, C, 3, 3}, bs[1] = {C};
    tensor tw, tb;
    tensor_init(&tw, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 4, ws, (void *)w);
    tensor_init(&tb, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 1, bs, (void *)(w + C * C * 9));
    if (graph_create(&g) != KILN_OK)
        return -1;
    graph_id in = graph_input(g, "x", TENSOR_LAYOUT_NHWC, 4, xs);
    graph_id wid = graph_weight(g, "conv.weight", &tw), bid = graph_weight(g, "conv.bias", &tb);
    graph_id a = graph_conv2d(g, "conv1", in, wid, bid, 1, 1, 1, 1, 1);
    graph_id b = graph_add(g, "residual", graph_conv2d(g, "conv2", a, wid, bid, 1, 1, 1, 1, 1), in);
    graph_id c = graph_conv2d(g, "down", b, wid, bid, 2, 0, 0, 1, 1);                 /* 15 x 13 */
    graph_id c2 = graph_conv2d(g, "down2", c, wid, bid, 2, 1, 1, 1, 1);               /* 8 x 7 */
    graph_id d = graph_conv2d(g, "small", c2, wid, bid, 1, 1, 1, 1, 1);
    graph_mark_output(g, d);
    tpool *pool = NULL;
    int rc = -1;
    if (tpool_create(threads, &pool) != KILN_OK || graph_exec_create_with(g, NULL, o, &e) != KILN_OK) {
        CHECK(0, "conv graph: %s", kiln_last_error());
        goto done;
    }
    graph_exec_bind(e, in, x);
    if (graph_exec_run(e, pool) != KILN_OK) {
        CHECK(0, "conv run: %s", kiln_last_error());
        goto done;
    }
    CHECK(tensor_numel(&graph_node_at(g, d)->out) == (int64_t)out_floats, "conv graph output size");
    memcpy(out, graph_exec_output(e, d), out_floats * sizeof *out);
    *winograd_convs = graph_exec_winograd_convs(e);
    rc = 0;
done:
    graph_exec_destroy(e);
    graph_destroy(g);
    tpool_destroy(pool);
    return rc;
}

static void test_winograd_through_executor(void)
{
    enum { C = 24, OUT = 2 * 8 * 7 * C };
    test_rng r = test_rng_seed(13);
    float *x = random_floats(&r, 2 * 30 * 26 * C, 1.0f), *w = random_floats(&r, C * C * 9 + C, 0.2f);
    float *want = calloc(OUT, sizeof *want), *got = calloc(OUT, sizeof *got);
    graph_exec_options direct;
    graph_exec_options_defaults(&direct);
    direct.direct_conv = 1;
    size_t convs = 99;
    if (run_conv_graph(&direct, 2, x, w, want, &convs, OUT) == 0) {
        CHECK(convs == 0, "direct_conv set: %zu convolutions still by Winograd", convs);
        for (int threads = 1; threads <= 2; threads++) {
            graph_exec_options o;
            graph_exec_options_defaults(&o);
            if (run_conv_graph(&o, threads, x, w, got, &convs, OUT) != 0)
                continue;
            int expect = kernels_get()->winograd_conv_f32[WINOGRAD_F4] ? 2 : 0;
            CHECK(convs == (size_t)expect, "%d threads: %zu convolutions by Winograd, expected %d (the two 3x3 "
                                           "stride-1 ones over 2 x 8 x 7 tiles)",
                  threads, convs, expect);
            double scale = 0;
            for (size_t i = 0; i < OUT; i++)
                scale = fmax(scale, fabs(want[i]));
            double err = test_max_abs_diff(got, want, OUT) / scale;
            CHECK(err <= WINOGRAD_TOL, "%d threads: Winograd against direct, %.3g of the largest output; allowed %.0e",
                  threads, err, WINOGRAD_TOL);
        }
    }
    free(x), free(w), free(want), free(got);
}

/* ---- fast math on and off, kernel by kernel ---- */

static void test_fast_math_kernels(void)
{
    test_rng r = test_rng_seed(5);
    const int64_t n = 1000;
    float *x = random_floats(&r, (size_t)n, 12.0f);
    float *want = malloc((size_t)n * sizeof *want), *got = malloc((size_t)n * sizeof *got);
    const kernel_table *ref = kernels_for(KILN_ISA_SCALAR);
    CHECK(ref->fast_math == 0, "the scalar table must use libm (fast_math 0), says %d", ref->fast_math);
    for (int isa = KILN_ISA_SCALAR; isa <= (int)cpu_get()->best_isa; isa++)
        for (int fast = 0; fast < 2; fast++) {
            const kernel_table *k = kernels_for_math((kiln_isa)isa, fast);
            CHECK(k->fast_math == (fast && isa != KILN_ISA_SCALAR), "%s table, fast math asked %d: reports %d",
                  kiln_isa_name((kiln_isa)isa), fast, k->fast_math);
            /* libm lane by lane: the same expf and erff as the reference,
             * with the vector code's own division and multiply-add: 1e-6;
             * the polynomials: 2e-7 relative exp, 1.5e-7 absolute erf,
             * carried through silu and gelu on |x| <= 12: 2e-6 */
            double tol = fast ? 2e-6 : 1e-6;
            ref->silu_f32(x, want, 0, n);
            k->silu_f32(x, got, 0, n);
            double e = test_max_abs_diff(got, want, (size_t)n);
            CHECK(e <= tol, "%s silu, fast math %d: max abs error %.3g, allowed %.1g", kiln_isa_name((kiln_isa)isa), fast,
                  e, tol);
            ref->gelu_f32(x, want, 0, n);
            k->gelu_f32(x, got, 0, n);
            e = test_max_abs_diff(got, want, (size_t)n);
            CHECK(e <= tol * 4, "%s gelu, fast math %d: max abs error %.3g, allowed %.1g", kiln_isa_name((kiln_isa)isa),
                  fast, e, tol * 4);
            /* softmax rows of 1 to 40 scores, causal and not */
            for (int causal = 0; causal < 2; causal++) {
                const int64_t rows = 25, cols = 40;
                float *s = random_floats(&r, (size_t)(rows * cols), 8.0f);
                float *s2 = malloc((size_t)(rows * cols) * sizeof *s2);
                memcpy(s2, s, (size_t)(rows * cols) * sizeof *s);
                ref->softmax_f32(s, cols, cols, 0.7f, causal, 0, rows);
                k->softmax_f32(s2, cols, cols, 0.7f, causal, 0, rows);
                e = test_max_abs_diff(s2, s, (size_t)(rows * cols));
                CHECK(e <= 1e-6, "%s softmax (causal %d), fast math %d: max abs error %.3g, allowed 1e-6",
                      kiln_isa_name((kiln_isa)isa), causal, fast, e);
                if (causal)
                    CHECK(s2[0 * cols + 1] == 0.0f && s2[3 * cols + 4] == 0.0f && s2[0] == 1.0f,
                          "causal softmax: row 0 must be [1, 0, ...], got %g %g", (double)s2[0], (double)s2[1]);
                free(s), free(s2);
            }
        }
    free(x), free(want), free(got);
}

/* ---- group norm + SiLU, conv + residual, upsample + conv: fused,
 * unfused, planned, allocated ---- */

static void test_fusion_and_memory_same_bits(void)
{
    test_rng r = test_rng_seed(3);
    const int64_t c = 64, hw = 9 * 7;
    float *x = random_floats(&r, (size_t)(2 * hw * c), 3.0f);
    float *gamma = random_floats(&r, (size_t)c, 1.0f), *beta = random_floats(&r, (size_t)c, 1.0f);
    float *conv_w = random_floats(&r, (size_t)(c * c * 9), 0.1f), *conv_b = random_floats(&r, (size_t)c, 0.1f);
    float *first = malloc((size_t)(2 * hw * c) * sizeof *first);
    float *first_up = malloc((size_t)(2 * 4 * hw * c) * sizeof *first_up);
    tpool *pool = NULL;
    if (tpool_create(2, &pool) != KILN_OK)
        return;
    for (int variant = 0; variant < 4; variant++) {
        graph *g = NULL;
        graph_exec *e = NULL;
        graph_create(&g);
        int64_t shape[4] = {2, 9, 7, c}, vec[1] = {c}, wshape[4] = {c, c, 3, 3};
        tensor tg, tb, tw, tcb;
        tensor_init(&tg, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 1, vec, gamma);
        tensor_init(&tb, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 1, vec, beta);
        tensor_init(&tw, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 4, wshape, conv_w);
        tensor_init(&tcb, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 1, vec, conv_b);
        /* a ResBlock's shape: x + conv(silu(norm(x))), and norm(x) + x */
        graph_id in = graph_input(g, "x", TENSOR_LAYOUT_NHWC, 4, shape);
        graph_id n1 = graph_group_norm(g, "norm", in, graph_weight(g, "gamma", &tg), graph_weight(g, "beta", &tb), 8,
                                       1e-5f, 1);
        graph_id conv = graph_conv2d(g, "conv", n1, graph_weight(g, "w", &tw), graph_weight(g, "b", &tcb), 1, 1, 1,
                                     1, 1);
        graph_id res = graph_add(g, "residual", in, conv);
        graph_id out = graph_add(g, "add", n1, res);
        graph_mark_output(g, out);
        /* a decoder's way up: conv(upsample(x)); 18x14 out, 40 tiles: Winograd */
        graph_id up = graph_conv2d(g, "up_conv", graph_upsample_nearest(g, "up", res), graph_weight(g, "w2", &tw),
                                   graph_weight(g, "b2", &tcb), 1, 1, 1, 1, 1);
        graph_mark_output(g, up);
        graph_exec_options o;
        graph_exec_options_defaults(&o);
        o.unfused = variant & 1;
        o.alloc_as_you_go = (variant >> 1) & 1;
        if (graph_exec_create_with(g, NULL, &o, &e) != KILN_OK) {
            CHECK(0, "group norm graph: %s", kiln_last_error());
            graph_destroy(g);
            continue;
        }
        graph_exec_bind(e, in, x);
        CHECK(graph_exec_run(e, pool) == KILN_OK && graph_exec_run(e, pool) == KILN_OK, "run: %s", kiln_last_error());
        const float *y = graph_exec_output(e, out), *y_up = graph_exec_output(e, up);
        if (variant == 0) {
            memcpy(first, y, (size_t)(2 * hw * c) * sizeof *first);
            memcpy(first_up, y_up, (size_t)(2 * 4 * hw * c) * sizeof *first_up);
            CHECK(graph_exec_peak_bytes(e) == graph_exec_arena_bytes(e) && graph_exec_arena_bytes(e) > 0,
                  "planned: peak %zu must be the arena's %zu bytes", graph_exec_peak_bytes(e),
                  graph_exec_arena_bytes(e));
        } else {
            /* unfused, the SiLU is a second pass over the same values and
             * the residual a separate add of the same two numbers;
             * allocation only moves where they live: same bits */
            CHECK(memcmp(first, y, (size_t)(2 * hw * c) * sizeof *first) == 0,
                  "%s, %s: output differs from fused + planned (max abs %.3g); expected the same bits",
                  o.unfused ? "unfused" : "fused", o.alloc_as_you_go ? "alloc" : "plan",
                  test_max_abs_diff(first, y, (size_t)(2 * hw * c)));
            /* the folded convolution reads the same values at half resolution */
            CHECK(memcmp(first_up, y_up, (size_t)(2 * 4 * hw * c) * sizeof *first_up) == 0,
                  "%s, %s: upsample + conv differs from fused + planned (max abs %.3g); expected the same bits",
                  o.unfused ? "unfused" : "fused", o.alloc_as_you_go ? "alloc" : "plan",
                  test_max_abs_diff(first_up, y_up, (size_t)(2 * 4 * hw * c)));
        }
        CHECK(graph_exec_fused_adds(e) == (o.unfused ? 0u : 1u), "%s: %zu residual adds fused, expected %d",
              o.unfused ? "unfused" : "fused", graph_exec_fused_adds(e), o.unfused ? 0 : 1);
        CHECK(graph_exec_folded_upsamples(e) == (o.unfused ? 0u : 1u), "%s: %zu upsamplings folded, expected %d",
              o.unfused ? "unfused" : "fused", graph_exec_folded_upsamples(e), o.unfused ? 0 : 1);
        if (o.alloc_as_you_go)
            CHECK(graph_exec_arena_bytes(e) == 0 && graph_exec_peak_bytes(e) >= (size_t)(2 * 2 * hw * c * 4),
                  "alloc: no arena (got %zu) and a peak of at least two live activations (got %zu)",
                  graph_exec_arena_bytes(e), graph_exec_peak_bytes(e));
        graph_exec_destroy(e);
        graph_destroy(g);
    }
    tpool_destroy(pool);
    free(x), free(gamma), free(beta), free(first), free(first_up), free(conv_w), free(conv_b);
}

/* ---- layout nchw: the graphs rewritten channels first ---- */

/* The same arithmetic as NHWC but for summation order (im2col + GEMM
 * instead of the direct or Winograd kernel, group-norm sums in another
 * order): measured on the tiny model at most 3.9e-6 of the largest output
 * (UNet, decoder, encoder; AVX-512, AVX2 and scalar); allowed 1e-4. */
#define LAYOUT_TOL 1e-4

/* Views that turn an image into tokens: where a transformer block or a VAE
 * attention starts. */
static size_t image_to_token_views(const graph *g)
{
    size_t count = 0;
    for (size_t i = 0; i < graph_node_count(g); i++) {
        const graph_node *n = graph_node_at(g, (graph_id)i);
        count += n->op == GRAPH_OP_VIEW && n->out.ndim == 3 &&
                 graph_node_at(g, n->inputs[0])->out.layout == TENSOR_LAYOUT_NHWC;
    }
    return count;
}

static void test_layout_nchw_graphs(void)
{
    const char *path = tiny_model();
    sd_model *m = NULL;
    weight_cache *cache = NULL;
    tpool *pool = NULL;
    if (!path || sd_model_load(path, NULL, &m) != KILN_OK || weight_cache_create(KILN_DTYPE_F32, &cache) != KILN_OK ||
        tpool_create(2, &pool) != KILN_OK) {
        CHECK(0, "tiny model: %s", kiln_last_error());
        goto done;
    }
    static const struct {
        model_graph_kind kind;
        const char *name;
        int batch, h, w;
    } graphs[] = {{MODEL_GRAPH_UNET, "unet", 2, 8, 6},
                  {MODEL_GRAPH_DECODER, "decoder", 1, 6, 5},
                  {MODEL_GRAPH_ENCODER, "encoder", 1, 48, 40}};
    test_rng r = test_rng_seed(31);
    for (size_t i = 0; i < sizeof graphs / sizeof graphs[0]; i++) {
        model_graph nhwc = {0}, nchw = {0};
        graph_exec_options o;
        graph_exec_options_defaults(&o);
        if (model_graph_get_with(m, cache, &nhwc, graphs[i].kind, graphs[i].batch, graphs[i].h, graphs[i].w, &o) !=
            KILN_OK) {
            CHECK(0, "%s nhwc: %s", graphs[i].name, kiln_last_error());
            continue;
        }
        float *inputs[3] = {NULL, NULL, NULL};
        for (int k = 0; k < 3; k++)
            if (nhwc.in[k] != GRAPH_NONE) {
                const tensor *t = &graph_node_at(nhwc.g, nhwc.in[k])->out;
                size_t n = (size_t)tensor_numel(t);
                inputs[k] = random_floats(&r, n, 1.0f);
                if (t->ndim == 1) /* timesteps */
                    for (size_t j = 0; j < n; j++)
                        inputs[k][j] = 100.0f + 400.0f * (float)j;
                graph_exec_bind(nhwc.exec, nhwc.in[k], inputs[k]);
            }
        const tensor *out_t = &graph_node_at(nhwc.g, nhwc.out)->out;
        size_t out_n = (size_t)tensor_numel(out_t);
        float *want = malloc(out_n * sizeof *want);
        CHECK(graph_exec_run(nhwc.exec, pool) == KILN_OK, "%s nhwc run: %s", graphs[i].name, kiln_last_error());
        memcpy(want, graph_exec_output(nhwc.exec, nhwc.out), out_n * sizeof *want);
        double scale = 0;
        for (size_t j = 0; j < out_n; j++)
            scale = fmax(scale, fabs(want[j]));
        size_t views = image_to_token_views(nhwc.g), fused_nhwc = graph_exec_fused_adds(nhwc.exec);
        /* fused and not: the residual of a convolution is NCHW too */
        for (int unfused = 0; unfused < 2; unfused++) {
            o.nchw = 1;
            o.unfused = unfused;
            if (model_graph_get_with(m, cache, &nchw, graphs[i].kind, graphs[i].batch, graphs[i].h, graphs[i].w,
                                     &o) != KILN_OK) {
                CHECK(0, "%s nchw: %s", graphs[i].name, kiln_last_error());
                continue;
            }
            const tensor *got_t = &graph_node_at(nchw.g, nchw.out)->out;
            CHECK(tensor_same_shape(got_t, out_t) && got_t->layout == out_t->layout,
                  "%s nchw: the output must stay as the caller reads it (%s)", graphs[i].name,
                  tensor_layout_name(got_t->layout));
            /* one transpose each way per transformer block or VAE
             * attention, one after the image input, one before the output */
            size_t transposes = graph_transpose_count(nchw.g);
            CHECK(transposes == 2 * views + 2, "%s nchw: %zu transposes, expected %zu (%zu blocks over tokens)",
                  graphs[i].name, transposes, 2 * views + 2, views);
            CHECK(graph_exec_winograd_convs(nchw.exec) == 0, "%s nchw: %zu convolutions by Winograd",
                  graphs[i].name, graph_exec_winograd_convs(nchw.exec));
            if (!unfused)
                CHECK(graph_exec_fused_adds(nchw.exec) >= fused_nhwc && fused_nhwc > 0,
                      "%s nchw: %zu residual adds fused, NHWC fuses %zu", graphs[i].name,
                      graph_exec_fused_adds(nchw.exec), fused_nhwc);
            size_t planned = 0;
            CHECK(graph_plan_bytes(nchw.g, &planned) == KILN_OK &&
                      (unfused || planned == graph_exec_arena_bytes(nchw.exec)),
                  "%s nchw: planned %zu bytes, the executor's arena %zu", graphs[i].name, planned,
                  graph_exec_arena_bytes(nchw.exec));
            for (int k = 0; k < 3; k++)
                if (nchw.in[k] != GRAPH_NONE)
                    graph_exec_bind(nchw.exec, nchw.in[k], inputs[k]);
            if (graph_exec_run(nchw.exec, pool) != KILN_OK) {
                CHECK(0, "%s nchw run: %s", graphs[i].name, kiln_last_error());
                continue;
            }
            double err = test_max_abs_diff(graph_exec_output(nchw.exec, nchw.out), want, out_n) / scale;
            CHECK(err <= LAYOUT_TOL, "%s nchw (%s) against nhwc: max abs error %.3g of the largest output %.3g; "
                                     "allowed %.0e",
                  graphs[i].name, unfused ? "unfused" : "fused", err, scale, LAYOUT_TOL);
            printf("  %s nchw (%s) vs nhwc: %.2e of the output's scale, %zu transposes\n", graphs[i].name,
                   unfused ? "unfused" : "fused", err, transposes);
        }
        model_graph_clear(&nhwc);
        model_graph_clear(&nchw);
        for (int k = 0; k < 3; k++)
            free(inputs[k]);
        free(want);
    }
done:
    tpool_destroy(pool);
    weight_cache_destroy(cache);
    sd_model_destroy(m);
}

/* ---- kiln_generate with each switch ---- */

static kiln_result *generate(model_session *s, const kiln_optimizations *o)
{
    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = "a red circle on a blue background";
    r.negative_prompt = "blurry";
    r.steps = 3;
    r.seed = 99;
    r.sampler = "euler";
    r.optimizations = o;
    kiln_result *res = NULL;
    kiln_status st = kiln_generate(s->model, &r, &res);
    CHECK(st == KILN_OK, "generate: %s", kiln_last_error());
    return st == KILN_OK ? res : NULL;
}

typedef struct pixel_diff {
    int max;
    double mean;
} pixel_diff;

static pixel_diff compare(const kiln_result *a, const kiln_result *b)
{
    pixel_diff d = {0, 0};
    size_t n = (size_t)a->images[0].width * a->images[0].height * 3;
    for (size_t i = 0; i < n; i++) {
        int e = abs((int)a->images[0].rgb[i] - (int)b->images[0].rgb[i]);
        d.max = e > d.max ? e : d.max;
        d.mean += e;
    }
    d.mean /= (double)n;
    return d;
}

/* The reference: every switch on its plainest path, f32 weights. */
static void reference_config(kiln_optimizations *o)
{
    kiln_optimizations_defaults(o);
    o->attention = KILN_ATTENTION_PLAIN;
    o->fusion = 0;
    o->winograd = 0;
    o->memory = KILN_MEMORY_ALLOC;
    o->fast_math = 0;
    o->precision = KILN_PRECISION_F32;
    o->threads = 0;
}

static void test_each_switch_against_f32_reference(void)
{
    model_session f32;
    if (model_session_open(&f32, tiny_model(), 2, "f32") != 0)
        return;
    kiln_optimizations ref;
    reference_config(&ref);
    kiln_result *want = generate(&f32, &ref);
    if (!want) {
        model_session_close(&f32);
        return;
    }
    kiln_optimizations best;
    kiln_optimizations_defaults(&best);
    best.precision = KILN_PRECISION_F32;

    /* f32 switches: the same arithmetic up to summation order and exp's
     * 2e-7: at most 2 levels of 255 apart anywhere, 0.05 on average */
    struct {
        const char *what;
        const char *name, *value;
    } flips[] = {
        {"best configuration", NULL, NULL},
        {"attention plain", "attention", "plain"},
        {"attention tile 12", "attention_tile", "12"},
        {"attention tile 96", "attention_tile", "96"},
        {"fusion off", "fusion", "off"},
        {"winograd off", "winograd", "off"},
        {"memory alloc", "memory", "alloc"},
        {"fast math off", "fast_math", "off"},
        {"layout nchw", "layout", "nchw"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        kiln_optimizations o = best;
        if (flips[i].name)
            CHECK(kiln_optimizations_set(&o, flips[i].name, flips[i].value) == KILN_OK, "set %s: %s",
                  flips[i].name, kiln_last_error());
        kiln_result *got = generate(&f32, &o);
        if (!got)
            continue;
        pixel_diff d = compare(got, want);
        CHECK(d.max <= 2 && d.mean <= 0.05,
              "%s against the f32 reference: max %d, mean %.3f levels apart; allowed 2 and 0.05", flips[i].what,
              d.max, d.mean);
        /* all run as asked, except what this kernel level lacks: a tile
         * for an untiled kernel, fast math at the scalar level; and
         * Winograd, whose kernels are NHWC, under layout nchw */
        for (int k = 0; k < KILN_OPT_COUNT; k++)
            CHECK(got->optimization_report[k].available ||
                      (k == KILN_OPT_ATTENTION_TILE && kernels_get()->attention_tile_max == 0) ||
                      (k == KILN_OPT_FAST_MATH && cpu_isa() == KILN_ISA_SCALAR) ||
                      (k == KILN_OPT_WINOGRAD && o.layout == KILN_LAYOUT_NCHW),
                  "%s: %s reported unavailable: %s", flips[i].what, kiln_opt_name((kiln_opt)k),
                  got->optimization_report[k].note);
        kiln_result_destroy(got);
    }
    /* alloc and plan, fusion on and off: the same bits end to end */
    kiln_optimizations a = best, b = best;
    a.memory = KILN_MEMORY_ALLOC;
    b.fusion = 0;
    kiln_result *base = generate(&f32, &best), *ra = generate(&f32, &a), *rb = generate(&f32, &b);
    if (base && ra && rb) {
        pixel_diff da = compare(ra, base), db = compare(rb, base);
        CHECK(da.max == 0, "memory alloc vs plan: images differ by up to %d; expected the same bits", da.max);
        CHECK(db.max == 0, "fusion off vs on: images differ by up to %d; expected the same bits", db.max);
        CHECK(ra->timings.activation_bytes > 0 && base->timings.activation_bytes > 0,
              "activation bytes reported: alloc %zu, plan %zu", ra->timings.activation_bytes,
              base->timings.activation_bytes);
    }
    kiln_result_destroy(base), kiln_result_destroy(ra), kiln_result_destroy(rb);
    kiln_result_destroy(want);

    /* half precisions: the weights rounded to 11 (f16) or 8 (bf16)
     * significant bits, and with AVX512_BF16's dot products the
     * activations too. Measured on the tiny random model: f16 at most 1
     * level of 255 apart (0.05 on average), bf16 5 (0.6), bf16 dot
     * products 10 (1.3); allowed: about three times that */
    static const struct {
        const char *name;
        kiln_precision p;
        int dot; /* the bf16 dot products turned on (skipped where there are none) */
        int max;
        double mean;
    } halves[] = {{"f16", KILN_PRECISION_F16, 0, 4, 0.3},
                  {"bf16", KILN_PRECISION_BF16, 0, 16, 2.0},
                  {"bf16", KILN_PRECISION_BF16, 1, 30, 4.0}};
    model_session ref_again;
    if (model_session_open(&ref_again, tiny_model(), 2, "f32") != 0) {
        model_session_close(&f32);
        return;
    }
    want = generate(&ref_again, &ref);
    int has_dot = cpu_isa() >= KILN_ISA_AVX512 && kernels_get()->linear_bf16_dot != NULL;
    for (size_t i = 0; i < sizeof halves / sizeof halves[0] && want; i++) {
        if (halves[i].dot && !has_dot) {
            printf("  bf16 dot products: none at this level (%s)\n", kernels_bf16_dot_reason());
            continue;
        }
        kernels_set_bf16_dot(halves[i].dot);
        model_session s;
        if (model_session_open(&s, tiny_model(), 2, halves[i].name) != 0)
            continue;
        CHECK(kiln_model_precision(s.model) == halves[i].p, "%s model reports precision %s", halves[i].name,
              kiln_precision_name(kiln_model_precision(s.model)));
        kiln_optimizations o = best;
        o.precision = halves[i].p;
        kiln_result *got = generate(&s, &o);
        if (got) {
            pixel_diff d = compare(got, want);
            const char *how = halves[i].dot ? " (dot products)" : "";
            CHECK(d.max <= halves[i].max && d.mean <= halves[i].mean,
                  "%s%s against the f32 reference: max %d, mean %.3f levels apart; allowed %d and %.1f",
                  halves[i].name, how, d.max, d.mean, halves[i].max, halves[i].mean);
            printf("  %s%s vs f32 reference: max %d, mean %.3f levels\n", halves[i].name, how, d.max, d.mean);
            const kiln_opt_report *pr = &got->optimization_report[KILN_OPT_PRECISION];
            CHECK(pr->available && strcmp(pr->active, halves[i].name) == 0, "%s: precision report active '%s'",
                  halves[i].name, pr->active);
            if (halves[i].p == KILN_PRECISION_BF16 && halves[i].dot)
                CHECK(strstr(pr->note, "AVX512_BF16 dot products:") != NULL,
                      "bf16 note must say the dot products ran: '%s'", pr->note);
            else if (halves[i].p == KILN_PRECISION_BF16)
                CHECK(strstr(pr->note, "widened to f32") != NULL &&
                          strstr(pr->note, cpu_get()->has_avx512_bf16 ? "not AVX512_BF16 dot products" : "no AVX512_BF16"),
                      "bf16 note must say the weights are widened and why: '%s'", pr->note);
            kiln_result_destroy(got);
        }
        model_session_close(&s);
    }
    kernels_set_bf16_dot(-1);
    kiln_result_destroy(want);
    model_session_close(&ref_again);
    model_session_close(&f32);
}

/* ---- the report ---- */

static void test_report_names_what_cannot_run(void)
{
    model_session s;
    if (model_session_open(&s, tiny_model(), 2, NULL) != 0)
        return;
    kiln_optimizations o;
    kiln_optimizations_defaults(&o);
    o.layout = KILN_LAYOUT_NCHW;
    o.vae_tiling = 1;
    o.vae_tile = 256;
    o.precision = KILN_PRECISION_BF16; /* the model is f32 */
    o.threads = 7;                     /* the engine runs 2 */
    o.attention_tile = 50;
    kiln_result *res = generate(&s, &o);
    if (res) {
        const kiln_opt_report *rep = res->optimization_report;
        struct {
            kiln_opt opt;
            const char *active, *why;
        } unavailable[] = {
            {KILN_OPT_WINOGRAD, "off", "layout nchw"},
            {KILN_OPT_PRECISION, "f32", "loaded as f32"},
            {KILN_OPT_THREADS, "2", "this engine runs 2"},
        };
        for (size_t i = 0; i < sizeof unavailable / sizeof unavailable[0]; i++) {
            const kiln_opt_report *r = &rep[unavailable[i].opt];
            CHECK(!r->available && strcmp(r->active, unavailable[i].active) == 0 && strstr(r->note, unavailable[i].why),
                  "%s: expected unavailable, active '%s', a reason with '%s'; got available %d, active '%s', note '%s'",
                  kiln_opt_name(unavailable[i].opt), unavailable[i].active, unavailable[i].why, r->available,
                  r->active, r->note);
        }
        const kiln_opt_report *tile = &rep[KILN_OPT_ATTENTION_TILE];
        if (kernels_get()->attention_tile_max > 0)
            CHECK(!tile->available && strcmp(tile->asked, "50") == 0 && strcmp(tile->active, "48") == 0,
                  "tile 50 must run as 48 and say so: available %d, asked '%s', active '%s'", tile->available,
                  tile->asked, tile->active);
        CHECK(rep[KILN_OPT_ATTENTION].available && rep[KILN_OPT_MEMORY].available && rep[KILN_OPT_FUSION].available,
              "attention, memory and fusion run as asked");
        const kiln_opt_report *lr = &rep[KILN_OPT_LAYOUT];
        CHECK(lr->available && strcmp(lr->active, "nchw") == 0 && strstr(lr->note, "im2col") &&
                  strstr(lr->note, "transposes"),
              "layout nchw must run and say how: available %d, active '%s', note '%s'", lr->available, lr->active,
              lr->note);
        /* VAE tiling runs; the tiny model's 64x64 image is within one tile */
        const kiln_opt_report *vt = &rep[KILN_OPT_VAE_TILING], *vs = &rep[KILN_OPT_VAE_TILE];
        CHECK(vt->available && strcmp(vt->active, "on") == 0 && strstr(vt->note, "within one 256-pixel tile") &&
                  vs->available && strcmp(vs->active, "256") == 0,
              "vae tiling must run and say the image is decoded whole: available %d, active '%s', note '%s'; tile "
              "'%s'",
              vt->available, vt->active, vt->note, vs->active);
        CHECK(res->optimizations.layout == KILN_LAYOUT_NCHW && !res->optimizations.winograd &&
                  res->optimizations.threads == 2 &&
                  res->optimizations.precision == KILN_PRECISION_F32 && res->optimizations.vae_tiling &&
                  res->optimizations.vae_tile == 256 && res->plan.vae_tiles == 1,
              "the active configuration must be what ran");
        kiln_result_destroy(res);
    }
    /* no optimizations given: the defaults in the model's precision, all available */
    kiln_optimizations active;
    kiln_opt_report rep[KILN_OPT_COUNT];
    CHECK(kiln_model_optimizations(s.model, NULL, &active, rep) == KILN_OK, "%s", kiln_last_error());
    for (int k = 0; k < KILN_OPT_COUNT; k++)
        CHECK(rep[k].available || (k == KILN_OPT_FAST_MATH && cpu_isa() == KILN_ISA_SCALAR),
              "defaults: %s unavailable: %s", kiln_opt_name((kiln_opt)k), rep[k].note);
    /* a value out of range is refused, naming the switch */
    kiln_optimizations bad;
    kiln_optimizations_defaults(&bad);
    bad.memory = (kiln_memory)9;
    CHECK(kiln_model_optimizations(s.model, &bad, &active, rep) == KILN_ERR_INVALID &&
              strstr(kiln_last_error(), "memory"),
          "an out-of-range memory mode must be refused naming it: %s", kiln_last_error());
    model_session_close(&s);
}

static void test_set_and_get(void)
{
    kiln_optimizations o;
    kiln_optimizations_defaults(&o);
    CHECK(kiln_optimizations_set(&o, "fast-math", "off") == KILN_OK && o.fast_math == 0, "fast-math off");
    CHECK(kiln_optimizations_set(&o, "attention", "plain") == KILN_OK && o.attention == KILN_ATTENTION_PLAIN,
          "attention plain");
    CHECK(kiln_optimizations_set(&o, "precision", "bf16") == KILN_OK && o.precision == KILN_PRECISION_BF16,
          "precision bf16");
    CHECK(kiln_optimizations_set(&o, "vae_tile", "512") == KILN_OK && o.vae_tile == 512, "vae_tile 512");
    CHECK(kiln_optimizations_set(&o, "vae_tiling", "on") == KILN_OK && o.vae_tiling == 1, "vae_tiling on");
    kiln_optimizations before = o;
    CHECK(kiln_optimizations_set(&o, "attention", "flash") == KILN_ERR_INVALID &&
              strstr(kiln_last_error(), "attention") && strstr(kiln_last_error(), "tiled, plain"),
          "a bad value names the switch and the allowed values: %s", kiln_last_error());
    CHECK(kiln_optimizations_set(&o, "attention_tile", "-3") == KILN_ERR_INVALID, "negative tile refused");
    CHECK(kiln_optimizations_set(&o, "warp_speed", "on") == KILN_ERR_INVALID && strstr(kiln_last_error(), "unknown"),
          "an unknown switch is refused: %s", kiln_last_error());
    CHECK(memcmp(&before, &o, sizeof o) == 0, "a refused set leaves the struct untouched");
    char buf[32];
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        kiln_optimizations_get(&o, (kiln_opt)k, buf, sizeof buf);
        kiln_optimizations copy;
        kiln_optimizations_defaults(&copy);
        CHECK(kiln_optimizations_set(&copy, kiln_opt_name((kiln_opt)k), buf) == KILN_OK,
              "%s: its own text '%s' must parse back: %s", kiln_opt_name((kiln_opt)k), buf, kiln_last_error());
    }
}

/* ---- a token table kept in the file's dtype ---- */

/* The text encoder's token table is kept as the file has it (an f16 file's
 * 49,408 x 768 table: 76 MB, not 152 as f32) and embed_tokens widens the
 * rows it reads. Values that f16 and bf16 hold exactly give the same sums
 * as an f32 table, bit for bit, and the prepared bytes are the file's. */
static void test_token_table_in_file_dtype(void)
{
    enum { V = 37, C = 24, B = 2, L = 5 };
    static const kiln_dtype dtypes[] = {KILN_DTYPE_F32, KILN_DTYPE_F16, KILN_DTYPE_BF16};
    float table[V * C], positions[L * C], ids[B * L], want[B * L * C];
    for (int i = 0; i < V * C; i++)
        table[i] = (float)((i * 7) % 61 - 30) / 16.0f; /* 8 significant bits at most: exact in bf16 and f16 */
    for (int i = 0; i < L * C; i++)
        positions[i] = (float)((i * 5) % 23) / 64.0f;
    for (int i = 0; i < B * L; i++)
        ids[i] = (float)((i * 11 + 3) % V);
    for (int i = 0; i < B * L; i++)
        for (int c = 0; c < C; c++)
            want[i * C + c] = table[(int)ids[i] * C + c] + positions[(i % L) * C + c];
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        uint16_t half[V * C];
        for (int i = 0; i < V * C; i++)
            half[i] = dtypes[d] == KILN_DTYPE_F16 ? half_f32_to_f16(table[i]) : half_f32_to_bf16(table[i]);
        int64_t ts[2] = {V, C}, ps[2] = {L, C}, is[2] = {B, L};
        tensor tt, tp;
        tensor_init(&tt, dtypes[d], TENSOR_LAYOUT_PLAIN, 2, ts, dtypes[d] == KILN_DTYPE_F32 ? (void *)table : (void *)half);
        tensor_init(&tp, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, 2, ps, positions);
        graph *g = NULL;
        graph_exec *e = NULL;
        weight_cache *cache = NULL;
        tpool *pool = NULL;
        if (graph_create(&g) != KILN_OK || weight_cache_create(KILN_DTYPE_F32, &cache) != KILN_OK ||
            tpool_create(1, &pool) != KILN_OK) {
            CHECK(0, "setup: %s", kiln_last_error());
        } else {
            graph_id in = graph_input(g, "ids", TENSOR_LAYOUT_PLAIN, 2, is);
            graph_id out = graph_embed_tokens(g, "embed", in, graph_weight(g, "table", &tt), graph_weight(g, "pos", &tp));
            graph_mark_output(g, out);
            if (graph_exec_create(g, cache, &e) != KILN_OK || graph_exec_bind(e, in, ids) != KILN_OK ||
                graph_exec_run(e, pool) != KILN_OK) {
                CHECK(0, "%s table: %s", kiln_dtype_name(dtypes[d]), kiln_last_error());
            } else {
                CHECK(memcmp(graph_exec_output(e, out), want, sizeof want) == 0,
                      "%s table: the embeddings differ from the f32 table's", kiln_dtype_name(dtypes[d]));
                size_t bytes = weight_cache_bytes(cache), expect = tensor_nbytes(&tt) + sizeof positions;
                CHECK(bytes == expect, "%s table: %zu bytes prepared, expected %zu (the table as the file has it)",
                      kiln_dtype_name(dtypes[d]), bytes, expect);
            }
        }
        graph_exec_destroy(e);
        graph_destroy(g);
        weight_cache_destroy(cache);
        tpool_destroy(pool);
    }
}

TEST_MAIN(TEST(test_set_and_get), TEST(test_attention_paths_match_reference), TEST(test_winograd_through_executor), TEST(test_fast_math_kernels),
          TEST(test_fusion_and_memory_same_bits), TEST(test_layout_nchw_graphs), TEST(test_each_switch_against_f32_reference),
          TEST(test_report_names_what_cannot_run), TEST(test_token_table_in_file_dtype))
