#include "core/tensor.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

static const size_t dtype_sizes[KILN_DTYPE_COUNT] = {
    [KILN_DTYPE_F32] = 4, [KILN_DTYPE_F16] = 2,  [KILN_DTYPE_BF16] = 2,   [KILN_DTYPE_I32] = 4,
    [KILN_DTYPE_F64] = 8, [KILN_DTYPE_I64] = 8,  [KILN_DTYPE_I16] = 2,    [KILN_DTYPE_I8] = 1,
    [KILN_DTYPE_U8] = 1,  [KILN_DTYPE_U16] = 2,  [KILN_DTYPE_U32] = 4,    [KILN_DTYPE_U64] = 8,
    [KILN_DTYPE_BOOL] = 1, [KILN_DTYPE_F8_E4M3] = 1, [KILN_DTYPE_F8_E5M2] = 1,
};

static const char *const dtype_names[KILN_DTYPE_COUNT] = {
    [KILN_DTYPE_F32] = "F32",   [KILN_DTYPE_F16] = "F16",         [KILN_DTYPE_BF16] = "BF16",
    [KILN_DTYPE_I32] = "I32",   [KILN_DTYPE_F64] = "F64",         [KILN_DTYPE_I64] = "I64",
    [KILN_DTYPE_I16] = "I16",   [KILN_DTYPE_I8] = "I8",           [KILN_DTYPE_U8] = "U8",
    [KILN_DTYPE_U16] = "U16",   [KILN_DTYPE_U32] = "U32",         [KILN_DTYPE_U64] = "U64",
    [KILN_DTYPE_BOOL] = "BOOL", [KILN_DTYPE_F8_E4M3] = "F8_E4M3", [KILN_DTYPE_F8_E5M2] = "F8_E5M2",
};

static const char *const layout_names[TENSOR_LAYOUT_COUNT] = {"plain", "nchw", "nhwc"};

_Static_assert(sizeof dtype_sizes / sizeof dtype_sizes[0] == KILN_DTYPE_COUNT, "one size per dtype");
_Static_assert(sizeof dtype_names / sizeof dtype_names[0] == KILN_DTYPE_COUNT, "one name per dtype");
_Static_assert(sizeof layout_names / sizeof layout_names[0] == TENSOR_LAYOUT_COUNT, "one name per layout");

size_t kiln_dtype_size(kiln_dtype dtype)
{
    return (unsigned)dtype < KILN_DTYPE_COUNT ? dtype_sizes[dtype] : 0;
}

const char *kiln_dtype_name(kiln_dtype dtype)
{
    return (unsigned)dtype < KILN_DTYPE_COUNT ? dtype_names[dtype] : "unknown";
}

const char *tensor_layout_name(tensor_layout layout)
{
    return (unsigned)layout < TENSOR_LAYOUT_COUNT ? layout_names[layout] : "unknown";
}

kiln_status tensor_init(tensor *t, kiln_dtype dtype, tensor_layout layout, int ndim,
                        const int64_t *shape, void *data)
{
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS)
        return err_set(KILN_ERR_SHAPE, "tensor with %d dims (at most %d)", ndim, TENSOR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return err_set(KILN_ERR_SHAPE, "tensor dim %d is negative (%lld)", i, (long long)shape[i]);
    if (layout != TENSOR_LAYOUT_PLAIN && ndim != 4)
        return err_set(KILN_ERR_SHAPE, "%s tensor needs 4 dims, got %d", tensor_layout_name(layout), ndim);
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->layout = layout;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof shape[0]);
    t->data = data;
    return KILN_OK;
}

tensor tensor_image(kiln_dtype dtype, tensor_layout layout, int64_t n, int64_t c, int64_t h,
                    int64_t w, void *data)
{
    assert(layout == TENSOR_LAYOUT_NCHW || layout == TENSOR_LAYOUT_NHWC);
    tensor t = {.dtype = dtype, .layout = layout, .ndim = 4, .data = data};
    t.shape[0] = n;
    if (layout == TENSOR_LAYOUT_NCHW) {
        t.shape[1] = c, t.shape[2] = h, t.shape[3] = w;
    } else {
        t.shape[1] = h, t.shape[2] = w, t.shape[3] = c;
    }
    return t;
}

int64_t tensor_numel(const tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t tensor_nbytes(const tensor *t)
{
    return (size_t)tensor_numel(t) * kiln_dtype_size(t->dtype);
}

int64_t tensor_batch(const tensor *t)
{
    assert(t->ndim == 4);
    return t->shape[0];
}

int64_t tensor_channels(const tensor *t)
{
    assert(t->layout == TENSOR_LAYOUT_NCHW || t->layout == TENSOR_LAYOUT_NHWC);
    return t->layout == TENSOR_LAYOUT_NCHW ? t->shape[1] : t->shape[3];
}

int64_t tensor_height(const tensor *t)
{
    assert(t->layout == TENSOR_LAYOUT_NCHW || t->layout == TENSOR_LAYOUT_NHWC);
    return t->layout == TENSOR_LAYOUT_NCHW ? t->shape[2] : t->shape[1];
}

int64_t tensor_width(const tensor *t)
{
    assert(t->layout == TENSOR_LAYOUT_NCHW || t->layout == TENSOR_LAYOUT_NHWC);
    return t->layout == TENSOR_LAYOUT_NCHW ? t->shape[3] : t->shape[2];
}

int tensor_same_shape(const tensor *a, const tensor *b)
{
    if (a->ndim != b->ndim || a->layout != b->layout)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

char *tensor_shape_str(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}
