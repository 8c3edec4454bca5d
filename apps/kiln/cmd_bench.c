/*
 * cmd_bench.c - `kiln bench`: how fast this machine runs a model, stage by
 * stage, beside the peak it measured in the same run.
 *
 *   kiln bench [-m MODEL] [-W N -H N] [--runs N] [--warmup N] [optimizations] [--json]
 *   kiln bench --ablate [...]
 *
 * Times the text encoder (the prompt and the negative prompt: batch 2), one
 * UNet evaluation at batch 1 and batch 2 (classifier-free guidance), and a
 * VAE decode, each after warm-up runs; prints medians with min and max,
 * GFLOP/s and the share of the measured FP32 FMA peak, the per-op profile
 * of the batch-2 UNet, and the process's peak RSS.
 *
 * --ablate switches each optimization off in turn from the best
 * configuration (or the one the flags give) and measures, per
 * configuration, the UNet step (batch 2: one CFG step), the VAE decode and
 * the memory. Each configuration runs in a process of its own, started
 * before anything is loaded, so that its peak RSS (wait4) is its own and
 * not the largest of all that ran before it.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "core/clock.h"
#include "core/cpu.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "models/model_graphs.h"
#include "models/vae_tiles.h"
#include "perf/optimizations.h"
#include "perf/recorder.h"

typedef struct bench_args {
    const char *model, *tokenizer;
    int width, height, runs, warmup, json, ablate, rounds;
    int history, csv; /* --history: summarise the runs kept, as text, JSON or CSV */
    int tuned; /* --tuned: start from the settings kiln tune stored */
    unsigned opt_given; /* 1 << kiln_opt of each optimization flag given */
    kiln_optimizations opt;
} bench_args;

typedef struct stage_result {
    const char *name;
    int batch;
    double median, min, max, gflop;
    int tiles; /* graph runs per timed run: the tiles of a tiled VAE decode, else 1 */
    size_t activation_bytes, scratch_bytes; /* the executor's peak activations and kernel scratch */
    graph_profile profile;
} stage_result;

static void bench_usage(FILE *out)
{
    fprintf(out, "usage: kiln bench [-m MODEL] [-W N -H N] [--runs N] [--warmup N] [optimizations] [--ablate] [--tuned] [--json]\n"
                 "       kiln bench --history [--json|--csv]\n"
                 "  times the text encoder (one prompt and two), the UNet (batch 1 and 2) and the VAE\n"
                 "  decoder, with the machine's measured FMA peak and the peak RSS (default model: the\n"
                 "  shipped one; KILN_MODEL overrides)\n"
                 "  --ablate  switches each optimization off in turn from the best configuration (or the one\n"
                 "            the flags give): UNet step, VAE decode and memory, one process per configuration\n"
                 "  --rounds N  with --ablate: measure every configuration N times in turn (default 2), so\n"
                 "            that a busy moment of the machine does not land on one configuration only\n"
                 "  --history [--json|--csv]  no measuring: the summary per operation (runs, mean, min, max,\n"
                 "            p50, p95, nearest-rank) of the runs kiln generate and kiln serve kept in\n"
                 "            $XDG_CACHE_HOME/kiln/history.jsonl (or ~/.cache/kiln/history.jsonl)\n"
                 "  --tuned   start from the settings 'kiln tune' stored for this CPU, model and size (flags\n"
                 "            given win; the batch size is not used: bench times fixed batches)\n");
    cli_optimization_usage(out);
}

static int parse(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->runs = 5;
    a->warmup = 1;
    a->rounds = 2;
    kiln_optimizations_defaults(&a->opt);
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int flag = cli_optimization_flag("bench", argv[i], v, &a->opt);
        if (flag < 0)
            return -1;
        if (flag > 0) {
            a->opt_given |= cli_optimization_bit(argv[i]);
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            bench_usage(stdout);
            return 1;
        } else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && v)
            a->model = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && v)
            a->tokenizer = argv[++i];
        else if ((!strcmp(argv[i], "-W") || !strcmp(argv[i], "--width")) && v)
            a->width = atoi(argv[++i]);
        else if ((!strcmp(argv[i], "-H") || !strcmp(argv[i], "--height")) && v)
            a->height = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && v)
            a->runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && v)
            a->warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            a->json = 1;
        else if (!strcmp(argv[i], "--ablate"))
            a->ablate = 1;
        else if (!strcmp(argv[i], "--history"))
            a->history = 1;
        else if (!strcmp(argv[i], "--csv"))
            a->csv = 1;
        else if (!strcmp(argv[i], "--tuned"))
            a->tuned = 1;
        else if (!strcmp(argv[i], "--rounds") && v)
            a->rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "kiln bench: unknown or incomplete option '%s'\n", argv[i]);
            return -1;
        }
    }
    if (a->runs < 1 || a->runs > 1000 || a->warmup < 0 || a->warmup > 100 || a->rounds < 1 || a->rounds > 20) {
        fprintf(stderr, "kiln bench: runs 1..1000, warmup 0..100, rounds 1..20\n");
        return -1;
    }
    if (a->csv && !a->history) {
        fprintf(stderr, "kiln bench: --csv goes with --history\n");
        return -1;
    }
    if (!a->model)
        a->model = cli_default_model();
    if (!a->model && !a->history) {
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

static void run_dot_peak(void *ctx, int64_t begin, int64_t end, int thread)
{
    peak_job *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->flops[thread] += j->k->bf16_dot_peak(j->rounds);
}

/* GFLOP/s over all threads of FP32 FMAs, or with dot set of AVX512_BF16
 * dot products (0 where the kernels have none): the best of a few short
 * runs. */
static double measure_peak(tpool *pool, int dot)
{
    int threads = tpool_size(pool);
    double best = 0;
    if (dot && !kernels_get()->bf16_dot_peak)
        return 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        peak_job j = {.k = kernels_get(), .rounds = dot ? 1000000 : 2000000};
        double start = clock_now();
        tpool_for(pool, threads, 1, TPOOL_STATIC, dot ? run_dot_peak : run_peak, &j);
        double seconds = clock_now() - start, flops = 0;
        for (int t = 0; t < threads && t < 256; t++)
            flops += j.flops[t];
        if (flops / seconds > best)
            best = flops / seconds;
    }
    return best * 1e-9;
}

