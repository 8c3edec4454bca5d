/*
 * safetensors.c - opening and validating safetensors weight files.
 *
 * The format: an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]},
 * ..., "__metadata__": {"key": "value"}}), then the data section, which the
 * tensors must cover exactly, without overlaps or holes. Everything is
 * checked here, once, before any caller touches a byte of tensor data; a
 * file that opens is safe to read anywhere its descriptors say.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/kernels.h"
#include "kiln.h"

/* The reference implementation refuses headers over 100 MB; a real SD
 * checkpoint's header is a few hundred KB. */
#define HEADER_MAX_BYTES (100u * 1024 * 1024)

/* Room for a tensor name, dtype or metadata key quoted in a message. */
#define NAME_SHOWN 160

struct kiln_weights {
    char *path;
    mapped_file file;
    uint64_t data_start; /* 8 + header length */
    json_t *header;      /* keeps the name and metadata strings alive */

    size_t count;
    kiln_tensor_desc *tensors; /* in data order */
    const kiln_tensor_desc **by_name; /* the same, sorted by name */

    size_t meta_count;
    const char **meta_keys, **meta_values;
};

static const struct {
    const char *name;
    kiln_dtype dtype;
} dtype_by_name[] = {
    {"F32", KILN_DTYPE_F32},   {"F16", KILN_DTYPE_F16},         {"BF16", KILN_DTYPE_BF16},
    {"I32", KILN_DTYPE_I32},   {"F64", KILN_DTYPE_F64},         {"I64", KILN_DTYPE_I64},
    {"I16", KILN_DTYPE_I16},   {"I8", KILN_DTYPE_I8},           {"U8", KILN_DTYPE_U8},
    {"U16", KILN_DTYPE_U16},   {"U32", KILN_DTYPE_U32},         {"U64", KILN_DTYPE_U64},
    {"BOOL", KILN_DTYPE_BOOL}, {"F8_E4M3", KILN_DTYPE_F8_E4M3}, {"F8_E5M2", KILN_DTYPE_F8_E5M2},
};

static int parse_dtype(const char *name, kiln_dtype *out)
{
    for (size_t i = 0; i < sizeof dtype_by_name / sizeof dtype_by_name[0]; i++)
        if (strcmp(name, dtype_by_name[i].name) == 0) {
            *out = dtype_by_name[i].dtype;
            return 0;
        }
    return -1;
}

/* A string from the header as it goes into a message: control characters
 * become \xNN, so that the message stays on one line whatever the file holds,
 * and a long string is cut (at a character boundary) with "...". */
static const char *printable(const char *s, char *buf, size_t size)
{
    size_t out = 0;
    for (; *s && out + 8 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            out += (size_t)snprintf(buf + out, size - out, "\\x%02x", c);
        else
            buf[out++] = (char)c;
    }
    if (*s) {
        /* bytes >= 0x80 are copied as they are: back off a partial character */
        while (out > 0 && ((unsigned char)*s & 0xC0) == 0x80) {
            out--;
            s--;
        }
        memcpy(buf + out, "...", 4);
    } else {
        buf[out] = '\0';
    }
    return buf;
}

/* Where a tensor's entry starts in the file, for messages: the first place
 * its quoted name appears in the header (names with JSON escapes are not
 * found, and the header's start is given instead). */
static uint64_t entry_offset(const kiln_weights *w, const char *name)
{
    size_t name_len = strlen(name);
    const unsigned char *header = w->file.data + 8;
    size_t header_len = (size_t)(w->data_start - 8);
    for (size_t i = 0; i + name_len + 2 <= header_len; i++)
        if (header[i] == '"' && header[i + name_len + 1] == '"' &&
            memcmp(header + i + 1, name, name_len) == 0)
            return 8 + i;
    return 8;
}

static kiln_status entry_error(const kiln_weights *w, const char *name, const char *what)
{
    char shown[NAME_SHOWN];
    return err_set(KILN_ERR_FORMAT, "%s: tensor '%s' (header byte %llu): %s", w->path,
                   printable(name, shown, sizeof shown), (unsigned long long)entry_offset(w, name), what);
}

static int read_u64(json_t *value, uint64_t *out)
{
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(value);
    return 0;
}

