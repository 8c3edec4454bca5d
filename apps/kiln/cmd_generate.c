/*
 * cmd_generate.c - `kiln generate`: a prompt in, PNG files out.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "kiln.h"
#include "perf/metrics.h"
#include "perf/planner.h"
#include "perf/recorder.h"
#include "perf/trace.h"

typedef struct generate_args {
    const char *model, *tokenizer, *out_dir, *init_image;
    int json, quiet, overwrite, seed_given;
    const char *trace_path; /* --trace: a Chrome trace of the generation */
    int no_history;         /* --no-history: no record in the history file */
    int tuned; /* --tuned: the settings kiln tune stored, under the flags given */
    unsigned opt_given; /* 1 << kiln_opt of each optimization flag given */
    size_t max_memory;
    kiln_optimizations opt; /* threads and precision also make the engine and the model */
    kiln_request req;
} generate_args;

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void generate_usage(FILE *out)
{
    fprintf(out,
            "usage: kiln generate [-m MODEL] -p PROMPT [options]\n"
            "  -m, --model PATH       .safetensors checkpoint or diffusers folder (default: the shipped model)\n"
            "  -p, --prompt TEXT      what to draw\n"
            "  -n, --negative TEXT    what to steer away from\n"
            "  -W, --width N          pixels, multiple of 8 (default: the model's native size)\n"
            "  -H, --height N\n"
            "      --steps N          sampler steps (default: the model's)\n"
            "      --cfg X            guidance scale (default: the model's)\n"
            "      --sampler NAME     euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, lcm\n"
            "      --seed N           image i uses seed + i (default: random)\n"
            "      --rng NAME         torch-cpu (default) or philox, the noise other tools draw\n"
            "      --num-images N     how many images (default 1)\n"
            "      --batch-size N     images per UNet batch at most (default: as many as --max-memory allows)\n"
            "      --max-memory SIZE  memory budget, e.g. 3G or 2500M (default: 80%% of what is available)\n"
            "      --init-image F     img2img from this PNG\n"
            "      --strength X       how much of the init image to redraw, (0, 1] (default 0.75)\n"
            "      --tokenizer DIR    vocab.json + merges.txt (single-file checkpoints carry none)\n"
            "  -o, --output DIR       where the PNGs go (default: outputs)\n"
            "      --overwrite        replace existing files instead of picking new names\n"
            "      --json             print a JSON summary on stdout: timings per stage and step, the op\n"
            "                         profile, memory, throughput, the machine, the history's summary\n"
            "      --trace FILE       write the generation's timeline (one slice per graph node, inside\n"
            "                         text / step N / decode) as Chrome trace JSON for Perfetto\n"
            "      --no-history       do not append this run to the history ($XDG_CACHE_HOME/kiln/history.jsonl;\n"
            "                         'kiln bench --history' summarises it; --debug runs are never added)\n"
            "      --debug            check every node's output for NaN/Inf and compare the images with the f32\n"
            "                         reference path (PSNR, max latent error); the reference takes extra time\n"
            "      --tuned            use the settings 'kiln tune' stored for this CPU, model and size\n"
            "                         (flags given here win); the defaults when there are none\n"
            "  -q, --quiet            no progress bar\n");
    cli_optimization_usage(out);
}

/* Parses an integer option value within [lo, hi]; prints why not. */
static int parse_int(const char *name, const char *text, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "kiln generate: %s must be an integer from %lld to %lld, got '%s'\n", name, lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *name, const char *text, double lo, double hi, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "kiln generate: %s must be a number from %g to %g, got '%s'\n", name, lo, hi, text);
        return -1;
    }
    *out = (float)v;
    return 0;
}

