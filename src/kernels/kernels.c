#include "kernels/kernels.h"

#include <pthread.h>

#include "core/cpu.h"

/* [fast_math][isa] */
static kernel_table tables[2][KILN_ISA_COUNT];
static pthread_once_t build_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    kernel_table *scalar = &tables[1][KILN_ISA_SCALAR];
    ops_register_scalar(scalar);
    convert_register_scalar(scalar);
    winograd_register_scalar(scalar);
    scalar->isa = KILN_ISA_SCALAR;
    scalar->fast_math = 0; /* the reference calls libm */

    tables[1][KILN_ISA_AVX2] = *scalar;
    tables[1][KILN_ISA_AVX512] = *scalar;
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++)
        tables[0][isa] = *scalar;
#if defined(KILN_HAVE_X86_KERNELS)
    kernel_table *avx2 = &tables[1][KILN_ISA_AVX2];
    convert_register_avx2(avx2);
    gemm_register_avx2(avx2);
    attention_register_avx2(avx2);
    ops_register_avx2(avx2);
    winograd_register_avx2(avx2);
    avx2->isa = KILN_ISA_AVX2;
    avx2->fast_math = 1;

    kernel_table *avx512 = &tables[1][KILN_ISA_AVX512];
    *avx512 = *avx2;
    convert_register_avx512(avx512);
    gemm_register_avx512(avx512);
    attention_register_avx512(avx512);
    ops_register_avx512(avx512);
    winograd_register_avx512(avx512);
    avx512->isa = KILN_ISA_AVX512;

    /* fast math off: the same kernels with libm's exp and erf */
    tables[0][KILN_ISA_AVX2] = *avx2;
    ops_register_avx2_precise(&tables[0][KILN_ISA_AVX2]);
    attention_register_avx2_precise(&tables[0][KILN_ISA_AVX2]);
    tables[0][KILN_ISA_AVX2].fast_math = 0;
    tables[0][KILN_ISA_AVX512] = *avx512;
    ops_register_avx512_precise(&tables[0][KILN_ISA_AVX512]);
    attention_register_avx512_precise(&tables[0][KILN_ISA_AVX512]);
    tables[0][KILN_ISA_AVX512].fast_math = 0;
#endif
}

const kernel_table *kernels_for_math(kiln_isa isa, int fast_math)
{
    pthread_once(&build_once, build_tables);
    if ((unsigned)isa >= KILN_ISA_COUNT)
        isa = KILN_ISA_SCALAR;
    return &tables[fast_math ? 1 : 0][isa];
}

const kernel_table *kernels_for(kiln_isa isa)
{
    return kernels_for_math(isa, 1);
}

const kernel_table *kernels_get(void)
{
    return kernels_for(cpu_isa());
}
