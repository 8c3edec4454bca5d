/*
 * test_tuning.c - the tuning cache (kiln.h: kiln_tuning_*): the model hash,
 * the cache path, store and lookup by CPU, ISA, model hash and resolution,
 * stale and corrupt files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln.h"
#include "perf/tuning.h"
#include "test_support.h"

/* A minimal safetensors file: one F32 tensor of n values, value i = i * scale. */
static char *write_model(const char *name, size_t n, float scale)
{
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/%s", test_tmp_dir(), name);
    char header[256];
    int hlen = snprintf(header, sizeof header, "{\"w\":{\"dtype\":\"F32\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}", n,
                        n * 4);
    FILE *f = fopen(path, "wb");
    unsigned char len8[8] = {0};
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, (size_t)hlen, f);
    for (size_t i = 0; i < n; i++) {
        float v = (float)i * scale;
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
    return path;
}

static void patch_byte(const char *path, long offset)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void test_model_hash(void)
{
    char *small = write_model("small.safetensors", 1000, 1.0f);
    char *big = write_model("big.safetensors", 300000, 1.0f); /* 1.2 MB: sampled */
    char h1[KILN_MODEL_HASH_HEX], h2[KILN_MODEL_HASH_HEX], h3[KILN_MODEL_HASH_HEX];
    CHECK_EQ_INT(kiln_model_hash(small, h1), KILN_OK);
    CHECK_EQ_INT(kiln_model_hash(small, h2), KILN_OK);
    CHECK(strlen(h1) == 64 && !strcmp(h1, h2), "the hash is 64 hex digits and stable: %s %s", h1, h2);
    patch_byte(small, 8 + 80 + 4 * 500); /* data in a small file: all of it is hashed */
    CHECK_EQ_INT(kiln_model_hash(small, h2), KILN_OK);
    CHECK(strcmp(h1, h2) != 0, "a changed weight changes the hash of a small file");

    CHECK_EQ_INT(kiln_model_hash(big, h1), KILN_OK);
    patch_byte(big, 10); /* the header */
    CHECK_EQ_INT(kiln_model_hash(big, h2), KILN_OK);
    CHECK(strcmp(h1, h2) != 0, "a changed header changes the hash");
    patch_byte(big, 10);
    CHECK_EQ_INT(kiln_model_hash(big, h3), KILN_OK);
    CHECK(!strcmp(h1, h3), "restored file, same hash");
    struct stat sb;
    stat(big, &sb);
    patch_byte(big, (long)sb.st_size - 1); /* the last block is always sampled */
    CHECK_EQ_INT(kiln_model_hash(big, h2), KILN_OK);
    CHECK(strcmp(h1, h2) != 0, "a changed last byte changes the hash");

    char junk[4096];
    snprintf(junk, sizeof junk, "%s/junk.safetensors", test_tmp_dir());
    FILE *f = fopen(junk, "wb");
    fputs("\xff\xff\xff\xff\xff\xff\xff\x7fnot a model", f);
    fclose(f);
    CHECK_EQ_INT(kiln_model_hash(junk, h1), KILN_ERR_FORMAT);
    CHECK(strstr(kiln_last_error(), "junk.safetensors") != NULL, "the error names the file: %s", kiln_last_error());
    CHECK_EQ_INT(kiln_model_hash("/nonexistent/model.safetensors", h1), KILN_ERR_IO);
    free(small);
    free(big);
}

static void test_cache_path(void)
{
    char buf[4096];
    setenv("XDG_CACHE_HOME", "/tmp/xdg-test", 1);
    CHECK_EQ_INT(kiln_tuning_cache_path(buf, sizeof buf), KILN_OK);
    CHECK(!strcmp(buf, "/tmp/xdg-test/kiln/tuning.json"), "XDG_CACHE_HOME: got %s", buf);
    setenv("XDG_CACHE_HOME", "relative", 1);
    setenv("HOME", "/home/someone", 1);
    CHECK_EQ_INT(kiln_tuning_cache_path(buf, sizeof buf), KILN_OK);
    CHECK(!strcmp(buf, "/home/someone/.cache/kiln/tuning.json"), "HOME fallback: got %s", buf);
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    CHECK_EQ_INT(kiln_tuning_cache_path(buf, sizeof buf), KILN_ERR_INVALID);
}

