#include "graph/weight_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/error.h"

/* The prepared form of one source tensor: packed with panel width nr, or
 * (nr == FORM_F32) plainly converted, or (FORM_COPY) copied as it is. */
#define FORM_F32 (-1)
#define FORM_COPY (-2)

typedef struct entry {
    const void *source; /* NULL marks an empty slot */
    int form;
    packed_weights packed;
    void *data;
} entry;

/* Entries are allocated one by one so that the pointers handed out stay
 * valid when the table grows. */
struct weight_cache {
    entry **slots; /* open addressing, power-of-two capacity */
    size_t capacity, used, bytes;
    kiln_dtype pack_dtype;
    weight_release_fn release;
    void *release_ctx;
    tpool *pool; /* packs on it when set */
};

kiln_status weight_cache_create(kiln_dtype pack_dtype, weight_cache **out)
{
    if (pack_dtype != KILN_DTYPE_F32 && pack_dtype != KILN_DTYPE_F16 && pack_dtype != KILN_DTYPE_BF16)
        return err_set(KILN_ERR_INVALID, "weights can be packed as F32, F16 or BF16, not %s",
                       kiln_dtype_name(pack_dtype));
    weight_cache *c = calloc(1, sizeof *c);
    if (c) {
        c->capacity = 1024;
        c->slots = calloc(c->capacity, sizeof *c->slots);
    }
    if (!c || !c->slots) {
        free(c);
        return err_set(KILN_ERR_NOMEM, "cannot allocate a weight cache");
    }
    c->pack_dtype = pack_dtype;
    *out = c;
    return KILN_OK;
}

void weight_cache_destroy(weight_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->capacity; i++)
        if (c->slots[i]) {
            free(c->slots[i]->data);
            free(c->slots[i]);
        }
    free(c->slots);
    free(c);
}

void weight_cache_set_release(weight_cache *c, weight_release_fn fn, void *ctx)
{
    c->release = fn;
    c->release_ctx = ctx;
}

void weight_cache_set_pool(weight_cache *c, tpool *pool)
{
    c->pool = pool;
}

size_t weight_cache_bytes(const weight_cache *c)
{
    return c->bytes;
}

/* The slot holding (source, form), or the empty slot where it belongs. */
static entry **slot_for(weight_cache *c, const void *source, int form)
{
    size_t mask = c->capacity - 1;
    uint64_t h = ((uint64_t)(uintptr_t)source * 0x9E3779B97F4A7C15ull) ^ (uint64_t)(form + 7);
    for (size_t i = (size_t)(h >> 17) & mask;; i = (i + 1) & mask) {
        entry **e = &c->slots[i];
        if (!*e || ((*e)->source == source && (*e)->form == form))
            return e;
    }
}

/* Makes room for one more entry (keeps the table under 3/4 full). */
static kiln_status reserve(weight_cache *c)
{
    if ((c->used + 1) * 4 <= c->capacity * 3)
        return KILN_OK;
    entry **old = c->slots;
    size_t old_capacity = c->capacity;
    c->slots = calloc(old_capacity * 2, sizeof *c->slots);
    if (!c->slots) {
        c->slots = old;
        return err_set(KILN_ERR_NOMEM, "cannot grow the weight cache");
    }
    c->capacity = old_capacity * 2;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i])
            *slot_for(c, old[i]->source, old[i]->form) = old[i];
    free(old);
    return KILN_OK;
}

static kiln_status check_dtype(const tensor *w)
{
    if (w->dtype != KILN_DTYPE_F32 && w->dtype != KILN_DTYPE_F16 && w->dtype != KILN_DTYPE_BF16)
        return err_set(KILN_ERR_UNSUPPORTED, "weights must be F32, F16 or BF16, not %s", kiln_dtype_name(w->dtype));
    return KILN_OK;
}

static void *allocate(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0)
        return NULL;
    return p;
}

/* A new entry for (source, form) owning data, placed in the table. */
static entry *insert(weight_cache *c, const void *source, int form, void *data, size_t bytes)
{
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->source = source;
    e->form = form;
    e->data = data;
    *slot_for(c, source, form) = e;
    c->used++;
    c->bytes += bytes;
    return e;
}

/* The new, still empty entry for w in the given form, with bytes of data
 * allocated. */
