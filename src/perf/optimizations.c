/*
 * optimizations.c - the switches of kiln_optimizations: names, values,
 * parsing, and resolution against what this build and this CPU can run.
 *
 * Every switch maps onto a real alternative path (graph/executor.h:
 * graph_exec_options, the kernel tables with fast math off, the packing
 * dtype, the tiled VAE decode of models/vae_tiles.h, the channels-first
 * rewrite of graph/layout.h); a value this machine, model or engine cannot
 * run is accepted and reported as not available, with the reason, never
 * faked.
 */
#include "perf/optimizations.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "kernels/nchw.h"
#include "models/vae_tiles.h"

#define MAX_ATTENTION_TILE 1024
#define MAX_VAE_TILE KILN_MAX_SIZE /* a larger tile than the largest image is no tiling */
#define MAX_THREADS 1024

static const char *const opt_names[KILN_OPT_COUNT] = {
    [KILN_OPT_ATTENTION] = "attention",   [KILN_OPT_ATTENTION_TILE] = "attention_tile",
    [KILN_OPT_LAYOUT] = "layout",         [KILN_OPT_FUSION] = "fusion",
    [KILN_OPT_WINOGRAD] = "winograd",
    [KILN_OPT_MEMORY] = "memory",         [KILN_OPT_PRECISION] = "precision",
    [KILN_OPT_FAST_MATH] = "fast_math",   [KILN_OPT_THREADS] = "threads",
    [KILN_OPT_VAE_TILING] = "vae_tiling", [KILN_OPT_VAE_TILE] = "vae_tile",
};
_Static_assert(sizeof opt_names / sizeof opt_names[0] == KILN_OPT_COUNT, "a name per switch");

static const char *const opt_allowed[KILN_OPT_COUNT] = {
    [KILN_OPT_ATTENTION] = "tiled, plain",
    [KILN_OPT_ATTENTION_TILE] = "0 (the kernel's own) or 1 to 1024 queries",
    [KILN_OPT_LAYOUT] = "nhwc, nchw",
    [KILN_OPT_FUSION] = "on, off",
    [KILN_OPT_WINOGRAD] = "on, off",
    [KILN_OPT_MEMORY] = "plan, alloc",
    [KILN_OPT_PRECISION] = "f32, f16, bf16",
    [KILN_OPT_FAST_MATH] = "on, off",
    [KILN_OPT_THREADS] = "0 (all cores) to 1024",
    [KILN_OPT_VAE_TILING] = "on, off",
    [KILN_OPT_VAE_TILE] = "0 (automatic: 256) or 64 to 2048 pixels in multiples of 8",
};
_Static_assert(sizeof opt_allowed / sizeof opt_allowed[0] == KILN_OPT_COUNT, "allowed values per switch");
_Static_assert(VAE_TILE_DEFAULT == 256 && VAE_TILE_MIN == 64 && MAX_VAE_TILE == 2048 && VAE_TILE_MULTIPLE == 8,
               "the vae_tile text above states these");

static const char *const precision_names[KILN_PRECISION_COUNT] = {"f32", "f16", "bf16"};
static const char *const attention_names[KILN_ATTENTION_COUNT] = {"tiled", "plain"};
static const char *const layout_names[KILN_LAYOUT_COUNT] = {"nhwc", "nchw"};
static const char *const memory_names[KILN_MEMORY_COUNT] = {"plan", "alloc"};

const char *kiln_opt_name(kiln_opt opt)
{
    return (unsigned)opt < KILN_OPT_COUNT ? opt_names[opt] : NULL;
}

const char *kiln_opt_allowed(kiln_opt opt)
{
    return (unsigned)opt < KILN_OPT_COUNT ? opt_allowed[opt] : NULL;
}

const char *kiln_precision_name(kiln_precision p)
{
    return (unsigned)p < KILN_PRECISION_COUNT ? precision_names[p] : "?";
}

int opt_precision_parse(const char *name, kiln_precision *out)
{
    for (int i = 0; i < KILN_PRECISION_COUNT; i++)
        if (strcmp(name, precision_names[i]) == 0) {
            *out = (kiln_precision)i;
            return 0;
        }
    return -1;
}

