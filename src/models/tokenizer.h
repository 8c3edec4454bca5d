/*
 * tokenizer.h - the CLIP byte-level BPE tokenizer, as SD 1.x uses it.
 *
 * Loads a vocabulary (vocab.json: {"token": id, ...}) and a merge list
 * (merges.txt: an optional "#version" line, then one "left right" pair a
 * line, best first), and turns a prompt into token ids exactly as OpenAI's
 * reference tokenizer (clip/simple_tokenizer.py) does, less its ftfy step:
 *
 *   1. the prompt's UTF-8 is decoded; each invalid sequence (a stray
 *      continuation byte, a truncated or overlong sequence, a surrogate,
 *      past U+10FFFF) becomes U+FFFD, as Python's
 *      bytes.decode("utf-8", "replace") does, with one warning in the log;
 *   2. HTML character references are replaced twice over, as Python's
 *      html.unescape(html.unescape(text)): named ones with and without ';'
 *      (the full HTML5 list), decimal and hex ones, with the same fixes for
 *      invalid numbers;
 *   3. the ends are stripped (str.strip), runs of Unicode White_Space become
 *      one space, and the text is lower-cased as str.lower() does (full
 *      mappings, final sigma included);
 *   4. the text is split with CLIP's pattern
 *        <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|
 *        [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+            (case-insensitive)
 *   5. each piece's UTF-8 bytes map to printable characters (GPT-2's
 *      bytes_to_unicode), the last one with the word-end suffix "</w>", and
 *      the merges are applied lowest rank first, every occurrence of a pair
 *      left to right before the next pair, as the reference does. A piece
 *      that is exactly "<|startoftext|>" or "<|endoftext|>" is that special
 *      token.
 *
 * The start and end tokens are looked up in the vocabulary by name, so a
 * model with its own (smaller) vocabulary works through the same code; the
 * vocabulary must hold the 256 byte characters, each also with "</w>", and
 * every merge's parts and result.
 *
 * Unicode properties (letters, numbers, spaces, case mappings) come from
 * utf8proc. A tokenizer is read-only after tok_create (tok_set_pad_id
 * aside), so one may be shared by any number of threads encoding at once.
 */
#ifndef KILN_MODELS_TOKENIZER_H
#define KILN_MODELS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* SD 1.x conditions on 77 tokens: start, up to 75 prompt tokens, end, pad. */
#define TOK_SD_CONTEXT_LEN 77

/* The longest prompt, in bytes, that the encoders take: far past any real
 * prompt, and low enough that no size computed inside can overflow. */
#define TOK_MAX_PROMPT_BYTES (1u << 20)

typedef struct tok_tokenizer tok_tokenizer;

/* Loads vocab_json_path and merges_txt_path. Errors: KILN_ERR_IO (a file
 * cannot be read), KILN_ERR_FORMAT (bad JSON, with its line and column; an
 * id that is not an integer, or that repeats, or leaves a gap in 0..n-1; a
 * merge line without exactly two tokens, or whose parts or result are not
 * in the vocabulary, with its line; a missing byte character or special
 * token; the message names the file), KILN_ERR_NOMEM. On success *out is
 * the caller's, for tok_destroy. Thread-safe (shares nothing). */
kiln_status tok_create(const char *vocab_json_path, const char *merges_txt_path, tok_tokenizer **out);

/* tok_create(dir/vocab.json, dir/merges.txt): the layout of a diffusers
 * "tokenizer/" folder. Same errors. */
kiln_status tok_create_from_dir(const char *dir, tok_tokenizer **out);

/* Frees everything; NULL is a no-op. */
void tok_destroy(tok_tokenizer *t);

/* The prompt's token ids, without start or end token, as steps 1-5 above.
 * Like snprintf: writes the first min(n, max_ids) ids to ids (which may be
 * NULL when max_ids is 0) and sets *n_ids to n, the number the whole prompt
 * has, so n_ids > max_ids means the buffer was short. Errors:
 * KILN_ERR_INVALID (a NULL argument, a prompt over TOK_MAX_PROMPT_BYTES),
 * KILN_ERR_NOMEM; ids and *n_ids are untouched on failure. Thread-safe.
 * Invalid UTF-8 is replaced, not refused (step 1), and logged with
 * LOG_WARN. */
kiln_status tok_encode(const tok_tokenizer *t, const char *text, int32_t *ids, size_t max_ids, size_t *n_ids);

/* The conditioning input of SD: start token, the prompt's first
 * context_len - 2 tokens, end token, then the pad id up to context_len
 * (TOK_SD_CONTEXT_LEN for SD 1.x). ids holds context_len entries. Sets
 * *truncated (may be NULL) to the number of prompt tokens cut, and logs a
 * warning when that is not 0. Errors: KILN_ERR_INVALID (context_len < 2, a
 * NULL argument, a prompt over TOK_MAX_PROMPT_BYTES), KILN_ERR_NOMEM; ids
 * and *truncated are untouched on failure. Thread-safe. */
kiln_status tok_encode_padded(const tok_tokenizer *t, const char *text, int context_len, int32_t *ids,
                              int *truncated);

/* Number of ids (all of 0..size-1 are tokens), and the number of merges. */
size_t tok_vocab_size(const tok_tokenizer *t);
size_t tok_merge_count(const tok_tokenizer *t);

/* The ids of "<|startoftext|>" and "<|endoftext|>", and the padding id
 * (the end token unless tok_set_pad_id changed it). */
int32_t tok_start_id(const tok_tokenizer *t);
int32_t tok_end_id(const tok_tokenizer *t);
int32_t tok_pad_id(const tok_tokenizer *t);

/* Pads with id from now on (SD 2.x's OpenCLIP pads with 0, "!"). Errors:
 * KILN_ERR_INVALID (id not in the vocabulary). Not thread-safe: call it
 * before sharing t. */
kiln_status tok_set_pad_id(tok_tokenizer *t, int32_t id);

/* The vocabulary entry of id in its byte-level form ("photo</w>",
 * "<|endoftext|>"), or NULL when id is out of range. Lives as long as t. */
const char *tok_token(const tok_tokenizer *t, int32_t id);

/* The id of a vocabulary entry given in that form, or -1. */
int32_t tok_token_id(const tok_tokenizer *t, const char *token);

/* Turns ids back into text as the reference's decode does: the byte-level
 * characters back to bytes, each "</w>" to a space (special tokens come out
 * as their names). Like snprintf: writes at most buf_size - 1 bytes and a
 * NUL (buf may be NULL when buf_size is 0) and sets *len to the full
 * length. The bytes are what the tokens hold, which need not be valid UTF-8
 * when the ids split a character. Errors: KILN_ERR_INVALID (an id out of
 * range, named in the message; buf and *len untouched). For debugging and
 * tests; thread-safe. */
kiln_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids, char *buf, size_t buf_size,
                       size_t *len);

#endif
