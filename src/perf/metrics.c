#include "perf/metrics.h"

#include <stdlib.h>

#include "perf/recorder.h"

json_t *perf_metrics_json(const kiln_result *res, int threads, double cpu_s, uint64_t peak_rss_bytes)
{
    const kiln_timings *t = &res->timings;
    kiln_cpu_info cpu;
    kiln_cpu_query(&cpu);
    int passes = res->cfg_scale != 0.0f && res->cfg_scale != 1.0f ? 2 : 1;
    json_t *m = json_object();
    json_object_set_new(m, "inference_s", json_real(t->total_s));
    if (cpu_s >= 0)
        json_object_set_new(m, "cpu_s", json_real(cpu_s));
    json_object_set_new(m, "images_generated", json_integer(res->count));
    json_object_set_new(m, "precision", json_string(kiln_precision_name(res->optimizations.precision)));
    json_object_set_new(m, "machine", json_pack("{s:s, s:i, s:i, s:s}", "cpu", cpu.model, "cores", cpu.logical_cores,
                                                "threads", threads, "isa", kiln_isa_name(cpu.isa)));
    /* effective batch: the rows of one UNet evaluation (the unconditional
     * half included when guidance runs) */
    json_object_set_new(m, "batching", json_pack("{s:i, s:i, s:i}", "batch_size", res->plan.batch, "micro_batches",
                                                 res->plan.micro_batches, "effective_batch_size",
                                                 res->plan.batch * passes));
    json_t *active = json_object();
    for (int i = 0; i < KILN_OPT_COUNT; i++)
        json_object_set_new(active, kiln_opt_name((kiln_opt)i), json_string(res->optimization_report[i].active));
    json_object_set_new(m, "optimizations_active", active);
    json_t *steps = json_array();
    double *copy = malloc((size_t)(res->step_count ? res->step_count : 1) * sizeof *copy);
    for (int i = 0; i < res->step_count; i++) {
        json_array_append_new(steps, json_real(res->step_s[i]));
        if (copy)
            copy[i] = res->step_s[i];
    }
    perf_stats step_stats;
    perf_stats_compute(copy, copy ? res->step_count : 0, &step_stats);
    free(copy);
    json_object_set_new(m, "stages", json_pack("{s:f, s:f, s:f, s:f, s:f, s:o, s:o}", "text_s", t->text_s, "encode_s",
                                               t->encode_s, "denoise_s", t->denoise_s, "decode_s", t->decode_s,
                                               "total_s", t->total_s, "steps_s", steps, "step_s",
                                               perf_stats_json(&step_stats)));
    json_t *ops = json_array();
    for (int i = 0; i < res->op_count; i++) {
        const kiln_op_profile *o = &res->ops[i];
        json_array_append_new(ops, json_pack("{s:s, s:f, s:f, s:f, s:f, s:I}", "op", o->name, "seconds", o->seconds,
                                             "gflop", o->gflop, "gflops", o->gflops, "share", o->share, "nodes",
                                             (json_int_t)o->nodes));
    }
    json_object_set_new(m, "op_profile", json_pack("{s:i, s:o}", "graph_runs", res->graph_runs, "ops", ops));
    json_object_set_new(m, "memory", json_pack("{s:I, s:I, s:I}", "peak_rss_bytes", (json_int_t)peak_rss_bytes,
                                               "arena_bytes", (json_int_t)t->activation_bytes, "scratch_bytes",
                                               (json_int_t)t->scratch_bytes));
    json_object_set_new(m, "throughput",
                        json_pack("{s:f, s:f, s:f}", "images_per_s", t->total_s > 0 ? res->count / t->total_s : 0.0,
                                  "steps_per_s", t->denoise_s > 0 ? res->step_count / t->denoise_s : 0.0,
                                  "unet_evals_per_s", t->unet_s > 0 ? t->unet_evals / t->unet_s : 0.0));
    return m;
}


int perf_run_samples(const perf_run_times *t, perf_sample *out)
{
    int n = 0;
    perf_sample_wall("generate", t->total_s, t->images, "images", &out[n++]);
    perf_sample_wall("text", t->text_s, 0, NULL, &out[n++]);
    if (t->encode_s > 0)
        perf_sample_wall("encode", t->encode_s, 0, NULL, &out[n++]);
    perf_sample_wall("denoise", t->denoise_s, t->steps_run, "steps", &out[n++]);
    if (t->steps_run > 0)
        perf_sample_wall("step", t->denoise_s / t->steps_run, 1, "steps", &out[n++]);
    if (t->unet_evals > 0)
        perf_sample_wall("unet_eval", t->unet_s / t->unet_evals, 1, "evals", &out[n++]);
    perf_sample_wall("decode", t->decode_s, t->images, "images", &out[n++]);
    return n;
}
