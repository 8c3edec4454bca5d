#include "models/weight_store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/error.h"

#define MAX_FILES 8
#define NAME_MAX_LEN 256

typedef struct prepared {
    char *name; /* canonical; NULL marks an empty slot */
    weight_kind kind;
    tensor t;
    void *owned; /* an aligned copy, or NULL when t.data points into the file */
} prepared;

struct weight_store {
    kiln_weights *files[MAX_FILES];
    weight_name_map maps[MAX_FILES];
    int n_files;

    char **meta_keys, **meta_values; /* set by wstore_set_metadata */

    /* recorder mode: what was asked for, in order */
    int recording;
    struct recorded {
        char *name;
        int ndim;
        int64_t shape[4];
    } *records;
    size_t n_records, records_capacity;

    size_t meta_count;

    prepared *slots; /* open addressing, power-of-two capacity */
    size_t capacity, used;
    size_t copied_bytes;
};

kiln_status wstore_create(weight_store **out)
{
    weight_store *ws = calloc(1, sizeof *ws);
    if (!ws)
        return err_set(KILN_ERR_NOMEM, "cannot allocate a weight store");
    ws->capacity = 1024;
    ws->slots = calloc(ws->capacity, sizeof *ws->slots);
    if (!ws->slots) {
        free(ws);
        return err_set(KILN_ERR_NOMEM, "cannot allocate a weight store");
    }
    *out = ws;
    return KILN_OK;
}

kiln_status wstore_add_file(weight_store *ws, kiln_weights *w, weight_name_map map)
{
    if (ws->n_files == MAX_FILES) {
        kiln_weights_destroy(w);
        return err_set(KILN_ERR_INVALID, "a model can have at most %d weight files", MAX_FILES);
    }
    ws->files[ws->n_files] = w;
    ws->maps[ws->n_files] = map;
    ws->n_files++;
    return KILN_OK;
}

void wstore_destroy(weight_store *ws)
{
    if (!ws)
        return;
    for (size_t i = 0; i < ws->capacity; i++) {
        free(ws->slots[i].name);
        free(ws->slots[i].owned);
    }
    free(ws->slots);
    for (size_t i = 0; i < ws->meta_count; i++) {
        free(ws->meta_keys[i]);
        free(ws->meta_values[i]);
    }
    free(ws->meta_keys);
    free(ws->meta_values);
    for (size_t i = 0; i < ws->n_records; i++)
        free(ws->records[i].name);
    free(ws->records);
    for (int i = 0; i < ws->n_files; i++)
        kiln_weights_destroy(ws->files[i]);
    free(ws);
}

static const kiln_tensor_desc *find_in(const weight_store *ws, const char *canonical, int *file)
{
    char mapped[NAME_MAX_LEN];
    for (int i = 0; i < ws->n_files; i++) {
        const char *name = canonical;
        if (ws->maps[i]) {
            if (!ws->maps[i](ws->files[i], canonical, mapped, sizeof mapped))
                continue;
            name = mapped;
        }
        const kiln_tensor_desc *t = kiln_weights_find(ws->files[i], name);
        if (t) {
            *file = i;
            return t;
        }
    }
    return NULL;
}

const kiln_tensor_desc *wstore_find(const weight_store *ws, const char *canonical)
{
    int file;
    return find_in(ws, canonical, &file);
}

kiln_status wstore_set_metadata(weight_store *ws, const char *key, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return err_set(KILN_ERR_NOMEM, "cannot allocate metadata");
    for (size_t i = 0; i < ws->meta_count; i++)
        if (strcmp(ws->meta_keys[i], key) == 0) {
            free(ws->meta_values[i]);
            ws->meta_values[i] = copy;
            return KILN_OK;
        }
    char **keys = realloc(ws->meta_keys, (ws->meta_count + 1) * sizeof *keys);
    if (keys)
        ws->meta_keys = keys;
    char **values = realloc(ws->meta_values, (ws->meta_count + 1) * sizeof *values);
    if (values)
        ws->meta_values = values;
    char *key_copy = strdup(key);
    if (!keys || !values || !key_copy) {
        free(copy);
        free(key_copy);
        return err_set(KILN_ERR_NOMEM, "cannot allocate metadata");
    }
    ws->meta_keys[ws->meta_count] = key_copy;
    ws->meta_values[ws->meta_count] = copy;
    ws->meta_count++;
    return KILN_OK;
}

