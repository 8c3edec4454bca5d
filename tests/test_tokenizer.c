/* The CLIP tokenizer: the 206 reference prompts of ../shared/data, SD's
 * padding and truncation, awkward prompts, and malformed vocabularies. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "kiln.h"
#include "models/tokenizer.h"
#include "test_support.h"

#define CTX TOK_SD_CONTEXT_LEN

/* ---- helpers --------------------------------------------------------------- */

/* The real CLIP tokenizer from ../shared/data/clip-tokenizer, or NULL after
 * a failed check: these tests need the data, and its absence is a failure. */
static tok_tokenizer *load_clip(void)
{
    char *vocab = test_shared_path("clip-tokenizer/vocab.json");
    char *merges = test_shared_path("clip-tokenizer/merges.txt");
    tok_tokenizer *t = NULL;
    if (access(vocab, R_OK) != 0 || access(merges, R_OK) != 0) {
        CHECK(0, "the CLIP tokenizer files are missing: expected %s and %s (shared/data beside the clone)", vocab,
              merges);
    } else {
        kiln_status st = tok_create(vocab, merges, &t);
        CHECK(st == KILN_OK, "loading %s: %s", vocab, kiln_last_error());
    }
    free(vocab);
    free(merges);
    return t;
}

/* Encodes text; returns the count (-1 after a failed check). */
static long encode(const tok_tokenizer *t, const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    kiln_status st = tok_encode(t, text, ids, cap, &n);
    CHECK(st == KILN_OK, "tok_encode failed: %s", kiln_last_error());
    return st == KILN_OK ? (long)n : -1;
}

/* Checks that a and b encode to the same ids (b spells out what a means). */
static void check_same(const tok_tokenizer *t, const char *a, const char *b)
{
    int32_t ia[64], ib[64];
    long na = encode(t, a, ia, 64), nb = encode(t, b, ib, 64);
    int same = na == nb && na >= 0 && na <= 64 && memcmp(ia, ib, (size_t)na * sizeof ia[0]) == 0;
    CHECK(same, "'%s' should encode as '%s': %ld vs %ld ids%s", a, b, na, nb,
          na > 0 && nb > 0 ? (ia[0] == ib[0] ? ", first ids equal" : ", first ids differ") : "");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *size = (size_t)n;
    }
    return buf;
}

/* ---- the reference prompts ------------------------------------------------ */