static int parse_args(int argc, char **argv, generate_args *a)
{
    memset(a, 0, sizeof *a);
    kiln_request_defaults(&a->req);
    kiln_optimizations_defaults(&a->opt);
    a->req.prompt = NULL;
    a->out_dir = "outputs";
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        long long n;
        int flag = cli_optimization_flag("generate", arg, value, &a->opt);
        if (flag < 0)
            return -1;
        if (flag > 0) {
            a->opt_given |= cli_optimization_bit(arg);
            i++;
            continue;
        }
#define NEEDS_VALUE()                                                                                    \
    do {                                                                                                 \
        if (!value) {                                                                                    \
            fprintf(stderr, "kiln generate: %s needs a value\n", arg);                                   \
            return -1;                                                                                   \
        }                                                                                                \
        i++;                                                                                             \
    } while (0)
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            generate_usage(stdout);
            return 1;
        } else if (!strcmp(arg, "-m") || !strcmp(arg, "--model")) {
            NEEDS_VALUE();
            a->model = value;
        } else if (!strcmp(arg, "-p") || !strcmp(arg, "--prompt")) {
            NEEDS_VALUE();
            a->req.prompt = value;
        } else if (!strcmp(arg, "-n") || !strcmp(arg, "--negative")) {
            NEEDS_VALUE();
            a->req.negative_prompt = value;
        } else if (!strcmp(arg, "-W") || !strcmp(arg, "--width")) {
            NEEDS_VALUE();
            if (parse_int("width", value, KILN_MIN_SIZE, KILN_MAX_SIZE, &n))
                return -1;
            a->req.width = (int)n;
        } else if (!strcmp(arg, "-H") || !strcmp(arg, "--height")) {
            NEEDS_VALUE();
            if (parse_int("height", value, KILN_MIN_SIZE, KILN_MAX_SIZE, &n))
                return -1;
            a->req.height = (int)n;
        } else if (!strcmp(arg, "--steps")) {
            NEEDS_VALUE();
            if (parse_int("steps", value, 1, KILN_MAX_STEPS, &n))
                return -1;
            a->req.steps = (int)n;
        } else if (!strcmp(arg, "--cfg")) {
            NEEDS_VALUE();
            if (parse_float("cfg", value, 0, KILN_MAX_CFG, &a->req.cfg_scale))
                return -1;
        } else if (!strcmp(arg, "--sampler")) {
            NEEDS_VALUE();
            a->req.sampler = value;
        } else if (!strcmp(arg, "--seed")) {
            NEEDS_VALUE();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(value, &end, 10);
            if (errno || end == value || *end || value[0] == '-') {
                fprintf(stderr, "kiln generate: seed must be an integer from 0 to %llu, got '%s'\n", ULLONG_MAX, value);
                return -1;
            }
            a->req.seed = s;
            a->seed_given = 1;
        } else if (!strcmp(arg, "--rng")) {
            NEEDS_VALUE();
            a->req.rng = value;
        } else if (!strcmp(arg, "--num-images")) {
            NEEDS_VALUE();
            if (parse_int("num-images", value, 1, KILN_MAX_IMAGES, &n))
                return -1;
            a->req.num_images = (int)n;
        } else if (!strcmp(arg, "--batch-size")) {
            NEEDS_VALUE();
            if (parse_int("batch-size", value, 1, KILN_MAX_IMAGES, &n))
                return -1;
            a->req.batch_size = (int)n;
        } else if (!strcmp(arg, "--init-image")) {
            NEEDS_VALUE();
            a->init_image = value;
        } else if (!strcmp(arg, "--strength")) {
            NEEDS_VALUE();
            if (parse_float("strength", value, 0, 1, &a->req.strength) || a->req.strength <= 0) {
                if (a->req.strength <= 0)
                    fprintf(stderr, "kiln generate: strength must be above 0 and at most 1, got '%s'\n", value);
                return -1;
            }
        } else if (!strcmp(arg, "--tokenizer")) {
            NEEDS_VALUE();
            a->tokenizer = value;
        } else if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) {
            NEEDS_VALUE();
            a->out_dir = value;
        } else if (!strcmp(arg, "--max-memory")) {
            NEEDS_VALUE();
            a->max_memory = planner_parse_size(value);
            if (!a->max_memory) {
                fprintf(stderr, "kiln generate: max-memory must be a size such as 3G, 2500M or 512K, got '%s'\n", value);
                return -1;
            }
        } else if (!strcmp(arg, "--overwrite")) {
            a->overwrite = 1;
        } else if (!strcmp(arg, "--json")) {
            a->json = 1;
        } else if (!strcmp(arg, "--trace")) {
            NEEDS_VALUE();
            a->trace_path = value;
        } else if (!strcmp(arg, "--no-history")) {
            a->no_history = 1;
        } else if (!strcmp(arg, "--debug")) {
            a->req.debug = 1;
        } else if (!strcmp(arg, "--tuned")) {
            a->tuned = 1;
        } else if (!strcmp(arg, "-q") || !strcmp(arg, "--quiet")) {
            a->quiet = 1;
        } else {
            fprintf(stderr, "kiln generate: unknown option '%s'\n", arg);
            return -1;
        }
