/*
 * clock.h - monotonic wall time and process CPU time.
 */
#ifndef KILN_CORE_CLOCK_H
#define KILN_CORE_CLOCK_H

#include <stdint.h>

/* Nanoseconds on a monotonic clock (CLOCK_MONOTONIC); only differences mean
 * anything. Thread-safe. */
uint64_t clock_now_ns(void);

/* Seconds on the same clock. */
double clock_now(void);

/* CPU seconds used by this process, all threads together. */
double clock_process_cpu(void);

#endif