static void test_golden_prompts(void)
{
    tok_tokenizer *t = load_clip();
    char *path = test_shared_path("clip-tokenizer/golden-ids.jsonl");
    size_t size = 0;
    char *text = read_file(path, &size);
    CHECK(text != NULL, "cannot read %s (shared/data beside the clone)", path);
    if (!t || !text)
        goto done;

    int prompts = 0, exact = 0, reported = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!*line)
            continue;
        json_error_t jerr;
        json_t *obj = json_loads(line, 0, &jerr);
        json_t *prompt = json_object_get(obj, "prompt"), *ref = json_object_get(obj, "ids");
        CHECK(json_is_string(prompt) && json_is_array(ref), "%s: line %d is not {\"prompt\", \"ids\"}", path,
              prompts + 1);
        if (!json_is_string(prompt) || !json_is_array(ref)) {
            json_decref(obj);
            continue;
        }
        prompts++;
        const char *p = json_string_value(prompt);
        size_t nref = json_array_size(ref);

        /* tok_encode gives the ids between start and end */
        int32_t got[512];
        long n = encode(t, p, got, 512);
        int ok = n >= 0 && (size_t)n + 2 == nref && json_integer_value(json_array_get(ref, 0)) == tok_start_id(t) &&
                 json_integer_value(json_array_get(ref, nref - 1)) == tok_end_id(t);
        size_t bad_at = 0;
        for (size_t i = 0; ok && i < (size_t)n; i++)
            if (json_integer_value(json_array_get(ref, i + 1)) != got[i]) {
                ok = 0;
                bad_at = i + 1;
            }
        if (!ok && n >= 0 && (size_t)n + 2 != nref)
            bad_at = (size_t)n + 2 < nref ? (size_t)n + 1 : nref - 1;
        if (!ok && reported++ < 5) {
            long long want = bad_at < nref ? (long long)json_integer_value(json_array_get(ref, bad_at)) : -1;
            long long have = bad_at >= 1 && bad_at - 1 < (size_t)n ? got[bad_at - 1] : -1;
            CHECK(0, "prompt %d '%s': %ld ids + start/end, reference %zu; first difference at position %zu: "
                     "expected %lld, got %lld",
                  prompts, p, n, nref, bad_at, want, have);
        }

        /* and tok_encode_padded the same, cut to 77 and padded */
        int32_t padded[CTX];
        int cut = -1;
        CHECK_EQ_INT(tok_encode_padded(t, p, CTX, padded, &cut), KILN_OK);
        size_t body = nref - 2 < CTX - 2 ? nref - 2 : CTX - 2;
        int pad_ok = cut == (int)(nref - 2 - body) && padded[0] == tok_start_id(t) &&
                     padded[body + 1] == tok_end_id(t);
        for (size_t i = 0; i < body; i++)
            pad_ok &= padded[i + 1] == json_integer_value(json_array_get(ref, i + 1));
        for (size_t i = body + 2; i < CTX; i++)
            pad_ok &= padded[i] == tok_pad_id(t);
        CHECK(pad_ok, "prompt %d '%s': padded ids differ from the reference cut to %d (truncated %d)", prompts, p,
              CTX, cut);
        exact += ok;
        json_decref(obj);
    }
    printf("golden: %d/%d prompts exact\n", exact, prompts);
    CHECK_EQ_INT(prompts, 206);
    CHECK_EQ_INT(exact, prompts);
done:
    free(text);
    free(path);
    tok_destroy(t);
}

/* ---- the vocabulary -------------------------------------------------------- */

static void test_accessors(void)
{
    tok_tokenizer *t = load_clip();
    if (!t)
        return;
    CHECK_EQ_INT(tok_vocab_size(t), 49408);
    CHECK_EQ_INT(tok_merge_count(t), 48894);
    CHECK_EQ_INT(tok_start_id(t), 49406);
    CHECK_EQ_INT(tok_end_id(t), 49407);
    CHECK_EQ_INT(tok_pad_id(t), 49407);
    CHECK(tok_token(t, 320) && strcmp(tok_token(t, 320), "a</w>") == 0, "token 320: got '%s'",
          tok_token(t, 320) ? tok_token(t, 320) : "(null)");
    CHECK(tok_token(t, 49406) && strcmp(tok_token(t, 49406), "<|startoftext|>") == 0, "token 49406: got '%s'",
          tok_token(t, 49406) ? tok_token(t, 49406) : "(null)");
    CHECK(tok_token(t, -1) == NULL && tok_token(t, 49408) == NULL, "ids outside the vocabulary must give NULL");
    CHECK_EQ_INT(tok_token_id(t, "a</w>"), 320);
    CHECK_EQ_INT(tok_token_id(t, "not a token"), -1);

    /* decode is the reference's: bytes back, "</w>" to spaces */
    int32_t ids[CTX];
    CHECK_EQ_INT(tok_encode_padded(t, "A photo of a CAT, caf\xc3\xa9 \xf0\x9f\x8d\x8e!", CTX, ids, NULL), KILN_OK);
    char text[128];
    size_t len = 0;
    CHECK_EQ_INT(tok_decode(t, ids, 12, text, sizeof text, &len), KILN_OK);
    const char *want = "<|startoftext|>a photo of a cat , caf\xc3\xa9 \xf0\x9f\x8d\x8e! <|endoftext|>";
    CHECK(strcmp(text, want) == 0, "decode: expected '%s', got '%s'", want, text);
    CHECK_EQ_INT(len, strlen(want));
    char small[8];
    CHECK_EQ_INT(tok_decode(t, ids, 12, small, sizeof small, &len), KILN_OK);
    CHECK(strcmp(small, "<|start") == 0 && len == strlen(want), "short decode buffer: got '%s', length %zu", small,
          len);
    int32_t bad = 49408;
    len = 99;
    CHECK_EQ_INT(tok_decode(t, &bad, 1, text, sizeof text, &len), KILN_ERR_INVALID);
    CHECK_EQ_INT(len, 99);

    /* another pad id (SD 2.x pads with 0) */
    CHECK_EQ_INT(tok_set_pad_id(t, 49408), KILN_ERR_INVALID);
    CHECK_EQ_INT(tok_set_pad_id(t, 0), KILN_OK);
    CHECK_EQ_INT(tok_encode_padded(t, "a cat", CTX, ids, NULL), KILN_OK);
    CHECK(ids[3] == 49407 && ids[4] == 0 && ids[CTX - 1] == 0, "pad 0: got %d %d %d", ids[3], ids[4], ids[CTX - 1]);
    tok_destroy(t);
}

