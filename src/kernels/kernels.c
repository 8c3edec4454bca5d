#include "kernels/kernels.h"

#include <pthread.h>

#include "core/cpu.h"

static kernel_table tables[KILN_ISA_COUNT];
static pthread_once_t build_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    kernel_table *scalar = &tables[KILN_ISA_SCALAR];
    ops_register_scalar(scalar);
    convert_register_scalar(scalar);
    scalar->isa = KILN_ISA_SCALAR;

    tables[KILN_ISA_AVX2] = *scalar;
    tables[KILN_ISA_AVX512] = *scalar;
#if defined(KILN_HAVE_X86_KERNELS)
    convert_register_avx2(&tables[KILN_ISA_AVX2]);
    gemm_register_avx2(&tables[KILN_ISA_AVX2]);
    ops_register_avx2(&tables[KILN_ISA_AVX2]);
    tables[KILN_ISA_AVX2].isa = KILN_ISA_AVX2;

    tables[KILN_ISA_AVX512] = tables[KILN_ISA_AVX2];
    convert_register_avx512(&tables[KILN_ISA_AVX512]);
    gemm_register_avx512(&tables[KILN_ISA_AVX512]);
    attention_register_avx512(&tables[KILN_ISA_AVX512]);
    ops_register_avx512(&tables[KILN_ISA_AVX512]);
    tables[KILN_ISA_AVX512].isa = KILN_ISA_AVX512;
#endif
}

const kernel_table *kernels_for(kiln_isa isa)
{
    pthread_once(&build_once, build_tables);
    if ((unsigned)isa >= KILN_ISA_COUNT)
        isa = KILN_ISA_SCALAR;
    return &tables[isa];
}

const kernel_table *kernels_get(void)
{
    return kernels_for(cpu_isa());
}
