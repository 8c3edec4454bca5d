/* winograd_scalar.c - the Winograd F(4x4, 3x3) convolution compiled for
 * the scalar level (the algorithm: winograd_driver.h). */
#include "kernels/kernels.h"

#define WINOGRAD_ISA KILN_ISA_SCALAR
#define WINOGRAD_WEIGHTS winograd_weights_scalar
#define WINOGRAD_CONV winograd_conv_scalar
#include "kernels/winograd_driver.h"

void winograd_register_scalar(kernel_table *t)
{
    t->winograd_weights_f32 = winograd_weights_scalar;
    t->winograd_conv_f32 = winograd_conv_scalar;
}
