/*
 * The SIMD kernels against the scalar reference (kernels/ops_scalar.c) on
 * random data and on the shapes that break tiling: 1, primes, one past a
 * tile, padding on every side, stride 2. Each level this CPU has is
 * compared; max-abs and relative errors are printed. The channels-first
 * kernels (kernels/nchw.h) are compared with the scalar NHWC reference on
 * transposed tensors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/half.h"
#include "kernels/kernels.h"
#include "kernels/nchw.h"
#include "kernels/norm_stats.h"
#include "kernels/winograd.h"
#include "test_support.h"

/* Accumulation order differs between levels (FMA, tile order), so results
 * agree to float32 rounding of sums of up to a few thousand terms. */
#define TOL 2e-5

static float *random_floats(test_rng *r, size_t n)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = test_rng_uniform(r, -1.0f, 1.0f);
    return x;
}

static packed_weights pack_as(const float *w, kiln_dtype dtype, int nr, int64_t n, int64_t k, int64_t taps)
{
    void *data = NULL;
    if (posix_memalign(&data, 64, kernels_packed_elements(nr, n, k, taps) * kiln_dtype_size(dtype) + 64) != 0)
        abort();
    kernels_pack_weights(w, KILN_DTYPE_F32, dtype, nr, n, k, taps, data);
    return (packed_weights){.nr = nr, .dtype = dtype, .n = n, .k = k, .taps = taps, .data = data};
}

/* Packing dtype under test: both kernels read the same rounded weights. */
static kiln_dtype pack_dtype = KILN_DTYPE_F32;

static packed_weights pack(const float *w, int nr, int64_t n, int64_t k, int64_t taps)
{
    return pack_as(w, pack_dtype, nr, n, k, taps);
}

static double max_rel_err(const float *got, const float *want, size_t n, double *max_abs)
{
    double worst = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(want[i]));
        double e = fabs((double)got[i] - want[i]);
        worst = isnan(e) ? INFINITY : fmax(worst, e);
    }
    *max_abs = worst;
    return worst / scale;
}

/* Set while the bf16 dot products are under test: only the avx512 level
 * has them, and the scalar reference then reads the activations rounded
 * to bf16 as they do. */
static int bf16_dot_under_test;

static int levels_to_test(kiln_isa *out)
{
    int n = 0;
    for (int isa = KILN_ISA_AVX2; isa <= (int)cpu_get()->best_isa; isa++)
        if (kernels_for((kiln_isa)isa)->gemm_nr > 0 && (!bf16_dot_under_test || isa == KILN_ISA_AVX512))
            out[n++] = (kiln_isa)isa;
    return n;
}

/* x as the reference must read it: rounded to bf16 (nearest even) while
 * the dot products are under test, else x itself. */
static float *reference_input(float *x, size_t n)
{
    if (!bf16_dot_under_test)
        return x;
    float *rounded = malloc((n ? n : 1) * sizeof *rounded);
    for (size_t i = 0; i < n; i++)
        rounded[i] = half_bf16_to_f32(half_f32_to_bf16(x[i]));
    return rounded;
}

static void test_linear_matches_scalar(void)
{
    kiln_isa levels[KILN_ISA_COUNT];
    int n_levels = levels_to_test(levels);
    if (n_levels == 0)
        printf("    no SIMD matrix kernels on this cpu: nothing to compare\n");
    /* 200 rows: more than 8 row tiles at every level */
    const int64_t ms[] = {1, 2, 11, 12, 13, 37, 200}, ns[] = {1, 7, 32, 33, 70}, ks[] = {1, 3, 64, 333};
    test_rng r = test_rng_seed(1);
    double worst = 0;
    for (int l = 0; l < n_levels; l++)
        for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
            for (size_t b = 0; b < 5; b++)
                for (size_t c = 0; c < 4; c++) {
                    int64_t m = ms[a], n = ns[b], k = ks[c];
                    const kernel_table *fast = kernels_for(levels[l]), *ref = kernels_for(KILN_ISA_SCALAR);
                    float *x = random_floats(&r, (size_t)(m * (k + 3))), *w = random_floats(&r, (size_t)(n * k));
                    float *bias = random_floats(&r, (size_t)n);
                    float *y0 = calloc((size_t)(m * (n + 5)), sizeof *y0), *y1 = calloc((size_t)(m * (n + 5)), sizeof *y1);
                    packed_weights p0 = pack(w, 0, n, k, 1), p1 = pack(w, fast->gemm_nr, n, k, 1);
                    /* strided rows (ldx = k + 3, ldy = n + 5), split in two column ranges and
                     * two row ranges, the second starting off a tile boundary */
                    float *x_ref = reference_input(x, (size_t)(m * (k + 3)));
                    ref->linear_f32(x_ref, k + 3, &p0, bias, y0, n + 5, 0, m, 0, n);
                    if (x_ref != x)
                        free(x_ref);
                    int64_t split = n > fast->gemm_nr ? fast->gemm_nr : n, rows = m / 2 + (m > 2);
                    fast->linear_f32(x, k + 3, &p1, bias, y1, n + 5, 0, rows, 0, split);
                    fast->linear_f32(x, k + 3, &p1, bias, y1, n + 5, 0, rows, split, n);
                    fast->linear_f32(x, k + 3, &p1, bias, y1, n + 5, rows, m, 0, split);
                    fast->linear_f32(x, k + 3, &p1, bias, y1, n + 5, rows, m, split, n);
                    double abs_err, rel = max_rel_err(y1, y0, (size_t)(m * (n + 5)), &abs_err);
                    worst = fmax(worst, rel);
                    CHECK(rel <= TOL, "linear %s m=%lld n=%lld k=%lld: rel err %.3e (abs %.3e)", kiln_isa_name(levels[l]),
                          (long long)m, (long long)n, (long long)k, rel, abs_err);
                    free(x), free(w), free(bias), free(y0), free(y1);
                    free((void *)p0.data), free((void *)p1.data);
                }
    printf("    linear: worst rel err %.2e over %d levels\n", worst, n_levels);
}

