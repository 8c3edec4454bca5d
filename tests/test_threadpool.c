/* Thread pool: coverage of both schedules, thread indices, nesting, several
 * outside callers at once, pool lifetimes. Written against threadpool.h. */
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/threadpool.h"
#include "test_support.h"

#define MAX_THREADS 1024
#define MAX_N 100003

/* A hang (a deadlock in nesting or under contention) must fail the test,
 * not stall the suite: an alarm ends the process with a message. */
static void watchdog_fired(int sig)
{
    static const char msg[] = "FAIL watchdog: a thread pool test did not finish (deadlock?)\n";
    ssize_t written = write(2, msg, sizeof msg - 1);
    (void)written;
    (void)sig;
    _exit(2);
}

static void watchdog_arm(unsigned seconds)
{
    signal(SIGALRM, watchdog_fired);
    alarm(seconds);
}

static void watchdog_disarm(void)
{
    alarm(0);
}

static int64_t effective_grain(int64_t grain)
{
    return grain < 1 ? 1 : grain;
}

/* chunks of [0, n), computed without overflow */
static int64_t chunk_count(int64_t n, int64_t grain)
{
    int64_t g = effective_grain(grain);
    return n <= 0 ? 0 : n / g + (n % g != 0);
}

static void atomic_max(atomic_llong *target, long long value)
{
    long long seen = atomic_load(target);
    while (value > seen && !atomic_compare_exchange_weak(target, &seen, value)) {
    }
}

/* ---- one parallel-for, checked item by item ---- */

typedef struct cover_ctx {
    atomic_int *hits; /* [n] */
    int64_t n, grain;
    int nthreads;
    int linger;       /* extra work per call while holding the busy flag */
    atomic_int *busy; /* [MAX_THREADS], shared by everyone using the same pool */
    atomic_int calls[MAX_THREADS];
    atomic_int bad_thread, clashes, bad_range, not_in_parallel;
    atomic_llong max_chunks_per_call;
    atomic_llong first_bad_begin, first_bad_end;
} cover_ctx;

static void cover_fn(void *p, int64_t begin, int64_t end, int thread)
{
    cover_ctx *c = p;
    if (thread < 0 || thread >= c->nthreads || thread >= MAX_THREADS) {
        atomic_fetch_add(&c->bad_thread, 1);
        return;
    }
    if (atomic_exchange(&c->busy[thread], 1))
        atomic_fetch_add(&c->clashes, 1);
    atomic_fetch_add(&c->calls[thread], 1);
    if (!tpool_in_parallel())
        atomic_fetch_add(&c->not_in_parallel, 1);

    int64_t g = effective_grain(c->grain);
    /* a call covers whole chunks: it starts on a chunk boundary and ends on
     * one or at n */
    if (begin < 0 || end > c->n || begin >= end || begin % g != 0 || (end != c->n && end % g != 0)) {
        if (atomic_fetch_add(&c->bad_range, 1) == 0) {
            atomic_store(&c->first_bad_begin, begin);
            atomic_store(&c->first_bad_end, end);
        }
    } else {
        atomic_max(&c->max_chunks_per_call, chunk_count(end - begin, g));
        for (int64_t i = begin; i < end; i++)
            atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
    }
    for (volatile int k = 0; k < c->linger; k++) {
    }
    atomic_store(&c->busy[thread], 0);
}

static const char *schedule_name(tpool_schedule s)
{
    return s == TPOOL_STATIC ? "static" : "dynamic";
}

/* Runs one parallel-for of n items and checks it; returns the number of
 * failed checks. hits holds at least n counters. */
