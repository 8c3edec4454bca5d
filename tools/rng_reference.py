#!/usr/bin/env python3
"""Golden normal-noise tensors for kiln's noise generators, and the proof of
the algorithm that tests/data/golden/SAMPLERS.md ("Noise generators") states.

    python3 tools/rng_reference.py [OUT_DIR]      (default: tests/data/golden)

Writes OUT_DIR/rng.safetensors.  Needs numpy and PyTorch (Debian's
python3-torch 1.13 was used; any x86-64 build whose CPU capability is AVX2 or
AVX512 gives the same bits) to regenerate; the tests read only the file.

Two generators are covered:

torch_cpu  torch.randn(shape) after torch.manual_seed(seed) on the CPU:
           mt19937 + 24-bit uniforms + Box-Muller, in torch's two code paths
           (numel >= 16: normal_fill in blocks of 16 with the avx_mathfun
           log/sincos; numel < 16: the scalar double Box-Muller with its cached
           second value).  The numpy re-implementation below (TorchCpuRng)
           reproduces torch bit for bit on every stored case; the script
           refuses to write the file otherwise.  The variant torch uses on
           CPUs without AVX2 (ATEN_CPU_CAPABILITY=default: glibc logf/cosf/
           sinf) is stored as torch_cpu_default.* and checked the same way.

philox     torch.randn(shape, device='cuda') after torch.manual_seed(seed) as
           AUTOMATIC1111 re-implements it in modules/rng_philox.py (its "NV"
           noise source).  There is no CUDA here: the values are validated
           against the expected output published in that file's docstring and
           against a torch CUDA print-out of seed 0 published in
           kapilsh/cuda-mode-lecture (see PHILOX_PUBLISHED below).

Tensor names: <generator>.s<seed>.<shape as AxBxC> for one randn call right
after seeding; <generator>.s<seed>.seq<k>.<shape> for the k-th call of a
sequence of calls after one seeding (k from 0).  Metadata "cases" lists every
tensor with its seed, shape and call index.  mt19937.s<seed>.words (U32) holds
the first 1250 raw engine outputs for seed, for debugging the engine alone.
"""
import ctypes
import ctypes.util
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np

F32 = np.float32


# ----------------------------------------------------------------------------
# safetensors writer
# ----------------------------------------------------------------------------

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.uint32): "U32",
              np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}