kiln_dtype opt_precision_dtype(kiln_precision p)
{
    return p == KILN_PRECISION_F16 ? KILN_DTYPE_F16 : p == KILN_PRECISION_BF16 ? KILN_DTYPE_BF16 : KILN_DTYPE_F32;
}

void kiln_optimizations_defaults(kiln_optimizations *o)
{
    memset(o, 0, sizeof *o);
    o->attention = KILN_ATTENTION_TILED;
    o->layout = KILN_LAYOUT_NHWC;
    o->fusion = 1;
    o->winograd = 1;
    o->memory = KILN_MEMORY_PLAN;
    o->fast_math = 1;
    o->precision = KILN_PRECISION_F32;
}

static int lookup(const char *const *names, int count, const char *value)
{
    for (int i = 0; i < count; i++)
        if (strcmp(value, names[i]) == 0)
            return i;
    return -1;
}

static int parse_switch(const char *value)
{
    static const char *const on[] = {"on", "true", "1", "yes"}, *const off[] = {"off", "false", "0", "no"};
    if (lookup(on, 4, value) >= 0)
        return 1;
    if (lookup(off, 4, value) >= 0)
        return 0;
    return -1;
}

/* 0, or a tile of whole latent pixels for any SD VAE (factor 8 or below;
 * a larger factor is checked against the model when a request is) */
static int vae_tile_valid(int tile)
{
    return tile == 0 || (tile >= VAE_TILE_MIN && tile <= MAX_VAE_TILE && tile % VAE_TILE_MULTIPLE == 0);
}

