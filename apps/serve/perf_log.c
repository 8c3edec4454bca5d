/*
 * perf_log.c - what every finished job cost: a history (in memory, and one
 * JSON line per job appended to a file that is read back at start, so it
 * survives restarts), summaries per stage, and the counters and histograms
 * of /metrics.
 *
 * Summaries use the nearest-rank percentile over the ok jobs in the
 * history (at most SERVE_HISTORY_MAX, the newest). Counters are this
 * process's, as Prometheus expects of a counter.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cache_dir.h"
#include "perf/metrics.h"
#include "perf/recorder.h"
#include "serve.h"

/* seconds per UNet step: wide enough for a 64 px test model and SD 1.5 at 1024 px */
static const double step_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define STEP_BUCKETS (sizeof step_bounds / sizeof step_bounds[0])
static const double job_bounds[] = {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800};
#define JOB_BUCKETS (sizeof job_bounds / sizeof job_bounds[0])

typedef struct histogram {
    uint64_t counts[16]; /* cumulative counts are made when printing */
    double sum;
    uint64_t count;
} histogram;

struct perf_log {
    pthread_mutex_t mu;
    char *path;
    perf_record *records; /* oldest first */
    int len;
    uint64_t jobs_total, jobs_failed, jobs_cancelled, jobs_rejected, images_total;
    histogram step_s, job_s;
    int write_warned;
};

static void observe(histogram *h, const double *bounds, size_t n, double value, uint64_t times)
{
    size_t i = 0;
    while (i < n && value > bounds[i])
        i++;
    h->counts[i] += times;
    h->sum += value * (double)times;
    h->count += times;
}

/* ---- records as JSON ---- */

json_t *perf_record_json(const perf_record *r)
{
    json_t *o = json_pack("{s:I, s:f, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "id",
                          (json_int_t)r->id, "finished_at", r->finished_at, "status", r->status, "mode", r->mode,
                          "sampler", r->sampler, "precision", r->precision, "width", r->width, "height", r->height,
                          "steps", r->steps, "images", r->images, "images_asked", r->images_asked, "batch_size",
                          r->batch_size, "batches", r->batches, "threads", r->threads, "unet_evals", r->unet_evals);
    json_object_set_new(o, "timings",
                        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "queued_s", r->queued_s, "load_s",
                                  r->load_s, "text_s", r->text_s, "encode_s", r->encode_s, "denoise_s", r->denoise_s,
                                  "decode_s", r->decode_s, "total_s", r->total_s, "unet_s", r->unet_s));
    json_object_set_new(o, "s_per_step", json_real(r->s_per_step));
    json_object_set_new(o, "images_per_s", json_real(r->images_per_s));
    json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)r->peak_rss_bytes));
    json_object_set_new(o, "job_peak_rss_bytes", json_integer((json_int_t)r->job_peak_rss_bytes));
    json_object_set_new(o, "activation_bytes", json_integer((json_int_t)r->activation_bytes));
    if (strcmp(r->status, "ok") == 0) {
        /* the recorder's operations, so that kiln bench --history
         * summarises the server's jobs with the CLI's runs */
        perf_run_times t = {.total_s = r->total_s, .text_s = r->text_s, .encode_s = r->encode_s,
                            .denoise_s = r->denoise_s, .decode_s = r->decode_s, .unet_s = r->unet_s,
                            .unet_evals = r->unet_evals, .steps_run = r->steps * r->batches, .images = r->images};
        perf_sample s[PERF_RUN_OPS];
        int n = perf_run_samples(&t, s);
        s[0].peak_rss_bytes = r->job_peak_rss_bytes ? r->job_peak_rss_bytes : r->peak_rss_bytes;
        s[0].arena_bytes = r->activation_bytes;
        json_t *ops = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(ops, perf_sample_json(&s[i]));
        json_object_set_new(o, "operations", ops);
        json_object_set_new(o, "source", json_string("kiln serve"));
    }
    return o;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static void str(json_t *o, const char *key, char *dst, size_t size)
{
    json_t *v = json_object_get(o, key);
    snprintf(dst, size, "%s", json_is_string(v) ? json_string_value(v) : "");
}