/* ---- stages ---- */

/* A fixed pseudo-random number in [0, 1). */
static double next_uniform(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) * (1.0 / 9007199254740992.0);
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
            double u = next_uniform(&state);
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

/* Times a graph of that kind and shape on pseudo-random inputs. tiles
 * (may be NULL) with more than one tile makes the stage a whole tiled VAE
 * decode of the h x w latent: the decoder built for one tile, run per tile
 * and blended (models/vae_tiles.h), its bytes those of one tile plus the
 * blend buffers. */
static int run_stage(const bench_args *a, const sd_model *m, weight_cache *cache, tpool *pool,
                     const graph_exec_options *exec, model_graph_kind kind, int batch, int h, int w,
                     const vae_tiles *tiles, const char *name, stage_result *out)
{
    model_graph mg = {0};
    memset(out, 0, sizeof *out);
    out->name = name;
    out->batch = batch;
    int tiled = tiles && vae_tiles_count(tiles) > 1;
    out->tiles = tiled ? vae_tiles_count(tiles) : 1;
    if (model_graph_get_with(m, cache, &mg, kind, batch, tiled ? tiles->tile_h : h, tiled ? tiles->tile_w : w,
                             exec) != KILN_OK) {
        fprintf(stderr, "kiln bench: %s: %s\n", name, kiln_last_error());
        return -1;
    }
    float *buffers[3];
    fill_inputs(&mg, m, buffers);
    float *latent = NULL, *image = NULL;
    if (tiled) {
        /* the whole latent, and the image the tiles are blended into */
        size_t values = (size_t)h * w * m->vae.z_channels;
        latent = malloc(values * sizeof *latent);
        image = malloc((size_t)h * w * tiles->factor * tiles->factor * m->vae.image_channels * sizeof *image);
        uint64_t state = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; latent && i < values; i++)
            latent[i] = (float)(next_uniform(&state) * 2.0 - 1.0);
    }
    for (size_t i = 0; i < graph_node_count(mg.g); i++)
        out->gflop += graph_node_flops(mg.g, (graph_id)i) * 1e-9 * out->tiles;
    double *times = calloc((size_t)a->runs, sizeof *times);
    int rc = tiled && (!latent || !image) ? -1 : 0;
    for (int r = 0; r < a->warmup + a->runs && rc == 0; r++) {
        graph_exec_set_profile(mg.exec, r >= a->warmup ? &out->profile : NULL);
        double start = clock_now();
        kiln_status st = tiled ? vae_tiles_decode(tiles, &mg, pool, latent, image, NULL, NULL)
                               : graph_exec_run(mg.exec, pool);
        if (st != KILN_OK) {
            fprintf(stderr, "kiln bench: %s: %s\n", name, kiln_last_error());
            rc = -1;
        }
        if (r >= a->warmup)
            times[r - a->warmup] = clock_now() - start;
    }
    if (rc == 0) {
        out->median = perf_median(times, a->runs);
        out->min = times[0];
        out->max = times[a->runs - 1];
        out->activation_bytes = graph_exec_peak_bytes(mg.exec) +
                                (tiled ? vae_tiles_buffer_bytes(tiles, m->vae.z_channels, m->vae.image_channels) : 0);
        out->scratch_bytes = graph_exec_scratch_bytes(mg.exec);
    }
    free(times);
    free(latent);
    free(image);
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
    return (double)perf_peak_rss_bytes() / 1048576.0;
}

