/* Kernel dispatch: one table per level, cpu_set_isa() and KILN_ISA choose
 * among them. Written against cpu.h and kernels.h.
 *
 * The env_* cases check the level chosen at start from KILN_ISA; CMake runs
 * them once more each in a process of their own with the variable set (see
 * tests/CMakeLists.txt). They must run before anything calls cpu_set_isa(),
 * so they come first, and every case that changes the level puts it back. */
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "kernels/kernels.h"
#include "test_support.h"

#if defined(__x86_64__) || defined(_M_X64)
#define X86_KERNELS_BUILT 1
#else
#define X86_KERNELS_BUILT 0
#endif

static kiln_isa highest_built(void)
{
    return X86_KERNELS_BUILT ? KILN_ISA_AVX512 : KILN_ISA_SCALAR;
}

/* What cpu_isa() must be in a fresh process, given KILN_ISA: the level
 * asked for, clamped to the best the cpu has; the best when it is unset or
 * not a level name. */
static kiln_isa expected_start_level(void)
{
    kiln_isa best = cpu_get()->best_isa;
    const char *forced = getenv("KILN_ISA");
    kiln_isa want;
    if (!forced || !*forced || cpu_parse_isa(forced, &want) != 0)
        return best;
    return want < best ? want : best;
}

static void check_start_level(void)
{
    kiln_isa want = expected_start_level();
    const char *forced = getenv("KILN_ISA");
    if (!forced)
        forced = "(unset)";
    kiln_isa got = cpu_isa();
    CHECK(got == want, "KILN_ISA=%s on a cpu whose best is %s: expected %s at start, got %s", forced,
          kiln_isa_name(cpu_get()->best_isa), kiln_isa_name(want), kiln_isa_name(got));
    CHECK(cpu_get()->isa == want, "KILN_ISA=%s: expected cpu_get()->isa %s, got %s", forced, kiln_isa_name(want),
          kiln_isa_name(cpu_get()->isa));
    CHECK(kernels_get()->isa == want, "KILN_ISA=%s: expected kernels_get()->isa %s, got %s", forced,
          kiln_isa_name(want), kiln_isa_name(kernels_get()->isa));
    kiln_cpu_info info;
    kiln_cpu_query(&info);
    CHECK(info.isa == want, "KILN_ISA=%s: expected kiln_cpu_query isa %s, got %s", forced, kiln_isa_name(want),
          kiln_isa_name(info.isa));
    CHECK(info.best_isa == cpu_get()->best_isa, "kiln_cpu_query best_isa %s differs from cpu_get() %s",
          kiln_isa_name(info.best_isa), kiln_isa_name(cpu_get()->best_isa));
}

/* In the process CMake starts with KILN_ISA=<name>, check the level chosen;
 * in any other run (KILN_ISA unset or another value) there is nothing to
 * check here, and the line "skipped" lets CMake fail a run that lost its
 * environment. */
static void env_case(const char *name)
{
    const char *forced = getenv("KILN_ISA");
    if (!forced || strcmp(forced, name) != 0) {
        printf("     skipped: needs KILN_ISA=%s\n", name);
        return;
    }
    check_start_level();
}

static void env_scalar(void)
{
    env_case("scalar");
}

static void env_avx2(void)
{
    env_case("avx2");
}

static void env_avx512(void)
{
    env_case("avx512");
}

static void env_invalid(void)
{
    env_case("sse9");
}

/* Whatever KILN_ISA says (or not), the level at start follows it. */
static void test_start_level(void)
{
    check_start_level();
}

static void test_tables_per_level(void)
{
    for (int level = KILN_ISA_SCALAR; level < KILN_ISA_COUNT; level++) {
        const kernel_table *k = kernels_for((kiln_isa)level);
        CHECK(k != NULL, "kernels_for(%s): expected a table, got NULL", kiln_isa_name((kiln_isa)level));
        if (!k)
            continue;
        kiln_isa want = level <= (int)highest_built() ? (kiln_isa)level : KILN_ISA_SCALAR;
        CHECK(k->isa == want, "kernels_for(%s)->isa: expected %s, got %s", kiln_isa_name((kiln_isa)level),
              kiln_isa_name(want), kiln_isa_name(k->isa));
        CHECK(k->f16_to_f32 && k->f32_to_f16 && k->bf16_to_f32 && k->f32_to_bf16,
              "kernels_for(%s): every entry must be filled", kiln_isa_name((kiln_isa)level));
        CHECK(kernels_for((kiln_isa)level) == k, "kernels_for(%s): expected the same table on every call",
              kiln_isa_name((kiln_isa)level));
    }
    /* out of range: clamped to a real table */
    const kernel_table *k = kernels_for(KILN_ISA_COUNT);
    CHECK(k != NULL && (unsigned)k->isa < KILN_ISA_COUNT, "kernels_for(KILN_ISA_COUNT): expected a valid table");
}

