/*
 * cmd_bench.c - `kiln bench`: how fast this machine runs a model, stage by
 * stage, beside the peak it measured in the same run.
 *
 *   kiln bench [-m MODEL] [-W N -H N] [--runs N] [--warmup N] [--threads N] [--json]
 *
 * Times the text encoder (the prompt and the negative prompt: batch 2), one
 * UNet evaluation at batch 1 and batch 2 (classifier-free guidance), and a
 * VAE decode, each after warm-up runs; prints medians with min and max,
 * GFLOP/s and the share of the measured FP32 FMA peak, the per-op profile
 * of the batch-2 UNet, and the process's peak RSS.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "core/clock.h"
#include "core/cpu.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "models/model_graphs.h"

typedef struct bench_args {
    const char *model, *tokenizer, *precision;
    int width, height, runs, warmup, threads, json;
} bench_args;

typedef struct stage_result {
    const char *name;
    int batch;
    double median, min, max, gflop;
    graph_profile profile;
} stage_result;

static void bench_usage(FILE *out)
{
    fprintf(out, "usage: kiln bench [-m MODEL] [-W N -H N] [--precision f32|f16] [--runs N] [--warmup N] [--threads N] [--json]\n"
                 "  times the text encoder, the UNet (batch 1 and 2) and the VAE decoder, with the machine's\n"
                 "  measured FMA peak and the peak RSS (default model: the shipped one; KILN_MODEL overrides)\n");
}

static int parse(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->runs = 5;
    a->warmup = 1;
    a->precision = "f32";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            bench_usage(stdout);
            return 1;
        } else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && v)
            a->model = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && v)
            a->tokenizer = argv[++i];
        else if (!strcmp(argv[i], "--precision") && v)
            a->precision = argv[++i];
        else if ((!strcmp(argv[i], "-W") || !strcmp(argv[i], "--width")) && v)
            a->width = atoi(argv[++i]);
        else if ((!strcmp(argv[i], "-H") || !strcmp(argv[i], "--height")) && v)
            a->height = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && v)
            a->runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && v)
            a->warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && v)
            a->threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            a->json = 1;
        else {
            fprintf(stderr, "kiln bench: unknown or incomplete option '%s'\n", argv[i]);
            return -1;
        }
    }
    if (strcmp(a->precision, "f32") != 0 && strcmp(a->precision, "f16") != 0) {
        fprintf(stderr, "kiln bench: precision is f32 or f16, not '%s'\n", a->precision);
        return -1;
    }
    if (a->runs < 1 || a->runs > 1000 || a->warmup < 0 || a->warmup > 100 || a->threads < 0 || a->threads > 1024) {
        fprintf(stderr, "kiln bench: runs 1..1000, warmup 0..100, threads 0..1024\n");
        return -1;
    }
    if (!a->model)
        a->model = cli_default_model();
    if (!a->model) {
        fprintf(stderr, "kiln bench: no model given (-m PATH)\n");
        return -1;
    }
    return 0;
}

/* ---- the machine's peak ---- */

typedef struct peak_job {
    const kernel_table *k;
    int64_t rounds;
    double flops[256];
} peak_job;

static void run_peak(void *ctx, int64_t begin, int64_t end, int thread)
{
    peak_job *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->flops[thread] += j->k->fma_peak(j->rounds);
}

/* FP32 FMA GFLOP/s over all threads: the best of a few short runs. */
static double measure_peak(tpool *pool)
{
    int threads = tpool_size(pool);
    double best = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        peak_job j = {.k = kernels_get(), .rounds = 2000000};
        double start = clock_now();
        tpool_for(pool, threads, 1, TPOOL_STATIC, run_peak, &j);
        double seconds = clock_now() - start, flops = 0;
        for (int t = 0; t < threads && t < 256; t++)
            flops += j.flops[t];
        if (flops / seconds > best)
            best = flops / seconds;
    }
    return best * 1e-9;
}

/* ---- stages ---- */

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fills every input of the graph with fixed pseudo-random values of the
 * right kind (token ids below the vocabulary, timesteps in range). */
