/* The recorder (src/perf/recorder.c): nearest-rank percentiles against
 * values worked out by hand, a sample's numbers, the history file, and the
 * summary read back from it and exported as JSON and CSV (parsed again). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/recorder.h"
#include "test_support.h"

#define CHECK_NEAR(got, want, tol)                                                                       \
    CHECK(fabs((double)(got) - (double)(want)) <= (tol), "%s: expected %.9g, got %.9g", #got,             \
          (double)(want), (double)(got))

static void test_percentiles_by_hand(void)
{
    /* 1..10: p50 is the 5th value (ceil(0.5 * 10) = 5), p95 the 10th
     * (ceil(9.5) = 10), p10 the 1st */
    double ten[10] = {7, 3, 10, 1, 9, 2, 8, 4, 6, 5};
    perf_stats s;
    perf_stats_compute(ten, 10, &s);
    CHECK_EQ_INT(s.count, 10);
    CHECK_NEAR(s.mean, 5.5, 1e-12);
    CHECK_NEAR(s.min, 1, 0);
    CHECK_NEAR(s.max, 10, 0);
    CHECK_NEAR(s.p50, 5, 0);
    CHECK_NEAR(s.p95, 10, 0);
    CHECK_NEAR(perf_percentile(ten, 10, 0.10), 1, 0);
    CHECK_NEAR(perf_percentile(ten, 10, 0.11), 2, 0);

    /* 20 values 10, 20, ..., 200: 0.95 * 20 = 19 exactly, so p95 is the
     * 19th (190), not the 20th; p50 the 10th (100) */
    double twenty[20];
    for (int i = 0; i < 20; i++)
        twenty[19 - i] = 10.0 * (i + 1);
    perf_stats_compute(twenty, 20, &s);
    CHECK_NEAR(s.p95, 190, 0);
    CHECK_NEAR(s.p50, 100, 0);
    CHECK_NEAR(s.mean, 105, 1e-12);

    /* one value: every statistic is that value */
    double one[1] = {0.25};
    perf_stats_compute(one, 1, &s);
    CHECK(s.count == 1 && s.min == 0.25 && s.max == 0.25 && s.p50 == 0.25 && s.p95 == 0.25 && s.mean == 0.25,
          "one value 0.25: got count %d min %g max %g p50 %g p95 %g", s.count, s.min, s.max, s.p50, s.p95);

    /* three values: p50 = 2nd (ceil 1.5), p95 = 3rd (ceil 2.85) */
    double three[3] = {3.0, 1.0, 2.0};
    perf_stats_compute(three, 3, &s);
    CHECK_NEAR(s.p50, 2.0, 0);
    CHECK_NEAR(s.p95, 3.0, 0);

    /* none: count 0, and JSON nulls */
    perf_stats_compute(NULL, 0, &s);
    CHECK_EQ_INT(s.count, 0);
    json_t *j = perf_stats_json(&s);
    CHECK(json_is_null(json_object_get(j, "p95")), "no values: p95 must be null");
    json_decref(j);
}

/* the true median (what bench and tune report), by hand */
static void test_median(void)
{
    double odd[] = {3.0, 1.0, 2.0}, even[] = {4.0, 1.0, 3.0, 2.0}, one[] = {7.5};
    CHECK(perf_median(odd, 3) == 2.0, "median of 3, 1, 2: %g", perf_median(odd, 3));
    CHECK(odd[0] == 1.0 && odd[2] == 3.0, "sorted in place: %g .. %g", odd[0], odd[2]);
    CHECK(perf_median(even, 4) == 2.5, "median of 4, 1, 3, 2: %g", perf_median(even, 4));
    CHECK(perf_median(one, 1) == 7.5, "median of one value: %g", perf_median(one, 1));
}

