#include "perf/recorder.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cache_dir.h"
#include "core/clock.h"

/* ---- measurements ---- */

void perf_timer_start(perf_timer *t)
{
    t->cpu_s = clock_process_cpu();
    t->wall_ns = clock_now_ns();
}

uint64_t perf_peak_rss_bytes(void)
{
    /* VmHWM rather than getrusage's ru_maxrss: Linux carries ru_maxrss over
     * fork and exec, so a kiln started by a large process (a benchmark
     * script holding a model, kiln serve running kiln tune) would report
     * its parent's peak as its own */
    FILE *f = fopen("/proc/self/status", "re");
    if (f) {
        char line[256];
        unsigned long long kb = 0;
        int found = 0;
        while (!found && fgets(line, sizeof line, f))
            found = sscanf(line, "VmHWM: %llu kB", &kb) == 1;
        fclose(f);
        if (found)
            return (uint64_t)kb * 1024u;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; /* Linux: kilobytes */
}

static void fill(perf_sample *out, const char *op, double wall_s, double items, const char *unit)
{
    memset(out, 0, sizeof *out);
    snprintf(out->op, sizeof out->op, "%s", op ? op : "");
    snprintf(out->unit, sizeof out->unit, "%s", unit ? unit : "");
    out->wall_s = wall_s;
    out->items = items;
    out->per_s = items > 0 && wall_s > 0 ? items / wall_s : 0.0;
}

void perf_timer_stop(const perf_timer *t, const char *op, double items, const char *unit, uint64_t arena_bytes,
                     perf_sample *out)
{
    uint64_t now = clock_now_ns();
    double cpu = clock_process_cpu();
    fill(out, op, (double)(now - t->wall_ns) * 1e-9, items, unit);
    out->cpu_s = cpu - t->cpu_s;
    out->peak_rss_bytes = perf_peak_rss_bytes();
    out->arena_bytes = arena_bytes;
}

void perf_sample_wall(const char *op, double wall_s, double items, const char *unit, perf_sample *out)
{
    fill(out, op, wall_s, items, unit);
    out->cpu_s = -1.0;
}

json_t *perf_sample_json(const perf_sample *s)
{
    json_t *o = json_pack("{s:s, s:f}", "op", s->op, "wall_s", s->wall_s);
    if (!o)
        return NULL;
    if (s->cpu_s >= 0)
        json_object_set_new(o, "cpu_s", json_real(s->cpu_s));
    if (s->items > 0) {
        json_object_set_new(o, "items", json_real(s->items));
        json_object_set_new(o, "unit", json_string(s->unit));
        json_object_set_new(o, "per_s", json_real(s->per_s));
    }
    if (s->peak_rss_bytes)
        json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)s->peak_rss_bytes));
    if (s->arena_bytes)
        json_object_set_new(o, "arena_bytes", json_integer((json_int_t)s->arena_bytes));
    return o;
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double perf_percentile(const double *sorted, int n, double q)
{
    /* nearest rank; the small epsilon keeps q n that is an integer in
     * exact arithmetic (0.95 * 20) from rounding up to the next rank */
    int rank = (int)ceil(q * n - 1e-9);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

double perf_median(double *values, int n)
{
    qsort(values, (size_t)n, sizeof *values, cmp_double);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

void perf_stats_compute(double *values, int n, perf_stats *out)
{
    memset(out, 0, sizeof *out);
    if (n <= 0)
        return;
    qsort(values, (size_t)n, sizeof *values, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += values[i];
    out->count = n;
    out->mean = sum / n;
    out->min = values[0];
    out->max = values[n - 1];
    out->p50 = perf_percentile(values, n, 0.50);
    out->p95 = perf_percentile(values, n, 0.95);
}

json_t *perf_stats_json(const perf_stats *s)
{
    if (s->count == 0)
        return json_pack("{s:i, s:n, s:n, s:n, s:n, s:n}", "count", 0, "mean", "min", "max", "p50", "p95");
    return json_pack("{s:i, s:f, s:f, s:f, s:f, s:f}", "count", s->count, "mean", s->mean, "min", s->min, "max",
                     s->max, "p50", s->p50, "p95", s->p95);
}

/* ---- history ---- */

char *perf_history_default_path(void)
{
    char path[4096];
    return cache_dir_path("history.jsonl", path, sizeof path) == KILN_OK ? strdup(path) : NULL;
}

json_t *perf_record_create(const char *source, const perf_sample *samples, int count)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *ops = json_array();
    for (int i = 0; i < count; i++)
        json_array_append_new(ops, perf_sample_json(&samples[i]));
    return json_pack("{s:f, s:s, s:o}", "time", (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9, "source",
                     source ? source : "", "operations", ops);
}

static void message(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void message(char *msg, size_t size, const char *fmt, ...)
{
    if (!msg || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
}

/* An exclusive flock on path's lock file, path + ".lock" beside it: the
 * history itself is replaced by a trim, and a lock on a replaced file
 * would guard nothing. Returns the lock's descriptor (closing it unlocks),
 * or -1 with errno set. */
static int lock_history(const char *path)
{
    size_t size = strlen(path) + sizeof ".lock";
    char *name = malloc(size);
    if (!name) {
        errno = ENOMEM;
        return -1;
    }
    snprintf(name, size, "%s.lock", path);
    int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int saved = errno;
    free(name);
    if (fd < 0) {
        errno = saved;
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno == EINTR)
            continue;
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w, n -= (size_t)w;
    }
    return 0;
}

/* Replaces the file at path (locked, open as fd, size bytes) by its newest
 * whole lines within keep bytes: written beside it and renamed over it, so
 * a reader sees the old file or the new one, never half of either. */
static int trim_history(int fd, const char *path, off_t size, off_t keep)
{
    char *buf = malloc((size_t)keep + 1);
    size_t tmp_size = strlen(path) + 32;
    char *tmp = malloc(tmp_size);
    if (!buf || !tmp) {
        free(buf), free(tmp);
        errno = ENOMEM;
        return -1;
    }
    int rc = -1, saved = 0;
    ssize_t got = pread(fd, buf, (size_t)keep, size - keep);
    if (got == (ssize_t)keep) {
        /* the first line is cut unless the cut fell just after a newline */
        char before = '\n';
        if (size > keep && pread(fd, &before, 1, size - keep - 1) != 1)
            before = 0;
        size_t from = 0;
        if (before != '\n') {
            char *nl = memchr(buf, '\n', (size_t)keep);
            from = nl ? (size_t)(nl - buf) + 1 : (size_t)keep;
        }
        struct stat st;
        snprintf(tmp, tmp_size, "%s.trim.%ld", path, (long)getpid());
        int out = fstat(fd, &st) == 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 0777) : -1;
        if (out >= 0) {
            rc = write_all(out, buf + from, (size_t)keep - from) == 0 && fsync(out) == 0 ? 0 : -1;
            saved = errno;
            if (close(out) != 0 && rc == 0)
                rc = -1, saved = errno;
            if (rc == 0 && rename(tmp, path) != 0)
                rc = -1, saved = errno;
            if (rc != 0)
                unlink(tmp);
        } else {
            saved = errno;
        }
    } else {
        saved = got < 0 ? errno : EIO;
    }
    free(buf), free(tmp);
    errno = saved;
    return rc;
}

int perf_history_append_line(const char *path, const char *line, size_t n, size_t max_bytes, char *msg,
                             size_t msg_size)
{
    if (msg && msg_size)
        msg[0] = '\0';
    if (cache_dir_make_parents(path) != KILN_OK) {
        message(msg, msg_size, "%s", kiln_last_error());
        return -1;
    }
    int lock = lock_history(path);
    int fd = lock >= 0 ? open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
    int saved = 0, rc = 0;
    struct stat st;
    if (fd < 0 || write_all(fd, line, n) != 0) {
        saved = errno ? errno : EIO;
        rc = -1;
    } else if (max_bytes > 0 && fstat(fd, &st) == 0 && (size_t)st.st_size > max_bytes &&
               trim_history(fd, path, st.st_size, (off_t)(max_bytes / 2)) != 0) {
        /* the line is in: a failed trim only leaves the file long */
        message(msg, msg_size, "cannot trim %s: %s", path, strerror(errno));
    }
    if (fd >= 0 && close(fd) != 0 && rc == 0) {
        saved = errno;
        rc = -1;
    }
    if (lock >= 0)
        close(lock);
    if (rc != 0) {
        message(msg, msg_size, "cannot append to %s: %s", path, strerror(saved));
        errno = saved;
    }
    return rc;
}

int perf_history_append(const char *path, json_t *record, char *msg, size_t msg_size)
{
    char *line = json_dumps(record, JSON_COMPACT);
    if (!line) {
        message(msg, msg_size, "cannot format the record for %s", path);
        errno = ENOMEM;
        return -1;
    }
    size_t n = strlen(line);
    char *buf = realloc(line, n + 2);
    if (!buf) {
        free(line);
        errno = ENOMEM;
        message(msg, msg_size, "out of memory writing %s", path);
        return -1;
    }
    buf[n] = '\n';
    buf[n + 1] = '\0';
    int rc = perf_history_append_line(path, buf, n + 1, PERF_HISTORY_MAX_BYTES, msg, msg_size);
    free(buf);
    return rc;
}

/* ---- summaries ---- */

typedef struct op_values {
    char op[48], unit[16];
    double *wall, *per_s;
    int n, n_per_s, cap;
} op_values;

static op_values *find_op(op_values **ops, int *count, int *cap, const char *name)
{
    for (int i = 0; i < *count; i++)
        if (strcmp((*ops)[i].op, name) == 0)
            return &(*ops)[i];
    if (*count == *cap) {
        int grown = *cap ? 2 * *cap : 8;
        op_values *p = realloc(*ops, (size_t)grown * sizeof *p);
        if (!p)
            return NULL;
        *ops = p;
        *cap = grown;
    }
    op_values *v = &(*ops)[(*count)++];
    memset(v, 0, sizeof *v);
    snprintf(v->op, sizeof v->op, "%s", name);
    return v;
}

static int push(op_values *v, double wall, double per_s)
{
    if (v->n == v->cap) {
        int grown = v->cap ? 2 * v->cap : 16;
        double *w = realloc(v->wall, (size_t)grown * sizeof *w);
        if (!w)
            return -1;
        v->wall = w;
        double *p = realloc(v->per_s, (size_t)grown * sizeof *p);
        if (!p)
            return -1;
        v->per_s = p;
        v->cap = grown;
    }
    v->wall[v->n++] = wall;
    if (per_s > 0)
        v->per_s[v->n_per_s++] = per_s;
    return 0;
}

int perf_summary_read(const char *path, perf_summary *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    op_values *ops = NULL;
    int count = 0, cap = 0, rc = 0, records = 0, skipped = 0;
    char *line = NULL;
    size_t line_cap = 0;
    while (rc == 0 && getline(&line, &line_cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *list = json_object_get(o, "operations");
        if (!json_is_array(list)) {
            skipped++;
            json_decref(o);
            continue;
        }
        records++;
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s) {
            json_t *name = json_object_get(s, "op"), *wall = json_object_get(s, "wall_s");
            if (!json_is_string(name) || !json_is_number(wall))
                continue;
            op_values *v = find_op(&ops, &count, &cap, json_string_value(name));
            json_t *per_s = json_object_get(s, "per_s"), *unit = json_object_get(s, "unit");
            if (!v || push(v, json_number_value(wall), json_is_number(per_s) ? json_number_value(per_s) : 0) != 0) {
                errno = ENOMEM;
                rc = -1;
                break;
            }
            if (json_is_string(unit) && !v->unit[0])
                snprintf(v->unit, sizeof v->unit, "%s", json_string_value(unit));
        }
        json_decref(o);
    }
    if (rc == 0 && ferror(f))
        rc = -1;
    free(line);
    fclose(f);
    if (rc == 0 && count > 0 && !(out->ops = calloc((size_t)count, sizeof *out->ops))) {
        errno = ENOMEM;
        rc = -1;
    }
    for (int i = 0; i < count; i++) {
        if (rc == 0) {
            perf_op_summary *s = &out->ops[i];
            snprintf(s->op, sizeof s->op, "%s", ops[i].op);
            snprintf(s->unit, sizeof s->unit, "%s", ops[i].unit);
            perf_stats_compute(ops[i].wall, ops[i].n, &s->wall_s);
            perf_stats_compute(ops[i].per_s, ops[i].n_per_s, &s->per_s);
        }
        free(ops[i].wall);
        free(ops[i].per_s);
    }
    free(ops);
    if (rc != 0) {
        perf_summary_free(out);
        return -1;
    }
    out->count = count;
    out->records = records;
    out->skipped = skipped;
    return 0;
}

void perf_summary_free(perf_summary *s)
{
    free(s->ops);
    memset(s, 0, sizeof *s);
}

json_t *perf_summary_json(const perf_summary *s, const char *path)
{
    json_t *ops = json_array();
    for (int i = 0; i < s->count; i++) {
        const perf_op_summary *o = &s->ops[i];
        const perf_stats *w = &o->wall_s;
        json_t *e = json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:f}", "op", o->op, "runs", w->count, "mean_s",
                              w->mean, "min_s", w->min, "max_s", w->max, "p50_s", w->p50, "p95_s", w->p95);
        if (o->per_s.count) {
            json_object_set_new(e, "unit", json_string(o->unit));
            json_object_set_new(e, "per_s", perf_stats_json(&o->per_s));
        }
        json_array_append_new(ops, e);
    }
    return json_pack("{s:s?, s:i, s:i, s:o}", "file", path, "records", s->records, "skipped", s->skipped,
                     "operations", ops);
}

/* appends text to *buf, growing it; -1 when out of memory */
static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if (*buf && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return 0;
        }
        size_t grown = (*cap ? 2 * *cap : 1024) + (size_t)n;
        char *b = realloc(*buf, grown);
        if (!b)
            return -1;
        *buf = b;
        *cap = grown;
    }
}