def write_safetensors(path, tensors, metadata):
    """tensors: dict name -> numpy array (written in sorted name order)."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        raw = a.tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# mt19937 exactly as at::mt19937 (aten/src/ATen/core/MT19937RNGEngine.h)
# ----------------------------------------------------------------------------

class MT19937:
    N, M = 624, 397

    def __init__(self, seed):
        # torch keeps the 64-bit seed but seeds the engine with its low 32 bits
        s = seed & 0xFFFFFFFF
        st = [s]
        for j in range(1, self.N):
            p = st[-1]
            st.append((1812433253 * (p ^ (p >> 30)) + j) & 0xFFFFFFFF)
        self.state = np.array(st, dtype=np.uint64)
        self.buf = np.zeros(0, dtype=np.uint32)

    def _twist(self):
        st, N, M = self.state, self.N, self.M
        upper, lower, matrix_a = np.uint64(0x80000000), np.uint64(0x7FFFFFFF), np.uint64(0x9908B0DF)

        def tw(u, v):
            y = (u & upper) | (v & lower)
            return (y >> np.uint64(1)) ^ np.where((v & np.uint64(1)) != 0, matrix_a, np.uint64(0))
        # the sequential in-place recurrence st[i] = st[(i+M)%N] ^ tw(st[i], st[i+1])
        # in four slices; each reads only values that are final (or still old)
        # exactly as the sequential loop would see them
        a = N - M                                                       # 227
        st[0:a] = st[M:N] ^ tw(st[0:a], st[1:a + 1])
        st[a:2 * a] = st[0:a] ^ tw(st[a:2 * a], st[a + 1:2 * a + 1])
        st[2 * a:N - 1] = st[a:N - 1 - a] ^ tw(st[2 * a:N - 1], st[2 * a + 1:N])
        st[N - 1] = st[M - 1] ^ tw(st[N - 1:N], st[0:1])[0]
        y = st.copy()
        y ^= y >> np.uint64(11)
        y ^= (y << np.uint64(7)) & np.uint64(0x9D2C5680)
        y ^= (y << np.uint64(15)) & np.uint64(0xEFC60000)
        y ^= y >> np.uint64(18)
        return (y & np.uint64(0xFFFFFFFF)).astype(np.uint32)

    def words(self, n):
        while len(self.buf) < n:
            self.buf = np.concatenate([self.buf, self._twist()])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


# ----------------------------------------------------------------------------
# float32 helpers: an exact fused multiply-add, and avx_mathfun's log/sincos
# ----------------------------------------------------------------------------

def fmaf(a, b, c):
    """Correctly rounded float32 fma(a, b, c) (a*b exact in double, then the
    sum rounded to odd in double, then to float32: a single rounding)."""
    a = np.asarray(a, F32).astype(np.float64)
    b = np.asarray(b, F32).astype(np.float64)
    c = np.asarray(c, F32).astype(np.float64)
    p = a * b
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)
    odd = (s.view(np.int64) & 1) == 1
    s = np.where((err != 0) & ~odd, np.nextafter(s, s + err), s)
    return s.astype(F32)


def _f(v):
    return F32(v)


# constants of aten/src/ATen/native/cpu/avx_mathfun.h, rounded to float
SQRTHF = _f(0.707106781186547524)
LOG_P = [_f(v) for v in (7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1,
                         1.4249322787E-1, -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1,
                         3.3333331174E-1)]
LOG_Q1, LOG_Q2 = _f(-2.12194440e-4), _f(0.693359375)
DP1, DP2, DP3 = _f(-0.78515625), _f(-2.4187564849853515625e-4), _f(-3.77489497744594108e-8)
SINCOF = [_f(v) for v in (-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1)]
COSCOF = [_f(v) for v in (2.443315711809948E-005, -1.388731625493765E-003, 4.166664568298827E-002)]
FOPI = _f(1.27323954473516)
TWO_PI_F = _f(2.0 * math.pi)


def log256_ps(x):
    """avx_mathfun log256_ps for x in [2^-24, 1], with the multiply-adds that
    GCC contracts to FMA in torch's AVX2 build (found by matching torch)."""
    x = np.asarray(x, F32)
    xi = x.view(np.int32)
    e = ((xi >> 23) - 0x7F).astype(F32) + F32(1)
    x = ((xi & ~0x7F800000) | F32(0.5).view(np.int32)).view(F32)       # mantissa in [0.5, 1)
    mask = x < SQRTHF
    e = (e - np.where(mask, F32(1), F32(0))).astype(F32)
    x = ((x - F32(1)) + np.where(mask, x, F32(0))).astype(F32)         # x-1, or 2x-1 below sqrt(1/2)
    z = (x * x).astype(F32)
    y = LOG_P[0]
    for p in LOG_P[1:]:
        y = fmaf(y, x, p)                                               # Horner, fused
    y = (y * x).astype(F32)
    y = fmaf(y, z, (e * LOG_Q1).astype(F32))                            # y*z + e*q1, e*q1 rounded
    y = (y - (z * F32(0.5))).astype(F32)                                # z*0.5 is exact
    x = (x + y).astype(F32)
    x = (x + (e * LOG_Q2)).astype(F32)                                  # e*q2 is exact
    return x


