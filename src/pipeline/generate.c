/*
 * generate.c - the engine, the loaded model and kiln_generate: prompt to
 * pixels. Text encoding with the negative prompt batched beside the
 * prompt, the sampler loop with classifier-free guidance in one UNet batch,
 * VAE decoding one image at a time (whole, or in tiles: models/vae_tiles.h).
 *
 * Graphs are built once per shape and replayed: each step only binds
 * buffers and runs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/threadpool.h"
#include "graph/executor.h"
#include "kiln.h"
#include "models/sd_model.h"
#include "perf/optimizations.h"
#include "perf/planner.h"
#include "pipeline/image_io.h"
#include "models/model_graphs.h"
#include "models/vae_tiles.h"
#include "pipeline/parameters.h"
#include "pipeline/rng.h"
#include "pipeline/samplers.h"

struct kiln_engine {
    tpool *pool;
    int threads;
    size_t max_memory; /* SIZE_MAX: no limit */
};

struct kiln_model {
    kiln_engine *engine;
    sd_model *sd;
    kiln_precision precision;
    kiln_dtype pack_dtype;
    char hash[11]; /* "" until first needed */
    char *tokenizer_dir; /* as loaded (NULL: the model's own): debug mode reloads at f32 with it */
    weight_cache *weights; /* packed once, shared by every graph */
    sd_schedule schedule;
    model_graph text, unet, decoder, encoder;
};

void kiln_engine_options_defaults(kiln_engine_options *o)
{
    memset(o, 0, sizeof *o);
}

kiln_status kiln_engine_create(const kiln_engine_options *o, kiln_engine **out)
{
    kiln_engine_options defaults;
    if (!o) {
        kiln_engine_options_defaults(&defaults);
        o = &defaults;
    }
    if (o->threads < 0 || o->threads > 1024)
        return err_set(KILN_ERR_INVALID, "threads is %d; allowed 0 (all cores) to 1024", o->threads);
    kiln_engine *e = calloc(1, sizeof *e);
    if (!e)
        return err_set(KILN_ERR_NOMEM, "cannot allocate an engine");
    kiln_status st = tpool_create(o->threads, &e->pool);
    if (st != KILN_OK) {
        free(e);
        return st;
    }
    e->threads = tpool_size(e->pool);
    e->max_memory = o->max_memory ? o->max_memory : planner_default_budget();
    if (!e->max_memory)
        e->max_memory = SIZE_MAX;
    *out = e;
    return KILN_OK;
}

void kiln_engine_destroy(kiln_engine *e)
{
    if (!e)
        return;
    tpool_destroy(e->pool);
    free(e);
}

int kiln_engine_threads(const kiln_engine *e)
{
    return e->threads;
}

/* ---- model ---- */

void kiln_model_options_defaults(kiln_model_options *o)
{
    memset(o, 0, sizeof *o);
}

/* Builds every graph once (nothing is prepared or allocated) so that a
 * missing or mis-shaped tensor is found at load, named with the shape
 * expected, not in the middle of the first request. */
static kiln_status check_complete(const sd_model *sd)
{
    static const model_graph_kind kinds[] = {MODEL_GRAPH_TEXT, MODEL_GRAPH_UNET, MODEL_GRAPH_DECODER,
                                             MODEL_GRAPH_ENCODER};
    int factor = vae_factor(&sd->vae);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (kinds[i] == MODEL_GRAPH_ENCODER && !sd->vae.has_encoder)
            continue;
        graph *g;
        kiln_status st = graph_create(&g);
        if (st != KILN_OK)
            return st;
        graph_id in[3];
        int side = kinds[i] == MODEL_GRAPH_ENCODER ? 8 * factor : 8;
        model_graph_build(sd, g, kinds[i], 1, side, side, in);
        st = graph_status(g);
        graph_destroy(g);
        if (st != KILN_OK)
            return err_wrap(st, "%s: ", sd->path);
    }
    return KILN_OK;
}

kiln_status kiln_model_load(kiln_engine *e, const char *path, const kiln_model_options *o, kiln_model **out)
{
    kiln_model *m = calloc(1, sizeof *m);
    if (!m)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a model");
    kiln_precision precision = KILN_PRECISION_F32;
    if (o && o->precision && opt_precision_parse(o->precision, &precision) != 0) {
        free(m);
        return err_set(KILN_ERR_INVALID, "precision '%s' is unknown; allowed f32, f16, bf16", o->precision);
    }
    kiln_dtype pack = opt_precision_dtype(precision);
    m->precision = precision;
    m->pack_dtype = pack;
    kiln_status st = sd_model_load(path, o ? o->tokenizer_dir : NULL, &m->sd);
    if (st == KILN_OK)
        st = weight_cache_create(pack, &m->weights);
    if (st == KILN_OK)
        weight_cache_set_release(m->weights, sd_model_release_file_range, m->sd);
    if (st == KILN_OK)
        st = check_complete(m->sd);
    if (st != KILN_OK) {
        weight_cache_destroy(m->weights);
        sd_model_destroy(m->sd);
        free(m);
        return st;
    }
    m->engine = e;
    weight_cache_set_pool(m->weights, e->pool);
    if (o && o->tokenizer_dir && !(m->tokenizer_dir = strdup(o->tokenizer_dir))) {
        kiln_model_destroy(m);
        return err_set(KILN_ERR_NOMEM, "cannot allocate a model");
    }
    schedule_init_sd(&m->schedule);
    if (m->sd->zero_terminal_snr)
        schedule_rescale_zero_terminal_snr(&m->schedule);
    *out = m;
    return KILN_OK;
}

void kiln_model_destroy(kiln_model *m)
{
    if (!m)
        return;
    model_graph_clear(&m->text);
    model_graph_clear(&m->unet);
    model_graph_clear(&m->decoder);
    model_graph_clear(&m->encoder);
    weight_cache_destroy(m->weights);
    sd_model_destroy(m->sd);
    free(m->tokenizer_dir);
    free(m);
}

void kiln_model_get_info(const kiln_model *m, kiln_model_info *out)
{
    const sd_model *sd = m->sd;
    memset(out, 0, sizeof *out);
    out->name = sd->name;
    out->path = sd->path;
    out->native_resolution = sd->native_resolution;
    out->default_steps = sd->default_steps;
    out->default_cfg = sd->default_cfg;
    out->default_sampler = sd->default_sampler;
    out->v_prediction = sd->v_prediction;
    out->unet_channels = sd->unet.model_channels;
    out->text_width = sd->clip.width;
    out->text_layers = sd->clip.layers;
    out->vocab_size = sd->clip.vocab;
}

kiln_precision kiln_model_precision(const kiln_model *m)
{
    return m->precision;
}

