/* f16 and bf16 conversions: core/half.h against references written here
 * from the definitions (exhaustive where 16 bits allow it, every tie and its
 * neighbours, random floats), and every kernel level's row conversions
 * against core/half.h bit for bit, with odd lengths and offsets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/half.h"
#include "kernels/kernels.h"
#include "test_support.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- mismatch reporting: a count per check and the first few cases ---- */

typedef struct tally {
    const char *what;
    long checked, wrong;
} tally;

#define SHOW_FIRST 5

static void tally_done(const tally *t)
{
    CHECK(t->wrong == 0, "%s: %ld of %ld mismatched", t->what, t->wrong, t->checked);
    if (t->wrong == 0)
        printf("     %s: %ld checked, all match\n", t->what, t->checked);
}

static void expect_u16(tally *t, uint32_t input, uint16_t want, uint16_t got)
{
    t->checked++;
    if (want == got)
        return;
    if (t->wrong++ < SHOW_FIRST)
        CHECK(0, "%s: input 0x%08x (%.9g): expected 0x%04x, got 0x%04x", t->what, (unsigned)input,
              (double)float_of(input), want, got);
}

static void expect_u32(tally *t, uint32_t input, uint32_t want, uint32_t got)
{
    t->checked++;
    if (want == got)
        return;
    if (t->wrong++ < SHOW_FIRST)
        CHECK(0, "%s: input 0x%04x: expected 0x%08x (%.9g), got 0x%08x (%.9g)", t->what, (unsigned)input,
              (unsigned)want, (double)float_of(want), (unsigned)got, (double)float_of(got));
}

/* ---- references, from the format definitions ---- */

/* A 16-bit format with `mant` stored mantissa bits and `expo` exponent bits
 * (f16: 10 and 5, bf16: 7 and 8); values decoded with ldexp. */
typedef struct format16 {
    const char *name;
    int mant, expo;
} format16;

static const format16 F16 = {"f16", 10, 5};
static const format16 BF16 = {"bf16", 7, 8};

static int fmt_exp_max(const format16 *f)
{
    return (1 << f->expo) - 1;
}

static int fmt_is_nan(const format16 *f, uint16_t h)
{
    return ((h >> f->mant) & fmt_exp_max(f)) == fmt_exp_max(f) && (h & ((1u << f->mant) - 1)) != 0;
}

/* The value of a non-NaN pattern, as a double (exact). */
static double fmt_value(const format16 *f, uint16_t h)
{
    int bias = (1 << (f->expo - 1)) - 1;
    int e = (h >> f->mant) & fmt_exp_max(f);
    int m = h & ((1 << f->mant) - 1);
    double v;
    if (e == fmt_exp_max(f))
        v = INFINITY;
    else if (e == 0)
        v = ldexp(m, 1 - bias - f->mant);
    else
        v = ldexp((1 << f->mant) + m, e - bias - f->mant);
    return (h & 0x8000) ? -v : v;
}

/* f32 bits of a 16-bit NaN: same sign, payload at the top of the f32
 * mantissa, quiet bit set. */
static uint32_t fmt_nan_to_f32(const format16 *f, uint16_t h)
{
    uint32_t m = h & ((1u << f->mant) - 1);
    return ((uint32_t)(h & 0x8000) << 16) | 0x7F800000u | 0x400000u | (m << (23 - f->mant));
}

/* 16-bit NaN from an f32 NaN: same sign, top payload bits kept, quiet bit
 * set. */
static uint16_t fmt_nan_from_f32(const format16 *f, uint32_t u)
{
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint16_t exp_all = (uint16_t)(fmt_exp_max(f) << f->mant);
    uint16_t quiet = (uint16_t)(1u << (f->mant - 1));
    uint16_t payload = (uint16_t)((u & 0x7FFFFF) >> (23 - f->mant));
    return (uint16_t)(sign | exp_all | quiet | payload);
}

/* Every finite non-negative value of the format in increasing order (they
 * are the patterns 0 .. largest finite), plus the pattern of infinity with
 * the value the next binade would start at: rounding with an unbounded
 * exponent and calling anything that lands there infinity is IEEE overflow. */
typedef struct ladder {
    int count; /* including the infinity rung */
    double value[1 << 15];
} ladder;

static void ladder_build(ladder *l, const format16 *f)
{
    uint16_t inf = (uint16_t)(fmt_exp_max(f) << f->mant);
    l->count = inf + 1;
    for (int h = 0; h < inf; h++)
        l->value[h] = fmt_value(f, (uint16_t)h);
    int bias = (1 << (f->expo - 1)) - 1;
    l->value[inf] = ldexp(1.0, fmt_exp_max(f) - bias);
}

