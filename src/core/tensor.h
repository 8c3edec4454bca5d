/*
 * tensor.h - a view of n-dimensional data: dtype, up to 4 dims, a layout tag.
 *
 * A tensor does not own its data: weights live in the mapped file, activations
 * in an arena. shape[] is in memory order, outermost first, and the layout tag
 * says what the dims mean: an NHWC image is shape {N, H, W, C}, an NCHW one
 * {N, C, H, W}. Contiguous, row-major.
 */
#ifndef KILN_CORE_TENSOR_H
#define KILN_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define TENSOR_MAX_DIMS 4

typedef enum tensor_layout {
    TENSOR_LAYOUT_PLAIN, /* no image meaning: vectors, matrices, token x channel */
    TENSOR_LAYOUT_NCHW,
    TENSOR_LAYOUT_NHWC,
    TENSOR_LAYOUT_COUNT
} tensor_layout;

typedef struct tensor {
    kiln_dtype dtype;
    tensor_layout layout;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    void *data; /* borrowed */
} tensor;

/* Describes data with the given shape (ndim <= TENSOR_MAX_DIMS, dims >= 0).
 * Errors: KILN_ERR_SHAPE for too many dims or a negative dim. */
kiln_status tensor_init(tensor *t, kiln_dtype dtype, tensor_layout layout, int ndim,
                        const int64_t *shape, void *data);

/* Four-dim image tensor in the given layout from logical sizes. */
tensor tensor_image(kiln_dtype dtype, tensor_layout layout, int64_t n, int64_t c, int64_t h,
                    int64_t w, void *data);

int64_t tensor_numel(const tensor *t);
size_t tensor_nbytes(const tensor *t);

/* Logical image sizes of a 4-dim NCHW or NHWC tensor. */
int64_t tensor_batch(const tensor *t);
int64_t tensor_channels(const tensor *t);
int64_t tensor_height(const tensor *t);
int64_t tensor_width(const tensor *t);

int tensor_same_shape(const tensor *a, const tensor *b);

/* "[2, 64, 64, 320]" into buf (always terminated); returns buf. */
char *tensor_shape_str(const int64_t *shape, int ndim, char *buf, size_t size);

const char *tensor_layout_name(tensor_layout layout);

#endif