static int run_and_check_lingering(tpool *pool, atomic_int *busy, atomic_int *hits, int64_t n, int64_t grain,
                                   tpool_schedule schedule, int linger)
{
    cover_ctx *c = calloc(1, sizeof *c);
    CHECK(c != NULL, "out of memory");
    if (!c)
        return 1;
    c->hits = hits;
    c->n = n;
    c->grain = grain;
    c->nthreads = tpool_size(pool);
    c->busy = busy;
    c->linger = linger;
    for (int64_t i = 0; i < n; i++)
        atomic_store_explicit(&hits[i], 0, memory_order_relaxed);

    tpool_for(pool, n, grain, schedule, cover_fn, c);

    int before = test_failures;
    const char *s = schedule_name(schedule);
    int threads = c->nthreads;
    CHECK(atomic_load(&c->bad_thread) == 0, "n=%lld grain=%lld %s threads=%d: thread index out of [0, %d) %d times",
          (long long)n, (long long)grain, s, threads, threads, atomic_load(&c->bad_thread));
    CHECK(atomic_load(&c->clashes) == 0,
          "n=%lld grain=%lld %s threads=%d: two calls ran at once with the same thread index (%d times)",
          (long long)n, (long long)grain, s, threads, atomic_load(&c->clashes));
    CHECK(atomic_load(&c->not_in_parallel) == 0,
          "n=%lld grain=%lld %s threads=%d: tpool_in_parallel() was 0 inside fn %d times", (long long)n,
          (long long)grain, s, threads, atomic_load(&c->not_in_parallel));
    CHECK(atomic_load(&c->bad_range) == 0,
          "n=%lld grain=%lld %s threads=%d: expected ranges of whole chunks inside [0, n), "
          "got %d bad, first [%lld, %lld)",
          (long long)n, (long long)grain, s, threads, atomic_load(&c->bad_range),
          (long long)atomic_load(&c->first_bad_begin), (long long)atomic_load(&c->first_bad_end));
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; i++) {
        int h = atomic_load_explicit(&hits[i], memory_order_relaxed);
        if (h != 1) {
            if (wrong < 3)
                CHECK(h == 1, "n=%lld grain=%lld %s threads=%d: index %lld expected 1 call, got %d", (long long)n,
                      (long long)grain, s, threads, (long long)i, h);
            wrong++;
        }
    }
    CHECK(wrong == 0, "n=%lld grain=%lld %s threads=%d: %lld of %lld indices not covered exactly once",
          (long long)n, (long long)grain, s, threads, (long long)wrong, (long long)n);
    if (schedule == TPOOL_STATIC && n > 0) {
        /* one contiguous run per thread, and runs of even length */
        for (int t = 0; t < threads && t < MAX_THREADS; t++)
            CHECK(atomic_load(&c->calls[t]) <= 1,
                  "n=%lld grain=%lld static threads=%d: thread %d expected at most 1 call, got %d", (long long)n,
                  (long long)grain, threads, t, atomic_load(&c->calls[t]));
        int64_t chunks = chunk_count(n, grain);
        int64_t fair = chunks / threads + (chunks % threads != 0);
        CHECK(atomic_load(&c->max_chunks_per_call) <= fair,
              "n=%lld grain=%lld static threads=%d: %lld chunks, expected at most %lld per thread, got %lld",
              (long long)n, (long long)grain, threads, (long long)chunks, (long long)fair,
              (long long)atomic_load(&c->max_chunks_per_call));
    }
    free(c);
    return test_failures - before;
}

static int run_and_check(tpool *pool, atomic_int *busy, atomic_int *hits, int64_t n, int64_t grain,
                         tpool_schedule schedule)
{
    return run_and_check_lingering(pool, busy, hits, n, grain, schedule, 0);
}

static int pool_sizes(int *sizes)
{
    int cores = cpu_get()->logical_cores;
    int count = 0;
    sizes[count++] = 1;
    sizes[count++] = 2;
    sizes[count++] = 3;
    sizes[count++] = 4;
    sizes[count++] = 8;
    int many = cores <= 16 ? cores * 3 + 1 : cores + 1; /* more threads than cores */
    sizes[count++] = many < MAX_THREADS ? many : MAX_THREADS;
    return count;
}

