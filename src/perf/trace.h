/*
 * trace.h - a timeline of slices written as Chrome trace-event JSON, the
 * format chrome://tracing and Perfetto (ui.perfetto.dev) open:
 *
 *   {"traceEvents": [{"name", "cat", "ph": "X", "ts", "dur", "pid", "tid",
 *                     "args": {...}}, ...],
 *    "displayTimeUnit": "ms"}
 *
 * Every slice is a complete event (ph "X") with ts and dur in
 * microseconds (fractions kept to the nanosecond). Slices on one thread
 * nest by time: a stage that encloses nodes shows as their parent.
 * One writer per trace; not thread-safe.
 */
#ifndef KILN_PERF_TRACE_H
#define KILN_PERF_TRACE_H

#include <stddef.h>

typedef struct perf_trace perf_trace;

/* NULL when out of memory. */
perf_trace *perf_trace_create(void);
void perf_trace_destroy(perf_trace *t);

/* Adds a slice: name and cat are copied; start_s and dur_s in seconds
 * from the trace's zero; graph may be NULL; batch < 0, step <= 0 and
 * flops <= 0 are left out of the args (flops is written as "gflop" and,
 * with the duration, "gflops": the rate the slice ran at). Returns 0, or
 * -1 when out of memory (the slice is dropped and counted in
 * perf_trace_dropped). */
int perf_trace_add(perf_trace *t, const char *name, const char *cat, const char *graph, double start_s,
                   double dur_s, int batch, int step, double flops);

size_t perf_trace_count(const perf_trace *t);
size_t perf_trace_dropped(const perf_trace *t);

/* Writes the trace to path through a temporary file in the same folder
 * and a rename, so a reader never sees half a file. Returns 0, or -1 with
 * a message naming the path in msg. */
int perf_trace_write(const perf_trace *t, const char *path, char *msg, size_t msg_size);

#endif
