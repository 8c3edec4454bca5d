/*
 * jobs.c - the job queue: a bounded FIFO in front of one worker thread.
 *
 * Generation already spreads over every core (the engine's thread pool), so
 * running two jobs at once would only make both slower and need twice the
 * memory: the worker takes one job at a time, in arrival order. A request
 * that finds `capacity` jobs waiting is refused (503) rather than queued
 * without bound. The worker keeps one model per precision, loading the
 * default one at start and the others the first time a job asks for them.
 *
 * Finished jobs stay in a table (the newest SERVE_KEEP_FINISHED of them) so
 * the page can fetch their images by URL after it saw them finish.
 */
#include <errno.h>
#include <fcntl.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "perf/metrics.h"
#include "perf/recorder.h"
#include "pipeline/image_io.h"
#include "../kiln/cli.h"
#include "serve.h"

struct job_queue {
    pthread_mutex_t mu;
    pthread_cond_t changed; /* a job changed state (waiters) */
    pthread_cond_t work;    /* a job arrived or we stop (the worker) */
    pthread_t worker;
    int worker_started;
    job *head, *tail; /* the FIFO of queued jobs */
    int queued, capacity;
    job *running;
    job **table; /* every job still known, oldest first; each holds a reference */
    int table_len, table_cap;
    uint64_t next_id;
    int stopping;

    kiln_engine *engine;
    char *model_path, *tokenizer_dir;
    kiln_model *models[SERVE_PRECISION_COUNT]; /* the worker's, after start */
    int loaded[SERVE_PRECISION_COUNT];         /* under mu */
    kiln_model_info info;                      /* of the default-precision model */
    serve_precision default_precision;
    perf_log *log;
};

static const char *const state_names[JOB_STATE_COUNT] = {"queued", "running", "done", "failed", "cancelled"};

const char *job_state_name(job_state s)
{
    return s >= 0 && s < JOB_STATE_COUNT ? state_names[s] : "?";
}

static int is_finished(const job *j)
{
    return j->state == JOB_DONE || j->state == JOB_FAILED || j->state == JOB_CANCELLED;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void job_free(job *j)
{
    job_params_free(&j->params);
    for (int i = 0; i < j->count; i++) {
        free(j->images[i].png);
        free(j->images[i].parameters);
    }
    free(j->images);
    json_decref(j->metrics);
    free(j);
}

/* mu held */
static void release_locked(job *j)
{
    if (--j->refs == 0)
        job_free(j);
}

void jobs_release(job_queue *q, job *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&q->mu);
    release_locked(j);
    pthread_mutex_unlock(&q->mu);
}

/* ---- memory figures ---- */

/* The process's peak over its life: getrusage, which the per-job reset
 * of VmHWM below leaves alone. */
static uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024u; /* Linux: kilobytes */
}

/* Resets the kernel's high-water mark of resident memory, so that VmHWM
 * after a job is that job's peak (Linux 4.0 and later; 0 if unavailable). */
