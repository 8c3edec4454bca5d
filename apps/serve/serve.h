/*
 * serve.h - `kiln serve`: the web page and the HTTP API, and the pieces
 * they are made of.
 *
 *   cmd_serve.c  options, start-up, signals, shutdown
 *   http.c       libmicrohttpd glue: bodies (capped), auth, routing, replies
 *   api.c        the routes: AUTOMATIC1111's /sdapi/v1, kiln's /api/v1, the page
 *   request.c    a JSON generation request -> job_params, with refusals that
 *                name the field and its allowed values
 *   jobs.c       the job queue: one worker, a bounded FIFO, models per precision
 *   perf_log.c   every finished job's numbers: history (kept across restarts
 *                in a JSON-lines file), summaries, Prometheus metrics
 *   base64.c     base64 in and out (images travel as base64 PNG)
 *
 * Threads: libmicrohttpd runs one thread per connection; those threads only
 * parse, queue and wait. One worker thread runs the jobs, one at a time,
 * because generation uses every core already. Everything shared sits behind
 * the job queue's mutex or the perf log's.
 */
#ifndef KILN_APPS_SERVE_H
#define KILN_APPS_SERVE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define SERVE_MAX_BODY (32u * 1024u * 1024u) /* request bodies larger than this get 413 */
#define SERVE_KEEP_FINISHED 32               /* finished jobs whose images stay fetchable */
#define SERVE_KEEP_BYTES (256u << 20)        /* ... and at most this much of their PNGs */
#define SERVE_HISTORY_MAX 1000               /* jobs kept in the perf history */

/* ---- precisions the server can load a model in ---- */

typedef enum serve_precision { SERVE_F32, SERVE_F16, SERVE_BF16, SERVE_PRECISION_COUNT } serve_precision;

const char *serve_precision_name(serve_precision p);
/* 0 and *out for "f32" / "f16" / "bf16", else -1. */
int serve_precision_parse(const char *name, serve_precision *out);

/* ---- samplers, as the API lists them ---- */

typedef struct serve_sampler {
    const char *name;       /* kiln's name: "euler_a" */
    const char *a1111_name; /* AUTOMATIC1111's: "Euler a" */
} serve_sampler;

extern const serve_sampler serve_samplers[];
extern const int serve_sampler_count;
/* The entry for any name kiln accepts (kiln's, A1111's, other aliases), or NULL. */
const serve_sampler *serve_sampler_find(const char *name);

/* ---- a generation request, parsed ---- */

typedef struct job_params {
    char *prompt, *negative_prompt;
    const serve_sampler *sampler; /* NULL: the model's default */
    const char *rng;              /* static: "torch-cpu" or "philox" */
    int width, height, steps;     /* 0: the model's default */
    float cfg_scale;              /* < 0: the model's default */
    uint64_t seed;                /* resolved: never random here */
    int num_images, batch_size;   /* A1111: batch_size * n_iter images, batch_size per UNet batch */
    int n_iter;
    serve_precision precision;
    /* the optimization switches (kiln's own fields: attention, attention_tile,
     * layout, fusion, winograd, memory, fast_math, threads, vae_tiling, vae_tile);
     * .precision follows precision */
    kiln_optimizations optimizations;
    int img2img;
    uint8_t *init_rgb; /* img2img: owned */
    int init_width, init_height;
    float strength;
    int send_images;    /* A1111 send_images: put the images in the answer */
    int debug;          /* kiln's own: debug mode (kiln_request.debug) */
    json_t *parameters; /* the request as given (init_images dropped), for the answer; owned */
    int tuned;          /* "tuned": 1 or 0; -1 not given (kiln serve --tuned decides) */
} job_params;

void job_params_free(job_params *p);

/* An error for the client: the HTTP status, a short kind ("invalid_field"),
 * the field at fault (or NULL), a message, and the allowed values (or NULL). */
typedef struct api_error {
    int status;
    const char *kind;
    char field[64];
    char detail[512];
    json_t *allowed; /* owned */
} api_error;

/* Parses a txt2img (img2img = 0) or img2img request body into *out.
 * default_precision fills a missing "precision". Returns 0, or -1 with
 * *err filled (out untouched). */
int request_parse(const char *body, size_t len, int img2img, serve_precision default_precision, job_params *out,
                  api_error *err);

/* ---- base64 ---- */

/* malloc'd, NUL-terminated; NULL when out of memory. */
char *base64_encode(const uint8_t *data, size_t len);
/* Decodes standard base64 (padding optional, whitespace ignored); malloc'd.
 * Returns 0, or -1 for a character outside the alphabet or a bad length. */
int base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

/* ---- the perf log ---- */

