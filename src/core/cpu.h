/*
 * cpu.h - what this CPU can do, and which kernel level kiln uses.
 *
 * Detection runs once (cpuid, and xgetbv for the OS's support of the wide
 * registers). KILN_ISA=scalar|avx2|avx512 forces a lower level; a level above
 * what the CPU offers is refused with a warning and the best one is used.
 */
#ifndef KILN_CORE_CPU_H
#define KILN_CORE_CPU_H

#include "kiln.h"

/* The detected features. Its isa is the level chosen at start (KILN_ISA);
 * cpu_isa() and kiln_cpu_query() also follow cpu_set_isa(). Lives for the
 * process. */
const kiln_cpu_info *cpu_get(void);

/* Bytes of one core's L2 cache (1 MB where the system does not say). */
size_t cpu_l2_bytes(void);

/* The kernel level in use now. Thread-safe. */
kiln_isa cpu_isa(void);

/* Uses level isa from now on (clamped to the best available, with a warning
 * when clamped) and returns the level set. For tests and benchmarks that
 * compare levels in one process; not meant to change while kernels run. */
kiln_isa cpu_set_isa(kiln_isa isa);

/* Parses "scalar", "avx2", "avx512". Returns 0 and sets *out, or -1. */
int cpu_parse_isa(const char *name, kiln_isa *out);

#endif