#undef NEEDS_VALUE
    }
    if (!a->req.prompt) {
        fprintf(stderr, "kiln generate: a prompt is required (-p TEXT)\n");
        return -1;
    }
    if (!a->model)
        a->model = cli_default_model();
    if (!a->model) {
        fprintf(stderr, "kiln generate: no model given (-m PATH) and none shipped with this build\n");
        return -1;
    }
    if (!a->seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        a->req.seed = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid()) % 4294967296ull;
    }
    return 0;
}

typedef struct progress_state {
    int show;
    const generate_args *args;
    char (*paths)[4096]; /* per image: where it was saved, "" if not */
    int saved, save_failed;
    perf_trace *trace; /* --trace: the slices so far */
} progress_state;

static void on_trace(void *user, const kiln_trace_event *ev)
{
    progress_state *s = user;
    perf_trace_add(s->trace, ev->name, ev->kind, ev->graph, ev->start_s, ev->dur_s, ev->batch, ev->step, ev->flops);
}

static int on_progress(void *user, const kiln_progress *p)
{
    progress_state *s = user;
    if (s->show) {
        int width = 30, filled = p->steps ? width * p->step / p->steps : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < filled ? '=' : ' ';
        bar[width] = '\0';
        fprintf(stderr, "\rimage %d/%d  step %d/%d [%s] %5.1fs, ETA %5.1fs ", p->images_done + 1, p->images,
                p->step, p->steps, bar, p->elapsed_s, p->eta_s);
        fflush(stderr);
    }
    return interrupted;
}

/* Writes image i as <dir>/<NNNNN>-<seed>.png with the first free NNNNN (or
 * exactly <dir>/00000-<seed>.png with --overwrite). The PNG goes to a
 * temporary name in dir first and is renamed (kiln_image_write_png): a
 * failed write (disk full, read-only) leaves no half file behind. */
static int save_image(const generate_args *a, const kiln_image *img, char *path, size_t size)
{
    for (int index = 0; index < 100000; index++) {
        snprintf(path, size, "%s/%05d-%llu.png", a->out_dir, index, (unsigned long long)img->seed);
        if (!a->overwrite && access(path, F_OK) == 0)
            continue;
        kiln_status st = kiln_image_write_png(img, path, a->overwrite);
        if (st == KILN_OK)
            return 0;
        if (!a->overwrite && access(path, F_OK) == 0)
            continue; /* taken by someone else meanwhile */
        fprintf(stderr, "kiln generate: %s\n", kiln_last_error());
        return -1;
    }
    fprintf(stderr, "kiln generate: %s: no free file name left\n", a->out_dir);
    return -1;
}

/* Saves each image as soon as the library finishes it, so that an
 * interrupt keeps what was done; a failed save stops the generation. */
static int on_image(void *user, const kiln_image *img, int index)
{
    progress_state *s = user;
    if (s->save_failed)
        return 1;
    if (save_image(s->args, img, s->paths[index], sizeof s->paths[index]) != 0) {
        s->paths[index][0] = '\0';
        s->save_failed = 1;
        return 1;
    }
    s->saved++;
    if (!s->args->json) {
        if (s->show)
            fputc('\n', stderr); /* off the progress bar's line */
        printf("%s\n", s->paths[index]);
        fflush(stdout);
    }
    return interrupted; /* a Ctrl-C while a batch decodes stops after this image */
}