static void test_every_index_once(void)
{
    watchdog_arm(300);
    int failures_at_start = test_failures;
    static const int64_t ns[] = {0, 1, 2, 3, 5, 7, 8, 15, 16, 17, 63, 64, 65, 255, 1000, 4097, MAX_N};
    atomic_int *hits = calloc(MAX_N, sizeof *hits);
    atomic_int *busy = calloc(MAX_THREADS, sizeof *busy);
    CHECK(hits && busy, "out of memory");
    if (!hits || !busy)
        goto done;
    int sizes[8];
    int nsizes = pool_sizes(sizes);
    for (int si = 0; si < nsizes; si++) {
        tpool *pool = NULL;
        CHECK_EQ_INT(tpool_create(sizes[si], &pool), KILN_OK);
        if (!pool)
            continue;
        CHECK_EQ_INT(tpool_size(pool), sizes[si]);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            int64_t n = ns[ni];
            const int64_t grains[] = {-7, 0, 1, 2, 3, 5, 7, 16, 64, 100, 1000, n - 1, n, n + 1, INT64_MAX / 2,
                                      INT64_MAX};
            for (size_t gi = 0; gi < sizeof grains / sizeof grains[0]; gi++)
                for (int s = 0; s < TPOOL_SCHEDULE_COUNT; s++)
                    if (run_and_check(pool, busy, hits, n, grains[gi], (tpool_schedule)s) &&
                        test_failures - failures_at_start > 12) {
                        tpool_destroy(pool);
                        goto done; /* enough output to go on */
                    }
        }
        tpool_destroy(pool);
    }
done:
    free(hits);
    free(busy);
    watchdog_disarm();
}

/* ---- ranges over huge n: checks the splitting arithmetic, not items ---- */

#define MAX_RANGES MAX_THREADS

typedef struct range_ctx {
    int nthreads;
    atomic_int count;
    int64_t begin[MAX_RANGES], end[MAX_RANGES];
    int thread[MAX_RANGES];
} range_ctx;

static void range_fn(void *p, int64_t begin, int64_t end, int thread)
{
    range_ctx *c = p;
    int i = atomic_fetch_add(&c->count, 1);
    if (i < MAX_RANGES) {
        c->begin[i] = begin;
        c->end[i] = end;
        c->thread[i] = thread;
    }
}

static int compare_begin(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return (*x > *y) - (*x < *y);
}

static void check_tiling(tpool *pool, int64_t n, int64_t grain, tpool_schedule schedule)
{
    range_ctx *c = calloc(1, sizeof *c);
    CHECK(c != NULL, "out of memory");
    if (!c)
        return;
    c->nthreads = tpool_size(pool);
    tpool_for(pool, n, grain, schedule, range_fn, c);
    const char *s = schedule_name(schedule);
    int count = atomic_load(&c->count);
    int64_t chunks = chunk_count(n, grain);
    int64_t max_calls = schedule == TPOOL_STATIC ? (chunks < c->nthreads ? chunks : c->nthreads) : chunks;
    CHECK(count >= 1 && count <= max_calls, "n=%lld grain=%lld %s threads=%d: expected 1..%lld calls, got %d",
          (long long)n, (long long)grain, s, c->nthreads, (long long)max_calls, count);
    if (count < 1 || count > MAX_RANGES) {
        free(c);
        return;
    }
    int64_t (*pairs)[2] = calloc((size_t)count, sizeof *pairs);
    if (!pairs) {
        free(c);
        return;
    }
    for (int i = 0; i < count; i++) {
        pairs[i][0] = c->begin[i];
        pairs[i][1] = c->end[i];
        CHECK(c->thread[i] >= 0 && c->thread[i] < c->nthreads, "n=%lld %s: thread index %d out of [0, %d)",
              (long long)n, s, c->thread[i], c->nthreads);
    }
    qsort(pairs, (size_t)count, sizeof *pairs, compare_begin);
    int64_t expect = 0;
    for (int i = 0; i < count; i++) {
        CHECK(pairs[i][0] == expect && pairs[i][1] > pairs[i][0],
              "n=%lld grain=%lld %s threads=%d: range %d expected to start at %lld and be non-empty, got [%lld, %lld)",
              (long long)n, (long long)grain, s, c->nthreads, i, (long long)expect, (long long)pairs[i][0],
              (long long)pairs[i][1]);
        expect = pairs[i][1];
    }
    CHECK(expect == n, "n=%lld grain=%lld %s threads=%d: ranges expected to end at n, got %lld", (long long)n,
          (long long)grain, s, c->nthreads, (long long)expect);
    free(pairs);
    free(c);
}