/* Round x to the format: nearest rung, ties to the even pattern. Exact: the
 * midpoint of two adjacent rungs and 2|x| are both exact in double. */
static uint16_t ladder_round(const ladder *l, const format16 *f, float x)
{
    uint32_t u = bits_of(x);
    if (isnan(x))
        return fmt_nan_from_f32(f, u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    double ax = fabs((double)x);
    int top = l->count - 1;
    if (ax >= l->value[top])
        return (uint16_t)(sign | top);
    /* first rung >= ax */
    int lo = 0, hi = top;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (l->value[mid] >= ax)
            hi = mid;
        else
            lo = mid + 1;
    }
    int up = lo;
    if (l->value[up] == ax)
        return (uint16_t)(sign | up);
    int down = up - 1;
    double twice = 2.0 * ax, mid = l->value[down] + l->value[up];
    int pick;
    if (twice < mid)
        pick = down;
    else if (twice > mid)
        pick = up;
    else
        pick = (down & 1) ? up : down;
    return (uint16_t)(sign | pick);
}

/* ---- widening: all 65,536 patterns ---- */

static void check_widen_all(const format16 *f, float (*convert)(uint16_t), int quiet_nan, const char *what)
{
    tally t = {what, 0, 0};
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        uint32_t got = bits_of(convert((uint16_t)h));
        uint32_t want;
        if (fmt_is_nan(f, (uint16_t)h)) {
            want = fmt_nan_to_f32(f, (uint16_t)h);
            if (!quiet_nan) /* NaN-ness, sign and payload; the quiet bit as it was */
                want = (want & ~0x400000u) | (((uint32_t)h << 16) & 0x400000u);
        } else {
            want = bits_of((float)fmt_value(f, (uint16_t)h));
        }
        expect_u32(&t, h, want, got);
    }
    tally_done(&t);
}

static void test_f16_to_f32_exhaustive(void)
{
    check_widen_all(&F16, half_f16_to_f32, 1, "f16 -> f32, all 65536 patterns");
}

static void test_bf16_to_f32_exhaustive(void)
{
    /* bf16 is the top half of an f32: widening is exact, NaNs included
     * (half.h keeps a signalling bf16 NaN signalling, as a shift does) */
    check_widen_all(&BF16, half_bf16_to_f32, 0, "bf16 -> f32, all 65536 patterns");
    for (uint32_t h = 0; h <= 0xFFFF; h++) {
        uint32_t got = bits_of(half_bf16_to_f32((uint16_t)h));
        if (got != h << 16) {
            CHECK(0, "bf16 -> f32 0x%04x: expected 0x%08x, got 0x%08x", (unsigned)h, (unsigned)(h << 16), got);
            break;
        }
    }
}

/* ---- narrowing: inputs that matter, and random ones ---- */

typedef struct float_list {
    uint32_t *bits;
    size_t count, cap;
} float_list;

static void list_add(float_list *l, uint32_t u)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint32_t *grown = realloc(l->bits, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        l->bits = grown;
        l->cap = cap;
    }
    l->bits[l->count++] = u;
}

static void list_add_both_signs(float_list *l, float x)
{
    list_add(l, bits_of(x));
    list_add(l, bits_of(x) ^ 0x80000000u);
}

static void list_add_with_neighbours(float_list *l, float x)
{
    list_add_both_signs(l, x);
    list_add_both_signs(l, nextafterf(x, INFINITY));
    list_add_both_signs(l, nextafterf(x, 0.0f));
}

static const uint32_t special_f32[] = {
    0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007FFFFFu, 0x807FFFFFu, 0x00400000u, 0x00800000u,
    0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F800000u, 0xFF800000u, /* zeros, f32 subnormals, FLT_MAX, infinities */
    0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FBFFFFFu, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FA00000u,
    0x7F802000u, 0x7F801FFFu, 0x7FC01234u, 0x7F8FFFFFu, 0xFFB00001u, /* quiet and signalling NaNs, payloads */
    0x477FE000u, /* 65504, the largest f16 */
    0x477FEFFFu, /* 65519.99 */
    0x477FF000u, /* 65520: half way to 65536, rounds to infinity */
    0x477FF001u, 0x47800000u, 0x47C35000u, /* 65536, 100000 */
    0x33000000u, /* 2^-25: half the smallest f16 subnormal, ties to zero */
    0x33000001u, 0x32FFFFFFu, 0x33C00000u, /* 1.5 * 2^-24: ties to 2 * 2^-24 */
    0x387FC000u, 0x387FE000u, 0x387FF000u, 0x38800000u, /* around the smallest f16 normal */
    0x3F800000u, 0x3F801000u, 0x3F803000u, 0x3F808000u, 0x3F818000u, 0x3F7FFFFFu, 0x3F7F8000u,
};

