/*
 * The noise generators against tensors PyTorch drew itself
 * (tests/data/golden/rng.safetensors, tools/rng_reference.py): torch's CPU
 * generator must match bit for bit, and so must the philox generator
 * against AUTOMATIC1111's reimplementation of torch's CUDA one.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/rng.h"
#include "test_support.h"

static kiln_weights *open_golden(void)
{
    char *path = test_data_path("golden/rng.safetensors");
    kiln_weights *w = NULL;
    CHECK(kiln_weights_open(path, &w) == KILN_OK, "cannot open %s: %s", path, kiln_last_error());
    free(path);
    return w;
}

static void test_mt19937_words(void)
{
    kiln_weights *w = open_golden();
    if (!w)
        return;
    const uint64_t seeds[] = {0, 42, 4294967295u};
    for (size_t s = 0; s < 3; s++) {
        char name[64];
        snprintf(name, sizeof name, "mt19937.s%llu.words", (unsigned long long)seeds[s]);
        const kiln_tensor_desc *t = kiln_weights_find(w, name);
        CHECK(t != NULL, "missing %s", name);
        if (!t)
            continue;
        size_t n = t->nbytes / 4;
        uint32_t *want = malloc(t->nbytes);
        memcpy(want, kiln_weights_data(w, t), t->nbytes);
        rng_stream r;
        rng_init(&r, RNG_TORCH_CPU, seeds[s]);
        size_t bad = n;
        for (size_t i = 0; i < n; i++)
            if (rng_mt_next(&r) != want[i] && bad == n)
                bad = i;
        CHECK(bad == n, "%s: word %zu differs", name, bad);
        free(want);
    }
    kiln_weights_destroy(w);
}

/* Replays every case in the file's "cases" list: a new stream per seed,
 * and for the ".seq" cases the earlier calls of the same stream first. */
static void check_cases(const char *kind_prefix, rng_kind kind)
{
    kiln_weights *w = open_golden();
    if (!w)
        return;
    json_error_t error;
    json_t *cases = json_loads(kiln_weights_metadata_get(w, "cases"), 0, &error);
    CHECK(json_is_array(cases), "metadata 'cases' is not a JSON list: %s", error.text);
    int checked = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        if (!name || strncmp(name, kind_prefix, strlen(kind_prefix)) != 0 || name[strlen(kind_prefix)] != '.')
            continue;
        uint64_t seed = strtoull(json_string_value(json_object_get(c, "seed")), NULL, 10);
        int call = (int)json_integer_value(json_object_get(c, "call"));
        rng_stream r;
        rng_init(&r, kind, seed);
        /* the earlier calls of a sequence are the cases just before this one */
        for (int k = 0; k < call; k++) {
            json_t *prev = json_array_get(cases, i - (size_t)call + (size_t)k);
            json_t *shape = json_object_get(prev, "shape");
            size_t n = 1, d;
            json_t *dim;
            json_array_foreach(shape, d, dim) n *= (size_t)json_integer_value(dim);
            float *skip = malloc(n * sizeof *skip);
            rng_randn(&r, skip, n);
            free(skip);
        }
        const kiln_tensor_desc *t = kiln_weights_find(w, name);
        CHECK(t != NULL, "missing tensor %s", name);
        if (!t)
            continue;
        size_t n = t->nbytes / 4;
        float *got = malloc(n * sizeof *got), *want = malloc(t->nbytes);
        memcpy(want, kiln_weights_data(w, t), t->nbytes);
        rng_randn(&r, got, n);
        if (memcmp(got, want, t->nbytes) != 0) {
            size_t bad = 0;
            while (bad < n && memcmp(&got[bad], &want[bad], 4) == 0)
                bad++;
            CHECK(0, "%s (seed %llu, call %d): value %zu of %zu: expected %.9g, got %.9g", name,
                  (unsigned long long)seed, call, bad, n, (double)want[bad], (double)got[bad]);
        }
        free(got);
        free(want);
        checked++;
    }
    CHECK(checked >= 20, "only %d %s cases found", checked, kind_prefix);
    printf("    %d %s cases bit-exact\n", checked, kind_prefix);
    json_decref(cases);
    kiln_weights_destroy(w);
}

static void test_torch_cpu(void)
{
    check_cases("torch_cpu", RNG_TORCH_CPU);
}

static void test_philox(void)
{
    check_cases("philox", RNG_PHILOX);
}

static void test_names(void)
{
    rng_kind k;
    CHECK(rng_parse("torch-cpu", &k) == 0 && k == RNG_TORCH_CPU, "torch-cpu");
    CHECK(rng_parse("philox", &k) == 0 && k == RNG_PHILOX, "philox");
    CHECK(rng_parse("mersenne", &k) != 0, "unknown names must be refused");
}

TEST_MAIN(TEST(test_mt19937_words), TEST(test_torch_cpu), TEST(test_philox), TEST(test_names))
