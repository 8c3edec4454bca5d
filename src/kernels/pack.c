/* Packing weights for the matrix kernels (kernels.h: packed_weights).
 *
 * A source row (one output channel: k x taps values, contiguous) is read
 * whole, widened to f32 by the vector converters of the kernel table, and
 * spread into its column of the panel. Going element by element through the
 * panel instead (every value a load from a different source row, converted
 * on its own) took about 10 ns a value: 8 s for SD 1.5's UNet on every
 * start. */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

size_t kernels_packed_elements(int nr, int64_t n, int64_t k, int64_t taps)
{
    return (size_t)(kernels_packed_columns(nr, n) * k * taps);
}

static size_t dtype_bytes(kiln_dtype dtype)
{
    return dtype == KILN_DTYPE_F32 ? 4 : 2;
}

/* values [from, from + count) of src as f32 into out */
static void widen(const kernel_table *kt, const void *src, kiln_dtype dtype, size_t from, size_t count, float *out)
{
    if (dtype == KILN_DTYPE_F16)
        kt->f16_to_f32((const uint16_t *)src + from, out, count);
    else if (dtype == KILN_DTYPE_BF16)
        kt->bf16_to_f32((const uint16_t *)src + from, out, count);
    else
        memcpy(out, (const float *)src + from, count * sizeof *out);
}

static void narrow(const kernel_table *kt, const float *row, kiln_dtype dtype, size_t count, void *out)
{
    if (dtype == KILN_DTYPE_F16)
        kt->f32_to_f16(row, out, count);
    else if (dtype == KILN_DTYPE_BF16)
        kt->f32_to_bf16(row, out, count);
    else
        memcpy(out, row, count * sizeof *row);
}

/* Row j's values in dst_dtype (in the source's [k][taps] order) to element
 * (t, i) of column c of panel p: at ((p * taps + t) * k + i) * width + c,
 * width nr (1 unpacked); panel points at column c of panel p. */
static void spread32(const uint32_t *row, int64_t k, int64_t taps, int64_t width, uint32_t *panel)
{
    for (int64_t t = 0; t < taps; t++)
        for (int64_t i = 0; i < k; i++)
            panel[(t * k + i) * width] = row[i * taps + t];
}

static void spread16(const uint16_t *row, int64_t k, int64_t taps, int64_t width, uint16_t *panel)
{
    for (int64_t t = 0; t < taps; t++)
        for (int64_t i = 0; i < k; i++)
            panel[(t * k + i) * width] = row[i * taps + t];
}

int64_t kernels_packed_columns(int nr, int64_t n)
{
    return nr > 0 ? (n + nr - 1) / nr * nr : n;
}

void kernels_pack_weights_columns(const void *src, kiln_dtype src_dtype, kiln_dtype dst_dtype, int nr, int64_t n,
                                  int64_t k, int64_t taps, int64_t j0, int64_t j1, void *dst)
{
    const kernel_table *kt = kernels_get();
    size_t row_len = (size_t)(k * taps), size = dtype_bytes(dst_dtype);
    int64_t width = nr > 0 ? nr : 1;
    /* a row as f32, then as dst_dtype (the f32 row itself when that is F32) */
    float *wide = malloc(row_len * sizeof *wide);
    unsigned char *narrowed = dst_dtype == KILN_DTYPE_F32 ? (unsigned char *)wide : malloc(row_len * size);
    if (!wide || !narrowed) {
        /* without the row buffers: value by value, the slow way */
        for (int64_t j = j0; j < j1; j++)
            for (int64_t t = 0; t < taps; t++)
                for (int64_t i = 0; i < k; i++) {
                    size_t at = (size_t)(((j / width * taps + t) * k + i) * width + j % width);
                    float v = 0.0f;
                    if (j < n)
                        widen(kt, src, src_dtype, (size_t)((j * k + i) * taps + t), 1, &v);
                    narrow(kt, &v, dst_dtype, 1, (unsigned char *)dst + at * size);
                }
    } else {
        for (int64_t j = j0; j < j1; j++) {
            if (j < n) {
                widen(kt, src, src_dtype, (size_t)j * row_len, row_len, wide);
                if (dst_dtype != KILN_DTYPE_F32)
                    narrow(kt, wide, dst_dtype, row_len, narrowed);
            } else {
                memset(narrowed, 0, row_len * size); /* the last panel's missing columns */
            }
            size_t origin = (size_t)((j / width) * taps * k * width + j % width);
            if (size == 4)
                spread32((const uint32_t *)narrowed, k, taps, width, (uint32_t *)dst + origin);
            else
                spread16((const uint16_t *)narrowed, k, taps, width, (uint16_t *)dst + origin);
        }
    }
    if (narrowed != (unsigned char *)wide)
        free(narrowed);
    free(wide);
}

void kernels_pack_weights(const void *src, kiln_dtype src_dtype, kiln_dtype dst_dtype, int nr, int64_t n, int64_t k,
                          int64_t taps, void *dst)
{
    kernels_pack_weights_columns(src, src_dtype, dst_dtype, nr, n, k, taps, 0, kernels_packed_columns(nr, n), dst);
}
