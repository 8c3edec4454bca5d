/*
 * threadpool.h - a persistent pool of pthreads and a parallel-for over it.
 *
 * The calling thread takes part as thread 0, so a pool of n threads starts
 * n - 1 workers. A parallel-for called from inside another one (from a
 * kernel already running on the pool, on any pool) runs inline on the
 * calling thread: nested parallelism never deadlocks and never
 * oversubscribes. Calls from several outside threads at once are served one
 * after another.
 */
#ifndef KILN_CORE_THREADPOOL_H
#define KILN_CORE_THREADPOOL_H

#include <stdint.h>

#include "kiln.h"

typedef struct tpool tpool;

typedef enum tpool_schedule {
    TPOOL_STATIC,  /* each thread gets one contiguous run of chunks: for even work */
    TPOOL_DYNAMIC, /* threads claim chunks one at a time: for uneven work */
    TPOOL_SCHEDULE_COUNT
} tpool_schedule;

/* Runs items [begin, end) on thread `thread` (0 <= thread < tpool_size);
 * no two calls running at once share a thread index, so per-thread scratch
 * indexed by it is safe. A nested, inline call keeps the caller's index
 * (an index of the pool running the outer call, whichever pool it names). */
typedef void (*tpool_fn)(void *ctx, int64_t begin, int64_t end, int thread);

/* nthreads <= 0 means one per logical core this process may use.
 * Errors: KILN_ERR_NOMEM, KILN_ERR_INVALID (threads could not start). */
kiln_status tpool_create(int nthreads, tpool **out);

/* Stops and joins the workers. Must not be called while a parallel-for runs. */
void tpool_destroy(tpool *pool);

int tpool_size(const tpool *pool);

/* Calls fn over [0, n) in chunks of `grain` items (grain < 1 counts as 1),
 * and returns when all of it is done. pool may be NULL: runs inline. */
void tpool_for(tpool *pool, int64_t n, int64_t grain, tpool_schedule schedule, tpool_fn fn,
               void *ctx);

/* 1 when the calling thread is running inside a parallel-for. */
int tpool_in_parallel(void);

#endif