const char *wstore_metadata(const weight_store *ws, const char *key)
{
    for (size_t i = 0; i < ws->meta_count; i++)
        if (strcmp(ws->meta_keys[i], key) == 0)
            return ws->meta_values[i];
    for (int i = 0; i < ws->n_files; i++) {
        const char *v = kiln_weights_metadata_get(ws->files[i], key);
        if (v)
            return v;
    }
    return NULL;
}

void wstore_drop_file_pages(weight_store *ws)
{
    for (int i = 0; i < ws->n_files; i++)
        kiln_weights_drop_pages(ws->files[i]);
}

kiln_status wstore_check_files(const weight_store *ws)
{
    for (int i = 0; i < ws->n_files; i++) {
        kiln_status st = kiln_weights_check(ws->files[i]);
        if (st != KILN_OK)
            return st;
    }
    return KILN_OK;
}

void wstore_drop_range(weight_store *ws, const void *p, size_t bytes)
{
    for (int i = 0; i < ws->n_files; i++)
        if (kiln_weights_drop_range(ws->files[i], p, bytes))
            return;
}

size_t wstore_copied_bytes(const weight_store *ws)
{
    return ws->copied_bytes;
}

static uint64_t hash_name(const char *s, weight_kind kind)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static prepared *slot_for(weight_store *ws, const char *name, weight_kind kind)
{
    size_t mask = ws->capacity - 1;
    for (size_t i = hash_name(name, kind) & mask;; i = (i + 1) & mask) {
        prepared *p = &ws->slots[i];
        if (!p->name || (p->kind == kind && strcmp(p->name, name) == 0))
            return p;
    }
}

static kiln_status grow(weight_store *ws)
{
    size_t old_capacity = ws->capacity;
    prepared *old = ws->slots;
    ws->slots = calloc(old_capacity * 2, sizeof *ws->slots);
    if (!ws->slots) {
        ws->slots = old;
        return err_set(KILN_ERR_NOMEM, "cannot grow the weight store");
    }
    ws->capacity = old_capacity * 2;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].name)
            *slot_for(ws, old[i].name, old[i].kind) = old[i];
    free(old);
    return KILN_OK;
}

static void shape_text(const int64_t *shape, int ndim, char *buf, size_t size)
{
    tensor_shape_str(shape, ndim, buf, size);
}

kiln_status wstore_create_recorder(weight_store **out)
{
    kiln_status st = wstore_create(out);
    if (st == KILN_OK)
        (*out)->recording = 1;
    return st;
}

size_t wstore_recorded_count(const weight_store *ws)
{
    return ws->n_records;
}

void wstore_recorded(const weight_store *ws, size_t index, const char **name, int *ndim, int64_t shape[4])
{
    const struct recorded *r = &ws->records[index];
    *name = r->name;
    *ndim = r->ndim;
    memcpy(shape, r->shape, sizeof r->shape);
}