def sincos256_ps(x):
    """avx_mathfun sincos256_ps for x in [0, 2*pi), FMA as GCC contracts it."""
    x = np.asarray(x, F32)
    sign_sin = np.signbit(x)
    x = np.abs(x)
    j = (x * FOPI).astype(F32).astype(np.int32)                         # cvttps: truncation
    j = (j + 1) & ~1
    y = j.astype(F32)
    sign_sin = sign_sin ^ ((j & 4) != 0)
    sign_cos = ((~(j - 2)) & 4) != 0
    poly_sin = (j & 2) == 0                                             # lanes where sin uses the sin polynomial
    # extended-precision reduction x - y*pi/4; y*DP1 and y*DP2 are exact here
    x = (x + (y * DP1)).astype(F32)
    x = (x + (y * DP2)).astype(F32)
    x = (x + (y * DP3).astype(F32)).astype(F32)
    z = (x * x).astype(F32)
    yc = fmaf(fmaf(COSCOF[0], z, COSCOF[1]), z, COSCOF[2])
    yc = (yc * z).astype(F32)
    yc = fmaf(yc, z, -(z * F32(0.5)))                                   # yc*z - z/2, fused
    yc = (yc + F32(1)).astype(F32)
    ys = fmaf(fmaf(SINCOF[0], z, SINCOF[1]), z, SINCOF[2])
    ys = (ys * z).astype(F32)
    ys = fmaf(ys, x, x)                                                 # ys*x + x, fused
    s = np.where(poly_sin, ys, yc)
    c = np.where(poly_sin, yc, ys)
    s = np.where(sign_sin, -s, s)
    c = np.where(sign_cos, -c, c)
    return s.astype(F32), c.astype(F32)


_libm = ctypes.CDLL(ctypes.util.find_library("m"))
for _fn in ("logf", "cosf", "sinf"):
    getattr(_libm, _fn).restype = ctypes.c_float
    getattr(_libm, _fn).argtypes = [ctypes.c_float]


def _libm_f(name, x):
    fn = getattr(_libm, name)
    return np.array([fn(float(v)) for v in np.asarray(x, F32).ravel()], dtype=F32).reshape(np.shape(x))


# ----------------------------------------------------------------------------
# torch CPU randn
# ----------------------------------------------------------------------------

class TorchCpuRng:
    """torch.Generator() on the CPU: seeding, randn, and the cached normal.

    path: 'avx2' (torch's CPU capability AVX2 or AVX512) or 'default'
    (ATEN_CPU_CAPABILITY=default, and CPUs without AVX2)."""

    def __init__(self, seed, path="avx2"):
        self.mt = MT19937(seed)
        self.path = path
        self.cached_normal = None        # CPUGeneratorImpl::next_double_normal_sample_

    # at::uniform_real_distribution<float>: 24 random bits of one 32-bit word
    def _uniform_f32(self, n):
        w = self.mt.words(n)
        return ((w & np.uint32(0xFFFFFF)).astype(np.float64) * 2.0 ** -24).astype(F32)

    # at::uniform_real_distribution<double>: 53 bits of random64() = (w0 << 32) | w1
    def _uniform_f64(self):
        w = self.mt.words(2)
        r64 = (int(w[0]) << 32) | int(w[1])
        return (r64 & ((1 << 53) - 1)) * 2.0 ** -53

    def _box_muller16(self, d):
        """normal_fill_16: d[0:8] -> u1 = 1 - d, d[8:16] -> u2; in place."""
        u1 = (F32(1) - d[:8]).astype(F32)
        u2 = d[8:16]
        if self.path == "avx2":
            radius = np.sqrt((F32(-2) * log256_ps(u1)).astype(F32)).astype(F32)
            theta = (TWO_PI_F * u2).astype(F32)
            s, c = sincos256_ps(theta)
        else:
            radius = np.sqrt((F32(-2) * _libm_f("logf", u1)).astype(F32)).astype(F32)
            theta = ((2.0 * math.pi) * u2.astype(np.float64)).astype(F32)   # 2.0f * pi<double> * u2, in double
            s, c = _libm_f("sinf", theta), _libm_f("cosf", theta)
        d[:8] = (radius * c).astype(F32)
        d[8:16] = (radius * s).astype(F32)

    def _normal_scalar(self):
        """at::normal_distribution<double>(0, 1) with the cached second value."""
        if self.cached_normal is not None:
            v, self.cached_normal = self.cached_normal, None
            return v
        u1 = self._uniform_f64()
        u2 = self._uniform_f64()
        r = math.sqrt(-2.0 * math.log1p(-u2))        # 1 - u2 is exact, so log(1-u2) == log1p(-u2) here
        theta = 2.0 * math.pi * u1
        self.cached_normal = r * math.sin(theta)
        return r * math.cos(theta)

    def randn(self, shape):
        n = int(np.prod(shape)) if len(shape) else 1
        if n >= 16:
            d = self._uniform_f32(n)
            for i in range(0, n - 15, 16):
                self._box_muller16(d[i:i + 16])
            if n % 16:
                # the last 16 outputs are recomputed from 16 fresh uniforms
                t = self._uniform_f32(16)
                self._box_muller16(t)
                d[n - 16:] = t
            return d.reshape(shape)
        return np.array([F32(self._normal_scalar()) for _ in range(n)], dtype=F32).reshape(shape)


