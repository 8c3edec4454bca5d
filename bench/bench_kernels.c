/*
 * bench_kernels.c - the matrix and attention kernels on the shapes of the
 * SD 1.5 UNet and VAE, one thread and all threads, beside the FMA peak
 * measured in the same run.
 *
 *   bench_kernels [--runs N] [--isa scalar|avx2|avx512] [--f16|--bf16] [--bf16-dot on|off|auto]
 *                 [--threads N] [--only TEXT] [--cold]
 *
 * Prints, per shape: GFLOP, the median time of N runs (and min..max), the
 * GFLOP/s and the share of the peak on the same number of threads.
 * Repeated runs find their weights in cache; in a model step each layer's
 * weights come from memory (a UNet's are gigabytes), so --cold writes
 * COLD_BYTES of other data before every run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/cpu.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/winograd.h"

typedef struct shape {
    const char *name;
    char kind; /* 'l' linear, 'c' conv, 'w' the same conv by Winograd F(4x4), '2' by F(2x2), 'a' attention */
    int64_t m, n, k;              /* linear: rows, outputs, inputs */
    int64_t h, w, in_c, out_c, kernel, stride; /* conv (batch 2) */
    int64_t heads, q_len, kv_len, head_dim;    /* attention (batch 2) */
} shape;

static const shape shapes[] = {
    {"unet64 conv 320->320 3x3 @32x32", 'c', .h = 32, .w = 32, .in_c = 320, .out_c = 320, .kernel = 3, .stride = 1},
    {"unet64 conv 640->640 3x3 @16x16", 'c', .h = 16, .w = 16, .in_c = 640, .out_c = 640, .kernel = 3, .stride = 1},
    {"unet64 conv 1280 3x3 @8x8", 'c', .h = 8, .w = 8, .in_c = 1280, .out_c = 1280, .kernel = 3, .stride = 1},
    {"unet64 conv 2560->1280 3x3 @4x4", 'c', .h = 4, .w = 4, .in_c = 2560, .out_c = 1280, .kernel = 3, .stride = 1},
    {"vae conv 256->256 3x3 @128x128", 'c', .h = 128, .w = 128, .in_c = 256, .out_c = 256, .kernel = 3, .stride = 1},
    {"unet128 conv 320 3x3 @64x64", 'c', .h = 64, .w = 64, .in_c = 320, .out_c = 320, .kernel = 3, .stride = 1},
    {"unet128 conv 640 3x3 @32x32", 'c', .h = 32, .w = 32, .in_c = 640, .out_c = 640, .kernel = 3, .stride = 1},
    {"unet128 conv 1280 3x3 @16x16", 'c', .h = 16, .w = 16, .in_c = 1280, .out_c = 1280, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 32, .w = 32, .in_c = 320, .out_c = 320, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 16, .w = 16, .in_c = 640, .out_c = 640, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 8, .w = 8, .in_c = 1280, .out_c = 1280, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 128, .w = 128, .in_c = 256, .out_c = 256, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 64, .w = 64, .in_c = 320, .out_c = 320, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 32, .w = 32, .in_c = 640, .out_c = 640, .kernel = 3, .stride = 1},
    {"  by winograd", 'w', .h = 16, .w = 16, .in_c = 1280, .out_c = 1280, .kernel = 3, .stride = 1},
    {"  by winograd 2x2", '2', .h = 16, .w = 16, .in_c = 640, .out_c = 640, .kernel = 3, .stride = 1},
    {"  by winograd 2x2", '2', .h = 8, .w = 8, .in_c = 1280, .out_c = 1280, .kernel = 3, .stride = 1},
    {"  by winograd 2x2", '2', .h = 32, .w = 32, .in_c = 640, .out_c = 640, .kernel = 3, .stride = 1},
    {"  by winograd 2x2", '2', .h = 16, .w = 16, .in_c = 1280, .out_c = 1280, .kernel = 3, .stride = 1},
    {"unet ff 320->2560 (2048 tokens)", 'l', .m = 2048, .n = 2560, .k = 320},
    {"unet ff 1280->320 (2048 tokens)", 'l', .m = 2048, .n = 320, .k = 1280},
    {"unet to_k 768->320 (154 tokens)", 'l', .m = 154, .n = 320, .k = 768},
    {"unet ff 640->5120 (512 tokens)", 'l', .m = 512, .n = 5120, .k = 640},
    {"unet ff 1280->10240 (128 tokens)", 'l', .m = 128, .n = 10240, .k = 1280},
    {"unet ff 5120->1280 (128 tokens)", 'l', .m = 128, .n = 1280, .k = 5120},
    {"unet proj 1280->1280 (128 tokens)", 'l', .m = 128, .n = 1280, .k = 1280},
    {"unet mid 1280->1280 (32 tokens)", 'l', .m = 32, .n = 1280, .k = 1280},
    {"text fc1 768->3072 (77 tokens)", 'l', .m = 77, .n = 3072, .k = 768},
    {"text fc2 3072->768 (154 tokens)", 'l', .m = 154, .n = 768, .k = 3072},
    {"unet self-attn 1024 tok, 8x40", 'a', .heads = 8, .q_len = 1024, .kv_len = 1024, .head_dim = 40},
    {"unet cross-attn 1024x77, 8x40", 'a', .heads = 8, .q_len = 1024, .kv_len = 77, .head_dim = 40},
    {"vae attn 4096 tok (512 px), 1x512", 'a', .heads = 1, .q_len = 4096, .kv_len = 4096, .head_dim = 512},
};