static void test_sample(void)
{
    perf_timer t;
    perf_timer_start(&t);
    /* burn some CPU so cpu_s is measurably positive */
    volatile double x = 0;
    for (int i = 0; i < 20000000; i++)
        x += (double)i * 1e-9;
    perf_sample s;
    perf_timer_stop(&t, "spin", 4, "images", 1234, &s);
    CHECK(strcmp(s.op, "spin") == 0 && strcmp(s.unit, "images") == 0, "names: got '%s' '%s'", s.op, s.unit);
    CHECK(s.wall_s > 0, "wall_s must be positive, got %g", s.wall_s);
    CHECK(s.cpu_s > 0, "cpu_s must be positive after a busy loop, got %g", s.cpu_s);
    CHECK_NEAR(s.per_s, 4.0 / s.wall_s, 1e-9 * s.per_s);
    CHECK(s.peak_rss_bytes > 1u << 20, "peak RSS of a running process: got %llu bytes",
          (unsigned long long)s.peak_rss_bytes);
    CHECK_EQ_INT(s.arena_bytes, 1234);

    perf_sample w;
    perf_sample_wall("decode", 0.5, 2, "images", &w);
    CHECK_NEAR(w.per_s, 4.0, 1e-12);
    json_t *j = perf_sample_json(&w);
    CHECK(json_object_get(j, "cpu_s") == NULL, "a wall-only sample has no cpu_s");
    CHECK_NEAR(json_number_value(json_object_get(j, "per_s")), 4.0, 1e-12);
    json_decref(j);
}

static void test_default_path(void)
{
    char *saved_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    setenv("HOME", "/h", 1);
    char *p = perf_history_default_path();
    CHECK(p && strcmp(p, "/x/cache/kiln/history.jsonl") == 0, "XDG: got '%s'", p ? p : "(null)");
    free(p);
    setenv("XDG_CACHE_HOME", "relative", 1); /* invalid per the XDG spec */
    p = perf_history_default_path();
    CHECK(p && strcmp(p, "/h/.cache/kiln/history.jsonl") == 0, "relative XDG: got '%s'", p ? p : "(null)");
    free(p);
    unsetenv("XDG_CACHE_HOME");
    p = perf_history_default_path();
    CHECK(p && strcmp(p, "/h/.cache/kiln/history.jsonl") == 0, "HOME: got '%s'", p ? p : "(null)");
    free(p);
    unsetenv("HOME");
    p = perf_history_default_path();
    CHECK(p == NULL, "neither: got '%s'", p ? p : "(null)");
    free(p);
    if (saved_xdg)
        setenv("XDG_CACHE_HOME", saved_xdg, 1);
    if (saved_home)
        setenv("HOME", saved_home, 1);
    free(saved_xdg);
    free(saved_home);
}

/* writes records with "generate" taking 1..n seconds (2 images each) and
 * "text" 0.1 s, plus lines the summary must skip */
static char *write_history(int n)
{
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/a/b/c/history.jsonl", test_tmp_dir());
    char msg[512];
    for (int i = 1; i <= n; i++) {
        perf_sample s[2];
        perf_sample_wall("generate", (double)i, 2, "images", &s[0]);
        perf_sample_wall("text, \"quoted\"", 0.1, 0, NULL, &s[1]);
        json_t *r = perf_record_create("test", s, 2);
        int rc = perf_history_append(path, r, msg, sizeof msg);
        CHECK(rc == 0, "append %d: %s", i, msg);
        json_decref(r);
    }
    /* a server job record and a damaged line */
    FILE *f = fopen(path, "a");
    fputs("{\"id\": 3, \"status\": \"ok\", \"timings\": {\"total_s\": 9}}\n{not json\n", f);
    fclose(f);
    return path;
}