/* What a request without optimizations asks for: the best configuration,
 * in the model's precision, on the engine's threads. */
static void model_defaults(const kiln_model *m, kiln_optimizations *o)
{
    kiln_optimizations_defaults(o);
    o->precision = m->precision;
    o->threads = 0;
}

/* The switches' ranges, and what depends on the model: a VAE tile of
 * whole latent pixels (opt_validate holds it to multiples of 8, enough for
 * SD's factor of 8 and smaller ones). */
static kiln_status check_optimizations(const sd_model *sd, const kiln_optimizations *o)
{
    kiln_status st = opt_validate(o);
    if (st != KILN_OK)
        return st;
    int factor = vae_factor(&sd->vae);
    if (o->vae_tile % factor != 0)
        return err_set(KILN_ERR_INVALID, "optimizations.vae_tile is %d; this model's VAE needs a multiple of %d pixels",
                       o->vae_tile, factor);
    return KILN_OK;
}

kiln_status kiln_model_optimizations(const kiln_model *m, const kiln_optimizations *asked,
                                     kiln_optimizations *active, kiln_opt_report *report)
{
    kiln_optimizations d;
    if (!asked) {
        model_defaults(m, &d);
        asked = &d;
    }
    kiln_status st = check_optimizations(m->sd, asked);
    if (st != KILN_OK)
        return st;
    opt_resolve(asked, m->precision, m->engine->threads, active, report, NULL);
    return KILN_OK;
}

/* ---- requests ---- */

void kiln_request_defaults(kiln_request *r)
{
    memset(r, 0, sizeof *r);
    r->prompt = "";
    r->cfg_scale = -1.0f;
    r->num_images = 1;
    r->strength = 0.75f;
}

typedef struct gen_perf gen_perf;

typedef struct plan {
    const kiln_request *r;
    gen_perf *perf; /* the generation's profile and timeline */
    int width, height, lat_w, lat_h, steps, batch;
    float cfg;
    int guided; /* cfg != 1: the unconditional pass runs */
    sampler_settings sampler;
    sampler_plan sampler_plan;
    batch_plan memory;
    rng_kind rng;
    size_t latent_values; /* per image */
    kiln_optimizations asked, active;
    kiln_opt_report report[KILN_OPT_COUNT];
    graph_exec_options exec;
    vae_tiles tiles; /* how the VAE decodes an image: one tile when whole */
    struct debug_run *dbg; /* debug mode: what this run collects; NULL otherwise */
} plan;

/* ---- debug mode: what one run collects ---- */

typedef struct debug_run {
    kiln_nonfinite *nonfinite; /* the first node found (check_finite on); NULL: no check */
    float *latents;            /* keep_latents: each image's final latent, request order */
    int keep_latents;
    size_t latent_values;      /* per image */
    double check_s;            /* time in the executors' NaN/Inf checks */
    int first_image, unet_evals_before; /* the batch running, and the UNet evaluations before it */
} debug_run;

/* After a graph ran: its first non-finite node, if it is the first of the
 * request. */
static void debug_note(const plan *p, graph_exec *exec, const char *graph_name, int step, int image)
{
    if (!p->dbg || !p->dbg->nonfinite)
        return;
    p->dbg->check_s += graph_exec_check_seconds(exec);
    if (p->dbg->nonfinite->found)
        return;
    graph_nonfinite nf;
    graph_exec_nonfinite(exec, &nf);
    if (!nf.found)
        return;
    kiln_nonfinite *r = p->dbg->nonfinite;
    memset(r, 0, sizeof *r);
    r->found = 1;
    snprintf(r->node, sizeof r->node, "%s", nf.name ? nf.name : "");
    snprintf(r->op, sizeof r->op, "%s", graph_op_name(nf.op));
    snprintf(r->graph, sizeof r->graph, "%s", graph_name);
    r->ndim = nf.ndim;
    for (int i = 0; i < 4 && i < TENSOR_MAX_DIMS; i++)
        r->shape[i] = nf.shape[i];
    r->step = step;
    r->image = image;
    r->count = nf.count;
    r->first_index = nf.first_index;
    r->first_value = nf.first_value;
}

/* The memory plan as the public API reports it. */
static kiln_plan public_plan(const batch_plan *b)
{
    return (kiln_plan){.batch = b->batch, .micro_batches = b->micro_batches, .weight_bytes = b->weight_bytes,
                       .activation_bytes = b->activation_bytes,
                       .bytes_per_image = b->unet_bytes_per_image, .total_bytes = b->total_bytes,
                       .budget_bytes = b->budget_bytes, .decoder_bytes = b->decoder_bytes, .vae_tiles = b->vae_tiles};
}