# ----------------------------------------------------------------------------
# philox: AUTOMATIC1111 modules/rng_philox.py (torch CUDA randn imitation)
# ----------------------------------------------------------------------------

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
TWO_POW32_INV = np.array([2.3283064e-10], dtype=np.float32)
TWO_POW32_INV_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


def philox4x32_10(counter, key):
    """counter: 4 x N uint32, key: 2 x N uint32 -> 4 x N uint32 (10 rounds)."""
    c = [x.astype(np.uint64) for x in counter]
    k = [x.astype(np.uint64) for x in key]
    m32 = np.uint64(0xFFFFFFFF)
    for r in range(10):
        p0 = c[0] * np.uint64(PHILOX_M[0])
        p1 = c[2] * np.uint64(PHILOX_M[1])
        c = [((p1 >> np.uint64(32)) ^ c[1] ^ k[0]) & m32, p1 & m32,
             ((p0 >> np.uint64(32)) ^ c[3] ^ k[1]) & m32, p0 & m32]
        if r < 9:
            k = [(k[0] + np.uint64(PHILOX_W[0])) & m32, (k[1] + np.uint64(PHILOX_W[1])) & m32]
    return [x.astype(np.uint32) for x in c]


class PhiloxRng:
    """rng_philox.Generator: one Philox4x32-10 block per element; counter =
    (offset, 0, element index, 0), key = (seed low 32, seed high 32); the
    offset grows by 1 per randn call; only the first Box-Muller output of the
    first two words is used."""

    def __init__(self, seed):
        self.seed = seed & 0xFFFFFFFFFFFFFFFF
        self.offset = 0

    def randn(self, shape):
        n = int(np.prod(shape))
        counter = [np.full(n, self.offset, np.uint32), np.zeros(n, np.uint32),
                   np.arange(n, dtype=np.uint32), np.zeros(n, np.uint32)]
        key = [np.full(n, self.seed & 0xFFFFFFFF, np.uint32), np.full(n, self.seed >> 32, np.uint32)]
        self.offset += 1
        g = philox4x32_10(counter, key)
        # numpy promotes uint32 * float32 to float64: A1111's Box-Muller runs in double
        u = g[0] * TWO_POW32_INV + TWO_POW32_INV / 2
        v = g[1] * TWO_POW32_INV_2PI + TWO_POW32_INV_2PI / 2
        s = np.sqrt(-2.0 * np.log(u))
        return (s * np.sin(v)).astype(np.float32).reshape(shape)

    def randn_libm(self, shape):
        """The same in plain double arithmetic with the C library (what a C
        port computes); used to check that the float32 results agree."""
        n = int(np.prod(shape))
        counter = [np.full(n, self.offset, np.uint32), np.zeros(n, np.uint32),
                   np.arange(n, dtype=np.uint32), np.zeros(n, np.uint32)]
        key = [np.full(n, self.seed & 0xFFFFFFFF, np.uint32), np.full(n, self.seed >> 32, np.uint32)]
        self.offset += 1
        g = philox4x32_10(counter, key)
        a, b = float(TWO_POW32_INV[0]), float(TWO_POW32_INV_2PI[0])
        ha, hb = float(TWO_POW32_INV[0] / 2), float(TWO_POW32_INV_2PI[0] / 2)
        out = [F32(math.sqrt(-2.0 * math.log(int(x) * a + ha)) * math.sin(int(y) * b + hb))
               for x, y in zip(g[0], g[1])]
        return np.array(out, dtype=F32).reshape(shape)