static int reset_job_peak(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

/* ---- the worker ---- */

typedef struct run_ctx {
    job_queue *q;
    job *j;
} run_ctx;

static int on_progress(void *user, const kiln_progress *p)
{
    run_ctx *c = user;
    pthread_mutex_lock(&c->q->mu);
    c->j->progress = *p;
    int stop = c->j->cancel || c->q->stopping;
    pthread_mutex_unlock(&c->q->mu);
    return stop;
}

static int status_for(kiln_status st)
{
    switch (st) {
    case KILN_ERR_INVALID: return 400;
    case KILN_ERR_UNSUPPORTED: return 422;
    case KILN_ERR_NOMEM: return 507;
    default: return 500;
    }
}

static const serve_sampler *sampler_as_run(const job_queue *q, const job *j)
{
    if (j->params.sampler)
        return j->params.sampler;
    const serve_sampler *s = serve_sampler_find(q->info.default_sampler);
    return s ? s : &serve_samplers[0];
}

static void run_job(job_queue *q, job *j)
{
    const job_params *p = &j->params;
    perf_record rec;
    memset(&rec, 0, sizeof rec);
    rec.id = j->id;
    snprintf(rec.mode, sizeof rec.mode, "%s", p->img2img ? "img2img" : "txt2img");
    snprintf(rec.precision, sizeof rec.precision, "%s", serve_precision_name(p->precision));
    snprintf(rec.sampler, sizeof rec.sampler, "%s", sampler_as_run(q, j)->name);
    rec.images_asked = p->num_images;
    rec.threads = kiln_engine_threads(q->engine);
    rec.queued_s = j->started - j->created_at;
    rec.batch_size = p->batch_size < p->num_images ? p->batch_size : p->num_images;

    job_state state = JOB_FAILED;
    int error_status = 0;
    char error[512] = "";
    job_image *images = NULL;
    int count = 0;
    kiln_result *res = NULL;
    json_t *metrics = NULL;

    kiln_model *m = q->models[p->precision];
    if (!m) {
        double t0 = clock_now();
        kiln_model_options mo;
        kiln_model_options_defaults(&mo);
        mo.tokenizer_dir = q->tokenizer_dir;
        mo.precision = serve_precision_name(p->precision);
        if (kiln_model_load(q->engine, q->model_path, &mo, &m) != KILN_OK) {
            error_status = 500;
            snprintf(error, sizeof error, "loading the model in %s: %s", mo.precision, kiln_last_error());
            goto publish;
        }
        rec.load_s = clock_now() - t0;
        q->models[p->precision] = m;
        pthread_mutex_lock(&q->mu);
        q->loaded[p->precision] = 1;
        pthread_mutex_unlock(&q->mu);
    }

    kiln_request r;
    kiln_request_defaults(&r);
    r.prompt = p->prompt;
    r.negative_prompt = p->negative_prompt;
    r.width = p->width;
    r.height = p->height;
    r.steps = p->steps;
    r.cfg_scale = p->cfg_scale;
    r.sampler = p->sampler ? p->sampler->name : NULL;
    r.seed = p->seed;
    r.rng = p->rng;
    r.num_images = p->num_images;
    r.batch_size = p->batch_size;
    r.optimizations = &p->optimizations;
    r.debug = p->debug;
    if (p->img2img) {
        r.init_rgb = p->init_rgb;
        r.init_width = p->init_width;
        r.init_height = p->init_height;
        r.strength = p->strength;
    }
    run_ctx ctx = {q, j};
    r.on_progress = on_progress;
    r.user = &ctx;
    int have_job_peak = reset_job_peak();
    perf_timer timer;
    perf_timer_start(&timer);
    kiln_status st = kiln_generate(m, &r, &res);
    perf_sample whole;
    perf_timer_stop(&timer, "generate", res ? res->count : 0, "images", 0, &whole);
    if (res) {
        pthread_mutex_lock(&q->mu);
        memcpy(j->report, res->optimization_report, sizeof j->report);
        j->have_report = 1;
        if (res->debug.enabled) {
            j->debug = res->debug;
            j->have_debug = 1;
        }
        pthread_mutex_unlock(&q->mu);
    }
    rec.peak_rss_bytes = peak_rss_bytes();
    rec.job_peak_rss_bytes = have_job_peak ? perf_peak_rss_bytes() : 0; /* VmHWM since the reset */
    if (st != KILN_OK && st != KILN_ERR_CANCELLED) {
        error_status = status_for(st);
        snprintf(error, sizeof error, "%s", kiln_last_error());
        goto publish;
    }

    images = calloc((size_t)(res->count ? res->count : 1), sizeof *images);
    if (!images) {
        error_status = 507;
        snprintf(error, sizeof error, "out of memory keeping the images");
        goto publish;
    }
    for (; count < res->count; count++) {
        const kiln_image *img = &res->images[count];
        job_image *out = &images[count];
        png_text_entry text = {"parameters", img->parameters ? img->parameters : ""};
        if (png_encode_rgb(img->rgb, img->width, img->height, &text, 1, &out->png, &out->png_size) != KILN_OK ||
            !(out->parameters = strdup(text.value))) {
            free(out->png);
            error_status = 500;
            snprintf(error, sizeof error, "encoding image %d: %s", count, kiln_last_error());
            goto publish;
        }
        out->seed = img->seed;
        out->width = img->width;
        out->height = img->height;
    }
    state = st == KILN_OK ? JOB_DONE : JOB_CANCELLED;

    const kiln_timings *t = &res->timings;
    rec.width = res->width;
    rec.height = res->height;
    rec.steps = res->steps;
    rec.images = res->count;
    rec.batches = rec.batch_size ? (res->count + rec.batch_size - 1) / rec.batch_size : 0;
    rec.text_s = t->text_s;
    rec.encode_s = t->encode_s;
    rec.denoise_s = t->denoise_s;
    rec.decode_s = t->decode_s;
    rec.total_s = t->total_s;
    rec.unet_s = t->unet_s;
    rec.unet_evals = t->unet_evals;
    rec.s_per_step = t->unet_evals ? t->denoise_s / t->unet_evals : 0;
    rec.images_per_s = t->total_s > 0 ? res->count / t->total_s : 0;
    rec.activation_bytes = t->activation_bytes;
    metrics = perf_metrics_json(res, rec.threads, whole.cpu_s, rec.peak_rss_bytes);

publish:
    if (state == JOB_FAILED) {
        for (int i = 0; i < count; i++) {
            free(images[i].png);
            free(images[i].parameters);
        }
        free(images);
        images = NULL;
        count = 0;
    }
    rec.finished_at = wall_now();
    snprintf(rec.status, sizeof rec.status, "%s",
             state == JOB_DONE ? "ok" : state == JOB_CANCELLED ? "cancelled" : "failed");
    pthread_mutex_lock(&q->mu);
    j->images = images;
    j->count = count;
    if (res) {
        j->width = res->width;
        j->height = res->height;
        j->steps = res->steps;
        j->cfg_scale = res->cfg_scale;
    }
    j->sampler = sampler_as_run(q, j);
    j->error_status = error_status;
    snprintf(j->error, sizeof j->error, "%s", error);
    j->perf = rec;
    j->metrics = metrics;
    pthread_mutex_unlock(&q->mu);
    kiln_result_destroy(res);
    perf_log_add(q->log, &rec);
    pthread_mutex_lock(&q->mu);
    j->finished = wall_now();
    j->state = state; /* last: from here on the job is read without the lock */
    pthread_mutex_unlock(&q->mu);
}

/* Drops the oldest finished jobs from the table while more than
 * SERVE_KEEP_FINISHED are kept or their images pass SERVE_KEEP_BYTES; the
 * newest finished job always stays. mu held. */
static void prune_locked(job_queue *q)
{
    int finished = 0;
    size_t bytes = 0;
    for (int i = 0; i < q->table_len; i++)
        if (is_finished(q->table[i])) {
            finished++;
            for (int k = 0; k < q->table[i]->count; k++)
                bytes += q->table[i]->images[k].png_size;
        }
    int w = 0;
    for (int i = 0; i < q->table_len; i++) {
        job *j = q->table[i];
        if (finished > 1 && (finished > SERVE_KEEP_FINISHED || bytes > SERVE_KEEP_BYTES) && is_finished(j)) {
            finished--;
            for (int k = 0; k < j->count; k++)
                bytes -= j->images[k].png_size;
            release_locked(j);
        } else {
            q->table[w++] = j;
        }
    }
    q->table_len = w;
}

/* The queue ran dry: give the heap's free pages back to the system. glibc
 * keeps what a job freed in the arena of the thread that allocated it (the
 * worker's, the pool's, each connection's) and trims an arena only from its
 * top, so an idle server would otherwise stay at its busiest size, less
 * whatever happened to sit at the tops. */
static void return_free_memory(void)
{
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

static void *worker_main(void *arg)
{
    job_queue *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->work, &q->mu);
        if (q->stopping)
            break;
        job *j = q->head;
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        j->next = NULL;
        q->queued--;
        j->state = JOB_RUNNING;
        j->started = wall_now();
        q->running = j; /* the FIFO's reference is the worker's now */
        pthread_cond_broadcast(&q->changed);
        pthread_mutex_unlock(&q->mu);

        run_job(q, j);

        pthread_mutex_lock(&q->mu);
        q->running = NULL;
        release_locked(j);
        prune_locked(q);
        pthread_cond_broadcast(&q->changed);
        if (!q->head) {
            pthread_mutex_unlock(&q->mu);
            return_free_memory();
            pthread_mutex_lock(&q->mu);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- the public side ---- */

kiln_status jobs_create(const jobs_config *c, job_queue **out)
{
    job_queue *q = calloc(1, sizeof *q);
    if (!q)
        return KILN_ERR_NOMEM;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->changed, NULL);
    pthread_cond_init(&q->work, NULL);
    q->capacity = c->capacity;
    q->engine = c->engine;
    q->log = c->log;
    q->default_precision = c->default_precision;
    q->next_id = 1;
    q->model_path = strdup(c->model_path);
    q->tokenizer_dir = c->tokenizer_dir ? strdup(c->tokenizer_dir) : NULL;
    kiln_status st = KILN_ERR_NOMEM;
    if (!q->model_path || (c->tokenizer_dir && !q->tokenizer_dir))
        goto fail;
    kiln_model_options mo;
    kiln_model_options_defaults(&mo);
    mo.tokenizer_dir = q->tokenizer_dir;
    mo.precision = serve_precision_name(c->default_precision);
    st = kiln_model_load(q->engine, q->model_path, &mo, &q->models[c->default_precision]);
    if (st != KILN_OK)
        goto fail;
    q->loaded[c->default_precision] = 1;
    kiln_model_get_info(q->models[c->default_precision], &q->info);
    if (pthread_create(&q->worker, NULL, worker_main, q) != 0) {
        st = KILN_ERR_NOMEM;
        goto fail;
    }
    q->worker_started = 1;
    *out = q;
    return KILN_OK;
fail:
    jobs_destroy(q);
    return st;
}

void jobs_shutdown(job_queue *q)
{
    pthread_mutex_lock(&q->mu);
    if (!q->stopping) {
        q->stopping = 1;
        if (q->running)
            q->running->cancel = 1;
        for (job *j = q->head, *next; j; j = next) {
            next = j->next;
            j->next = NULL;
            j->state = JOB_CANCELLED;
            j->error_status = 503;
            snprintf(j->error, sizeof j->error, "the server is shutting down");
            j->finished = wall_now();
            release_locked(j); /* the FIFO's reference */
        }
        q->head = q->tail = NULL;
        q->queued = 0;
        pthread_cond_broadcast(&q->work);
        pthread_cond_broadcast(&q->changed);
    }
    pthread_mutex_unlock(&q->mu);
}

void jobs_destroy(job_queue *q)
{
    if (!q)
        return;
    jobs_shutdown(q);
    if (q->worker_started)
        pthread_join(q->worker, NULL);
    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < q->table_len; i++)
        release_locked(q->table[i]);
    pthread_mutex_unlock(&q->mu);
    free(q->table);
    for (int i = 0; i < SERVE_PRECISION_COUNT; i++)
        kiln_model_destroy(q->models[i]);
    free(q->model_path);
    free(q->tokenizer_dir);
    pthread_cond_destroy(&q->changed);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

submit_result jobs_submit(job_queue *q, job_params *params, job **out, int *ahead)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return SUBMIT_FULL;
    pthread_mutex_lock(&q->mu);
    /* capacity counts the jobs that wait, not the one running */
    int in_flight = q->queued + (q->running != NULL);
    submit_result r = q->stopping ? SUBMIT_STOPPING : in_flight > q->capacity ? SUBMIT_FULL : SUBMIT_OK;
    if (r == SUBMIT_OK && q->table_len == q->table_cap) {
        int cap = q->table_cap ? 2 * q->table_cap : 64;
        job **t = realloc(q->table, (size_t)cap * sizeof *t);
        if (t) {
            q->table = t;
            q->table_cap = cap;
        } else {
            r = SUBMIT_FULL;
        }
    }
    if (r != SUBMIT_OK) {
        pthread_mutex_unlock(&q->mu);
        free(j);
        return r;
    }
    j->id = q->next_id++;
    j->params = *params;
    memset(params, 0, sizeof *params);
    j->created_at = wall_now();
    j->state = JOB_QUEUED;
    j->refs = 3; /* the table, the FIFO, the caller */
    q->table[q->table_len++] = j;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    *ahead = q->queued + (q->running != NULL);
    q->queued++;
    pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->mu);
    *out = j;
    return SUBMIT_OK;
}