/* ---- SD conditioning: padding and truncation ------------------------------ */

static void test_padding_and_truncation(void)
{
    tok_tokenizer *t = load_clip();
    if (!t)
        return;
    int32_t ids[CTX];
    int cut = -1;
    CHECK_EQ_INT(tok_encode_padded(t, "a photo of a cat", CTX, ids, &cut), KILN_OK);
    static const int32_t want[] = {49406, 320, 1125, 539, 320, 2368, 49407};
    CHECK(memcmp(ids, want, sizeof want) == 0, "'a photo of a cat': got %d %d %d %d %d %d %d", ids[0], ids[1],
          ids[2], ids[3], ids[4], ids[5], ids[6]);
    for (int i = 7; i < CTX; i++)
        CHECK(ids[i] == 49407, "pad at %d: expected 49407, got %d", i, ids[i]);
    CHECK_EQ_INT(cut, 0);

    /* "word" is one token: n words give n ids */
    char text[1024] = "";
    for (int words = 74; words <= 77; words++) {
        text[0] = '\0';
        for (int w = 0; w < words; w++)
            strcat(text, "word ");
        CHECK_EQ_INT(tok_encode_padded(t, text, CTX, ids, &cut), KILN_OK);
        CHECK_EQ_INT(cut, words > 75 ? words - 75 : 0);
        int kept = words > 75 ? 75 : words;
        CHECK(ids[0] == 49406 && ids[1] == 2653 && ids[kept] == 2653 && ids[kept + 1] == 49407,
              "%d words: start %d, first %d, last %d, end %d", words, ids[0], ids[1], ids[kept], ids[kept + 1]);
        if (kept + 2 < CTX)
            CHECK_EQ_INT(ids[CTX - 1], 49407);
    }

    /* a short context keeps start and end */
    int32_t two[2];
    CHECK_EQ_INT(tok_encode_padded(t, "a photo of a cat", 2, two, &cut), KILN_OK);
    CHECK(two[0] == 49406 && two[1] == 49407 && cut == 5, "context 2: got %d %d, cut %d", two[0], two[1], cut);
    int32_t untouched[2] = {7, 7};
    cut = 42;
    CHECK_EQ_INT(tok_encode_padded(t, "a cat", 1, untouched, &cut), KILN_ERR_INVALID);
    CHECK(untouched[0] == 7 && untouched[1] == 7 && cut == 42, "a failed call must leave its outputs alone");
    CHECK_EQ_INT(tok_encode_padded(t, "a cat", CTX, ids, NULL), KILN_OK); /* truncated may be NULL */

    /* tok_encode counts past a short buffer, like snprintf */
    size_t n = 0;
    int32_t three[3] = {-1, -1, -1};
    CHECK_EQ_INT(tok_encode(t, "a photo of a cat", three, 2, &n), KILN_OK);
    CHECK(n == 5 && three[0] == 320 && three[1] == 1125 && three[2] == -1, "short buffer: n %zu, ids %d %d %d", n,
          three[0], three[1], three[2]);
    CHECK_EQ_INT(tok_encode(t, "a photo of a cat", NULL, 0, &n), KILN_OK);
    CHECK_EQ_INT(n, 5);
    CHECK_EQ_INT(tok_encode(t, "a cat", NULL, 4, &n), KILN_ERR_INVALID);
    tok_destroy(t);
}