typedef struct job {
    const kernel_table *k;
    const shape *s;
    const float *x, *x2, *x3;
    float *y;
    packed_weights w;
    conv2d_geom conv;
    attention_geom attn;
    int64_t tiles_m, tile_m;
    unsigned char *scratch;
    size_t scratch_stride;
    float *u;           /* Winograd: the transformed weights */
    int64_t block;      /* Winograd: tiles per call */
    winograd_variant variant;
    double flops[64];
} job;

static void run_tiles(void *ctx, int64_t begin, int64_t end, int thread)
{
    job *j = ctx;
    const shape *s = j->s;
    int64_t nr = j->w.nr > 0 ? j->w.nr : 8, n = j->w.n, tiles_n = (n + nr - 1) / nr;
    int64_t m = s->kind == 'l' ? s->m : 2 * s->h * s->w;
    for (int64_t t = begin; t < end; t++) {
        /* in the executor's order */
        int64_t m0 = (t % j->tiles_m) * j->tile_m, n0 = (t / j->tiles_m) * nr;
        if (gemm_rows_outer(m, n, j->w.k, j->w.taps, cpu_l2_bytes()))
            m0 = (t / tiles_n) * j->tile_m, n0 = (t % tiles_n) * nr;
        if (s->kind == 'l') {
            int64_t m1 = m0 + j->tile_m < s->m ? m0 + j->tile_m : s->m, n1 = n0 + nr < s->n ? n0 + nr : s->n;
            j->k->linear_f32(j->x, s->k, &j->w, NULL, j->y, s->n, m0, m1, n0, n1);
        } else {
            int64_t pixels = 2 * s->h * s->w;
            int64_t m1 = m0 + j->tile_m < pixels ? m0 + j->tile_m : pixels;
            int64_t n1 = n0 + nr < s->out_c ? n0 + nr : s->out_c;
            j->k->conv2d_f32(&j->conv, j->x, &j->w, NULL, NULL, j->y, m0, m1, n0, n1);
        }
    }
}

/* Winograd, first phase: the weights of a panel of output channels */
static void run_winograd_weights(void *ctx, int64_t begin, int64_t end, int thread)
{
    job *j = ctx;
    int64_t lanes = j->w.nr > 0 ? j->w.nr : 1;
    j->k->winograd_weights_f32[j->variant](&j->w, 0, j->w.n, j->u, begin * lanes,
                                           end * lanes < j->w.n ? end * lanes : j->w.n);
}

/* second phase: a block of output tiles per item */
static void run_winograd_tiles(void *ctx, int64_t begin, int64_t end, int thread)
{
    job *j = ctx;
    int64_t tiles = winograd_tiles(&j->conv, j->variant);
    for (int64_t b = begin; b < end; b++) {
        int64_t t0 = b * j->block, t1 = t0 + j->block < tiles ? t0 + j->block : tiles;
        j->k->winograd_conv_f32[j->variant](&j->conv, j->x, &j->w, j->u, 0, j->w.n, NULL, NULL, j->y, t0, t1,
                                            j->scratch + (size_t)thread * j->scratch_stride);
    }
}

static void run_attention(void *ctx, int64_t begin, int64_t end, int thread)
{
    job *j = ctx;
    j->k->attention_f32(&j->attn, j->x, j->x2, j->x3, j->y, begin, end, j->scratch + (size_t)thread * j->scratch_stride);
}

static void run_peak(void *ctx, int64_t begin, int64_t end, int thread)
{
    job *j = ctx;
    j->flops[thread] += j->k->fma_peak(2000000);
}

