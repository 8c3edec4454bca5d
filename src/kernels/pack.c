/* Packing weights for the matrix kernels (kernels.h: packed_weights). */
#include "core/half.h"
#include "kernels/kernels.h"

size_t kernels_packed_elements(int nr, int64_t n, int64_t k, int64_t taps)
{
    int64_t columns = nr > 0 ? (n + nr - 1) / nr * nr : n;
    return (size_t)(columns * k * taps);
}

static float load_value(const void *src, kiln_dtype dtype, size_t index)
{
    switch (dtype) {
    case KILN_DTYPE_F16:
        return half_f16_to_f32(((const uint16_t *)src)[index]);
    case KILN_DTYPE_BF16:
        return half_bf16_to_f32(((const uint16_t *)src)[index]);
    default:
        return ((const float *)src)[index];
    }
}

static void store_value(void *dst, kiln_dtype dtype, size_t index, float v)
{
    if (dtype == KILN_DTYPE_F16)
        ((uint16_t *)dst)[index] = half_f32_to_f16(v);
    else if (dtype == KILN_DTYPE_BF16)
        ((uint16_t *)dst)[index] = half_f32_to_bf16(v);
    else
        ((float *)dst)[index] = v;
}

void kernels_pack_weights(const void *src, kiln_dtype src_dtype, kiln_dtype dst_dtype, int nr, int64_t n, int64_t k,
                          int64_t taps, void *dst)
{
    if (nr <= 0) {
        for (int64_t j = 0; j < n; j++)
            for (int64_t t = 0; t < taps; t++)
                for (int64_t i = 0; i < k; i++)
                    store_value(dst, dst_dtype, (size_t)((j * taps + t) * k + i),
                                load_value(src, src_dtype, (size_t)((j * k + i) * taps + t)));
        return;
    }
    int64_t panels = (n + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t t = 0; t < taps; t++)
            for (int64_t i = 0; i < k; i++) {
                size_t out = (size_t)(((p * taps + t) * k + i) * nr);
                for (int64_t c = 0; c < nr; c++) {
                    int64_t j = p * nr + c;
                    store_value(dst, dst_dtype, out + (size_t)c,
                                j < n ? load_value(src, src_dtype, (size_t)((j * k + i) * taps + t)) : 0.0f);
                }
            }
}