static void print_profile(const stage_result *s)
{
    double total = 0;
    for (int op = 0; op < GRAPH_OP_COUNT; op++)
        total += s->profile.seconds[op];
    printf("\nper-op profile of %s (batch %d), per evaluation%s:\n", s->name, s->batch,
           s->tiles > 1 ? " (one tile)" : "");
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

/* ---- ablation: one configuration per process ---- */

/* What a measuring process sends back through its pipe. */
typedef struct config_result {
    int ok;
    char error[512];
    char model[128];
    int width, height, threads;
    double unet_median, unet_min, unet_max; /* seconds per UNet step (batch 2: one CFG step) */
    double vae_median, vae_min, vae_max;
    uint64_t unet_activation, unet_scratch, vae_activation, vae_scratch, weight_bytes;
    uint64_t peak_rss; /* filled in by the parent (wait4) */
    kiln_optimizations active;
    kiln_opt_report report[KILN_OPT_COUNT];
} config_result;

/* The model's latent size for the bench's width and height; 0 or an error. */
static int bench_size(const bench_args *a, const sd_model *m, int *width, int *height, int *lh, int *lw)
{
    *width = a->width ? a->width : m->native_resolution;
    *height = a->height ? a->height : m->native_resolution;
    int factor = vae_factor(&m->vae);
    if (*width % factor || *height % factor || *width < factor || *height < factor) {
        fprintf(stderr, "kiln bench: width and height must be multiples of %d\n", factor);
        return -1;
    }
    *lh = *height / factor;
    *lw = *width / factor;
    return 0;
}

/* In the measuring process: load, pack, run the UNet at batch 2 and the VAE
 * decoder with configuration o. */
static void measure_config(const bench_args *a, const kiln_optimizations *o, config_result *r)
{
    tpool *pool = NULL;
    sd_model *m = NULL;
    weight_cache *cache = NULL;
    if (opt_validate(o) != KILN_OK || tpool_create(o->threads, &pool) != KILN_OK ||
        weight_cache_create(opt_precision_dtype(o->precision), &cache) != KILN_OK ||
        sd_model_load(a->model, a->tokenizer, &m) != KILN_OK) {
        snprintf(r->error, sizeof r->error, "%s", kiln_last_error());
        goto done;
    }
    /* as kiln_model_load does: the file's pages go once packed, packed on the pool */
    weight_cache_set_release(cache, sd_model_release_file_range, m);
    weight_cache_set_pool(cache, pool);
    int width, height, lh, lw;
    if (bench_size(a, m, &width, &height, &lh, &lw) != 0) {
        snprintf(r->error, sizeof r->error, "bad width or height");
        goto done;
    }
    graph_exec_options exec;
    opt_resolve(o, o->precision, tpool_size(pool), &r->active, r->report, &exec);
    snprintf(r->model, sizeof r->model, "%s", m->name);
    r->width = width, r->height = height, r->threads = tpool_size(pool);
    vae_tiles tiles;
    vae_tiles_layout(lh, lw, vae_factor(&m->vae), r->active.vae_tiling ? r->active.vae_tile : 0, &tiles);
    stage_result unet, vae;
    if (run_stage(a, m, cache, pool, &exec, MODEL_GRAPH_UNET, 2, lh, lw, NULL, "unet", &unet) != 0 ||
        run_stage(a, m, cache, pool, &exec, MODEL_GRAPH_DECODER, 1, lh, lw, &tiles, "vae decode", &vae) != 0) {
        snprintf(r->error, sizeof r->error, "%s", kiln_last_error());
        goto done;
    }
    r->unet_median = unet.median, r->unet_min = unet.min, r->unet_max = unet.max;
    r->vae_median = vae.median, r->vae_min = vae.min, r->vae_max = vae.max;
    r->unet_activation = unet.activation_bytes, r->unet_scratch = unet.scratch_bytes;
    r->vae_activation = vae.activation_bytes, r->vae_scratch = vae.scratch_bytes;
    r->weight_bytes = weight_cache_bytes(cache);
    r->ok = 1;
done:
    sd_model_destroy(m);
    weight_cache_destroy(cache);
    tpool_destroy(pool);
}

/* Forks a fresh process for configuration o and waits for its numbers and
 * its peak RSS. The parent has started no threads and loaded nothing. */
static void run_config(const bench_args *a, const kiln_optimizations *o, config_result *out)
{
    memset(out, 0, sizeof *out);
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(out->error, sizeof out->error, "pipe: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(out->error, sizeof out->error, "fork: %s", strerror(errno));
        close(fds[0]), close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        config_result *r = calloc(1, sizeof *r);
        if (r) {
            measure_config(a, o, r);
            const char *p = (const char *)r;
            for (size_t done = 0; done < sizeof *r;) {
                ssize_t n = write(fds[1], p + done, sizeof *r - done);
                if (n <= 0)
                    break;
                done += (size_t)n;
            }
        }
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    char *p = (char *)out;
    while (got < sizeof *out) {
        ssize_t n = read(fds[0], p + got, sizeof *out - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    if (got != sizeof *out) {
        memset(out, 0, sizeof *out);
        if (WIFSIGNALED(status))
            snprintf(out->error, sizeof out->error, "the measuring process died of signal %d", WTERMSIG(status));
        else
            snprintf(out->error, sizeof out->error, "the measuring process sent no result");
        return;
    }
    out->peak_rss = (uint64_t)ru.ru_maxrss * 1024u; /* Linux: kilobytes */
}

/* A row of the ablation: an optimization, its value in the "on" and the
 * "off" configuration. */
typedef struct ablation_row {
    const char *label;
    kiln_opt opt;
    int on, off;           /* indices into the measured configurations, -1: not measured */
    char on_value[24], off_value[24];
    int available;
    char note[256];
} ablation_row;

#define MAX_CONFIGS 16
#define MAX_ROWS 12

typedef struct ablation {
    kiln_optimizations configs[MAX_CONFIGS];
    config_result results[MAX_CONFIGS];
    int n_configs;
    ablation_row rows[MAX_ROWS];
    int n_rows;
} ablation;

static int config_index(ablation *ab, const kiln_optimizations *o)
{
    for (int i = 0; i < ab->n_configs; i++)
        if (memcmp(&ab->configs[i], o, sizeof *o) == 0)
            return i;
    if (ab->n_configs == MAX_CONFIGS)
        return -1;
    ab->configs[ab->n_configs] = *o;
    return ab->n_configs++;
}

/* Adds the row "name: on_value -> off_value", both configurations the best
 * one with that switch set. A configuration this build cannot run as asked
 * is not measured: the row says why. */
static void add_row(ablation *ab, const char *label, kiln_opt opt, const kiln_optimizations *best, const char *on_value,
                    const char *off_value, int threads)
{
    if (ab->n_rows == MAX_ROWS)
        return;
    ablation_row *row = &ab->rows[ab->n_rows++];
    memset(row, 0, sizeof *row);
    row->label = label;
    row->opt = opt;
    row->on = row->off = -1;
    row->available = 1;
    kiln_optimizations on = *best, off = *best;
    if (on_value)
        kiln_optimizations_set(&on, kiln_opt_name(opt), on_value);
    kiln_optimizations_set(&off, kiln_opt_name(opt), off_value);
    /* the measuring process loads the model in the configuration's own
     * precision and makes a pool of its own thread count */
    kiln_opt_report rep_on[KILN_OPT_COUNT], rep_off[KILN_OPT_COUNT];
    opt_resolve(&on, on.precision, on.threads ? on.threads : threads, NULL, rep_on, NULL);
    opt_resolve(&off, off.precision, off.threads ? off.threads : threads, NULL, rep_off, NULL);
    snprintf(row->on_value, sizeof row->on_value, "%s", rep_on[opt].available ? rep_on[opt].active : rep_on[opt].asked);
    snprintf(row->off_value, sizeof row->off_value, "%s",
             rep_off[opt].available ? rep_off[opt].active : rep_off[opt].asked);
    const kiln_opt_report *missing = !rep_on[opt].available ? &rep_on[opt] : !rep_off[opt].available ? &rep_off[opt] : NULL;
    if (missing) {
        row->available = 0;
        snprintf(row->note, sizeof row->note, "%s %s: %s", kiln_opt_name(opt), missing->asked, missing->note);
        return;
    }
    row->on = config_index(ab, &on);
    row->off = config_index(ab, &off);
}

static double mib(uint64_t bytes)
{
    return (double)bytes / 1048576.0;
}

/* the larger stage's activations and scratch */
static uint64_t activation_peak(const config_result *r)
{
    uint64_t u = r->unet_activation + r->unet_scratch, v = r->vae_activation + r->vae_scratch;
    return u > v ? u : v;
}

static json_t *config_json(const ablation *ab, int i)
{
    const config_result *r = &ab->results[i];
    json_t *o = json_object();
    json_t *opts = json_object();
    char buf[32];
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        kiln_optimizations_get(&ab->configs[i], (kiln_opt)k, buf, sizeof buf);
        json_object_set_new(opts, kiln_opt_name((kiln_opt)k), json_string(buf));
    }
    json_object_set_new(o, "asked", opts);
    json_object_set_new(o, "ok", json_boolean(r->ok));
    if (!r->ok) {
        json_object_set_new(o, "error", json_string(r->error));
        return o;
    }
    json_object_set_new(o, "report", cli_report_json(r->report));
    json_object_set_new(o, "unet_step_s", json_pack("{s:f, s:f, s:f}", "median", r->unet_median, "min", r->unet_min, "max", r->unet_max));
    json_object_set_new(o, "vae_decode_s", json_pack("{s:f, s:f, s:f}", "median", r->vae_median, "min", r->vae_min, "max", r->vae_max));
    json_object_set_new(o, "memory", json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "unet_activation_bytes",
                                               (json_int_t)r->unet_activation, "unet_scratch_bytes",
                                               (json_int_t)r->unet_scratch, "vae_activation_bytes",
                                               (json_int_t)r->vae_activation, "vae_scratch_bytes",
                                               (json_int_t)r->vae_scratch, "activation_peak_bytes",
                                               (json_int_t)activation_peak(r), "weight_bytes",
                                               (json_int_t)r->weight_bytes, "peak_rss_bytes", (json_int_t)r->peak_rss));
    return o;
}

static int cmd_ablate(const bench_args *a)
{
    ablation *ab = calloc(1, sizeof *ab);
    if (!ab)
        return CLI_FAILED;
    const kiln_optimizations *best = &a->opt;
    int threads = best->threads ? best->threads : cpu_get()->logical_cores;
    char tile[16], one[16] = "1";
    snprintf(tile, sizeof tile, "%d", kernels_get()->attention_tile_step > 0 ? kernels_get()->attention_tile_step : 12);
    /* the best configuration first: every row's "on" unless the row sets it */
    config_index(ab, best);
    add_row(ab, "attention", KILN_OPT_ATTENTION, best, NULL, "plain", threads);
    add_row(ab, "attention tile", KILN_OPT_ATTENTION_TILE, best, NULL, tile, threads);
    add_row(ab, "fusion", KILN_OPT_FUSION, best, NULL, "off", threads);
    add_row(ab, "winograd", KILN_OPT_WINOGRAD, best, NULL, "off", threads);
    add_row(ab, "memory plan", KILN_OPT_MEMORY, best, NULL, "alloc", threads);
    add_row(ab, "fast math", KILN_OPT_FAST_MATH, best, NULL, "off", threads);
    add_row(ab, "precision f16", KILN_OPT_PRECISION, best, "f16", "f32", threads);
    add_row(ab, "precision bf16", KILN_OPT_PRECISION, best, "bf16", "f32", threads);
    if (threads > 1)
        add_row(ab, "threads", KILN_OPT_THREADS, best, NULL, one, threads);
    add_row(ab, "layout nhwc", KILN_OPT_LAYOUT, best, "nhwc", "nchw", threads);
    add_row(ab, "vae tiling", KILN_OPT_VAE_TILING, best, "on", "off", threads);

    /* rounds: every configuration once per round, in turn; per configuration
     * the median of its rounds' medians, the smallest min and largest max,
     * the largest peak RSS */
    double (*unet)[20] = calloc(MAX_CONFIGS, sizeof *unet), (*vae)[20] = calloc(MAX_CONFIGS, sizeof *vae);
    if (!unet || !vae) {
        free(unet), free(vae), free(ab);
        return CLI_FAILED;
    }
    for (int round = 0; round < a->rounds; round++) {
        for (int i = 0; i < ab->n_configs; i++) {
            if (!a->json) {
                char desc[256] = "";
                for (int k = 0; k < KILN_OPT_COUNT; k++) {
                    char v[32], w[32];
                    kiln_optimizations_get(&ab->configs[i], (kiln_opt)k, v, sizeof v);
                    kiln_optimizations_get(best, (kiln_opt)k, w, sizeof w);
                    if (i > 0 && strcmp(v, w) != 0)
                        snprintf(desc + strlen(desc), sizeof desc - strlen(desc), " %s=%s", kiln_opt_name((kiln_opt)k), v);
                }
                fprintf(stderr, "kiln bench: round %d of %d, configuration %d of %d:%s\n", round + 1, a->rounds, i + 1,
                        ab->n_configs, i == 0 ? " the best" : desc);
            }
            config_result r;
            run_config(a, &ab->configs[i], &r);
            config_result *acc = &ab->results[i];
            if (!r.ok) {
                fprintf(stderr, "kiln bench: configuration %d failed: %s\n", i + 1, r.error);
                *acc = r;
                continue;
            }
            if (round > 0 && !acc->ok)
                continue; /* failed before: stays failed */
            unet[i][round] = r.unet_median;
            vae[i][round] = r.vae_median;
            if (round == 0) {
                *acc = r;
                continue;
            }
            acc->unet_min = r.unet_min < acc->unet_min ? r.unet_min : acc->unet_min;
            acc->unet_max = r.unet_max > acc->unet_max ? r.unet_max : acc->unet_max;
            acc->vae_min = r.vae_min < acc->vae_min ? r.vae_min : acc->vae_min;
            acc->vae_max = r.vae_max > acc->vae_max ? r.vae_max : acc->vae_max;
            acc->peak_rss = r.peak_rss > acc->peak_rss ? r.peak_rss : acc->peak_rss;
        }
    }
    for (int i = 0; i < ab->n_configs; i++) {
        if (!ab->results[i].ok)
            continue;
        ab->results[i].unet_median = perf_median(unet[i], a->rounds);
        ab->results[i].vae_median = perf_median(vae[i], a->rounds);
    }
    free(unet);
    free(vae);
    const config_result *b = &ab->results[0];
    if (!b->ok) {
        free(ab);
        return CLI_FAILED;
    }
    const kiln_cpu_info *cpu = cpu_get();
    if (a->json) {
        json_t *configs = json_array(), *rows = json_array();
        for (int i = 0; i < ab->n_configs; i++)
            json_array_append_new(configs, config_json(ab, i));
        for (int i = 0; i < ab->n_rows; i++) {
            const ablation_row *row = &ab->rows[i];
            json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "optimization", row->label, "switch",
                                  kiln_opt_name(row->opt), "on", row->on_value, "off", row->off_value, "available",
                                  row->available);
            const config_result *on = row->on >= 0 ? &ab->results[row->on] : NULL;
            const config_result *off = row->off >= 0 ? &ab->results[row->off] : NULL;
            if (!row->available) {
                json_object_set_new(o, "note", json_string(row->note));
            } else if (on && off && on->ok && off->ok) {
                json_object_set_new(o, "config_on", json_integer(row->on));
                json_object_set_new(o, "config_off", json_integer(row->off));
                json_object_set_new(o, "unet_step_on_s", json_real(on->unet_median));
                json_object_set_new(o, "unet_step_off_s", json_real(off->unet_median));
                json_object_set_new(o, "unet_speedup", json_real(off->unet_median / on->unet_median));
                json_object_set_new(o, "vae_decode_on_s", json_real(on->vae_median));
                json_object_set_new(o, "vae_decode_off_s", json_real(off->vae_median));
                json_object_set_new(o, "vae_speedup", json_real(off->vae_median / on->vae_median));
                json_object_set_new(o, "activation_on_bytes", json_integer((json_int_t)activation_peak(on)));
                json_object_set_new(o, "activation_off_bytes", json_integer((json_int_t)activation_peak(off)));
                json_object_set_new(o, "peak_rss_on_bytes", json_integer((json_int_t)on->peak_rss));
                json_object_set_new(o, "peak_rss_off_bytes", json_integer((json_int_t)off->peak_rss));
            } else {
                json_object_set_new(o, "error", json_string(on && !on->ok ? on->error : off ? off->error : "not run"));
            }
            json_array_append_new(rows, o);
        }
        json_t *root = json_pack("{s:s, s:s, s:s, s:i, s:s, s:i, s:i, s:i, s:i, s:i, s:s, s:o, s:o}", "kiln", kiln_version(),
                                 "cpu", cpu->model, "isa", kiln_isa_name(cpu_isa()), "threads", b->threads, "model",
                                 b->model, "width", b->width, "height", b->height, "rounds", a->rounds, "runs", a->runs,
                                 "warmup", a->warmup, "method",
                                 "UNet at batch 2 (one classifier-free guidance step); each configuration in its own "
                                 "process, once per round, rounds in turn; times: median of the rounds' medians, "
                                 "min and max of all runs; activation bytes: the larger of the UNet's and the VAE "
                                 "decoder's peak live activations plus kernel scratch; peak RSS: the largest of the "
                                 "configuration's processes",
                                 "ablation", rows, "configurations", configs);
        json_dumpf(root, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(root);
    }
    {
        /* the table: on stdout, or beside the JSON on stderr (the same numbers) */
        FILE *out = a->json ? stderr : stdout;
        fprintf(out, "kiln %s bench --ablate: %s, %d threads, kernels %s\n", kiln_version(), cpu->model, b->threads,
               kiln_isa_name(cpu_isa()));
        fprintf(out, "model %s at %dx%d; UNet step = one evaluation at batch 2 (CFG); %d round%s of %d runs after %d "
               "warm-up per configuration: median of the rounds' medians [min-max of all runs]\n",
               b->model, b->width, b->height, a->rounds, a->rounds == 1 ? "" : "s", a->runs, a->warmup);
        fprintf(out, "best configuration:\n");
        cli_report_print(out, b->report, 1);
        fprintf(out, "\n  %-15s %-14s %-24s %-24s %7s %-24s %-24s %7s %15s %15s\n", "optimization", "on -> off",
               "UNet step on [min-max]", "UNet step off", "speedup", "VAE decode on", "VAE decode off", "speedup",
               "act. MiB on/off", "RSS MiB on/off");
        for (int i = 0; i < ab->n_rows; i++) {
            const ablation_row *row = &ab->rows[i];
            char change[40];
            snprintf(change, sizeof change, "%s -> %s", row->on_value, row->off_value);
            if (!row->available) {
                fprintf(out, "  %-15s %-14s not measured: %s\n", row->label, change, row->note);
                continue;
            }
            const config_result *on = &ab->results[row->on], *off = &ab->results[row->off];
            if (!on->ok || !off->ok) {
                fprintf(out, "  %-15s %-14s failed: %s\n", row->label, change, !on->ok ? on->error : off->error);
                continue;
            }
            char t[4][40];
            snprintf(t[0], sizeof t[0], "%.4fs [%.4f-%.4f]", on->unet_median, on->unet_min, on->unet_max);
            snprintf(t[1], sizeof t[1], "%.4fs [%.4f-%.4f]", off->unet_median, off->unet_min, off->unet_max);
            snprintf(t[2], sizeof t[2], "%.4fs [%.4f-%.4f]", on->vae_median, on->vae_min, on->vae_max);
            snprintf(t[3], sizeof t[3], "%.4fs [%.4f-%.4f]", off->vae_median, off->vae_min, off->vae_max);
            char act[32], rss[32];
            snprintf(act, sizeof act, "%.1f/%.1f", mib(activation_peak(on)), mib(activation_peak(off)));
            snprintf(rss, sizeof rss, "%.0f/%.0f", mib(on->peak_rss), mib(off->peak_rss));
            fprintf(out, "  %-15s %-14s %-24s %-24s %6.2fx %-24s %-24s %6.2fx %15s %15s\n", row->label, change, t[0], t[1],
                   off->unet_median / on->unet_median, t[2], t[3], off->vae_median / on->vae_median, act, rss);
        }
        fprintf(out, "\nspeedup = time off / time on. act.: the larger of the UNet's and the VAE decoder's peak live\n"
               "activations plus kernel scratch (the arena under the static plan; the largest sum of live\n"
               "allocations under alloc). RSS: peak resident memory of the configuration's own process\n"
               "(weights packed in its precision included).\n");
    }
    int rc = CLI_OK;
    for (int i = 0; i < ab->n_configs; i++)
        if (!ab->results[i].ok)
            rc = CLI_FAILED;
    free(ab);
    return rc;
}

/* ---- --history: what the recorder kept ---- */

static int bench_history(const bench_args *a)
{
    char *path = perf_history_default_path();
    if (!path) {
        fprintf(stderr, "kiln bench: neither XDG_CACHE_HOME nor HOME is set: no history to read\n");
        return CLI_FAILED;
    }
    perf_summary s;
    if (perf_summary_read(path, &s) != 0) {
        fprintf(stderr, "kiln bench: cannot read %s: %s\n", path, strerror(errno));
        free(path);
        return CLI_FAILED;
    }
    if (a->csv) {
        char *csv = perf_summary_csv(&s);
        if (csv)
            fputs(csv, stdout);
        free(csv);
    } else if (a->json) {
        json_t *j = perf_summary_json(&s, path);
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(j);
    } else {
        printf("%s: %d run%s (nearest-rank percentiles)\n", path, s.records, s.records == 1 ? "" : "s");
        printf("%-12s %5s %10s %10s %10s %10s %10s  %s\n", "operation", "runs", "mean s", "min s", "max s", "p50 s",
               "p95 s", "throughput p50");
        for (int i = 0; i < s.count; i++) {
            const perf_op_summary *o = &s.ops[i];
            printf("%-12s %5d %10.4f %10.4f %10.4f %10.4f %10.4f", o->op, o->wall_s.count, o->wall_s.mean,
                   o->wall_s.min, o->wall_s.max, o->wall_s.p50, o->wall_s.p95);
            if (o->per_s.count)
                printf("  %.3f %s/s", o->per_s.p50, o->unit);
            putchar('\n');
        }
    }
    perf_summary_free(&s);
    free(path);
    return CLI_OK;
}

int cmd_bench(int argc, char **argv)
{
    bench_args a;
    int parsed = parse(argc, argv, &a);
    if (parsed != 0)
        return parsed > 0 ? CLI_OK : CLI_USAGE;
    kiln_tuning tuned;
    if (a.tuned && cli_tuned_lookup("bench", a.model, a.tokenizer, a.width, a.height, &tuned, stderr))
        cli_tuned_apply(&tuned, &a.opt, a.opt_given, NULL);
    if (opt_validate(&a.opt) != KILN_OK) {
        fprintf(stderr, "kiln bench: %s\n", kiln_last_error());
        return CLI_USAGE;
    }
    if (a.ablate)
        return cmd_ablate(&a);
    if (a.history)
        return bench_history(&a);

    tpool *pool = NULL;
    sd_model *m = NULL;
    weight_cache *cache = NULL;
    if (tpool_create(a.opt.threads, &pool) != KILN_OK ||
        weight_cache_create(opt_precision_dtype(a.opt.precision), &cache) != KILN_OK)
        return cli_fail("bench");
    if (sd_model_load(a.model, a.tokenizer, &m) != KILN_OK) {
        tpool_destroy(pool);
        weight_cache_destroy(cache);
        return cli_fail("bench: loading the model");
    }
    /* as kiln_model_load does: the file's pages go once packed, packed on the pool */
    weight_cache_set_release(cache, sd_model_release_file_range, m);
    weight_cache_set_pool(cache, pool);
    int width, height, lh, lw;
    if (bench_size(&a, m, &width, &height, &lh, &lw) != 0) {
        sd_model_destroy(m);
        weight_cache_destroy(cache);
        tpool_destroy(pool);
        return CLI_USAGE;
    }
    kiln_optimizations active;
    kiln_opt_report report[KILN_OPT_COUNT];
    graph_exec_options exec;
    opt_resolve(&a.opt, a.opt.precision, tpool_size(pool), &active, report, &exec);
    const char *precision = kiln_precision_name(active.precision);
    const kiln_cpu_info *cpu = cpu_get();
    double fma_peak = measure_peak(pool, 0), dot_peak = measure_peak(pool, 1);
    /* a stage's share is of the peak of the instructions its matrix kernels run */
    int dot = active.precision == KILN_PRECISION_BF16 && kernels_bf16_dot();
    double peak = dot ? dot_peak : fma_peak;
    double load_start = clock_now();

    vae_tiles tiles;
    vae_tiles_layout(lh, lw, vae_factor(&m->vae), active.vae_tiling ? active.vae_tile : 0, &tiles);
    /* the text encoder for one prompt, and for the pair a guided generation
     * encodes (prompt and negative prompt) */
    enum { TEXT1, TEXT2, UNET1, UNET2, DECODE, STAGES };
    stage_result stages[STAGES];
    int rc = 0;
    rc |= run_stage(&a, m, cache, pool, &exec, MODEL_GRAPH_TEXT, 1, 0, 0, NULL, "text encoder", &stages[TEXT1]);
    rc |= run_stage(&a, m, cache, pool, &exec, MODEL_GRAPH_TEXT, 2, 0, 0, NULL, "text encoder", &stages[TEXT2]);
    rc |= run_stage(&a, m, cache, pool, &exec, MODEL_GRAPH_UNET, 1, lh, lw, NULL, "unet", &stages[UNET1]);
    rc |= run_stage(&a, m, cache, pool, &exec, MODEL_GRAPH_UNET, 2, lh, lw, NULL, "unet", &stages[UNET2]);
    rc |= run_stage(&a, m, cache, pool, &exec, MODEL_GRAPH_DECODER, 1, lh, lw, &tiles, "vae decode", &stages[DECODE]);
    double total_s = clock_now() - load_start;
    double rss = peak_rss_mb(), rss_now = current_rss_mb();

    if (rc == 0 && a.json) {
        json_t *list = json_array();
        for (int i = 0; i < STAGES; i++) {
            json_t *ops = json_object();
            for (int op = 0; op < GRAPH_OP_COUNT; op++)
                if (stages[i].profile.nodes[op] && stages[i].profile.runs)
                    json_object_set_new(ops, graph_op_name((graph_op)op),
                                        json_pack("{s:f, s:f}", "seconds",
                                                  stages[i].profile.seconds[op] / stages[i].profile.runs, "gflop",
                                                  stages[i].profile.flops[op] / stages[i].profile.runs * 1e-9));
            json_array_append_new(list, json_pack("{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:o}", "stage",
                                                  stages[i].name, "batch", stages[i].batch, "tiles", stages[i].tiles,
                                                  "median_s",
                                                  stages[i].median, "min_s", stages[i].min, "max_s", stages[i].max,
                                                  "gflop", stages[i].gflop, "gflops",
                                                  stages[i].gflop / stages[i].median, "peak_share",
                                                  stages[i].gflop / stages[i].median / peak, "ops", ops));
        }
        json_t *root = json_pack("{s:s, s:s, s:i, s:s, s:f, s:f, s:b, s:s, s:s, s:i, s:i, s:i, s:i, s:o, s:f, s:f, s:f}",
                                 "kiln", kiln_version(), "cpu", cpu->model, "threads", tpool_size(pool), "isa",
                                 kiln_isa_name(cpu_isa()), "peak_fp32_gflops", fma_peak, "peak_bf16_dot_gflops",
                                 dot_peak, "bf16_dot", dot, "precision", precision, "model",
                                 m->name, "width", width, "height", height, "runs", a.runs, "warmup", a.warmup,
                                 "stages", list, "peak_rss_mb", rss, "rss_after_mb", rss_now, "wall_s", total_s);
        json_object_set_new(root, "optimizations", cli_report_json(report));
        json_dumpf(root, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(root);
    } else if (rc == 0) {
        printf("kiln %s bench: %s, %d threads, kernels %s, %s weights\n", kiln_version(), cpu->model,
               tpool_size(pool), kiln_isa_name(cpu_isa()), precision);
        printf("measured peak FP32 FMA: %.0f GFLOP/s", fma_peak);
        if (dot_peak > 0)
            printf(", BF16 dot products: %.0f GFLOP/s (%s for bf16 weights: %s)", dot_peak, dot ? "used" : "not used",
                   kernels_bf16_dot_reason());
        printf("%s\n", dot ? "; the peak column is of the BF16 dot peak" : "");
        printf("optimizations:\n");
        cli_report_print(stdout, report, 1);
        printf("model %s at %dx%d (latent %dx%d), %d runs after %d warm-up\n\n", m->name, width, height, lw, lh,
               a.runs, a.warmup);
        printf("  %-14s %5s %9s %9s %9s %8s %8s %6s\n", "stage", "batch", "median", "min", "max", "GFLOP", "GFLOP/s",
               "peak");
        for (int i = 0; i < STAGES; i++)
            printf("  %-14s %5d %8.3fs %8.3fs %8.3fs %8.1f %8.1f %5.1f%%\n", stages[i].name, stages[i].batch,
                   stages[i].median, stages[i].min, stages[i].max, stages[i].gflop, stages[i].gflop / stages[i].median,
                   100.0 * stages[i].gflop / stages[i].median / peak);
        if (stages[DECODE].tiles > 1)
            printf("  vae decode: %d tiles of %dx%d latent pixels (vae_tiling on), blended\n", stages[DECODE].tiles,
                   tiles.tile_w, tiles.tile_h);
        printf("\npeak RSS %.0f MB, %.0f MB after the runs; weights prepared %.0f MB\n",
               rss, rss_now, (double)weight_cache_bytes(cache) / 1048576.0);
        print_profile(&stages[UNET2]);
        print_profile(&stages[DECODE]);
    }
    sd_model_destroy(m);
    weight_cache_destroy(cache);
    tpool_destroy(pool);
    return rc == 0 ? CLI_OK : CLI_FAILED;
}