static void test_store_and_lookup(void)
{
    char *model = write_model("m.safetensors", 5000, 0.5f);
    char cache[4096];
    snprintf(cache, sizeof cache, "%s/cache/deeper/kiln/tuning.json", test_tmp_dir());
    kiln_tuning key, got;
    kiln_tuning_match match;
    CHECK_EQ_INT(kiln_tuning_key(model, 64, 64, &key), KILN_OK);
    kiln_cpu_info cpu;
    kiln_cpu_query(&cpu);
    CHECK(!strcmp(key.cpu, cpu.model) && !strcmp(key.isa, kiln_isa_name(cpu.isa)), "key: %s %s", key.cpu, key.isa);
    CHECK(key.model_path[0] == '/', "absolute model path: %s", key.model_path);

    /* no file yet: missing, not an error */
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &key, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_MISSING);

    kiln_tuning t = key;
    kiln_optimizations_defaults(&t.optimizations);
    t.optimizations.precision = KILN_PRECISION_BF16;
    t.optimizations.threads = 1;
    t.optimizations.attention_tile = 24;
    t.batch_size = 3;
    t.images_per_s = 12.5;
    t.measured_at = 1790000000;
    snprintf(t.kiln_version, sizeof t.kiln_version, "%s", kiln_version());
    CHECK_EQ_INT(kiln_tuning_store(cache, &t), KILN_OK);
    /* another resolution beside it */
    kiln_tuning other = t;
    other.width = 128;
    other.batch_size = 1;
    CHECK_EQ_INT(kiln_tuning_store(cache, &other), KILN_OK);

    CHECK_EQ_INT(kiln_tuning_lookup(cache, &key, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_FOUND);
    CHECK_EQ_INT(got.batch_size, 3);
    CHECK_EQ_INT(got.optimizations.precision, KILN_PRECISION_BF16);
    CHECK_EQ_INT(got.optimizations.threads, 1);
    CHECK_EQ_INT(got.optimizations.attention_tile, 24);
    CHECK(got.images_per_s == 12.5 && got.measured_at == 1790000000, "measured %g at %lld", got.images_per_s,
          (long long)got.measured_at);

    /* the same key again replaces, does not add */
    t.batch_size = 2;
    CHECK_EQ_INT(kiln_tuning_store(cache, &t), KILN_OK);
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &key, &got, &match), KILN_OK);
    CHECK(match == KILN_TUNING_FOUND && got.batch_size == 2, "replaced: match %d batch %d", match, got.batch_size);
    FILE *f = fopen(cache, "r");
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    int entries = 0;
    for (const char *p = text; (p = strstr(p, "\"model_hash\"")); p++)
        entries++;
    CHECK_EQ_INT(entries, 2);
    CHECK(strstr(text, "\"resolution\": \"64x64\"") && strstr(text, "\"precision\": \"bf16\""), "file: %s", text);

    kiln_tuning key128 = key;
    key128.height = 128;
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &key128, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_MISSING);

    /* another CPU or ISA level: the entry is not used, and is returned to name it */
    kiln_tuning moved = key;
    snprintf(moved.cpu, sizeof moved.cpu, "Some Other CPU 9000");
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &moved, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_CPU_CHANGED);
    CHECK(!strcmp(got.cpu, key.cpu), "the stale entry's cpu: %s", got.cpu);
    char msg[1024];
    tuning_explain(match, &moved, &got, cache, msg, sizeof msg);
    CHECK(strstr(msg, "another CPU") && strstr(msg, "defaults"), "message: %s", msg);
    moved = key;
    snprintf(moved.isa, sizeof moved.isa, "scalar-x");
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &moved, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_CPU_CHANGED);
    tuning_explain(match, &moved, &got, cache, msg, sizeof msg);
    CHECK(strstr(msg, "kernels") && strstr(msg, "scalar-x") && strstr(msg, "defaults"), "message: %s", msg);

    /* the file at the same path rewritten: the model changed */
    free(write_model("m.safetensors", 5000, 0.25f));
    kiln_tuning changed;
    CHECK_EQ_INT(kiln_tuning_key(model, 64, 64, &changed), KILN_OK);
    CHECK(strcmp(changed.model_hash, key.model_hash) != 0, "rewritten model, new hash");
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &changed, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_MODEL_CHANGED);
    tuning_explain(match, &changed, &got, cache, msg, sizeof msg);
    CHECK(strstr(msg, "model") && strstr(msg, "changed"), "message: %s", msg);
    free(model);
}

static void test_corrupt_cache(void)
{
    char *model = write_model("c.safetensors", 100, 1.0f);
    char cache[4096];
    snprintf(cache, sizeof cache, "%s/corrupt.json", test_tmp_dir());
    kiln_tuning key, got;
    kiln_tuning_match match = KILN_TUNING_FOUND;
    CHECK_EQ_INT(kiln_tuning_key(model, 64, 64, &key), KILN_OK);
    const char *bad[] = {"{\"format\": \"kiln-tuning\", \"entries\": [", "[1, 2, 3]", "",
                         "{\"format\": \"kiln-tuning\", \"version\": 1, \"entries\": [{\"cpu\": 1}]}",
                         "{\"format\": \"kiln-tuning\", \"version\": 1, \"entries\": [{\"cpu\": \"x\", \"isa\": \"y\", "
                         "\"model_hash\": \"z\", \"width\": 64, \"height\": 64, \"batch_size\": 1, "
                         "\"optimizations\": {\"attention\": \"quantum\"}}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(cache, "w");
        fputs(bad[i], f);
        fclose(f);
        CHECK(kiln_tuning_lookup(cache, &key, &got, &match) == KILN_ERR_FORMAT, "corrupt file %zu: a format error", i);
        CHECK(strstr(kiln_last_error(), cache) != NULL, "the message names the file: %s", kiln_last_error());
    }
    /* storing replaces a broken file with a good one */
    kiln_tuning t = key;
    kiln_optimizations_defaults(&t.optimizations);
    t.batch_size = 1;
    CHECK_EQ_INT(kiln_tuning_store(cache, &t), KILN_OK);
    CHECK_EQ_INT(kiln_tuning_lookup(cache, &key, &got, &match), KILN_OK);
    CHECK_EQ_INT(match, KILN_TUNING_FOUND);
    free(model);
}

TEST_MAIN(TEST(test_model_hash), TEST(test_cache_path), TEST(test_store_and_lookup), TEST(test_corrupt_cache))
