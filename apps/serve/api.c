/*
 * api.c - the routes: AUTOMATIC1111's /sdapi/v1 (synchronous generation,
 * progress, interrupt, samplers, models), kiln's /api/v1 (asynchronous jobs
 * for the page, perf history and summaries, the tuner's placeholder),
 * /healthz, /metrics, and the page itself.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../kiln/cli.h"
#include "serve.h"

typedef void (*route_fn)(const http_request *req, http_reply *reply);

struct route {
    const char *method, *path;
    route_fn run;
    int prefix;     /* path is a prefix: the route reads the rest */
    int open;       /* needs no API key: the page and the health check */
};

/* ---- the page ---- */

static const web_asset *find_asset(const char *path)
{
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (size_t i = 0; i < web_asset_count; i++)
        if (strcmp(web_assets[i].path, path) == 0)
            return &web_assets[i];
    return NULL;
}

static const char *content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot)
        return "application/octet-stream";
    if (!strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js"))
        return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css"))
        return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg"))
        return "image/svg+xml";
    if (!strcmp(dot, ".png"))
        return "image/png";
    return "application/octet-stream";
}

static void h_asset(const http_request *req, http_reply *reply)
{
    const web_asset *a = find_asset(req->path);
    reply->status = 200;
    reply->data = a->data;
    reply->size = a->size;
    reply->content_type = content_type(a->path);
}

/* ---- helpers ---- */

static const char *a1111_field(const char *kiln_field)
{
    static const char *const map[][2] = {
        {"num_images", "n_iter"}, {"strength", "denoising_strength"}, {"init", "init_images"},
        {"sampler", "sampler_name"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(kiln_field, map[i][0]) == 0)
            return map[i][1];
    return kiln_field;
}

/* A failed job's answer. The library's refusals start with the field. */
static void reply_job_error(http_reply *reply, const job *j)
{
    char field[64] = "";
    if (j->error_status == 400) {
        size_t n = strspn(j->error, "abcdefghijklmnopqrstuvwxyz_");
        if (n > 0 && n < sizeof field) {
            memcpy(field, j->error, n);
            field[n] = '\0';
        }
    }
    const char *kind = j->error_status == 400   ? "invalid_field"
                       : j->error_status == 503 ? "shutting_down"
                                                : "generation_failed";
    reply_error(reply, j->error_status ? j->error_status : 500, kind, field[0] ? a1111_field(field) : NULL, NULL,
                "%s", j->error[0] ? j->error : "generation failed");
}

static void reply_busy(const http_request *req, http_reply *reply, submit_result r)
{
    const serve_config *c = req->config;
    if (r == SUBMIT_STOPPING) {
        reply_error(reply, 503, "shutting_down", NULL, NULL, "the server is shutting down");
        return;
    }
    perf_log_rejected(c->log);
    serve_gauges g;
    jobs_gauges(c->jobs, &g);
    double wait = perf_log_mean_job_s(c->log) * (g.queued + g.running);
    int secs = wait < 1 ? 1 : wait > 3600 ? 3600 : (int)ceil(wait);
    snprintf(reply->retry_after, sizeof reply->retry_after, "%d", secs);
    reply_error(reply, 503, "queue_full", NULL, json_pack("{s:i}", "queue", c->queue_capacity),
                "%d jobs are waiting, the most this server queues (kiln serve --queue); retry in about %d s",
                g.queued, secs);
}

/* "/api/v1/jobs/12/images/0.png" -> 12, and what follows it */
static int parse_job_path(const char *path, uint64_t *id, const char **rest)
{
    const char *p = path + strlen("/api/v1/jobs/");
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || (*end && *end != '/'))
        return -1;
    *id = v;
    *rest = end;
    return 0;
}

/* ---- A1111: generation ---- */