job *jobs_find(job_queue *q, uint64_t id)
{
    job *found = NULL;
    pthread_mutex_lock(&q->mu);
    for (int i = 0; i < q->table_len; i++)
        if (q->table[i]->id == id) {
            found = q->table[i];
            found->refs++;
            break;
        }
    pthread_mutex_unlock(&q->mu);
    return found;
}

/* mu held */
static void cancel_locked(job_queue *q, job *j)
{
    if (j->state == JOB_RUNNING) {
        j->cancel = 1;
    } else if (j->state == JOB_QUEUED) {
        job **link = &q->head;
        job *prev = NULL;
        while (*link && *link != j) {
            prev = *link;
            link = &(*link)->next;
        }
        if (*link) {
            *link = j->next;
            if (q->tail == j)
                q->tail = prev;
            j->next = NULL;
            q->queued--;
            /* never ran: what it would have run with, for the answer
             * (a1111_info reads j->sampler; it was NULL here once, and a
             * client that hung up while queued crashed the server) */
            const job_params *p = &j->params;
            j->sampler = sampler_as_run(q, j);
            j->width = p->width ? p->width : q->info.native_resolution;
            j->height = p->height ? p->height : q->info.native_resolution;
            j->steps = p->steps ? p->steps : q->info.default_steps;
            j->cfg_scale = p->cfg_scale >= 0 ? p->cfg_scale : q->info.default_cfg;
            j->state = JOB_CANCELLED;
            j->finished = wall_now();
            j->perf.id = j->id;
            j->perf.finished_at = j->finished;
            j->perf.queued_s = j->finished - j->created_at;
            j->perf.images_asked = j->params.num_images;
            snprintf(j->perf.status, sizeof j->perf.status, "cancelled");
            snprintf(j->perf.mode, sizeof j->perf.mode, "%s", j->params.img2img ? "img2img" : "txt2img");
            perf_log_add(q->log, &j->perf);
            release_locked(j); /* the FIFO's reference */
            pthread_cond_broadcast(&q->changed);
        }
    }
}