static void format_shape(const kiln_tensor_desc *t, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static kiln_status parse_entry(kiln_weights *w, const char *name, json_t *entry, kiln_tensor_desc *t)
{
    char why[320];
    if (!json_is_object(entry))
        return entry_error(w, name, "entry is not a JSON object");

    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype))
        return entry_error(w, name, "'dtype' is missing or not a string");
    if (parse_dtype(json_string_value(dtype), &t->dtype) != 0) {
        char shown[48];
        snprintf(why, sizeof why, "unknown dtype '%s'", printable(json_string_value(dtype), shown, sizeof shown));
        return entry_error(w, name, why);
    }

    json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape))
        return entry_error(w, name, "'shape' is missing or not an array");
    if (json_array_size(shape) > KILN_MAX_FILE_DIMS) {
        snprintf(why, sizeof why, "shape has %zu dims (kiln reads at most %d)", json_array_size(shape),
                 KILN_MAX_FILE_DIMS);
        return entry_error(w, name, why);
    }
    t->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    int overflow = 0, empty = 0;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t dim;
        if (read_u64(json_array_get(shape, (size_t)i), &dim) != 0) {
            snprintf(why, sizeof why, "shape dim %d is not a non-negative integer", i);
            return entry_error(w, name, why);
        }
        t->shape[i] = (int64_t)dim;
        if (dim == 0)
            empty = 1;
        else if (numel > UINT64_MAX / dim)
            overflow = 1;
        else
            numel *= dim;
    }
    if (empty) { /* a zero anywhere makes the product 0, whatever came before it */
        numel = 0;
        overflow = 0;
    }

    json_t *offsets = json_object_get(entry, "data_offsets");
    uint64_t begin, end;
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        read_u64(json_array_get(offsets, 0), &begin) != 0 || read_u64(json_array_get(offsets, 1), &end) != 0)
        return entry_error(w, name, "'data_offsets' must be [begin, end] with non-negative integers");
    if (end < begin) {
        snprintf(why, sizeof why, "data_offsets [%llu, %llu) end before they begin", (unsigned long long)begin,
                 (unsigned long long)end);
        return entry_error(w, name, why);
    }

    uint64_t elem = kiln_dtype_size(t->dtype);
    if (overflow || numel > UINT64_MAX / elem || numel * elem != end - begin) {
        char shape_text[200], need[40]; /* 8 dims of 19 digits fit */
        format_shape(t, shape_text, sizeof shape_text);
        if (overflow || numel > UINT64_MAX / elem)
            snprintf(need, sizeof need, "more than 2^64");
        else
            snprintf(need, sizeof need, "%llu", (unsigned long long)(numel * elem));
        snprintf(why, sizeof why, "shape %s of %s needs %s bytes but data_offsets give %llu", shape_text,
                 kiln_dtype_name(t->dtype), need, (unsigned long long)(end - begin));
        return entry_error(w, name, why);
    }

    uint64_t data_size = w->file.size - w->data_start;
    if (end > data_size) {
        snprintf(why, sizeof why, "data [%llu, %llu) runs past the end of the file (data section holds %llu bytes)",
                 (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
        return entry_error(w, name, why);
    }
    t->name = name;
    t->offset = w->data_start + begin;
    t->nbytes = end - begin;
    return KILN_OK;
}

/* Data order; empty tensors sharing an offset go by name, so that the order
 * does not depend on qsort's. */
static int compare_offset(const void *a, const void *b)
{
    const kiln_tensor_desc *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int compare_name(const void *a, const void *b)
{
    const kiln_tensor_desc *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static kiln_status parse_metadata(kiln_weights *w, json_t *meta)
{
    if (!json_is_object(meta))
        return err_set(KILN_ERR_FORMAT, "%s: '__metadata__' (header byte %llu) is not an object of strings",
                       w->path, (unsigned long long)entry_offset(w, "__metadata__"));
    size_t n = json_object_size(meta);
    w->meta_keys = calloc(n ? n : 1, sizeof *w->meta_keys);
    w->meta_values = calloc(n ? n : 1, sizeof *w->meta_values);
    if (!w->meta_keys || !w->meta_values)
        return err_set(KILN_ERR_NOMEM, "%s: cannot allocate metadata", w->path);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value)) {
            char shown[NAME_SHOWN];
            return err_set(KILN_ERR_FORMAT, "%s: '__metadata__' (header byte %llu): value of '%s' is not a string",
                           w->path, (unsigned long long)entry_offset(w, "__metadata__"),
                           printable(key, shown, sizeof shown));
        }
        w->meta_keys[w->meta_count] = key;
        w->meta_values[w->meta_count] = json_string_value(value);
        w->meta_count++;
    }
    return KILN_OK;
}

/* The data section must be covered exactly: sorted by offset, each tensor
 * starts where the previous ended, and the last ends at the end of the file.
 * Overlaps would let two tensors alias; holes and trailing bytes are how
 * polyglot files hide a second payload (the format forbids both). */
