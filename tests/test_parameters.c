/* The AUTOMATIC1111 "parameters" text: what parameters_format writes,
 * parameters_parse reads back (format -> parse -> the same fields), and
 * parameters_parse reads what A1111 itself writes (real infotexts of its
 * versions 1.0 to 1.9: quoted values, multi-line prompts, settings kiln has
 * no field for), with errors that name the setting at fault; and the model
 * hash, through its cache. */
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/parameters.h"
#include "test_support.h"

/* ---- helpers ------------------------------------------------------------- */

static int same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

#define CHECK_STR(got, want)                                                                             \
    CHECK(same_string((got), (want)), "%s: expected \"%s\", got \"%s\"", #got, (want) ? (want) : "(null)", \
          (got) ? (got) : "(null)")

static const char *extra(const parsed_parameters *p, const char *key)
{
    for (size_t i = 0; i < p->n_extras; i++)
        if (strcmp(p->extras[i].key, key) == 0)
            return p->extras[i].value;
    return NULL;
}

/* Parses text, which must succeed; the caller frees. */
static int parse_ok(const char *text, parsed_parameters *p)
{
    memset(p, 0, sizeof *p);
    kiln_status st = parameters_parse(text, p);
    CHECK(st == KILN_OK, "parsing %s: status %d (%s)", text, st, kiln_last_error());
    return st == KILN_OK;
}

/* Expects parameters_parse to fail with KILN_ERR_FORMAT and a message
 * holding needle, leaving the out-parameter as it was. */
static void expect_format_error(const char *text, const char *needle)
{
    parsed_parameters p;
    memset(&p, 0xA5, sizeof p);
    parsed_parameters before = p;
    kiln_status st = parameters_parse(text, &p);
    const char *msg = kiln_last_error();
    CHECK(st == KILN_ERR_FORMAT, "%s: expected a format error, got status %d (%s)", text, st, msg);
    CHECK(strstr(msg, needle) != NULL, "%s: message '%s' should contain '%s'", text, msg, needle);
    CHECK(memcmp(&p, &before, sizeof p) == 0, "%s: the out-parameter must stay untouched on failure", text);
    if (st == KILN_OK)
        parsed_parameters_free(&p);
}

/* ---- format, then parse ---------------------------------------------------- */

/* The fields of ip, read back from the text parameters_format writes. */
static void round_trip(const image_parameters *ip)
{
    char *text = NULL;
    kiln_status st = parameters_format(ip, &text);
    CHECK(st == KILN_OK, "format: %s", kiln_last_error());
    if (st != KILN_OK)
        return;
    parsed_parameters p;
    if (!parse_ok(text, &p)) {
        free(text);
        return;
    }
    CHECK_STR(p.prompt, ip->prompt);
    CHECK_STR(p.negative_prompt, ip->negative_prompt ? ip->negative_prompt : "");
    unsigned want = PARAMETERS_STEPS | PARAMETERS_SAMPLER | PARAMETERS_CFG_SCALE | PARAMETERS_SEED |
                    PARAMETERS_SIZE | (ip->model_hash ? PARAMETERS_MODEL_HASH : 0) |
                    (ip->model_name ? PARAMETERS_MODEL : 0) |
                    (ip->denoising_strength > 0 ? PARAMETERS_DENOISING_STRENGTH : 0);
    CHECK(p.present == want, "%s: present fields 0x%x, expected 0x%x", text, p.present, want);
    CHECK_EQ_INT(p.steps, ip->steps);
    CHECK(p.sampler_known && p.kind == ip->sampler && p.karras == ip->karras,
          "%s: sampler '%s' read as known %d, kind %d, karras %d", text, p.sampler, p.sampler_known, p.kind,
          p.karras);
    CHECK(p.cfg_scale == ip->cfg_scale, "%s: cfg scale %g, expected %g", text, (double)p.cfg_scale,
          (double)ip->cfg_scale);
    CHECK(p.seed == ip->seed, "%s: seed %llu, expected %llu", text, (unsigned long long)p.seed,
          (unsigned long long)ip->seed);
    CHECK(p.width == ip->width && p.height == ip->height, "%s: size %dx%d, expected %dx%d", text, p.width,
          p.height, ip->width, ip->height);
    CHECK_STR(p.model_hash, ip->model_hash);
    CHECK_STR(p.model_name, ip->model_name);
    if (ip->denoising_strength > 0)
        CHECK(p.denoising_strength == ip->denoising_strength, "%s: denoising strength %g, expected %g", text,
              (double)p.denoising_strength, (double)ip->denoising_strength);
    const char *version = extra(&p, "Version");
    CHECK(version && strncmp(version, "kiln ", 5) == 0, "%s: Version extra '%s'", text, version);
    CHECK_STR(extra(&p, "RNG"), ip->rng && strcmp(ip->rng, "philox") != 0 ? "CPU" : NULL);
    parsed_parameters_free(&p);
    free(text);
}