typedef struct perf_record {
    uint64_t id;
    double finished_at; /* unix seconds */
    char status[12];    /* "ok", "cancelled", "failed" */
    char mode[8];       /* "txt2img", "img2img" */
    char sampler[24];
    char precision[8];
    int width, height, steps, images, images_asked, batch_size, batches, threads, unet_evals;
    double queued_s, load_s, text_s, encode_s, denoise_s, decode_s, total_s, unet_s;
    double s_per_step, images_per_s;
    uint64_t peak_rss_bytes;     /* the process's peak so far (getrusage) */
    uint64_t job_peak_rss_bytes; /* the peak during this job (Linux VmHWM after a reset), 0 if unknown */
    uint64_t activation_bytes;
} perf_record;

typedef struct perf_log perf_log;

/* history_path: the JSON-lines file to read back and append to, or NULL for
 * none. Lines that do not parse are skipped. NULL when out of memory. */
perf_log *perf_log_create(const char *history_path);
void perf_log_destroy(perf_log *log);
const char *perf_log_path(const perf_log *log);

/* Records a finished job (memory, file, counters). Thread-safe. */
void perf_log_add(perf_log *log, const perf_record *r);
/* Counts a request refused because the queue was full. Thread-safe. */
void perf_log_rejected(perf_log *log);
/* The mean seconds of recent ok jobs, or 0 when none (for Retry-After). */
double perf_log_mean_job_s(perf_log *log);

json_t *perf_record_json(const perf_record *r);
/* The last `limit` records, newest last. */
json_t *perf_log_history(perf_log *log, int limit);
/* count/mean/min/max/p50/p95 per stage over the ok jobs in the history. */
json_t *perf_log_summary(perf_log *log);

typedef struct serve_gauges {
    int queued, running, queue_capacity, threads;
} serve_gauges;

/* The Prometheus text exposition (malloc'd). */
char *perf_log_prometheus(perf_log *log, const serve_gauges *g);

/* ---- the job queue ---- */

typedef enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED, JOB_STATE_COUNT } job_state;

const char *job_state_name(job_state s);

typedef struct job_image {
    uint8_t *png;
    size_t png_size;
    uint64_t seed;
    int width, height;
    char *parameters; /* the A1111 infotext */
} job_image;

/* A job. Fields set at submission are constant; the rest is written by the
 * worker under the queue's mutex, and is constant once the state is
 * terminal (DONE, FAILED, CANCELLED): readers that saw that state may read
 * it without the lock. */
typedef struct job {
    uint64_t id;
    job_params params;
    double created_at; /* unix seconds */
    int refs;          /* the queue's table + each holder; under the mutex */
    job_state state;
    int cancel;
    kiln_progress progress; /* latest; .stage points at a static string */
    double started, finished;
    /* results */
    int count;
    job_image *images;
    int width, height, steps;
    float cfg_scale;
    const serve_sampler *sampler; /* as run */
    int have_report;              /* the job ran: report holds what its switches did */
    kiln_opt_report report[KILN_OPT_COUNT];
    int have_debug;               /* the job ran in debug mode: debug holds its report */
    kiln_debug_report debug;
    perf_record perf;
    json_t *metrics;  /* the run's metrics (perf_metrics_json: op profile, step times, ...); owned; NULL if it failed */
    int error_status; /* FAILED: the HTTP status to answer with */
    char error[512];
    struct job *next; /* the FIFO */
} job;

typedef struct job_queue job_queue;

typedef struct jobs_config {
    kiln_engine *engine;
    const char *model_path, *tokenizer_dir;
    serve_precision default_precision;
    int capacity; /* jobs that may wait besides the running one */
    perf_log *log;
} jobs_config;

/* Loads the model in the default precision now (so a bad path fails at
 * start) and starts the worker. Returns KILN_OK or the load's error. */
kiln_status jobs_create(const jobs_config *c, job_queue **out);
/* Cancels the running job, fails the queued ones (503, shutting down),
 * waits for the worker, and frees everything. */
void jobs_destroy(job_queue *q);
/* Stops taking jobs, cancels the running one and fails the queued ones; the
 * worker exits. Waiters are woken. Idempotent. */
void jobs_shutdown(job_queue *q);

typedef enum submit_result { SUBMIT_OK, SUBMIT_FULL, SUBMIT_STOPPING } submit_result;

/* Queues a job made of *params (taken over on SUBMIT_OK; left to the caller
 * otherwise). On SUBMIT_OK *out is a reference the caller releases and
 * *ahead the number of jobs before it. */
submit_result jobs_submit(job_queue *q, job_params *params, job **out, int *ahead);
/* A reference to the job with this id, or NULL. */
job *jobs_find(job_queue *q, uint64_t id);
void jobs_release(job_queue *q, job *j);
/* Waits until j is finished. gone(ctx) is asked a few times a second; when
 * it says the client left, j is cancelled (and the wait still ends when j
 * does). */