static void test_conv_matches_scalar(void)
{
    kiln_isa levels[KILN_ISA_COUNT];
    int n_levels = levels_to_test(levels);
    typedef struct conv_case {
        int batch, h, w, in_c, out_c, kernel, stride, pad_top, pad_left, pad_bottom, pad_right, residual;
    } conv_case;
    const conv_case cases[] = {
        {1, 5, 7, 3, 8, 3, 1, 1, 1, 1, 1, 0},    {2, 6, 6, 32, 32, 3, 1, 1, 1, 1, 1, 1},
        {1, 9, 4, 17, 45, 3, 2, 1, 1, 1, 1, 0},  {1, 8, 10, 16, 33, 3, 2, 0, 0, 1, 1, 1}, /* the VAE's downsample */
        {2, 3, 5, 64, 70, 1, 1, 0, 0, 0, 0, 1},  {1, 1, 1, 5, 1, 3, 1, 1, 1, 1, 1, 0},
        {1, 13, 13, 40, 64, 3, 1, 1, 1, 1, 1, 0},
    };
    test_rng r = test_rng_seed(2);
    double worst = 0;
    for (int l = 0; l < n_levels; l++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const conv_case *cc = &cases[i];
            const kernel_table *fast = kernels_for(levels[l]), *ref = kernels_for(KILN_ISA_SCALAR);
            conv2d_geom g = {.batch = cc->batch, .in_h = cc->h, .in_w = cc->w, .in_c = cc->in_c, .out_c = cc->out_c,
                             .kernel = cc->kernel, .stride = cc->stride, .pad_top = cc->pad_top, .pad_left = cc->pad_left};
            g.out_h = (cc->h + cc->pad_top + cc->pad_bottom - cc->kernel) / cc->stride + 1;
            g.out_w = (cc->w + cc->pad_left + cc->pad_right - cc->kernel) / cc->stride + 1;
            int64_t taps = (int64_t)cc->kernel * cc->kernel, pixels = g.batch * g.out_h * g.out_w;
            size_t out_n = (size_t)(pixels * g.out_c);
            float *x = random_floats(&r, (size_t)(g.batch * g.in_h * g.in_w * g.in_c));
            float *w = random_floats(&r, (size_t)(g.out_c * g.in_c * taps)), *bias = random_floats(&r, (size_t)g.out_c);
            float *res = cc->residual ? random_floats(&r, out_n) : NULL;
            float *y0 = calloc(out_n, sizeof *y0), *y1 = calloc(out_n, sizeof *y1);
            packed_weights p0 = pack(w, 0, g.out_c, g.in_c, taps), p1 = pack(w, fast->gemm_nr, g.out_c, g.in_c, taps);
            float *x_ref = reference_input(x, (size_t)(g.batch * g.in_h * g.in_w * g.in_c));
            ref->conv2d_f32(&g, x_ref, &p0, bias, res, y0, 0, pixels, 0, g.out_c);
            if (x_ref != x)
                free(x_ref);
            /* in pieces, as threads would take it */
            int64_t half = pixels / 2;
            fast->conv2d_f32(&g, x, &p1, bias, res, y1, 0, half, 0, g.out_c);
            fast->conv2d_f32(&g, x, &p1, bias, res, y1, half, pixels, 0, g.out_c);
            double abs_err, rel = max_rel_err(y1, y0, out_n, &abs_err);
            worst = fmax(worst, rel);
            CHECK(rel <= TOL, "conv %s case %zu: rel err %.3e (abs %.3e)", kiln_isa_name(levels[l]), i, rel, abs_err);
            free(x), free(w), free(bias), free(res), free(y0), free(y1);
            free((void *)p0.data), free((void *)p1.data);
        }
    printf("    conv: worst rel err %.2e over %d levels\n", worst, n_levels);
}

/* Winograd's transforms multiply the inputs by up to 8 (A^T) and 5 (B^T)
 * and the weights by fractions down to 1/24 before the products are
 * summed, so its rounding error is a few times that of the direct sum;
 * measured worst over these cases 8e-6 relative to the largest output. */
#define WINOGRAD_TOL 2e-5

/* The transformed weights (all output channels) and one call's scratch
 * over `tiles` tiles; 0 when either allocation fails. */
static int winograd_buffers(const conv2d_geom *g, winograd_variant v, const packed_weights *w, int64_t tiles,
                            float **u, void **scratch)
{
    *u = NULL, *scratch = NULL;
    size_t u_bytes = winograd_weight_floats(v, w->nr, g->out_c, g->in_c) * sizeof(float);
    return posix_memalign((void **)u, 64, u_bytes) == 0 &&
           posix_memalign(scratch, 64, winograd_scratch_bytes(g, v, tiles, g->out_c)) == 0;
}

typedef struct wg_case {
    int batch, h, w, in_c, out_c, pad, residual;
} wg_case;

/* One case of one Winograd variant at one level and weight dtype against
 * the scalar direct convolution; returns the worst relative error. All
 * channels as one group, then (where there are two panels) one panel per
 * group; weights in two channel ranges and tiles in two pieces, as
 * threads take them. */
