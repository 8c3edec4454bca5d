#include "pipeline/parameters.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cache_dir.h"
#include "core/error.h"
#include "core/log.h"

/* ---- writing ------------------------------------------------------------------ */

/* A growing string; after a failed allocation it stays failed and appends
 * do nothing, so a writer checks once at the end. */
typedef struct text_buf {
    char *data;
    size_t len, cap;
    int failed;
} text_buf;

static void buf_reserve(text_buf *b, size_t more)
{
    if (b->failed || b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) {
        b->failed = 1;
        return;
    }
    b->data = grown;
    b->cap = cap;
}

static void buf_append(text_buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_printf(text_buf *b, const char *fmt, ...) KILN_PRINTF(2, 3);
static void buf_printf(text_buf *b, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    buf_reserve(b, (size_t)n);
    if (b->failed)
        return;
    va_start(args, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, args);
    va_end(args);
    b->len += (size_t)n;
}

static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* A setting's value as A1111's quote() writes it: as it is, or as a JSON
 * string when it holds what the reader would take for the end of the value
 * (',', a line break), for a new key (':'), for quotes to remove (a leading
 * '"'), or would lose (white space at the ends, control characters), or is
 * empty. Bytes >= 0x80 are copied (JSON allows raw UTF-8; a byte that is not
 * UTF-8 comes back as it went). */
static void append_value(text_buf *b, const char *v)
{
    size_t n = strlen(v);
    int quote = n == 0 || v[0] == '"' || is_space((unsigned char)v[0]) || is_space((unsigned char)v[n - 1]);
    for (size_t i = 0; i < n && !quote; i++)
        quote = v[i] == ',' || v[i] == ':' || (unsigned char)v[i] < 0x20 || v[i] == 0x7f;
    if (!quote) {
        buf_append(b, v, n);
        return;
    }
    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(b, esc, 2);
        } else if (c == '\n') {
            buf_append(b, "\\n", 2);
        } else if (c == '\r') {
            buf_append(b, "\\r", 2);
        } else if (c == '\t') {
            buf_append(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_append(b, v + i, 1);
        }
    }
    buf_append(b, "\"", 1);
}

kiln_status parameters_format(const image_parameters *p, char **out)
{
    text_buf b = {0};
    buf_printf(&b, "%s\n", p->prompt);
    if (p->negative_prompt && *p->negative_prompt)
        buf_printf(&b, "Negative prompt: %s\n", p->negative_prompt);
    buf_printf(&b, "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d", p->steps,
               sampler_a1111_name(p->sampler, p->karras), (double)p->cfg_scale, (unsigned long long)p->seed,
               p->width, p->height);
    if (p->model_hash) {
        buf_printf(&b, ", Model hash: ");
        append_value(&b, p->model_hash);
    }
    if (p->model_name) {
        buf_printf(&b, ", Model: ");
        append_value(&b, p->model_name);
    }
    if (p->denoising_strength > 0)
        buf_printf(&b, ", Denoising strength: %g", (double)p->denoising_strength);
    if (p->rng && strcmp(p->rng, "philox") != 0)
        buf_printf(&b, ", RNG: CPU");
    buf_printf(&b, ", Version: kiln %s", kiln_version());
    if (b.failed) {
        free(b.data);
        return err_set(KILN_ERR_NOMEM, "cannot allocate the parameters text");
    }
    *out = b.data;
    return KILN_OK;
}

kiln_status parameters_model_hash(const char *path, char out[11])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(KILN_ERR_IO, "%s: cannot open to hash: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    kiln_status st = KILN_OK;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = err_set(KILN_ERR_NOMEM, "cannot start a SHA-256");
        goto done;
    }
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, f)) > 0)
        EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        st = err_set(KILN_ERR_IO, "%s: read failed while hashing: %s", path, strerror(errno));
        goto done;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    for (int i = 0; i < 5; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
done:
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return st;
}

/* The cache of model hashes, in kiln's cache folder:
 *   {"format": "kiln-model-hashes", "version": 1,
 *    "files": {"/real/path.safetensors": {"size": N, "mtime_ns": N, "hash": "0123456789"}}}
 * An entry counts only while the file keeps its size and modification
 * time; an unreadable cache is started again. */
#define HASH_CACHE_NAME "model-hashes.json"