static void run_dot_peak(void *ctx, int64_t begin, int64_t end, int thread)
{
    job *j = ctx;
    j->flops[thread] += j->k->bf16_dot_peak(1000000);
}

/* The FMA loop's rate on every thread of pool, or with dot set the bf16
 * dot loop's; the best of three. */
static double peak(tpool *pool, const kernel_table *k, int dot)
{
    double best = 0;
    for (int a = 0; a < 3; a++) {
        job j = {.k = k};
        double t0 = clock_now();
        tpool_for(pool, tpool_size(pool), 1, TPOOL_STATIC, dot ? run_dot_peak : run_peak, &j);
        double sec = clock_now() - t0, f = 0;
        for (int i = 0; i < tpool_size(pool); i++)
            f += j.flops[i];
        if (f / sec > best)
            best = f / sec;
    }
    return best * 1e-9;
}

static float *filled(size_t n)
{
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, n * sizeof *p + 64) != 0)
        abort();
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

/* More than the largest last-level cache this is meant for (the Xeons
 * here have 260 MB of L3, shared). */
#define COLD_BYTES ((size_t)1 << 30)

static void evict_caches(void)
{
    static unsigned char *junk;
    static unsigned char round;
    if (!junk && !(junk = malloc(COLD_BYTES)))
        abort();
    memset(junk, ++round, COLD_BYTES);
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int runs = 5, only_threads = 0, cold = 0;
    const char *only = NULL; /* shapes whose name contains it; NULL: all */
    kiln_dtype pack = KILN_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f16"))
            pack = KILN_DTYPE_F16;
        else if (!strcmp(argv[i], "--bf16"))
            pack = KILN_DTYPE_BF16;
        else if (!strcmp(argv[i], "--bf16-dot") && i + 1 < argc) {
            i++;
            kernels_set_bf16_dot(!strcmp(argv[i], "on") ? 1 : !strcmp(argv[i], "off") ? 0 : -1);
        }
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            only_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--cold"))
            cold = 1;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            kiln_isa isa;
            if (cpu_parse_isa(argv[++i], &isa) == 0)
                cpu_set_isa(isa);
        } else {
            fprintf(stderr, "usage: bench_kernels [--runs N] [--isa scalar|avx2|avx512] [--f16|--bf16] "
                            "[--bf16-dot on|off|auto] [--threads N] [--only TEXT] [--cold]\n");
            return 2;
        }
    }
    if (runs < 1)
        runs = 1;
    const kernel_table *k = kernels_get();
    printf("bench_kernels: %s, kernels %s, %s weights, %d runs (median, min..max)%s\n", cpu_get()->model,
           kiln_isa_name(k->isa), kiln_dtype_name(pack), runs, cold ? ", caches evicted before each" : "");
    for (int threads = 1; threads <= 2; threads++) {
        if (only_threads > 0 && threads != only_threads)
            continue;
        tpool *pool;
        if (tpool_create(threads, &pool) != KILN_OK)
            return 1;
        /* the matrix kernels' share is of the peak of the instructions they run */
        int dot = pack == KILN_DTYPE_BF16 && kernels_bf16_dot();
        double pk = peak(pool, k, 0), dot_pk = k->bf16_dot_peak ? peak(pool, k, 1) : 0;
        printf("\n%d thread%s, measured FP32 FMA peak %.0f GFLOP/s", threads, threads > 1 ? "s" : "", pk);
        if (k->bf16_dot_peak)
            printf(", BF16 dot peak %.0f GFLOP/s (bf16 dot products %s: %s)", dot_pk, dot ? "on" : "off",
                   kernels_bf16_dot_reason());
        printf("\n");
        printf("  %-34s %8s %9s %19s %8s %6s\n", "shape", "GFLOP", "median", "min..max", "GFLOP/s", "peak");
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const shape *s = &shapes[si];
            if (only && !strstr(s->name, only))
                continue;
            job j = {.k = k, .s = s};
            double flops;
            int64_t items;
            float *w = NULL;
            if (s->kind == 'a') {
                int64_t width = s->heads * s->head_dim;
                j.attn = (attention_geom){.batch = 2, .heads = s->heads, .q_len = s->q_len, .kv_len = s->kv_len,
                                          .head_dim = s->head_dim, .q_stride = width, .k_stride = width,
                                          .v_stride = width, .o_stride = width, .scale = 0.158f};
                j.x = filled((size_t)(2 * s->q_len * width));
                j.x2 = filled((size_t)(2 * s->kv_len * width));
                j.x3 = filled((size_t)(2 * s->kv_len * width));
                j.y = filled((size_t)(2 * s->q_len * width));
                j.scratch_stride = (k->attention_scratch(&j.attn) + 127) / 64 * 64;
                j.scratch = (unsigned char *)filled(j.scratch_stride * 2 / 4 + 16);
                flops = 4.0 * 2 * s->heads * (double)s->q_len * s->kv_len * s->head_dim;
                items = 2 * s->heads * s->q_len;
            } else {
                int64_t n = s->kind == 'l' ? s->n : s->out_c, kk = s->kind == 'l' ? s->k : s->in_c;
                int64_t taps = s->kind == 'l' ? 1 : s->kernel * s->kernel, m = s->kind == 'l' ? s->m : 2 * s->h * s->w;
                w = filled((size_t)(n * kk * taps));
                void *packed = NULL;
                if (posix_memalign(&packed, 64, kernels_packed_elements(k->gemm_nr, n, kk, taps) * 4 + 64) != 0)
                    abort();
                kernels_pack_weights(w, KILN_DTYPE_F32, pack, k->gemm_nr, n, kk, taps, packed);
                j.w = (packed_weights){.nr = k->gemm_nr, .dtype = pack, .n = n, .k = kk, .taps = taps, .data = packed};
                j.x = filled((size_t)(m * kk));
                j.y = filled((size_t)(m * n));
                if (s->kind != 'l')
                    j.conv = (conv2d_geom){.batch = 2, .in_h = s->h, .in_w = s->w, .in_c = s->in_c, .out_h = s->h,
                                           .out_w = s->w, .out_c = s->out_c, .kernel = (int)s->kernel, .stride = 1,
                                           .pad_top = 1, .pad_left = 1};
                j.tile_m = 8 * (k->gemm_mr > 0 ? k->gemm_mr : 1);
                j.tiles_m = (m + j.tile_m - 1) / j.tile_m;
                int64_t nr = k->gemm_nr > 0 ? k->gemm_nr : 8;
                items = j.tiles_m * ((n + nr - 1) / nr);
                flops = 2.0 * (double)m * n * kk * taps;
                if (s->kind == 'w' || s->kind == '2') {
                    /* GFLOP/s stay those of the direct convolution: the speed-up shows as a rate */
                    j.variant = s->kind == '2' ? WINOGRAD_F2 : WINOGRAD_F4;
                    j.block = winograd_block_tiles(&j.conv, j.variant, tpool_size(pool));
                    j.scratch_stride = winograd_scratch_bytes(&j.conv, j.variant, j.block, j.conv.out_c);
                    j.scratch = (unsigned char *)filled(j.scratch_stride * (size_t)tpool_size(pool) / 4);
                    j.u = filled(winograd_weight_floats(j.variant, j.w.nr, j.w.n, j.w.k));
                    items = (winograd_tiles(&j.conv, j.variant) + j.block - 1) / j.block;
                }
            }
            double *times = calloc((size_t)runs, sizeof *times);
            for (int r = -1; r < runs; r++) {
                if (cold)
                    evict_caches();
                double t0 = clock_now();
                if (s->kind == 'a') {
                    /* as the executor hands it out: runs of whole tiles, about four per thread */
                    int64_t run = items / (4 * (int64_t)tpool_size(pool)) / 48 * 48;
                    tpool_for(pool, items, run > 48 ? run : 48, TPOOL_DYNAMIC, run_attention, &j);
                }
                else if (s->kind == 'w' || s->kind == '2') {
                    int64_t lanes = j.w.nr > 0 ? j.w.nr : 1;
                    tpool_for(pool, (j.w.n + lanes - 1) / lanes, 1, TPOOL_DYNAMIC, run_winograd_weights, &j);
                    tpool_for(pool, items, 1, TPOOL_DYNAMIC, run_winograd_tiles, &j);
                }
                else
                    tpool_for(pool, items, 1, TPOOL_DYNAMIC, run_tiles, &j);
                if (r >= 0)
                    times[r] = clock_now() - t0;
            }
            qsort(times, (size_t)runs, sizeof *times, compare);
            double med = times[runs / 2], rate = flops / med * 1e-9;
            double of = dot && (s->kind == 'l' || s->kind == 'c') ? dot_pk : pk;
            printf("  %-34s %8.2f %8.4fs %8.4f..%-8.4f %8.1f %5.1f%%\n", s->name, flops * 1e-9, med, times[0],
                   times[runs - 1], rate, 100.0 * rate / of);
            free(times);
            free((void *)j.x), free((void *)j.x2), free((void *)j.x3), free(j.y), free(j.scratch), free(j.u), free(w);
            free((void *)j.w.data);
        }
        tpool_destroy(pool);
    }
    return 0;
}