static void test_set_isa(void)
{
    kiln_isa start = cpu_isa();
    kiln_isa best = cpu_get()->best_isa;
    CHECK(best <= highest_built(), "best level %s is above what was built (%s)", kiln_isa_name(best),
          kiln_isa_name(highest_built()));
    for (int level = KILN_ISA_SCALAR; level <= (int)best; level++) {
        kiln_isa got = cpu_set_isa((kiln_isa)level);
        CHECK(got == (kiln_isa)level, "cpu_set_isa(%s): expected to return it, got %s", kiln_isa_name((kiln_isa)level),
              kiln_isa_name(got));
        CHECK(cpu_isa() == (kiln_isa)level, "after cpu_set_isa(%s): cpu_isa() is %s", kiln_isa_name((kiln_isa)level),
              kiln_isa_name(cpu_isa()));
        CHECK(kernels_get()->isa == (kiln_isa)level, "after cpu_set_isa(%s): kernels_get()->isa is %s",
              kiln_isa_name((kiln_isa)level), kiln_isa_name(kernels_get()->isa));
        CHECK(kernels_get() == kernels_for((kiln_isa)level), "after cpu_set_isa(%s): expected kernels_for's table",
              kiln_isa_name((kiln_isa)level));
        kiln_cpu_info info;
        kiln_cpu_query(&info);
        CHECK(info.isa == (kiln_isa)level, "after cpu_set_isa(%s): kiln_cpu_query isa is %s",
              kiln_isa_name((kiln_isa)level), kiln_isa_name(info.isa));
    }
    /* above the best: clamped, and the best is what is used */
    for (int level = (int)best + 1; level < KILN_ISA_COUNT; level++) {
        cpu_set_isa(KILN_ISA_SCALAR);
        kiln_isa got = cpu_set_isa((kiln_isa)level);
        CHECK(got == best, "cpu_set_isa(%s) above the best: expected %s, got %s", kiln_isa_name((kiln_isa)level),
              kiln_isa_name(best), kiln_isa_name(got));
        CHECK(cpu_isa() == best && kernels_get()->isa == best, "cpu_set_isa(%s) above the best: %s in use, expected %s",
              kiln_isa_name((kiln_isa)level), kiln_isa_name(cpu_isa()), kiln_isa_name(best));
    }
    cpu_set_isa(KILN_ISA_SCALAR);
    kiln_isa got = cpu_set_isa(KILN_ISA_COUNT);
    CHECK(got == best && cpu_isa() == best, "cpu_set_isa(KILN_ISA_COUNT): expected %s, got %s (in use %s)",
          kiln_isa_name(best), kiln_isa_name(got), kiln_isa_name(cpu_isa()));
    /* the detected features do not move */
    CHECK(cpu_get()->best_isa == best, "best_isa changed after cpu_set_isa: %s", kiln_isa_name(cpu_get()->best_isa));
    cpu_set_isa(start);
    CHECK_EQ_INT(cpu_isa(), start);
}

static void test_features_agree_with_level(void)
{
    const kiln_cpu_info *info = cpu_get();
    if (info->best_isa >= KILN_ISA_AVX2)
        CHECK(info->has_avx2 && info->has_fma && info->has_f16c, "best is %s but avx2/fma/f16c missing: %d %d %d",
              kiln_isa_name(info->best_isa), info->has_avx2, info->has_fma, info->has_f16c);
    if (info->best_isa >= KILN_ISA_AVX512)
        CHECK(info->has_avx512f && info->has_avx512bw && info->has_avx512vl && info->has_avx512dq,
              "best is avx512 but a required avx512 feature is missing: f %d bw %d vl %d dq %d", info->has_avx512f,
              info->has_avx512bw, info->has_avx512vl, info->has_avx512dq);
    if (info->has_avx2 && info->has_fma && info->has_f16c)
        CHECK(info->best_isa >= KILN_ISA_AVX2 || !X86_KERNELS_BUILT, "cpu has avx2+fma+f16c, best is only %s",
              kiln_isa_name(info->best_isa));
    for (int level = 0; level < KILN_ISA_COUNT; level++) {
        kiln_isa parsed = KILN_ISA_COUNT;
        const char *name = kiln_isa_name((kiln_isa)level);
        CHECK(cpu_parse_isa(name, &parsed) == 0 && parsed == (kiln_isa)level,
              "cpu_parse_isa(\"%s\"): expected %d, got %d", name, level, parsed);
    }
    kiln_isa untouched = KILN_ISA_AVX2;
    CHECK(cpu_parse_isa("AVX2", &untouched) != 0 && cpu_parse_isa("", &untouched) != 0 &&
              cpu_parse_isa("avx", &untouched) != 0,
          "cpu_parse_isa must reject \"AVX2\", \"\" and \"avx\"");
    CHECK(untouched == KILN_ISA_AVX2, "cpu_parse_isa failure must leave *out alone, got %d", untouched);
    CHECK(kiln_isa_name(KILN_ISA_COUNT) != NULL, "kiln_isa_name(KILN_ISA_COUNT): expected a string, got NULL");
}

TEST_MAIN(TEST(env_scalar), TEST(env_avx2), TEST(env_avx512), TEST(env_invalid), TEST(test_start_level),
          TEST(test_tables_per_level), TEST(test_set_isa), TEST(test_features_agree_with_level))
