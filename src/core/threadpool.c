#include "core/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/error.h"

/* How long a worker polls for the next job before it sleeps. A UNet step is
 * thousands of short parallel-fors back to back; waking a sleeping thread
 * costs tens of microseconds each time, polling briefly costs nothing then. */
#define SPIN_ROUNDS 20000

struct tpool {
    int nthreads; /* including the caller */
    pthread_t *workers;
    int started;

    pthread_mutex_t submit_lock; /* one parallel-for at a time */
    pthread_mutex_t lock;        /* guards sleeping on the two conditions */
    pthread_cond_t wake;
    pthread_cond_t done;

    /* the current job, written before `generation` is bumped */
    tpool_fn fn;
    void *ctx;
    int64_t n, grain, chunks;
    tpool_schedule schedule;
    atomic_int_fast64_t next_chunk;

    atomic_uint generation;
    atomic_int pending; /* workers yet to finish the current job */
    atomic_int stop;
};

typedef struct worker_arg {
    tpool *pool;
    int index;
} worker_arg;

static _Thread_local int in_parallel;
static _Thread_local int thread_index; /* the index fn runs under, while in_parallel */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

int tpool_in_parallel(void)
{
    return in_parallel;
}

/* Item ranges are computed so that nothing overflows for any n and grain
 * up to INT64_MAX: a chunk's start is below n, and a run that ends at the
 * last chunk ends at n. */
static void run_share(tpool *pool, int thread)
{
    int64_t chunks = pool->chunks, grain = pool->grain, n = pool->n;
    if (pool->schedule == TPOOL_STATIC) {
        /* thread t gets chunks/T chunks, and one more if t < chunks % T */
        int64_t per = chunks / pool->nthreads, extra = chunks % pool->nthreads;
        int64_t first = per * thread + (thread < extra ? thread : extra);
        int64_t last = first + per + (thread < extra);
        if (first < last)
            pool->fn(pool->ctx, first * grain, last == chunks ? n : last * grain, thread);
        return;
    }
    for (;;) {
        int64_t c = atomic_fetch_add(&pool->next_chunk, 1);
        if (c >= chunks)
            break;
        int64_t begin = c * grain;
        pool->fn(pool->ctx, begin, n - begin > grain ? begin + grain : n, thread);
    }
}

static void *worker_main(void *p)
{
    worker_arg *arg = p;
    tpool *pool = arg->pool;
    int index = arg->index;
    free(arg);
    in_parallel = 1;
    thread_index = index;

    unsigned seen = 0;
    for (;;) {
        unsigned generation = atomic_load(&pool->generation);
        for (int i = 0; i < SPIN_ROUNDS && generation == seen && !atomic_load(&pool->stop); i++) {
            cpu_relax();
            generation = atomic_load(&pool->generation);
        }
        if (generation == seen) {
            pthread_mutex_lock(&pool->lock);
            while ((generation = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->lock);
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->stop))
            break;
        seen = generation;
        run_share(pool, index);
        if (atomic_fetch_sub(&pool->pending, 1) == 1) {
            pthread_mutex_lock(&pool->lock);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
    return NULL;
}

static void stop_workers(tpool *pool)
{
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->started; i++)
        pthread_join(pool->workers[i], NULL);
    pool->started = 0;
}

kiln_status tpool_create(int nthreads, tpool **out)
{
    if (nthreads <= 0)
        nthreads = cpu_get()->logical_cores;
    tpool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a thread pool");
    pool->nthreads = nthreads;
    pthread_mutex_init(&pool->submit_lock, NULL);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);

    kiln_status st = KILN_OK;
    if (nthreads > 1) {
        pool->workers = calloc((size_t)nthreads - 1, sizeof *pool->workers);
        if (!pool->workers) {
            st = err_set(KILN_ERR_NOMEM, "cannot allocate %d thread handles", nthreads - 1);
            goto fail;
        }
    }
    for (int i = 1; i < nthreads; i++) {
        worker_arg *arg = malloc(sizeof *arg);
        if (!arg) {
            st = err_set(KILN_ERR_NOMEM, "cannot allocate a worker");
            goto fail;
        }
        arg->pool = pool;
        arg->index = i;
        int rc = pthread_create(&pool->workers[i - 1], NULL, worker_main, arg);
        if (rc != 0) {
            free(arg);
            st = err_set(KILN_ERR_INVALID, "cannot start thread %d of %d: %s", i + 1, nthreads,
                         strerror(rc));
            goto fail;
        }
        pool->started++;
    }
    *out = pool;
    return KILN_OK;

fail:
    tpool_destroy(pool);
    return st;
}

void tpool_destroy(tpool *pool)
{
    if (!pool)
        return;
    stop_workers(pool);
    free(pool->workers);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    pthread_mutex_destroy(&pool->submit_lock);
    free(pool);
}

int tpool_size(const tpool *pool)
{
    return pool ? pool->nthreads : 1;
}

void tpool_for(tpool *pool, int64_t n, int64_t grain, tpool_schedule schedule, tpool_fn fn,
               void *ctx)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t chunks = n / grain + (n % grain != 0); /* (n + grain - 1) / grain overflows */
    if (!pool || pool->nthreads == 1 || chunks == 1 || in_parallel) {
        /* Inline. A nested call keeps the caller's index; an outside call
         * on a pool still waits its turn, since another outside thread may
         * be running a parallel-for there with index 0. */
        int outer = in_parallel;
        int serialize = pool && !outer;
        if (serialize)
            pthread_mutex_lock(&pool->submit_lock);
        if (!outer)
            thread_index = 0;
        in_parallel = 1;
        fn(ctx, 0, n, thread_index);
        in_parallel = outer;
        if (serialize)
            pthread_mutex_unlock(&pool->submit_lock);
        return;
    }

    pthread_mutex_lock(&pool->submit_lock);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n = n;
    pool->grain = grain;
    pool->chunks = chunks;
    pool->schedule = schedule;
    atomic_store(&pool->next_chunk, 0);
    atomic_store(&pool->pending, pool->nthreads - 1);

    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    in_parallel = 1;
    thread_index = 0;
    run_share(pool, 0);
    in_parallel = 0;

    for (int i = 0; i < SPIN_ROUNDS && atomic_load(&pool->pending) != 0; i++)
        cpu_relax();
    if (atomic_load(&pool->pending) != 0) {
        pthread_mutex_lock(&pool->lock);
        while (atomic_load(&pool->pending) != 0)
            pthread_cond_wait(&pool->done, &pool->lock);
        pthread_mutex_unlock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->submit_lock);
}