/* 0, or -1 when the line is not a record */
static int record_from_json(json_t *o, perf_record *r)
{
    json_t *t = json_object_get(o, "timings");
    if (!json_is_object(o) || !json_is_object(t) || !json_is_string(json_object_get(o, "status")))
        return -1;
    memset(r, 0, sizeof *r);
    r->id = (uint64_t)num(o, "id");
    r->finished_at = num(o, "finished_at");
    str(o, "status", r->status, sizeof r->status);
    str(o, "mode", r->mode, sizeof r->mode);
    str(o, "sampler", r->sampler, sizeof r->sampler);
    str(o, "precision", r->precision, sizeof r->precision);
    r->width = (int)num(o, "width");
    r->height = (int)num(o, "height");
    r->steps = (int)num(o, "steps");
    r->images = (int)num(o, "images");
    r->images_asked = (int)num(o, "images_asked");
    r->batch_size = (int)num(o, "batch_size");
    r->batches = (int)num(o, "batches");
    r->threads = (int)num(o, "threads");
    r->unet_evals = (int)num(o, "unet_evals");
    r->queued_s = num(t, "queued_s");
    r->load_s = num(t, "load_s");
    r->text_s = num(t, "text_s");
    r->encode_s = num(t, "encode_s");
    r->denoise_s = num(t, "denoise_s");
    r->decode_s = num(t, "decode_s");
    r->total_s = num(t, "total_s");
    r->unet_s = num(t, "unet_s");
    r->s_per_step = num(o, "s_per_step");
    r->images_per_s = num(o, "images_per_s");
    r->peak_rss_bytes = (uint64_t)num(o, "peak_rss_bytes");
    r->job_peak_rss_bytes = (uint64_t)num(o, "job_peak_rss_bytes");
    r->activation_bytes = (uint64_t)num(o, "activation_bytes");
    return 0;
}

/* ---- the history ---- */

/* mu held (or not yet shared) */
static void remember(perf_log *log, const perf_record *r)
{
    if (log->len == SERVE_HISTORY_MAX) {
        memmove(log->records, log->records + 1, (size_t)(SERVE_HISTORY_MAX - 1) * sizeof *log->records);
        log->len--;
    }
    log->records[log->len++] = *r;
}

static void read_back(perf_log *log)
{
    FILE *f = fopen(log->path, "re");
    if (!f)
        return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        perf_record r;
        if (o && record_from_json(o, &r) == 0)
            remember(log, &r);
        json_decref(o);
    }
    free(line);
    fclose(f);
}

perf_log *perf_log_create(const char *history_path)
{
    perf_log *log = calloc(1, sizeof *log);
    if (!log)
        return NULL;
    log->records = calloc(SERVE_HISTORY_MAX, sizeof *log->records);
    if (!log->records || (history_path && !(log->path = strdup(history_path)))) {
        perf_log_destroy(log);
        return NULL;
    }
    pthread_mutex_init(&log->mu, NULL);
    if (log->path) {
        cache_dir_make_parents(log->path); /* if it fails, so will the append, which says why */
        read_back(log);
    }
    return log;
}

void perf_log_destroy(perf_log *log)
{
    if (!log)
        return;
    if (log->records)
        pthread_mutex_destroy(&log->mu);
    free(log->records);
    free(log->path);
    free(log);
}

const char *perf_log_path(const perf_log *log)
{
    return log->path;
}

