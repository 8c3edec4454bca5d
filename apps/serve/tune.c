/*
 * tune.c - the server's side of the auto-tuner: requests that ask for
 * "tuned" (or every request under kiln serve --tuned) take the settings
 * kiln tune stored for this CPU, model and size; GET /api/v1/tune shows
 * the stored entry; POST /api/v1/tune runs `kiln tune --json` on this
 * binary and answers with its table.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kiln/cli.h"
#include "perf/tuning.h"
#include "serve.h"

extern char **environ;

#define TUNE_DEFAULT_TIMEOUT_S 600
#define TUNE_MAX_TIMEOUT_S 3600

/* The lookup for the loaded model at width x height (0: native): 0 and
 * *entry on a match; otherwise -1 with why in msg (and *corrupt set when
 * the cache file is broken). */
static int lookup(const serve_config *c, int width, int height, kiln_tuning *key, kiln_tuning *entry,
                  char *cache_path, size_t path_size, char *msg, size_t msg_size, int *corrupt)
{
    kiln_model_info m;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(c->jobs, &m, loaded);
    *corrupt = 0;
    if (kiln_tuning_cache_path(cache_path, path_size) != KILN_OK ||
        kiln_tuning_key(m.path, width ? width : m.native_resolution, height ? height : m.native_resolution,
                        key) != KILN_OK) {
        snprintf(msg, msg_size, "%s", kiln_last_error());
        return -1;
    }
    kiln_tuning_match match;
    if (kiln_tuning_lookup(cache_path, key, entry, &match) != KILN_OK) {
        *corrupt = 1;
        snprintf(msg, msg_size, "%s; using the defaults (kiln tune rewrites it)", kiln_last_error());
        return -1;
    }
    tuning_explain(match, key, entry, cache_path, msg, msg_size);
    return match == KILN_TUNING_FOUND ? 0 : -1;
}

void serve_tuned_apply(const serve_config *c, job_params *p)
{
    if (!(p->tuned > 0 || (p->tuned < 0 && c->tuned)))
        return;
    kiln_tuning key, entry;
    char path[4096], msg[2048];
    int corrupt;
    if (lookup(c, p->width, p->height, &key, &entry, path, sizeof path, msg, sizeof msg, &corrupt) != 0) {
        fprintf(stderr, "kiln serve: %s%s\n", corrupt ? "warning: " : "", msg);
        return;
    }
    /* what the request says wins; threads stay the engine's */
    json_t *asked = p->parameters;
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        const char *name = kiln_opt_name((kiln_opt)k);
        if (k == KILN_OPT_THREADS || k == KILN_OPT_PRECISION || json_object_get(asked, name))
            continue;
        char v[32];
        kiln_optimizations_get(&entry.optimizations, (kiln_opt)k, v, sizeof v);
        kiln_optimizations_set(&p->optimizations, name, v);
    }
    if (!json_object_get(asked, "precision")) {
        p->precision = (serve_precision)entry.optimizations.precision;
        p->optimizations.precision = entry.optimizations.precision;
    }
    if (!json_object_get(asked, "batch_size") && !json_object_get(asked, "n_iter")) {
        int b = entry.batch_size < p->num_images ? entry.batch_size : p->num_images;
        p->batch_size = b;
        p->n_iter = (p->num_images + b - 1) / b;
    }
}

static json_t *entry_json(const kiln_tuning *t)
{
    json_t *opts = json_object();
    for (int k = 0; k < KILN_OPT_COUNT; k++) {
        char v[32];
        kiln_optimizations_get(&t->optimizations, (kiln_opt)k, v, sizeof v);
        json_object_set_new(opts, kiln_opt_name((kiln_opt)k), json_string(v));
    }
    char res[32];
    snprintf(res, sizeof res, "%dx%d", t->width, t->height);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:o, s:f, s:I, s:s}", "cpu", t->cpu, "isa", t->isa,
                     "model_hash", t->model_hash, "model_path", t->model_path, "resolution", res, "width", t->width,
                     "height", t->height, "batch_size", t->batch_size, "optimizations", opts, "images_per_s",
                     t->images_per_s, "measured_at_unix", (json_int_t)t->measured_at, "kiln_version",
                     t->kiln_version);
}

void serve_tune_get(const http_request *req, http_reply *reply)
{
    kiln_tuning key, entry;
    char path[4096], msg[2048];
    int corrupt;
    if (lookup(req->config, 0, 0, &key, &entry, path, sizeof path, msg, sizeof msg, &corrupt) != 0) {
        if (corrupt)
            reply_error(reply, 500, "corrupt_cache", NULL, NULL, "%s", msg);
        else
            reply_error(reply, 404, "not_tuned", NULL, NULL, "%s", msg);
        return;
    }
    reply_json(reply, 200, json_pack("{s:s, s:s, s:o}", "cache", path, "message", msg, "entry", entry_json(&entry)));
}

/* One tuner at a time: two would measure each other. */
static pthread_mutex_t tune_lock = PTHREAD_MUTEX_INITIALIZER;