/* Every pattern of the format, every midpoint of adjacent finite values (the
 * ties) with the floats just above and below it, both signs. */
static void add_ladder_inputs(float_list *l, const ladder *lad)
{
    for (int i = 0; i < lad->count - 1; i++) {
        float v = (float)lad->value[i];
        list_add_with_neighbours(l, v);
        double mid = (lad->value[i] + lad->value[i + 1]) / 2;
        float m = (float)mid;
        if ((double)m != mid) {
            CHECK(0, "midpoint %.17g is not exact in f32", mid);
            continue;
        }
        list_add_with_neighbours(l, m);
    }
    list_add_with_neighbours(l, (float)lad->value[lad->count - 1]);
}

static void add_specials(float_list *l)
{
    for (size_t i = 0; i < sizeof special_f32 / sizeof special_f32[0]; i++)
        list_add(l, special_f32[i]);
    test_rng rng = test_rng_seed(11);
    for (int i = 0; i < 2000; i++) /* f32 subnormals */
        list_add(l, (uint32_t)(test_rng_next(&rng) & 0x807FFFFFu));
    for (int i = 0; i < 2000; i++) /* NaNs with random payloads */
        list_add(l, (uint32_t)(test_rng_next(&rng) | 0x7F800000u) | ((uint32_t)i % 2 ? 1u : 0x400000u));
}

/* lo_exp..hi_exp: biased f32 exponents to draw from (all 8 bits: 0..255) */
static void add_random(float_list *l, size_t count, unsigned lo_exp, unsigned hi_exp, uint64_t seed)
{
    test_rng rng = test_rng_seed(seed);
    for (size_t i = 0; i < count; i++) {
        uint64_t r = test_rng_next(&rng);
        uint32_t exponent = lo_exp + (uint32_t)((r >> 40) % (hi_exp - lo_exp + 1));
        uint32_t u = ((uint32_t)r & 0x807FFFFFu) | (exponent << 23);
        list_add(l, u);
    }
}

static void check_narrow(const float_list *in, const ladder *lad, const format16 *f, uint16_t (*convert)(float),
                         const char *what)
{
    tally t = {what, 0, 0};
    for (size_t i = 0; i < in->count; i++) {
        float x = float_of(in->bits[i]);
        expect_u16(&t, in->bits[i], ladder_round(lad, f, x), convert(x));
    }
    tally_done(&t);
}

static ladder f16_ladder, bf16_ladder;

static void test_f32_to_f16_rounding(void)
{
    ladder_build(&f16_ladder, &F16);
    CHECK(f16_ladder.value[0x7BFF] == 65504.0, "reference: largest f16 expected 65504, got %g",
          f16_ladder.value[0x7BFF]);
    CHECK(f16_ladder.value[1] == ldexp(1, -24), "reference: smallest f16 subnormal expected 2^-24");

    float_list edges = {0};
    add_ladder_inputs(&edges, &f16_ladder);
    add_specials(&edges);
    check_narrow(&edges, &f16_ladder, &F16, half_f32_to_f16, "f32 -> f16, every value, tie and neighbour");

    /* the reference itself, on cases known by hand */
    CHECK(ladder_round(&f16_ladder, &F16, 65519.99f) == 0x7BFF, "reference: 65519.99 expected 0x7bff");
    CHECK(ladder_round(&f16_ladder, &F16, 65520.0f) == 0x7C00, "reference: 65520 expected 0x7c00");
    CHECK(ladder_round(&f16_ladder, &F16, -0x1p-25f) == 0x8000, "reference: -2^-25 expected 0x8000");
    CHECK(ladder_round(&f16_ladder, &F16, 1.0f + 0x1p-11f) == 0x3C00, "reference: 1 + 2^-11 expected 0x3c00");
    CHECK(ladder_round(&f16_ladder, &F16, 1.0f + 3 * 0x1p-11f) == 0x3C02, "reference: 1 + 3 * 2^-11 expected 0x3c02");

    float_list random = {0};
    add_random(&random, 2000000, 127 - 26, 127 + 17, 1); /* the f16 range and a little beyond */
    add_random(&random, 1000000, 0, 255, 2);             /* anything */
    check_narrow(&random, &f16_ladder, &F16, half_f32_to_f16, "f32 -> f16, 3M random floats");
    free(edges.bits);
    free(random.bits);
}