void jobs_cancel(job_queue *q, job *j)
{
    pthread_mutex_lock(&q->mu);
    cancel_locked(q, j);
    pthread_mutex_unlock(&q->mu);
}

int jobs_interrupt(job_queue *q)
{
    pthread_mutex_lock(&q->mu);
    int had = q->running != NULL;
    if (had)
        q->running->cancel = 1;
    pthread_mutex_unlock(&q->mu);
    return had;
}

void jobs_wait(job_queue *q, job *j, int (*gone)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&q->mu);
    int left = 0;
    while (!is_finished(j)) {
        if (gone && !left && gone(ctx)) {
            left = 1;
            cancel_locked(q, j);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&q->changed, &q->mu, &until);
    }
    pthread_mutex_unlock(&q->mu);
}

/* ---- views ---- */

/* 0..1 through the job's denoising, batches included. mu held. */
static double fraction_locked(const job *j)
{
    const kiln_progress *p = &j->progress;
    if (is_finished(j))
        return 1.0;
    if (j->state != JOB_RUNNING || p->steps <= 0 || p->images <= 0)
        return 0.0;
    int batch = j->params.batch_size < p->images ? j->params.batch_size : p->images;
    if (batch < 1)
        batch = 1;
    int batches = (p->images + batch - 1) / batch;
    double done = (double)(p->images_done / batch) * p->steps + p->step;
    double f = done / ((double)batches * p->steps);
    return f < 0 ? 0 : f > 1 ? 1 : f;
}