static double winograd_case_error(const kernel_table *fast, winograd_variant v, kiln_dtype dtype, const wg_case *cc,
                                  size_t case_index, test_rng *r)
{
    conv2d_geom g = {.batch = cc->batch, .in_h = cc->h, .in_w = cc->w, .in_c = cc->in_c, .out_c = cc->out_c,
                     .kernel = 3, .stride = 1, .pad_top = cc->pad, .pad_left = cc->pad};
    g.out_h = cc->h + 2 * cc->pad - 2;
    g.out_w = cc->w + 2 * cc->pad - 2;
    if (g.out_h < 1 || g.out_w < 1)
        return 0;
    int64_t pixels = g.batch * g.out_h * g.out_w, tiles = winograd_tiles(&g, v);
    size_t out_n = (size_t)(pixels * g.out_c);
    float *x = random_floats(r, (size_t)(g.batch * g.in_h * g.in_w * g.in_c));
    float *w = random_floats(r, (size_t)(g.out_c * g.in_c * 9)), *bias = random_floats(r, (size_t)g.out_c);
    float *res = cc->residual ? random_floats(r, out_n) : NULL;
    float *y0 = calloc(out_n, sizeof *y0), *y1 = calloc(out_n, sizeof *y1);
    packed_weights p0 = pack_as(w, dtype, 0, g.out_c, g.in_c, 9);
    packed_weights p1 = pack_as(w, dtype, fast->gemm_nr, g.out_c, g.in_c, 9);
    kernels_for(KILN_ISA_SCALAR)->conv2d_f32(&g, x, &p0, bias, res, y0, 0, pixels, 0, g.out_c);

    int64_t lanes = p1.nr > 0 ? p1.nr : 1, half = tiles / 2;
    float *u;
    void *scratch;
    CHECK(winograd_buffers(&g, v, &p1, tiles, &u, &scratch), "winograd buffers");
    double worst = 0;
    for (int grouped = 0; grouped < 2; grouped++) {
        int64_t group = grouped ? lanes : g.out_c;
        if (grouped && group >= g.out_c)
            break;
        memset(y1, 0, out_n * sizeof *y1);
        for (int64_t g0 = 0; g0 < g.out_c; g0 += group) {
            int64_t g1 = g0 + group < g.out_c ? g0 + group : g.out_c;
            int64_t split = g1 - g0 > lanes ? g0 + lanes : g1;
            fast->winograd_weights_f32[v](&p1, g0, g1, u, g0, split);
            fast->winograd_weights_f32[v](&p1, g0, g1, u, split, g1);
            fast->winograd_conv_f32[v](&g, x, &p1, u, g0, g1, bias, res, y1, 0, half, scratch);
            fast->winograd_conv_f32[v](&g, x, &p1, u, g0, g1, bias, res, y1, half, tiles, scratch);
        }
        double abs_err, rel = max_rel_err(y1, y0, out_n, &abs_err);
        worst = fmax(worst, rel);
        CHECK(rel <= WINOGRAD_TOL, "winograd F(%dx%d) %s %s case %zu%s: rel err %.3e (abs %.3e)", winograd_side(v),
              winograd_side(v), kiln_isa_name(fast->isa), kiln_dtype_name(dtype), case_index,
              grouped ? " one panel per group" : "", rel, abs_err);
    }
    free(x), free(w), free(bias), free(res), free(y0), free(y1), free(u), free(scratch);
    free((void *)p0.data), free((void *)p1.data);
    return worst;
}

/* Both Winograd convolutions, F(4x4) and F(2x2), of every level (the
 * scalar one included) against the scalar direct convolution: sizes that
 * are not multiples of the tile, padding on no side and on every side,
 * residual and bias, the work split in pieces as threads take it. */
static void test_winograd_matches_direct(void)
{
    const wg_case cases[] = {
        {1, 4, 4, 1, 1, 1, 0},    {1, 5, 7, 3, 8, 1, 0},     {2, 6, 6, 32, 32, 1, 1}, {1, 13, 9, 40, 70, 1, 1},
        {2, 8, 8, 64, 33, 0, 0},  {1, 1, 1, 5, 3, 1, 0},     {1, 11, 2, 17, 45, 1, 0}, {2, 16, 16, 96, 64, 1, 1}, {1, 6, 5, 150, 40, 1, 1},
    };
    const kiln_dtype dtypes[] = {KILN_DTYPE_F32, KILN_DTYPE_F16, KILN_DTYPE_BF16};
    test_rng r = test_rng_seed(7);
    double worst[WINOGRAD_VARIANTS] = {0};
    for (int isa = KILN_ISA_SCALAR; isa <= (int)cpu_get()->best_isa; isa++)
        for (int v = 0; v < WINOGRAD_VARIANTS; v++)
            for (size_t d = 0; d < 3; d++)
                for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                    worst[v] = fmax(worst[v], winograd_case_error(kernels_for((kiln_isa)isa), (winograd_variant)v,
                                                                  dtypes[d], &cases[i], i, &r));
    printf("    winograd: worst rel err F(4x4) %.2e, F(2x2) %.2e (tolerance %.0e)\n", worst[WINOGRAD_F4],
           worst[WINOGRAD_F2], WINOGRAD_TOL);
}

/* A convolution that reads its input upsampled (conv2d_geom.upsample: the
 * graph's folded nearest x2 upsampling) reads the same values as one given
 * the upsampled tensor: the same bits, direct and Winograd, every level. */