/* Recorder mode: note the tensor (once) and hand out a placeholder. */
static kiln_status record(weight_store *ws, const char *canonical, weight_kind kind, int ndim, const int64_t *shape,
                          tensor *out)
{
    static float placeholder[1];
    if (ndim < 1 || ndim > 4)
        return err_set(KILN_ERR_SHAPE, "recording tensor '%s': %d dims", canonical, ndim);
    size_t i = 0;
    while (i < ws->n_records && strcmp(ws->records[i].name, canonical) != 0)
        i++;
    if (i == ws->n_records) {
        if (ws->n_records == ws->records_capacity) {
            size_t capacity = ws->records_capacity ? 2 * ws->records_capacity : 256;
            struct recorded *grown = realloc(ws->records, capacity * sizeof *grown);
            if (!grown)
                return err_set(KILN_ERR_NOMEM, "cannot record tensor '%s'", canonical);
            ws->records = grown;
            ws->records_capacity = capacity;
        }
        struct recorded *r = &ws->records[ws->n_records];
        r->name = strdup(canonical);
        if (!r->name)
            return err_set(KILN_ERR_NOMEM, "cannot record tensor '%s'", canonical);
        r->ndim = ndim;
        memset(r->shape, 0, sizeof r->shape);
        memcpy(r->shape, shape, (size_t)ndim * sizeof *shape);
        ws->n_records++;
    }
    return tensor_init(out, KILN_DTYPE_F32, TENSOR_LAYOUT_PLAIN, ndim, shape, placeholder);
}

kiln_status wstore_get(weight_store *ws, const char *canonical, weight_kind kind, int ndim,
                       const int64_t *shape, tensor *out)
{
    if (ws->recording)
        return record(ws, canonical, kind, ndim, shape, out);
    prepared *slot = slot_for(ws, canonical, kind);
    if (slot->name) {
        *out = slot->t;
        return KILN_OK;
    }

    char want[128], have[128];
    shape_text(shape, ndim, want, sizeof want);
    int file;
    const kiln_tensor_desc *d = find_in(ws, canonical, &file);
    if (!d)
        return err_set(KILN_ERR_FORMAT, "missing tensor '%s' (expected %s)", canonical, want);
    shape_text(d->shape, d->ndim, have, sizeof have);

    int64_t want_numel = 1;
    for (int i = 0; i < ndim; i++)
        want_numel *= shape[i];
    int64_t have_numel = 1;
    for (int i = 0; i < d->ndim; i++)
        have_numel *= d->shape[i];
    int same = d->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = d->shape[i] == shape[i];
    if (kind == WEIGHT_CONV ? !same : have_numel != want_numel)
        return err_set(KILN_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s",
                       kiln_weights_path(ws->files[file]), d->name, have, want);
    if (d->dtype != KILN_DTYPE_F32 && d->dtype != KILN_DTYPE_F16 && d->dtype != KILN_DTYPE_BF16)
        return err_set(KILN_ERR_UNSUPPORTED, "%s: tensor '%s' is %s; weights must be F32, F16 or BF16",
                       kiln_weights_path(ws->files[file]), d->name, kiln_dtype_name(d->dtype));

    const kiln_weights *w = ws->files[file];
    const void *data = kiln_weights_data(w, d);
    void *owned = NULL;
    size_t elem = kiln_dtype_size(d->dtype);
    if ((uintptr_t)data % elem != 0) {
        /* the header's length left this tensor misaligned for its type */
        size_t bytes = (size_t)d->nbytes;
        if (posix_memalign(&owned, ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0)
            return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes for tensor '%s'", bytes, d->name);
        memcpy(owned, data, bytes);
        data = owned;
        ws->copied_bytes += bytes;
    }
    tensor t;
    tensor_init(&t, d->dtype, TENSOR_LAYOUT_PLAIN, ndim, shape, (void *)data);

    if ((ws->used + 1) * 4 > ws->capacity * 3) {
        kiln_status st = grow(ws);
        if (st != KILN_OK) {
            free(owned);
            return st;
        }
        slot = slot_for(ws, canonical, kind);
    }
    slot->name = strdup(canonical);
    if (!slot->name) {
        free(owned);
        return err_set(KILN_ERR_NOMEM, "cannot allocate a tensor name");
    }
    slot->kind = kind;
    slot->t = t;
    slot->owned = owned;
    ws->used++;
    *out = t;
    return KILN_OK;
}