static void test_huge_ranges(void)
{
    watchdog_arm(120);
    static const int64_t ns[] = {INT64_MAX, INT64_MAX - 1, (int64_t)1 << 62, ((int64_t)1 << 40) + 3, 10};
    static const int64_t grains[] = {1, 1000, INT64_MAX / 64 + 1, INT64_MAX / 3, INT64_MAX / 2,
                                     INT64_MAX / 2 + 1, INT64_MAX - 1, INT64_MAX};
    int sizes[8];
    int nsizes = pool_sizes(sizes);
    for (int si = 0; si < nsizes; si++) {
        tpool *pool = NULL;
        CHECK_EQ_INT(tpool_create(sizes[si], &pool), KILN_OK);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t gi = 0; gi < sizeof grains / sizeof grains[0]; gi++) {
                /* static makes one call per thread whatever the count of
                 * chunks; dynamic one per chunk, so keep those few */
                check_tiling(pool, ns[ni], grains[gi], TPOOL_STATIC);
                if (chunk_count(ns[ni], grains[gi]) <= 200)
                    check_tiling(pool, ns[ni], grains[gi], TPOOL_DYNAMIC);
            }
        tpool_destroy(pool);
    }
    watchdog_disarm();
}

/* ---- pool == NULL, and tpool_in_parallel ---- */

typedef struct inline_ctx {
    int64_t calls, covered;
    int64_t first_begin, last_end;
    int bad_thread, not_in_parallel;
} inline_ctx;

static void inline_fn(void *p, int64_t begin, int64_t end, int thread)
{
    inline_ctx *c = p;
    if (c->calls == 0)
        c->first_begin = begin;
    c->calls++;
    c->covered += end - begin;
    c->last_end = end;
    c->bad_thread += thread != 0;
    c->not_in_parallel += !tpool_in_parallel();
}

static void test_null_pool_runs_inline(void)
{
    CHECK(tpool_in_parallel() == 0, "outside any parallel-for: expected tpool_in_parallel() 0, got %d",
          tpool_in_parallel());
    static const int64_t ns[] = {0, 1, 5, 1000};
    static const int64_t grains[] = {0, 1, 3, 1000000};
    for (size_t ni = 0; ni < 4; ni++)
        for (size_t gi = 0; gi < 4; gi++)
            for (int s = 0; s < TPOOL_SCHEDULE_COUNT; s++) {
                inline_ctx c = {0};
                tpool_for(NULL, ns[ni], grains[gi], (tpool_schedule)s, inline_fn, &c);
                int64_t n = ns[ni];
                CHECK(c.covered == n, "NULL pool n=%lld: expected %lld items covered, got %lld", (long long)n,
                      (long long)n, (long long)c.covered);
                CHECK(n == 0 || (c.first_begin == 0 && c.last_end == n),
                      "NULL pool n=%lld: expected [0, %lld), got first begin %lld, last end %lld", (long long)n,
                      (long long)n, (long long)c.first_begin, (long long)c.last_end);
                CHECK(c.bad_thread == 0, "NULL pool: expected thread 0 in every call, %d calls had another",
                      c.bad_thread);
                CHECK(c.not_in_parallel == 0, "NULL pool: tpool_in_parallel() was 0 inside fn in %d calls",
                      c.not_in_parallel);
                CHECK(tpool_in_parallel() == 0, "after a parallel-for: expected tpool_in_parallel() 0, got %d",
                      tpool_in_parallel());
            }
    CHECK_EQ_INT(tpool_size(NULL), 1);
    tpool_destroy(NULL); /* a no-op */
}