static float *fill_inputs(const model_graph *mg, const sd_model *m, float **buffers)
{
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 3; i++) {
        buffers[i] = NULL;
        if (mg->in[i] == GRAPH_NONE)
            continue;
        const graph_node *node = graph_node_at(mg->g, mg->in[i]);
        size_t n = (size_t)tensor_numel(&node->out);
        buffers[i] = malloc(n * sizeof(float));
        for (size_t j = 0; j < n; j++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            double u = (double)(state >> 11) * (1.0 / 9007199254740992.0);
            if (mg->kind == MODEL_GRAPH_TEXT)
                buffers[i][j] = (float)(int)(u * (m->clip.vocab - 1));
            else if (mg->kind == MODEL_GRAPH_UNET && i == 1)
                buffers[i][j] = 500.0f;
            else
                buffers[i][j] = (float)(u * 2.0 - 1.0);
        }
        graph_exec_bind(mg->exec, mg->in[i], buffers[i]);
    }
    return buffers[0];
}

static int run_stage(const bench_args *a, const sd_model *m, weight_cache *cache, tpool *pool, model_graph_kind kind,
                     int batch, int h, int w, const char *name, stage_result *out)
{
    model_graph mg = {0};
    memset(out, 0, sizeof *out);
    out->name = name;
    out->batch = batch;
    if (model_graph_get(m, cache, &mg, kind, batch, h, w) != KILN_OK) {
        fprintf(stderr, "kiln bench: %s: %s\n", name, kiln_last_error());
        return -1;
    }
    float *buffers[3];
    fill_inputs(&mg, m, buffers);
    for (size_t i = 0; i < graph_node_count(mg.g); i++)
        out->gflop += graph_node_flops(mg.g, (graph_id)i) * 1e-9;
    double *times = calloc((size_t)a->runs, sizeof *times);
    int rc = 0;
    for (int r = 0; r < a->warmup + a->runs && rc == 0; r++) {
        graph_exec_set_profile(mg.exec, r >= a->warmup ? &out->profile : NULL);
        double start = clock_now();
        if (graph_exec_run(mg.exec, pool) != KILN_OK) {
            fprintf(stderr, "kiln bench: %s: %s\n", name, kiln_last_error());
            rc = -1;
        }
        if (r >= a->warmup)
            times[r - a->warmup] = clock_now() - start;
    }
    if (rc == 0) {
        qsort(times, (size_t)a->runs, sizeof *times, compare_double);
        out->median = a->runs % 2 ? times[a->runs / 2] : 0.5 * (times[a->runs / 2 - 1] + times[a->runs / 2]);
        out->min = times[0];
        out->max = times[a->runs - 1];
    }
    free(times);
    for (int i = 0; i < 3; i++)
        free(buffers[i]);
    model_graph_clear(&mg);
    return rc;
}

/* Resident memory now (Linux: /proc/self/statm), 0 if unknown. */
static double current_rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages_total = 0, pages_resident = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lld %lld", &pages_total, &pages_resident) != 2)
        pages_resident = 0;
    fclose(f);
    return (double)pages_resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void print_profile(const stage_result *s)
{
    double total = 0;
    for (int op = 0; op < GRAPH_OP_COUNT; op++)
        total += s->profile.seconds[op];
    printf("\nper-op profile of %s (batch %d), per evaluation:\n", s->name, s->batch);
    printf("  %-18s %9s %7s %9s %7s\n", "op", "time", "share", "GFLOP/s", "nodes");
    for (int op = 0; op < GRAPH_OP_COUNT; op++) {
        if (!s->profile.nodes[op] || s->profile.runs == 0)
            continue;
        double t = s->profile.seconds[op] / s->profile.runs;
        double rate = s->profile.seconds[op] > 0 ? s->profile.flops[op] / s->profile.seconds[op] * 1e-9 : 0;
        printf("  %-18s %8.4fs %6.1f%% %9.1f %7lld\n", graph_op_name((graph_op)op), t,
               100.0 * s->profile.seconds[op] / total, rate, (long long)(s->profile.nodes[op] / s->profile.runs));
    }
}