static void test_upsampled_read_matches_upsampled_input(void)
{
    typedef struct up_case {
        int batch, h, w, in_c, out_c, stride;
    } up_case;
    const up_case cases[] = {{1, 3, 5, 7, 9, 1}, {2, 8, 8, 32, 40, 1}, {1, 5, 4, 70, 33, 1}, {1, 6, 7, 16, 20, 2}};
    test_rng r = test_rng_seed(11);
    for (int isa = KILN_ISA_SCALAR; isa <= (int)cpu_get()->best_isa; isa++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const up_case *cc = &cases[i];
            const kernel_table *k = kernels_for((kiln_isa)isa);
            conv2d_geom g = {.batch = cc->batch, .in_h = 2 * cc->h, .in_w = 2 * cc->w, .in_c = cc->in_c,
                             .out_c = cc->out_c, .kernel = 3, .stride = cc->stride, .pad_top = 1, .pad_left = 1};
            g.out_h = (g.in_h + 2 - 3) / g.stride + 1;
            g.out_w = (g.in_w + 2 - 3) / g.stride + 1;
            int64_t pixels = g.batch * g.out_h * g.out_w;
            size_t out_n = (size_t)(pixels * g.out_c), half_n = (size_t)(g.batch * cc->h * cc->w * g.in_c);
            float *half = random_floats(&r, half_n), *full = malloc(4 * half_n * sizeof *full);
            for (int64_t b = 0; b < g.batch; b++)
                for (int64_t y = 0; y < g.in_h; y++)
                    for (int64_t x = 0; x < g.in_w; x++)
                        memcpy(full + ((b * g.in_h + y) * g.in_w + x) * g.in_c,
                               half + ((b * cc->h + y / 2) * cc->w + x / 2) * g.in_c, (size_t)g.in_c * sizeof *full);
            float *w = random_floats(&r, (size_t)(g.out_c * g.in_c * 9)), *bias = random_floats(&r, (size_t)g.out_c);
            float *y0 = calloc(out_n, sizeof *y0), *y1 = calloc(out_n, sizeof *y1);
            packed_weights pw = pack_as(w, KILN_DTYPE_F32, k->gemm_nr, g.out_c, g.in_c, 9);
            conv2d_geom folded = g;
            folded.upsample = 1;
            k->conv2d_f32(&g, full, &pw, bias, NULL, y0, 0, pixels, 0, g.out_c);
            k->conv2d_f32(&folded, half, &pw, bias, NULL, y1, 0, pixels, 0, g.out_c);
            double abs_err;
            CHECK(memcmp(y0, y1, out_n * sizeof *y0) == 0, "direct %s case %zu: upsampled read differs (rel %.3g)",
                  kiln_isa_name((kiln_isa)isa), i, max_rel_err(y1, y0, out_n, &abs_err));
            for (int v = 0; v < WINOGRAD_VARIANTS && g.stride == 1 && winograd_fits(&g); v++) {
                int64_t tiles = winograd_tiles(&g, (winograd_variant)v);
                float *u;
                void *scratch;
                if (winograd_buffers(&g, (winograd_variant)v, &pw, tiles, &u, &scratch)) {
                    k->winograd_weights_f32[v](&pw, 0, g.out_c, u, 0, g.out_c);
                    k->winograd_conv_f32[v](&g, full, &pw, u, 0, g.out_c, bias, NULL, y0, 0, tiles, scratch);
                    k->winograd_conv_f32[v](&folded, half, &pw, u, 0, g.out_c, bias, NULL, y1, 0, tiles, scratch);
                    CHECK(memcmp(y0, y1, out_n * sizeof *y0) == 0,
                          "winograd F(%dx%d) %s case %zu: upsampled read differs (rel %.3g)",
                          winograd_side((winograd_variant)v), winograd_side((winograd_variant)v),
                          kiln_isa_name((kiln_isa)isa), i, max_rel_err(y1, y0, out_n, &abs_err));
                } else {
                    CHECK(0, "winograd buffers");
                }
                free(u), free(scratch);
            }
            free(half), free(full), free(w), free(bias), free(y0), free(y1), free((void *)pw.data);
        }
}

static void test_attention_matches_scalar(void)
{
    kiln_isa levels[KILN_ISA_COUNT];
    int n_levels = 0;
    for (int isa = KILN_ISA_AVX2; isa <= (int)cpu_get()->best_isa; isa++)
        if (kernels_for((kiln_isa)isa)->attention_f32 != kernels_for(KILN_ISA_SCALAR)->attention_f32)
            levels[n_levels++] = (kiln_isa)isa;
    /* sharp: scores that grow along the keys (to about 12 units), so that
     * later key blocks pass a row's running max by far (the kernels'
     * rescaling); flip: a negative scale */
    typedef struct att_case {
        int batch, heads, q_len, kv_len, head_dim, causal, sharp, flip;
    } att_case;
    const att_case cases[] = {
        {1, 1, 1, 1, 1, 0, 0, 0},       {2, 3, 13, 17, 5, 0, 0, 0},   {1, 8, 50, 77, 40, 0, 0, 0},
        {2, 2, 77, 77, 32, 1, 0, 0},    {1, 1, 33, 64, 100, 0, 0, 0}, {1, 2, 29, 29, 64, 1, 0, 0},
        {1, 1, 20, 40, 512, 0, 0, 0},   {1, 2, 20, 300, 40, 0, 1, 0}, {1, 1, 70, 200, 80, 1, 1, 0},
        {1, 1, 20, 150, 160, 0, 0, 1},
    };
    test_rng r = test_rng_seed(3);
    double worst = 0;
    /* each level with fast math on and off (libm's exp2f), and tiles of
     * the default size, the smallest the kernels take and the largest */
    const int tiles[] = {0, 6, 96};
    for (int run = 0; run < 2 * n_levels; run++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const att_case *ac = &cases[i];
            const int fast_math = run % 2, l = run / 2;
            int64_t width = (int64_t)ac->heads * ac->head_dim;
            attention_geom g = {.batch = ac->batch, .heads = ac->heads, .q_len = ac->q_len, .kv_len = ac->kv_len,
                                .head_dim = ac->head_dim, .q_stride = width + 3, .k_stride = width + 1,
                                .v_stride = width + 2, .o_stride = width,
                                .scale = (ac->flip ? -1.0f : 1.0f) / sqrtf((float)ac->head_dim), .causal = ac->causal,
                                .tile_q = tiles[i % 3]};
            /* scores of a few units: a realistic softmax, neither flat nor one-hot */
            float *q = random_floats(&r, (size_t)(ac->batch * ac->q_len * (width + 3)));
            float *k = random_floats(&r, (size_t)(ac->batch * ac->kv_len * (width + 1)));
            float *v = random_floats(&r, (size_t)(ac->batch * ac->kv_len * (width + 2)));
            for (int64_t j = 0; j < ac->batch * ac->q_len * (width + 3); j++)
                q[j] *= ac->sharp ? 10.0f : 3.0f;
            if (ac->sharp)
                for (int64_t j = 0; j < ac->batch * ac->kv_len; j++)
                    for (int64_t c = 0; c < width + 1; c++)
                        k[j * (width + 1) + c] *= 1.0f + (float)(j % ac->kv_len) / 64.0f;
            size_t out_n = (size_t)(ac->batch * ac->q_len * width);
            float *o0 = calloc(out_n, sizeof *o0), *o1 = calloc(out_n, sizeof *o1);
            const kernel_table *fast = kernels_for_math(levels[l], fast_math), *ref = kernels_for(KILN_ISA_SCALAR);
            void *scratch = NULL;
            if (posix_memalign(&scratch, 64, fast->attention_scratch(&g) + 64) != 0)
                abort();
            int64_t items = (int64_t)ac->batch * ac->heads * ac->q_len, third = items / 3;
            ref->attention_f32(&g, q, k, v, o0, 0, items, NULL);
            fast->attention_f32(&g, q, k, v, o1, 0, third, scratch);
            fast->attention_f32(&g, q, k, v, o1, third, items, scratch);
            double abs_err, rel = max_rel_err(o1, o0, out_n, &abs_err);
            worst = fmax(worst, rel);
            CHECK(rel <= 1e-5, "attention %s (fast math %d) case %zu: rel err %.3e (abs %.3e)", kiln_isa_name(levels[l]),
                  fast_math, i, rel, abs_err);
            free(q), free(k), free(v), free(o0), free(o1), free(scratch);
        }
    printf("    attention: worst rel err %.2e over %d levels\n", worst, n_levels);
}