typedef struct flag_ctx {
    atomic_int inside_zero;
    atomic_int calls;
} flag_ctx;

static void flag_fn(void *p, int64_t begin, int64_t end, int thread)
{
    flag_ctx *c = p;
    atomic_fetch_add(&c->calls, 1);
    if (!tpool_in_parallel())
        atomic_fetch_add(&c->inside_zero, 1);
}

static void test_in_parallel_flag(void)
{
    watchdog_arm(120);
    tpool *pool = NULL;
    CHECK_EQ_INT(tpool_create(4, &pool), KILN_OK);
    for (int round = 0; round < 50; round++)
        for (int s = 0; s < TPOOL_SCHEDULE_COUNT; s++) {
            flag_ctx c = {0};
            tpool_for(pool, 64, 1, (tpool_schedule)s, flag_fn, &c);
            CHECK(atomic_load(&c.inside_zero) == 0, "tpool_in_parallel() expected 1 inside fn, was 0 in %d of %d calls",
                  atomic_load(&c.inside_zero), atomic_load(&c.calls));
            CHECK(tpool_in_parallel() == 0, "expected tpool_in_parallel() 0 after tpool_for returns, got %d",
                  tpool_in_parallel());
        }
    tpool_destroy(pool);
    watchdog_disarm();
}

/* ---- nesting ---- */

#define OUTER_N 48
#define INNER_N 37
#define NEST_KINDS 4 /* same pool, NULL pool, another pool, a third level */

typedef struct nested_ctx {
    tpool *pool, *other;
    int nthreads;
    tpool_schedule inner_schedule;
    atomic_int busy[MAX_THREADS];
    atomic_int hits[NEST_KINDS * OUTER_N * INNER_N];
    atomic_int bad_thread, clashes, lost_index, not_in_parallel, flag_lost;
} nested_ctx;

typedef struct inner_ctx {
    nested_ctx *outer;
    int64_t row;
    int kind;
    int expect_thread;
} inner_ctx;

static void inner_fn(void *p, int64_t begin, int64_t end, int thread)
{
    inner_ctx *ic = p;
    nested_ctx *c = ic->outer;
    if (thread != ic->expect_thread)
        atomic_fetch_add(&c->lost_index, 1);
    if (!tpool_in_parallel())
        atomic_fetch_add(&c->not_in_parallel, 1);
    for (int64_t j = begin; j < end; j++) {
        if (ic->kind == 0 && j == 0) {
            /* a third level, from inside a nested call */
            inner_ctx deeper = {c, ic->row, 3, ic->expect_thread};
            tpool_for(c->pool, INNER_N, 2, c->inner_schedule, inner_fn, &deeper);
        }
        atomic_fetch_add(&c->hits[(ic->kind * OUTER_N + ic->row) * INNER_N + j], 1);
    }
}

static void outer_fn(void *p, int64_t begin, int64_t end, int thread)
{
    nested_ctx *c = p;
    if (thread < 0 || thread >= c->nthreads) {
        atomic_fetch_add(&c->bad_thread, 1);
        return;
    }
    if (atomic_exchange(&c->busy[thread], 1))
        atomic_fetch_add(&c->clashes, 1);
    for (int64_t i = begin; i < end; i++) {
        tpool *pools[3] = {c->pool, NULL, c->other};
        for (int kind = 0; kind < 3; kind++) {
            inner_ctx ic = {c, i, kind, thread};
            tpool_for(pools[kind], INNER_N, 1 + kind, c->inner_schedule, inner_fn, &ic);
            if (!tpool_in_parallel())
                atomic_fetch_add(&c->flag_lost, 1);
        }
    }
    atomic_store(&c->busy[thread], 0);
}