# Published values the philox re-implementation is checked against.
PHILOX_PUBLISHED = {
    # AUTOMATIC1111/stable-diffusion-webui modules/rng_philox.py docstring:
    # Generator(seed=0).randn(shape=(3, 4))
    "a1111_docstring_seed0_3x4": [
        -0.92466259, -0.42534415, -2.6438457, 0.14518388,
        -0.12086647, -0.57972564, -0.62285122, -0.32838709,
        -1.07454231, -0.36314407, -1.67105067, 2.26550497],
    # kapilsh/cuda-mode-lecture (blog post "CUDA Mode - Fusing Kernels Talk",
    # output of kernels/triton_fused_add_mul_relu.py): after
    # torch.manual_seed(0), in_out = torch.randn((8, 8), device='cuda'),
    # printed by torch with 4 decimals (float32: no dtype in the repr)
    "cuda_print_seed0_8x8": [
        -0.9247, -0.4253, -2.6438, 0.1452, -0.1209, -0.5797, -0.6229, -0.3284,
        -1.0745, -0.3631, -1.6711, 2.2655, 0.3117, -0.1842, 1.2866, 1.1820,
        -0.1271, 1.2169, 1.4353, 1.0605, -0.4941, -1.4244, -0.7244, -1.2973,
        0.0697, -0.0074, 1.8969, 0.6878, -0.0779, -0.8373, 1.3506, -0.2879,
        -0.5965, -0.3283, -0.9086, -0.8059, -0.7407, -0.0504, 0.5435, 1.5150,
        0.0141, 0.4532, 1.6349, 0.7124, -0.1806, 1.0252, -1.4622, -0.7554,
        -0.1836, 0.3824, 0.3918, -0.0830, 0.8971, -1.1123, 0.1116, 0.4863,
        -0.5499, -0.3231, -0.5469, 0.9049, 0.2837, 0.1210, 0.4730, -1.0823],
    # same print-out: "Expected Output" = relu(in_out + 0.5 * in_ + bias) with
    # in_ = randn((8, 8)) (second call, philox offset 1) and
    # bias = randn((1, 8)) (third call, offset 2), printed with 5 digits
    "cuda_print_seed0_relu_in_out_plus_half_in_plus_bias": [
        1.7098e+00, 0.0000e+00, 0.0000e+00, 0.0000e+00, 6.7049e-01, 0.0000e+00, 3.4424e-01, 1.1223e-02,
        1.8750e+00, 0.0000e+00, 0.0000e+00, 2.2105e+00, 6.6808e-01, 0.0000e+00, 1.8445e+00, 1.9246e+00,
        2.2614e+00, 1.3964e+00, 5.1802e-01, 2.0114e+00, 0.0000e+00, 0.0000e+00, 2.7715e-01, 0.0000e+00,
        2.4750e+00, 0.0000e+00, 1.9079e+00, 5.4869e-01, 3.7923e-01, 0.0000e+00, 3.1791e+00, 6.6843e-01,
        1.8234e+00, 0.0000e+00, 1.1147e-01, 0.0000e+00, 0.0000e+00, 0.0000e+00, 2.4250e+00, 3.2593e+00,
        2.2903e+00, 0.0000e+00, 1.1721e+00, 6.9331e-01, 1.0583e+00, 6.7518e-01, 0.0000e+00, 2.6185e-01,
        1.5804e+00, 0.0000e+00, 9.0740e-01, 1.6670e-01, 5.5230e-02, 0.0000e+00, 1.5325e+00, 3.5984e-01,
        1.5554e+00, 0.0000e+00, 0.0000e+00, 9.4380e-01, 2.9795e-03, 7.4125e-02, 1.6286e+00, 0.0000e+00],
}