/* Norms and element-wise ops of every SIMD level against the scalar ones.
 * exp and erf are polynomial approximations there: 2e-7 relative and
 * 1.5e-7 absolute; after a norm's scaling, 1e-5 is the bound stated. */
static void test_norms_and_elementwise(void)
{
    test_rng r = test_rng_seed(4);
    const kernel_table *ref = kernels_for(KILN_ISA_SCALAR);
    for (int isa = KILN_ISA_AVX2; isa <= (int)cpu_get()->best_isa; isa++) {
        const kernel_table *fast = kernels_for((kiln_isa)isa);
        /* group norm: channels 320 (10 per group), 128 (4 per group), 96 (3), batch 2 */
        const int64_t channel_cases[] = {320, 128, 96};
        for (int cc = 0; cc < 3; cc++)
            for (int silu = 0; silu < 2; silu++) {
                int64_t c = channel_cases[cc], hw = 37, n = 2 * hw * c;
                float *x = random_floats(&r, (size_t)n), *gamma = random_floats(&r, (size_t)c);
                float *beta = random_floats(&r, (size_t)c);
                for (int64_t i = 0; i < n; i++)
                    x[i] = x[i] * 3.0f + 0.5f; /* an offset mean, a wider spread */
                float *y0 = malloc((size_t)n * sizeof *y0), *y1 = malloc((size_t)n * sizeof *y1);
                ref->group_norm_f32(x, y0, hw, c, 32, 1e-5f, gamma, beta, silu, 0, 64);
                /* the norm in halves, as the executor splits it by rows:
                 * per-channel sums over two row ranges (each batch element
                 * its own), folded into a scale and shift, then the rows */
                double *sums = calloc((size_t)(2 * 2 * c), sizeof *sums);
                float *affine = malloc((size_t)(2 * 2 * c) * sizeof *affine);
                for (int64_t b = 0; b < 2; b++) {
                    fast->channel_sums_f32(x, c, b * hw, b * hw + 11, sums + 2 * b * c);
                    fast->channel_sums_f32(x, c, b * hw + 11, (b + 1) * hw, sums + 2 * b * c);
                    group_norm_affine_from_channels_f32(sums + 2 * b * c, (double)hw, c, 32, 1e-5f, gamma, beta,
                                                        affine + 2 * b * c, affine + (2 * b + 1) * c);
                    fast->channel_affine_f32(x, y1, c, affine + 2 * b * c, affine + (2 * b + 1) * c, silu, b * hw,
                                             b * hw + 7);
                    fast->channel_affine_f32(x, y1, c, affine + 2 * b * c, affine + (2 * b + 1) * c, silu,
                                             b * hw + 7, (b + 1) * hw);
                }
                double abs_err, rel = max_rel_err(y1, y0, (size_t)n, &abs_err);
                CHECK(rel <= 1e-5, "group norm by rows %s c=%lld silu=%d: rel err %.3e",
                      kiln_isa_name((kiln_isa)isa), (long long)c, silu, rel);
                free(sums), free(affine);
                free(x), free(gamma), free(beta), free(y0), free(y1);
            }
        /* layer norm of rows of 77 and 768 */
        const int64_t widths[] = {77, 768};
        for (int wi = 0; wi < 2; wi++) {
            int64_t c = widths[wi], rows = 5;
            float *x = random_floats(&r, (size_t)(rows * c)), *gamma = random_floats(&r, (size_t)c);
            float *beta = random_floats(&r, (size_t)c);
            float *y0 = malloc((size_t)(rows * c) * sizeof *y0), *y1 = malloc((size_t)(rows * c) * sizeof *y1);
            ref->layer_norm_f32(x, y0, c, 1e-5f, gamma, beta, 0, rows);
            fast->layer_norm_f32(x, y1, c, 1e-5f, gamma, beta, 0, rows);
            double abs_err, rel = max_rel_err(y1, y0, (size_t)(rows * c), &abs_err);
            CHECK(rel <= 1e-5, "layer norm %s c=%lld: rel err %.3e", kiln_isa_name((kiln_isa)isa), (long long)c, rel);
            free(x), free(gamma), free(beta), free(y0), free(y1);
        }
        /* activations over [-12, 12], with tails */
        const int64_t n = 1003;
        float *x = malloc(n * sizeof *x), *x2 = random_floats(&r, n), *y0 = malloc(2 * n * sizeof *y0),
              *y1 = malloc(2 * n * sizeof *y1);
        for (int64_t i = 0; i < n; i++)
            x[i] = -12.0f + 24.0f * (float)i / (float)(n - 1);
        struct {
            const char *name;
            void (*a)(const float *, float *, int64_t, int64_t);
            void (*b)(const float *, float *, int64_t, int64_t);
        } unary[] = {{"silu", ref->silu_f32, fast->silu_f32},
                     {"gelu", ref->gelu_f32, fast->gelu_f32},
                     {"quick_gelu", ref->quick_gelu_f32, fast->quick_gelu_f32}};
        for (int u = 0; u < 3; u++) {
            unary[u].a(x, y0, 0, n);
            unary[u].b(x, y1, 3, n);
            unary[u].b(x, y1, 0, 3);
            double worst = 0;
            for (int64_t i = 0; i < n; i++)
                worst = fmax(worst, fabs((double)y1[i] - y0[i]) / (1.0 + fabs(y0[i])));
            CHECK(worst <= 1e-6, "%s %s: error %.3e", unary[u].name, kiln_isa_name((kiln_isa)isa), worst);
        }
        ref->add_f32(x, x2, y0, 0, n);
        fast->add_f32(x, x2, y1, 0, n);
        CHECK(memcmp(y0, y1, (size_t)n * sizeof *y0) == 0, "add %s differs", kiln_isa_name((kiln_isa)isa));
        /* GEGLU over rows of 2 x 77 */
        float *g = random_floats(&r, 13 * 154);
        ref->geglu_f32(g, y0, 77, 0, 13);
        fast->geglu_f32(g, y1, 77, 0, 13);
        double abs_err, rel = max_rel_err(y1, y0, 13 * 77, &abs_err);
        CHECK(rel <= 1e-6, "geglu %s: rel err %.3e", kiln_isa_name((kiln_isa)isa), rel);
        free(x), free(x2), free(y0), free(y1), free(g);
    }
}

