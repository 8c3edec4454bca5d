#include "kernels/kernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/cpu.h"
#include "core/log.h"

/* [fast_math][isa] */
static kernel_table tables[2][KILN_ISA_COUNT];
static pthread_once_t build_once = PTHREAD_ONCE_INIT;

/* The avx512 table when the CPU has AVX512_BF16's dot products; NULL otherwise. */
static const kernel_table *dot_kernels;

#if defined(KILN_HAVE_X86_KERNELS)
/* The avx512 level's own matrix kernels (FMAs, bf16 weights widened),
 * which its table's entries call unless the bf16 dot products are on. */
static void (*linear_fma)(const float *x, int64_t ldx, const packed_weights *w, const float *bias, float *y,
                          int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
static void (*conv2d_fma)(const conv2d_geom *g, const float *x, const packed_weights *w, const float *bias,
                          const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0, int64_t c1);

static void linear_choosing(const float *x, int64_t ldx, const packed_weights *w, const float *bias, float *y,
                            int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    if (w->dtype == KILN_DTYPE_BF16 && kernels_bf16_dot())
        dot_kernels->linear_bf16_dot(x, ldx, w, bias, y, ldy, m0, m1, n0, n1);
    else
        linear_fma(x, ldx, w, bias, y, ldy, m0, m1, n0, n1);
}

static void conv2d_choosing(const conv2d_geom *g, const float *x, const packed_weights *w, const float *bias,
                            const float *residual, float *y, int64_t p0, int64_t p1, int64_t c0, int64_t c1)
{
    if (w->dtype == KILN_DTYPE_BF16 && kernels_bf16_dot())
        dot_kernels->conv2d_bf16_dot(g, x, w, bias, residual, y, p0, p1, c0, c1);
    else
        conv2d_fma(g, x, w, bias, residual, y, p0, p1, c0, c1);
}
#endif

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
    if (cpu_get()->has_avx512_bf16) {
        gemm_register_avx512_bf16(avx512);
        linear_fma = avx512->linear_f32;
        conv2d_fma = avx512->conv2d_f32;
        avx512->linear_f32 = linear_choosing;
        avx512->conv2d_f32 = conv2d_choosing;
        dot_kernels = avx512;
    }

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

/* ---- bf16 dot products: on where they pay ---- */

static atomic_int bf16_dot_mode = -2; /* -2 not yet read from KILN_BF16_DOT; -1 auto; 0 off; 1 on */
static pthread_once_t measure_once = PTHREAD_ONCE_INIT;
static int dot_pays;
static double dot_rate, fma_rate; /* GFLOP/s on one core, the best of a few tries */
static char reason[192]; /* why auto chose as it did */

/* Alternating short runs of both loops, so that a busy moment of a shared
 * machine lands on both; the best rate of each. */
static void measure_dot(void)
{
    const kernel_table *t = kernels_for(KILN_ISA_AVX512);
    for (int attempt = 0; attempt < 4; attempt++) {
        double t0 = clock_now();
        double fma_flops = t->fma_peak(100000);
        double t1 = clock_now();
        double dot_flops = t->bf16_dot_peak(50000);
        double t2 = clock_now();
        if (t1 > t0 && fma_flops / (t1 - t0) / 1e9 > fma_rate)
            fma_rate = fma_flops / (t1 - t0) / 1e9;
        if (t2 > t1 && dot_flops / (t2 - t1) / 1e9 > dot_rate)
            dot_rate = dot_flops / (t2 - t1) / 1e9;
    }
    /* a margin, since the dot kernel also rounds its activations */
    dot_pays = dot_rate > 1.25 * fma_rate;
    snprintf(reason, sizeof reason, "measured on one core: bf16 dot products %.0f GFLOP/s, f32 FMA %.0f GFLOP/s",
             dot_rate, fma_rate);
    LOG_DEBUG("bf16 dot products: %s", reason);
}

static int resolve_mode(void)
{
    int mode = atomic_load(&bf16_dot_mode);
    if (mode != -2)
        return mode;
    const char *env = getenv("KILN_BF16_DOT");
    mode = -1;
    if (env && (!strcmp(env, "on") || !strcmp(env, "1")))
        mode = 1;
    else if (env && (!strcmp(env, "off") || !strcmp(env, "0")))
        mode = 0;
    else if (env && strcmp(env, "auto") != 0)
        LOG_WARN("KILN_BF16_DOT=%s is not one of on, off, auto; using auto", env);
    int expected = -2;
    atomic_compare_exchange_strong(&bf16_dot_mode, &expected, mode);
    return atomic_load(&bf16_dot_mode);
}

int kernels_bf16_dot(void)
{
    pthread_once(&build_once, build_tables);
    if (!dot_kernels || cpu_isa() < KILN_ISA_AVX512)
        return 0;
    int mode = resolve_mode();
    if (mode >= 0)
        return mode;
    pthread_once(&measure_once, measure_dot);
    return dot_pays;
}

void kernels_set_bf16_dot(int mode)
{
    atomic_store(&bf16_dot_mode, mode < 0 ? -1 : mode > 0);
}

const char *kernels_bf16_dot_reason(void)
{
    int on = kernels_bf16_dot();
    if (!dot_kernels)
        return "this CPU has no AVX512_BF16";
    if (cpu_isa() < KILN_ISA_AVX512)
        return "the kernel level in use is below avx512";
    if (resolve_mode() >= 0)
        return on ? "KILN_BF16_DOT=on (or a caller) turned them on" : "KILN_BF16_DOT=off (or a caller) turned them off";
    return reason; /* written once, by measure_dot */
}
