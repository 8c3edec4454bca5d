/*
 * tokenizer.c - CLIP's byte-level BPE tokenizer (see tokenizer.h for the
 * steps). Every step mirrors a line of OpenAI's clip/simple_tokenizer.py or
 * of the Python library functions it calls (html.unescape, str.strip,
 * str.lower, the regex module's \s, \p{L}, \p{N}); the comments say which,
 * since matching them bit for bit is the whole point.
 *
 * Text is handled as an array of code points, as Python handles str, and
 * only turned back into bytes for the byte-level BPE. Lookups are open-
 * addressing hash tables: token string -> id, and (left id, right id) ->
 * (rank, merged id), so a merge never builds a string at encode time.
 */
#include "models/tokenizer.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/log.h"
#include "core/mapped_file.h"

/* Room for a token quoted in a message. */
#define SHOWN_MAX 96

#define START_TOKEN "<|startoftext|>"
#define END_TOKEN "<|endoftext|>"
#define WORD_END "</w>"

typedef struct merge_slot {
    uint64_t key; /* left id << 32 | right id; MERGE_EMPTY when free */
    int32_t rank; /* line order in merges.txt: lower merges first */
    int32_t merged;
} merge_slot;

#define MERGE_EMPTY UINT64_MAX

struct tok_tokenizer {
    size_t n_vocab;
    char *strings;     /* every token, NUL-terminated, back to back */
    uint32_t *str_off; /* [n_vocab] where token id starts in strings */
    uint32_t *str_len; /* [n_vocab] its length in bytes */

    int32_t *vocab_slots; /* token -> id: ids, -1 where free */
    size_t vocab_mask;

    merge_slot *merge_slots;
    size_t merge_mask;
    size_t n_merges;

    /* the id of each byte's character alone and with "</w>" */
    int32_t byte_id[256], byte_end_id[256];
    int32_t start_id, end_id, pad_id;
};

/* ---- small helpers ------------------------------------------------------ */

/* A token or line as it goes into a message: control bytes become \xNN so
 * the message stays on one line, and a long one is cut with "...". */
static const char *shown(const char *s, size_t len, char *buf, size_t size)
{
    size_t out = 0, i = 0;
    for (; i < len && out + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            out += (size_t)snprintf(buf + out, size - out, "\\x%02x", c);
        else
            buf[out++] = (char)c;
    }
    if (i < len) {
        /* bytes >= 0x80 are copied as they are: back off a partial character */
        while (out > 0 && ((unsigned char)s[i] & 0xC0) == 0x80 && i > 0) {
            out--;
            i--;
        }
        memcpy(buf + out, "...", 4);
    } else {
        buf[out] = '\0';
    }
    return buf;
}

static size_t next_pow2(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

/* FNV-1a over the bytes, then a multiply to spread the low bits. */
static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    return key ^ (key >> 33);
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static int32_t vocab_find(const tok_tokenizer *t, const char *s, size_t len)
{
    for (size_t i = hash_bytes(s, len) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0)
            return -1;
        if (t->str_len[id] == len && memcmp(t->strings + t->str_off[id], s, len) == 0)
            return id;
    }
}