static void test_empty_and_blank_prompts(void)
{
    tok_tokenizer *t = load_clip();
    if (!t)
        return;
    /* str.strip also takes U+001C-U+001F and U+3000; &nbsp; becomes U+00A0 */
    const char *blank[] = {"", " ", "  \t\n\r\v\f  ", "\xe3\x80\x80\xc2\xa0", "\x1c\x1f", "&nbsp; &NewLine;"};
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++) {
        int32_t ids[CTX];
        int cut = -1;
        size_t n = 99;
        CHECK_EQ_INT(tok_encode(t, blank[i], NULL, 0, &n), KILN_OK);
        CHECK(n == 0, "blank prompt %zu: expected no tokens, got %zu", i, n);
        CHECK_EQ_INT(tok_encode_padded(t, blank[i], CTX, ids, &cut), KILN_OK);
        int ok = ids[0] == 49406 && cut == 0;
        for (int k = 1; k < CTX; k++)
            ok &= ids[k] == 49407;
        CHECK(ok, "blank prompt %zu: expected start then 76 end tokens", i);
    }
    tok_destroy(t);
}

static void test_long_prompts(void)
{
    tok_tokenizer *t = load_clip();
    if (!t)
        return;
    /* 10,000 characters of the same five tokens */
    const char *unit = "a photo of a cat ";
    size_t reps = 10000 / strlen(unit) + 1;
    char *text = malloc(reps * strlen(unit) + 1);
    text[0] = '\0';
    for (size_t i = 0; i < reps; i++)
        strcat(text, unit);
    CHECK(strlen(text) >= 10000, "prompt length %zu", strlen(text));
    size_t n = 0;
    CHECK_EQ_INT(tok_encode(t, text, NULL, 0, &n), KILN_OK);
    CHECK_EQ_INT(n, 5 * reps);
    int32_t *ids = malloc(n * sizeof *ids);
    CHECK_EQ_INT(tok_encode(t, text, ids, n, &n), KILN_OK);
    static const int32_t five[] = {320, 1125, 539, 320, 2368};
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= ids[i] == five[i % 5];
    CHECK(ok, "the repeated prompt must repeat its five ids");
    int32_t padded[CTX];
    int cut = 0;
    CHECK_EQ_INT(tok_encode_padded(t, text, CTX, padded, &cut), KILN_OK);
    CHECK_EQ_INT(cut, (long long)n - 75);
    CHECK(memcmp(padded + 1, ids, 75 * sizeof *ids) == 0 && padded[76] == 49407, "padded: the first 75 ids, then end");
    free(ids);

    /* one 10,000-letter word is one piece for the BPE; decoding it gives it back */
    for (size_t i = 0; i < 10000; i++)
        text[i] = "abcdefghijklmnopqrstuvwxyz"[(i * 7 + i / 13) % 26];
    text[10000] = '\0';
    CHECK_EQ_INT(tok_encode(t, text, NULL, 0, &n), KILN_OK);
    CHECK(n > 100 && n < 10000, "10,000 letters: %zu tokens", n);
    ids = malloc(n * sizeof *ids);
    CHECK_EQ_INT(tok_encode(t, text, ids, n, &n), KILN_OK);
    size_t len = 0;
    char *back = malloc(10002);
    CHECK_EQ_INT(tok_decode(t, ids, n, back, 10002, &len), KILN_OK);
    CHECK(len == 10001 && memcmp(back, text, 10000) == 0 && back[10000] == ' ',
          "decoding the long word gives it back (length %zu)", len);
    free(back);
    free(ids);

    /* a prompt over the 1 MiB limit is refused */
    char *huge = malloc(TOK_MAX_PROMPT_BYTES + 2);
    memset(huge, 'a', TOK_MAX_PROMPT_BYTES + 1);
    huge[TOK_MAX_PROMPT_BYTES + 1] = '\0';
    n = 12345;
    CHECK_EQ_INT(tok_encode(t, huge, NULL, 0, &n), KILN_ERR_INVALID);
    CHECK(n == 12345 && strstr(kiln_last_error(), "bytes") != NULL, "over the limit: n %zu, message '%s'", n,
          kiln_last_error());
    free(huge);
    free(text);
    tok_destroy(t);
}

