/*
 * kernels.h - the table of compute kernels, one per instruction set level.
 *
 * Every entry has a plain C version (the specification, in *_scalar.c) and
 * may have faster ones per ISA (*_avx2.c, *_avx512.c, compiled with their own
 * target flags). The table for a level starts from the one below it and
 * replaces what that level does better, so every entry is always filled.
 * Tables are built once; kernels_get() follows cpu_isa(), so KILN_ISA or
 * cpu_set_isa() changes which one callers get.
 */
#ifndef KILN_KERNELS_KERNELS_H
#define KILN_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

typedef struct kernel_table {
    kiln_isa isa;

    /* element type conversions of n contiguous values; narrowing rounds to
     * nearest even (see core/half.h, the reference) */
    void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);
    void (*bf16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*f32_to_bf16)(const float *src, uint16_t *dst, size_t n);
} kernel_table;

/* The table for a level (clamped to what was compiled in). Lives for the
 * process. Thread-safe. */
const kernel_table *kernels_for(kiln_isa isa);

/* The table for the level in use (cpu_isa()). */
const kernel_table *kernels_get(void);

/* Each ISA file fills in what it has. */
void convert_register_scalar(kernel_table *t);
void convert_register_avx2(kernel_table *t);
void convert_register_avx512(kernel_table *t);

#endif