static void test_packing_layouts(void)
{
    /* w[n=3][k=2][taps=2]: the scalar layout is [n][taps][k] */
    const float w[12] = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23};
    float scalar[12], panel[2 * 2 * 4];
    kernels_pack_weights(w, KILN_DTYPE_F32, KILN_DTYPE_F32, 0, 3, 2, 2, scalar);
    const float want[12] = {0, 2, 1, 3, 10, 12, 11, 13, 20, 22, 21, 23};
    CHECK(memcmp(scalar, want, sizeof want) == 0, "scalar packing: got %g %g %g %g ...", scalar[0], scalar[1],
          scalar[2], scalar[3]);
    /* panels of 4 columns: [taps][k][4], column 3 zero-padded */
    CHECK(kernels_packed_elements(4, 3, 2, 2) == 16, "packed size %zu", kernels_packed_elements(4, 3, 2, 2));
    kernels_pack_weights(w, KILN_DTYPE_F32, KILN_DTYPE_F32, 4, 3, 2, 2, panel);
    const float want_panel[16] = {0, 10, 20, 0, 2, 12, 22, 0, 1, 11, 21, 0, 3, 13, 23, 0};
    CHECK(memcmp(panel, want_panel, sizeof want_panel) == 0, "panel packing: got %g %g %g %g %g ...", panel[0],
          panel[1], panel[2], panel[3], panel[4]);
}

/* Every source dtype into every packed dtype, as panels and unpacked, the
 * columns packed in three uneven ranges, against the layout worked out
 * value by value with core/half.h's conversions: bit for bit. */
static void test_packing_dtypes(void)
{
    const kiln_dtype dtypes[] = {KILN_DTYPE_F32, KILN_DTYPE_F16, KILN_DTYPE_BF16};
    const int64_t n = 37, k = 19, taps = 9;
    test_rng r = test_rng_seed(11);
    float *w = random_floats(&r, (size_t)(n * k * taps));
    uint16_t *w16 = malloc((size_t)(n * k * taps) * sizeof *w16), *wb16 = malloc((size_t)(n * k * taps) * sizeof *wb16);
    for (int64_t i = 0; i < n * k * taps; i++)
        w16[i] = half_f32_to_f16(w[i]), wb16[i] = half_f32_to_bf16(w[i]);
    const void *sources[] = {w, w16, wb16};
    const int nrs[] = {0, 8, 32};
    for (int s = 0; s < 3; s++)
        for (int d = 0; d < 3; d++)
            for (int v = 0; v < 3; v++) {
                int nr = nrs[v];
                int64_t columns = kernels_packed_columns(nr, n), width = nr > 0 ? nr : 1;
                size_t count = kernels_packed_elements(nr, n, k, taps), size = dtypes[d] == KILN_DTYPE_F32 ? 4 : 2;
                unsigned char *got = malloc(count * size), *want = calloc(count, size);
                memset(got, 0xA5, count * size);
                int64_t cut1 = columns / 3, cut2 = columns - 1;
                kernels_pack_weights_columns(sources[s], dtypes[s], dtypes[d], nr, n, k, taps, cut2, columns, got);
                kernels_pack_weights_columns(sources[s], dtypes[s], dtypes[d], nr, n, k, taps, 0, cut1, got);
                kernels_pack_weights_columns(sources[s], dtypes[s], dtypes[d], nr, n, k, taps, cut1, cut2, got);
                for (int64_t j = 0; j < n; j++)
                    for (int64_t t = 0; t < taps; t++)
                        for (int64_t i = 0; i < k; i++) {
                            size_t from = (size_t)((j * k + i) * taps + t);
                            size_t at = (size_t)(((j / width * taps + t) * k + i) * width + j % width);
                            float x = s == 0   ? w[from]
                                      : s == 1 ? half_f16_to_f32(w16[from])
                                               : half_bf16_to_f32(wb16[from]);
                            if (d == 0)
                                memcpy(want + at * 4, &x, 4);
                            else {
                                uint16_t h = d == 1 ? half_f32_to_f16(x) : half_f32_to_bf16(x);
                                memcpy(want + at * 2, &h, 2);
                            }
                        }
                CHECK(memcmp(got, want, count * size) == 0, "packing %s -> %s, nr %d: differs from the reference",
                      kiln_dtype_name(dtypes[s]), kiln_dtype_name(dtypes[d]), nr);
                free(got), free(want);
            }
    free(w), free(w16), free(wb16);
}

/* [b, hw, c] <-> [b, c, hw] */
static float *to_planes(const float *x, int64_t b, int64_t hw, int64_t c)
{
    float *y = malloc((size_t)(b * hw * c) * sizeof *y);
    for (int64_t i = 0; i < b; i++)
        for (int64_t p = 0; p < hw; p++)
            for (int64_t j = 0; j < c; j++)
                y[(i * c + j) * hw + p] = x[(i * hw + p) * c + j];
    return y;
}