static kiln_status check_coverage(kiln_weights *w)
{
    char shown[NAME_SHOWN], shown_prev[NAME_SHOWN];
    uint64_t expected = w->data_start;
    for (size_t i = 0; i < w->count; i++) {
        const kiln_tensor_desc *t = &w->tensors[i];
        if (t->offset < expected) {
            const kiln_tensor_desc *prev = &w->tensors[i - 1];
            return err_set(KILN_ERR_FORMAT,
                           "%s: tensor '%s' (data at byte %llu) overlaps tensor '%s' (bytes %llu to %llu)", w->path,
                           printable(t->name, shown, sizeof shown), (unsigned long long)t->offset,
                           printable(prev->name, shown_prev, sizeof shown_prev), (unsigned long long)prev->offset,
                           (unsigned long long)(prev->offset + prev->nbytes));
        }
        if (t->offset > expected)
            return err_set(KILN_ERR_FORMAT, "%s: bytes %llu to %llu of the file, in the data section, belong to no "
                           "tensor (before '%s')", w->path, (unsigned long long)expected,
                           (unsigned long long)t->offset, printable(t->name, shown, sizeof shown));
        expected = t->offset + t->nbytes;
    }
    if (expected != w->file.size)
        return err_set(KILN_ERR_FORMAT, "%s: bytes %llu to %llu at the end of the file belong to no tensor", w->path,
                       (unsigned long long)expected, (unsigned long long)w->file.size);
    return KILN_OK;
}

