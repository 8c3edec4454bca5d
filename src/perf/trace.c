#include "perf/trace.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct slice {
    char *name;
    int cat, graph; /* indices into the interned labels; graph -1 for none */
    double start_s, dur_s, flops;
    int batch, step;
} slice;

#define TRACE_LABELS 64

struct perf_trace {
    slice *slices;
    size_t count, cap, dropped;
    char *labels[TRACE_LABELS]; /* categories and graph names: few, repeated in every slice */
    int n_labels;
};

perf_trace *perf_trace_create(void)
{
    return calloc(1, sizeof(perf_trace));
}

void perf_trace_destroy(perf_trace *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->count; i++)
        free(t->slices[i].name);
    for (int i = 0; i < t->n_labels; i++)
        free(t->labels[i]);
    free(t->slices);
    free(t);
}

/* the label's index, added if new; -1 when out of room or memory */
static int intern(perf_trace *t, const char *label)
{
    for (int i = 0; i < t->n_labels; i++)
        if (strcmp(t->labels[i], label) == 0)
            return i;
    if (t->n_labels == TRACE_LABELS || !(t->labels[t->n_labels] = strdup(label)))
        return -1;
    return t->n_labels++;
}

int perf_trace_add(perf_trace *t, const char *name, const char *cat, const char *graph, double start_s,
                   double dur_s, int batch, int step, double flops)
{
    if (t->count == t->cap) {
        size_t grown = t->cap ? 2 * t->cap : 4096;
        slice *s = realloc(t->slices, grown * sizeof *s);
        if (!s) {
            t->dropped++;
            return -1;
        }
        t->slices = s;
        t->cap = grown;
    }
    slice *s = &t->slices[t->count];
    s->cat = intern(t, cat && cat[0] ? cat : "node");
    s->graph = graph ? intern(t, graph) : -1;
    s->name = strdup(name && name[0] ? name : "(unnamed)");
    if (s->cat < 0 || (graph && s->graph < 0) || !s->name) {
        free(s->name);
        t->dropped++;
        return -1;
    }
    s->start_s = start_s;
    s->dur_s = dur_s > 0 ? dur_s : 0.0;
    s->flops = flops > 0 ? flops : 0.0;
    s->batch = batch;
    s->step = step;
    t->count++;
    return 0;
}

size_t perf_trace_count(const perf_trace *t)
{
    return t->count;
}

size_t perf_trace_dropped(const perf_trace *t)
{
    return t->dropped;
}

static json_t *slice_json(const perf_trace *t, const slice *s)
{
    json_t *args = json_object();
    if (s->graph >= 0)
        json_object_set_new(args, "graph", json_string(t->labels[s->graph]));
    if (s->batch >= 0)
        json_object_set_new(args, "batch", json_integer(s->batch));
    if (s->step > 0)
        json_object_set_new(args, "step", json_integer(s->step));
    if (s->flops > 0) {
        json_object_set_new(args, "gflop", json_real(s->flops * 1e-9));
        if (s->dur_s > 0)
            json_object_set_new(args, "gflops", json_real(s->flops * 1e-9 / s->dur_s));
    }
    /* microseconds, to the nanosecond */
    return json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:o}", "name", s->name, "cat", t->labels[s->cat], "ph", "X",
                     "ts", (double)(long long)(s->start_s * 1e9 + 0.5) / 1e3, "dur",
                     (double)(long long)(s->dur_s * 1e9 + 0.5) / 1e3, "pid", 1, "tid", 1, "args", args);
}

static int write_sorted(const perf_trace *t, const slice **order, const char *path, char *msg, size_t msg_size)
{
    char tmp[4096];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path) : 0;
    if (snprintf(tmp, sizeof tmp, "%.*s%s.kiln-trace-XXXXXX", dir_len, path, slash ? "/" : "") >= (int)sizeof tmp) {
        snprintf(msg, msg_size, "%s: the name is too long", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(msg, msg_size, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fchmod(fd, 0644); /* mkstemp's 0600 is for secrets; a trace is meant to be opened elsewhere */
    FILE *f = fdopen(fd, "w");
    if (!f) {
        snprintf(msg, msg_size, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok = fputs("{\"traceEvents\":[\n", f) >= 0;
    for (size_t i = 0; ok && i < t->count; i++) {
        json_t *e = slice_json(t, order[i]);
        ok = e && json_dumpf(e, f, JSON_COMPACT | JSON_REAL_PRECISION(15)) == 0 &&
             fputs(i + 1 < t->count ? ",\n" : "\n", f) >= 0;
        json_decref(e);
    }
    ok = ok && fputs("],\"displayTimeUnit\":\"ms\"}\n", f) >= 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp);
        snprintf(msg, msg_size, "cannot write %s: %s", path, strerror(saved ? saved : EIO));
        return -1;
    }
    return 0;
}

/* by start, and the longer first at equal starts: parents before the
 * slices they enclose, as viewers that nest by file order want them */
static int by_start(const void *a, const void *b)
{
    const slice *x = *(const slice *const *)a, *y = *(const slice *const *)b;
    if (x->start_s != y->start_s)
        return x->start_s < y->start_s ? -1 : 1;
    return x->dur_s > y->dur_s ? -1 : x->dur_s < y->dur_s;
}

int perf_trace_write(const perf_trace *t, const char *path, char *msg, size_t msg_size)
{
    const slice **order = malloc((t->count ? t->count : 1) * sizeof *order);
    if (!order) {
        snprintf(msg, msg_size, "cannot write %s: out of memory", path);
        return -1;
    }
    for (size_t i = 0; i < t->count; i++)
        order[i] = &t->slices[i];
    qsort(order, t->count, sizeof *order, by_start);
    int rc = write_sorted(t, order, path, msg, msg_size);
    free(order);
    return rc;
}