static void test_f32_to_bf16_rounding(void)
{
    ladder_build(&bf16_ladder, &BF16);
    CHECK(bf16_ladder.value[0x7F7F] == ldexp(255, 120), "reference: largest bf16 expected 255 * 2^120");
    CHECK(bf16_ladder.value[1] == ldexp(1, -133), "reference: smallest bf16 subnormal expected 2^-133");

    float_list edges = {0};
    add_ladder_inputs(&edges, &bf16_ladder);
    add_specials(&edges);
    check_narrow(&edges, &bf16_ladder, &BF16, half_f32_to_bf16, "f32 -> bf16, every value, tie and neighbour");

    float_list random = {0};
    add_random(&random, 3000000, 0, 255, 3);
    check_narrow(&random, &bf16_ladder, &BF16, half_f32_to_bf16, "f32 -> bf16, 3M random floats");
    free(edges.bits);
    free(random.bits);
}

/* ---- every kernel level against core/half.h, bit for bit ---- */

#define GUARD 24
#define MAX_ROW 40

static int level_available(kiln_isa level)
{
    return level <= cpu_get()->best_isa;
}

static float ref_f16_to_f32(uint16_t h)
{
    return half_f16_to_f32(h);
}

static float ref_bf16_to_f32(uint16_t h)
{
    return half_bf16_to_f32(h);
}

typedef void (*widen_fn)(const uint16_t *, float *, size_t);
typedef void (*narrow_fn)(const float *, uint16_t *, size_t);

/* The kernel writes a row of n at buf + GUARD + off; every word before and
 * after it holds a guard value that must survive. */
static void check_guards(tally *t, const void *buf, size_t elem, size_t n, size_t off)
{
    const unsigned char *b = buf;
    size_t start = (GUARD + off) * elem, end = start + n * elem, total = (n + off + 2 * GUARD) * elem;
    for (size_t i = 0; i < total; i++) {
        if (i >= start && i < end)
            continue;
        if (b[i] != 0xA5) {
            t->checked++;
            if (t->wrong++ < SHOW_FIRST)
                CHECK(0, "%s: row of %zu at offset %zu: wrote %s the row (byte %zu of the buffer)", t->what, n, off,
                      i < start ? "before" : "past the end of", i);
            return;
        }
    }
}

static void row_widen(tally *t, widen_fn fn, float (*ref)(uint16_t), const uint16_t *src, size_t n, size_t off,
                      float *buf)
{
    memset(buf, 0xA5, (n + off + 2 * GUARD) * sizeof *buf);
    fn(src, buf + GUARD + off, n);
    for (size_t i = 0; i < n; i++)
        expect_u32(t, src[i], bits_of(ref(src[i])), bits_of(buf[GUARD + off + i]));
    check_guards(t, buf, sizeof *buf, n, off);
}

static void row_narrow(tally *t, narrow_fn fn, uint16_t (*ref)(float), const float *src, size_t n, size_t off,
                       uint16_t *buf)
{
    memset(buf, 0xA5, (n + off + 2 * GUARD) * sizeof *buf);
    fn(src, buf + GUARD + off, n);
    for (size_t i = 0; i < n; i++)
        expect_u16(t, bits_of(src[i]), ref(src[i]), buf[GUARD + off + i]);
    check_guards(t, buf, sizeof *buf, n, off);
}

/* Whole arrays (every input through the vector body), then rows of 0..40
 * at odd source and destination offsets (the tails), then random lengths. */
static void sweep_widen(const char *what, widen_fn fn, float (*ref)(uint16_t), const uint16_t *src, size_t count)
{
    tally t = {what, 0, 0};
    float *buf = malloc((count + 64 + 2 * GUARD) * sizeof *buf);
    if (!buf)
        return;
    row_widen(&t, fn, ref, src, count, 0, buf);
    row_widen(&t, fn, ref, src + 1, count - 1, 3, buf);
    size_t start = 0;
    for (size_t n = 0; n <= MAX_ROW; n++)
        for (size_t off = 0; off < 18; off++) {
            start = (start + 977) % (count - MAX_ROW - 20);
            row_widen(&t, fn, ref, src + start + (off % 5) * 3 + 1, n, off, buf);
        }
    test_rng rng = test_rng_seed(5);
    for (int i = 0; i < 3000; i++) {
        size_t n = (size_t)(test_rng_next(&rng) % 300);
        size_t s = (size_t)(test_rng_next(&rng) % (count - n));
        row_widen(&t, fn, ref, src + s, n, (size_t)(test_rng_next(&rng) % 33), buf);
    }
    free(buf);
    tally_done(&t);
}