/* a CSV field: quoted when it holds a comma, quote or line break */
static int append_field(char **buf, size_t *len, size_t *cap, const char *text)
{
    if (!strpbrk(text, ",\"\r\n"))
        return append(buf, len, cap, "%s", text);
    if (append(buf, len, cap, "\"") != 0)
        return -1;
    for (const char *p = text; *p; p++)
        if (append(buf, len, cap, *p == '"' ? "\"\"" : "%c", *p) != 0)
            return -1;
    return append(buf, len, cap, "\"");
}

char *perf_summary_csv(const perf_summary *s)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = append(&buf, &len, &cap, "op,runs,mean_s,min_s,max_s,p50_s,p95_s,unit,mean_per_s,p50_per_s\n");
    for (int i = 0; rc == 0 && i < s->count; i++) {
        const perf_op_summary *o = &s->ops[i];
        const perf_stats *w = &o->wall_s;
        rc = append_field(&buf, &len, &cap, o->op);
        if (rc == 0)
            rc = append(&buf, &len, &cap, ",%d,%.9g,%.9g,%.9g,%.9g,%.9g,", w->count, w->mean, w->min, w->max, w->p50,
                        w->p95);
        if (rc == 0)
            rc = append_field(&buf, &len, &cap, o->per_s.count ? o->unit : "");
        if (rc == 0 && o->per_s.count)
            rc = append(&buf, &len, &cap, ",%.9g,%.9g\n", o->per_s.mean, o->per_s.p50);
        else if (rc == 0)
            rc = append(&buf, &len, &cap, ",,\n");
    }
    if (rc != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