void jobs_wait(job_queue *q, job *j, int (*gone)(void *ctx), void *ctx);
/* Cancels j: a queued job is dropped, a running one stops after its step. */
void jobs_cancel(job_queue *q, job *j);
/* Cancels the running job; 1 if there was one. */
int jobs_interrupt(job_queue *q);

/* The job as the page sees it: state, place in the queue, progress, and
 * when finished the image URLs, parameters and perf numbers. */
json_t *jobs_job_json(job_queue *q, job *j);
/* A malloc'd copy of image `index` of a finished job: 0, 1 when there is
 * no such image (yet), -1 when out of memory. */
int jobs_image_copy(job_queue *q, job *j, int index, void **png, size_t *size, uint64_t *seed);
/* A1111's /sdapi/v1/progress answer. */
json_t *jobs_progress_json(job_queue *q);
void jobs_gauges(job_queue *q, serve_gauges *g);
/* Model facts for /api/v1/info and /sdapi/v1/sd-models. */
void jobs_model_info(job_queue *q, kiln_model_info *info, int loaded[SERVE_PRECISION_COUNT]);

/* ---- the HTTP server ---- */

typedef struct serve_config {
    const char *host;
    int port;           /* 0: any free port */
    const char *api_key; /* NULL: no auth */
    job_queue *jobs;
    perf_log *log;
    kiln_engine *engine;
    serve_precision default_precision;
    int queue_capacity;
    int tuned;                 /* kiln serve --tuned: requests that do not say take the tuned settings */
    const char *tokenizer_dir; /* for the tuner it starts; NULL: beside the model */
} serve_config;

typedef struct http_server http_server;

/* Starts listening. Returns NULL (and prints why) when it cannot bind. */
http_server *http_start(const serve_config *c);
int http_port(const http_server *s);
/* Stops accepting connections and waits up to timeout_s for the requests
 * under way to be answered. */
void http_drain(http_server *s, double timeout_s);
/* Closes every connection and frees. */
void http_stop(http_server *s);

/* A reply a route fills in. */
typedef struct http_reply {
    int status;
    json_t *json;             /* owned; sent as application/json */
    const void *data;         /* or these bytes */
    size_t size;
    int data_owned;           /* free(data) after sending */
    const char *content_type; /* for data */
    char retry_after[16];     /* Retry-After header, if set */
    char disposition[128];    /* Content-Disposition header, if set */
    int cacheable;            /* static assets */
} http_reply;

typedef struct http_request {
    const char *method, *path;
    const char *query_limit; /* ?limit= of the query string, or NULL */
    const char *body;
    size_t body_len;
    int (*client_gone)(void *ctx);
    void *gone_ctx;
    const serve_config *config;
} http_request;

/* Fills reply with a JSON error body {"error", "field", "detail", "allowed"}. */
void reply_error(http_reply *reply, int status, const char *kind, const char *field, json_t *allowed,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void reply_api_error(http_reply *reply, api_error *err);
void reply_json(http_reply *reply, int status, json_t *json);

/* The routes (api.c). api_route finds the one for a method and path, or
 * NULL, with *method_ok set when the path exists for another method (405
 * rather than 404). The HTTP side checks the API key where
 * api_route_needs_auth says so, then api_run fills the reply. */
typedef struct route route;
const route *api_route(const char *method, const char *path, int *method_ok);
int api_route_needs_auth(const route *r);
void api_run(const route *r, const http_request *req, http_reply *reply);

/* ---- the embedded web page (generated at build time) ---- */

typedef struct web_asset {
    const char *path; /* "/index.html" */
    const unsigned char *data;
    size_t size;
} web_asset;

extern const web_asset web_assets[];
extern const size_t web_asset_count;

/* ---- the auto-tuner (tune.c) ---- */

/* When p asks for "tuned" (or says nothing and c->tuned): the settings kiln
 * tune stored for this CPU, the loaded model and p's size replace the
 * switches, precision and batch size that p does not give; threads stay
 * the engine's. Without a usable entry p is left as it is and the reason
 * goes to stderr. */
void serve_tuned_apply(const serve_config *c, job_params *p);

/* GET /api/v1/tune: the stored entry for the loaded model at its native
 * size, or 404 "not_tuned" saying why not (500 "corrupt_cache"). */
void serve_tune_get(const http_request *req, http_reply *reply);

/* POST /api/v1/tune: runs `kiln tune --json` for the loaded model (body:
 * width, height, target, steps, runs, max_batch, precision, threads,
 * max_memory, timeout_s; all optional) and answers with its table; the
 * best is stored in the cache. One at a time (409 "busy"); 504 "timeout"
 * after timeout_s (default 600). */
void serve_tune_post(const http_request *req, http_reply *reply);

#endif