void perf_log_add(perf_log *log, const perf_record *r)
{
    json_t *o = perf_record_json(r);
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    pthread_mutex_lock(&log->mu);
    remember(log, r);
    log->jobs_total++;
    log->jobs_failed += strcmp(r->status, "failed") == 0;
    log->jobs_cancelled += strcmp(r->status, "cancelled") == 0;
    log->images_total += (uint64_t)r->images;
    if (r->unet_evals > 0)
        observe(&log->step_s, step_bounds, STEP_BUCKETS, r->s_per_step, (uint64_t)r->unet_evals);
    if (strcmp(r->status, "ok") == 0)
        observe(&log->job_s, job_bounds, JOB_BUCKETS, r->total_s, 1);
    if (log->path && line) {
        size_t n = strlen(line);
        line[n] = '\n'; /* over the terminator: the line is written by its length */
        char msg[512] = "";
        int ok = perf_history_append_line(log->path, line, n + 1, PERF_HISTORY_MAX_BYTES, msg, sizeof msg) == 0;
        line[n] = '\0';
        if ((!ok || msg[0]) && !log->write_warned) {
            log->write_warned = 1;
            fprintf(stderr, "kiln serve: %s%s\n", msg, ok ? "" : " (history is kept in memory only)");
        }
    }
    pthread_mutex_unlock(&log->mu);
    free(line);
}

void perf_log_rejected(perf_log *log)
{
    pthread_mutex_lock(&log->mu);
    log->jobs_rejected++;
    pthread_mutex_unlock(&log->mu);
}

double perf_log_mean_job_s(perf_log *log)
{
    pthread_mutex_lock(&log->mu);
    double sum = 0;
    int n = 0;
    for (int i = log->len - 1; i >= 0 && n < 20; i--)
        if (strcmp(log->records[i].status, "ok") == 0) {
            sum += log->records[i].total_s + log->records[i].load_s;
            n++;
        }
    pthread_mutex_unlock(&log->mu);
    return n ? sum / n : 0.0;
}

json_t *perf_log_history(perf_log *log, int limit)
{
    json_t *jobs = json_array();
    pthread_mutex_lock(&log->mu);
    int from = limit > 0 && limit < log->len ? log->len - limit : 0;
    for (int i = from; i < log->len; i++)
        json_array_append_new(jobs, perf_record_json(&log->records[i]));
    int total = log->len;
    pthread_mutex_unlock(&log->mu);
    return json_pack("{s:o, s:i, s:s?}", "jobs", jobs, "kept", total, "file", log->path);
}

/* ---- summaries ---- */

/* the recorder's statistics (nearest-rank percentiles), as kiln bench
 * --history summarises the CLI's runs */
static json_t *stats(double *v, int n)
{
    perf_stats s;
    perf_stats_compute(v, n, &s);
    return perf_stats_json(&s);
}

json_t *perf_log_summary(perf_log *log)
{
    static const struct {
        const char *name;
        size_t offset;
    } fields[] = {
        {"total_s", offsetof(perf_record, total_s)},       {"text_s", offsetof(perf_record, text_s)},
        {"encode_s", offsetof(perf_record, encode_s)},     {"denoise_s", offsetof(perf_record, denoise_s)},
        {"decode_s", offsetof(perf_record, decode_s)},     {"load_s", offsetof(perf_record, load_s)},
        {"queued_s", offsetof(perf_record, queued_s)},     {"s_per_step", offsetof(perf_record, s_per_step)},
        {"images_per_s", offsetof(perf_record, images_per_s)},
    };
    pthread_mutex_lock(&log->mu);
    double *v = malloc((size_t)(log->len ? log->len : 1) * sizeof *v);
    json_t *stages = json_object();
    int ok = 0, failed = 0, cancelled = 0, images = 0;
    uint64_t peak = 0, job_peak = 0;
    for (int i = 0; i < log->len; i++) {
        const perf_record *r = &log->records[i];
        if (strcmp(r->status, "ok") == 0) {
            ok++;
            images += r->images;
            peak = r->peak_rss_bytes > peak ? r->peak_rss_bytes : peak;
            job_peak = r->job_peak_rss_bytes > job_peak ? r->job_peak_rss_bytes : job_peak;
        } else if (strcmp(r->status, "failed") == 0) {
            failed++;
        } else {
            cancelled++;
        }
    }
    for (size_t f = 0; v && f < sizeof fields / sizeof fields[0]; f++) {
        int n = 0;
        for (int i = 0; i < log->len; i++)
            if (strcmp(log->records[i].status, "ok") == 0)
                memcpy(&v[n++], (const char *)&log->records[i] + fields[f].offset, sizeof *v);
        json_object_set_new(stages, fields[f].name, stats(v, n));
    }
    pthread_mutex_unlock(&log->mu);
    free(v);
    return json_pack("{s:i, s:i, s:i, s:i, s:o, s:I, s:I}", "count", ok, "failed", failed, "cancelled", cancelled,
                     "images", images, "stages", stages, "peak_rss_bytes", (json_int_t)peak,
                     "job_peak_rss_bytes", (json_int_t)job_peak);
}

