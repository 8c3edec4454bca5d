#include "core/clock.h"

#include <time.h>

static uint64_t read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_now_ns(void)
{
    return read_ns(CLOCK_MONOTONIC);
}

double clock_now(void)
{
    return (double)clock_now_ns() * 1e-9;
}

double clock_process_cpu(void)
{
    return (double)read_ns(CLOCK_PROCESS_CPUTIME_ID) * 1e-9;
}