static int ahead_locked(const job_queue *q, const job *j)
{
    int n = q->running != NULL;
    for (const job *k = q->head; k && k != j; k = k->next)
        n++;
    return n;
}

json_t *jobs_job_json(job_queue *q, job *j)
{
    pthread_mutex_lock(&q->mu);
    const job_params *p = &j->params;
    const kiln_progress *pr = &j->progress;
    json_t *o = json_pack("{s:I, s:s, s:f, s:{s:s, s:s, s:i, s:i, s:i, s:f, s:s, s:I, s:i, s:i, s:s, s:s, s:f}}",
                          "id", (json_int_t)j->id, "state", job_state_name(j->state), "created_at", j->created_at,
                          "request", "prompt", p->prompt, "negative_prompt", p->negative_prompt, "width", p->width,
                          "height", p->height, "steps", p->steps, "cfg_scale", (double)p->cfg_scale, "sampler",
                          p->sampler ? p->sampler->name : "", "seed", (json_int_t)p->seed, "images", p->num_images,
                          "batch_size", p->batch_size, "precision", serve_precision_name(p->precision), "mode",
                          p->img2img ? "img2img" : "txt2img", "strength", (double)p->strength);
    if (j->state == JOB_QUEUED)
        json_object_set_new(o, "ahead", json_integer(ahead_locked(q, j)));
    if (j->have_report)
        json_object_set_new(o, "optimizations", cli_report_json(j->report));
    if (j->have_debug)
        json_object_set_new(o, "debug", cli_debug_json(&j->debug));
    json_object_set_new(o, "progress",
                        json_pack("{s:f, s:i, s:i, s:i, s:i, s:s, s:f, s:f}", "fraction", fraction_locked(j), "step",
                                  pr->step, "steps", pr->steps, "images_done", pr->images_done, "images",
                                  pr->images ? pr->images : p->num_images, "stage",
                                  j->state == JOB_RUNNING ? (pr->stage ? pr->stage : "starting") : "",
                                  "elapsed_s", j->state == JOB_RUNNING ? wall_now() - j->started : pr->elapsed_s,
                                  "eta_s", pr->eta_s));
    if (is_finished(j)) {
        json_t *images = json_array();
        for (int i = 0; i < j->count; i++) {
            char url[96];
            snprintf(url, sizeof url, "/api/v1/jobs/%llu/images/%d.png", (unsigned long long)j->id, i);
            json_array_append_new(images, json_pack("{s:s, s:I, s:i, s:i, s:s, s:I}", "url", url, "seed",
                                                    (json_int_t)j->images[i].seed, "width", j->images[i].width,
                                                    "height", j->images[i].height, "parameters",
                                                    j->images[i].parameters, "png_bytes",
                                                    (json_int_t)j->images[i].png_size));
        }
        json_object_set_new(o, "images", images);
        json_object_set_new(o, "perf", perf_record_json(&j->perf));
        if (j->metrics)
            json_object_set(o, "metrics", j->metrics);
        json_object_set_new(o, "finished_at", json_real(j->finished));
        if (j->error[0])
            json_object_set_new(o, "error", json_string(j->error));
    }
    pthread_mutex_unlock(&q->mu);
    return o;
}