/* The output directory, made if missing (not its parents), and checked
 * writable now, with a file created and removed there: a read-only or
 * unwritable folder is refused before minutes of generation, not after. */
static int ensure_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "kiln generate: output %s exists and is not a directory\n", dir);
            return -1;
        }
    } else if (mkdir(dir, 0755) != 0) {
        fprintf(stderr, "kiln generate: cannot create output directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char probe[4096];
    if (snprintf(probe, sizeof probe, "%s/.kiln-write-test-XXXXXX", dir) >= (int)sizeof probe) {
        fprintf(stderr, "kiln generate: output directory name is too long: %s\n", dir);
        return -1;
    }
    int fd = mkstemp(probe);
    if (fd < 0) {
        fprintf(stderr, "kiln generate: cannot write to output directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

/* ---- the metrics of a run (--json) and its history record ---- */

/* The run as the recorder's samples (perf_run_samples), the whole
 * generation measured here: wall, CPU, peak RSS, arena. */
static int run_samples(const kiln_result *res, const perf_sample *whole, perf_sample *out)
{
    const kiln_timings *t = &res->timings;
    perf_run_times times = {.total_s = t->total_s, .text_s = t->text_s, .encode_s = t->encode_s,
                            .denoise_s = t->denoise_s, .decode_s = t->decode_s, .unet_s = t->unet_s,
                            .unet_evals = t->unet_evals, .steps_run = res->step_count, .images = res->count};
    int n = perf_run_samples(&times, out);
    out[0] = *whole; /* "generate" */
    return n;
}

/* Appends this run to the history; a failure is a warning naming the
 * file, never the run's failure. Only finished runs are kept: an
 * interrupted one's times measure where it stopped, not the operation. */
static void record_history(const kiln_model_info *info, const kiln_result *res, const perf_sample *whole, int threads,
                           char **path_out)
{
    char *path = perf_history_default_path();
    *path_out = path;
    if (!path) {
        fprintf(stderr, "kiln generate: warning: neither XDG_CACHE_HOME nor HOME is set: this run is not kept "
                        "in the history\n");
        return;
    }
    perf_sample samples[PERF_RUN_OPS];
    int n = run_samples(res, whole, samples);
    json_t *rec = perf_record_create("kiln generate", samples, n);
    kiln_cpu_info cpu;
    kiln_cpu_query(&cpu);
    json_object_update_new(rec, json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s}", "status",
                                          "ok", "model", info->name, "sampler",
                                          res->sampler, "width", res->width, "height", res->height, "steps",
                                          res->steps, "images", res->count, "batch_size", res->plan.batch,
                                          "micro_batches", res->plan.micro_batches, "threads", threads, "precision",
                                          kiln_precision_name(res->optimizations.precision), "isa",
                                          kiln_isa_name(cpu.isa)));
    char msg[4300];
    if (perf_history_append(path, rec, msg, sizeof msg) != 0)
        fprintf(stderr, "kiln generate: warning: %s (this run is not kept in the history)\n", msg);
    json_decref(rec);
}

/* What --json adds about the run: perf_metrics_json and the history's
 * summary (history_path NULL: none). */
static json_t *run_metrics(const kiln_result *res, const perf_sample *whole, int threads, const char *history_path)
{
    json_t *m = perf_metrics_json(res, threads, whole->cpu_s, whole->peak_rss_bytes);
    if (m && history_path) {
        perf_summary sum;
        if (perf_summary_read(history_path, &sum) == 0) {
            json_object_set_new(m, "history", perf_summary_json(&sum, history_path));
            perf_summary_free(&sum);
        }
    }
    return m ? m : json_object();
}

static void print_json(const generate_args *a, const kiln_model_info *info, const kiln_result *res,
                       char paths[][4096], int engine_threads, kiln_status st, json_t *metrics)
{
    json_t *images = json_array();
    for (int i = 0; i < res->count; i++)
        json_array_append_new(images, json_pack("{s:s, s:I, s:i, s:i}", "path", paths[i], "seed",
                                                (json_int_t)res->images[i].seed, "width", res->images[i].width,
                                                "height", res->images[i].height));
    const kiln_timings *t = &res->timings;
    json_t *timings = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:f}", "total_s", t->total_s, "text_s", t->text_s,
                                "encode_s", t->encode_s, "denoise_s", t->denoise_s, "decode_s", t->decode_s,
                                "unet_s", t->unet_s, "unet_evals", t->unet_evals, "unet_eval_s",
                                t->unet_evals ? t->unet_s / t->unet_evals : 0.0);
    const kiln_plan *p = &res->plan;
    json_t *plan = json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:i}", "batch", p->batch, "micro_batches",
                             p->micro_batches, "weight_bytes", (json_int_t)p->weight_bytes, "activation_bytes",
                             (json_int_t)p->activation_bytes, "bytes_per_image", (json_int_t)p->bytes_per_image,
                             "total_bytes", (json_int_t)p->total_bytes, "budget_bytes", (json_int_t)p->budget_bytes,
                             "decoder_bytes", (json_int_t)p->decoder_bytes, "vae_tiles", p->vae_tiles);
    json_t *root = json_pack("{s:s, s:s, s:o, s:i, s:i, s:i, s:f, s:s, s:i, s:i, s:o, s:o, s:I, s:s}", "status",
                             st == KILN_OK ? "ok" : "cancelled", "model", info->name, "images", images, "width",
                             res->width, "height", res->height, "steps", res->steps, "cfg_scale",
                             (double)res->cfg_scale, "sampler", res->sampler, "images_requested",
                             a->req.num_images, "threads", engine_threads, "timings", timings, "plan", plan,
                             "activation_bytes", (json_int_t)t->activation_bytes, "kiln", kiln_version());
    json_object_set_new(root, "scratch_bytes", json_integer((json_int_t)t->scratch_bytes));
    json_object_set_new(root, "optimizations", cli_report_json(res->optimization_report));
    json_object_update_missing(root, metrics);
    if (res->debug.enabled)
        json_object_set_new(root, "debug", cli_debug_json(&res->debug));
    json_dumpf(root, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(root);
}