static void test_round_trip(void)
{
    image_parameters ip = {.prompt = "a red circle on a blue background", .negative_prompt = "blurry",
                           .steps = 20, .sampler = SAMPLER_EULER_A, .cfg_scale = 7.5f, .seed = 42,
                           .width = 512, .height = 512, .model_hash = "6ce0161689", .model_name = "v1-5"};
    round_trip(&ip);

    /* no negative prompt, no hash, Karras sigmas, img2img, the torch CPU generator */
    image_parameters b = {.prompt = "a lighthouse at dusk, oil painting", .steps = 150, .sampler = SAMPLER_DPMPP_2M,
                          .karras = 1, .cfg_scale = 0, .seed = UINT64_MAX, .width = 2048, .height = 64,
                          .model_name = "tiny", .denoising_strength = 0.75f, .rng = "torch-cpu"};
    round_trip(&b);

    /* prompts over several lines, with commas and colons; names that need quoting */
    image_parameters c = {.prompt = "line one, (masterpiece:1.2)\nline two: more\n\nafter a blank line",
                          .negative_prompt = "ugly,\nblurry: very", .steps = 1, .sampler = SAMPLER_LCM,
                          .cfg_scale = 1.25f, .seed = 0, .width = 8, .height = 16,
                          .model_hash = "not, a: hash", .model_name = "my model, v2: \"final\"\\ \t end"};
    round_trip(&c);

    /* names that look like quoted values or are empty or blank */
    image_parameters d = {.prompt = "x", .steps = 30, .sampler = SAMPLER_DDIM, .cfg_scale = 12.0f, .seed = 7,
                          .width = 768, .height = 512, .model_hash = "", .model_name = "\"quoted\""};
    round_trip(&d);
    d.model_name = "  padded  ";
    d.model_hash = "\x01\x7f control";
    round_trip(&d);
    d.model_name = "caf\xc3\xa9 \xe2\x80\x94 \xff not utf-8";
    d.prompt = "";
    round_trip(&d);
    d.negative_prompt = "only a negative prompt";
    round_trip(&d);

    for (int k = 0; k < SAMPLER_KIND_COUNT; k++) {
        image_parameters e = ip;
        e.sampler = (sampler_kind)k;
        round_trip(&e);
        if (k != SAMPLER_DDIM && k != SAMPLER_LCM) {
            e.karras = 1;
            round_trip(&e);
        }
    }
}

/* parameters_format used to size its buffer for a 10-digit hash: a longer
 * one (which parse -> format can produce) wrote past the end. */
static void test_format_long_values(void)
{
    size_t n = 5000;
    char *hash = malloc(n + 1), *name = malloc(n + 1);
    if (!hash || !name) {
        CHECK(0, "out of memory");
        free(hash);
        free(name);
        return;
    }
    memset(hash, 'f', n);
    hash[n] = '\0';
    for (size_t i = 0; i < n; i++)
        name[i] = i % 7 == 3 ? '\n' : i % 5 == 1 ? ',' : 'n'; /* every '\n' becomes two bytes */
    name[n] = '\0';
    image_parameters ip = {.prompt = "p", .steps = 20, .sampler = SAMPLER_EULER, .cfg_scale = 7, .seed = 1,
                           .width = 512, .height = 512, .model_hash = hash, .model_name = name};
    round_trip(&ip);
    free(hash);
    free(name);
}

/* ---- what A1111 writes ------------------------------------------------------- */