static void test_nested_for(void)
{
    watchdog_arm(120);
    int sizes[] = {2, 3, 4, 9};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        tpool *pool = NULL, *other = NULL;
        CHECK_EQ_INT(tpool_create(sizes[si], &pool), KILN_OK);
        /* the other pool is at least as large, so the caller's index is
         * also a valid index there */
        CHECK_EQ_INT(tpool_create(sizes[si] + 1, &other), KILN_OK);
        if (!pool || !other) {
            tpool_destroy(pool);
            tpool_destroy(other);
            continue;
        }
        for (int outer_s = 0; outer_s < TPOOL_SCHEDULE_COUNT; outer_s++)
            for (int inner_s = 0; inner_s < TPOOL_SCHEDULE_COUNT; inner_s++) {
                nested_ctx *c = calloc(1, sizeof *c);
                if (!c)
                    break;
                c->pool = pool;
                c->other = other;
                c->nthreads = sizes[si];
                c->inner_schedule = (tpool_schedule)inner_s;
                tpool_for(pool, OUTER_N, 1, (tpool_schedule)outer_s, outer_fn, c);
                int wrong = 0;
                for (int k = 0; k < NEST_KINDS * OUTER_N * INNER_N; k++)
                    wrong += atomic_load(&c->hits[k]) != 1;
                const char *os = schedule_name((tpool_schedule)outer_s), *is = schedule_name((tpool_schedule)inner_s);
                CHECK(wrong == 0, "nested %s in %s, %d threads: %d of %d inner items not run exactly once", is, os,
                      sizes[si], wrong, NEST_KINDS * OUTER_N * INNER_N);
                CHECK(atomic_load(&c->bad_thread) == 0, "nested: %d outer calls had a thread index out of range",
                      atomic_load(&c->bad_thread));
                CHECK(atomic_load(&c->clashes) == 0, "nested: %d outer calls shared a thread index",
                      atomic_load(&c->clashes));
                CHECK(atomic_load(&c->lost_index) == 0,
                      "nested %s in %s, %d threads: expected the caller's thread index in inner calls, "
                      "%d calls got another",
                      is, os, sizes[si], atomic_load(&c->lost_index));
                CHECK(atomic_load(&c->not_in_parallel) == 0, "nested: tpool_in_parallel() 0 in %d inner calls",
                      atomic_load(&c->not_in_parallel));
                CHECK(atomic_load(&c->flag_lost) == 0,
                      "nested: expected tpool_in_parallel() still 1 after an inner call returns, 0 in %d",
                      atomic_load(&c->flag_lost));
                free(c);
            }
        tpool_destroy(pool);
        tpool_destroy(other);
    }
    watchdog_disarm();
}

/* ---- several outside threads on one pool ---- */

#define HAMMER_CALLERS 4
#define HAMMER_MAX_N 300

typedef struct hammer_arg {
    tpool *pool;
    atomic_int *busy;
    int seed, iterations;
    int failures;
} hammer_arg;

static void *hammer_main(void *p)
{
    hammer_arg *arg = p;
    atomic_int hits[HAMMER_MAX_N];
    test_rng rng = test_rng_seed((uint64_t)arg->seed);
    for (int it = 0; it < arg->iterations && arg->failures == 0; it++) {
        int64_t n = (int64_t)(test_rng_next(&rng) % HAMMER_MAX_N);
        int64_t grain = (int64_t)(test_rng_next(&rng) % 40) - 2;
        tpool_schedule s = (tpool_schedule)(test_rng_next(&rng) % TPOOL_SCHEDULE_COUNT);
        /* linger in each call so that calls from different callers that
         * wrongly overlap are likely to be seen doing so */
        arg->failures += run_and_check_lingering(arg->pool, arg->busy, hits, n, grain, s, 20000);
    }
    return NULL;
}

