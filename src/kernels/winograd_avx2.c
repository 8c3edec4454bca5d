/* winograd_avx2.c - the Winograd F(4x4, 3x3) convolution compiled for
 * the avx2 level (the algorithm: winograd_driver.h). */
#include "kernels/kernels.h"

#define WINOGRAD_ISA KILN_ISA_AVX2
#define WINOGRAD_WEIGHTS winograd_weights_avx2
#define WINOGRAD_CONV winograd_conv_avx2
#include "kernels/winograd_driver.h"

void winograd_register_avx2(kernel_table *t)
{
    t->winograd_weights_f32 = winograd_weights_avx2;
    t->winograd_conv_f32 = winograd_conv_avx2;
}
