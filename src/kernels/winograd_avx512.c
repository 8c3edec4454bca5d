/* winograd_avx512.c - the Winograd F(4x4, 3x3) convolution compiled for
 * the avx512 level (the algorithm: winograd_driver.h). */
#include "kernels/kernels.h"

#define WINOGRAD_ISA KILN_ISA_AVX512
#define WINOGRAD_WEIGHTS winograd_weights_avx512
#define WINOGRAD_CONV winograd_conv_avx512
#include "kernels/winograd_driver.h"

void winograd_register_avx512(kernel_table *t)
{
    t->winograd_weights_f32 = winograd_weights_avx512;
    t->winograd_conv_f32 = winograd_conv_avx512;
}