static kiln_status add_entry(weight_cache *c, const tensor *w, int form, size_t bytes, entry **out)
{
    kiln_status st = check_dtype(w);
    if (st == KILN_OK)
        st = reserve(c);
    if (st != KILN_OK)
        return st;
    void *data = allocate(bytes);
    *out = data ? insert(c, w->data, form, data, bytes) : NULL;
    if (!*out) {
        free(data);
        char shape[96];
        return err_set(KILN_ERR_NOMEM, "cannot allocate %zu bytes for %s of the weight %s", bytes,
                       form == FORM_F32 ? "an F32 copy" : form == FORM_COPY ? "a copy" : "the packed form",
                       tensor_shape_str(w->shape, w->ndim, shape, sizeof shape));
    }
    return KILN_OK;
}

typedef struct pack_job {
    const tensor *w;
    kiln_dtype dtype;
    int nr;
    int64_t n, k, taps;
    void *data;
} pack_job;

static void pack_columns(void *ctx, int64_t begin, int64_t end, int thread)
{
    const pack_job *j = ctx;
    (void)thread;
    kernels_pack_weights_columns(j->w->data, j->w->dtype, j->dtype, j->nr, j->n, j->k, j->taps, begin, end, j->data);
}

kiln_status weight_cache_packed(weight_cache *c, const tensor *w, int64_t n, int64_t k, int64_t taps, int nr,
                                const packed_weights **out)
{
    entry **found = slot_for(c, w->data, nr);
    if (*found) {
        *out = &(*found)->packed;
        return KILN_OK;
    }
    size_t bytes = kernels_packed_elements(nr, n, k, taps) * kiln_dtype_size(c->pack_dtype);
    entry *e;
    kiln_status st = add_entry(c, w, nr, bytes, &e);
    if (st != KILN_OK)
        return st;
    pack_job job = {.w = w, .dtype = c->pack_dtype, .nr = nr, .n = n, .k = k, .taps = taps, .data = e->data};
    /* on the pool, a few panels a chunk: SD 1.5's UNet (3.4 GB as f32)
     * took 5-7 s to pack on one thread */
    int64_t panel = nr > 0 ? nr : 1;
    tpool_for(c->pool, kernels_packed_columns(nr, n), 4 * panel, TPOOL_DYNAMIC, pack_columns, &job);
    if (c->release)
        c->release(c->release_ctx, w->data, tensor_nbytes(w));
    e->packed = (packed_weights){.nr = nr, .dtype = c->pack_dtype, .n = n, .k = k, .taps = taps, .data = e->data};
    *out = &e->packed;
    return KILN_OK;
}

kiln_status weight_cache_f32(weight_cache *c, const tensor *w, const float **out)
{
    entry **found = slot_for(c, w->data, FORM_F32);
    if (*found) {
        *out = (*found)->data;
        return KILN_OK;
    }
    size_t n = (size_t)tensor_numel(w);
    entry *e;
    kiln_status st = add_entry(c, w, FORM_F32, n * sizeof(float), &e);
    if (st != KILN_OK)
        return st;
    float *data = e->data;
    const kernel_table *k = kernels_get();
    if (w->dtype == KILN_DTYPE_F32)
        memcpy(data, w->data, n * sizeof(float));
    else if (w->dtype == KILN_DTYPE_F16)
        k->f16_to_f32(w->data, data, n);
    else
        k->bf16_to_f32(w->data, data, n);
    if (c->release)
        c->release(c->release_ctx, w->data, n * kiln_dtype_size(w->dtype));
    *out = data;
    return KILN_OK;
}

kiln_status weight_cache_copy(weight_cache *c, const tensor *w, const void **out)
{
    entry **found = slot_for(c, w->data, FORM_COPY);
    if (*found) {
        *out = (*found)->data;
        return KILN_OK;
    }
    size_t bytes = tensor_nbytes(w);
    entry *e;
    kiln_status st = add_entry(c, w, FORM_COPY, bytes, &e);
    if (st != KILN_OK)
        return st;
    void *data = e->data;
    memcpy(data, w->data, bytes);
    if (c->release)
        c->release(c->release_ctx, w->data, bytes);
    *out = data;
    return KILN_OK;
}