/* im2col + GEMM from NCHW at every level, f32 and f16 weights, against the
 * scalar NHWC convolution on the same data transposed: 3x3 stride 1 and 2,
 * 1x1, uneven padding, odd sizes, a batch crossing a pixel block, bias and
 * residual; the work in pixel blocks and channel runs as the executor
 * splits it. */
static void test_nchw_conv_matches_nhwc(void)
{
    typedef struct conv_case {
        int batch, h, w, in_c, out_c, kernel, stride, pad_top, pad_left, pad_bottom, pad_right, residual;
    } conv_case;
    const conv_case cases[] = {
        {1, 5, 7, 3, 8, 3, 1, 1, 1, 1, 1, 0},   {2, 9, 11, 32, 40, 3, 1, 1, 1, 1, 1, 1},
        {1, 9, 4, 17, 45, 3, 2, 1, 1, 1, 1, 0}, {1, 8, 10, 16, 33, 3, 2, 0, 0, 1, 1, 1},
        {2, 3, 5, 64, 70, 1, 1, 0, 0, 0, 0, 1}, {1, 1, 1, 5, 1, 3, 1, 1, 1, 1, 1, 0},
        {3, 13, 7, 24, 17, 1, 1, 0, 0, 0, 0, 0},
    };
    kiln_isa levels[KILN_ISA_COUNT + 1];
    int n_levels = levels_to_test(levels + 1) + 1;
    levels[0] = KILN_ISA_SCALAR;
    test_rng r = test_rng_seed(21);
    double worst = 0;
    for (int dt = 0; dt < 2; dt++) {
        kiln_dtype dtype = dt ? KILN_DTYPE_F16 : KILN_DTYPE_F32;
        for (int l = 0; l < n_levels; l++)
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                const conv_case *cc = &cases[i];
                const kernel_table *k = kernels_for(levels[l]), *ref = kernels_for(KILN_ISA_SCALAR);
                conv2d_geom g = {.batch = cc->batch, .in_h = cc->h, .in_w = cc->w, .in_c = cc->in_c,
                                 .out_c = cc->out_c, .kernel = cc->kernel, .stride = cc->stride,
                                 .pad_top = cc->pad_top, .pad_left = cc->pad_left};
                g.out_h = (cc->h + cc->pad_top + cc->pad_bottom - cc->kernel) / cc->stride + 1;
                g.out_w = (cc->w + cc->pad_left + cc->pad_right - cc->kernel) / cc->stride + 1;
                int64_t taps = (int64_t)cc->kernel * cc->kernel, out_hw = g.out_h * g.out_w;
                int64_t pixels = g.batch * out_hw;
                size_t out_n = (size_t)(pixels * g.out_c);
                float *x = random_floats(&r, (size_t)(g.batch * g.in_h * g.in_w * g.in_c));
                float *w = random_floats(&r, (size_t)(g.out_c * g.in_c * taps));
                float *bias = random_floats(&r, (size_t)g.out_c);
                float *res = cc->residual ? random_floats(&r, out_n) : NULL;
                float *want = calloc(out_n, sizeof *want), *got = calloc(out_n, sizeof *got);
                float *scratch = malloc(nchw_conv2d_scratch_floats(&g) * sizeof *scratch);
                packed_weights p0 = pack_as(w, dtype, 0, g.out_c, g.in_c, taps);
                packed_weights p1 = pack_as(w, dtype, k->gemm_nr, g.out_c, g.in_c, taps);
                ref->conv2d_f32(&g, x, &p0, bias, res, want, 0, pixels, 0, g.out_c);
                float *xc = to_planes(x, g.batch, g.in_h * g.in_w, g.in_c);
                float *rc = res ? to_planes(res, g.batch, out_hw, g.out_c) : NULL;
                float *want_c = to_planes(want, g.batch, out_hw, g.out_c);
                /* channel runs of one panel (or 7 channels at the scalar level) */
                int64_t run = k->gemm_nr > 0 ? k->gemm_nr : 7;
                for (int64_t p = 0; p < pixels; p += NCHW_CONV_BLOCK)
                    for (int64_t c0 = 0; c0 < g.out_c; c0 += run)
                        nchw_conv2d_f32(k, &g, xc, &p1, bias, rc, got, p,
                                        p + NCHW_CONV_BLOCK < pixels ? p + NCHW_CONV_BLOCK : pixels, c0,
                                        c0 + run < g.out_c ? c0 + run : g.out_c, scratch);
                double abs_err, rel = max_rel_err(got, want_c, out_n, &abs_err);
                worst = fmax(worst, rel);
                CHECK(rel <= TOL, "nchw conv %s %s case %zu: rel err %.3e (abs %.3e) against NHWC scalar",
                      kiln_isa_name(levels[l]), dt ? "f16" : "f32", i, rel, abs_err);
                free(x), free(w), free(bias), free(res), free(want), free(got), free(scratch);
                free(xc), free(rc), free(want_c);
                free((void *)p0.data), free((void *)p1.data);
            }
    }
    printf("    nchw conv: worst rel err %.2e over %d levels, f32 and f16\n", worst, n_levels);
}

/* The other channels-first kernels against their NHWC reference on the
 * same data transposed: group norm with and without SiLU, the transpose
 * both ways, channel bias, concat, nearest upsampling. */