static json_t *a1111_info(const job *j, const kiln_model_info *model)
{
    const job_params *p = &j->params;
    json_t *seeds = json_array(), *subseeds = json_array(), *prompts = json_array(), *negatives = json_array(),
           *infotexts = json_array();
    for (int i = 0; i < j->count; i++) {
        json_array_append_new(seeds, json_integer((json_int_t)j->images[i].seed));
        json_array_append_new(subseeds, json_integer(-1));
        json_array_append_new(prompts, json_string(p->prompt));
        json_array_append_new(negatives, json_string(p->negative_prompt));
        json_array_append_new(infotexts, json_string(j->images[i].parameters));
    }
    char stamp[32];
    time_t t = (time_t)j->started;
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    json_t *o = json_object();
    json_object_set_new(o, "prompt", json_string(p->prompt));
    json_object_set_new(o, "all_prompts", prompts);
    json_object_set_new(o, "negative_prompt", json_string(p->negative_prompt));
    json_object_set_new(o, "all_negative_prompts", negatives);
    json_object_set_new(o, "seed", json_integer((json_int_t)p->seed));
    json_object_set_new(o, "all_seeds", seeds);
    json_object_set_new(o, "subseed", json_integer(-1));
    json_object_set_new(o, "all_subseeds", subseeds);
    json_object_set_new(o, "subseed_strength", json_integer(0));
    json_object_set_new(o, "width", json_integer(j->width));
    json_object_set_new(o, "height", json_integer(j->height));
    json_object_set_new(o, "sampler_name", json_string(j->sampler->a1111_name));
    json_object_set_new(o, "cfg_scale", json_real(j->cfg_scale));
    json_object_set_new(o, "steps", json_integer(j->steps));
    json_object_set_new(o, "batch_size", json_integer(p->batch_size));
    json_object_set_new(o, "n_iter", json_integer(p->n_iter));
    json_object_set_new(o, "restore_faces", json_false());
    json_object_set_new(o, "sd_model_name", json_string(model->name));
    json_object_set_new(o, "sd_model_hash", json_null());
    json_object_set_new(o, "seed_resize_from_w", json_integer(-1));
    json_object_set_new(o, "seed_resize_from_h", json_integer(-1));
    json_object_set_new(o, "denoising_strength", p->img2img ? json_real(p->strength) : json_null());
    json_object_set_new(o, "extra_generation_params", json_object());
    json_object_set_new(o, "index_of_first_image", json_integer(0));
    json_object_set_new(o, "infotexts", infotexts);
    json_object_set_new(o, "styles", json_array());
    json_object_set_new(o, "job_timestamp", json_string(stamp));
    json_object_set_new(o, "clip_skip", json_integer(1));
    json_object_set_new(o, "is_using_inpainting_conditioning", json_false());
    char version[32];
    snprintf(version, sizeof version, "kiln %s", kiln_version());
    json_object_set_new(o, "version", json_string(version));
    json_object_set_new(o, "interrupted", json_boolean(j->state == JOB_CANCELLED));
    json_t *kiln = json_pack("{s:I, s:s, s:s, s:o}", "job", (json_int_t)j->id, "precision",
                             serve_precision_name(p->precision), "rng", p->rng, "perf", perf_record_json(&j->perf));
    if (j->have_report)
        json_object_set_new(kiln, "optimizations", cli_report_json(j->report));
    if (j->have_debug)
        json_object_set_new(kiln, "debug", cli_debug_json(&j->debug));
    json_object_set_new(o, "kiln", kiln);
    return o;
}

/* The request's job, parsed and queued, with how many jobs are ahead of it;
 * NULL when it was refused, the reply then saying why. */
static job *submit_request(const http_request *req, http_reply *reply, int img2img, int *ahead)
{
    const serve_config *c = req->config;
    job_params params;
    api_error err;
    if (request_parse(req->body, req->body_len, img2img, c->default_precision, &params, &err) != 0) {
        reply_api_error(reply, &err);
        return NULL;
    }
    serve_tuned_apply(c, &params);
    job *j = NULL;
    submit_result r = jobs_submit(c->jobs, &params, &j, ahead);
    if (r != SUBMIT_OK) {
        job_params_free(&params);
        reply_busy(req, reply, r);
        return NULL;
    }
    return j;
}