static void test_a1111_classic(void)
{
    /* the example in A1111's own parse_generation_parameters docstring */
    parsed_parameters p;
    if (!parse_ok("girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy "
                  "makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, "
                  "intricate\n"
                  "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, "
                  "poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy "
                  "drawing\n"
                  "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b",
                  &p))
        return;
    CHECK(strncmp(p.prompt, "girl with an artist's beret", 27) == 0 && strstr(p.prompt, "intricate") &&
              !strchr(p.prompt, '\n'),
          "prompt: %s", p.prompt);
    CHECK(strncmp(p.negative_prompt, "ugly, fat", 9) == 0 && strstr(p.negative_prompt, "messy drawing"),
          "negative prompt: %s", p.negative_prompt);
    CHECK_EQ_INT(p.steps, 20);
    CHECK_STR(p.sampler, "Euler a");
    CHECK(p.sampler_known && p.kind == SAMPLER_EULER_A && !p.karras, "sampler kind %d karras %d", p.kind, p.karras);
    CHECK(p.cfg_scale == 7.0f, "cfg %g", (double)p.cfg_scale);
    CHECK(p.seed == 965400086u, "seed %llu", (unsigned long long)p.seed);
    CHECK(p.width == 512 && p.height == 512, "size %dx%d", p.width, p.height);
    CHECK_STR(p.model_hash, "45dee52b");
    CHECK_STR(p.model_name, NULL);
    CHECK(!(p.present & PARAMETERS_DENOISING_STRENGTH), "no denoising strength");
    CHECK_EQ_INT(p.n_extras, 0);
    parsed_parameters_free(&p);
}

static void test_a1111_modern(void)
{
    /* version 1.7-1.9 style: quoted lists, hires fix, LoRA and embedding
     * hashes, the scheduler as its own setting, CRLF line ends */
    parsed_parameters p;
    if (!parse_ok("masterpiece, best quality, 1girl, <lora:add_detail:0.6>\r\n"
                  "portrait, looking at viewer\r\n"
                  "Negative prompt: EasyNegative, (worst quality:1.4),\r\n"
                  "lowres\r\n"
                  "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, "
                  "Size: 832x1216, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.35, "
                  "Clip skip: 2, ADetailer prompt: \"a face, \\\"smiling\\\"\\nsecond line\", "
                  "Lora hashes: \"add_detail: 7c6bad76eb54\", TI hashes: \"EasyNegative: c74b4e810b03\", "
                  "Hires upscale: 2, Hires steps: 15, Hires upscaler: 4x-UltraSharp, Version: v1.9.4\r\n",
                  &p))
        return;
    CHECK_STR(p.prompt, "masterpiece, best quality, 1girl, <lora:add_detail:0.6>\nportrait, looking at viewer");
    CHECK_STR(p.negative_prompt, "EasyNegative, (worst quality:1.4),\nlowres");
    CHECK_EQ_INT(p.steps, 30);
    CHECK_STR(p.sampler, "DPM++ 2M");
    CHECK(p.sampler_known && p.kind == SAMPLER_DPMPP_2M && p.karras, "Schedule type: Karras counts: kind %d karras %d",
          p.kind, p.karras);
    CHECK(p.cfg_scale == 6.5f && p.seed == 3141592653u && p.width == 832 && p.height == 1216,
          "cfg %g seed %llu size %dx%d", (double)p.cfg_scale, (unsigned long long)p.seed, p.width, p.height);
    CHECK_STR(p.model_hash, "31e35c80fc");
    CHECK_STR(p.model_name, "sd_xl_base_1.0");
    CHECK(p.denoising_strength == 0.35f, "denoising %g", (double)p.denoising_strength);
    CHECK_EQ_INT(p.n_extras, 9);
    CHECK_STR(extra(&p, "Clip skip"), "2");
    CHECK_STR(extra(&p, "ADetailer prompt"), "a face, \"smiling\"\nsecond line");
    CHECK_STR(extra(&p, "Lora hashes"), "add_detail: 7c6bad76eb54");
    CHECK_STR(extra(&p, "TI hashes"), "EasyNegative: c74b4e810b03");
    CHECK_STR(extra(&p, "Hires upscaler"), "4x-UltraSharp");
    CHECK_STR(extra(&p, "Version"), "v1.9.4");
    CHECK(p.n_extras > 0 && strcmp(p.extras[0].key, "Schedule type") == 0 &&
              strcmp(p.extras[p.n_extras - 1].key, "Version") == 0,
          "extras in the order of the text");
    parsed_parameters_free(&p);
}