static void test_outside_threads_contend(void)
{
    watchdog_arm(300);
    int sizes[] = {2, 3};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        tpool *pool = NULL;
        CHECK_EQ_INT(tpool_create(sizes[si], &pool), KILN_OK);
        if (!pool)
            continue;
        /* one set of busy flags for the pool: calls from different outside
         * threads must not run at once under the same index either */
        atomic_int busy[MAX_THREADS] = {0};
        hammer_arg args[HAMMER_CALLERS];
        pthread_t callers[HAMMER_CALLERS];
        for (int t = 0; t < HAMMER_CALLERS; t++) {
            args[t] = (hammer_arg){pool, busy, 1000 * (int)si + t, 500, 0};
            CHECK(pthread_create(&callers[t], NULL, hammer_main, &args[t]) == 0, "cannot start caller %d", t);
        }
        for (int t = 0; t < HAMMER_CALLERS; t++) {
            pthread_join(callers[t], NULL);
            CHECK(args[t].failures == 0, "pool of %d, caller %d: %d failed checks (see above)", sizes[si], t,
                  args[t].failures);
        }
        tpool_destroy(pool);
    }
    watchdog_disarm();
}

/* ---- lifetimes ---- */

static void test_create_destroy_many(void)
{
    watchdog_arm(300);
    int cores = cpu_get()->logical_cores;
    int oversubscribed = cores <= 16 ? cores * 4 + 1 : cores + 1;
    if (oversubscribed > MAX_THREADS)
        oversubscribed = MAX_THREADS;
    int sizes[] = {1, 2, 3, oversubscribed};
    atomic_int hits[200];
    atomic_int busy[MAX_THREADS] = {0};
    int failed = 0;
    for (int round = 0; round < 40 && !failed; round++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            tpool *pool = NULL;
            kiln_status st = tpool_create(sizes[si], &pool);
            CHECK(st == KILN_OK && pool != NULL, "tpool_create(%d): expected ok, got %d", sizes[si], st);
            if (!pool)
                continue;
            CHECK_EQ_INT(tpool_size(pool), sizes[si]);
            /* some pools are destroyed without ever running anything */
            if (round % 2 == 0)
                failed |= run_and_check(pool, busy, hits, 200, round % 7, (tpool_schedule)(round % 4 / 2));
            tpool_destroy(pool);
        }

    /* several pools alive at once, used in turn */
    tpool *pools[6] = {0};
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(tpool_create(1 + i % 3, &pools[i]), KILN_OK);
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < 6; i++)
            if (pools[i])
                run_and_check(pools[i], busy, hits, 150, 1 + round % 5, (tpool_schedule)(i % 2));
    for (int i = 0; i < 6; i++)
        tpool_destroy(pools[i]);

    /* nthreads <= 0: one per logical core */
    int defaults[] = {0, -1};
    for (int i = 0; i < 2; i++) {
        tpool *pool = NULL;
        CHECK_EQ_INT(tpool_create(defaults[i], &pool), KILN_OK);
        if (pool) {
            CHECK(tpool_size(pool) == cores, "tpool_create(%d): expected %d threads (logical cores), got %d",
                  defaults[i], cores, tpool_size(pool));
            run_and_check(pool, busy, hits, 100, 1, TPOOL_DYNAMIC);
        }
        tpool_destroy(pool);
    }
    watchdog_disarm();
}

TEST_MAIN(TEST(test_null_pool_runs_inline), TEST(test_in_parallel_flag), TEST(test_every_index_once),
          TEST(test_huge_ranges), TEST(test_nested_for), TEST(test_outside_threads_contend),
          TEST(test_create_destroy_many))
