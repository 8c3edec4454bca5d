/*
 * metrics.h - the metrics of one generation as JSON, the same for
 * `kiln generate --json` and the HTTP API's jobs.
 */
#ifndef KILN_PERF_METRICS_H
#define KILN_PERF_METRICS_H

#include <jansson.h>
#include <stdint.h>

#include "kiln.h"
#include "perf/recorder.h"

/* A new object about res: "inference_s", "cpu_s" (when cpu_s >= 0),
 * "images_generated", "precision", "machine" {cpu, cores, threads, isa},
 * "batching" {batch_size, micro_batches, effective_batch_size: the rows of
 * one UNet evaluation, the unconditional half included when guidance
 * runs}, "optimizations_active" {switch: value}, "stages" {text_s,
 * encode_s, denoise_s, decode_s, total_s, steps_s: [each step], step_s:
 * statistics}, "op_profile" {graph_runs, ops: [{op, seconds, gflop,
 * gflops, share, nodes}]}, "memory" {peak_rss_bytes, arena_bytes,
 * scratch_bytes}, "throughput" {images_per_s, steps_per_s,
 * unet_evals_per_s}. threads: the engine's. NULL when out of memory. */
json_t *perf_metrics_json(const kiln_result *res, int threads, double cpu_s, uint64_t peak_rss_bytes);

/* The stage times of one generation, as the history keeps them. */
typedef struct perf_run_times {
    double total_s, text_s, encode_s, denoise_s, decode_s, unet_s;
    int unet_evals;
    int steps_run; /* sampler steps over every micro-batch */
    int images;
} perf_run_times;

#define PERF_RUN_OPS 7

/* The run as the recorder's operations, wall time only: "generate"
 * (images), "text", "encode" (img2img only), "denoise" (steps), "step"
 * (the mean step), "unet_eval" (the mean evaluation), "decode" (images).
 * Fills out[PERF_RUN_OPS] and returns how many it used. kiln generate and
 * kiln serve both write these, so kiln bench --history summarises either's
 * runs under the same names. */
int perf_run_samples(const perf_run_times *t, perf_sample *out);

#endif