def philox_exact_double(seed, shape, offset=0):
    """Box-Muller on the same philox words in double with the exact constants
    2^-32 and 2*pi (no float32 rounding anywhere): the reference the A1111
    docstring values turn out to agree with."""
    n = int(np.prod(shape))
    counter = [np.full(n, offset, np.uint32), np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32),
               np.zeros(n, np.uint32)]
    key = [np.full(n, seed & 0xFFFFFFFF, np.uint32), np.full(n, (seed >> 32) & 0xFFFFFFFF, np.uint32)]
    g = philox4x32_10(counter, key)
    u = g[0].astype(np.float64) * 2.0 ** -32 + 2.0 ** -33
    v = (g[1].astype(np.float64) * 2.0 ** -32 + 2.0 ** -33) * (2.0 * math.pi)
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).reshape(shape)


def philox_cuda_like_f32(seed, shape, offset=0):
    """curand's _curand_box_muller in float32 (uint32 -> float conversion,
    fmaf with CURAND_2POW32_INV / CURAND_2POW32_INV_2PI, logf, sinf; here with
    glibc's logf/sinf in place of CUDA's): an estimate of how far the GPU's
    own float32 evaluation lies from the stored values."""
    n = int(np.prod(shape))
    counter = [np.full(n, offset, np.uint32), np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32),
               np.zeros(n, np.uint32)]
    key = [np.full(n, seed & 0xFFFFFFFF, np.uint32), np.full(n, (seed >> 32) & 0xFFFFFFFF, np.uint32)]
    g = philox4x32_10(counter, key)
    a, b = F32(2.3283064e-10), F32(F32(2.3283064e-10) * F32(6.2831855))
    u = fmaf(g[0].astype(F32), a, F32(a / F32(2)))
    v = fmaf(g[1].astype(F32), b, F32(b / F32(2)))
    s = np.sqrt((F32(-2) * _libm_f("logf", u)).astype(F32)).astype(F32)
    return (s * _libm_f("sinf", v)).astype(F32).reshape(shape)


def check_philox_published():
    """Returns a list of human-readable lines; raises if a check fails."""
    lines = []
    want = np.array(PHILOX_PUBLISHED["a1111_docstring_seed0_3x4"])
    got = PhiloxRng(0).randn((3, 4)).ravel().astype(np.float64)
    err = np.abs(got - want).max()
    exact = np.abs(philox_exact_double(0, (3, 4)).ravel() - want).max()
    assert err < 3e-7 and exact < 1e-8, ("A1111 docstring", got, want)
    lines.append("A1111 rng_philox docstring, seed 0, (3,4), 8 decimals: stored values within %.1e "
                 "(the docstring matches the exact double-precision Box-Muller on the same philox words "
                 "to %.1e, i.e. it was not printed by the shipped numpy code)" % (err, exact))

    g = PhiloxRng(0)
    a, b, c = g.randn((8, 8)), g.randn((8, 8)), g.randn((1, 8))
    want = np.array(PHILOX_PUBLISHED["cuda_print_seed0_8x8"])
    err = np.abs(a.ravel().astype(np.float64) - want).max()
    assert err <= 0.5e-4 + 1e-6, ("cuda print 8x8", a, want)
    lines.append("torch CUDA print-out, seed 0, randn(8,8): all 64 values agree to the printed 4 decimals "
                 "(max |diff| %.1e)" % err)
    e = np.maximum(a + F32(0.5) * b + c, F32(0)).astype(np.float64).ravel()
    want = np.array(PHILOX_PUBLISHED["cuda_print_seed0_relu_in_out_plus_half_in_plus_bias"])
    rel = np.abs(e - want) / np.maximum(np.abs(want), 1e-3)
    assert (rel < 1e-4).all(), ("cuda print expected output", e, want)
    lines.append("torch CUDA print-out, seed 0, relu(randn(8,8) + 0.5*randn(8,8) + randn(1,8)) (philox "
                 "offsets 0, 1, 2): all 64 values agree to the printed 5 significant digits")
    d = 0.0
    for s in (0, 42):
        d = max(d, float(np.abs(PhiloxRng(s).randn((1, 4, 64, 64)).astype(np.float64)
                                - philox_cuda_like_f32(s, (1, 4, 64, 64)).astype(np.float64)).max()))
    lines.append("stored philox values vs a float32 curand-style evaluation (glibc logf/sinf): max |diff| "
                 "%.1e over seeds 0 and 42, 1x4x64x64" % d)
    return lines


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------

