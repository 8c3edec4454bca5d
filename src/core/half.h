/*
 * half.h - IEEE binary16 and bfloat16 to and from binary32, one value at a
 * time. Conversions to 16 bits round to nearest, ties to even, as the
 * hardware does; NaN stays NaN (quiet), infinities stay infinite, values too
 * large become infinity and too small become (signed) zero or a subnormal.
 * The vectorized row conversions are in kernels/convert.h.
 */
#ifndef KILN_CORE_HALF_H
#define KILN_CORE_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t half_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float half_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float half_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1F;
    uint32_t mantissa = h & 0x3FF;
    if (exponent == 0x1F) /* inf or nan: keep the payload, make nan quiet */
        return half_bits_f32(sign | 0x7F800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0));
    if (exponent == 0) {
        if (mantissa == 0)
            return half_bits_f32(sign);
        /* subnormal: mantissa * 2^-24, exact in f32 */
        float magnitude = (float)mantissa * (1.0f / 16777216.0f);
        return sign ? -magnitude : magnitude;
    }
    return half_bits_f32(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

static inline uint16_t half_f32_to_f16(float f)
{
    uint32_t u = half_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7FFFFFFFu;
    if (abs >= 0x7F800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7C00 | (abs > 0x7F800000u ? 0x200 | ((abs >> 13) & 0x3FF) : 0));
    if (abs >= 0x477FF000u) /* rounds to beyond 65504: overflow */
        return (uint16_t)(sign | 0x7C00);
    if (abs < 0x38800000u) {
        /* result is subnormal or zero: scale so that the f16 subnormal step
         * (2^-24) becomes one unit, rounding to nearest even in the add */
        if (abs < 0x33000000u) /* below half the smallest subnormal: zero */
            return sign;
        uint32_t exponent = abs >> 23;
        uint32_t mantissa = (abs & 0x7FFFFF) | 0x800000;
        uint32_t shift = 126 - exponent; /* 14..24 */
        uint32_t value = mantissa >> shift;
        uint32_t rest = mantissa & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rest > halfway || (rest == halfway && (value & 1)))
            value++;
        return (uint16_t)(sign | value);
    }
    /* normal: rebias the exponent, round the 13 dropped bits to nearest even;
     * a carry out of the mantissa correctly bumps the exponent */
    uint32_t value = abs - 0x38000000u;
    uint32_t rounded = value + 0xFFF + ((value >> 13) & 1);
    return (uint16_t)(sign | (rounded >> 13));
}

static inline float half_bf16_to_f32(uint16_t b)
{
    return half_bits_f32((uint32_t)b << 16);
}

static inline uint16_t half_f32_to_bf16(float f)
{
    uint32_t u = half_f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) /* nan: keep it nan and quiet */
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

#endif