static void test_a1111_quirks(void)
{
    parsed_parameters p;

    /* no settings line: everything is prompt; a last line of fewer than
     * three pairs is prompt too */
    if (parse_ok("  just a prompt \n", &p)) {
        CHECK_STR(p.prompt, "just a prompt");
        CHECK(p.present == 0 && p.n_extras == 0, "nothing else: present 0x%x", p.present);
        parsed_parameters_free(&p);
    }
    if (parse_ok("a cat\nStyle: photo, Mood: calm", &p)) {
        CHECK_STR(p.prompt, "a cat\nStyle: photo, Mood: calm");
        CHECK_EQ_INT(p.n_extras, 0);
        parsed_parameters_free(&p);
    }
    /* only settings, no prompt; an empty value is dropped (A1111's v[0]
     * fails on it); a repeated key keeps its last value and first place;
     * text that is no pair is skipped; a one-letter key is none */
    if (parse_ok("Steps: 12, Model: , Sampler: DDIM, Seed: 5, Clip skip: 1, junk without colon, "
                 "x: 1, Clip skip: 3, Seed: 6",
                 &p)) {
        CHECK_STR(p.prompt, "");
        CHECK_STR(p.negative_prompt, "");
        CHECK(!(p.present & PARAMETERS_MODEL) && p.model_name == NULL, "empty Model dropped");
        CHECK(p.seed == 6, "the last Seed wins: %llu", (unsigned long long)p.seed);
        CHECK(p.n_extras == 1 && strcmp(p.extras[0].key, "Clip skip") == 0 && strcmp(p.extras[0].value, "3") == 0,
              "one Clip skip, the last value: %zu extras", p.n_extras);
        parsed_parameters_free(&p);
    }
    /* a negative prompt line without a prompt; leading blank negative lines
     * dropped, later ones kept; a second "Negative prompt:" prefix is cut too */
    if (parse_ok("Negative prompt:\n\nfirst\n\nNegative prompt: second\nSteps: 1, Sampler: LCM, CFG scale: 1", &p)) {
        CHECK_STR(p.prompt, "");
        CHECK_STR(p.negative_prompt, "first\n\nsecond");
        parsed_parameters_free(&p);
    }
    /* quoted values that are not JSON strings stay as written; "" is empty */
    if (parse_ok("p\nSteps: 3, Aa: \"unterminated, Bb: \"bad \\q escape\", Model: \"\", Seed: 1, Cc: \"x\"y", &p)) {
        CHECK_STR(p.model_name, "");
        CHECK(p.present & PARAMETERS_MODEL, "Model: \"\" is present and empty");
        CHECK_STR(extra(&p, "Aa"), "\"unterminated");
        CHECK_STR(extra(&p, "Bb"), "\"bad \\q escape\"");
        CHECK_STR(extra(&p, "Cc"), "\"x\"y");
        parsed_parameters_free(&p);
    }
    /* unicode escapes and a surrogate pair; an unknown sampler is kept */
    if (parse_ok("p\nSteps: 3, Sampler: DPM++ SDE, Note: \"caf\\u00e9 \\ud83d\\ude00, \\u2014\", Seed: 1", &p)) {
        CHECK_STR(extra(&p, "Note"), "caf\xc3\xa9 \xf0\x9f\x98\x80, \xe2\x80\x94");
        CHECK_STR(p.sampler, "DPM++ SDE");
        CHECK(!p.sampler_known, "DPM++ SDE is not a kiln sampler");
        parsed_parameters_free(&p);
    }
    /* a key has two characters at least, counted as Python counts them
     * (one 'é' is two bytes and still one character) */
    if (parse_ok("p\nSteps: 1, \xc3\xa9: x, Seed: 2, Size: 8x8", &p)) {
        CHECK(p.n_extras == 0 && p.seed == 2, "no key 'e-acute': %zu extras, seed %llu", p.n_extras,
              (unsigned long long)p.seed);
        parsed_parameters_free(&p);
    }
    if (parse_ok("p\nSteps: 1, \xc3\xa9\xc3\xa9: x, Seed: 2, Size: 8x8", &p)) {
        CHECK_STR(extra(&p, "\xc3\xa9\xc3\xa9"), "x");
        parsed_parameters_free(&p);
    }
    /* a value may hold ':' unquoted (A1111 reads it so) */
    if (parse_ok("p\nSteps: 3, Model: a:b, Seed: 1", &p)) {
        CHECK_STR(p.model_name, "a:b");
        parsed_parameters_free(&p);
    }
    if (parse_ok("", &p)) {
        CHECK_STR(p.prompt, "");
        CHECK_STR(p.negative_prompt, "");
        parsed_parameters_free(&p);
    }
    parsed_parameters_free(&p); /* a zeroed struct: nothing to free */
}