static void sweep_narrow(const char *what, narrow_fn fn, uint16_t (*ref)(float), const float *src, size_t count)
{
    tally t = {what, 0, 0};
    uint16_t *buf = malloc((count + 64 + 2 * GUARD) * sizeof *buf);
    if (!buf)
        return;
    row_narrow(&t, fn, ref, src, count, 0, buf);
    row_narrow(&t, fn, ref, src + 1, count - 1, 5, buf);
    size_t start = 0;
    for (size_t n = 0; n <= MAX_ROW; n++)
        for (size_t off = 0; off < 18; off++) {
            start = (start + 977) % (count - MAX_ROW - 20);
            row_narrow(&t, fn, ref, src + start + (off % 5) * 3 + 1, n, off, buf);
        }
    test_rng rng = test_rng_seed(6);
    for (int i = 0; i < 3000; i++) {
        size_t n = (size_t)(test_rng_next(&rng) % 300);
        size_t s = (size_t)(test_rng_next(&rng) % (count - n));
        row_narrow(&t, fn, ref, src + s, n, (size_t)(test_rng_next(&rng) % 33), buf);
    }
    free(buf);
    tally_done(&t);
}

static void test_kernel_levels_match_reference(void)
{
    /* inputs: all 65,536 patterns for widening; for narrowing the f16 and
     * bf16 ladders with ties and neighbours, specials, random floats,
     * shuffled so edge cases also land in vector lanes and tails */
    uint16_t *patterns = malloc(65536 * sizeof *patterns);
    if (!patterns)
        return;
    for (uint32_t h = 0; h <= 0xFFFF; h++)
        patterns[h] = (uint16_t)h;

    if (f16_ladder.count == 0)
        ladder_build(&f16_ladder, &F16);
    if (bf16_ladder.count == 0)
        ladder_build(&bf16_ladder, &BF16);
    float_list in = {0};
    add_ladder_inputs(&in, &f16_ladder);
    add_ladder_inputs(&in, &bf16_ladder);
    add_specials(&in);
    add_random(&in, 500000, 127 - 26, 127 + 17, 8);
    add_random(&in, 500000, 0, 255, 9);
    test_rng rng = test_rng_seed(10);
    for (size_t i = in.count - 1; i > 0; i--) {
        size_t j = (size_t)(test_rng_next(&rng) % (i + 1));
        uint32_t tmp = in.bits[i];
        in.bits[i] = in.bits[j];
        in.bits[j] = tmp;
    }
    /* the edge cases also in order, at the front */
    float_list ordered = {0};
    for (size_t i = 0; i < sizeof special_f32 / sizeof special_f32[0]; i++)
        list_add(&ordered, special_f32[i]);
    add_ladder_inputs(&ordered, &f16_ladder);
    for (size_t i = 0; i < in.count; i++)
        list_add(&ordered, in.bits[i]);
    float *floats = malloc(ordered.count * sizeof *floats);
    if (!floats)
        return;
    memcpy(floats, ordered.bits, ordered.count * sizeof *floats);

    for (int level = KILN_ISA_SCALAR; level < KILN_ISA_COUNT; level++) {
        if (!level_available((kiln_isa)level)) {
            printf("     %s: not available on this cpu, skipped\n", kiln_isa_name((kiln_isa)level));
            continue;
        }
        const kernel_table *k = kernels_for((kiln_isa)level);
        char what[96];
        const char *name = kiln_isa_name((kiln_isa)level);
        snprintf(what, sizeof what, "%s f16_to_f32", name);
        sweep_widen(what, k->f16_to_f32, ref_f16_to_f32, patterns, 65536);
        snprintf(what, sizeof what, "%s bf16_to_f32", name);
        sweep_widen(what, k->bf16_to_f32, ref_bf16_to_f32, patterns, 65536);
        snprintf(what, sizeof what, "%s f32_to_f16", name);
        sweep_narrow(what, k->f32_to_f16, half_f32_to_f16, floats, ordered.count);
        snprintf(what, sizeof what, "%s f32_to_bf16", name);
        sweep_narrow(what, k->f32_to_bf16, half_f32_to_bf16, floats, ordered.count);
    }
    free(patterns);
    free(in.bits);
    free(ordered.bits);
    free(floats);
}

TEST_MAIN(TEST(test_f16_to_f32_exhaustive), TEST(test_bf16_to_f32_exhaustive), TEST(test_f32_to_f16_rounding),
          TEST(test_f32_to_bf16_rounding), TEST(test_kernel_levels_match_reference))
