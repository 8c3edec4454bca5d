#include "pipeline/rng.h"

#include <math.h>
#include <string.h>
#include <strings.h>

int rng_parse(const char *name, rng_kind *out)
{
    if (strcasecmp(name, "torch-cpu") == 0 || strcasecmp(name, "cpu") == 0) {
        *out = RNG_TORCH_CPU;
        return 0;
    }
    if (strcasecmp(name, "philox") == 0 || strcasecmp(name, "gpu") == 0 || strcasecmp(name, "cuda") == 0) {
        *out = RNG_PHILOX;
        return 0;
    }
    return -1;
}

const char *rng_name(rng_kind kind)
{
    return kind == RNG_PHILOX ? "philox" : "torch-cpu";
}

/* ---- mt19937, seeded as PyTorch's CPUGeneratorImpl (the seed's low 32
 * bits, as std::mt19937 would be) ---- */

static void mt_seed(rng_stream *r, uint64_t seed)
{
    r->mt[0] = (uint32_t)seed; /* only the low 32 bits seed the engine */
    for (int i = 1; i < 624; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mt_index = 624;
}

static void mt_twist(rng_stream *r)
{
    for (int i = 0; i < 624; i++) {
        uint32_t y = (r->mt[i] & 0x80000000u) | (r->mt[(i + 1) % 624] & 0x7FFFFFFFu);
        uint32_t v = r->mt[(i + 397) % 624] ^ (y >> 1);
        if (y & 1)
            v ^= 0x9908B0DFu;
        r->mt[i] = v;
    }
    r->mt_index = 0;
}

uint32_t rng_mt_next(rng_stream *r)
{
    if (r->mt_index >= 624)
        mt_twist(r);
    uint32_t y = r->mt[r->mt_index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    y ^= y >> 18;
    return y;
}

void rng_init(rng_stream *r, rng_kind kind, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->seed = seed;
    if (kind == RNG_TORCH_CPU)
        mt_seed(r, seed);
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits */
static float mt_uniform_float(rng_stream *r)
{
    return (float)(rng_mt_next(r) & ((1u << 24) - 1)) * (1.0f / 16777216.0f);
}

/* at::uniform_real_distribution<double>(0, 1): 53 bits of two words, the
 * first one high */
static double mt_uniform_double(rng_stream *r)
{
    uint64_t hi = rng_mt_next(r), lo = rng_mt_next(r);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The log, sin and cos torch's AVX2 randn kernel uses (avx_mathfun.h's
 * Cephes polynomials, with the fused multiply-adds its build formed),
 * written out in scalar C so the noise is the same bit for bit on any
 * machine. The operation order is the specification: see
 * tests/data/golden/SAMPLERS.md, section 6.1. */
static float mathfun_log(float x)
{
    const float sqrthf = from_bits(0x3f3504f3), q1 = from_bits(0xb95e8083), q2 = from_bits(0x3f318000);
    static const uint32_t p[9] = {0x3d9021bb, 0xbdebd1b8, 0x3def251a, 0xbdfe5d4f, 0x3e11e9bf,
                                  0xbe2aae50, 0x3e4cceac, 0xbe7ffffc, 0x3eaaaaaa};
    uint32_t xi = to_bits(x);
    float e = (float)((int)(xi >> 23) - 0x7f) + 1.0f;
    x = from_bits((xi & ~0x7f800000u) | 0x3f000000u);
    if (x < sqrthf) {
        e -= 1.0f;
        float t = x - 1.0f;
        x = t + x;
    } else {
        x = x - 1.0f;
    }
    float z = x * x;
    float y = from_bits(p[0]);
    for (int i = 1; i < 9; i++)
        y = fmaf(y, x, from_bits(p[i]));
    y = y * x;
    float eq1 = e * q1;
    y = fmaf(y, z, eq1);
    float half_z = z * 0.5f;
    y = y - half_z;
    x = x + y;
    float eq2 = e * q2;
    x = x + eq2;
    return x;
}

static void mathfun_sincos(float theta, float *sin_out, float *cos_out)
{
    const float fopi = from_bits(0x3fa2f983);
    const float dp1 = from_bits(0xbf490000), dp2 = from_bits(0xb97da000), dp3 = from_bits(0xb3222169);
    const float s0 = from_bits(0xb94ca1f9), s1 = from_bits(0x3c08839e), s2 = from_bits(0xbe2aaaa3);
    const float c0 = from_bits(0x37ccf5ce), c1 = from_bits(0xbab6061a), c2 = from_bits(0x3d2aaaa5);
    float y = theta * fopi;
    int j = (int)y;
    j = (j + 1) & ~1;
    y = (float)j;
    int sin_neg = (j & 4) != 0;
    int cos_neg = ((~(j - 2)) & 4) != 0;
    int swap = (j & 2) != 0;
    float x = fmaf(y, dp1, theta);
    x = fmaf(y, dp2, x);
    x = fmaf(y, dp3, x);
    float z = x * x;
    float c = fmaf(fmaf(c0, z, c1), z, c2);
    c = c * z;
    float half_z = z * 0.5f;
    c = fmaf(c, z, -half_z);
    c = c + 1.0f;
    float s = fmaf(fmaf(s0, z, s1), z, s2);
    s = s * z;
    s = fmaf(s, x, x);
    float sin_v = swap ? c : s, cos_v = swap ? s : c;
    *sin_out = sin_neg ? -sin_v : sin_v;
    *cos_out = cos_neg ? -cos_v : cos_v;
}

/* Box-Muller on 16 uniforms in place: pairs (j, j + 8) */
static void normal_fill_16(float *d)
{
    const float two_pi = from_bits(0x40c90fdb);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * mathfun_log(u1));
        float theta = two_pi * u2;
        float s, c;
        mathfun_sincos(theta, &s, &c);
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}

/* torch.randn on CPU, float32 (SAMPLERS.md 6.1): n >= 16 fills uniforms
 * then transforms each full block of 16, redrawing the last 16 when n is
 * not a multiple of 16; smaller tensors draw double normals one at a time,
 * through the generator's cached second value. */
static void torch_cpu_randn(rng_stream *r, float *out, size_t n)
{
    if (n >= 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = mt_uniform_float(r);
        for (size_t i = 0; i + 16 <= n; i += 16)
            normal_fill_16(out + i);
        if (n % 16 != 0) {
            float *tail = out + n - 16;
            for (int i = 0; i < 16; i++)
                tail[i] = mt_uniform_float(r);
            normal_fill_16(tail);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (r->has_cached_normal) {
            r->has_cached_normal = 0;
            out[i] = (float)r->cached_normal;
            continue;
        }
        double u1 = mt_uniform_double(r), u2 = mt_uniform_double(r);
        double radius = sqrt(-2.0 * log(1.0 - u2));
        double theta = 2.0 * M_PI * u1;
        r->cached_normal = radius * sin(theta);
        r->has_cached_normal = 1;
        out[i] = (float)(radius * cos(theta));
    }
}

/* ---- Philox 4x32-10, as PyTorch's CUDA generator draws torch.randn:
 * value i of a call uses counter (offset, 0, i, 0) and key (seed low,
 * seed high), then Box-Muller on the first two words, keeping the sine
 * half. Each call advances the offset by one. This follows AUTOMATIC1111's
 * reimplementation (modules/rng_philox.py), which matches CUDA's output. ---- */

static void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t v1 = (uint64_t)c[0] * 0xD2511F53u, v2 = (uint64_t)c[2] * 0xCD9E8D57u;
    uint32_t c1 = c[1], c3 = c[3];
    c[0] = (uint32_t)(v2 >> 32) ^ c1 ^ k[0];
    c[1] = (uint32_t)v2;
    c[2] = (uint32_t)(v1 >> 32) ^ c3 ^ k[1];
    c[3] = (uint32_t)v1;
}

static void philox_randn(rng_stream *r, float *out, size_t n)
{
    /* the reference keeps these constants as float32 but, multiplying them
     * by uint32 arrays, computes in float64 (numpy's type promotion) */
    const double inv = (double)2.3283064e-10f, inv_half = (double)(2.3283064e-10f / 2.0f);
    const float inv_2pi_f = (float)(2.3283064e-10 * 6.2831855);
    const double inv_2pi = (double)inv_2pi_f, inv_2pi_half = (double)(inv_2pi_f / 2.0f);
    for (size_t i = 0; i < n; i++) {
        uint32_t c[4] = {(uint32_t)r->philox_offset, 0, (uint32_t)i, 0};
        uint32_t k[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32)};
        for (int round = 0; round < 9; round++) {
            philox_round(c, k);
            k[0] += 0x9E3779B9u;
            k[1] += 0xBB67AE85u;
        }
        philox_round(c, k);
        double u = (double)c[0] * inv + inv_half;
        double v = (double)c[1] * inv_2pi + inv_2pi_half;
        out[i] = (float)(sqrt(-2.0 * log(u)) * sin(v));
    }
    r->philox_offset += 1;
}

void rng_randn(rng_stream *r, float *out, size_t n)
{
    if (r->kind == RNG_PHILOX)
        philox_randn(r, out, n);
    else
        torch_cpu_randn(r, out, n);
}