static int is_short_hash(const char *s)
{
    if (!s || strlen(s) != 10)
        return 0;
    for (int i = 0; i < 10; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Written beside the cache and renamed over it: a reader sees the old file
 * or the new one. Failing to write costs only the next run's hashing. */
static void store_hash_cache(json_t *root, const char *cache)
{
    char tmp[4096 + 32];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", cache, (long)getpid());
    if (cache_dir_make_parents(cache) != KILN_OK || json_dump_file(root, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) != 0 ||
        rename(tmp, cache) != 0) {
        LOG_DEBUG("model hash not cached in %s: %s", cache, strerror(errno));
        unlink(tmp);
    }
}

kiln_status parameters_model_hash_cached(const char *path, char out[11])
{
    struct stat st;
    char real[PATH_MAX], cache[4096];
    if (stat(path, &st) != 0 || !realpath(path, real) ||
        cache_dir_path(HASH_CACHE_NAME, cache, sizeof cache) != KILN_OK)
        return parameters_model_hash(path, out);
    json_int_t mtime_ns = (json_int_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    json_t *root = json_load_file(cache, 0, NULL);
    if (!json_is_object(json_object_get(root, "files"))) {
        json_decref(root);
        root = json_pack("{s:s, s:i, s:{}}", "format", "kiln-model-hashes", "version", 1, "files");
        if (!root)
            return parameters_model_hash(path, out);
    }
    json_t *files = json_object_get(root, "files"), *entry = json_object_get(files, real);
    const char *known = json_string_value(json_object_get(entry, "hash"));
    if (json_integer_value(json_object_get(entry, "size")) == (json_int_t)st.st_size &&
        json_integer_value(json_object_get(entry, "mtime_ns")) == mtime_ns && is_short_hash(known)) {
        memcpy(out, known, 11);
        json_decref(root);
        return KILN_OK;
    }
    kiln_status status = parameters_model_hash(path, out);
    if (status == KILN_OK) {
        json_t *entry_new =
            json_pack("{s:I, s:I, s:s}", "size", (json_int_t)st.st_size, "mtime_ns", mtime_ns, "hash", out);
        json_object_set_new(files, real, entry_new);
        store_hash_cache(root, cache);
    }
    json_decref(root);
    return status;
}

/* ---- reading ------------------------------------------------------------------ */

/* A value as it goes into a message: control characters as \xNN, cut at
 * 60 bytes (at a character boundary) with "...". */
static const char *shown(const char *s, char *buf, size_t size)
{
    size_t out = 0, i = 0;
    for (; s[i] && out + 8 < size && i < 60; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            out += (size_t)snprintf(buf + out, size - out, "\\x%02x", c);
        else
            buf[out++] = (char)c;
    }
    if (s[i]) {
        while (out > 0 && i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) { /* no half characters */
            out--;
            i--;
        }
        memcpy(buf + out, "...", 4);
    } else {
        buf[out] = '\0';
    }
    return buf;
}

static int is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

static int is_key_char(unsigned char c)
{
    return is_word(c) || c == ' ' || c == '-' || c == '/';
}

/* One "Key: value" found in the settings line; value as written (quotes
 * and all). */
typedef struct setting_span {
    const char *key, *value;
    size_t key_len, value_len;
} setting_span;

/* re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line)
 * on the n bytes at s (no line breaks), into spans (NULL: count only).
 * Returns the number found.
 *
 * The pattern never needs to backtrack far: the key is the longest run of
 * key characters and must be followed by ':'; the quoted value ends at its
 * first unescaped '"', which must be followed by ',' or the end, or else the
 * value is everything up to the next ','. A failed key tells where the next
 * attempt can start (every start inside the run ends at the same place),
 * which keeps the scan linear where Python's re, trying every position, is
 * quadratic on a long run of letters without ':'. Quoted scans never
 * overlap: a later value's opening quote follows ':' or a space, so an
 * earlier scan that reaches it takes it for its closing quote. */
static size_t find_settings(const char *s, size_t n, setting_span *spans)
{
    size_t count = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && is_space((unsigned char)s[j]))
            j++;
        if (j >= n)
            break;
        if (!is_word((unsigned char)s[j])) {
            i = j + 1;
            continue;
        }
        size_t k = j + 1, second = j + 1; /* the key's second character: it needs two */
        while (second < n && ((unsigned char)s[second] & 0xC0) == 0x80)
            second++;
        while (k < n && is_key_char((unsigned char)s[k]))
            k++;
        if (k <= second || k >= n || s[k] != ':') {
            i = k;
            continue;
        }
        size_t v = k + 1;
        while (v < n && is_space((unsigned char)s[v]))
            v++;
        size_t end = 0; /* the value's end, if the quoted form matched */
        if (v < n && s[v] == '"') {
            size_t q = v + 1;
            while (q < n && s[q] != '"')
                q += s[q] == '\\' ? 2 : 1;
            if (q < n && q > v + 1 && (q + 1 == n || s[q + 1] == ','))
                end = q + 1;
        }
        if (!end) {
            end = v;
            while (end < n && s[end] != ',')
                end++;
        }
        if (spans) {
            spans[count].key = s + j;
            spans[count].key_len = k - j;
            spans[count].value = s + v;
            spans[count].value_len = end - v;
        }
        count++;
        i = end < n ? end + 1 : n; /* past the ',' */
    }
    return count;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 32) >= 'a' && (c | 32) <= 'f')
        return (c | 32) - 'a' + 10;
    return -1;
}

