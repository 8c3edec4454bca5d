/* winograd_avx2.c - the Winograd F(4x4, 3x3) and F(2x2, 3x3) convolutions
 * compiled for the avx2 level (the algorithm: winograd_driver.h). */
#include "kernels/kernels.h"

#define WINOGRAD_ISA KILN_ISA_AVX2

#define WG_M 4
#define WINOGRAD_WEIGHTS winograd4_weights_avx2
#define WINOGRAD_CONV winograd4_conv_avx2
#include "kernels/winograd_driver.h"

#define WG_M 2
#define WINOGRAD_WEIGHTS winograd2_weights_avx2
#define WINOGRAD_CONV winograd2_conv_avx2
#include "kernels/winograd_driver.h"

void winograd_register_avx2(kernel_table *t)
{
    t->winograd_weights_f32[WINOGRAD_F4] = winograd4_weights_avx2;
    t->winograd_conv_f32[WINOGRAD_F4] = winograd4_conv_avx2;
    t->winograd_weights_f32[WINOGRAD_F2] = winograd2_weights_avx2;
    t->winograd_conv_f32[WINOGRAD_F2] = winograd2_conv_avx2;
}