static kiln_status check_request(const kiln_model *m, const kiln_request *r, plan *p)
{
    const sd_model *sd = m->sd;
    memset(p, 0, sizeof *p);
    p->r = r;
    if (!r->prompt)
        return err_set(KILN_ERR_INVALID, "prompt is missing");
    if (strlen(r->prompt) > KILN_MAX_PROMPT_BYTES)
        return err_set(KILN_ERR_INVALID, "prompt is %zu bytes; at most %d allowed", strlen(r->prompt),
                       KILN_MAX_PROMPT_BYTES);
    if (r->negative_prompt && strlen(r->negative_prompt) > KILN_MAX_PROMPT_BYTES)
        return err_set(KILN_ERR_INVALID, "negative_prompt is %zu bytes; at most %d allowed",
                       strlen(r->negative_prompt), KILN_MAX_PROMPT_BYTES);
    p->width = r->width ? r->width : sd->native_resolution;
    p->height = r->height ? r->height : sd->native_resolution;
    int factor = vae_factor(&sd->vae);
    int multiple = factor > KILN_SIZE_MULTIPLE ? factor : KILN_SIZE_MULTIPLE;
    if (p->width < KILN_MIN_SIZE || p->width > KILN_MAX_SIZE || p->width % multiple != 0)
        return err_set(KILN_ERR_INVALID, "width is %d; allowed %d to %d in multiples of %d", p->width, KILN_MIN_SIZE,
                       KILN_MAX_SIZE, multiple);
    if (p->height < KILN_MIN_SIZE || p->height > KILN_MAX_SIZE || p->height % multiple != 0)
        return err_set(KILN_ERR_INVALID, "height is %d; allowed %d to %d in multiples of %d", p->height,
                       KILN_MIN_SIZE, KILN_MAX_SIZE, multiple);
    p->lat_w = p->width / factor;
    p->lat_h = p->height / factor;
    p->steps = r->steps ? r->steps : sd->default_steps;
    if (p->steps < 1 || p->steps > KILN_MAX_STEPS)
        return err_set(KILN_ERR_INVALID, "steps is %d; allowed 1 to %d", p->steps, KILN_MAX_STEPS);
    p->cfg = r->cfg_scale < 0 ? sd->default_cfg : r->cfg_scale;
    if (!(p->cfg >= 0.0f && p->cfg <= KILN_MAX_CFG))
        return err_set(KILN_ERR_INVALID, "cfg_scale is %g; allowed 0 to %g", (double)p->cfg, (double)KILN_MAX_CFG);
    p->guided = p->cfg != 1.0f && p->cfg != 0.0f;
    if (r->num_images < 1 || r->num_images > KILN_MAX_IMAGES)
        return err_set(KILN_ERR_INVALID, "num_images is %d; allowed 1 to %d", r->num_images, KILN_MAX_IMAGES);
    if (r->batch_size < 0 || r->batch_size > KILN_MAX_IMAGES)
        return err_set(KILN_ERR_INVALID, "batch_size is %d; allowed 0 (automatic) to %d", r->batch_size,
                       KILN_MAX_IMAGES);
    const char *sampler = r->sampler ? r->sampler : sd->default_sampler;
    if (sampler_parse(sampler, &p->sampler.kind, &p->sampler.karras) != 0)
        return err_set(KILN_ERR_INVALID,
                       "sampler '%s' is unknown; allowed euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, lcm", sampler);
    p->sampler.steps = p->steps;
    p->sampler.strength = 1.0f;
    if (r->init_rgb) {
        if (!(r->strength > 0.0f && r->strength <= 1.0f))
            return err_set(KILN_ERR_INVALID, "strength is %g; allowed above 0 up to 1", (double)r->strength);
        if (r->init_width < 1 || r->init_height < 1 ||
            (int64_t)r->init_width * r->init_height > (int64_t)KILN_MAX_INIT_PIXELS)
            return err_set(KILN_ERR_INVALID, "init image is %dx%d; allowed 1 to %d pixels", r->init_width,
                           r->init_height, KILN_MAX_INIT_PIXELS);
        p->sampler.strength = r->strength;
    }
    p->rng = RNG_TORCH_CPU;
    if (r->rng && rng_parse(r->rng, &p->rng) != 0)
        return err_set(KILN_ERR_INVALID, "rng '%s' is unknown; allowed torch-cpu, philox", r->rng);
    p->latent_values = (size_t)p->lat_w * p->lat_h * (size_t)sd->unet.in_channels;

    if (r->optimizations)
        p->asked = *r->optimizations;
    else
        model_defaults(m, &p->asked);
    kiln_status vst = check_optimizations(sd, &p->asked);
    if (vst != KILN_OK)
        return vst;
    opt_resolve(&p->asked, m->precision, m->engine->threads, &p->active, p->report, &p->exec);
    vae_tiles_layout(p->lat_h, p->lat_w, factor, p->active.vae_tiling ? p->active.vae_tile : 0, &p->tiles);
    if (p->active.vae_tiling && vae_tiles_count(&p->tiles) == 1) {
        kiln_opt_report *rep = &p->report[KILN_OPT_VAE_TILING];
        snprintf(rep->note, sizeof rep->note, "a %dx%d image is within one %d-pixel tile: decoded whole", p->width,
                 p->height, p->active.vae_tile);
    }

    /* the batch from the memory plan: the largest that fits the budget */
    plan_request pr = {.width = p->width, .height = p->height, .images = r->num_images, .max_batch = r->batch_size,
                       .guided = p->guided, .img2img = r->init_rgb != NULL, .pack_dtype = m->pack_dtype,
                       .threads = m->engine->threads, .plain_attention = p->exec.plain_attention,
                       .attention_tile = p->exec.attention_tile, .winograd = !p->exec.direct_conv, .nchw = p->exec.nchw,
                       .vae_tile = p->active.vae_tiling ? p->active.vae_tile : 0,
                       .budget_bytes = m->engine->max_memory == SIZE_MAX ? 0 : m->engine->max_memory};
    kiln_status st = planner_plan(sd, &pr, &p->memory);
    if (st != KILN_OK)
        return st;
    p->batch = p->memory.batch;
    return sampler_plan_create(&m->schedule, &p->sampler, &p->sampler_plan);
}

/* ---- profile and timeline ----
 *
 * One graph_profile is attached to every executor a generation runs (each
 * right after model_graph_get_with, which may rebuild it), and the trace
 * hook too when the request has on_trace; both are detached before
 * kiln_generate returns, as the executors outlive the request. */

enum { TAG_TEXT, TAG_UNET, TAG_DECODER, TAG_ENCODER, TAG_COUNT };

typedef struct graph_tag {
    gen_perf *gp;
    const char *label;
} graph_tag;

struct gen_perf {
    const kiln_request *r;
    kiln_result *res;     /* step_s is filled as steps end */
    int step_cap;
    uint64_t origin_ns;   /* when kiln_generate began: the timeline's zero */
    uint64_t step_mark_ns; /* when the current step began */
    graph_profile profile;
    graph_tag tags[TAG_COUNT];
    int batch, step;      /* where the sampler is: -1 / 0 outside */
};

static void gen_perf_init(gen_perf *gp, const kiln_request *r, kiln_result *res, uint64_t origin_ns)
{
    static const char *labels[TAG_COUNT] = {"text", "unet", "decoder", "encoder"};
    memset(gp, 0, sizeof *gp);
    gp->r = r;
    gp->res = res;
    gp->origin_ns = origin_ns;
    gp->batch = -1;
    for (int i = 0; i < TAG_COUNT; i++)
        gp->tags[i] = (graph_tag){.gp = gp, .label = labels[i]};
}

static void emit(gen_perf *gp, const char *name, const char *kind, const char *graph_label, uint64_t start_ns,
                 uint64_t end_ns, double flops)
{
    kiln_trace_event ev = {.name = name, .kind = kind, .graph = graph_label,
                           .start_s = (double)(start_ns - gp->origin_ns) * 1e-9,
                           .dur_s = (double)(end_ns - start_ns) * 1e-9, .batch = gp->batch, .step = gp->step,
                           .flops = flops};
    gp->r->on_trace(gp->r->user, &ev);
}

static void trace_node(void *ctx, const graph *g, graph_id id, uint64_t start_ns, uint64_t end_ns)
{
    graph_tag *tag = ctx;
    const graph_node *node = graph_node_at(g, id);
    const char *kind = graph_op_name(node->op);
    emit(tag->gp, node->name && node->name[0] ? node->name : kind, kind, tag->label, start_ns, end_ns,
         graph_node_flops(g, id));
}

