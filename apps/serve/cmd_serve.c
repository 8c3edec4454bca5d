/*
 * cmd_serve.c - `kiln serve`: the web page and the HTTP API.
 *
 * Start-up loads the model (so a bad path fails here, not at the first
 * request), reads the perf history back, and binds; then the main thread
 * waits for SIGINT or SIGTERM, which stop the server cleanly: new jobs are
 * refused, the running one is cancelled after its current step (its client
 * gets the images finished so far), the queued ones are answered 503, and
 * open connections are finished before the process exits. A second signal
 * during that ends the process at once.
 */
#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kiln/cli.h"
#include "serve.h"

typedef struct serve_args {
    const char *host, *model, *tokenizer, *api_key, *history, *precision;
    int port, queue, threads;
    int tuned, precision_given; /* --tuned; --precision was given (it wins over the tuned one) */
} serve_args;

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: kiln serve [--host 127.0.0.1] [--port 7860] [-m MODEL] [--queue 16] [--api-key KEY]\n"
            "  -m, --model PATH       .safetensors checkpoint or diffusers folder (default: $KILN_MODEL, or the\n"
            "                         shipped model)\n"
            "      --host ADDR        address to listen on (default 127.0.0.1: this machine only)\n"
            "      --port N           TCP port (default 7860; 0: any free port, printed at start)\n"
            "      --queue N          jobs that may wait behind the running one; more get 503 (default 16)\n"
            "      --api-key KEY      API calls need 'Authorization: Bearer KEY' (or set KILN_API_KEY)\n"
            "      --tokenizer DIR    vocab.json + merges.txt (single-file checkpoints carry none)\n"
            "      --precision P      the default precision, f32, f16 or bf16; requests may ask for another\n"
            "                         (a second copy of the model is loaded the first time)\n"
            "      --threads N        engine threads (default: all cores); fixed while the server runs\n"
            "      --history FILE     the perf history (default $XDG_CACHE_HOME/kiln/history.jsonl,\n"
            "                         or ~/.cache/kiln/history.jsonl)\n"
            "      --tuned            start with the threads and precision 'kiln tune' stored for this CPU and\n"
            "                         model, and give requests that do not say otherwise (\"tuned\": false)\n"
            "                         its settings; --threads and --precision given here win\n"
            "\n"
            "The page is at http://HOST:PORT/; the API follows AUTOMATIC1111's /sdapi/v1 (txt2img, img2img,\n"
            "progress, interrupt, samplers, sd-models), with kiln's /api/v1 (info, jobs, perf/summary,\n"
            "perf/history), /healthz and /metrics (Prometheus) beside it.\n");
}

static int parse_count(const char *name, const char *text, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        fprintf(stderr, "kiln serve: %s must be an integer from %ld to %ld, got '%s'\n", name, lo, hi, text);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, serve_args *a)
{
    memset(a, 0, sizeof *a);
    a->host = "127.0.0.1";
    a->port = 7860;
    a->queue = 16;
    a->precision = "f32";
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            serve_usage(stdout);
            return 1;
        }
        if (!strcmp(arg, "--tuned")) {
            a->tuned = 1;
            continue;
        }
        int known = !strcmp(arg, "-m") || !strcmp(arg, "--model") || !strcmp(arg, "--host") ||
                    !strcmp(arg, "--port") || !strcmp(arg, "--queue") || !strcmp(arg, "--api-key") ||
                    !strcmp(arg, "--tokenizer") || !strcmp(arg, "--precision") || !strcmp(arg, "--threads") ||
                    !strcmp(arg, "--history");
        if (!known) {
            fprintf(stderr, "kiln serve: unknown option '%s'\n", arg);
            return -1;
        }
        if (!value) {
            fprintf(stderr, "kiln serve: %s needs a value\n", arg);
            return -1;
        }
        i++;
        if (!strcmp(arg, "-m") || !strcmp(arg, "--model"))
            a->model = value;
        else if (!strcmp(arg, "--host"))
            a->host = value;
        else if (!strcmp(arg, "--api-key"))
            a->api_key = value;
        else if (!strcmp(arg, "--tokenizer"))
            a->tokenizer = value;
        else if (!strcmp(arg, "--precision"))
            a->precision = value, a->precision_given = 1;
        else if (!strcmp(arg, "--history"))
            a->history = value;
        else if (!strcmp(arg, "--port") && parse_count("port", value, 0, 65535, &a->port))
            return -1;
        else if (!strcmp(arg, "--queue") && parse_count("queue", value, 0, 4096, &a->queue))
            return -1;
        else if (!strcmp(arg, "--threads") && parse_count("threads", value, 0, 1024, &a->threads))
            return -1;
    }
    if (!a->api_key) {
        const char *env = getenv("KILN_API_KEY");
        if (env && *env)
            a->api_key = env;
    }
    if (a->api_key && !*a->api_key) {
        fprintf(stderr, "kiln serve: --api-key must not be empty\n");
        return -1;
    }
    if (!a->model)
        a->model = cli_default_model();
    if (!a->model) {
        fprintf(stderr, "kiln serve: no model given (-m PATH or KILN_MODEL) and none shipped with this build\n");
        return -1;
    }
    return 0;
}

