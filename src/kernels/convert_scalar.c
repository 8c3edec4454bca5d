/* Element type conversions, plain C: the reference for the SIMD versions. */
#include "core/half.h"
#include "kernels/kernels.h"

static void f16_to_f32_scalar(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = half_f16_to_f32(src[i]);
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = half_f32_to_f16(src[i]);
}

static void bf16_to_f32_scalar(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = half_bf16_to_f32(src[i]);
}

static void f32_to_bf16_scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = half_f32_to_bf16(src[i]);
}

void convert_register_scalar(kernel_table *t)
{
    t->f16_to_f32 = f16_to_f32_scalar;
    t->f32_to_f16 = f32_to_f16_scalar;
    t->bf16_to_f32 = bf16_to_f32_scalar;
    t->f32_to_bf16 = f32_to_bf16_scalar;
}