/* A stage that began at start_ns ends now. */
static void stage_done(gen_perf *gp, const char *name, uint64_t start_ns)
{
    if (gp->r->on_trace)
        emit(gp, name, "stage", NULL, start_ns, clock_now_ns(), 0.0);
}

static void watch(gen_perf *gp, model_graph *mg, int tag)
{
    graph_exec_set_profile(mg->exec, &gp->profile);
    if (gp->r->on_trace)
        graph_exec_set_trace(mg->exec, trace_node, &gp->tags[tag]);
}

static void unwatch(kiln_model *m)
{
    model_graph *graphs[] = {&m->text, &m->unet, &m->decoder, &m->encoder};
    for (size_t i = 0; i < sizeof graphs / sizeof graphs[0]; i++)
        if (graphs[i]->exec) {
            graph_exec_set_profile(graphs[i]->exec, NULL);
            graph_exec_set_trace(graphs[i]->exec, NULL, NULL);
        }
}

/* A sampler step ended now: its time, and its slice. */
static void step_done(gen_perf *gp, int step)
{
    uint64_t now = clock_now_ns();
    kiln_result *res = gp->res;
    if (res->step_count < gp->step_cap)
        res->step_s[res->step_count++] = (double)(now - gp->step_mark_ns) * 1e-9;
    if (gp->r->on_trace) {
        char name[32];
        snprintf(name, sizeof name, "step %d", step);
        emit(gp, name, "stage", NULL, gp->step_mark_ns, now, 0.0);
    }
    gp->step_mark_ns = now;
    gp->step = step + 1;
}

static int by_seconds_descending(const void *a, const void *b)
{
    const kiln_op_profile *x = a, *y = b;
    return x->seconds > y->seconds ? -1 : x->seconds < y->seconds;
}

/* The profile as the result reports it: kinds that compute and ran. */
static kiln_status profile_result(const gen_perf *gp, kiln_result *res)
{
    const graph_profile *p = &gp->profile;
    double total = 0;
    for (int op = 0; op < GRAPH_OP_COUNT; op++)
        if (op != GRAPH_OP_INPUT && op != GRAPH_OP_WEIGHT)
            total += p->seconds[op];
    res->ops = calloc(GRAPH_OP_COUNT, sizeof *res->ops);
    if (!res->ops)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the operation profile");
    for (int op = 0; op < GRAPH_OP_COUNT; op++) {
        if (op == GRAPH_OP_INPUT || op == GRAPH_OP_WEIGHT || p->nodes[op] == 0)
            continue;
        kiln_op_profile *o = &res->ops[res->op_count++];
        o->name = graph_op_name((graph_op)op);
        o->seconds = p->seconds[op];
        o->gflop = p->flops[op] * 1e-9;
        o->gflops = p->seconds[op] > 0 ? o->gflop / p->seconds[op] : 0.0;
        o->share = total > 0 ? p->seconds[op] / total : 0.0;
        o->nodes = p->nodes[op];
    }
    qsort(res->ops, (size_t)res->op_count, sizeof *res->ops, by_seconds_descending);
    res->graph_runs = p->runs;
    return KILN_OK;
}

/* ---- the sampler's view of the model ---- */

typedef struct denoiser {
    kiln_model *m;
    const plan *p;
    int batch;           /* images in this micro-batch */
    float *unet_x;       /* [2 * batch or batch, h, w, c]: unconditional half first */
    float *timesteps;
    rng_stream *streams; /* one per image */
    float *noise_nchw;
    double started, unet_seconds;
    int unet_evals, images_done;
    kiln_timings *timings;
} denoiser;

static kiln_status predict(void *ctx, const float *x_in, float t, float *out)
{
    denoiser *d = ctx;
    size_t n = d->p->latent_values * (size_t)d->batch;
    int passes = d->p->guided ? 2 : 1;
    for (int pass = 0; pass < passes; pass++)
        memcpy(d->unet_x + (size_t)pass * n, x_in, n * sizeof *x_in);
    for (int i = 0; i < passes * d->batch; i++)
        d->timesteps[i] = t;
    double start = clock_now();
    kiln_status st = graph_exec_run(d->m->unet.exec, d->m->engine->pool);
    d->unet_seconds += clock_now() - start;
    d->unet_evals++;
    if (st != KILN_OK)
        return st;
    if (d->p->dbg)
        debug_note(d->p, d->m->unet.exec, "unet", d->unet_evals - 1 - d->p->dbg->unet_evals_before,
                   d->p->dbg->first_image);
    const float *eps = graph_exec_output(d->m->unet.exec, d->m->unet.out);
    if (!d->p->guided) {
        memcpy(out, eps, n * sizeof *out);
        return KILN_OK;
    }
    /* eps = uncond + scale (cond - uncond) (Ho & Salimans 2022) */
    const float *uncond = eps, *cond = eps + n;
    float scale = d->p->cfg;
    for (size_t i = 0; i < n; i++)
        out[i] = uncond[i] + scale * (cond[i] - uncond[i]);
    return KILN_OK;
}

/* torch.randn draws in NCHW order; kiln's latents are NHWC */
static void draw_latent_noise(denoiser *d, rng_stream *stream, float *nhwc)
{
    const plan *p = d->p;
    int c = d->m->sd->unet.in_channels, hw = p->lat_h * p->lat_w;
    rng_randn(stream, d->noise_nchw, p->latent_values);
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < hw; i++)
            nhwc[(size_t)i * c + ch] = d->noise_nchw[(size_t)ch * hw + i];
}

static kiln_status noise(void *ctx, int step, float *out)
{
    denoiser *d = ctx;
    for (int i = 0; i < d->batch; i++)
        draw_latent_noise(d, &d->streams[i], out + (size_t)i * d->p->latent_values);
    return KILN_OK;
}

static int progress(void *ctx, int step, int steps)
{
    denoiser *d = ctx;
    const kiln_request *r = d->p->r;
    step_done(d->p->perf, step);
    if (!r->on_progress)
        return 0;
    double elapsed = clock_now() - d->started;
    double per_step = elapsed / (double)(d->images_done / d->batch * steps + step);
    int batches_left = (r->num_images - d->images_done - d->batch + d->batch - 1) / d->batch;
    kiln_progress pr = {.step = step, .steps = steps, .images_done = d->images_done, .images = r->num_images,
                        .elapsed_s = elapsed, .eta_s = per_step * ((steps - step) + batches_left * steps),
                        .stage = "denoise"};
    return r->on_progress(r->user, &pr);
}

/* ---- text ---- */

