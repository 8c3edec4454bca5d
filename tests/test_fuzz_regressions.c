/* The fuzz targets' inputs, replayed without libFuzzer: every input a
 * fuzzer once failed on (tests/data/regressions/<target>/) and the seed
 * corpora (fuzz/corpus/<target>/) go through the same checks the fuzzers
 * run (fuzz/fuzz_<target>.c, built here with KILN_FUZZ_REPLAY), so the
 * suite guards them with any compiler; a broken check aborts, naming the
 * input. Each regression input also has a line in
 * tests/data/regressions/EXPECTED.tsv saying what its parser must now
 * report, for the defects the generic checks cannot see without a
 * sanitizer (an allocation of 2 GB succeeds, untouched, on Linux). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "kiln.h"
#include "pipeline/image_io.h"
#include "pipeline/parameters.h"
#include "serve.h"
#include "test_support.h"

static const char *const targets[] = {"safetensors", "tokenizer", "png", "parameters", "request"};

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", a, b);
    return path;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    size_t used = 0, cap = 0;
    for (;;) {
        if (used == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *grown = realloc(data, cap);
            if (!grown) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = grown;
        }
        size_t n = fread(data + used, 1, cap - used, f);
        used += n;
        if (n == 0)
            break;
    }
    fclose(f);
    *size = used;
    return data;
}

/* The regular files of dir, sorted; NULL-terminated, malloc'd. NULL when
 * dir cannot be read. */
static char **list_files(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "EXPECTED.tsv") == 0)
            continue;
        char **grown = realloc(names, (n + 2) * sizeof *names);
        if (!grown)
            break;
        names = grown;
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (names) {
        qsort(names, n, sizeof *names, compare_names);
        names[n] = NULL;
    }
    *count = n;
    return names;
}

static void free_list(char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
}

typedef int (*fuzz_fn)(const uint8_t *, size_t);

/* Every file of dir through fn; returns how many. */
static size_t replay_dir(const char *dir, fuzz_fn fn)
{
    size_t count = 0;
    char **names = list_files(dir, &count);
    for (size_t i = 0; i < count; i++) {
        char *path = join(dir, names[i]);
        size_t size = 0;
        uint8_t *data = path ? read_file(path, &size) : NULL;
        CHECK(data != NULL, "cannot read %s", path ? path : names[i]);
        if (data) {
            fuzz_input_name = path;
            fn(data, size);
            fuzz_input_name = NULL;
        }
        free(data);
        free(path);
    }
    free_list(names);
    return count;
}

static void replay(const char *target, fuzz_fn fn)
{
    char *regressions = join(KILN_TEST_DATA "/regressions", target);
    char *corpus = join(KILN_FUZZ_DIR "/corpus", target);
    if (!regressions || !corpus) {
        CHECK(0, "out of memory");
    } else {
        replay_dir(regressions, fn); /* may be empty: a target that never failed */
        size_t seeds = replay_dir(corpus, fn);
        CHECK(seeds > 0, "no seed corpus in %s", corpus);
    }
    free(regressions);
    free(corpus);
}

static void test_safetensors_inputs(void)
{
    replay("safetensors", fuzz_safetensors);
}

static void test_tokenizer_inputs(void)
{
    if (fuzz_tokenizer_init(KILN_SHARED_DATA "/clip-tokenizer") != 0) {
        CHECK(0, "the CLIP tokenizer is missing from %s (shared/data beside the clone)",
              KILN_SHARED_DATA "/clip-tokenizer");
        return;
    }
    replay("tokenizer", fuzz_tokenizer);
    fuzz_tokenizer_deinit();
}

static void test_png_inputs(void)
{
    replay("png", fuzz_png);
}

static void test_parameters_inputs(void)
{
    replay("parameters", fuzz_parameters);
}

static void test_request_inputs(void)
{
    replay("request", fuzz_request);
}

/* The seed PNGs are valid images of every colour type
 * (fuzz/make_png_corpus.py): they must decode, or the fuzzer starts from
 * error paths only. */
static void test_png_seeds_decode(void)
{
    const char *dir = KILN_FUZZ_DIR "/corpus/png";
    size_t count = 0;
    char **names = list_files(dir, &count);
    CHECK(count >= 20, "%zu seed PNGs in %s", count, dir);
    for (size_t i = 0; i < count; i++) {
        char *path = join(dir, names[i]);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        kiln_status st = path ? png_read_rgb(path, KILN_MAX_INIT_PIXELS, &rgb, &w, &h) : KILN_ERR_NOMEM;
        CHECK(st == KILN_OK && w > 0 && h > 0, "%s: status %d (%s)", names[i], st, kiln_last_error());
        free(rgb);
        free(path);
    }
    free_list(names);
}

