#include "core/cpu.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CPU_X86 1
#else
#define CPU_X86 0
#endif

static kiln_cpu_info detected;
static size_t l2_bytes;
static atomic_int isa_in_use;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static const char *const isa_names[KILN_ISA_COUNT] = {"scalar", "avx2", "avx512"};

const char *kiln_isa_name(kiln_isa isa)
{
    if ((unsigned)isa >= KILN_ISA_COUNT)
        return "unknown";
    return isa_names[isa];
}

int cpu_parse_isa(const char *name, kiln_isa *out)
{
    for (int i = 0; i < KILN_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) {
            *out = (kiln_isa)i;
            return 0;
        }
    return -1;
}

static int count_logical_cores(void)
{
    /* The affinity mask, not the machine's count: taskset and cgroup cpusets
     * limit what this process may use. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

#if CPU_X86
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect_x86(kiln_cpu_info *info)
{
    unsigned a, b, c, d;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 1)
        return;

    __cpuid(1, a, b, c, d);
    int has_osxsave = (c >> 27) & 1;
    int has_avx = (c >> 28) & 1;
    int fma = (c >> 12) & 1;
    int f16c = (c >> 29) & 1;

    /* The CPU may have the instructions while the OS does not save the
     * registers they use; XCR0 says what the OS saves. */
    uint64_t xcr0 = has_osxsave ? read_xcr0() : 0;
    int os_ymm = (xcr0 & 0x6) == 0x6;
    int os_zmm = (xcr0 & 0xE6) == 0xE6;

    unsigned b7 = 0, c7 = 0, a7_1 = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d);
        if (a >= 1) {
            __cpuid_count(7, 1, a7_1, b, c, d);
        }
    }

    int avx_ok = has_avx && os_ymm;
    info->has_fma = avx_ok && fma;
    info->has_f16c = avx_ok && f16c;
    info->has_avx2 = avx_ok && ((b7 >> 5) & 1);
    int zmm_ok = avx_ok && os_zmm;
    info->has_avx512f = zmm_ok && ((b7 >> 16) & 1);
    info->has_avx512dq = zmm_ok && ((b7 >> 17) & 1);
    info->has_avx512bw = zmm_ok && ((b7 >> 30) & 1);
    info->has_avx512vl = zmm_ok && ((b7 >> 31) & 1);
    info->has_avx512_vnni = zmm_ok && ((c7 >> 11) & 1);
    info->has_avx512_bf16 = zmm_ok && ((a7_1 >> 5) & 1);

    /* unsigned in GCC's cpuid.h, int in clang's */
    if ((unsigned)__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        unsigned regs[12];
        for (unsigned i = 0; i < 3; i++)
            __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
        char brand[49];
        memcpy(brand, regs, 48);
        brand[48] = '\0';
        const char *start = brand;
        while (*start == ' ')
            start++;
        strncpy(info->model, start, sizeof info->model - 1);
        size_t len = strlen(info->model);
        while (len > 0 && info->model[len - 1] == ' ')
            info->model[--len] = '\0';
    }
}
#endif

static kiln_isa best_level(const kiln_cpu_info *info)
{
    if (info->has_avx512f && info->has_avx512bw && info->has_avx512vl && info->has_avx512dq &&
        info->has_fma && info->has_f16c)
        return KILN_ISA_AVX512;
    if (info->has_avx2 && info->has_fma && info->has_f16c)
        return KILN_ISA_AVX2;
    return KILN_ISA_SCALAR;
}

static void detect(void)
{
    kiln_cpu_info *info = &detected;
    memset(info, 0, sizeof *info);
    strcpy(info->model, "unknown cpu");
    info->logical_cores = count_logical_cores();
#if CPU_X86
    detect_x86(info);
#endif
    info->best_isa = best_level(info);
    info->isa = info->best_isa;
    /* glibc reads it from cpuid; 0 or -1 where it cannot tell */
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    l2_bytes = l2 > 0 ? (size_t)l2 : (size_t)1 << 20;

    const char *forced = getenv("KILN_ISA");
    if (forced && *forced) {
        kiln_isa want;
        if (cpu_parse_isa(forced, &want) != 0)
            LOG_WARN("KILN_ISA=%s is not one of scalar, avx2, avx512; using %s", forced,
                     kiln_isa_name(info->best_isa));
        else if (want > info->best_isa)
            LOG_WARN("KILN_ISA=%s asks for more than this cpu offers; using %s", forced,
                     kiln_isa_name(info->best_isa));
        else
            info->isa = want;
    }
    atomic_store(&isa_in_use, (int)info->isa);
    LOG_DEBUG("cpu: %s, %d logical cores, kernels %s (best %s)", info->model, info->logical_cores,
              kiln_isa_name(info->isa), kiln_isa_name(info->best_isa));
}

const kiln_cpu_info *cpu_get(void)
{
    pthread_once(&detect_once, detect);
    return &detected;
}

size_t cpu_l2_bytes(void)
{
    cpu_get();
    return l2_bytes;
}

kiln_isa cpu_isa(void)
{
    cpu_get();
    return (kiln_isa)atomic_load(&isa_in_use);
}

kiln_isa cpu_set_isa(kiln_isa isa)
{
    const kiln_cpu_info *info = cpu_get();
    if ((unsigned)isa >= KILN_ISA_COUNT || isa > info->best_isa) {
        LOG_WARN("kernel level %s is not available here; using %s", kiln_isa_name(isa),
                 kiln_isa_name(info->best_isa));
        isa = info->best_isa;
    }
    atomic_store(&isa_in_use, (int)isa);
    return isa;
}

void kiln_cpu_query(kiln_cpu_info *out)
{
    *out = *cpu_get();
    out->isa = cpu_isa();
}