static kiln_status encode_text(kiln_model *m, const plan *p, float **context)
{
    const sd_model *sd = m->sd;
    int positions = sd->clip.positions;
    kiln_status st = model_graph_get_with(m->sd, m->weights, &m->text, MODEL_GRAPH_TEXT, 2, 0, 0, &p->exec);
    if (st != KILN_OK)
        return st;
    watch(p->perf, &m->text, TAG_TEXT);
    int32_t ids[2 * 512];
    float ids_f[2 * 512];
    if (positions > 512)
        return err_set(KILN_ERR_UNSUPPORTED, "text encoder with %d positions (kiln handles up to 512)", positions);
    const char *texts[2] = {p->r->negative_prompt ? p->r->negative_prompt : "", p->r->prompt};
    for (int i = 0; i < 2; i++) {
        int truncated = 0;
        st = tok_encode_padded(sd->tokenizer, texts[i], positions, ids + i * positions, &truncated);
        if (st != KILN_OK)
            return err_wrap(st, "%s: ", i ? "prompt" : "negative_prompt");
        for (int j = 0; j < positions; j++) {
            if (ids[i * positions + j] >= sd->clip.vocab)
                return err_set(KILN_ERR_FORMAT, "tokenizer gives id %d but the text encoder has %d tokens",
                               ids[i * positions + j], sd->clip.vocab);
            ids_f[i * positions + j] = (float)ids[i * positions + j];
        }
    }
    graph_exec_bind(m->text.exec, m->text.in[0], ids_f);
    st = graph_exec_run(m->text.exec, m->engine->pool);
    if (st != KILN_OK)
        return st;
    debug_note(p, m->text.exec, "text_encoder", -1, -1);
    size_t n = 2 * (size_t)positions * (size_t)sd->clip.width;
    *context = malloc(n * sizeof **context);
    if (!*context)
        return err_set(KILN_ERR_NOMEM, "cannot allocate the text conditioning");
    memcpy(*context, graph_exec_output(m->text.exec, m->text.out), n * sizeof **context);
    graph_exec_release_pages(m->text.exec);
    return KILN_OK;
}

/* ---- images ---- */

static uint8_t to_byte(float v)
{
    float x = (v + 1.0f) * 127.5f;
    if (!(x > 0.0f))
        return 0;
    if (x >= 255.0f)
        return 255;
    return (uint8_t)lrintf(x);
}

/* After each decoder run (each tile of a tiled decode): debug mode's NaN/Inf check. */
static void decoder_ran(void *ctx, graph_exec *exec)
{
    const plan *p = ctx;
    debug_note(p, exec, "vae_decoder", -1, p->dbg ? p->dbg->first_image : -1);
}

/* The image of one latent: decoded whole, or tile by tile (p->tiles) with
 * the decoder graph built for one tile. */
static kiln_status decode_image(kiln_model *m, const plan *p, const float *latent, kiln_image *img)
{
    const vae_tiles *t = &p->tiles;
    int tiled = vae_tiles_count(t) > 1;
    kiln_status st = model_graph_get_with(m->sd, m->weights, &m->decoder, MODEL_GRAPH_DECODER, 1, t->tile_h,
                                          t->tile_w, &p->exec);
    if (st != KILN_OK)
        return st;
    watch(p->perf, &m->decoder, TAG_DECODER);
    size_t n = (size_t)p->width * p->height * 3;
    float *z = malloc(p->latent_values * sizeof *z);
    float *blended = tiled ? malloc(n * sizeof *blended) : NULL; /* [H, W, 3] */
    img->rgb = malloc(n);
    if (!z || !img->rgb || (tiled && !blended)) {
        free(z);
        free(blended);
        return err_set(KILN_ERR_NOMEM, "cannot allocate a %dx%d image", p->width, p->height);
    }
    for (size_t i = 0; i < p->latent_values; i++)
        z[i] = latent[i] / m->sd->latent_scale;
    const float *pixels; /* [1, H, W, 3] in [-1, 1] */
    if (tiled) {
        st = vae_tiles_decode(t, &m->decoder, m->engine->pool, z, blended, decoder_ran, (void *)p);
        pixels = blended;
    } else {
        graph_exec_bind(m->decoder.exec, m->decoder.in[0], z);
        st = graph_exec_run(m->decoder.exec, m->engine->pool);
        if (st == KILN_OK)
            decoder_ran((void *)p, m->decoder.exec);
        pixels = graph_exec_output(m->decoder.exec, m->decoder.out);
    }
    free(z);
    if (st == KILN_OK) {
        for (size_t i = 0; i < n; i++)
            img->rgb[i] = to_byte(pixels[i]);
        img->width = p->width;
        img->height = p->height;
    }
    free(blended);
    graph_exec_release_pages(m->decoder.exec);
    return st;
}

/* Bilinear resampling of the init image to the requested size, as floats
 * in [-1, 1], NHWC. */
static void resize_to_unit(const uint8_t *src, int sw, int sh, float *dst, int dw, int dh)
{
    for (int y = 0; y < dh; y++) {
        float fy = ((float)y + 0.5f) * (float)sh / (float)dh - 0.5f;
        int y0 = (int)floorf(fy);
        float wy = fy - (float)y0;
        int ya = y0 < 0 ? 0 : y0, yb = y0 + 1 >= sh ? sh - 1 : y0 + 1;
        if (ya >= sh)
            ya = sh - 1;
        for (int x = 0; x < dw; x++) {
            float fx = ((float)x + 0.5f) * (float)sw / (float)dw - 0.5f;
            int x0 = (int)floorf(fx);
            float wx = fx - (float)x0;
            int xa = x0 < 0 ? 0 : x0, xb = x0 + 1 >= sw ? sw - 1 : x0 + 1;
            if (xa >= sw)
                xa = sw - 1;
            for (int c = 0; c < 3; c++) {
                float a = src[((size_t)ya * sw + xa) * 3 + c], b = src[((size_t)ya * sw + xb) * 3 + c];
                float d = src[((size_t)yb * sw + xa) * 3 + c], e = src[((size_t)yb * sw + xb) * 3 + c];
                float v = (a * (1 - wx) + b * wx) * (1 - wy) + (d * (1 - wx) + e * wx) * wy;
                dst[((size_t)y * dw + x) * 3 + c] = v / 127.5f - 1.0f;
            }
        }
    }
}

/* The init image's latent: the mean of the VAE's posterior, scaled (the
 * mean, not a sample, so img2img is deterministic given the seed). */