/* What the parser of a regression input reports now: "ok", or its status
 * name and message. */
static void outcome(const char *target, const char *path, char *out, size_t size)
{
    kiln_status st = KILN_ERR_UNSUPPORTED;
    if (strcmp(target, "safetensors") == 0) {
        kiln_weights *w = NULL;
        st = kiln_weights_open(path, &w);
        kiln_weights_destroy(w);
    } else if (strcmp(target, "png") == 0) {
        uint8_t *rgb = NULL;
        int width, height;
        st = png_read_rgb(path, KILN_MAX_INIT_PIXELS, &rgb, &width, &height);
        free(rgb);
    } else if (strcmp(target, "parameters") == 0) {
        size_t n = 0;
        uint8_t *data = read_file(path, &n);
        char *text = data ? fuzz_text(data, n) : NULL;
        parsed_parameters p;
        st = text ? parameters_parse(text, &p) : KILN_ERR_IO;
        if (st == KILN_OK)
            parsed_parameters_free(&p);
        free(text);
        free(data);
    } else if (strcmp(target, "request") == 0) {
        /* as a txt2img body; "<kind> <field>: <detail>" when refused */
        size_t n = 0;
        uint8_t *data = read_file(path, &n);
        job_params p;
        api_error err;
        if (data && request_parse((const char *)data, n, 0, SERVE_F32, &p, &err) == 0) {
            job_params_free(&p);
            snprintf(out, size, "ok");
        } else if (data) {
            snprintf(out, size, "%d %s %s: %s", err.status, err.kind, err.field, err.detail);
            json_decref(err.allowed);
        } else {
            snprintf(out, size, "cannot read %s", path);
        }
        free(data);
        return;
    } else if (strcmp(target, "tokenizer") == 0) {
        snprintf(out, size, "ok"); /* prompts never fail; the replay checks them */
        return;
    }
    if (st == KILN_OK)
        snprintf(out, size, "ok");
    else
        snprintf(out, size, "%s: %s", kiln_status_string(st), kiln_last_error());
}

/* tests/data/regressions/EXPECTED.tsv: target/file, a substring of what
 * its parser must report ("ok" for success), the defect it guards. Every
 * regression input must have its line. */
static void test_expected_outcomes(void)
{
    size_t size = 0;
    uint8_t *tsv = read_file(KILN_TEST_DATA "/regressions/EXPECTED.tsv", &size);
    CHECK(tsv != NULL, "cannot read %s", KILN_TEST_DATA "/regressions/EXPECTED.tsv");
    if (!tsv)
        return;
    char *text = fuzz_text(tsv, size);
    free(tsv);
    size_t listed = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        char *file = line, *expected = strchr(line, '\t');
        char *why = expected ? strchr(expected + 1, '\t') : NULL;
        char *slash = strchr(file, '/');
        CHECK(expected && why && slash && slash < expected, "EXPECTED.tsv: '%s' is not target/file, expected, defect",
              line);
        if (!expected || !why || !slash || slash > expected)
            continue;
        *expected++ = '\0';
        *why++ = '\0';
        char target[32], got[1024];
        snprintf(target, sizeof target, "%.*s", (int)(slash - file), file);
        char *path = join(KILN_TEST_DATA "/regressions", file);
        if (path)
            outcome(target, path, got, sizeof got);
        CHECK(path && strstr(got, expected) != NULL, "%s (%s): expected '%s', got '%s'", file, why, expected,
              path ? got : "out of memory");
        listed++;
        free(path);
    }
    free(text);

    size_t files = 0;
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        char *dir = join(KILN_TEST_DATA "/regressions", targets[t]);
        size_t n = 0;
        char **names = dir ? list_files(dir, &n) : NULL;
        files += n;
        free_list(names);
        free(dir);
    }
    CHECK(listed == files, "EXPECTED.tsv lists %zu inputs, tests/data/regressions holds %zu", listed, files);
}

TEST_MAIN(TEST(test_safetensors_inputs), TEST(test_tokenizer_inputs), TEST(test_png_inputs),
          TEST(test_parameters_inputs), TEST(test_request_inputs), TEST(test_png_seeds_decode), TEST(test_expected_outcomes))
