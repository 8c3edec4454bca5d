#include "test_support.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int test_failures;
static const char *current_test = "";
static char tmp_dir[256];

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
    test_failures++;
    fprintf(stderr, "FAIL %s (%s:%d): ", current_test, file, line);
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
}

static void remove_tmp_dir(void)
{
    if (!tmp_dir[0])
        return;
    char command[300];
    snprintf(command, sizeof command, "rm -rf '%s'", tmp_dir);
    if (system(command) != 0)
        fprintf(stderr, "warning: could not remove %s\n", tmp_dir);
}

const char *test_tmp_dir(void)
{
    if (!tmp_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmp_dir, sizeof tmp_dir, "%s/kiln-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp_dir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(remove_tmp_dir);
    }
    return tmp_dir;
}

int test_run_all(const test_case *cases, size_t count, int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < count; i++) {
        if (argc > 1) { /* run only the named tests */
            int wanted = 0;
            for (int a = 1; a < argc; a++)
                wanted |= strcmp(argv[a], cases[i].name) == 0;
            if (!wanted)
                continue;
        }
        current_test = cases[i].name;
        int before = test_failures;
        cases[i].run();
        if (test_failures == before) {
            passed++;
            printf("ok   %s\n", cases[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", cases[i].name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

test_rng test_rng_seed(uint64_t seed)
{
    test_rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
    return r;
}

uint64_t test_rng_next(test_rng *r)
{
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float test_rng_uniform(test_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)(test_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path) {
        perror("malloc");
        exit(1);
    }
    snprintf(path, n, "%s/%s", dir, name);
    return path;
}

char *test_data_path(const char *name)
{
    return join(KILN_TEST_DATA, name);
}

char *test_shared_path(const char *name)
{
    return join(KILN_SHARED_DATA, name);
}

double test_max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        worst = isnan(e) ? INFINITY : fmax(worst, e);
    }
    return worst;
}