static kiln_status encode_init(kiln_model *m, const plan *p, float **latent)
{
    const kiln_request *r = p->r;
    kiln_status st =
        model_graph_get_with(m->sd, m->weights, &m->encoder, MODEL_GRAPH_ENCODER, 1, p->height, p->width, &p->exec);
    if (st != KILN_OK)
        return st;
    watch(p->perf, &m->encoder, TAG_ENCODER);
    float *image = malloc((size_t)p->width * p->height * 3 * sizeof *image);
    *latent = malloc(p->latent_values * sizeof **latent);
    if (!image || !*latent) {
        free(image);
        free(*latent);
        return err_set(KILN_ERR_NOMEM, "cannot allocate the init image");
    }
    resize_to_unit(r->init_rgb, r->init_width, r->init_height, image, p->width, p->height);
    graph_exec_bind(m->encoder.exec, m->encoder.in[0], image);
    st = graph_exec_run(m->encoder.exec, m->engine->pool);
    free(image);
    if (st != KILN_OK) {
        free(*latent);
        return st;
    }
    debug_note(p, m->encoder.exec, "vae_encoder", -1, -1);
    const float *moments = graph_exec_output(m->encoder.exec, m->encoder.out); /* [1, h, w, 2z]: mean first */
    int z = m->sd->vae.z_channels;
    size_t pixels = (size_t)p->lat_h * p->lat_w;
    for (size_t i = 0; i < pixels; i++)
        for (int c = 0; c < z; c++)
            (*latent)[i * z + c] = moments[i * 2 * z + c] * m->sd->latent_scale;
    graph_exec_release_pages(m->encoder.exec);
    return KILN_OK;
}

/* ---- the request ---- */

void kiln_result_destroy(kiln_result *res)
{
    if (!res)
        return;
    for (int i = 0; i < res->count; i++) {
        free(res->images[i].rgb);
        free(res->images[i].parameters);
    }
    free(res->images);
    free(res->ops);
    free(res->step_s);
    free(res);
}

/* The model's hash for the images' parameters, once per model (through
 * the hash cache: hashing a checkpoint of gigabytes takes seconds). A run
 * that hashes shows it as its own stage in the trace. */
static void model_hash_ready(kiln_model *m, gen_perf *gp)
{
    if (m->hash[0])
        return;
    uint64_t start_ns = clock_now_ns();
    char path[4096];
    if (m->sd->is_folder)
        snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", m->sd->path);
    else
        snprintf(path, sizeof path, "%s", m->sd->path);
    if (parameters_model_hash_cached(path, m->hash) != KILN_OK)
        LOG_WARN("no model hash in the parameters: %s", kiln_last_error());
    stage_done(gp, "model hash", start_ns);
}

/* The A1111 parameters of a finished image, with the model's hash. */
static kiln_status finish_image(kiln_model *m, const plan *p, kiln_image *img)
{
    const kiln_request *r = p->r;
    if (img->parameters)
        return KILN_OK;
    model_hash_ready(m, p->perf);
    image_parameters ip = {.prompt = r->prompt, .negative_prompt = r->negative_prompt, .steps = p->steps,
                           .sampler = p->sampler.kind, .karras = p->sampler.karras, .cfg_scale = p->cfg,
                           .seed = img->seed, .width = p->width, .height = p->height,
                           .model_hash = m->hash[0] ? m->hash : NULL, .model_name = m->sd->name,
                           .denoising_strength = r->init_rgb ? r->strength : 0.0f, .rng = rng_name(p->rng)};
    return parameters_format(&ip, &img->parameters);
}

static kiln_status run_batch(kiln_model *m, const plan *p, const float *context, const float *init_latent,
                             int first, int batch, denoiser *d, kiln_result *res)
{
    const sd_model *sd = m->sd;
    int passes = p->guided ? 2 : 1;
    kiln_status st = model_graph_get_with(m->sd, m->weights, &m->unet, MODEL_GRAPH_UNET, passes * batch, p->lat_h,
                                          p->lat_w, &p->exec);
    if (st != KILN_OK)
        return st;
    watch(p->perf, &m->unet, TAG_UNET);
    p->perf->batch = first / p->batch;
    size_t n = p->latent_values * (size_t)batch;
    size_t ctx_values = (size_t)sd->clip.positions * sd->clip.width;
    float *x = malloc(n * sizeof *x), *start_noise = malloc(n * sizeof *start_noise);
    float *unet_x = malloc((size_t)passes * n * sizeof *unet_x);
    float *timesteps = malloc((size_t)passes * batch * sizeof *timesteps);
    float *ctx = malloc((size_t)passes * batch * ctx_values * sizeof *ctx);
    rng_stream *streams = malloc((size_t)batch * sizeof *streams);
    if (!x || !start_noise || !unet_x || !timesteps || !ctx || !streams) {
        st = err_set(KILN_ERR_NOMEM, "cannot allocate a batch of %d latents", batch);
        goto done;
    }
    /* context rows: unconditional for the first half, the prompt for the second */
    for (int pass = 0; pass < passes; pass++)
        for (int i = 0; i < batch; i++)
            memcpy(ctx + ((size_t)pass * batch + i) * ctx_values, context + (size_t)(p->guided ? pass : 1) * ctx_values,
                   ctx_values * sizeof *ctx);

    d->batch = batch;
    d->unet_x = unet_x;
    d->timesteps = timesteps;
    d->streams = streams;
    for (int i = 0; i < batch; i++) {
        rng_init(&streams[i], p->rng, p->r->seed + (uint64_t)(first + i));
        draw_latent_noise(d, &streams[i], start_noise + (size_t)i * p->latent_values);
    }
    float *init_batch = NULL;
    if (init_latent) {
        init_batch = malloc(n * sizeof *init_batch);
        if (!init_batch) {
            st = err_set(KILN_ERR_NOMEM, "cannot allocate a batch of %d latents", batch);
            goto done;
        }
        for (int i = 0; i < batch; i++)
            memcpy(init_batch + (size_t)i * p->latent_values, init_latent, p->latent_values * sizeof *x);
    }
    sampler_start(&p->sampler_plan, &p->sampler, init_batch, start_noise, x, n);
    free(init_batch);

    graph_exec_bind(m->unet.exec, m->unet.in[0], unet_x);
    graph_exec_bind(m->unet.exec, m->unet.in[1], timesteps);
    graph_exec_bind(m->unet.exec, m->unet.in[2], ctx);
    if (p->dbg) {
        p->dbg->first_image = first;
        p->dbg->unet_evals_before = d->unet_evals;
    }
    sampler_model model = {.ctx = d, .predict = predict, .noise = noise, .progress = progress,
                           .v_prediction = sd->v_prediction};
    uint64_t denoise_ns = clock_now_ns();
    double denoise_start = clock_now();
    p->perf->step_mark_ns = clock_now_ns();
    p->perf->step = 1;
    st = sampler_run(&m->schedule, &p->sampler, &p->sampler_plan, &model, x, n);
    res->timings.denoise_s += clock_now() - denoise_start;
    p->perf->step = 0;
    stage_done(p->perf, "denoise", denoise_ns);
    if (st != KILN_OK)
        goto done;
    if (p->dbg && p->dbg->latents)
        memcpy(p->dbg->latents + (size_t)first * p->latent_values, x, n * sizeof *x);
    /* the UNet's memory is not needed while the decoder runs */
    graph_exec_release_pages(m->unet.exec);

    /* before the decode's clock starts: images are finished inside it */
    if (p->r->on_image)
        model_hash_ready(m, p->perf);
    uint64_t decode_ns = clock_now_ns();
    double decode_start = clock_now();
    for (int i = 0; i < batch; i++) {
        kiln_image *img = &res->images[res->count];
        memset(img, 0, sizeof *img);
        if (p->dbg)
            p->dbg->first_image = first + i;
        st = decode_image(m, p, x + (size_t)i * p->latent_values, img);
        if (st != KILN_OK) {
            free(img->rgb);
            img->rgb = NULL;
            goto done;
        }
        img->seed = p->r->seed + (uint64_t)(first + i);
        res->count++;
        /* handed out now, so a caller can save it before the next batch */
        if (p->r->on_image && (st = finish_image(m, p, img)) == KILN_OK &&
            p->r->on_image(p->r->user, img, res->count - 1))
            st = err_set(KILN_ERR_CANCELLED, "generation cancelled after image %d of %d", res->count,
                         p->r->num_images);
        if (st != KILN_OK)
            break;
    }
    res->timings.decode_s += clock_now() - decode_start;
    stage_done(p->perf, "decode", decode_ns);
    if (st != KILN_OK)
        goto done;
    d->images_done += batch;
done:
    free(x);
    free(start_noise);
    free(unet_x);
    free(timesteps);
    free(ctx);
    free(streams);
    p->perf->batch = -1;
    return st;
}