int cmd_bench(int argc, char **argv)
{
    bench_args a;
    int parsed = parse(argc, argv, &a);
    if (parsed != 0)
        return parsed > 0 ? CLI_OK : CLI_USAGE;

    tpool *pool = NULL;
    sd_model *m = NULL;
    weight_cache *cache = NULL;
    if (tpool_create(a.threads, &pool) != KILN_OK || weight_cache_create(strcmp(a.precision, "f16") ? KILN_DTYPE_F32 : KILN_DTYPE_F16, &cache) != KILN_OK)
        return cli_fail("bench");
    if (sd_model_load(a.model, a.tokenizer, &m) != KILN_OK) {
        tpool_destroy(pool);
        weight_cache_destroy(cache);
        return cli_fail("bench: loading the model");
    }
    int width = a.width ? a.width : m->native_resolution, height = a.height ? a.height : m->native_resolution;
    int factor = vae_factor(&m->vae);
    if (width % factor || height % factor || width < factor || height < factor) {
        fprintf(stderr, "kiln bench: width and height must be multiples of %d\n", factor);
        sd_model_destroy(m);
        return CLI_USAGE;
    }
    const kiln_cpu_info *cpu = cpu_get();
    double peak = measure_peak(pool);
    double load_start = clock_now();

    stage_result stages[4];
    int lh = height / factor, lw = width / factor, rc = 0;
    rc |= run_stage(&a, m, cache, pool, MODEL_GRAPH_TEXT, 2, 0, 0, "text encoder", &stages[0]);
    rc |= run_stage(&a, m, cache, pool, MODEL_GRAPH_UNET, 1, lh, lw, "unet", &stages[1]);
    rc |= run_stage(&a, m, cache, pool, MODEL_GRAPH_UNET, 2, lh, lw, "unet", &stages[2]);
    rc |= run_stage(&a, m, cache, pool, MODEL_GRAPH_DECODER, 1, lh, lw, "vae decode", &stages[3]);
    double total_s = clock_now() - load_start;
    double rss = peak_rss_mb(), rss_now = current_rss_mb();

    if (rc == 0 && a.json) {
        json_t *list = json_array();
        for (int i = 0; i < 4; i++) {
            json_t *ops = json_object();
            for (int op = 0; op < GRAPH_OP_COUNT; op++)
                if (stages[i].profile.nodes[op] && stages[i].profile.runs)
                    json_object_set_new(ops, graph_op_name((graph_op)op),
                                        json_pack("{s:f, s:f}", "seconds",
                                                  stages[i].profile.seconds[op] / stages[i].profile.runs, "gflop",
                                                  stages[i].profile.flops[op] / stages[i].profile.runs * 1e-9));
            json_array_append_new(list, json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:o}", "stage",
                                                  stages[i].name, "batch", stages[i].batch, "median_s",
                                                  stages[i].median, "min_s", stages[i].min, "max_s", stages[i].max,
                                                  "gflop", stages[i].gflop, "gflops",
                                                  stages[i].gflop / stages[i].median, "peak_share",
                                                  stages[i].gflop / stages[i].median / peak, "ops", ops));
        }
        json_t *root = json_pack("{s:s, s:s, s:i, s:s, s:f, s:s, s:s, s:i, s:i, s:i, s:i, s:o, s:f, s:f, s:f}", "kiln",
                                 kiln_version(), "cpu", cpu->model, "threads", tpool_size(pool), "isa",
                                 kiln_isa_name(cpu_isa()), "peak_fp32_gflops", peak, "precision", a.precision, "model",
                                 m->name, "width", width, "height", height, "runs", a.runs, "warmup", a.warmup,
                                 "stages", list, "peak_rss_mb", rss, "rss_after_mb", rss_now, "wall_s", total_s);
        json_dumpf(root, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(root);
    } else if (rc == 0) {
        printf("kiln %s bench: %s, %d threads, kernels %s, %s weights\n", kiln_version(), cpu->model,
               tpool_size(pool), kiln_isa_name(cpu_isa()), a.precision);
        printf("measured peak FP32 FMA: %.0f GFLOP/s\n", peak);
        printf("model %s at %dx%d (latent %dx%d), %d runs after %d warm-up\n\n", m->name, width, height, lw, lh,
               a.runs, a.warmup);
        printf("  %-14s %5s %9s %9s %9s %8s %8s %6s\n", "stage", "batch", "median", "min", "max", "GFLOP", "GFLOP/s",
               "peak");
        for (int i = 0; i < 4; i++)
            printf("  %-14s %5d %8.3fs %8.3fs %8.3fs %8.1f %8.1f %5.1f%%\n", stages[i].name, stages[i].batch,
                   stages[i].median, stages[i].min, stages[i].max, stages[i].gflop, stages[i].gflop / stages[i].median,
                   100.0 * stages[i].gflop / stages[i].median / peak);
        printf("\npeak RSS %.0f MB (while packing the mapped file), %.0f MB after the runs; weights prepared %.0f MB\n",
               rss, rss_now, (double)weight_cache_bytes(cache) / 1048576.0);
        print_profile(&stages[2]);
        print_profile(&stages[3]);
    }
    sd_model_destroy(m);
    weight_cache_destroy(cache);
    tpool_destroy(pool);
    return rc == 0 ? CLI_OK : CLI_FAILED;
}