/* ---- errors --------------------------------------------------------------------- */

static void test_malformed_values(void)
{
    const char *head = "a prompt\nSteps: 20, Sampler: Euler, Seed: 1, ";
    struct {
        const char *settings, *needle;
    } cases[] = {
        {"Size: 12x", "Size: '12x' is not WIDTHxHEIGHT"},
        {"Size: x512", "Size: 'x512'"},
        {"Size: 512x512x3", "Size: '512x512x3'"},
        {"Size: 99999999999x64", "Size: '99999999999x64'"},
        {"Size: -64x64", "Size"},
        {"Steps: 2.5", "Steps: '2.5' is not a whole number"},
        {"Steps: 2147483648", "Steps: '2147483648'"},
        {"Steps: \"\"", "Steps: '' is not a whole number"},
        {"Seed: -1", "Seed: '-1' is not a whole number from 0 to 18446744073709551615"},
        {"Seed: 18446744073709551616", "Seed: '18446744073709551616'"},
        {"CFG scale: seven", "CFG scale: 'seven' is not a number"},
        {"CFG scale: inf", "CFG scale: 'inf'"},
        {"CFG scale: nan", "CFG scale: 'nan'"},
        {"CFG scale: 1e39", "CFG scale: '1e39'"},
        {"CFG scale: 0x10", "CFG scale: '0x10'"},
        {"Denoising strength: 0.5.1", "Denoising strength: '0.5.1' is not a number"},
        {"Steps: \"1\\u0001\"", "Steps: '1\\x01'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "%s%s", head, cases[i].settings);
        expect_format_error(text, cases[i].needle);
        expect_format_error(text, "parameters: ");
    }

    /* numbers that are fine */
    parsed_parameters p;
    if (parse_ok("p\nSteps: 0150, CFG scale: -.5e1, Seed: 18446744073709551615, Size: 08x0016, "
                 "Denoising strength: +1",
                 &p)) {
        CHECK(p.steps == 150 && p.cfg_scale == -5.0f && p.seed == UINT64_MAX && p.width == 8 && p.height == 16 &&
                  p.denoising_strength == 1.0f,
              "steps %d cfg %g seed %llu size %dx%d denoising %g", p.steps, (double)p.cfg_scale,
              (unsigned long long)p.seed, p.width, p.height, (double)p.denoising_strength);
        parsed_parameters_free(&p);
    }

    CHECK_EQ_INT(parameters_parse(NULL, &p), KILN_ERR_INVALID);
    CHECK_EQ_INT(parameters_parse("x", NULL), KILN_ERR_INVALID);
    size_t n = PARAMETERS_MAX_BYTES + 1;
    char *big = malloc(n + 1);
    if (big) {
        memset(big, 'a', n);
        big[n] = '\0';
        CHECK_EQ_INT(parameters_parse(big, &p), KILN_ERR_INVALID);
        CHECK(strstr(kiln_last_error(), "1048577 bytes") != NULL, "message: %s", kiln_last_error());
        free(big);
    }
}

/* Inputs that would make a findall that tries every position quadratic
 * (a long key without ':'), long unclosed quotes, many settings of distinct
 * and of repeated keys, at the size limit. Each must take linear or n log n
 * time (the test times out otherwise). */
static void test_large_inputs(void)
{
    size_t n = PARAMETERS_MAX_BYTES;
    char *text = malloc(n + 1);
    if (!text) {
        CHECK(0, "out of memory");
        return;
    }
    parsed_parameters p;
    for (int pattern = 0; pattern < 5; pattern++) {
        size_t used = 0, entries = 0;
        for (size_t i = 0; used + 40 < n; i++, entries++) {
            int w = 0;
            switch (pattern) {
            case 0: w = snprintf(text + used, n - used, "word "); break;
            case 1: w = snprintf(text + used, n - used, "k: \"\\\", x"); break;
            case 2: w = snprintf(text + used, n - used, "k: \"x, "); break;
            case 3: w = snprintf(text + used, n - used, "Key%zu: v, ", i); break;
            default: w = snprintf(text + used, n - used, "Seed: %zu, Clip skip: %zu, ", i, i); break;
            }
            used += (size_t)w;
        }
        text[used] = '\0';
        if (parse_ok(text, &p)) {
            if (pattern == 3)
                CHECK(p.n_extras == entries, "distinct keys: %zu extras of %zu", p.n_extras, entries);
            if (pattern == 4)
                CHECK(p.n_extras == 1, "one key repeated: %zu extras", p.n_extras);
            parsed_parameters_free(&p);
        }
    }
    free(text);
}

/* ---- the model hash and its cache ---------------------------------------- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    CHECK(f != NULL, "cannot write %s", path);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    if (buf)
        fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    return buf;
}

/* The cached hash against the uncached one (SHA-256 of "abc" is
 * ba7816bf..., of "abd" a52d159f...): a second run reads the cache (shown
 * by planting a different hash in it), a file changed in place is hashed
 * again, and a cache that is garbage or cannot be written changes nothing
 * but the time. */
static void test_model_hash_cache(void)
{
    const char *dir = test_tmp_dir();
    char model[256], cache[256], cache_file[300];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(cache_file, sizeof cache_file, "%s/kiln/model-hashes.json", cache);
    const char *saved = getenv("XDG_CACHE_HOME");
    char *saved_copy = saved ? strdup(saved) : NULL;
    setenv("XDG_CACHE_HOME", cache, 1);

    char hash[11] = {0};
    write_text(model, "abc");
    CHECK(parameters_model_hash(model, hash) == KILN_OK && strcmp(hash, "ba7816bf8f") == 0, "plain hash: %s", hash);
    CHECK(parameters_model_hash_cached(model, hash) == KILN_OK && strcmp(hash, "ba7816bf8f") == 0,
          "first cached hash: %s", hash);
    char *text = read_text(cache_file);
    CHECK(text && strstr(text, "\"ba7816bf8f\"") && strstr(text, "model.safetensors"), "cache file: %s",
          text ? text : "(missing)");

    /* planted: the next call must answer from the cache */
    char *at = text ? strstr(text, "ba7816bf8f") : NULL;
    if (at) {
        memcpy(at, "0123456789", 10);
        write_text(cache_file, text);
        CHECK(parameters_model_hash_cached(model, hash) == KILN_OK && strcmp(hash, "0123456789") == 0,
              "a second call did not read the cache: %s", hash);
    }
    free(text);

    /* same size, new contents and modification time: hashed again */
    write_text(model, "abd");
    struct timespec times[2] = {{.tv_sec = 1000000000, .tv_nsec = 0}, {.tv_sec = 1000000000, .tv_nsec = 0}};
    utimensat(AT_FDCWD, model, times, 0);
    CHECK(parameters_model_hash_cached(model, hash) == KILN_OK && strcmp(hash, "a52d159f26") == 0,
          "changed file: %s, expected a52d159f26", hash);

    /* garbage in the cache: hashed, and the cache written anew */
    write_text(cache_file, "{not json");
    CHECK(parameters_model_hash_cached(model, hash) == KILN_OK && strcmp(hash, "a52d159f26") == 0,
          "with a garbage cache: %s", hash);
    text = read_text(cache_file);
    CHECK(text && strstr(text, "a52d159f26"), "cache not rewritten: %s", text ? text : "(missing)");
    free(text);

    /* a cache folder that cannot exist (under a regular file): still the hash */
    char blocked[300];
    snprintf(blocked, sizeof blocked, "%s/model.safetensors/cache", dir);
    setenv("XDG_CACHE_HOME", blocked, 1);
    CHECK(parameters_model_hash_cached(model, hash) == KILN_OK && strcmp(hash, "a52d159f26") == 0,
          "unwritable cache: %s", hash);
    CHECK(parameters_model_hash_cached("/nonexistent/model.safetensors", hash) == KILN_ERR_IO,
          "a missing model: expected an I/O error");

    if (saved_copy)
        setenv("XDG_CACHE_HOME", saved_copy, 1);
    else
        unsetenv("XDG_CACHE_HOME");
    free(saved_copy);
}

TEST_MAIN(TEST(test_round_trip), TEST(test_format_long_values), TEST(test_a1111_classic), TEST(test_a1111_modern),
          TEST(test_a1111_quirks), TEST(test_malformed_values), TEST(test_large_inputs),
          TEST(test_model_hash_cache))
