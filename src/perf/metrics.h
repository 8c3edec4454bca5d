/*
 * metrics.h - the metrics of one generation as JSON, the same for
 * `kiln generate --json` and the HTTP API's jobs.
 */
#ifndef KILN_PERF_METRICS_H
#define KILN_PERF_METRICS_H

#include <jansson.h>
#include <stdint.h>

#include "kiln.h"

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

#endif