static int add_arg(char **argv, int *n, const char *flag, json_t *body, const char *name, char *buf, size_t size,
                   api_error *err)
{
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v))
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, size, "%.17g", json_real_value(v));
    else if (json_is_string(v))
        snprintf(buf, size, "%.60s", json_string_value(v));
    else if (json_is_array(v)) {
        buf[0] = '\0';
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (json_is_string(e))
                snprintf(buf + strlen(buf), size - strlen(buf), "%s%.16s", i ? "," : "", json_string_value(e));
            else if (json_is_integer(e))
                snprintf(buf + strlen(buf), size - strlen(buf), "%s%lld", i ? "," : "", (long long)json_integer_value(e));
        }
    } else {
        err->status = 400;
        err->kind = "invalid_field";
        snprintf(err->field, sizeof err->field, "%s", name);
        snprintf(err->detail, sizeof err->detail, "%s must be a number, a string or a list", name);
        return -1;
    }
    argv[(*n)++] = (char *)flag;
    argv[(*n)++] = buf;
    return 0;
}

static char *read_all(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    lseek(fd, 0, SEEK_SET);
    for (;;) {
        if (!buf)
            return NULL;
        if (len + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown) {
                free(buf);
                return NULL;
            }
            buf = grown;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

void serve_tune_post(const http_request *req, http_reply *reply)
{
    const serve_config *c = req->config;
    json_t *body = NULL;
    if (req->body_len) {
        json_error_t jerr;
        body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            reply_error(reply, 400, "malformed_json", NULL, NULL, "the body must be a JSON object (or empty)");
            return;
        }
    } else {
        body = json_object();
    }
    int timeout = TUNE_DEFAULT_TIMEOUT_S;
    json_t *t = json_object_get(body, "timeout_s");
    if (t && !json_is_null(t)) {
        if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > TUNE_MAX_TIMEOUT_S) {
            json_decref(body);
            reply_error(reply, 400, "invalid_field", "timeout_s", json_pack("{s:i, s:i}", "min", 1, "max",
                                                                            TUNE_MAX_TIMEOUT_S),
                        "timeout_s must be an integer from 1 to %d", TUNE_MAX_TIMEOUT_S);
            return;
        }
        timeout = (int)json_integer_value(t);
    }
    kiln_model_info m;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(c->jobs, &m, loaded);

    char *argv[40];
    int n = 0;
    char bufs[10][256];
    argv[n++] = "kiln";
    argv[n++] = "tune";
    argv[n++] = "--json";
    argv[n++] = "-m";
    argv[n++] = (char *)m.path;
    if (c->tokenizer_dir) {
        argv[n++] = "--tokenizer";
        argv[n++] = (char *)c->tokenizer_dir;
    }
    static const char *const fields[][2] = {{"-W", "width"},          {"-H", "height"},
                                            {"--target", "target"},   {"--steps", "steps"},
                                            {"--runs", "runs"},       {"--max-batch", "max_batch"},
                                            {"--precision", "precision"}, {"--threads", "threads"},
                                            {"--max-memory", "max_memory"}};
    api_error err;
    memset(&err, 0, sizeof err);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (add_arg(argv, &n, fields[i][0], body, fields[i][1], bufs[i], sizeof bufs[i], &err) != 0) {
            json_decref(body);
            reply_api_error(reply, &err);
            return;
        }
    argv[n] = NULL;
    json_decref(body);

    if (pthread_mutex_trylock(&tune_lock) != 0) {
        reply_error(reply, 409, "busy", NULL, NULL, "a tuning run is in progress; try again when it ends");
        return;
    }
    char out_path[] = "/tmp/kiln-tune-out-XXXXXX", err_path[] = "/tmp/kiln-tune-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
    pid_t pid = -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int spawned = -1;
    if (out_fd >= 0 && err_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO);
        /* the server blocks its stop signals in every thread: not the tuner */
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t none;
        sigemptyset(&none);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
        spawned = posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
    }
    posix_spawn_file_actions_destroy(&fa);
    if (spawned != 0) {
        reply_error(reply, 500, "tune_failed", NULL, NULL, "cannot start the tuner: %s",
                    strerror(spawned > 0 ? spawned : errno));
        goto done;
    }
    int status = 0, finished = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            finished = 1;
            break;
        }
        if (w < 0 && errno != EINTR)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= timeout)
            break;
        struct timespec nap = {0, 50 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    if (!finished) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        reply_error(reply, 504, "timeout", "timeout_s", json_pack("{s:i}", "timeout_s", timeout),
                    "the tuner did not finish in %d s and was stopped; nothing was stored (ask for fewer "
                    "candidates: precision, threads, max_batch, steps, runs, or a target)", timeout);
        goto done;
    }
    char *text = read_all(out_fd), *log = read_all(err_fd);
    json_error_t jerr;
    json_t *table = text ? json_loads(text, 0, &jerr) : NULL;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && table) {
        reply_json(reply, 200, table);
    } else {
        json_decref(table);
        const char *tail = log ? log : "";
        size_t len = strlen(tail);
        if (len > 400)
            tail += len - 400;
        reply_error(reply, WIFEXITED(status) && WEXITSTATUS(status) == CLI_USAGE ? 400 : 500, "tune_failed", NULL,
                    NULL, "kiln tune failed (exit %d): %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1, tail);
    }
    free(text);
    free(log);
done:
    if (out_fd >= 0)
        close(out_fd), unlink(out_path);
    if (err_fd >= 0)
        close(err_fd), unlink(err_path);
    pthread_mutex_unlock(&tune_lock);
}