static void generate_sync(const http_request *req, http_reply *reply, int img2img)
{
    const serve_config *c = req->config;
    int ahead = 0;
    job *j = submit_request(req, reply, img2img, &ahead);
    if (!j)
        return;
    jobs_wait(c->jobs, j, req->client_gone, req->gone_ctx);
    /* finished: the job's results are constant from here on */
    if (j->state == JOB_FAILED || (j->state == JOB_CANCELLED && j->error_status)) {
        reply_job_error(reply, j);
        jobs_release(c->jobs, j);
        return;
    }
    kiln_model_info model;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(c->jobs, &model, loaded);
    json_t *images = json_array();
    for (int i = 0; j->params.send_images && i < j->count; i++) {
        char *b64 = base64_encode(j->images[i].png, j->images[i].png_size);
        if (!b64) {
            json_decref(images);
            reply_error(reply, 507, "out_of_memory", NULL, NULL, "out of memory encoding the images");
            jobs_release(c->jobs, j);
            return;
        }
        json_array_append_new(images, json_string(b64));
        free(b64);
    }
    /* A1111 answers with the whole request, defaults filled in: kiln fills
     * in what the client left out with the values the job ran with */
    json_t *parameters = json_deep_copy(j->params.parameters);
    json_t *ran = json_pack("{s:s, s:s, s:I, s:i, s:f, s:i, s:i, s:s, s:i, s:i, s:s}", "prompt", j->params.prompt,
                            "negative_prompt", j->params.negative_prompt, "seed", (json_int_t)-1, "steps", j->steps,
                            "cfg_scale", (double)j->cfg_scale, "width", j->width, "height", j->height,
                            "sampler_name", j->sampler->a1111_name, "batch_size", j->params.batch_size, "n_iter",
                            j->params.n_iter, "precision", serve_precision_name(j->params.precision));
    if (img2img)
        json_object_set_new(ran, "denoising_strength", json_real(j->params.strength));
    json_object_update_missing(parameters, ran);
    json_decref(ran);
    json_t *info = a1111_info(j, &model);
    char *info_text = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    reply_json(reply, 200,
               json_pack("{s:o, s:o, s:s}", "images", images, "parameters", parameters, "info",
                         info_text ? info_text : "{}"));
    free(info_text);
    jobs_release(c->jobs, j);
}

static void h_txt2img(const http_request *req, http_reply *reply)
{
    generate_sync(req, reply, 0);
}

static void h_img2img(const http_request *req, http_reply *reply)
{
    generate_sync(req, reply, 1);
}

/* ---- A1111: the rest ---- */

static void h_progress(const http_request *req, http_reply *reply)
{
    reply_json(reply, 200, jobs_progress_json(req->config->jobs));
}

static void h_interrupt(const http_request *req, http_reply *reply)
{
    reply_json(reply, 200, json_pack("{s:b}", "interrupted", jobs_interrupt(req->config->jobs)));
}

static void h_samplers(const http_request *req, http_reply *reply)
{
    json_t *list = json_array();
    for (int i = 0; i < serve_sampler_count; i++)
        json_array_append_new(list, json_pack("{s:s, s:[s], s:{}}", "name", serve_samplers[i].a1111_name,
                                              "aliases", serve_samplers[i].name, "options"));
    reply_json(reply, 200, list);
}

static void h_sd_models(const http_request *req, http_reply *reply)
{
    kiln_model_info m;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(req->config->jobs, &m, loaded);
    reply_json(reply, 200, json_pack("[{s:s, s:s, s:n, s:n, s:s, s:n}]", "title", m.name, "model_name", m.name,
                                     "hash", "sha256", "filename", m.path, "config"));
}

static void h_options(const http_request *req, http_reply *reply)
{
    kiln_model_info m;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(req->config->jobs, &m, loaded);
    reply_json(reply, 200, json_pack("{s:s, s:s}", "sd_model_checkpoint", m.name, "samples_format", "png"));
}

/* ---- kiln: jobs for the page ---- */

static void h_job_submit(const http_request *req, http_reply *reply)
{
    const serve_config *c = req->config;
    /* img2img when init_images is there; txt2img otherwise */
    json_t *probe = json_loadb(req->body, req->body_len, 0, NULL);
    json_t *init = json_object_get(probe, "init_images");
    int img2img = init && !json_is_null(init);
    json_decref(probe);
    int ahead = 0;
    job *j = submit_request(req, reply, img2img, &ahead);
    if (!j)
        return;
    char url[64];
    snprintf(url, sizeof url, "/api/v1/jobs/%llu", (unsigned long long)j->id);
    reply_json(reply, 202, json_pack("{s:I, s:s, s:i, s:I}", "id", (json_int_t)j->id, "url", url, "ahead", ahead,
                                     "seed", (json_int_t)j->params.seed));
    jobs_release(c->jobs, j);
}

