/*
 * test_support.h - the small harness every test executable uses.
 *
 * CHECK(cond, fmt, ...) records a failure with what was expected and got,
 * and goes on; a test function returns, the runner counts. main() of a test
 * file is TEST_MAIN(test_a, test_b, ...). The closing line is
 * "N passed, N failed" and the exit status is non-zero on any failure.
 */
#ifndef KILN_TEST_SUPPORT_H
#define KILN_TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int test_failures;

void test_fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define CHECK(cond, ...)                                                                                 \
    do {                                                                                                 \
        if (!(cond))                                                                                     \
            test_fail_at(__FILE__, __LINE__, __VA_ARGS__);                                               \
    } while (0)

#define CHECK_EQ_INT(got, want)                                                                          \
    CHECK((long long)(got) == (long long)(want), "%s: expected %lld, got %lld", #got, (long long)(want),  \
          (long long)(got))

typedef struct test_case {
    const char *name;
    void (*run)(void);
} test_case;

int test_run_all(const test_case *cases, size_t count, int argc, char **argv);

#define TEST(fn) {#fn, fn}
#define TEST_MAIN(...)                                                                                   \
    int main(int argc, char **argv)                                                                      \
    {                                                                                                    \
        static const test_case cases[] = {__VA_ARGS__};                                                  \
        return test_run_all(cases, sizeof cases / sizeof cases[0], argc, argv);                          \
    }

/* Deterministic pseudo-random numbers for test inputs (xorshift64*). */
typedef struct test_rng {
    uint64_t state;
} test_rng;

test_rng test_rng_seed(uint64_t seed);
uint64_t test_rng_next(test_rng *r);
/* uniform in [lo, hi) */
float test_rng_uniform(test_rng *r, float lo, float hi);

/* The largest |a[i] - b[i]|; infinity where either is NaN. */
double test_max_abs_diff(const float *a, const float *b, size_t n);

/* Path of a file in tests/data or ../shared/data (static buffer per call site
 * is not kept: copy if needed; each call returns a new malloc'd string the
 * caller frees). */
char *test_data_path(const char *name);
char *test_shared_path(const char *name);

/* A fresh temporary directory for this test process (removed at exit with
 * everything in it). */
const char *test_tmp_dir(void);

#endif
