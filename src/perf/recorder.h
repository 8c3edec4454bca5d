/*
 * recorder.h - measuring named operations, keeping their history across
 * runs, and summarising it.
 *
 *   perf_timer t;  perf_timer_start(&t);
 *   ... the operation ...
 *   perf_sample s; perf_timer_stop(&t, "generate", 4, "images", arena_bytes, &s);
 *
 * A sample holds the wall time (monotonic clock), the CPU time of the
 * whole process over the same span (all threads), the process's peak RSS
 * so far (getrusage: a high-water mark since the process started, not of
 * this operation alone), the engine arena's high-water mark the caller
 * passes in, and the throughput (items per wall second).
 *
 * The history is a JSON-lines file, one object per run:
 *   {"time": unix seconds, "source": "kiln generate", ...,
 *    "operations": [{"op", "wall_s", "cpu_s", "items", "unit", "per_s",
 *                    "peak_rss_bytes", "arena_bytes"}, ...]}
 * at $XDG_CACHE_HOME/kiln/history.jsonl (or $HOME/.cache/kiln/...), the
 * file `kiln serve` also keeps its job records in (its ok jobs carry
 * "operations" too; lines without them are skipped by the summary here).
 *
 * Percentiles are nearest-rank: p_q is the smallest value with at least
 * q of the values at or below it (sorted[ceil(q n) - 1]); no interpolation,
 * so every percentile is a value that was measured.
 *
 * Nothing here keeps global state; every function is thread-safe on
 * distinct arguments.
 */
#ifndef KILN_PERF_RECORDER_H
#define KILN_PERF_RECORDER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* ---- measurements ---- */

typedef struct perf_timer {
    uint64_t wall_ns;
    double cpu_s;
} perf_timer;

typedef struct perf_sample {
    char op[48];
    double wall_s, cpu_s;
    double items;    /* units of work done: images, steps; 0 when none */
    char unit[16];   /* "images"; "" when none */
    double per_s;    /* items / wall_s; 0 when either is 0 */
    uint64_t peak_rss_bytes; /* the process's peak so far; 0 when unknown */
    uint64_t arena_bytes;    /* the caller's arena high-water mark; 0 when none */
} perf_sample;

void perf_timer_start(perf_timer *t);
/* Fills *out for the span since perf_timer_start. op and unit are copied
 * (cut to fit); unit may be NULL. */
void perf_timer_stop(const perf_timer *t, const char *op, double items, const char *unit, uint64_t arena_bytes,
                     perf_sample *out);

/* A sample of an operation timed elsewhere (wall seconds only: cpu_s and
 * peak_rss_bytes are set to -1 and 0, meaning not measured). */
void perf_sample_wall(const char *op, double wall_s, double items, const char *unit, perf_sample *out);

/* This process image's peak resident set, bytes: Linux's VmHWM (since
 * exec, or since the last reset of the high-water mark, as kiln serve
 * resets it per job), else getrusage's ru_maxrss; 0 if unknown. */
uint64_t perf_peak_rss_bytes(void);

/* The sample as a JSON object (a new reference); cpu_s < 0 is left out. */
json_t *perf_sample_json(const perf_sample *s);

/* ---- statistics ---- */

typedef struct perf_stats {
    int count;
    double mean, min, max, p50, p95; /* all 0 when count is 0 */
} perf_stats;

/* The nearest-rank percentile q (0 < q <= 1) of n >= 1 sorted values. */
double perf_percentile(const double *sorted, int n, double q);

/* The median of n >= 1 values (the mean of the two middle ones when n is
 * even); sorts values in place, so values[0] and values[n - 1] are then
 * the minimum and the maximum. */
double perf_median(double *values, int n);

/* Statistics of n values; sorts values in place. */
void perf_stats_compute(double *values, int n, perf_stats *out);

/* {"count", "mean", "min", "max", "p50", "p95"}: numbers, or null each
 * (count 0) when there were no values. A new reference. */
json_t *perf_stats_json(const perf_stats *s);

/* ---- history ---- */

/* The history file's path (malloc'd): $XDG_CACHE_HOME/kiln/history.jsonl
 * when XDG_CACHE_HOME is set and absolute, else
 * $HOME/.cache/kiln/history.jsonl; NULL when neither is usable. */
char *perf_history_default_path(void);

/* A history record: {"time", "source", "operations": [samples]} (a new
 * reference); the caller may add fields before appending. */
json_t *perf_record_create(const char *source, const perf_sample *samples, int count);

/* The history is kept under this size: an append that takes the file past
 * it rewrites the file with its newest lines, half of it (some thousands
 * of runs), so a server's history does not grow without end and its
 * summary stays quick to read. */
#define PERF_HISTORY_MAX_BYTES ((size_t)8 << 20)

/* Appends record as one line to path, creating the file's folders as
 * `mkdir -p` would, and trims the file to PERF_HISTORY_MAX_BYTES. Returns
 * 0, or -1 with errno set and a message naming the path in msg (when msg
 * is not NULL). */
int perf_history_append(const char *path, json_t *record, char *msg, size_t msg_size);

/* Appends line (n bytes, ending in a newline) to path, as above, and when
 * the file is then over max_bytes (0: no limit) replaces it by its newest
 * whole lines within max_bytes / 2. Writers of the same file, in this
 * process or others, take turns by an flock on path + ".lock" (an empty
 * file left beside it), so lines never interleave and a trim never drops
 * another writer's line; readers need no lock: they see the file before
 * or after a trim (it is renamed into place). A failed
 * trim leaves the file long and says so in msg, returning 0: the line is
 * in. */
int perf_history_append_line(const char *path, const char *line, size_t n, size_t max_bytes, char *msg,
                             size_t msg_size);

/* ---- summaries ---- */

typedef struct perf_op_summary {
    char op[48];
    perf_stats wall_s;   /* over the runs */
    perf_stats per_s;    /* throughput over the runs that had items */
    char unit[16];
} perf_op_summary;

typedef struct perf_summary {
    perf_op_summary *ops; /* in order of first appearance */
    int count;
    int records;          /* lines read that were recorder records */
    int skipped;          /* lines that were not (other writers' records, damaged lines) */
} perf_summary;

/* Reads the history at path and summarises each operation. A missing file
 * is an empty summary. Returns 0, or -1 when the file exists but cannot be
 * read or memory runs out (errno set). Free with perf_summary_free. */
int perf_summary_read(const char *path, perf_summary *out);
void perf_summary_free(perf_summary *s);

/* {"file", "records", "skipped", "operations": [{"op", "runs", "mean_s",
 * "min_s", "max_s", "p50_s", "p95_s", "unit", "per_s": stats}]}. A new
 * reference; path may be NULL. */
json_t *perf_summary_json(const perf_summary *s, const char *path);

/* A header line "op,runs,mean_s,min_s,max_s,p50_s,p95_s,unit,mean_per_s,p50_per_s"
 * then one line per operation (RFC 4180 quoting where needed). Malloc'd; NULL
 * when out of memory. */
char *perf_summary_csv(const perf_summary *s);

#endif