static int parse_count(const char *value, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

kiln_status kiln_optimizations_set(kiln_optimizations *o, const char *name, const char *value)
{
    if (!name || !value)
        return err_set(KILN_ERR_INVALID, "an optimization needs a name and a value");
    char key[32];
    size_t n = strlen(name);
    if (n >= sizeof key)
        return err_set(KILN_ERR_INVALID, "optimization '%s' is unknown", name);
    for (size_t i = 0; i <= n; i++)
        key[i] = name[i] == '-' ? '_' : name[i];
    int opt = lookup(opt_names, KILN_OPT_COUNT, key);
    if (opt < 0)
        return err_set(KILN_ERR_INVALID,
                       "optimization '%s' is unknown; known: attention, attention_tile, layout, fusion, winograd, memory, "
                       "precision, fast_math, threads, vae_tiling, vae_tile",
                       name);
    kiln_optimizations v = *o;
    int ok = 0, x;
    switch ((kiln_opt)opt) {
    case KILN_OPT_ATTENTION:
        ok = (x = lookup(attention_names, KILN_ATTENTION_COUNT, value)) >= 0;
        v.attention = (kiln_attention)x;
        break;
    case KILN_OPT_ATTENTION_TILE:
        ok = parse_count(value, 0, MAX_ATTENTION_TILE, &v.attention_tile) == 0;
        break;
    case KILN_OPT_LAYOUT:
        ok = (x = lookup(layout_names, KILN_LAYOUT_COUNT, value)) >= 0;
        v.layout = (kiln_layout)x;
        break;
    case KILN_OPT_FUSION:
        ok = (v.fusion = parse_switch(value)) >= 0;
        break;
    case KILN_OPT_WINOGRAD:
        ok = (v.winograd = parse_switch(value)) >= 0;
        break;
    case KILN_OPT_MEMORY:
        ok = (x = lookup(memory_names, KILN_MEMORY_COUNT, value)) >= 0;
        v.memory = (kiln_memory)x;
        break;
    case KILN_OPT_PRECISION:
        ok = opt_precision_parse(value, &v.precision) == 0;
        break;
    case KILN_OPT_FAST_MATH:
        ok = (v.fast_math = parse_switch(value)) >= 0;
        break;
    case KILN_OPT_THREADS:
        ok = parse_count(value, 0, MAX_THREADS, &v.threads) == 0;
        break;
    case KILN_OPT_VAE_TILING:
        ok = (v.vae_tiling = parse_switch(value)) >= 0;
        break;
    case KILN_OPT_VAE_TILE:
        ok = parse_count(value, 0, MAX_VAE_TILE, &v.vae_tile) == 0 && vae_tile_valid(v.vae_tile);
        break;
    case KILN_OPT_COUNT:
        break;
    }
    if (!ok)
        return err_set(KILN_ERR_INVALID, "%s '%s' is not allowed; allowed: %s", opt_names[opt], value,
                       opt_allowed[opt]);
    *o = v;
    return KILN_OK;
}

void kiln_optimizations_get(const kiln_optimizations *o, kiln_opt opt, char *buf, size_t size)
{
    const char *text = NULL;
    int number = 0;
    switch (opt) {
    case KILN_OPT_ATTENTION:
        text = (unsigned)o->attention < KILN_ATTENTION_COUNT ? attention_names[o->attention] : "?";
        break;
    case KILN_OPT_ATTENTION_TILE:
        number = o->attention_tile;
        break;
    case KILN_OPT_LAYOUT:
        text = (unsigned)o->layout < KILN_LAYOUT_COUNT ? layout_names[o->layout] : "?";
        break;
    case KILN_OPT_FUSION:
        text = o->fusion ? "on" : "off";
        break;
    case KILN_OPT_WINOGRAD:
        text = o->winograd ? "on" : "off";
        break;
    case KILN_OPT_MEMORY:
        text = (unsigned)o->memory < KILN_MEMORY_COUNT ? memory_names[o->memory] : "?";
        break;
    case KILN_OPT_PRECISION:
        text = kiln_precision_name(o->precision);
        break;
    case KILN_OPT_FAST_MATH:
        text = o->fast_math ? "on" : "off";
        break;
    case KILN_OPT_THREADS:
        number = o->threads;
        break;
    case KILN_OPT_VAE_TILING:
        text = o->vae_tiling ? "on" : "off";
        break;
    case KILN_OPT_VAE_TILE:
        number = o->vae_tile;
        break;
    default:
        text = "?";
        break;
    }
    if (text)
        snprintf(buf, size, "%s", text);
    else
        snprintf(buf, size, "%d", number);
}

kiln_status opt_validate(const kiln_optimizations *o)
{
    const char *bad = NULL;
    if ((unsigned)o->attention >= KILN_ATTENTION_COUNT)
        bad = "attention";
    else if (o->attention_tile < 0 || o->attention_tile > MAX_ATTENTION_TILE)
        bad = "attention_tile";
    else if ((unsigned)o->layout >= KILN_LAYOUT_COUNT)
        bad = "layout";
    else if (o->fusion != 0 && o->fusion != 1)
        bad = "fusion";
    else if (o->winograd != 0 && o->winograd != 1)
        bad = "winograd";
    else if ((unsigned)o->memory >= KILN_MEMORY_COUNT)
        bad = "memory";
    else if ((unsigned)o->precision >= KILN_PRECISION_COUNT)
        bad = "precision";
    else if (o->fast_math != 0 && o->fast_math != 1)
        bad = "fast_math";
    else if (o->threads < 0 || o->threads > MAX_THREADS)
        bad = "threads";
    else if (o->vae_tiling != 0 && o->vae_tiling != 1)
        bad = "vae_tiling";
    else if (!vae_tile_valid(o->vae_tile))
        bad = "vae_tile";
    if (!bad)
        return KILN_OK;
    int opt = lookup(opt_names, KILN_OPT_COUNT, bad);
    return err_set(KILN_ERR_INVALID, "optimizations.%s is out of range; allowed: %s", bad, opt_allowed[opt]);
}

static void note(kiln_opt_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(kiln_opt_report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note, sizeof r->note, fmt, ap);
    va_end(ap);
}

void opt_resolve(const kiln_optimizations *asked, kiln_precision model_precision, int engine_threads,
                 kiln_optimizations *active_out, kiln_opt_report *report_out, graph_exec_options *exec)
{
    const kiln_cpu_info *cpu = cpu_get();
    kiln_isa isa = cpu_isa();
    const char *isa_name = kiln_isa_name(isa);
    const kernel_table *k = kernels_for_math(isa, asked->fast_math);
    kiln_optimizations a = *asked;
    kiln_opt_report rep[KILN_OPT_COUNT];
    memset(rep, 0, sizeof rep);

    /* attention: both paths exist at every level; the fused kernel is
     * tiled at AVX2 and AVX-512, one query at a time at the scalar level */
    if (a.attention == KILN_ATTENTION_TILED && k->attention_tile_max == 0)
        note(&rep[KILN_OPT_ATTENTION],
             "the %s level has no tiled attention kernel: the fused one-query-at-a-time kernel runs (still no "
             "score matrix)",
             isa_name);
    else if (a.attention == KILN_ATTENTION_PLAIN)
        note(&rep[KILN_OPT_ATTENTION], "score matrix per head (q_len x kv_len floats), softmax, then P.v with the "
                                       "matrix kernels");

    /* the tile: a multiple of the kernel's step within its range */
    kiln_opt_report *tile = &rep[KILN_OPT_ATTENTION_TILE];
    if (a.attention == KILN_ATTENTION_PLAIN) {
        note(tile, "not used: the plain attention path has no tiles");
    } else if (k->attention_tile_max == 0) {
        if (a.attention_tile != 0) {
            tile->available = -1;
            note(tile, "the %s attention kernel is untiled (one query at a time): the tile cannot be chosen here",
                 isa_name);
        }
        a.attention_tile = 0;
    } else {
        int want = a.attention_tile ? a.attention_tile : k->attention_tile;
        int t = want / k->attention_tile_step * k->attention_tile_step;
        if (t < k->attention_tile_step)
            t = k->attention_tile_step;
        if (t > k->attention_tile_max)
            t = k->attention_tile_max;
        if (a.attention_tile != 0 && t != a.attention_tile) {
            tile->available = -1;
            note(tile, "the %s kernel takes %d to %d queries in steps of %d: %d is the nearest below",
                 isa_name, k->attention_tile_step, k->attention_tile_max, k->attention_tile_step, t);
        }
        a.attention_tile = t;
    }

    int nchw = a.layout == KILN_LAYOUT_NCHW;
    if (nchw)
        note(&rep[KILN_OPT_LAYOUT], "activations channels first: convolutions as im2col + GEMM per block of %d "
                                    "pixels, transposes around every transformer block and VAE attention; "
                                    "Winograd off (its kernels are NHWC)",
             NCHW_CONV_BLOCK);
    else
        note(&rep[KILN_OPT_LAYOUT], "activations channels last: convolutions read each pixel's channels "
                                    "contiguously, tokens are a view of the image");

    note(&rep[KILN_OPT_FUSION],
         a.fusion ? "group norm + SiLU in one pass; residual adds inside the convolution before them; nearest "
                    "upsampling read by the convolution after it; GEGLU and attention are single ops"
                  : "group norm and SiLU as two passes, residual adds and upsampling as their own passes; GEGLU and "
                    "attention stay single ops (no unfused path for them in this build)");

    if (nchw && a.winograd) {
        rep[KILN_OPT_WINOGRAD].available = -1;
        a.winograd = 0;
        note(&rep[KILN_OPT_WINOGRAD], "not with layout nchw: the Winograd kernels read NHWC tiles, so every "
                                      "convolution runs as im2col + GEMM");
    } else {
        note(&rep[KILN_OPT_WINOGRAD],
             a.winograd ? "3x3 stride-1 convolutions by Winograd F(4x4, 3x3) from 64 output tiles of 4x4, below that "
                          "by F(2x2, 3x3) from 128 tiles of 2x2, their weights transformed at most 64 MB at a time; "
                          "the others direct"
                        : "every convolution by the direct kernel (implicit GEMM)");
    }

    if (a.memory == KILN_MEMORY_ALLOC)
        note(&rep[KILN_OPT_MEMORY], "each activation malloc'd before its node and freed after its last reader");

    kiln_opt_report *prec = &rep[KILN_OPT_PRECISION];
    if (a.precision != model_precision) {
        prec->available = -1;
        note(prec, "the model's weights were loaded as %s; precision is chosen when a model loads "
                   "(kiln_model_options.precision)",
             kiln_precision_name(model_precision));
        a.precision = model_precision;
    } else if (a.precision == KILN_PRECISION_BF16) {
        if (kernels_bf16_dot()) /* implies AVX512_BF16 and the avx512 level */
            note(prec, "AVX512_BF16 dot products: activations rounded to bf16 in the matrix kernels, f32 sums (%s)",
                 kernels_bf16_dot_reason());
        else if (cpu->has_avx512_bf16)
            note(prec, "bf16 weights widened to f32 in the matrix kernels, not AVX512_BF16 dot products (%s)",
                 kernels_bf16_dot_reason());
        else
            note(prec, "bf16 emulated via conversion: this CPU has no AVX512_BF16, weights are widened to f32 "
                       "in the matrix kernels (f32 sums)");
    } else if (a.precision == KILN_PRECISION_F16) {
        note(prec, isa >= KILN_ISA_AVX2 ? "f16 weights widened to f32 with F16C as the matrix kernels load them"
                                        : "f16 weights converted to f32 in C as the scalar kernels read them");
    }

    kiln_opt_report *fm = &rep[KILN_OPT_FAST_MATH];
    if (a.fast_math && !k->fast_math) {
        fm->available = -1;
        note(fm, "the %s kernels call libm's expf and erff: there is no approximation to switch on at this level",
             isa_name);
        a.fast_math = 0;
    } else if (a.fast_math) {
        note(fm, "exp within 2e-7 relative, erf within 1.5e-7 absolute (vector polynomials)");
    } else if (isa != KILN_ISA_SCALAR) {
        note(fm, "the same vector kernels with libm's expf and erff lane by lane");
    }

    kiln_opt_report *th = &rep[KILN_OPT_THREADS];
    if (a.threads != 0 && a.threads != engine_threads) {
        th->available = -1;
        note(th, "threads are fixed when the engine is made (kiln_engine_options.threads): this engine runs %d",
             engine_threads);
    }
    a.threads = engine_threads;

    if (a.vae_tiling) {
        if (a.vae_tile == 0)
            a.vae_tile = VAE_TILE_DEFAULT;
        note(&rep[KILN_OPT_VAE_TILING],
             "the latent decoded in %d-pixel tiles overlapping by a quarter, blended linearly, group norms with "
             "the whole's statistics: the decoder's arena is a tile's; attention sees one tile, pixels differ slightly",
             a.vae_tile);
    } else {
        note(&rep[KILN_OPT_VAE_TILING], "the VAE decoder runs on the whole latent at once");
        if (a.vae_tile)
            note(&rep[KILN_OPT_VAE_TILE], "not used: vae_tiling is off");
    }

    for (int i = 0; i < KILN_OPT_COUNT; i++) {
        kiln_optimizations_get(asked, (kiln_opt)i, rep[i].asked, sizeof rep[i].asked);
        kiln_optimizations_get(&a, (kiln_opt)i, rep[i].active, sizeof rep[i].active);
        rep[i].available = rep[i].available < 0 ? 0 : 1;
    }
    if (a.attention == KILN_ATTENTION_PLAIN)
        snprintf(rep[KILN_OPT_ATTENTION_TILE].active, sizeof rep[KILN_OPT_ATTENTION_TILE].active, "-");
    if (!a.vae_tiling)
        snprintf(rep[KILN_OPT_VAE_TILE].active, sizeof rep[KILN_OPT_VAE_TILE].active, "-");
    if (asked->threads == 0)
        snprintf(rep[KILN_OPT_THREADS].asked, sizeof rep[KILN_OPT_THREADS].asked, "0 (all)");

    if (exec) {
        graph_exec_options_defaults(exec);
        exec->plain_attention = a.attention == KILN_ATTENTION_PLAIN;
        exec->attention_tile = a.attention_tile;
        exec->alloc_as_you_go = a.memory == KILN_MEMORY_ALLOC;
        exec->fast_math = a.fast_math;
        exec->unfused = !a.fusion;
        exec->direct_conv = !a.winograd;
        exec->nchw = nchw;
    }
    if (active_out)
        *active_out = a;
    if (report_out)
        memcpy(report_out, rep, sizeof rep);
}