/* ---- Prometheus ---- */

typedef struct text {
    char *buf;
    size_t len, cap;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (t->buf && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap ? 2 * t->cap : 4096) + (size_t)n;
        char *b = realloc(t->buf, cap);
        if (!b)
            return;
        t->buf = b;
        t->cap = cap;
    }
}

static void put_metric(text *t, const char *name, const char *type, const char *help, double value)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
}

static void put_histogram(text *t, const char *name, const char *help, const histogram *h, const double *bounds,
                          size_t n)
{
    put(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < n; i++) {
        cumulative += h->counts[i];
        put(t, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cumulative);
    }
    put(t, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", name, (unsigned long long)h->count, name,
        h->sum, name, (unsigned long long)h->count);
}

char *perf_log_prometheus(perf_log *log, const serve_gauges *g)
{
    text t = {0};
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    pthread_mutex_lock(&log->mu);
    put_metric(&t, "kiln_jobs_total", "counter", "Generation jobs finished (ok, failed or cancelled).",
               (double)log->jobs_total);
    put_metric(&t, "kiln_jobs_failed_total", "counter", "Generation jobs that failed.", (double)log->jobs_failed);
    put_metric(&t, "kiln_jobs_cancelled_total", "counter", "Generation jobs interrupted or abandoned.",
               (double)log->jobs_cancelled);
    put_metric(&t, "kiln_jobs_rejected_total", "counter", "Requests refused with 503 because the queue was full.",
               (double)log->jobs_rejected);
    put_metric(&t, "kiln_images_total", "counter", "Images generated.", (double)log->images_total);
    put_histogram(&t, "kiln_seconds_per_step", "Seconds per sampler step (one UNet batch evaluation).",
                  &log->step_s, step_bounds, STEP_BUCKETS);
    put_histogram(&t, "kiln_job_seconds", "Seconds per finished job, queueing and model loading excluded.",
                  &log->job_s, job_bounds, JOB_BUCKETS);
    pthread_mutex_unlock(&log->mu);
    put_metric(&t, "kiln_queue_length", "gauge", "Jobs waiting for the worker.", g->queued);
    put_metric(&t, "kiln_queue_capacity", "gauge", "Jobs that may wait before requests get 503.",
               g->queue_capacity);
    put_metric(&t, "kiln_jobs_running", "gauge", "Jobs generating now (0 or 1).", g->running);
    put_metric(&t, "kiln_threads", "gauge", "Worker threads of the engine.", g->threads);
    put_metric(&t, "kiln_peak_memory_bytes", "gauge", "Peak resident memory of the process (getrusage).",
               (double)ru.ru_maxrss * 1024.0);
    put(&t, "# HELP kiln_build_info The kiln version.\n# TYPE kiln_build_info gauge\nkiln_build_info{version=\"%s\"} 1\n",
        kiln_version());
    return t.buf;
}