/* One generation; dbg (NULL: none) collects debug mode's findings. */
static kiln_status generate_once(kiln_model *m, const kiln_request *r, debug_run *dbg, kiln_result **out)
{
    /* Weights not prepared yet are read from the mapped file: one cut short
     * since load would fault (SIGBUS) there, one rewritten would mix old
     * and new weights. Refused here instead, naming the file. */
    kiln_status st = wstore_check_files(m->sd->ws);
    if (st != KILN_OK)
        return st;
    plan p;
    st = check_request(m, r, &p);
    if (st != KILN_OK)
        return st;
    uint64_t start_ns = clock_now_ns();
    if (dbg) {
        p.dbg = dbg;
        p.exec.check_finite = dbg->nonfinite != NULL;
        dbg->latent_values = p.latent_values;
        if (dbg->keep_latents && !(dbg->latents = malloc((size_t)r->num_images * p.latent_values * sizeof(float)))) {
            sampler_plan_free(&p.sampler_plan);
            return err_set(KILN_ERR_NOMEM, "cannot allocate the latents of %d images for debug mode", r->num_images);
        }
    }
    double start = clock_now();
    kiln_result *res = calloc(1, sizeof *res);
    gen_perf perf;
    gen_perf_init(&perf, r, res, start_ns);
    p.perf = &perf;
    float *context = NULL, *init_latent = NULL, *noise_nchw = NULL;
    if (!res || !(res->images = calloc((size_t)r->num_images, sizeof *res->images)) ||
        !(noise_nchw = malloc(p.latent_values * sizeof *noise_nchw))) {
        st = err_set(KILN_ERR_NOMEM, "cannot allocate the result of %d images", r->num_images);
        goto fail;
    }
    /* every step of every micro-batch */
    perf.step_cap = p.sampler_plan.calls * ((r->num_images + p.batch - 1) / p.batch);
    if (!(res->step_s = calloc((size_t)(perf.step_cap > 0 ? perf.step_cap : 1), sizeof *res->step_s))) {
        st = err_set(KILN_ERR_NOMEM, "cannot allocate the step times of %d steps", perf.step_cap);
        goto fail;
    }
    res->width = p.width, res->height = p.height, res->steps = p.steps, res->cfg_scale = p.cfg;
    res->plan = public_plan(&p.memory);
    res->sampler = sampler_name(p.sampler.kind);
    res->optimizations = p.active;
    memcpy(res->optimization_report, p.report, sizeof p.report);

    uint64_t stage_ns = clock_now_ns();
    double t0 = clock_now();
    st = encode_text(m, &p, &context);
    res->timings.text_s = clock_now() - t0;
    stage_done(&perf, "text", stage_ns);
    if (st != KILN_OK)
        goto fail;
    if (r->init_rgb) {
        stage_ns = clock_now_ns();
        t0 = clock_now();
        st = encode_init(m, &p, &init_latent);
        res->timings.encode_s = clock_now() - t0;
        stage_done(&perf, "encode", stage_ns);
        if (st != KILN_OK)
            goto fail;
    }

    denoiser d = {.m = m, .p = &p, .noise_nchw = noise_nchw, .started = clock_now(), .timings = &res->timings};
    for (int first = 0; first < r->num_images; first += p.batch) {
        int batch = r->num_images - first < p.batch ? r->num_images - first : p.batch;
        st = run_batch(m, &p, context, init_latent, first, batch, &d, res);
        if (st != KILN_OK)
            break;
    }
    res->timings.unet_s = d.unet_seconds;
    res->timings.unet_evals = d.unet_evals;
    res->timings.activation_bytes = m->unet.exec ? graph_exec_peak_bytes(m->unet.exec) : 0;
    res->timings.scratch_bytes = m->unet.exec ? graph_exec_scratch_bytes(m->unet.exec) : 0;
    if (st != KILN_OK && st != KILN_ERR_CANCELLED)
        goto fail;
    for (int i = 0; i < res->count; i++) {
        kiln_status pst = finish_image(m, &p, &res->images[i]);
        if (pst != KILN_OK) {
            st = pst;
            goto fail;
        }
    }
    res->timings.total_s = clock_now() - start;
    res->steps = p.sampler_plan.calls;
    unwatch(m);
    kiln_status pst = profile_result(&perf, res);
    if (pst != KILN_OK) {
        st = pst;
        goto fail;
    }
    sampler_plan_free(&p.sampler_plan);
    free(context);
    free(init_latent);
    free(noise_nchw);
    *out = res;
    return st;

fail:
    unwatch(m);
    sampler_plan_free(&p.sampler_plan);
    free(context);
    free(init_latent);
    free(noise_nchw);
    kiln_result_destroy(res);
    return st;
}

/* ---- debug mode: the validation against the f32 reference ---- */

/* The reference's progress reaches the caller as the "validate" stage. */
typedef struct validate_progress {
    const kiln_request *r;
    int cancelled;
} validate_progress;