int cmd_generate(int argc, char **argv)
{
    generate_args a;
    int parsed = parse_args(argc, argv, &a);
    if (parsed != 0) {
        if (parsed < 0)
            fprintf(stderr, "run 'kiln generate --help' for the options\n");
        return parsed > 0 ? CLI_OK : CLI_USAGE;
    }
    if (ensure_dir(a.out_dir) != 0)
        return CLI_FAILED;

    uint8_t *init_rgb = NULL;
    if (a.init_image) {
        if (kiln_image_read_png(a.init_image, &init_rgb, &a.req.init_width, &a.req.init_height) != KILN_OK)
            return cli_fail("generate: init image");
        a.req.init_rgb = init_rgb;
    }

    kiln_tuning tuned;
    if (a.tuned && cli_tuned_lookup("generate", a.model, a.tokenizer, a.req.width, a.req.height, &tuned, stderr))
        cli_tuned_apply(&tuned, &a.opt, a.opt_given, &a.req.batch_size);

    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = a.opt.threads;
    eo.max_memory = a.max_memory;
    kiln_engine *engine = NULL;
    kiln_model *model = NULL;
    kiln_result *res = NULL;
    char (*paths)[4096] = NULL; /* per image: where it was saved */
    perf_trace *trace = NULL;   /* --trace */
    int rc = CLI_FAILED;
    if (kiln_engine_create(&eo, &engine) != KILN_OK) {
        cli_fail("generate");
        goto done;
    }
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    mo.tokenizer_dir = a.tokenizer;
    mo.precision = kiln_precision_name(a.opt.precision);
    if (kiln_model_load(engine, a.model, &mo, &model) != KILN_OK) {
        cli_fail("generate: loading the model");
        goto done;
    }
    kiln_model_info info;
    kiln_model_get_info(model, &info);

    paths = calloc((size_t)a.req.num_images, sizeof *paths);
    if (!paths) {
        fprintf(stderr, "kiln generate: out of memory\n");
        goto done;
    }
    progress_state ps = {.show = !a.quiet && isatty(STDERR_FILENO), .args = &a, .paths = paths};
    a.req.on_progress = on_progress;
    a.req.on_image = on_image;
    a.req.user = &ps;
    a.req.optimizations = &a.opt;
    if (a.trace_path) {
        if (!(ps.trace = trace = perf_trace_create())) {
            fprintf(stderr, "kiln generate: out of memory\n");
            goto done;
        }
        a.req.on_trace = on_trace;
    }
    /* the first Ctrl-C stops after the current step and keeps the finished
     * images; the handler then resets, so a second one ends kiln at once */
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    perf_timer timer;
    perf_timer_start(&timer);
    kiln_status st = kiln_generate(model, &a.req, &res);
    perf_sample whole;
    perf_timer_stop(&timer, "generate", res ? res->count : 0, "images", res ? res->timings.activation_bytes : 0,
                    &whole);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (ps.show)
        fputc('\n', stderr);
    if (st != KILN_OK && st != KILN_ERR_CANCELLED) {
        cli_fail("generate");
        if (ps.saved)
            fprintf(stderr, "kiln generate: kept the %d image%s saved before the error\n", ps.saved,
                    ps.saved == 1 ? "" : "s");
        goto done;
    }
    int saved = ps.saved, trace_failed = 0;
    if (a.trace_path) {
        char msg[4300];
        if (perf_trace_dropped(ps.trace))
            fprintf(stderr, "kiln generate: warning: out of memory: %zu slices left out of the trace\n",
                    perf_trace_dropped(ps.trace));
        if (perf_trace_write(ps.trace, a.trace_path, msg, sizeof msg) != 0) {
            fprintf(stderr, "kiln generate: %s\n", msg);
            trace_failed = 1;
        }
    }
    char *history_path = NULL;
    /* a debug run's wall time holds its NaN/Inf checks and its reference run: not the operation's */
    if (!a.no_history && !a.req.debug && st == KILN_OK)
        record_history(&info, res, &whole, kiln_engine_threads(engine), &history_path);
    if (a.json) {
        json_t *metrics = run_metrics(res, &whole, kiln_engine_threads(engine), history_path);
        print_json(&a, &info, res, paths, kiln_engine_threads(engine), st, metrics);
        json_decref(metrics);
    }
    free(history_path);
    if (!a.quiet) {
        const kiln_timings *t = &res->timings;
        fprintf(stderr, "kiln: %d image%s %dx%d, %d steps %s, cfg %g, in %.2fs (text %.2fs, unet %.3fs/eval, decode %.2fs)\n",
                res->count, res->count == 1 ? "" : "s", res->width, res->height, res->steps, res->sampler,
                (double)res->cfg_scale, t->total_s, t->text_s, t->unet_evals ? t->unet_s / t->unet_evals : 0.0,
                t->decode_s);
    }
    /* what was asked for and could not run here, and why: even when quiet */
    cli_report_print(stderr, res->optimization_report, 0);
    if (res->debug.enabled)
        cli_debug_print(stderr, &res->debug); /* asked for: even when quiet */
    if (ps.save_failed)
        fprintf(stderr, "kiln generate: stopped: could not save image %d of %d; kept the %d saved before it\n",
                saved + 1, a.req.num_images, saved);
    else if (st == KILN_ERR_CANCELLED)
        fprintf(stderr, "kiln generate: interrupted; kept the %d finished image%s of %d\n", saved,
                saved == 1 ? "" : "s", a.req.num_images);
    rc = st == KILN_OK && saved == res->count && !trace_failed ? CLI_OK : CLI_FAILED;
done:
    free(paths);
    perf_trace_destroy(trace);
    kiln_result_destroy(res);
    kiln_model_destroy(model);
    kiln_engine_destroy(engine);
    free(init_rgb);
    return rc;
}