static void h_job_get(const http_request *req, http_reply *reply)
{
    const serve_config *c = req->config;
    uint64_t id;
    const char *rest;
    if (parse_job_path(req->path, &id, &rest) != 0) {
        reply_error(reply, 404, "not_found", NULL, NULL, "no such path: %s", req->path);
        return;
    }
    job *j = jobs_find(c->jobs, id);
    if (!j) {
        reply_error(reply, 404, "not_found", "id", NULL, "job %llu is unknown (finished jobs are kept for a while)",
                    (unsigned long long)id);
        return;
    }
    int index;
    char tail[8];
    if (!*rest) {
        reply_json(reply, 200, jobs_job_json(c->jobs, j));
    } else if (sscanf(rest, "/images/%d.%4s", &index, tail) == 2 && strcmp(tail, "png") == 0) {
        void *copy = NULL;
        size_t size = 0;
        uint64_t seed = 0;
        int st = jobs_image_copy(c->jobs, j, index, &copy, &size, &seed);
        if (st != 0) {
            if (st > 0)
                reply_error(reply, 404, "not_found", "image", NULL, "job %llu has no image %d (yet)",
                            (unsigned long long)id, index);
            else
                reply_error(reply, 507, "out_of_memory", NULL, NULL, "out of memory");
        } else {
            reply->status = 200;
            reply->data = copy;
            reply->size = size;
            reply->data_owned = 1;
            reply->content_type = "image/png";
            snprintf(reply->disposition, sizeof reply->disposition, "inline; filename=\"kiln-%llu-%llu.png\"",
                     (unsigned long long)id, (unsigned long long)seed);
        }
    } else {
        reply_error(reply, 404, "not_found", NULL, NULL, "no such path: %s", req->path);
    }
    jobs_release(c->jobs, j);
}

static void h_job_post(const http_request *req, http_reply *reply)
{
    const serve_config *c = req->config;
    uint64_t id;
    const char *rest;
    if (parse_job_path(req->path, &id, &rest) != 0 || strcmp(rest, "/cancel") != 0) {
        reply_error(reply, 404, "not_found", NULL, NULL, "no such path: %s (POST /api/v1/jobs/ID/cancel)", req->path);
        return;
    }
    job *j = jobs_find(c->jobs, id);
    if (!j) {
        reply_error(reply, 404, "not_found", "id", NULL, "job %llu is unknown", (unsigned long long)id);
        return;
    }
    jobs_cancel(c->jobs, j);
    reply_json(reply, 200, jobs_job_json(c->jobs, j));
    jobs_release(c->jobs, j);
}

static void h_info(const http_request *req, http_reply *reply)
{
    const serve_config *c = req->config;
    kiln_model_info m;
    int loaded[SERVE_PRECISION_COUNT];
    jobs_model_info(c->jobs, &m, loaded);
    kiln_cpu_info cpu;
    kiln_cpu_query(&cpu);
    json_t *samplers = json_array(), *precisions = json_array(), *loaded_list = json_array();
    for (int i = 0; i < serve_sampler_count; i++)
        json_array_append_new(samplers, json_pack("{s:s, s:s}", "name", serve_samplers[i].name, "a1111_name",
                                                  serve_samplers[i].a1111_name));
    for (int i = 0; i < SERVE_PRECISION_COUNT; i++) {
        json_array_append_new(precisions, json_string(serve_precision_name((serve_precision)i)));
        if (loaded[i])
            json_array_append_new(loaded_list, json_string(serve_precision_name((serve_precision)i)));
    }
    const serve_sampler *def = serve_sampler_find(m.default_sampler);
    json_t *o = json_pack("{s:s, s:{s:s, s:s, s:i, s:i, s:f, s:s, s:I, s:b}, s:i, s:{s:s, s:s, s:i}, s:o, s:s, "
                          "s:o, s:o, s:i, s:I, s:b, s:s?}",
                          "version", kiln_version(), "model", "name", m.name, "path", m.path, "native_resolution",
                          m.native_resolution, "default_steps", m.default_steps, "default_cfg",
                          (double)m.default_cfg, "default_sampler", def ? def->name : m.default_sampler,
                          "parameters", (json_int_t)m.parameters, "v_prediction", m.v_prediction, "threads",
                          kiln_engine_threads(c->engine), "cpu", "model", cpu.model, "isa",
                          kiln_isa_name(cpu.isa), "logical_cores", cpu.logical_cores, "precisions", precisions,
                          "default_precision", serve_precision_name(c->default_precision), "loaded_precisions",
                          loaded_list, "samplers", samplers, "queue_capacity", c->queue_capacity, "max_body_bytes",
                          (json_int_t)SERVE_MAX_BODY, "auth", c->api_key != NULL, "history_file",
                          perf_log_path(c->log));
    json_object_set_new(o, "limits",
                        json_pack("{s:i, s:i, s:i, s:i, s:f, s:i, s:i, s:I}", "min_size", KILN_MIN_SIZE, "max_size",
                                  KILN_MAX_SIZE, "size_multiple", KILN_SIZE_MULTIPLE, "max_steps", KILN_MAX_STEPS,
                                  "max_cfg", (double)KILN_MAX_CFG, "max_images", KILN_MAX_IMAGES,
                                  "max_prompt_bytes", KILN_MAX_PROMPT_BYTES, "max_init_pixels",
                                  (json_int_t)KILN_MAX_INIT_PIXELS));
    json_object_set_new(o, "tuned", json_boolean(c->tuned));
    reply_json(reply, 200, o);
}