int jobs_image_copy(job_queue *q, job *j, int index, void **png, size_t *size, uint64_t *seed)
{
    int rc = 1;
    pthread_mutex_lock(&q->mu);
    if (is_finished(j) && index >= 0 && index < j->count) {
        *png = malloc(j->images[index].png_size);
        rc = *png ? 0 : -1;
        if (*png) {
            memcpy(*png, j->images[index].png, j->images[index].png_size);
            *size = j->images[index].png_size;
            *seed = j->images[index].seed;
        }
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

json_t *jobs_progress_json(job_queue *q)
{
    pthread_mutex_lock(&q->mu);
    const job *j = q->running;
    double fraction = 0, eta = 0;
    int step = 0, steps = 0, interrupted = 0;
    char name[32] = "", stamp[32] = "";
    if (j) {
        fraction = fraction_locked(j);
        eta = j->progress.eta_s;
        step = j->progress.step;
        steps = j->progress.steps;
        interrupted = j->cancel;
        snprintf(name, sizeof name, "job %llu", (unsigned long long)j->id);
        time_t t = (time_t)j->started;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    }
    json_t *o = json_pack("{s:f, s:f, s:{s:b, s:b, s:b, s:s, s:i, s:s, s:i, s:i, s:i}, s:n, s:n, s:{s:i, s:b}}",
                          "progress", fraction, "eta_relative", eta, "state", "skipped", 0, "interrupted",
                          interrupted, "stopping_generation", q->stopping, "job", name, "job_count",
                          q->queued + (j != NULL), "job_timestamp", stamp, "job_no", 0, "sampling_step", step,
                          "sampling_steps", steps, "current_image", "textinfo", "kiln", "queued", q->queued,
                          "running", j != NULL);
    if (j) {
        json_object_set_new(json_object_get(o, "kiln"), "images_done", json_integer(j->progress.images_done));
        json_object_set_new(json_object_get(o, "kiln"), "images", json_integer(j->params.num_images));
    }
    pthread_mutex_unlock(&q->mu);
    return o;
}

void jobs_gauges(job_queue *q, serve_gauges *g)
{
    pthread_mutex_lock(&q->mu);
    g->queued = q->queued;
    g->running = q->running != NULL;
    g->queue_capacity = q->capacity;
    g->threads = kiln_engine_threads(q->engine);
    pthread_mutex_unlock(&q->mu);
}

void jobs_model_info(job_queue *q, kiln_model_info *info, int loaded[SERVE_PRECISION_COUNT])
{
    pthread_mutex_lock(&q->mu);
    *info = q->info;
    for (int i = 0; i < SERVE_PRECISION_COUNT; i++)
        loaded[i] = q->loaded[i];
    pthread_mutex_unlock(&q->mu);
}