/* $XDG_CACHE_HOME/kiln/history.jsonl, ~/.cache/kiln/history.jsonl, or NULL */
static char *default_history_path(void)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char path[4096];
    if (xdg && xdg[0] == '/')
        snprintf(path, sizeof path, "%s/kiln/history.jsonl", xdg);
    else if (home && *home)
        snprintf(path, sizeof path, "%s/.cache/kiln/history.jsonl", home);
    else
        return NULL;
    return strdup(path);
}

int cmd_serve(int argc, char **argv)
{
    serve_args a;
    int parsed = parse_args(argc, argv, &a);
    if (parsed != 0) {
        if (parsed < 0)
            fprintf(stderr, "run 'kiln serve --help' for the options\n");
        return parsed > 0 ? CLI_OK : CLI_USAGE;
    }
    kiln_tuning tuned;
    if (a.tuned && cli_tuned_lookup("serve", a.model, a.tokenizer, 0, 0, &tuned, stderr)) {
        if (!a.threads)
            a.threads = tuned.optimizations.threads;
        if (!a.precision_given)
            a.precision = kiln_precision_name(tuned.optimizations.precision);
    }
    serve_precision precision;
    if (serve_precision_parse(a.precision, &precision) != 0) {
        fprintf(stderr, "kiln serve: precision must be f32, f16 or bf16, got '%s'\n", a.precision);
        return CLI_USAGE;
    }

    /* Signals go to the main thread's sigwait only: block them before any
     * thread starts, so every thread inherits the mask. A client that hangs
     * up must not kill the server with SIGPIPE. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
#if defined(__GLIBC__)
    /* glibc raises its mmap threshold to the size of each large block freed
     * (up to 32 MB), after which such blocks come from the per-thread heaps
     * and stay resident when freed: one 32 MB chunked body (answered 413)
     * left the idle server ~1 MB larger for good, big images more. A fixed
     * threshold keeps blocks of 1 MiB and up in their own mappings, given
     * back on free (tests/test_serve_load.py measures the idle size). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    /* glibc gives a thread that finds the arenas busy a new one, up to 8 per
     * core; with a thread per connection each arena then holds its own
     * scraps, and how many exist depends on timing, not load. Two arenas keep
     * the idle size low and steady (test_serve_load beside two busy loops,
     * five runs: idle 19.3-19.8 MB, after the load -2.2% to +1.8%; with the
     * default, 20.8-21.0 MB and up to +4.7%, +5.4% once on CI); connection
     * threads allocate little and the model's work runs in its planned
     * arena, so nothing waits on the lock. */
    mallopt(M_ARENA_MAX, 2);
#endif

    int rc = CLI_FAILED;
    kiln_engine *engine = NULL;
    perf_log *log = NULL;
    job_queue *jobs = NULL;
    http_server *http = NULL;
    char *history = a.history ? strdup(a.history) : default_history_path();

    kiln_engine_options eo;
    kiln_engine_options_defaults(&eo);
    eo.threads = a.threads;
    if (kiln_engine_create(&eo, &engine) != KILN_OK) {
        cli_fail("serve");
        goto done;
    }
    log = perf_log_create(history);
    if (!log) {
        fprintf(stderr, "kiln serve: out of memory\n");
        goto done;
    }
    jobs_config jc = {.engine = engine,
                      .model_path = a.model,
                      .tokenizer_dir = a.tokenizer,
                      .default_precision = precision,
                      .capacity = a.queue,
                      .log = log};
    if (jobs_create(&jc, &jobs) != KILN_OK) {
        cli_fail("serve: loading the model");
        goto done;
    }
    serve_config sc = {.host = a.host,
                       .port = a.port,
                       .api_key = a.api_key,
                       .jobs = jobs,
                       .log = log,
                       .engine = engine,
                       .default_precision = precision,
                       .queue_capacity = a.queue,
                       .tuned = a.tuned,
                       .tokenizer_dir = a.tokenizer};
    http = http_start(&sc);
    if (!http)
        goto done;

    kiln_model_info info;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(jobs, &info, loaded);
    int v6 = strchr(a.host, ':') != NULL;
    printf("kiln serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", a.host, v6 ? "]" : "", http_port(http));
    fflush(stdout);
    fprintf(stderr, "kiln serve: model %s (%s), %d threads, queue %d, %s%s%s\n", info.name, a.precision,
            kiln_engine_threads(engine), a.queue, a.api_key ? "API key required" : "no API key",
            history ? ", history in " : "", history ? history : "");

    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "kiln serve: %s: stopping (cancelling the running job)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* a second signal ends the process at once */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
    rc = CLI_OK;

done:
    if (jobs)
        jobs_shutdown(jobs); /* wakes the connections waiting on jobs, so the HTTP side can finish */
    http_drain(http, 30.0); /* they answer (the cancelled job with its finished images), then we close */
    http_stop(http);
    jobs_destroy(jobs);
    perf_log_destroy(log);
    kiln_engine_destroy(engine);
    free(history);
    if (rc == CLI_OK)
        fprintf(stderr, "kiln serve: stopped\n");
    return rc;
}