SEEDS = [0, 1, 42, 12345, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1]
SHAPES = [(3,), (15,), (16,), (17,), (1, 4, 8, 8), (2, 4, 8, 8)]
BIG = (1, 4, 64, 64)
BIG_SEEDS = [0, 42]
SEQUENCES = {
    # the scalar path's cached normal carries over to the next call; the
    # vectorized path neither reads nor clears it
    0: [(3,), (3,), (2,), (16,), (1,), (5,)],
    # A1111 with randn_source=CPU: image latent [4,h,w] drawn from a generator
    # seeded with seed+i, then one more [4,h,w] per ancestral step
    42: [(4, 8, 8), (4, 8, 8), (4, 8, 8), (4, 8, 8)],
    # an odd tail in the middle of a sequence
    7: [(17,), (40,), (4, 8, 8)],
}


def shape_name(shape):
    return "x".join(str(s) for s in shape)


def torch_cases(capability):
    """Runs torch (in a child process when a capability is forced) and returns
    {name: float32 array}."""
    code = r'''
import sys, json, numpy as np, torch
spec = json.loads(sys.stdin.read())
out = {}
for name, seed, shapes in spec:
    g = torch.Generator().manual_seed(seed)
    for k, shape in enumerate(shapes):
        out[name if len(shapes) == 1 else name % k] = torch.randn(shape, generator=g).numpy().ravel().tolist()
print(json.dumps(out))
'''
    spec = case_spec(capability)
    env = dict(os.environ)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), capture_output=True,
                         text=True, env=env, check=True)
    raw = json.loads(res.stdout)
    shapes = {n: s for n, s in case_shapes(capability)}
    return {n: np.array(v, dtype=F32).reshape(shapes[n]) for n, v in raw.items()}


def case_spec(capability):
    prefix = "torch_cpu" if capability != "default" else "torch_cpu_default"
    spec = []
    if capability == "default":
        spec.append([prefix + ".s0." + shape_name(BIG), 0, [list(BIG)]])
        spec.append([prefix + ".s0." + shape_name((1, 4, 8, 8)), 0, [[1, 4, 8, 8]]])
        spec.append([prefix + ".s42." + shape_name((17,)), 42, [[17]]])
        return spec
    for s in SEEDS:
        for shape in SHAPES:
            spec.append(["%s.s%d.%s" % (prefix, s, shape_name(shape)), s, [list(shape)]])
    for s in BIG_SEEDS:
        spec.append(["%s.s%d.%s" % (prefix, s, shape_name(BIG)), s, [list(BIG)]])
    for s, shapes in SEQUENCES.items():
        # one name pattern per call; %d is the call index
        spec.append(["%s.s%d.seq%%d" % (prefix, s), s, [list(x) for x in shapes]])
    return spec


def case_shapes(capability):
    out = []
    for name, _seed, shapes in case_spec(capability):
        if len(shapes) == 1:
            out.append((name, tuple(shapes[0])))
        else:
            for k, sh in enumerate(shapes):
                out.append((name % k, tuple(sh)))
    return out


def rename_seq(name, shape):
    # torch_cpu.s0.seq3 -> torch_cpu.s0.seq3.16
    return name + "." + shape_name(shape) if ".seq" in name else name