static int read_u16_escape(const char *s, size_t n, size_t i, unsigned *out)
{
    if (i + 4 > n)
        return -1;
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int d = hex_digit((unsigned char)s[i + k]);
        if (d < 0)
            return -1;
        v = v << 4 | (unsigned)d;
    }
    *out = v;
    return 0;
}

/* json.loads of the n bytes at s, which begin and end with '"', into out
 * (room for n bytes: an escape is never shorter than what it stands for).
 * Returns the length, or -1 where Python's json.loads fails (A1111 then
 * keeps the value as written) or where the string cannot be a C string
 * (\u0000, a lone surrogate, which Python keeps in a str). */
static long json_unquote(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c < 0x20) /* the string ends early; raw control characters are refused */
            return -1;
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (++i + 1 >= n) /* a '\' escaping the closing quote */
            return -1;
        switch (s[i]) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp, low;
            if (read_u16_escape(s, n - 1, i + 1, &cp) != 0)
                return -1;
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 2 >= n - 1 || s[i + 1] != '\\' || s[i + 2] != 'u' ||
                    read_u16_escape(s, n - 1, i + 3, &low) != 0 || low < 0xDC00 || low > 0xDFFF)
                    return -1;
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            if (cp == 0)
                return -1;
            /* UTF-8; at most 4 bytes for the 6 or 12 of the escape */
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | cp >> 6);
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | cp >> 12);
                out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | cp >> 18);
                out[o++] = (char)(0x80 | (cp >> 12 & 0x3F));
                out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            return -1;
        }
    }
    return (long)o;
}

/* A setting's value as A1111 reads it: unquoted if it begins and ends with
 * '"' and is a JSON string, else as written. malloc'd, or NULL. */
static char *setting_value(const setting_span *sp)
{
    char *v = malloc(sp->value_len + 1);
    if (!v)
        return NULL;
    long len = -1;
    if (sp->value_len >= 2 && sp->value[0] == '"' && sp->value[sp->value_len - 1] == '"')
        len = json_unquote(sp->value, sp->value_len, v);
    if (len < 0) {
        memcpy(v, sp->value, sp->value_len);
        len = (long)sp->value_len;
    }
    v[len] = '\0';
    return v;
}

/* A whole number: the n bytes at s are digits only (no sign, no spaces),
 * and make at most max. */