static int on_validate_progress(void *user, const kiln_progress *pr)
{
    validate_progress *v = user;
    kiln_progress q = *pr;
    q.stage = "validate";
    if (v->r->on_progress(v->r->user, &q))
        v->cancelled = 1;
    return v->cancelled;
}

/* 10 log10(255^2 / mse); INFINITY for identical bytes. */
static double psnr_db(double sum_sq, size_t n)
{
    if (sum_sq == 0.0 || n == 0)
        return INFINITY;
    return 10.0 * log10(255.0 * 255.0 / (sum_sq / (double)n));
}

/* Runs r again on the f32 reference path (what tests/test_optimizations.c
 * holds every switch to) and compares with res and the latents the
 * optimized run kept. Fills res->debug; returns KILN_ERR_CANCELLED if the
 * caller cancelled, KILN_OK otherwise (a failed reference is reported in
 * res->debug.reference, not returned). */
static kiln_status validate(kiln_model *m, const kiln_request *r, const float *latents, kiln_result *res)
{
    kiln_debug_report *dr = &res->debug;
    double start = clock_now();
    kiln_model *ref_model = m, *loaded = NULL;
    kiln_status st = KILN_OK;
    if (m->precision != KILN_PRECISION_F32) {
        kiln_model_options mo;
        kiln_model_options_defaults(&mo);
        mo.tokenizer_dir = m->tokenizer_dir;
        mo.precision = "f32";
        st = kiln_model_load(m->engine, m->sd->path, &mo, &loaded);
        if (st != KILN_OK) {
            snprintf(dr->reference, sizeof dr->reference, "not run: loading the model again at f32: %s",
                     kiln_last_error());
            return KILN_OK;
        }
        ref_model = loaded;
    }
    kiln_optimizations ref;
    kiln_optimizations_defaults(&ref);
    ref.attention = KILN_ATTENTION_PLAIN;
    ref.attention_tile = 0;
    ref.fusion = 0;
    ref.winograd = 0;
    ref.memory = KILN_MEMORY_ALLOC;
    ref.fast_math = 0;
    ref.precision = KILN_PRECISION_F32;
    ref.threads = 0;
    ref.vae_tiling = 0;
    ref.vae_tile = 0;
    kiln_request rr = *r;
    rr.debug = 0;
    rr.optimizations = &ref;
    rr.on_image = NULL;
    rr.on_trace = NULL; /* the timeline is of the run whose images are returned */
    rr.num_images = res->count;
    validate_progress vp = {.r = r};
    if (r->on_progress) {
        rr.on_progress = on_validate_progress;
        rr.user = &vp;
    }
    debug_run rd = {.keep_latents = 1};
    kiln_result *want = NULL;
    st = generate_once(ref_model, &rr, &rd, &want);
    if (st != KILN_OK) {
        if (st == KILN_ERR_CANCELLED || vp.cancelled) {
            snprintf(dr->reference, sizeof dr->reference, "not run: cancelled");
            st = KILN_ERR_CANCELLED;
        } else {
            snprintf(dr->reference, sizeof dr->reference, "not run: %s", kiln_last_error());
            st = KILN_OK;
        }
        goto done;
    }
    snprintf(dr->reference, sizeof dr->reference,
             "f32 reference: plain attention, fusion off, direct convolutions, memory alloc, fast math off, "
             "f32 weights%s",
             loaded ? " (the model loaded again at f32)" : "");
    double total_sq = 0.0;
    size_t total_n = 0;
    dr->images = res->count;
    dr->psnr_min_db = INFINITY;
    for (int i = 0; i < res->count; i++) {
        const kiln_image *a = &res->images[i], *b = &want->images[i];
        size_t n = (size_t)a->width * a->height * 3;
        double sq = 0.0;
        for (size_t k = 0; k < n; k++) {
            double e = (double)a->rgb[k] - (double)b->rgb[k];
            sq += e * e;
        }
        dr->psnr_db[i] = psnr_db(sq, n);
        if (dr->psnr_db[i] < dr->psnr_min_db)
            dr->psnr_min_db = dr->psnr_db[i];
        total_sq += sq;
        total_n += n;
    }
    dr->psnr_mean_db = psnr_db(total_sq, total_n);
    size_t values = (size_t)res->count * rd.latent_values;
    double worst = 0.0, scale = 0.0;
    for (size_t k = 0; k < values; k++) {
        double e = fabs((double)latents[k] - (double)rd.latents[k]);
        worst = isnan(e) ? INFINITY : (e > worst ? e : worst); /* a NaN on either side is as far as it gets */
        double z = fabs((double)rd.latents[k]);
        scale = z > scale ? z : scale;
    }
    dr->latent_max_error = worst;
    dr->latent_max_abs = scale;
    dr->validated = 1;
done:
    dr->reference_s = clock_now() - start;
    kiln_result_destroy(want);
    free(rd.latents);
    kiln_model_destroy(loaded);
    return st;
}

kiln_status kiln_generate(kiln_model *m, const kiln_request *r, kiln_result **out)
{
    if (!r->debug)
        return generate_once(m, r, NULL, out);
    kiln_nonfinite nonfinite;
    memset(&nonfinite, 0, sizeof nonfinite);
    debug_run d = {.nonfinite = &nonfinite, .keep_latents = 1};
    kiln_result *res = NULL;
    kiln_status st = generate_once(m, r, &d, &res);
    if (st != KILN_OK && st != KILN_ERR_CANCELLED) {
        free(d.latents);
        return st;
    }
    res->debug.enabled = 1;
    res->debug.nonfinite = nonfinite;
    res->debug.check_s = d.check_s;
    if (st == KILN_ERR_CANCELLED)
        snprintf(res->debug.reference, sizeof res->debug.reference, "not run: cancelled");
    else
        st = validate(m, r, d.latents, res);
    free(d.latents);
    *out = res;
    return st;
}

kiln_status kiln_image_write_png(const kiln_image *img, const char *path, int overwrite)
{
    png_text_entry text = {"parameters", img->parameters ? img->parameters : ""};
    return png_write_rgb(path, img->rgb, img->width, img->height, &text, 1, overwrite);
}

kiln_status kiln_image_read_png(const char *path, uint8_t **rgb, int *width, int *height)
{
    return png_read_rgb(path, KILN_MAX_INIT_PIXELS, rgb, width, height);
}

kiln_status kiln_model_plan(kiln_model *m, const kiln_request *r, kiln_plan *out)
{
    plan p;
    kiln_status st = check_request(m, r, &p);
    if (st != KILN_OK)
        return st;
    sampler_plan_free(&p.sampler_plan);
    *out = public_plan(&p.memory);
    return KILN_OK;
}