def emulate(capability):
    path = "default" if capability == "default" else "avx2"
    out = {}
    for name, seed, shapes in case_spec(capability):
        g = TorchCpuRng(seed, path)
        for k, shape in enumerate(shapes):
            out[name if len(shapes) == 1 else name % k] = g.randn(tuple(shape))
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                 "..", "tests", "data", "golden")
    os.makedirs(out_dir, exist_ok=True)
    import torch  # noqa: F401  (fails early with a clear message when torch is missing)

    tensors, cases, report = {}, [], []
    for capability in ("", "default"):
        ref = torch_cases(capability)
        emu = emulate(capability)
        bad = [n for n in ref if not np.array_equal(ref[n].view(np.uint32), emu[n].view(np.uint32))]
        label = "torch_cpu (AVX2 path)" if capability == "" else "torch_cpu_default (ATEN_CPU_CAPABILITY=default)"
        if bad:
            for n in bad[:5]:
                d = (ref[n].view(np.uint32) != emu[n].view(np.uint32))
                print("MISMATCH %s: %d of %d values" % (n, d.sum(), d.size), file=sys.stderr)
            sys.exit("the numpy re-implementation does not match torch for %s: not writing" % label)
        report.append("%s: %d tensors, %d values, bit-identical to torch.randn"
                      % (label, len(ref), sum(a.size for a in ref.values())))
        seq_shapes = {}
        for name, seed, shapes in case_spec(capability):
            for k, shape in enumerate(shapes):
                key = name if len(shapes) == 1 else name % k
                seq_shapes[key] = (seed, shape, k if len(shapes) > 1 else 0)
        for n, a in ref.items():
            seed, shape, k = seq_shapes[n]
            full = rename_seq(n, shape)
            tensors[full] = a
            cases.append({"name": full, "seed": str(seed), "shape": list(shape), "call": k})

    # how far apart the two torch CPU paths are (for tolerances elsewhere)
    a = tensors["torch_cpu.s0." + shape_name(BIG)]
    b = tensors["torch_cpu_default.s0." + shape_name(BIG)]
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    report.append("AVX2 vs default path, seed 0, %s: %d of %d values differ, max |diff| %.2e"
                  % (shape_name(BIG), int((a != b).sum()), a.size, d.max()))

    # raw engine words
    for s in (0, 42, 2 ** 32 - 1):
        tensors["mt19937.s%d.words" % s] = MT19937(s).words(1250).astype(np.uint32)
        cases.append({"name": "mt19937.s%d.words" % s, "seed": str(s), "shape": [1250], "call": 0})

    # philox
    report += check_philox_published()
    mismatch = 0
    for s in SEEDS:
        for shape in SHAPES + ([BIG] if s in BIG_SEEDS else []):
            name = "philox.s%d.%s" % (s, shape_name(shape))
            v = PhiloxRng(s).randn(shape)
            w = PhiloxRng(s).randn_libm(shape)
            mismatch += int((v.view(np.uint32) != w.view(np.uint32)).sum())
            tensors[name] = v
            cases.append({"name": name, "seed": str(s), "shape": list(shape), "call": 0})
    for s, shapes in {0: [(8, 8), (8, 8), (1, 8)], 42: [(4, 8, 8)] * 4}.items():
        g, h = PhiloxRng(s), PhiloxRng(s)
        for k, shape in enumerate(shapes):
            name = "philox.s%d.seq%d.%s" % (s, k, shape_name(shape))
            v, w = g.randn(shape), h.randn_libm(shape)
            mismatch += int((v.view(np.uint32) != w.view(np.uint32)).sum())
            tensors[name] = v
            cases.append({"name": name, "seed": str(s), "shape": list(shape), "call": k})
    report.append("philox: numpy (A1111) and plain-double libm evaluations give identical float32 on all "
                  "stored values (%d differences)" % mismatch)

    meta = {
        "generator": "tools/rng_reference.py",
        "torch_version": __import__("torch").__version__,
        "numpy_version": np.__version__,
        "spec": "tests/data/golden/SAMPLERS.md, section 'Noise generators'",
        "cases": json.dumps(cases, separators=(",", ":")),
        "checks": json.dumps(report),
    }
    path = os.path.join(out_dir, "rng.safetensors")
    write_safetensors(path, tensors, meta)
    for line in report:
        print(line)
    print("wrote %s (%d tensors, %d bytes)" % (path, len(tensors), os.path.getsize(path)))


if __name__ == "__main__":
    main()