static int parse_whole(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* A finite decimal number, all of s ("7", "7.5", "-.5e1"); strtof alone
 * would take leading spaces, "inf", "nan" and hex. */
static int parse_real(const char *s, float *out)
{
    if (!(*s >= '0' && *s <= '9') && !((*s == '-' || *s == '+' || *s == '.') && s[1] != '\0'))
        return -1;
    for (const char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == 'e' || *c == 'E' || *c == '-' || *c == '+'))
            return -1;
    char *end;
    float v = strtof(s, &end);
    if (*end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* "WIDTHxHEIGHT", as A1111's ^(\d+)x(\d+)$ */
static int parse_size(const char *s, int *width, int *height)
{
    const char *x = strchr(s, 'x');
    uint64_t w, h;
    if (!x || parse_whole(s, (size_t)(x - s), INT_MAX, &w) != 0 ||
        parse_whole(x + 1, strlen(x + 1), INT_MAX, &h) != 0)
        return -1;
    *width = (int)w;
    *height = (int)h;
    return 0;
}

static int key_is(const setting_span *sp, const char *key)
{
    return sp->key_len == strlen(key) && memcmp(sp->key, key, sp->key_len) == 0;
}

static void replace_string(char **field, char *value)
{
    free(*field);
    *field = value;
}

/* Takes ownership of value (freed on failure). */
static kiln_status apply_setting(parsed_parameters *p, const setting_span *sp, char *value)
{
    char shown_value[300];
    const char *expected = NULL;
    uint64_t whole;
    if (key_is(sp, "Steps")) {
        if (parse_whole(value, strlen(value), INT_MAX, &whole) == 0) {
            p->steps = (int)whole;
            p->present |= PARAMETERS_STEPS;
        } else {
            expected = "a whole number of steps";
        }
    } else if (key_is(sp, "Sampler")) {
        replace_string(&p->sampler, value);
        p->present |= PARAMETERS_SAMPLER;
        return KILN_OK;
    } else if (key_is(sp, "CFG scale")) {
        if (parse_real(value, &p->cfg_scale) == 0)
            p->present |= PARAMETERS_CFG_SCALE;
        else
            expected = "a number";
    } else if (key_is(sp, "Seed")) {
        if (parse_whole(value, strlen(value), UINT64_MAX, &p->seed) == 0)
            p->present |= PARAMETERS_SEED;
        else
            expected = "a whole number from 0 to 18446744073709551615";
    } else if (key_is(sp, "Size")) {
        if (parse_size(value, &p->width, &p->height) == 0)
            p->present |= PARAMETERS_SIZE;
        else
            expected = "WIDTHxHEIGHT, as 512x768";
    } else if (key_is(sp, "Model hash")) {
        replace_string(&p->model_hash, value);
        p->present |= PARAMETERS_MODEL_HASH;
        return KILN_OK;
    } else if (key_is(sp, "Model")) {
        replace_string(&p->model_name, value);
        p->present |= PARAMETERS_MODEL;
        return KILN_OK;
    } else if (key_is(sp, "Denoising strength")) {
        if (parse_real(value, &p->denoising_strength) == 0)
            p->present |= PARAMETERS_DENOISING_STRENGTH;
        else
            expected = "a number";
    } else {
        /* room for every setting was made up front; repeats are merged at the end */
        char *key = malloc(sp->key_len + 1);
        if (!key) {
            free(value);
            return err_set(KILN_ERR_NOMEM, "parameters: cannot allocate setting %zu", p->n_extras + 1);
        }
        memcpy(key, sp->key, sp->key_len);
        key[sp->key_len] = '\0';
        p->extras[p->n_extras].key = key;
        p->extras[p->n_extras].value = value;
        p->n_extras++;
        return KILN_OK;
    }
    kiln_status st = KILN_OK;
    if (expected)
        st = err_set(KILN_ERR_FORMAT, "parameters: %.*s: '%s' is not %s", (int)sp->key_len, sp->key,
                     shown(value, shown_value, sizeof shown_value), expected);
    free(value);
    return st;
}

typedef struct extra_ref {
    const char *key;
    size_t index;
} extra_ref;

static int compare_extra_ref(const void *a, const void *b)
{
    const extra_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* A1111 reads the settings into a dict: a repeated key keeps the place of
 * its first appearance and the value of its last. Sorting keeps this
 * n log n for a line of many settings. */
static kiln_status merge_repeated_extras(parsed_parameters *p)
{
    if (p->n_extras < 2)
        return KILN_OK;
    extra_ref *refs = malloc(p->n_extras * sizeof *refs);
    if (!refs)
        return err_set(KILN_ERR_NOMEM, "parameters: cannot allocate for %zu settings", p->n_extras);
    for (size_t i = 0; i < p->n_extras; i++)
        refs[i] = (extra_ref){p->extras[i].key, i};
    qsort(refs, p->n_extras, sizeof *refs, compare_extra_ref);
    for (size_t g = 0; g < p->n_extras;) {
        size_t end = g + 1;
        while (end < p->n_extras && strcmp(refs[end].key, refs[g].key) == 0)
            end++;
        if (end - g > 1) {
            parameters_extra *first = &p->extras[refs[g].index], *last = &p->extras[refs[end - 1].index];
            char *value = first->value;
            first->value = last->value;
            last->value = value;
            for (size_t r = g + 1; r < end; r++) { /* emptied; dropped below */
                parameters_extra *e = &p->extras[refs[r].index];
                free(e->key);
                free(e->value);
                e->key = e->value = NULL;
            }
        }
        g = end;
    }
    free(refs);
    size_t kept = 0;
    for (size_t i = 0; i < p->n_extras; i++)
        if (p->extras[i].key)
            p->extras[kept++] = p->extras[i];
    p->n_extras = kept;
    return KILN_OK;
}

/* Appends one prompt line as A1111 does: "\n" between lines, except that
 * lines before the first non-empty one are dropped. */
static void add_line(char *dst, size_t *len, const char *line, size_t n)
{
    if (*len > 0)
        dst[(*len)++] = '\n';
    memcpy(dst + *len, line, n);
    *len += n;
    dst[*len] = '\0';
}

static void strip(const char **s, size_t *n)
{
    while (*n > 0 && is_space((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_space((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

kiln_status parameters_parse(const char *text, parsed_parameters *out)
{
    if (!text || !out)
        return err_set(KILN_ERR_INVALID, "parameters_parse: a NULL argument");
    size_t n = strlen(text);
    if (n > PARAMETERS_MAX_BYTES)
        return err_set(KILN_ERR_INVALID, "parameters: text of %zu bytes: at most %u are read", n,
                       PARAMETERS_MAX_BYTES);
    strip(&text, &n);

    /* the last line holds the settings if three pairs are found in it */
    size_t last = n;
    while (last > 0 && text[last - 1] != '\n')
        last--;
    size_t n_settings = find_settings(text + last, n - last, NULL);
    size_t prompt_end = n_settings >= 3 ? last : n;
    if (n_settings < 3)
        n_settings = 0;

    parsed_parameters p = {0};
    setting_span *spans = NULL;
    kiln_status st = KILN_ERR_NOMEM;
    p.prompt = malloc(prompt_end + 1);
    p.negative_prompt = malloc(prompt_end + 1);
    spans = malloc((n_settings ? n_settings : 1) * sizeof *spans);
    p.extras = malloc((n_settings ? n_settings : 1) * sizeof *p.extras);
    if (!p.prompt || !p.negative_prompt || !spans || !p.extras) {
        err_set(st, "parameters: cannot allocate for a text of %zu bytes", n);
        goto fail;
    }
    p.prompt[0] = p.negative_prompt[0] = '\0';

    size_t prompt_len = 0, negative_len = 0;
    int negative = 0;
    for (size_t at = 0; at < prompt_end;) {
        const char *line = text + at;
        const char *nl = memchr(line, '\n', prompt_end - at);
        size_t len = nl ? (size_t)(nl - line) : prompt_end - at;
        at += len + 1;
        strip(&line, &len);
        static const char prefix[] = "Negative prompt:";
        if (len >= sizeof prefix - 1 && memcmp(line, prefix, sizeof prefix - 1) == 0) {
            negative = 1;
            line += sizeof prefix - 1;
            len -= sizeof prefix - 1;
            strip(&line, &len);
        }
        if (negative && (negative_len > 0 || len > 0))
            add_line(p.negative_prompt, &negative_len, line, len);
        else if (!negative && (prompt_len > 0 || len > 0))
            add_line(p.prompt, &prompt_len, line, len);
    }

    find_settings(text + last, n - last, n_settings ? spans : NULL);
    for (size_t i = 0; i < n_settings; i++) {
        if (spans[i].value_len == 0) /* A1111 skips these (v[0] fails) */
            continue;
        char *value = setting_value(&spans[i]);
        if (!value) {
            err_set(st, "parameters: cannot allocate a value of %zu bytes", spans[i].value_len);
            goto fail;
        }
        st = apply_setting(&p, &spans[i], value);
        if (st != KILN_OK)
            goto fail;
    }

    st = merge_repeated_extras(&p);
    if (st != KILN_OK)
        goto fail;
    if (p.sampler && sampler_parse(p.sampler, &p.kind, &p.karras) == 0) {
        p.sampler_known = 1;
        for (size_t i = 0; i < p.n_extras; i++)
            if (strcmp(p.extras[i].key, "Schedule type") == 0 && strcmp(p.extras[i].value, "Karras") == 0)
                p.karras = 1;
    }
    free(spans);
    *out = p;
    return KILN_OK;

fail:
    free(spans);
    parsed_parameters_free(&p);
    return st;
}

void parsed_parameters_free(parsed_parameters *p)
{
    free(p->prompt);
    free(p->negative_prompt);
    free(p->sampler);
    free(p->model_hash);
    free(p->model_name);
    for (size_t i = 0; i < p->n_extras; i++) {
        free(p->extras[i].key);
        free(p->extras[i].value);
    }
    free(p->extras);
    memset(p, 0, sizeof *p);
}