static void test_history_and_summary(void)
{
    char *path = write_history(20);
    /* each append is one line that parses on its own */
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "history %s must exist", path);
    int lines = 0;
    char buf[4096];
    while (f && fgets(buf, sizeof buf, f))
        lines++;
    if (f)
        fclose(f);
    CHECK_EQ_INT(lines, 22);

    perf_summary s;
    CHECK(perf_summary_read(path, &s) == 0, "summary of %s: %s", path, strerror(errno));
    CHECK_EQ_INT(s.records, 20);
    CHECK_EQ_INT(s.skipped, 2);
    CHECK_EQ_INT(s.count, 2);
    if (s.count == 2) {
        const perf_op_summary *g = &s.ops[0];
        CHECK(strcmp(g->op, "generate") == 0, "first op: got '%s'", g->op);
        CHECK_EQ_INT(g->wall_s.count, 20);
        CHECK_NEAR(g->wall_s.mean, 10.5, 1e-12);
        CHECK_NEAR(g->wall_s.min, 1, 0);
        CHECK_NEAR(g->wall_s.max, 20, 0);
        CHECK_NEAR(g->wall_s.p50, 10, 0);
        CHECK_NEAR(g->wall_s.p95, 19, 0);
        /* throughput 2/i images per second: p50 is the 10th smallest of
         * 2/20 .. 2/1, i.e. 2/11 */
        CHECK_NEAR(g->per_s.p50, 2.0 / 11.0, 1e-12);
        CHECK_EQ_INT(s.ops[1].per_s.count, 0);
    }

    /* JSON export, parsed back */
    json_t *j = perf_summary_json(&s, path);
    char *text = json_dumps(j, 0);
    json_decref(j);
    json_error_t err;
    json_t *back = json_loads(text, 0, &err);
    free(text);
    CHECK(back != NULL, "summary JSON must parse: %s", err.text);
    json_t *ops = json_object_get(back, "operations");
    CHECK(json_array_size(ops) == 2, "operations: got %zu", json_array_size(ops));
    json_t *g = json_array_get(ops, 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(g, "runs")), 20);
    CHECK_NEAR(json_number_value(json_object_get(g, "p95_s")), 19, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(json_object_get(g, "per_s"), "max")), 2, 1e-12);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(ops, 1), "op")), "text, \"quoted\"") == 0,
          "second op name must survive JSON");
    json_decref(back);

    /* CSV export, parsed back field by field */
    char *csv = perf_summary_csv(&s);
    CHECK(csv != NULL, "CSV export");
    if (csv) {
        char *line2 = strchr(csv, '\n');
        static const char header[] = "op,runs,mean_s,min_s,max_s,p50_s,p95_s,unit,mean_per_s,p50_per_s\n";
        CHECK(strncmp(csv, header, sizeof header - 1) == 0,
              "CSV header: got '%.80s'", csv);
        char op[64];
        int runs;
        double mean, mn, mx, p50, p95, mean_per_s, p50_per_s;
        int got = line2 ? sscanf(line2 + 1, "%63[^,],%d,%lf,%lf,%lf,%lf,%lf,images,%lf,%lf", op, &runs, &mean, &mn,
                                 &mx, &p50, &p95, &mean_per_s, &p50_per_s)
                        : 0;
        CHECK(got == 9, "first CSV row must have 9 fields, parsed %d", got);
        if (got == 9) {
            CHECK(strcmp(op, "generate") == 0 && runs == 20, "CSV row: %s %d", op, runs);
            CHECK_NEAR(mean, 10.5, 1e-6);
            CHECK_NEAR(p95, 19, 1e-6);
            CHECK_NEAR(p50_per_s, 2.0 / 11.0, 1e-6);
        }
        /* the name with a comma and quotes is quoted, quotes doubled */
        CHECK(strstr(csv, "\n\"text, \"\"quoted\"\"\",20,0.1,0.1,0.1,0.1,0.1,,,\n") != NULL, "quoted CSV row in:\n%s",
              csv);
        free(csv);
    }
    perf_summary_free(&s);

    /* a missing file is an empty summary, not an error */
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/none/history.jsonl", test_tmp_dir());
    CHECK(perf_summary_read(missing, &s) == 0 && s.count == 0 && s.records == 0, "missing file: count %d", s.count);
    perf_summary_free(&s);
    free(path);
}

static void test_append_failure_names_path(void)
{
    /* a folder that is a file: mkdir -p cannot make it */
    char blocker[4200], path[4300], msg[512] = "";
    snprintf(blocker, sizeof blocker, "%s/blocker", test_tmp_dir());
    FILE *f = fopen(blocker, "w");
    fclose(f);
    snprintf(path, sizeof path, "%s/kiln/history.jsonl", blocker);
    perf_sample s;
    perf_sample_wall("x", 1, 0, NULL, &s);
    json_t *r = perf_record_create("test", &s, 1);
    int rc = perf_history_append(path, r, msg, sizeof msg);
    json_decref(r);
    CHECK(rc == -1, "appending under a file must fail");
    CHECK(strstr(msg, blocker) != NULL, "the message must name the path: '%s'", msg);
}

/* ---- trimming ---- */

/* Reads path's lines as JSON objects: each writer's ("w") record numbers
 * ("n") in file order into seq[w] (up to cap each, count in len[w]), and
 * the number of lines; -1 on a line that does not parse. */
static int read_numbered(const char *path, int writers, int cap, int seq[][400], int *len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[1024];
    int lines = 0;
    memset(len, 0, (size_t)writers * sizeof *len);
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        int w = o ? (int)json_integer_value(json_object_get(o, "w")) : -1;
        int n = o ? (int)json_integer_value(json_object_get(o, "n")) : -1;
        json_decref(o);
        if (!o || w < 0 || w >= writers || n < 0) {
            fclose(f);
            return -1;
        }
        if (len[w] < cap)
            seq[w][len[w]++] = n;
        lines++;
    }
    fclose(f);
    return lines;
}