static kiln_status parse_header(kiln_weights *w)
{
    const unsigned char *bytes = w->file.data;
    uint64_t size = w->file.size;
    if (size < 8)
        return err_set(KILN_ERR_FORMAT, "%s: file is %llu bytes; a safetensors file starts with an 8-byte header length",
                       w->path, (unsigned long long)size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | bytes[i];
    if (header_len > HEADER_MAX_BYTES)
        return err_set(KILN_ERR_FORMAT, "%s: header length %llu at byte 0 is over the limit of %u bytes", w->path,
                       (unsigned long long)header_len, HEADER_MAX_BYTES);
    if (header_len > size - 8)
        return err_set(KILN_ERR_FORMAT, "%s: header length %llu at byte 0 runs past the end of the file (%llu bytes)",
                       w->path, (unsigned long long)header_len, (unsigned long long)size);
    if (header_len < 2)
        return err_set(KILN_ERR_FORMAT, "%s: header length %llu at byte 0 is too short for a JSON object", w->path,
                       (unsigned long long)header_len);
    if (bytes[8] != '{')
        return err_set(KILN_ERR_FORMAT, "%s: header at byte 8 does not start with '{'", w->path);
    w->data_start = 8 + header_len;

    json_error_t jerr;
    w->header = json_loadb((const char *)bytes + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!w->header) {
        /* jansson quotes the bytes near the error ("near '...'") as they are */
        char shown[4 * JSON_ERROR_TEXT_LENGTH + 8];
        return err_set(KILN_ERR_FORMAT, "%s: header JSON at byte %llu: %s", w->path,
                       (unsigned long long)(8 + (jerr.position > 0 ? (uint64_t)jerr.position : 0)),
                       printable(jerr.text, shown, sizeof shown));
    }
    if (!json_is_object(w->header))
        return err_set(KILN_ERR_FORMAT, "%s: header at byte 8 is not a JSON object", w->path);

    size_t entries = json_object_size(w->header);
    w->tensors = calloc(entries ? entries : 1, sizeof *w->tensors);
    if (!w->tensors)
        return err_set(KILN_ERR_NOMEM, "%s: cannot allocate %zu tensor entries", w->path, entries);

    const char *name;
    json_t *entry;
    json_object_foreach(w->header, name, entry) {
        kiln_status st;
        if (strcmp(name, "__metadata__") == 0)
            st = parse_metadata(w, entry);
        else
            st = parse_entry(w, name, entry, &w->tensors[w->count++]);
        if (st != KILN_OK)
            return st;
    }

    qsort(w->tensors, w->count, sizeof *w->tensors, compare_offset);
    kiln_status st = check_coverage(w);
    if (st != KILN_OK)
        return st;

    w->by_name = malloc((w->count ? w->count : 1) * sizeof *w->by_name);
    if (!w->by_name)
        return err_set(KILN_ERR_NOMEM, "%s: cannot allocate the name index", w->path);
    for (size_t i = 0; i < w->count; i++)
        w->by_name[i] = &w->tensors[i];
    qsort(w->by_name, w->count, sizeof *w->by_name, compare_name);
    return KILN_OK;
}

kiln_status kiln_weights_open(const char *path, kiln_weights **out)
{
    kiln_weights *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(KILN_ERR_NOMEM, "%s: cannot allocate", path);
    kiln_status st = KILN_ERR_NOMEM;
    w->path = strdup(path);
    if (!w->path) {
        err_set(st, "%s: cannot allocate", path);
        goto fail;
    }
    st = mapped_file_open(&w->file, path);
    if (st != KILN_OK)
        goto fail;
    st = parse_header(w);
    if (st != KILN_OK)
        goto fail;
    *out = w;
    return KILN_OK;

fail:
    kiln_weights_destroy(w);
    return st;
}

void kiln_weights_destroy(kiln_weights *w)
{
    if (!w)
        return;
    free(w->by_name);
    free(w->tensors);
    free(w->meta_keys);
    free(w->meta_values);
    json_decref(w->header);
    mapped_file_close(&w->file);
    free(w->path);
    free(w);
}

void kiln_weights_drop_pages(kiln_weights *w)
{
    mapped_file_drop_pages(&w->file);
}

int kiln_weights_drop_range(kiln_weights *w, const void *p, size_t bytes)
{
    return mapped_file_drop_range(&w->file, p, bytes);
}

kiln_status kiln_weights_check(const kiln_weights *w)
{
    return mapped_file_check(&w->file, w->path);
}

const char *kiln_weights_path(const kiln_weights *w)
{
    return w->path;
}

uint64_t kiln_weights_file_size(const kiln_weights *w)
{
    return w->file.size;
}

size_t kiln_weights_count(const kiln_weights *w)
{
    return w->count;
}

const kiln_tensor_desc *kiln_weights_tensor(const kiln_weights *w, size_t index)
{
    return index < w->count ? &w->tensors[index] : NULL;
}

const kiln_tensor_desc *kiln_weights_find(const kiln_weights *w, const char *name)
{
    size_t lo = 0, hi = w->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(w->by_name[mid]->name, name);
        if (c == 0)
            return w->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const void *kiln_weights_data(const kiln_weights *w, const kiln_tensor_desc *t)
{
    return w->file.data + t->offset;
}

size_t kiln_weights_metadata_count(const kiln_weights *w)
{
    return w->meta_count;
}

void kiln_weights_metadata(const kiln_weights *w, size_t index, const char **key, const char **value)
{
    *key = index < w->meta_count ? w->meta_keys[index] : NULL;
    *value = index < w->meta_count ? w->meta_values[index] : NULL;
}

const char *kiln_weights_metadata_get(const kiln_weights *w, const char *key)
{
    for (size_t i = 0; i < w->meta_count; i++)
        if (strcmp(w->meta_keys[i], key) == 0)
            return w->meta_values[i];
    return NULL;
}

/* Converts 16-bit values that may sit at any byte offset in the file (a
 * header length that is not a multiple of 2 misaligns them): aligned runs go
 * straight to the kernel, misaligned ones through a small aligned buffer. */
static void convert_16bit(void (*convert)(const uint16_t *, float *, size_t), const unsigned char *src,
                          float *dst, size_t count)
{
    if (((uintptr_t)src & 1) == 0) {
        convert((const uint16_t *)(const void *)src, dst, count);
        return;
    }
    uint16_t staging[1024];
    for (size_t done = 0; done < count;) {
        size_t n = count - done < 1024 ? count - done : 1024;
        memcpy(staging, src + 2 * done, 2 * n);
        convert(staging, dst + done, n);
        done += n;
    }
}

kiln_status kiln_weights_read_f32(const kiln_weights *w, const kiln_tensor_desc *t, float *dst, size_t count)
{
    /* nbytes is a whole number of elements (checked at open); comparing
     * counts, not count * size, keeps a huge count from wrapping into a match */
    size_t elem = kiln_dtype_size(t->dtype);
    char shown[NAME_SHOWN];
    if ((uint64_t)count != t->nbytes / elem)
        return err_set(KILN_ERR_SHAPE, "%s: tensor '%s' has %llu elements, caller expected %zu", w->path,
                       printable(t->name, shown, sizeof shown), (unsigned long long)(t->nbytes / elem), count);
    const unsigned char *src = w->file.data + t->offset;
    const kernel_table *k = kernels_get();
    switch (t->dtype) {
    case KILN_DTYPE_F32:
        if (count > 0) /* dst may be NULL for an empty tensor; memcpy's may not */
            memcpy(dst, src, count * sizeof *dst);
        return KILN_OK;
    case KILN_DTYPE_F16:
        convert_16bit(k->f16_to_f32, src, dst, count);
        return KILN_OK;
    case KILN_DTYPE_BF16:
        convert_16bit(k->bf16_to_f32, src, dst, count);
        return KILN_OK;
    default:
        return err_set(KILN_ERR_UNSUPPORTED, "%s: tensor '%s' is %s; kiln reads F32, F16 and BF16 weights", w->path,
                       printable(t->name, shown, sizeof shown), kiln_dtype_name(t->dtype));
    }
}