/* ---- kiln: perf ---- */

static void h_perf_summary(const http_request *req, http_reply *reply)
{
    reply_json(reply, 200, perf_log_summary(req->config->log));
}

static void h_perf_history(const http_request *req, http_reply *reply)
{
    int limit = SERVE_HISTORY_MAX;
    if (req->query_limit) {
        char *end;
        long v = strtol(req->query_limit, &end, 10);
        if (end == req->query_limit || *end || v < 1 || v > SERVE_HISTORY_MAX) {
            reply_error(reply, 400, "invalid_field", "limit", json_pack("{s:i, s:i}", "min", 1, "max",
                                                                        SERVE_HISTORY_MAX),
                        "limit must be an integer from 1 to %d, got '%s'", SERVE_HISTORY_MAX, req->query_limit);
            return;
        }
        limit = (int)v;
    }
    reply_json(reply, 200, perf_log_history(req->config->log, limit));
}

static void h_tune(const http_request *req, http_reply *reply)
{
    serve_tune_post(req, reply);
}

/* ---- operations ---- */

static void h_healthz(const http_request *req, http_reply *reply)
{
    serve_gauges g;
    jobs_gauges(req->config->jobs, &g);
    reply_json(reply, 200, json_pack("{s:s, s:i, s:i, s:i, s:s}", "status", "ok", "queued", g.queued, "running",
                                     g.running, "queue_capacity", g.queue_capacity, "version", kiln_version()));
}

static void h_metrics(const http_request *req, http_reply *reply)
{
    serve_gauges g;
    jobs_gauges(req->config->jobs, &g);
    char *text = perf_log_prometheus(req->config->log, &g);
    if (!text) {
        reply_error(reply, 507, "out_of_memory", NULL, NULL, "out of memory");
        return;
    }
    reply->status = 200;
    reply->data = text;
    reply->size = strlen(text);
    reply->data_owned = 1;
    reply->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- the table ---- */

static const route routes[] = {
    {"GET", "/healthz", h_healthz, 0, 1},
    {"GET", "/metrics", h_metrics, 0, 0},
    {"POST", "/sdapi/v1/txt2img", h_txt2img, 0, 0},
    {"POST", "/sdapi/v1/img2img", h_img2img, 0, 0},
    {"GET", "/sdapi/v1/progress", h_progress, 0, 0},
    {"POST", "/sdapi/v1/interrupt", h_interrupt, 0, 0},
    {"GET", "/sdapi/v1/samplers", h_samplers, 0, 0},
    {"GET", "/sdapi/v1/sd-models", h_sd_models, 0, 0},
    {"GET", "/sdapi/v1/options", h_options, 0, 0},
    {"GET", "/api/v1/info", h_info, 0, 0},
    {"POST", "/api/v1/jobs", h_job_submit, 0, 0},
    {"GET", "/api/v1/jobs/", h_job_get, 1, 0},
    {"POST", "/api/v1/jobs/", h_job_post, 1, 0},
    {"GET", "/api/v1/perf/summary", h_perf_summary, 0, 0},
    {"GET", "/api/v1/perf/history", h_perf_history, 0, 0},
    {"POST", "/api/v1/tune", h_tune, 0, 0},
    {"GET", "/api/v1/tune", serve_tune_get, 0, 0},
};

static const route asset_route = {"GET", "", h_asset, 0, 1};

static int path_matches(const route *r, const char *path)
{
    size_t n = strlen(r->path);
    return r->prefix ? strncmp(path, r->path, n) == 0 && path[n] : strcmp(path, r->path) == 0;
}

const route *api_route(const char *method, const char *path, int *method_ok)
{
    int head = strcmp(method, "HEAD") == 0; /* HEAD is GET without the body (MHD drops it) */
    *method_ok = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (path_matches(&routes[i], path)) {
            if (strcmp(routes[i].method, method) == 0 || (head && strcmp(routes[i].method, "GET") == 0))
                return &routes[i];
            *method_ok = 1; /* the path exists, for another method */
        }
    if (find_asset(path)) {
        if (strcmp(method, "GET") == 0 || head)
            return &asset_route;
        *method_ok = 1;
    }
    return NULL;
}

int api_route_needs_auth(const route *r)
{
    return !r->open;
}

void api_run(const route *r, const http_request *req, http_reply *reply)
{
    r->run(req, reply);
}