/* ---- text cleaning ------------------------------------------------------------ */

static void test_invalid_utf8(void)
{
    tok_tokenizer *t = load_clip();
    if (!t)
        return;
    log_level before = log_get_level();
    log_set_level(LOG_LEVEL_ERROR); /* the replacement warnings are expected */
    /* each maximal invalid subpart is one U+FFFD, as Python's "replace" */
    check_same(t, "caf\xc3", "caf\xef\xbf\xbd");
    check_same(t, "a\xff\xfe b", "a\xef\xbf\xbd\xef\xbf\xbd b");
    check_same(t, "x\xe2\x82y", "x\xef\xbf\xbdy");                                         /* truncated */
    check_same(t, "x\xed\xa0\x80y", "x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy");             /* a surrogate */
    check_same(t, "x\xc0\xafy", "x\xef\xbf\xbd\xef\xbf\xbdy");                             /* overlong */
    check_same(t, "x\xf4\x90\x80\x80y", "x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy"); /* > U+10FFFF */
    check_same(t, "\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    int32_t ids[CTX];
    CHECK_EQ_INT(tok_encode_padded(t, "\xf0\x9f\x8d", CTX, ids, NULL), KILN_OK);
    log_set_level(before);
    tok_destroy(t);
}

static void test_text_cleaning(void)
{
    tok_tokenizer *t = load_clip();
    if (!t)
        return;
    /* html.unescape, twice */
    check_same(t, "&amp;lt;cat&gt;", "<cat>");
    check_same(t, "caf&eacute; caf&eacute", "caf\xc3\xa9 caf\xc3\xa9");  /* with and without ';' */
    check_same(t, "&notit; &notin;", "\xc2\xac" "it; \xe2\x88\x89");   /* longest legacy prefix */
    check_same(t, "&#x41;&#66;&#X63;", "abc");
    check_same(t, "&#128;&#x9f;", "\xe2\x82\xac\xc5\xb8");               /* the Windows-1252 table */
    check_same(t, "&#0;&#xD800;&#1114112;&#99999999999999999999;", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    check_same(t, "a&#1;&#x7f;&#xFFFE;b", "ab");                          /* dropped */
    check_same(t, "&#; &#x; &unknown; & amp", "&#; &#x; &unknown; & amp");
    check_same(t, "&nGt;", "\xe2\x89\xab\xe2\x83\x92");                   /* two code points */
    /* white space runs, str.lower */
    check_same(t, "A\xe2\x80\x83\xe2\x80\x83" "B\n\n\tC", "a b c");
    check_same(t, "\xc4\xb0stanbul", "i\xcc\x87stanbul");                 /* U+0130 -> i + U+0307 */
    check_same(t, "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83"); /* final sigma */
    check_same(t, "\xc3\x85NGSTR\xc3\x96M", "\xc3\xa5ngstr\xc3\xb6m");
    /* special tokens only as the exact text; contractions with a long s */
    int32_t ids[8];
    long n = encode(t, "<|endoftext|><|STARTOFTEXT|>", ids, 8);
    CHECK(n == 2 && ids[0] == 49407 && ids[1] == 49406, "special tokens: %ld ids, %d %d", n, ids[0], ids[1]);
    n = encode(t, "x<|endoftext|", ids, 8);
    CHECK(n > 2 && ids[1] != 49407, "an unfinished special token is text: %ld ids", n);
    check_same(t, "dog's", "dog 's");
    tok_destroy(t);
}

/* ---- malformed files ------------------------------------------------------------ */

/* A small vocabulary of the same kind: the 512 byte characters, a few
 * merges and the special tokens, as a model with its own vocabulary has. */
static void write_small_model(const char *dir, const char *omit, const char *merges)
{
    json_t *vocab = json_object();
    int id = 0;
    for (int pass = 0; pass < 2; pass++)
        for (unsigned b = 0; b < 256; b++) {
            unsigned c = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE ? b
                         : b <= 0x20                                                   ? 0x100 + b
                         : b <= 0xA0                                                   ? 0x121 + b - 0x7F
                                                                                       : 0x143;
            char s[32];
            int len = c < 0x80 ? snprintf(s, sizeof s, "%c", c) : snprintf(s, sizeof s, "%c%c", 0xC0 | c >> 6, 0x80 | (c & 0x3F));
            if (pass)
                strcpy(s + len, "</w>");
            if (!omit || strcmp(s, omit) != 0)
                json_object_set_new(vocab, s, json_integer(id++));
        }
    const char *extra[] = {"he", "ll", "hell", "hello</w>", "<|startoftext|>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (!omit || strcmp(extra[i], omit) != 0)
            json_object_set_new(vocab, extra[i], json_integer(id++));
    char path[512];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    CHECK(json_dump_file(vocab, path, 0) == 0, "cannot write %s", path);
    json_decref(vocab);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    write_file(path, merges);
}

static const char *good_merges = "#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n";

static void test_small_vocabulary(void)
{
    const char *dir = test_tmp_dir();
    write_small_model(dir, NULL, good_merges);
    tok_tokenizer *t = NULL;
    CHECK_EQ_INT(tok_create_from_dir(dir, &t), KILN_OK);
    if (!t) {
        CHECK(0, "small model: %s", kiln_last_error());
        return;
    }
    CHECK_EQ_INT(tok_vocab_size(t), 518);
    CHECK_EQ_INT(tok_start_id(t), 516);
    CHECK_EQ_INT(tok_end_id(t), 517);
    int32_t ids[CTX];
    int cut = -1;
    CHECK_EQ_INT(tok_encode_padded(t, "Hello hell", CTX, ids, &cut), KILN_OK);
    /* "hello" merges all the way; "hell" ends in "l</w>", which has no merge with "l" */
    int32_t hello = tok_token_id(t, "hello</w>"), hell = tok_token_id(t, "hell"), he = tok_token_id(t, "he");
    int32_t l = tok_token_id(t, "l"), l_end = tok_token_id(t, "l</w>");
    CHECK(ids[0] == 516 && ids[1] == hello && ids[2] == he && ids[3] == l && ids[4] == l_end && ids[5] == 517 &&
              ids[6] == 517 && cut == 0,
          "small model: got %d %d %d %d %d %d (hello %d, hell %d, he %d, l %d, l</w> %d)", ids[0], ids[1], ids[2],
          ids[3], ids[4], ids[5], hello, hell, he, l, l_end);
    tok_destroy(t);
}

/* Expects tok_create on dir to fail with code and a message holding both
 * needles (the second may be NULL). */
static void expect_failure(const char *dir, kiln_status code, const char *needle, const char *needle2)
{
    tok_tokenizer *t = (tok_tokenizer *)(uintptr_t)0x1; /* must stay as it is */
    kiln_status st = tok_create_from_dir(dir, &t);
    const char *msg = kiln_last_error();
    CHECK(st == code, "expected status %d, got %d (%s)", code, st, msg);
    CHECK(t == (tok_tokenizer *)(uintptr_t)0x1, "the out-parameter must stay untouched on failure");
    CHECK(strstr(msg, needle) != NULL, "message '%s' should contain '%s'", msg, needle);
    if (needle2)
        CHECK(strstr(msg, needle2) != NULL, "message '%s' should contain '%s'", msg, needle2);
    if (st == KILN_OK && t != (tok_tokenizer *)(uintptr_t)0x1)
        tok_destroy(t);
}

static void test_malformed_files(void)
{
    const char *dir = test_tmp_dir();
    char vocab[512], merges[512];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);

    /* the vocabulary */
    write_small_model(dir, NULL, good_merges);
    write_file(vocab, "{\"a\": 0,\n \"b\": 1,,\n}");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: line 2", NULL);
    write_file(vocab, "[\"a\", \"b\"]");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: expected an object", NULL);
    write_file(vocab, "{\"a\": 0,\n \"b\": \"1\"}");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json, line 2, byte 10: token 'b': the id is not an integer", NULL);
    write_file(vocab, "{\"a\": 0,\n\n \"b\": 0}");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json, line 3, byte 11: tokens 'a' and 'b' both have id 0", NULL);
    write_file(vocab, "{\"a\": 0, \"b\": 5}");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json, line 1, byte 9: token 'b': id 5 is outside 0..1", NULL);
    write_file(vocab, "{\"a\": 0, \"\\u0062\": 5}"); /* an escaped key has no line */
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: token 'b': id 5 is outside 0..1", NULL);
    write_file(vocab, "{\"a\": 0, \"a\": 1}");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: line 1", "duplicate");
    write_file(vocab, "{}");
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: the vocabulary has 0 tokens", NULL);
    write_small_model(dir, "<|endoftext|>", good_merges);
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: the special token '<|endoftext|>' is missing", NULL);
    write_small_model(dir, "<|startoftext|>", good_merges);
    expect_failure(dir, KILN_ERR_FORMAT, "the special token '<|startoftext|>' is missing", NULL);
    write_small_model(dir, "z</w>", good_merges);
    expect_failure(dir, KILN_ERR_FORMAT, "vocab.json: the token 'z</w>' (for byte 0x7a) is missing", NULL);

    /* the merges */
    write_small_model(dir, NULL, "#version: 0.2\nh e\nl\nhe ll\n");
    expect_failure(dir, KILN_ERR_FORMAT, "merges.txt: line 3: expected two tokens", "got 1");
    write_small_model(dir, NULL, "h e\nl l he\n");
    expect_failure(dir, KILN_ERR_FORMAT, "merges.txt: line 2: expected two tokens", "got 3");
    write_small_model(dir, NULL, "#version: 0.2\nh e\nl l\nhe xyz\n");
    expect_failure(dir, KILN_ERR_FORMAT, "merges.txt: line 4: token 'xyz' is not in the vocabulary", "vocab.json");
    write_small_model(dir, NULL, "#version: 0.2\r\nh e\r\nh l\r\n");
    expect_failure(dir, KILN_ERR_FORMAT, "merges.txt: line 3: the merged token 'hl' is not in the vocabulary",
                   NULL);

    /* missing files */
    write_small_model(dir, NULL, good_merges);
    remove(merges);
    expect_failure(dir, KILN_ERR_IO, "merges.txt", NULL);
    remove(vocab);
    expect_failure(dir, KILN_ERR_IO, "vocab.json", NULL);

    /* blank lines and CRLF are fine */
    write_small_model(dir, NULL, "#version: 0.2\r\nh e\r\n\r\nl l\r\nhe ll\r\nhell o</w>\r\n\r\n");
    tok_tokenizer *t = NULL;
    CHECK(tok_create_from_dir(dir, &t) == KILN_OK, "CRLF merges: %s", kiln_last_error());
    if (t)
        CHECK_EQ_INT(tok_merge_count(t), 4);
    tok_destroy(t);
    tok_destroy(NULL);
}

TEST_MAIN(TEST(test_golden_prompts), TEST(test_accessors), TEST(test_padding_and_truncation),
          TEST(test_empty_and_blank_prompts), TEST(test_long_prompts), TEST(test_invalid_utf8),
          TEST(test_text_cleaning), TEST(test_small_vocabulary), TEST(test_malformed_files))