static int append_numbered(const char *path, int w, int n, size_t max_bytes)
{
    char line[256], msg[512];
    int len = snprintf(line, sizeof line, "{\"w\": %d, \"n\": %d, \"pad\": \"%080d\"}\n", w, n, n);
    int rc = perf_history_append_line(path, line, (size_t)len, max_bytes, msg, sizeof msg);
    if (rc != 0 || msg[0])
        fprintf(stderr, "append %d/%d: %s\n", w, n, msg);
    return rc != 0 || msg[0] ? -1 : 0;
}

/* Past max_bytes the file keeps its newest whole lines, half of it, and
 * never more than max_bytes; nothing but the lock file is left beside it. */
static void test_history_is_trimmed(void)
{
    char path[4200], dir[4096];
    snprintf(dir, sizeof dir, "%s/trim", test_tmp_dir());
    snprintf(path, sizeof path, "%s/history.jsonl", dir);
    const size_t max_bytes = 4096; /* about 35 lines of 118 bytes */
    size_t largest = 0;
    for (int i = 0; i < 300; i++) {
        if (append_numbered(path, 0, i, max_bytes) != 0) {
            CHECK(0, "append %d", i);
            return;
        }
        struct stat st;
        if (stat(path, &st) == 0 && (size_t)st.st_size > largest)
            largest = (size_t)st.st_size;
    }
    static int seq[1][400];
    int len[1];
    int lines = read_numbered(path, 1, 400, seq, len);
    CHECK(lines > 10 && (size_t)lines * 118 <= max_bytes, "after trimming: %d whole lines expected within %zu bytes",
          lines, max_bytes);
    CHECK(largest <= max_bytes, "the file reached %zu bytes; at most %zu expected", largest, max_bytes);
    int contiguous = lines > 0 && seq[0][lines - 1] == 299;
    for (int i = 1; i < lines; i++)
        contiguous &= seq[0][i] == seq[0][i - 1] + 1;
    CHECK(contiguous, "the newest records, in order, ending at 299: first %d, last %d of %d", lines ? seq[0][0] : -1,
          lines ? seq[0][lines - 1] : -1, lines);
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s' | tr '\\n' ' ')\" = 'history.jsonl history.jsonl.lock '", dir);
    CHECK(system(cmd) == 0, "only history.jsonl and its lock file must be left in %s", dir);
}

/* Writers in four processes, trimming as they go: every line whole, and
 * each writer's records that are left a run without holes (a trim that
 * raced an append would drop a line in the middle). */
static void test_history_writers_take_turns(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/turns/history.jsonl", test_tmp_dir());
    enum { WRITERS = 4, EACH = 300 };
    pid_t pids[WRITERS];
    int start[2];
    if (pipe(start) != 0) {
        CHECK(0, "pipe: %s", strerror(errno));
        return;
    }
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            char c;
            close(start[1]);
            if (read(start[0], &c, 1) != 0) /* all start together, when the parent closes its end */
                _exit(1);
            for (int i = 0; i < EACH; i++)
                if (append_numbered(path, w, i, 8192) != 0)
                    _exit(1);
            _exit(0);
        }
    }
    close(start[0]);
    close(start[1]);
    int failed = 0;
    for (int w = 0; w < WRITERS; w++) {
        int status = 0;
        failed |= pids[w] < 0 || waitpid(pids[w], &status, 0) != pids[w] || !WIFEXITED(status) ||
                  WEXITSTATUS(status) != 0;
    }
    CHECK(!failed, "every writer must append all its lines");
    static int seq[WRITERS][400];
    int len[WRITERS];
    int lines = read_numbered(path, WRITERS, 400, seq, len);
    CHECK(lines > 0, "every line must parse (%d)", lines);
    for (int w = 0; w < WRITERS && lines > 0; w++) {
        int holes = 0;
        for (int i = 1; i < len[w]; i++)
            holes += seq[w][i] != seq[w][i - 1] + 1;
        CHECK(holes == 0, "writer %d: %d holes in its %d records left", w, holes, len[w]);
    }
    CHECK(lines > 0 && len[0] + len[1] + len[2] + len[3] == lines, "lines %d", lines);
}

TEST_MAIN(TEST(test_percentiles_by_hand), TEST(test_median), TEST(test_sample), TEST(test_default_path), TEST(test_history_and_summary),
          TEST(test_append_failure_names_path), TEST(test_history_is_trimmed), TEST(test_history_writers_take_turns))