static void test_nchw_ops_match_nhwc(void)
{
    const kernel_table *ref = kernels_for(KILN_ISA_SCALAR);
    test_rng r = test_rng_seed(22);
    const int64_t b = 2, h = 7, w = 5, hw = h * w, c = 24, groups = 6;
    size_t n = (size_t)(b * hw * c);
    float *x = random_floats(&r, n), *gamma = random_floats(&r, (size_t)c), *beta = random_floats(&r, (size_t)c);
    for (size_t i = 0; i < n; i++)
        x[i] = 3.0f * x[i] + 1.5f; /* a mean far from 0 */
    float *xc = to_planes(x, b, hw, c), *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    for (int silu = 0; silu < 2; silu++) {
        ref->group_norm_f32(x, want, hw, c, groups, 1e-6f, gamma, beta, silu, 0, b * groups);
        float *want_c = to_planes(want, b, hw, c);
        nchw_group_norm_f32(ref, xc, got, hw, c, groups, 1e-6f, gamma, beta, silu, 0, 3);
        nchw_group_norm_f32(ref, xc, got, hw, c, groups, 1e-6f, gamma, beta, silu, 3, b * groups);
        double abs_err, rel = max_rel_err(got, want_c, n, &abs_err);
        CHECK(rel <= TOL, "nchw group norm (silu %d): rel err %.3e (abs %.3e)", silu, rel, abs_err);
        free(want_c);
    }
    /* the transpose: NHWC to NCHW is [hw, c]^T per image, and back */
    int64_t blocks = (hw + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK;
    transpose_f32(x, got, hw, c, 0, b * blocks);
    CHECK(memcmp(got, xc, n * sizeof *got) == 0, "transpose NHWC to NCHW: not the planes expected");
    blocks = (c + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK;
    transpose_f32(xc, want, c, hw, 0, 1);
    transpose_f32(xc, want, c, hw, 1, b * blocks);
    CHECK(memcmp(want, x, n * sizeof *want) == 0, "transpose NCHW to NHWC: not the input back");
    /* channel bias [b, c] */
    float *bias = random_floats(&r, (size_t)(b * c));
    ref->add_channel_bias_f32(x, bias, want, hw, c, 0, b * hw);
    nchw_add_channel_bias_f32(xc, bias, got, hw, 0, b * c);
    float *want_c = to_planes(want, b, hw, c);
    CHECK(memcmp(got, want_c, n * sizeof *got) == 0, "nchw channel bias differs from NHWC");
    free(want_c);
    /* concat [b, c, hw] and [b, c / 2, hw] (the start of xc) along channels */
    float *cat = malloc(n * 2 * sizeof *cat), *cat_ref = malloc(n * 2 * sizeof *cat_ref);
    nchw_concat_f32(xc, xc, cat, c, c / 2, hw, 0, b);
    for (int64_t i = 0; i < b; i++)
        for (int64_t ch = 0; ch < c + c / 2; ch++)
            for (int64_t p = 0; p < hw; p++)
                cat_ref[(i * (c + c / 2) + ch) * hw + p] =
                    ch < c ? xc[(i * c + ch) * hw + p] : xc[(i * (c / 2) + ch - c) * hw + p];
    CHECK(memcmp(cat, cat_ref, (size_t)(b * (c + c / 2) * hw) * sizeof *cat) == 0, "nchw concat");
    /* nearest upsampling, x2 and to an odd size */
    const int64_t sizes[2][2] = {{2 * h, 2 * w}, {2 * h + 1, 2 * w - 1}};
    for (int s = 0; s < 2; s++) {
        int64_t oh = sizes[s][0], ow = sizes[s][1];
        float *up = malloc((size_t)(b * c * oh * ow) * sizeof *up);
        nchw_upsample_nearest_f32(xc, up, h, w, oh, ow, 0, b * c * oh);
        int ok = 1;
        for (int64_t pl = 0; pl < b * c; pl++)
            for (int64_t y = 0; y < oh; y++)
                for (int64_t xx = 0; xx < ow; xx++)
                    ok &= up[(pl * oh + y) * ow + xx] == xc[(pl * h + y * h / oh) * w + xx * w / ow];
        CHECK(ok, "nchw upsample to %lldx%lld: not PyTorch's nearest", (long long)oh, (long long)ow);
        free(up);
    }
    free(x), free(gamma), free(beta), free(xc), free(want), free(got), free(bias), free(cat), free(cat_ref);
}

/* The same kernels on weights packed as f16, against the scalar kernels on
 * the same f16 weights. */
static void test_f16_weights(void)
{
    pack_dtype = KILN_DTYPE_F16;
    test_linear_matches_scalar();
    test_conv_matches_scalar();
    pack_dtype = KILN_DTYPE_F32;
}

/* bf16 weights widened to f32 (the bf16 dot products off), against the
 * scalar kernels on the same bf16 weights. */
static void test_bf16_weights(void)
{
    kernels_set_bf16_dot(0);
    pack_dtype = KILN_DTYPE_BF16;
    test_linear_matches_scalar();
    test_conv_matches_scalar();
    pack_dtype = KILN_DTYPE_F32;
    kernels_set_bf16_dot(-1);
}

/* AVX512_BF16's dot products, turned on whatever they measure here,
 * against the scalar kernels reading the same bf16 weights and the
 * activations rounded to bf16 the same way: the products are then exact
 * in f32 on both sides and only the order of the f32 sums differs (TOL).
 * Odd k (1, 3, 333: a last pair with a zero partner), k over one block of
 * the reduction (333 > 256), padding taps (the zero row). */
static void test_bf16_dot_products(void)
{
    if (!kernels_for(KILN_ISA_AVX512)->linear_bf16_dot || cpu_isa() < KILN_ISA_AVX512) {
        printf("    no bf16 dot products at this level: %s\n", kernels_bf16_dot_reason());
        return;
    }
    kernels_set_bf16_dot(1);
    CHECK(kernels_bf16_dot() == 1, "the bf16 dot products did not turn on: %s", kernels_bf16_dot_reason());
    bf16_dot_under_test = 1;
    pack_dtype = KILN_DTYPE_BF16;
    test_linear_matches_scalar();
    test_conv_matches_scalar();
    pack_dtype = KILN_DTYPE_F32;
    bf16_dot_under_test = 0;
    kernels_set_bf16_dot(-1);
}

TEST_MAIN(TEST(test_packing_layouts), TEST(test_packing_dtypes), TEST(test_linear_matches_scalar),
          TEST(test_conv_matches_scalar), TEST(test_winograd_matches_direct),
          TEST(test_upsampled_read_matches_upsampled_input),
          TEST(test_f16_weights), TEST(test_bf16_weights), TEST(test_bf16_dot_products),
          TEST(test_attention_matches_scalar), TEST(test_norms_and_elementwise), TEST(test_nchw_conv_matches_nhwc),
          TEST(test_nchw_ops_match_nhwc))
