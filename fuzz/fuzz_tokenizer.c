/*
 * fuzz_tokenizer.c - the CLIP tokenizer on any bytes as a prompt.
 *
 * The real SD 1.x tokenizer (../shared/data/clip-tokenizer beside the
 * clone, or $KILN_FUZZ_TOKENIZER_DIR) is loaded once. Each input is
 * encoded into a short buffer (snprintf style: the first ids and the count
 * of all), into one of the full count when that is longer, and padded to
 * SD's 77 tokens; the three must agree. Every id must be in the
 * vocabulary, and decode must take them all back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "fuzz.h"
#include "models/tokenizer.h"

static tok_tokenizer *tokenizer;

int fuzz_tokenizer_init(const char *dir)
{
    if (tokenizer)
        return 0;
    /* invalid UTF-8 is logged as a warning: millions of lines while fuzzing */
    log_set_level(LOG_LEVEL_ERROR);
    if (tok_create_from_dir(dir, &tokenizer) != KILN_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load the tokenizer from %s: %s\n", dir, kiln_last_error());
        return -1;
    }
    return 0;
}

void fuzz_tokenizer_deinit(void)
{
    tok_destroy(tokenizer);
    tokenizer = NULL;
}

static void check_padded(const char *text, const int32_t *ids, size_t n, int context_len)
{
    int32_t *padded = malloc((size_t)context_len * sizeof *padded);
    FUZZ_CHECK(padded != NULL, "out of memory");
    int cut = -1;
    kiln_status st = tok_encode_padded(tokenizer, text, context_len, padded, &cut);
    FUZZ_CHECK(st == KILN_OK, "encode_padded(%d): %s", context_len, kiln_last_error());
    size_t room = (size_t)context_len - 2, kept = n < room ? n : room;
    FUZZ_CHECK(padded[0] == tok_start_id(tokenizer), "context %d: first id %d is not the start token", context_len,
               padded[0]);
    FUZZ_CHECK(memcmp(padded + 1, ids, kept * sizeof *ids) == 0, "context %d: ids differ from tok_encode's",
               context_len);
    FUZZ_CHECK(padded[1 + kept] == tok_end_id(tokenizer), "context %d: id %zu is %d, not the end token", context_len,
               1 + kept, padded[1 + kept]);
    for (size_t i = kept + 2; i < (size_t)context_len; i++)
        FUZZ_CHECK(padded[i] == tok_pad_id(tokenizer), "context %d: id %zu is %d, not padding", context_len, i,
                   padded[i]);
    FUZZ_CHECK(cut >= 0 && (size_t)cut == n - kept, "context %d: %d cut, expected %zu", context_len, cut, n - kept);
    free(padded);
}

int fuzz_tokenizer(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(tokenizer != NULL, "fuzz_tokenizer_init was not called");
    char *text = fuzz_text(data, size);

    /* a short buffer first: the count of all ids and the first ones (each
     * encode costs as much as the fuzzer's mutation: two or three, not more) */
    enum { SHORT = 48 };
    int32_t first[SHORT];
    size_t n = 0;
    kiln_status st = tok_encode(tokenizer, text, first, SHORT, &n);
    FUZZ_CHECK(st == KILN_OK, "encoding: %s", kiln_last_error());
    int32_t *ids = first;
    if (n > SHORT) {
        ids = malloc(n * sizeof *ids);
        FUZZ_CHECK(ids != NULL, "out of memory for %zu ids", n);
        size_t n_full = 0;
        st = tok_encode(tokenizer, text, ids, n, &n_full);
        FUZZ_CHECK(st == KILN_OK && n_full == n, "encoding again: status %d, %zu ids, %zu the first time", st,
                   n_full, n);
        FUZZ_CHECK(memcmp(ids, first, sizeof first) == 0, "a buffer of %d ids got other first ids than one of %zu",
                   SHORT, n);
    }
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < tok_vocab_size(tokenizer), "id %zu is %d, outside 0..%zu", i,
                   ids[i], tok_vocab_size(tokenizer) - 1);

    check_padded(text, ids, n, TOK_SD_CONTEXT_LEN);

    size_t len = 0;
    st = tok_decode(tokenizer, ids, n, NULL, 0, &len);
    FUZZ_CHECK(st == KILN_OK, "decoding %zu ids: %s", n, kiln_last_error());
    char *decoded = malloc(len + 1);
    FUZZ_CHECK(decoded != NULL, "out of memory");
    size_t len2 = 0;
    st = tok_decode(tokenizer, ids, n, decoded, len + 1, &len2);
    FUZZ_CHECK(st == KILN_OK && len2 == len && strlen(decoded) <= len, "decoding: status %d, length %zu then %zu",
               st, len, len2);
    free(decoded);
    if (ids != first)
        free(ids);
    free(text);
    return 0;
}

#ifndef KILN_FUZZ_REPLAY
#ifndef KILN_FUZZ_TOKENIZER_DIR
#define KILN_FUZZ_TOKENIZER_DIR "../shared/data/clip-tokenizer"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("KILN_FUZZ_TOKENIZER_DIR");
    if (fuzz_tokenizer_init(dir && *dir ? dir : KILN_FUZZ_TOKENIZER_DIR) != 0)
        exit(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_tokenizer(data, size);
}
#endif