static const merge_slot *merge_find(const tok_tokenizer *t, int32_t left, int32_t right)
{
    uint64_t key = pair_key(left, right);
    for (size_t i = hash_pair(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *s = &t->merge_slots[i];
        if (s->key == key)
            return s;
        if (s->key == MERGE_EMPTY)
            return NULL;
    }
}

/* Writes code point c as UTF-8; returns the byte count (1-4). */
static size_t utf8_put(uint32_t c, unsigned char *out)
{
    if (c < 0x80) {
        out[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (unsigned char)(0xC0 | c >> 6);
        out[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (unsigned char)(0xE0 | c >> 12);
        out[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | c >> 18);
    out[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 (controls, space, 0x7F-0xA0, 0xAD) for U+0100 onwards, in
 * byte order. */
static uint32_t byte_char(unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return b;
    if (b <= 0x20)
        return 0x100 + b;          /* 33 controls and space: U+0100-U+0120 */
    if (b <= 0xA0)
        return 0x121 + (b - 0x7F); /* 0x7F-0xA0: U+0121-U+0142 */
    return 0x143;                  /* 0xAD, the soft hyphen */
}

/* The byte a byte-level character stands for, or -1 (byte_char's inverse). */
static int char_byte(uint32_t c)
{
    if ((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
        return (int)c;
    if (c >= 0x100 && c <= 0x120)
        return (int)(c - 0x100);
    if (c >= 0x121 && c <= 0x142)
        return (int)(c - 0x121 + 0x7F);
    return c == 0x143 ? 0xAD : -1;
}

/* ---- loading -------------------------------------------------------------- */

/* Where a token's entry is in vocab.json, for messages: ", line L, byte B"
 * of the first place its quoted text appears (CLIP's file is one line), or
 * "" (a key written with JSON escapes is not found). */
static const char *key_line(const mapped_file *file, const char *key, char *buf, size_t size)
{
    size_t len = strlen(key);
    const char *data = (const char *)file->data, *end = data + file->size;
    buf[0] = '\0';
    for (const char *p = data; p && p + len + 2 <= end; p = memchr(p + 1, '"', (size_t)(end - p - 1))) {
        if (*p == '"' && memcmp(p + 1, key, len) == 0 && p[len + 1] == '"') {
            size_t line = 1;
            for (const char *q = data; q < p; q++)
                line += *q == '\n';
            snprintf(buf, size, ", line %zu, byte %zu", line, (size_t)(p - data));
            break;
        }
    }
    return buf;
}

static kiln_status load_vocab(tok_tokenizer *t, const char *path)
{
    char a[SHOWN_MAX], b[SHOWN_MAX], where[64];
    mapped_file file;
    kiln_status st = mapped_file_open(&file, path);
    if (st != KILN_OK)
        return st;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)file.data, (size_t)file.size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        mapped_file_close(&file);
        return err_set(KILN_ERR_FORMAT, "%s: line %d, column %d: %s", path, jerr.line, jerr.column, jerr.text);
    }

    st = KILN_ERR_FORMAT;
    const char *key;
    json_t *value;
    size_t n = json_object_size(root), total = 0;
    if (!json_is_object(root)) {
        err_set(st, "%s: expected an object of token ids ({\"token\": id, ...})", path);
        goto fail;
    }
    if (n == 0 || n > (size_t)INT32_MAX) {
        err_set(st, "%s: the vocabulary has %zu tokens", path, n);
        goto fail;
    }
    json_object_foreach(root, key, value) total += strlen(key) + 1;
    if (total > UINT32_MAX) {
        err_set(st, "%s: the tokens take %zu bytes, more than 4 GiB", path, total);
        goto fail;
    }

    st = KILN_ERR_NOMEM;
    t->n_vocab = n;
    t->strings = malloc(total);
    t->str_off = malloc(n * sizeof *t->str_off);
    t->str_len = malloc(n * sizeof *t->str_len);
    t->vocab_mask = next_pow2(2 * n) - 1;
    t->vocab_slots = malloc((t->vocab_mask + 1) * sizeof *t->vocab_slots);
    if (!t->strings || !t->str_off || !t->str_len || !t->vocab_slots) {
        err_set(st, "%s: out of memory for %zu tokens", path, n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        t->str_len[i] = UINT32_MAX; /* id not seen yet */
    memset(t->vocab_slots, 0xff, (t->vocab_mask + 1) * sizeof *t->vocab_slots);

    st = KILN_ERR_FORMAT;
    size_t off = 0;
    json_object_foreach(root, key, value) {
        size_t len = strlen(key);
        if (!json_is_integer(value)) {
            err_set(st, "%s%s: token '%s': the id is not an integer", path, key_line(&file, key, where, sizeof where),
                    shown(key, len, a, sizeof a));
            goto fail;
        }
        json_int_t id = json_integer_value(value);
        if (id < 0 || (size_t)id >= n) {
            err_set(st, "%s%s: token '%s': id %lld is outside 0..%zu (the file has %zu tokens)", path,
                    key_line(&file, key, where, sizeof where), shown(key, len, a, sizeof a), (long long)id, n - 1, n);
            goto fail;
        }
        if (t->str_len[id] != UINT32_MAX) {
            err_set(st, "%s%s: tokens '%s' and '%s' both have id %lld", path, key_line(&file, key, where, sizeof where),
                    shown(t->strings + t->str_off[id], t->str_len[id], a, sizeof a), shown(key, len, b, sizeof b),
                    (long long)id);
            goto fail;
        }
        memcpy(t->strings + off, key, len + 1);
        t->str_off[id] = (uint32_t)off;
        t->str_len[id] = (uint32_t)len;
        off += len + 1;
        /* keys are unique (JSON_REJECT_DUPLICATES), so no slot holds this one */
        size_t i = hash_bytes(key, len) & t->vocab_mask;
        while (t->vocab_slots[i] >= 0)
            i = (i + 1) & t->vocab_mask;
        t->vocab_slots[i] = (int32_t)id;
    }
    /* n distinct ids in 0..n-1: every id is taken */
    json_decref(root);
    mapped_file_close(&file);
    return KILN_OK;

fail:
    json_decref(root);
    mapped_file_close(&file);
    return st;
}

/* The vocabulary lookup of a merge part, for a message when it is absent. */
static kiln_status merge_part(const tok_tokenizer *t, const char *s, size_t len, const char *what,
                              const char *path, size_t line, const char *vocab_path, int32_t *id)
{
    char a[SHOWN_MAX];
    *id = vocab_find(t, s, len);
    if (*id < 0)
        return err_set(KILN_ERR_FORMAT, "%s: line %zu: %s '%s' is not in the vocabulary (%s)", path, line, what,
                       shown(s, len, a, sizeof a), vocab_path);
    return KILN_OK;
}

static kiln_status load_merges(tok_tokenizer *t, const char *path, const char *vocab_path)
{
    char a[SHOWN_MAX];
    mapped_file file;
    kiln_status st = mapped_file_open(&file, path);
    if (st != KILN_OK)
        return st;
    const char *data = (const char *)file.data, *end = data + file.size;
    char *joined = NULL;
    size_t joined_cap = 0;

    size_t lines = 1;
    for (const char *p = data; p < end; p++)
        lines += *p == '\n';
    t->merge_mask = next_pow2(2 * lines) - 1;
    t->merge_slots = malloc((t->merge_mask + 1) * sizeof *t->merge_slots);
    if (!t->merge_slots) {
        st = err_set(KILN_ERR_NOMEM, "%s: out of memory for %zu merges", path, lines);
        goto fail;
    }
    for (size_t i = 0; i <= t->merge_mask; i++)
        t->merge_slots[i].key = MERGE_EMPTY;

    size_t line = 0;
    for (const char *p = data; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *q = p, *stop = eol;
        p = eol + 1;
        line++;
        if (stop > q && stop[-1] == '\r')
            stop--;
        /* the first line of CLIP's file is "#version: 0.2"; later ones
         * starting with '#' are merges ("# s" is one) */
        if (line == 1 && (size_t)(stop - q) >= 8 && memcmp(q, "#version", 8) == 0)
            continue;

        /* the reference splits each line on white space: two parts expected */
        const char *part[3];
        size_t part_len[3], parts = 0;
        while (q < stop) {
            while (q < stop && (*q == ' ' || *q == '\t' || *q == '\v' || *q == '\f'))
                q++;
            if (q == stop)
                break;
            const char *s = q;
            while (q < stop && !(*q == ' ' || *q == '\t' || *q == '\v' || *q == '\f'))
                q++;
            if (parts < 3) {
                part[parts] = s;
                part_len[parts] = (size_t)(q - s);
            }
            parts++;
        }
        if (parts == 0)
            continue; /* a blank line, as at the end of the file */
        if (parts != 2) {
            const char *s = part[0];
            st = err_set(KILN_ERR_FORMAT, "%s: line %zu: expected two tokens (\"left right\"), got %zu in '%s'",
                         path, line, parts, shown(s, (size_t)(stop - s), a, sizeof a));
            goto fail;
        }

        int32_t left, right, merged;
        if ((st = merge_part(t, part[0], part_len[0], "token", path, line, vocab_path, &left)) != KILN_OK ||
            (st = merge_part(t, part[1], part_len[1], "token", path, line, vocab_path, &right)) != KILN_OK)
            goto fail;
        size_t len = part_len[0] + part_len[1];
        if (len > joined_cap) {
            free(joined);
            joined_cap = 2 * len;
            joined = malloc(joined_cap);
            if (!joined) {
                st = err_set(KILN_ERR_NOMEM, "%s: out of memory", path);
                goto fail;
            }
        }
        memcpy(joined, part[0], part_len[0]);
        memcpy(joined + part_len[0], part[1], part_len[1]);
        if ((st = merge_part(t, joined, len, "the merged token", path, line, vocab_path, &merged)) != KILN_OK)
            goto fail;

        /* A pair listed twice takes its later rank, as the reference's
         * dict(zip(merges, range(len(merges)))) does. */
        uint64_t key = pair_key(left, right);
        size_t i = hash_pair(key) & t->merge_mask;
        while (t->merge_slots[i].key != MERGE_EMPTY && t->merge_slots[i].key != key)
            i = (i + 1) & t->merge_mask;
        if (t->n_merges >= (size_t)INT32_MAX) {
            st = err_set(KILN_ERR_FORMAT, "%s: line %zu: too many merges", path, line);
            goto fail;
        }
        t->merge_slots[i].key = key;
        t->merge_slots[i].rank = (int32_t)t->n_merges++;
        t->merge_slots[i].merged = merged;
    }
    free(joined);
    mapped_file_close(&file);
    return KILN_OK;

fail:
    free(joined);
    mapped_file_close(&file);
    return st;
}

/* The byte characters and the special tokens, which encoding relies on. */
static kiln_status find_fixed_tokens(tok_tokenizer *t, const char *vocab_path)
{
    t->start_id = vocab_find(t, START_TOKEN, strlen(START_TOKEN));
    t->end_id = vocab_find(t, END_TOKEN, strlen(END_TOKEN));
    if (t->start_id < 0 || t->end_id < 0)
        return err_set(KILN_ERR_FORMAT, "%s: the special token '%s' is missing", vocab_path,
                       t->start_id < 0 ? START_TOKEN : END_TOKEN);
    t->pad_id = t->end_id;

    for (unsigned b = 0; b < 256; b++) {
        char s[8];
        size_t len = utf8_put(byte_char(b), (unsigned char *)s);
        memcpy(s + len, WORD_END, 4);
        t->byte_id[b] = vocab_find(t, s, len);
        t->byte_end_id[b] = vocab_find(t, s, len + 4);
        if (t->byte_id[b] < 0 || t->byte_end_id[b] < 0) {
            s[t->byte_id[b] < 0 ? len : len + 4] = '\0';
            return err_set(KILN_ERR_FORMAT, "%s: the token '%s' (for byte 0x%02x) is missing", vocab_path, s, b);
        }
    }
    return KILN_OK;
}

kiln_status tok_create(const char *vocab_json_path, const char *merges_txt_path, tok_tokenizer **out)
{
    if (!vocab_json_path || !merges_txt_path || !out)
        return err_set(KILN_ERR_INVALID, "tok_create: a NULL argument");
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(KILN_ERR_NOMEM, "tok_create: out of memory");
    kiln_status st;
    if ((st = load_vocab(t, vocab_json_path)) != KILN_OK || (st = find_fixed_tokens(t, vocab_json_path)) != KILN_OK ||
        (st = load_merges(t, merges_txt_path, vocab_json_path)) != KILN_OK) {
        tok_destroy(t);
        return st;
    }
    LOG_DEBUG("tokenizer: %zu tokens from %s, %zu merges from %s", t->n_vocab, vocab_json_path, t->n_merges,
              merges_txt_path);
    *out = t;
    return KILN_OK;
}

kiln_status tok_create_from_dir(const char *dir, tok_tokenizer **out)
{
    if (!dir || !out)
        return err_set(KILN_ERR_INVALID, "tok_create_from_dir: a NULL argument");
    size_t len = strlen(dir) + sizeof "/vocab.json";
    char *vocab = malloc(len), *merges = malloc(len);
    kiln_status st;
    if (!vocab || !merges) {
        st = err_set(KILN_ERR_NOMEM, "tok_create_from_dir: out of memory");
    } else {
        snprintf(vocab, len, "%s/vocab.json", dir);
        snprintf(merges, len, "%s/merges.txt", dir);
        st = tok_create(vocab, merges, out);
    }
    free(vocab);
    free(merges);
    return st;
}

void tok_destroy(tok_tokenizer *t)
{
    if (!t)
        return;
    free(t->strings);
    free(t->str_off);
    free(t->str_len);
    free(t->vocab_slots);
    free(t->merge_slots);
    free(t);
}

/* ---- step 1: UTF-8 to code points ---------------------------------------- */

/* Decodes n bytes into out (room for n). Each maximal subpart of an
 * invalid sequence becomes one U+FFFD, as Python's
 * bytes.decode("utf-8", "replace") does (Unicode's recommended practice).
 * *bad counts them and *first_bad is the byte offset of the first. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *out, size_t *bad, size_t *first_bad)
{
    size_t i = 0, o = 0;
    *bad = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            out[o++] = c;
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            if (c == 0xF4)
                hi = 0x8F; /* past U+10FFFF */
        } else {
            need = 0, cp = 0; /* 0x80-0xC1, 0xF5-0xFF never start a character */
        }
        size_t k = 1;
        for (; k <= need && i + k < n; k++) {
            unsigned d = s[i + k];
            if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF))
                break;
            cp = cp << 6 | (d & 0x3F);
        }
        if (need > 0 && k == need + 1) {
            out[o++] = cp;
        } else {
            if ((*bad)++ == 0)
                *first_bad = i;
            out[o++] = 0xFFFD;
        }
        i += k;
    }
    return o;
}

/* ---- step 2: html.unescape ------------------------------------------------ */

typedef struct html_entity {
    const char *name;
    uint32_t cp, cp2; /* cp2: 0 when the name stands for one code point */
} html_entity;

static const html_entity html_entities[] = {
#include "models/html_entities.inc"
};

/* The entity named by len ASCII bytes, or NULL. */
static const html_entity *entity_find(const char *name, size_t len)
{
    size_t lo = 0, hi = sizeof html_entities / sizeof html_entities[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *e = html_entities[mid].name;
        size_t elen = strlen(e);
        int cmp = memcmp(name, e, len < elen ? len : elen);
        if (cmp == 0)
            cmp = len < elen ? -1 : len > elen;
        if (cmp == 0)
            return &html_entities[mid];
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* What a numeric reference stands for, as html._replace_charref decides:
 * the Windows-1252 meaning of 0x80-0x9F (and U+FFFD for 0, CR for 13),
 * U+FFFD for surrogates and past U+10FFFF, nothing for the code points HTML
 * forbids (controls, noncharacters). Returns how many code points (0-1). */
static size_t numeric_reference(uint32_t num, uint32_t *out)
{
    static const uint16_t cp1252[32] = {
        0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178,
    };
    if (num == 0) {
        *out = 0xFFFD;
        return 1;
    }
    if (num == 0x0D) {
        *out = 0x0D;
        return 1;
    }
    if (num >= 0x80 && num <= 0x9F) {
        *out = cp1252[num - 0x80];
        return 1;
    }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        *out = 0xFFFD;
        return 1;
    }
    if ((num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F) || num == 0x7F ||
        (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return 0;
    *out = num;
    return 1;
}

static int is_ascii_digit(uint32_t c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(uint32_t c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* Python's html.unescape on n code points; out has room for n (a reference
 * is never shorter than what replaces it). It replaces each match of
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * scanning left to right; text after a match is not looked at again. */
static size_t html_unescape(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        if (in[i] != '&') {
            out[o++] = in[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < n && in[j] == '#') {
            int hex = j + 1 < n && (in[j + 1] == 'x' || in[j + 1] == 'X');
            size_t k = j + 1 + (size_t)hex;
            if (k < n && (hex ? hex_value(in[k]) >= 0 : is_ascii_digit(in[k]))) {
                /* Python's int() is exact; past U+10FFFF only "too big"
                 * matters, so saturate there */
                uint32_t num = 0;
                for (; k < n && (hex ? hex_value(in[k]) >= 0 : is_ascii_digit(in[k])); k++) {
                    uint32_t d = hex ? (uint32_t)hex_value(in[k]) : in[k] - '0';
                    num = num > 0x10FFFF ? num : num * (hex ? 16 : 10) + d;
                }
                if (k < n && in[k] == ';')
                    k++;
                o += numeric_reference(num, out + o);
                i = k;
                continue;
            }
            out[o++] = in[i++]; /* "&#" without digits is no reference */
            continue;
        }

        /* a name: up to 32 code points other than \t \n \f space < & # ; */
        size_t k = j;
        while (k < n && k - j < 32 && in[k] != '\t' && in[k] != '\n' && in[k] != '\f' && in[k] != ' ' &&
               in[k] != '<' && in[k] != '&' && in[k] != '#' && in[k] != ';')
            k++;
        if (k == j) {
            out[o++] = in[i++];
            continue;
        }
        size_t len = k - j + (k < n && in[k] == ';'); /* with the ';' */
        char name[33];
        size_t ascii = 0; /* entity names are ASCII: only this prefix can match */
        while (ascii < len && in[j + ascii] < 0x80) {
            name[ascii] = (char)in[j + ascii];
            ascii++;
        }
        const html_entity *e = ascii == len ? entity_find(name, len) : NULL;
        size_t used = len;
        /* else the longest known prefix of two or more (only the legacy
         * names without ';' can match), the rest kept as it is */
        for (size_t x = len - 1; !e && x >= 2; x--)
            if (x <= ascii && (e = entity_find(name, x)) != NULL)
                used = x;
        if (!e) {
            while (i < j + len)
                out[o++] = in[i++]; /* "&" and the name, unchanged */
            continue;
        }
        out[o++] = e->cp;
        if (e->cp2)
            out[o++] = e->cp2;
        for (i = j + used; i < j + len; i++)
            out[o++] = in[i];
    }
    return o;
}

/* ---- step 3: white space and case ----------------------------------------- */

/* str.isspace, which str.strip uses: Python's table marks the characters of
 * bidirectional class WS, B or S, and the space separators (Zs). */
static int is_py_space(uint32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
           p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

/* The regex module's \s in a str pattern: Unicode's White_Space property,
 * which is U+0009-U+000D, U+0085 and the Z categories. Unlike str.isspace
 * it leaves out U+001C-U+001F. */
static int is_white_space(uint32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0D);
    if (c == 0x85)
        return 1;
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

/* basic_clean's strip, then whitespace_clean: re.sub(r'\s+', ' ', text)
 * and strip again (a no-op by then: the ends are not spaces after the first
 * strip, and only \s characters, which are all isspace, change). */
static size_t clean_spaces(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t begin = 0, end = n, o = 0;
    while (begin < end && is_py_space(in[begin]))
        begin++;
    while (end > begin && is_py_space(in[end - 1]))
        end--;
    for (size_t i = begin; i < end; i++) {
        if (!is_white_space(in[i]))
            out[o++] = in[i];
        else if (!is_white_space(in[i - 1])) /* in[begin] is not a space */
            out[o++] = ' ';
    }
    return o;
}

/* Unicode's Case_Ignorable: categories Mn, Me, Cf, Lm, Sk, and the
 * Word_Break classes MidLetter, MidNumLet and Single_Quote, which utf8proc
 * does not carry (hence the short list, from WordBreakProperty.txt). */
static int is_case_ignorable(uint32_t c)
{
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    switch (c) {
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4: case 0x2018:
    case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07:
    case 0xFF0E: case 0xFF1A:
        return 1;
    default:
        return 0;
    }
}

/* Unicode's Cased: upper, lower or title case letters, everything with a
 * case mapping, and the few Other_Lowercase / Other_Uppercase characters
 * that have neither (and are not case-ignorable, where cased-ness does not
 * matter below): ª, º and the squared, circled and negative Latin capitals. */
static int is_cased(uint32_t c)
{
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT)
        return 1;
    if (utf8proc_tolower((utf8proc_int32_t)c) != (utf8proc_int32_t)c ||
        utf8proc_toupper((utf8proc_int32_t)c) != (utf8proc_int32_t)c)
        return 1;
    return c == 0xAA || c == 0xBA || (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
           (c >= 0x1F170 && c <= 0x1F189);
}

/* Capital sigma lower-cases to final sigma when a cased letter comes before
 * it and none after, skipping case-ignorable characters both ways (Unicode
 * Final_Sigma; CPython's handle_capital_sigma). */
static uint32_t lower_sigma(const uint32_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && is_case_ignorable(s[j - 1]))
        j--;
    if (j == 0 || !is_cased(s[j - 1]))
        return 0x3C3;
    for (j = i + 1; j < n && is_case_ignorable(s[j]); j++)
        ;
    return j < n && is_cased(s[j]) ? 0x3C3 : 0x3C2;
}

/* str.lower(): the simple lower-case mapping, except the two cases where
 * Python's differs: U+0130 becomes "i" + U+0307 (SpecialCasing's one
 * unconditional lower-case expansion) and capital sigma follows the
 * Final_Sigma rule. out has room for 2n. */
static size_t py_lower(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c < 0x80)
            out[o++] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        else if (c == 0x130)
            out[o++] = 'i', out[o++] = 0x307;
        else if (c == 0x3A3)
            out[o++] = lower_sigma(in, n, i);
        else
            out[o++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
    }
    return o;
}

/* ---- step 4: splitting into pieces ---------------------------------------- */

static int is_letter(uint32_t c)
{
    if (c < 0x80)
        return (c | 32) >= 'a' && (c | 32) <= 'z';
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

static int is_number(uint32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
}

/* [^\s\p{L}\p{N}] as the regex module matches it case-insensitively:
 * a character is outside the class only if all its case variants are. That
 * matters for one character in all of Unicode, U+0345 (combining ypogegrammeni,
 * Mn), whose upper case is a letter: it matches no alternative and is
 * dropped like a space. (The positive classes are unaffected: checked
 * against the regex module code point by code point.) */
static int is_symbol(uint32_t c)
{
    return !is_white_space(c) && !is_letter(c) && !is_number(c) && c != 0x345;
}

/* One character of a literal in the case-insensitive pattern: the text is
 * lower-case already, but U+017F (long s) still matches 's', as simple
 * case folding says and the regex module does. */
static int literal_char(uint32_t c, char lit)
{
    return c == (uint32_t)(unsigned char)lit || (lit == 's' && c == 0x17F);
}

/* The length of literal lit at s (0 if it is not there); *exact tells
 * whether the text is the literal itself rather than a case variant. */
static size_t match_literal(const uint32_t *s, size_t n, const char *lit, int *exact)
{
    size_t len = strlen(lit);
    if (n < len)
        return 0;
    *exact = 1;
    for (size_t i = 0; i < len; i++) {
        if (!literal_char(s[i], lit[i]))
            return 0;
        *exact &= s[i] == (uint32_t)(unsigned char)lit[i];
    }
    return len;
}

typedef struct piece {
    size_t start, len;
    int32_t special; /* the token id when the piece is a special token, else -1 */
} piece;

/* re.findall with CLIP's pattern: at each position the first alternative
 * that matches wins (there is no backtracking between them to mimic, as
 * each is a literal or one greedy class run); a position where none
 * matches (white space, U+0345) is skipped. Returns the number of pieces and the
 * most UTF-8 bytes one of them takes. */
static size_t split_pieces(const tok_tokenizer *t, const uint32_t *s, size_t n, piece *out, size_t *max_bytes)
{
    size_t np = 0;
    *max_bytes = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = s[i];
        size_t len = 0;
        int exact = 0;
        int32_t special = -1;
        if (c == '<') {
            if ((len = match_literal(s + i, n - i, START_TOKEN, &exact)) != 0)
                special = exact ? t->start_id : -1;
            else if ((len = match_literal(s + i, n - i, END_TOKEN, &exact)) != 0)
                special = exact ? t->end_id : -1;
        } else if (c == '\'' && i + 1 < n) {
            /* 's|'t|'re|'ve|'m|'ll|'d */
            uint32_t d = s[i + 1], e = i + 2 < n ? s[i + 2] : 0;
            if (literal_char(d, 's') || d == 't' || d == 'm' || d == 'd')
                len = 2;
            else if ((d == 'r' || d == 'v') && e == 'e')
                len = 3;
            else if (d == 'l' && e == 'l')
                len = 3;
        }
        if (len == 0) {
            if (is_letter(c)) {
                for (len = 1; i + len < n && is_letter(s[i + len]); len++)
                    ;
            } else if (is_number(c)) {
                len = 1;
            } else if (is_symbol(c)) {
                for (len = 1; i + len < n && is_symbol(s[i + len]); len++)
                    ;
            } else {
                i++;
                continue;
            }
        }
        size_t bytes = 0;
        for (size_t k = 0; k < len; k++)
            bytes += s[i + k] < 0x80 ? 1 : s[i + k] < 0x800 ? 2 : s[i + k] < 0x10000 ? 3 : 4;
        if (bytes > *max_bytes)
            *max_bytes = bytes;
        out[np].start = i;
        out[np].len = len;
        out[np].special = special;
        np++;
        i += len;
    }
    return np;
}

/* ---- step 5: byte-level BPE ------------------------------------------------ */

/* A pair of neighbouring symbols that has a merge. */
typedef struct bpe_cand {
    int32_t rank, pos; /* pos: the left symbol's index, which the merge keeps */
    int32_t left, right, merged;
} bpe_cand;

/* Scratch for one piece of up to cap bytes. */
typedef struct bpe_work {
    size_t cap;
    unsigned char *bytes;
    int32_t *id, *prev, *next;
    bpe_cand *heap, *batch; /* each holds up to 3 * cap: n - 1 pairs, 2 more per merge */
} bpe_work;

static void bpe_work_free(bpe_work *w)
{
    free(w->bytes);
    free(w->id);
    free(w->prev);
    free(w->next);
    free(w->heap);
    free(w->batch);
}

static int bpe_work_alloc(bpe_work *w, size_t cap)
{
    cap = cap ? cap : 1;
    w->cap = cap;
    w->bytes = malloc(cap);
    w->id = malloc(cap * sizeof *w->id);
    w->prev = malloc(cap * sizeof *w->prev);
    w->next = malloc(cap * sizeof *w->next);
    w->heap = malloc(3 * cap * sizeof *w->heap);
    w->batch = malloc(3 * cap * sizeof *w->batch);
    return w->bytes && w->id && w->prev && w->next && w->heap && w->batch;
}

static int cand_before(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_cand *h, size_t *n, bpe_cand c)
{
    size_t i = (*n)++;
    while (i > 0 && cand_before(&c, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static bpe_cand heap_pop(bpe_cand *h, size_t *n)
{
    bpe_cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n)
            break;
        if (child + 1 < *n && cand_before(&h[child + 1], &h[child]))
            child++;
        if (!cand_before(&h[child], &last))
            break;
        h[i] = h[child];
        i = child;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* Queues the pair starting at symbol pos if the merges know it. */
static void queue_pair(const tok_tokenizer *t, bpe_work *w, size_t *heap_n, int32_t pos)
{
    if (pos < 0 || w->next[pos] < 0)
        return;
    int32_t right = w->next[pos];
    const merge_slot *m = merge_find(t, w->id[pos], w->id[right]);
    if (m) {
        bpe_cand c = {m->rank, pos, w->id[pos], w->id[right], m->merged};
        heap_push(w->heap, heap_n, c);
    }
}

typedef struct id_sink {
    int32_t *ids;
    size_t cap, n;
} id_sink;

static void sink_put(id_sink *s, int32_t id)
{
    if (s->n < s->cap)
        s->ids[s->n] = id;
    s->n++;
}

/* The reference's bpe(): start from one symbol per byte, the last with
 * "</w>"; then, while some neighbouring pair has a merge, take the pair of
 * lowest rank and merge every occurrence of it, left to right, skipping one
 * that overlaps an occurrence just merged ("a a a" -> "aa a").
 *
 * Rescanning every pair after each merge is quadratic in the piece's length
 * (a 10,000-letter word is one piece); a heap ordered by (rank, position)
 * gives the same result in n log n. All queued occurrences of the lowest
 * rank are taken out before any is merged, since a merge may queue a pair
 * of lower rank that the reference only looks at after this round. A merge
 * never queues another occurrence of the pair it merged (the merged symbol
 * is longer than either part), and a queued pair whose symbols changed
 * since is stale and skipped. */
static void bpe_piece(const tok_tokenizer *t, bpe_work *w, const uint32_t *s, size_t len, id_sink *sink)
{
    size_t n = 0;
    for (size_t k = 0; k < len; k++)
        n += utf8_put(s[k], w->bytes + n);
    for (size_t k = 0; k < n; k++) {
        w->id[k] = k + 1 < n ? t->byte_id[w->bytes[k]] : t->byte_end_id[w->bytes[k]];
        w->prev[k] = (int32_t)k - 1;
        w->next[k] = k + 1 < n ? (int32_t)k + 1 : -1;
    }
    size_t heap_n = 0;
    for (size_t k = 0; k + 1 < n; k++)
        queue_pair(t, w, &heap_n, (int32_t)k);

    while (heap_n > 0) {
        int32_t rank = w->heap[0].rank;
        size_t batch_n = 0;
        while (heap_n > 0 && w->heap[0].rank == rank)
            w->batch[batch_n++] = heap_pop(w->heap, &heap_n);
        for (size_t b = 0; b < batch_n; b++) {
            const bpe_cand *c = &w->batch[b];
            int32_t pos = c->pos, right = w->next[pos];
            /* a merged-away symbol keeps its id but has prev == -2 */
            if (w->prev[pos] == -2 || right < 0 || w->id[pos] != c->left || w->id[right] != c->right)
                continue;
            w->id[pos] = c->merged;
            w->next[pos] = w->next[right];
            if (w->next[right] >= 0)
                w->prev[w->next[right]] = pos;
            w->prev[right] = -2;
            queue_pair(t, w, &heap_n, w->prev[pos]);
            queue_pair(t, w, &heap_n, pos);
        }
    }
    for (int32_t k = 0; k >= 0; k = w->next[k])
        sink_put(sink, w->id[k]);
}

/* ---- encoding ---------------------------------------------------------------- */

/* Steps 1-5 into sink. Every allocation happens before the first id is
 * written, so a failure leaves the caller's buffer as it was. */
static kiln_status encode(const tok_tokenizer *t, const char *text, id_sink *sink)
{
    size_t nbytes = strlen(text);
    if (nbytes > TOK_MAX_PROMPT_BYTES)
        return err_set(KILN_ERR_INVALID, "prompt of %zu bytes: at most %u are allowed", nbytes,
                       TOK_MAX_PROMPT_BYTES);

    kiln_status st = KILN_ERR_NOMEM;
    bpe_work w = {0};
    piece *pieces = NULL;
    uint32_t *a = malloc((nbytes + 1) * sizeof *a);
    uint32_t *b = malloc((nbytes + 1) * sizeof *b);
    uint32_t *lower = malloc((2 * nbytes + 1) * sizeof *lower);
    if (!a || !b || !lower)
        goto fail;

    size_t bad = 0, first_bad = 0;
    size_t n = utf8_decode((const unsigned char *)text, nbytes, a, &bad, &first_bad);
    if (bad)
        LOG_WARN("prompt: invalid utf-8 at byte %zu replaced with U+FFFD (%zu place%s in all)", first_bad, bad,
                 bad == 1 ? "" : "s");
    n = html_unescape(a, n, b);
    n = html_unescape(b, n, a);
    n = clean_spaces(a, n, b);
    n = py_lower(b, n, lower);

    pieces = malloc((n + 1) * sizeof *pieces);
    if (!pieces)
        goto fail;
    size_t max_bytes;
    size_t np = split_pieces(t, lower, n, pieces, &max_bytes);
    if (!bpe_work_alloc(&w, max_bytes))
        goto fail;

    for (size_t p = 0; p < np; p++) {
        if (pieces[p].special >= 0)
            sink_put(sink, pieces[p].special);
        else
            bpe_piece(t, &w, lower + pieces[p].start, pieces[p].len, sink);
    }
    st = KILN_OK;

fail:
    if (st != KILN_OK)
        err_set(st, "prompt of %zu bytes: out of memory", nbytes);
    bpe_work_free(&w);
    free(pieces);
    free(lower);
    free(b);
    free(a);
    return st;
}

kiln_status tok_encode(const tok_tokenizer *t, const char *text, int32_t *ids, size_t max_ids, size_t *n_ids)
{
    if (!t || !text || !n_ids || (!ids && max_ids > 0))
        return err_set(KILN_ERR_INVALID, "tok_encode: a NULL argument");
    id_sink sink = {ids, max_ids, 0};
    kiln_status st = encode(t, text, &sink);
    if (st == KILN_OK)
        *n_ids = sink.n;
    return st;
}

kiln_status tok_encode_padded(const tok_tokenizer *t, const char *text, int context_len, int32_t *ids,
                              int *truncated)
{
    if (!t || !text || !ids)
        return err_set(KILN_ERR_INVALID, "tok_encode_padded: a NULL argument");
    if (context_len < 2)
        return err_set(KILN_ERR_INVALID, "tok_encode_padded: context length %d: at least 2 (start and end)",
                       context_len);
    size_t room = (size_t)context_len - 2;
    int32_t *tokens = malloc((room + 1) * sizeof *tokens);
    if (!tokens)
        return err_set(KILN_ERR_NOMEM, "tok_encode_padded: out of memory");
    id_sink sink = {tokens, room, 0};
    kiln_status st = encode(t, text, &sink);
    if (st != KILN_OK) {
        free(tokens);
        return st;
    }

    size_t kept = sink.n < room ? sink.n : room, cut = sink.n - kept;
    ids[0] = t->start_id;
    memcpy(ids + 1, tokens, kept * sizeof *ids);
    ids[1 + kept] = t->end_id;
    for (size_t i = kept + 2; i < (size_t)context_len; i++)
        ids[i] = t->pad_id;
    free(tokens);
    if (cut > 0)
        LOG_WARN("prompt has %zu tokens and %zu fit: cut the last %zu", sink.n, room, cut);
    if (truncated)
        *truncated = cut > (size_t)INT_MAX ? INT_MAX : (int)cut;
    return KILN_OK;
}

/* ---- accessors and decoding ---------------------------------------------------- */

size_t tok_vocab_size(const tok_tokenizer *t)
{
    return t->n_vocab;
}

size_t tok_merge_count(const tok_tokenizer *t)
{
    return t->n_merges;
}

int32_t tok_start_id(const tok_tokenizer *t)
{
    return t->start_id;
}

int32_t tok_end_id(const tok_tokenizer *t)
{
    return t->end_id;
}

int32_t tok_pad_id(const tok_tokenizer *t)
{
    return t->pad_id;
}

kiln_status tok_set_pad_id(tok_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_vocab)
        return err_set(KILN_ERR_INVALID, "pad id %d is outside the vocabulary (0..%zu)", (int)id, t->n_vocab - 1);
    t->pad_id = id;
    return KILN_OK;
}

const char *tok_token(const tok_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    return t->strings + t->str_off[id];
}

int32_t tok_token_id(const tok_tokenizer *t, const char *token)
{
    return token ? vocab_find(t, token, strlen(token)) : -1;
}

kiln_status tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n_ids, char *buf, size_t buf_size,
                       size_t *len)
{
    if (!t || (!ids && n_ids > 0) || (!buf && buf_size > 0) || !len)
        return err_set(KILN_ERR_INVALID, "tok_decode: a NULL argument");
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab)
            return err_set(KILN_ERR_INVALID, "tok_decode: id %d at index %zu is outside the vocabulary (0..%zu)",
                           (int)ids[i], i, t->n_vocab - 1);
        total += t->str_len[ids[i]];
    }
    /* tokens are valid UTF-8 (jansson checks), so a code point never
     * takes more bytes than its source, U+FFFD (3) for an odd byte aside */
    unsigned char *raw = malloc(3 * total + 1);
    uint32_t *cps = malloc((total + 1) * sizeof *cps);
    if (!raw || !cps) {
        free(raw);
        free(cps);
        return err_set(KILN_ERR_NOMEM, "tok_decode: out of memory");
    }

    /* each token's characters back to bytes (a character that stands for
     * no byte, possible in another model's vocabulary, is kept as UTF-8) */
    size_t r = 0;
    for (size_t i = 0; i < n_ids; i++) {
        size_t bad, first_bad;
        size_t nc = utf8_decode((const unsigned char *)t->strings + t->str_off[ids[i]], t->str_len[ids[i]], cps,
                                &bad, &first_bad);
        for (size_t c = 0; c < nc; c++) {
            int byte = char_byte(cps[c]);
            if (byte >= 0)
                raw[r++] = (unsigned char)byte;
            else
                r += utf8_put(cps[c], raw + r);
        }
    }
    free(cps);

    /* then .replace('</w>', ' ') over the whole text */
    size_t out = 0;
    for (size_t i = 0; i < r;) {
        char c = (char)raw[i];
        size_t step = 1;
        if (i + 4 <= r && memcmp(raw + i, WORD_END, 4) == 0)
            c = ' ', step = 4;
        if (out + 1 < buf_size)
            buf[out] = c;
        out++;
        i += step;
    }
    if (buf_size > 0)
        buf[out < buf_size ? out : buf_size - 1] = '\0';
    free(raw);
    *len = out;
    return KILN_OK;
}
