#!/usr/bin/env python3
"""Golden schedules and sampler trajectories for kiln's samplers.

    python3 tools/sampler_reference.py [OUT_DIR]      (default: tests/data/golden)

Writes OUT_DIR/samplers.safetensors.  tests/data/golden/SAMPLERS.md is the
specification these tensors illustrate (equations, order of operations and
every tensor name); this script is its executable form.

Everything here is a re-implementation, written from the sources it names:
  k-diffusion      crowsonkb/k-diffusion k_diffusion/external.py (DiscreteSchedule,
                   CompVisDenoiser, CompVisVDenoiser) and k_diffusion/sampling.py
                   (get_sigmas_karras, get_ancestral_step, sample_euler,
                   sample_euler_ancestral, sample_dpmpp_2m), as AUTOMATIC1111 runs
                   them (modules/sd_samplers_kdiffusion.py)
  DDIM             CompVis/stable-diffusion ldm/models/diffusion/ddim.py and
                   ldm/modules/diffusionmodules/util.py (make_beta_schedule,
                   make_ddim_timesteps, make_ddim_sampling_parameters), with
                   AUTOMATIC1111's adjust_steps_if_invalid
  LCM              huggingface/diffusers src/diffusers/schedulers/scheduling_lcm.py
                   (LCMScheduler defaults)

The canonical values are computed in float64 (numpy) from the float64 beta
schedule; the trajectories are stored as float32.  The float32 schedules that
AUTOMATIC1111 / diffusers actually hold (computed with torch in float32) are
stored beside them, and the distance of a float32 run of every sampler from the
float64 goldens is measured and written to the metadata ("checks"), so a C
implementation knows what tolerance is honest.

The "UNet" is a fixed elementwise function both sides can evaluate:
    model(x_in, t, c) = 0.8 * tanh(x_in) + 0.1 * sin(t / 100) + 0.05 * c * x_in
with c = 0 for the unconditional half and c = 1 for the conditional half of
the batch-2 call [uncond, cond]; classifier-free guidance with scale s:
    out = out_uncond + s * (out_cond - out_uncond).
The noise is torch.randn on the CPU generator seeded with 42 (call 0: the
initial latent, call k >= 1: the noise of the k-th noise-injecting step), the
same stream as rng.safetensors torch_cpu.s42.seq<k>.4x8x8.
"""
import json
import math
import os
import struct
import sys

import numpy as np

T_TRAIN = 1000
BETA_START, BETA_END = 0.00085, 0.012
SHAPE = (1, 4, 8, 8)
SEED = 42
CFG_SCALE = 7.5
LCM_ORIGINAL_STEPS = 50
LCM_TIMESTEP_SCALING = 10.0
LCM_SIGMA_DATA = 0.5


# ----------------------------------------------------------------------------
# safetensors writer (same format as tools/make_safetensors_corpus.py)
# ----------------------------------------------------------------------------

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
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
# schedules (float64, canonical)
# ----------------------------------------------------------------------------

def linspace(start, end, n):
    """torch.linspace's scalar formula: the first half counts up from start,
    the second half down from end (torch's vectorised kernel can differ from
    this by one ulp; kiln follows this formula)."""
    if n == 1:
        return np.array([float(start)])
    step = (end - start) / (n - 1)
    half = n // 2
    return np.array([start + step * i if i < half else end - step * (n - 1 - i) for i in range(n)])


def make_betas():
    # ldm make_beta_schedule("linear", 1000, 0.00085, 0.012): linspace of sqrt, squared
    return linspace(math.sqrt(BETA_START), math.sqrt(BETA_END), T_TRAIN) ** 2


BETAS = make_betas()
ALPHAS_CUMPROD = np.cumprod(1.0 - BETAS)                       # sequential product in double
SIGMAS = np.sqrt((1.0 - ALPHAS_CUMPROD) / ALPHAS_CUMPROD)       # k-diffusion DiscreteEpsDDPMDenoiser
LOG_SIGMAS = np.log(SIGMAS)
SIGMA_MIN, SIGMA_MAX = SIGMAS[0], SIGMAS[-1]


# The last training step's alphas_cumprod once rescaled to zero terminal SNR: diffusers' Euler scheduler
# sets it to 2^-24 instead of 0 so that sigma_max stays finite (4096); kiln does the same for every sampler.
ZERO_SNR_LAST = 2.0 ** -24


def rescale_zero_terminal_snr(acp):
    """Lin et al. 2024 (diffusers rescale_zero_terminal_snr), in float64 on alphas_cumprod directly: shift
    and scale sqrt(alphas_cumprod) so the first step keeps its value and the last one reaches 0, square;
    then the last value becomes ZERO_SNR_LAST."""
    root = np.sqrt(acp)
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    out = root * root
    out[-1] = ZERO_SNR_LAST
    return out


class Schedule:
    """SD's scaled-linear schedule, optionally rescaled to zero terminal SNR (a model's
    kiln.scheduler.rescale_betas_zero_snr), with the k-diffusion views the samplers use."""

    def __init__(self, zero_terminal_snr=False):
        self.zero_terminal_snr = zero_terminal_snr
        self.alphas_cumprod = rescale_zero_terminal_snr(ALPHAS_CUMPROD) if zero_terminal_snr else ALPHAS_CUMPROD
        self.sigmas = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)
        self.log_sigmas = np.log(self.sigmas)

    def sigma_to_t(self, sigma):
        return sigma_to_t(sigma, self.log_sigmas)

    def get_sigmas(self, n):
        return np.append(t_to_sigma(linspace(T_TRAIN - 1, 0, n), self.log_sigmas), 0.0)

    def get_sigmas_karras(self, n):
        return get_sigmas_karras(n, self.sigmas[0], self.sigmas[-1])


def t_to_sigma(t, log_sigmas=LOG_SIGMAS):
    """DiscreteSchedule.t_to_sigma: linear interpolation of log-sigma."""
    t = np.asarray(t, dtype=log_sigmas.dtype)
    lo = np.floor(t).astype(np.int64)
    hi = np.ceil(t).astype(np.int64)
    w = t - lo
    one = log_sigmas.dtype.type(1)
    return np.exp((one - w) * log_sigmas[lo] + w * log_sigmas[hi])


def sigma_to_t(sigma, log_sigmas=LOG_SIGMAS):
    """DiscreteSchedule.sigma_to_t (quantize=False): invert t_to_sigma with the
    log-sigma distances.  low = the last index whose log-sigma is <= log(sigma)
    (0 when there is none), at most 998; w clamped to [0, 1]."""
    sigma = np.atleast_1d(np.asarray(sigma, dtype=log_sigmas.dtype))
    out = np.empty_like(sigma)
    for k, s in enumerate(sigma):
        ls = np.log(s)
        dists = ls - log_sigmas
        ge = np.nonzero(dists >= 0)[0]
        lo = int(ge[-1]) if len(ge) else 0           # == dists.ge(0).cumsum(0).argmax(0)
        lo = min(lo, len(log_sigmas) - 2)
        hi = lo + 1
        w = (log_sigmas[lo] - ls) / (log_sigmas[lo] - log_sigmas[hi])
        w = min(max(w, 0.0), 1.0)
        out[k] = (1 - w) * lo + w * hi
    return out


def get_sigmas(n):
    """DiscreteSchedule.get_sigmas(n) = append_zero(t_to_sigma(linspace(999, 0, n)))."""
    return np.append(t_to_sigma(linspace(T_TRAIN - 1, 0, n)), 0.0)


def get_sigmas_karras(n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=7.0):
    """Karras et al. 2022 eq. (5); A1111 passes the model's sigma_min/max."""
    ramp = linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return np.append((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho, 0.0)


def a1111_ddim_steps(n):
    """AUTOMATIC1111 adjust_steps_if_invalid for DDIM 'uniform': a step count
    whose stride divides 999 would index alphas_cumprod[1000]."""
    valid = 999 / (T_TRAIN // n)
    return int(valid) + 1 if valid == math.floor(valid) else n


def make_ddim_timesteps(n):
    """ldm make_ddim_timesteps('uniform') for the (adjusted) step count: every
    c-th training step from 0, plus one; len() can exceed n."""
    c = T_TRAIN // n
    return np.arange(0, T_TRAIN, c, dtype=np.int64) + 1


def make_ddim_params(ts, acp=ALPHAS_CUMPROD):
    alphas = acp[ts]
    alphas_prev = np.concatenate([[acp[0]], acp[ts[:-1]]])
    return alphas, alphas_prev


def lcm_timesteps(n, original_steps=LCM_ORIGINAL_STEPS):
    """diffusers LCMScheduler.set_timesteps(n), strength 1, no custom timesteps."""
    k = T_TRAIN // original_steps
    origin = np.arange(1, original_steps + 1, dtype=np.int64) * k - 1     # 19, 39, ..., 999
    origin = origin[::-1]
    idx = np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)
    return origin[idx]


# ----------------------------------------------------------------------------
# float32 schedules exactly as AUTOMATIC1111 / diffusers hold them (torch)
# ----------------------------------------------------------------------------

def torch_f32_schedules():
    import torch
    out = {}
    # ldm: betas in float64, np.cumprod, buffer registered as float32
    betas = (torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, T_TRAIN, dtype=torch.float64) ** 2).numpy()
    acp_ldm = torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)
    out["acp_ldm"] = acp_ldm
    # diffusers: everything float32
    b32 = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, T_TRAIN, dtype=torch.float32) ** 2
    out["acp_diffusers"] = torch.cumprod(1.0 - b32, dim=0)
    # k-diffusion CompVisDenoiser on the ldm buffer
    sigmas = ((1 - acp_ldm) / acp_ldm) ** 0.5
    log_sigmas = sigmas.log()
    out["sigmas"] = sigmas

    def t_to_sigma_t(t):
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_sigmas[low_idx] + w * log_sigmas[high_idx]).exp()

    def sigma_to_t_t(sigma):
        log_sigma = sigma.log()
        dists = log_sigma - log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def append_zero(x):
        return torch.cat([x, x.new_zeros([1])])

    out["kdiff"], out["karras"] = {}, {}
    for n in range(1, 51):
        s = append_zero(t_to_sigma_t(torch.linspace(T_TRAIN - 1, 0, n)))
        out["kdiff"][n] = (s, sigma_to_t_t(s[:-1]))
        smin, smax = sigmas[0].item(), sigmas[-1].item()
        ramp = torch.linspace(0, 1, n)
        k = append_zero((smax ** (1 / 7.0) + ramp * (smin ** (1 / 7.0) - smax ** (1 / 7.0))) ** 7.0)
        out["karras"][n] = (k, sigma_to_t_t(k[:-1]))
    return out


# ----------------------------------------------------------------------------
# the fixed "UNet", CFG, denoisers
# ----------------------------------------------------------------------------

def model(x_in, t, c, dt):
    f = dt.type
    return (f(0.8) * np.tanh(x_in) + f(0.1) * np.sin(f(t) / f(100)) + f(0.05) * f(c) * x_in).astype(dt)


def guided(x_in, t, cfg, dt):
    """One UNet call: batch 2 [uncond, cond] when cfg != 1, else batch 1 (cond).
    Returns (guided output, raw output [B,...])."""
    if cfg == 1.0:
        out = model(x_in, t, 1, dt)
        return out, out
    u = model(x_in, t, 0, dt)
    c = model(x_in, t, 1, dt)
    return (u + dt.type(cfg) * (c - u)).astype(dt), np.concatenate([u, c], axis=0)


class Recorder:
    def __init__(self):
        self.x_in, self.t, self.out, self.eps, self.denoised, self.x = [], [], [], [], [], []

    def arrays(self):
        return {"x_in": np.stack(self.x_in), "t": np.array(self.t, dtype=np.float64),
                "out": np.stack(self.out), "eps": np.stack(self.eps),
                "denoised": np.stack(self.denoised), "x": np.stack(self.x)}


def kdiff_denoise(x, sigma, cfg, pred, dt, rec, log_sigmas):
    """CompVisDenoiser / CompVisVDenoiser forward with CFG on the model output."""
    f = dt.type
    sigma = f(sigma)
    c_in = f(1) / np.sqrt(sigma * sigma + f(1))
    x_in = (x * c_in).astype(dt)
    t = sigma_to_t(sigma, log_sigmas)[0]
    out, raw = guided(x_in, t, cfg, dt)
    if pred == "eps":
        denoised = (x - out * sigma).astype(dt)                        # c_out = -sigma
    else:
        c_skip = f(1) / (sigma * sigma + f(1))
        c_out = -sigma / np.sqrt(sigma * sigma + f(1))
        denoised = (out * c_out + x * c_skip).astype(dt)
    rec.x_in.append(x_in)
    rec.t.append(float(t))
    rec.out.append(raw)
    rec.eps.append(out)
    rec.denoised.append(denoised)
    return denoised


# ----------------------------------------------------------------------------
# samplers
# ----------------------------------------------------------------------------

def sample_euler(x, sigmas, cfg, pred, dt, noise, log_sigmas):
    """Karras et al. 2022 Algorithm 2 with s_churn = 0 (plain Euler in sigma)."""
    rec = Recorder()
    rec.x.append(x)
    for i in range(len(sigmas) - 1):
        den = kdiff_denoise(x, sigmas[i], cfg, pred, dt, rec, log_sigmas)
        d = ((x - den) / dt.type(sigmas[i])).astype(dt)               # to_d
        x = (x + d * dt.type(sigmas[i + 1] - sigmas[i])).astype(dt)
        rec.x.append(x)
    return rec


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def sample_euler_ancestral(x, sigmas, cfg, pred, dt, noise, log_sigmas):
    rec = Recorder()
    rec.x.append(x)
    k = 0
    for i in range(len(sigmas) - 1):
        den = kdiff_denoise(x, sigmas[i], cfg, pred, dt, rec, log_sigmas)
        sigma_down, sigma_up = get_ancestral_step(float(sigmas[i]), float(sigmas[i + 1]))
        d = ((x - den) / dt.type(sigmas[i])).astype(dt)
        x = (x + d * dt.type(sigma_down - sigmas[i])).astype(dt)
        if sigmas[i + 1] > 0:
            x = (x + noise[k] * dt.type(sigma_up)).astype(dt)
            k += 1
        rec.x.append(x)
    return rec


def sample_dpmpp_2m(x, sigmas, cfg, pred, dt, noise, log_sigmas):
    """DPM-Solver++(2M), Lu et al. 2022 (arXiv:2211.01095) Algorithm 2, in
    k-diffusion's form with t = -log(sigma)."""
    rec = Recorder()
    rec.x.append(x)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        den = kdiff_denoise(x, sigmas[i], cfg, pred, dt, rec, log_sigmas)
        if sigmas[i + 1] == 0:
            x = den                                                       # (0/s)*x - expm1(-inf)*den
        else:
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            t, t_next = -math.log(s), -math.log(s_next)
            h = t_next - t
            ratio = dt.type(math.exp(-t_next) / math.exp(-t))
            coef = dt.type(-math.expm1(-h))
            if old_denoised is None:
                x = (ratio * x + coef * den).astype(dt)
            else:
                h_last = t - (-math.log(float(sigmas[i - 1])))
                r = h_last / h
                a, b = dt.type(1 + 1 / (2 * r)), dt.type(1 / (2 * r))
                den_d = (a * den - b * old_denoised).astype(dt)
                x = (ratio * x + coef * den_d).astype(dt)
        old_denoised = den
        rec.x.append(x)
    return rec


def sample_ddim(x, ts, alphas, alphas_prev, cfg, dt):
    """ldm DDIMSampler.ddim_sampling / p_sample_ddim with eta = 0 (Song et al.
    2020 eq. 12 with sigma_t = 0)."""
    f = dt.type
    rec = Recorder()
    rec.x.append(x)
    n = len(ts)
    for i in range(n):
        index = n - 1 - i
        t = int(ts[index])
        e_t, raw = guided(x, t, cfg, dt)                                  # model input is x itself
        a_t, a_prev = f(alphas[index]), f(alphas_prev[index])
        sqrt_one_minus_at = np.sqrt(f(1) - a_t)
        pred_x0 = ((x - sqrt_one_minus_at * e_t) / np.sqrt(a_t)).astype(dt)
        dir_xt = (np.sqrt(f(1) - a_prev) * e_t).astype(dt)               # sigma_t = 0
        x = (np.sqrt(a_prev) * pred_x0 + dir_xt).astype(dt)
        rec.x_in.append(rec.x[-1])
        rec.t.append(float(t))
        rec.out.append(raw)
        rec.eps.append(e_t)
        rec.denoised.append(pred_x0)
        rec.x.append(x)
    return rec


def sample_lcm(x, ts, acp, cfg, dt, noise):
    """diffusers LCMScheduler.step (Luo et al. 2023, multistep latent
    consistency sampling) with the boundary-condition scalings."""
    f = dt.type
    rec = Recorder()
    rec.x.append(x)
    n = len(ts)
    for i in range(n):
        t = int(ts[i])
        prev_t = int(ts[i + 1]) if i + 1 < n else t
        eps, raw = guided(x, t, cfg, dt)                                  # scale_model_input is the identity
        a_t, a_prev = f(acp[t]), f(acp[prev_t])
        b_t, b_prev = f(1) - a_t, f(1) - a_prev
        scaled = f(t) * f(LCM_TIMESTEP_SCALING)
        sd2 = f(LCM_SIGMA_DATA) ** 2
        c_skip = sd2 / (scaled * scaled + sd2)
        c_out = scaled / np.sqrt(scaled * scaled + sd2)
        pred_x0 = ((x - np.sqrt(b_t) * eps) / np.sqrt(a_t)).astype(dt)
        den = (c_out * pred_x0 + c_skip * x).astype(dt)
        if i != n - 1:
            x = (np.sqrt(a_prev) * den + np.sqrt(b_prev) * noise[i]).astype(dt)
        else:
            x = den
        rec.x_in.append(rec.x[-1])
        rec.t.append(float(t))
        rec.out.append(raw)
        rec.eps.append(eps)
        rec.denoised.append(den)
        rec.x.append(x)
    return rec


# ----------------------------------------------------------------------------
# line-by-line torch ports of the upstream code, float64: an independent
# check of the numpy samplers above (they must agree to rounding)
# ----------------------------------------------------------------------------

def upstream_check(runs_out, noise):
    import torch
    D = torch.float64
    acp = torch.tensor(ALPHAS_CUMPROD, dtype=D)

    class DiscreteSchedule:                      # k_diffusion/external.py
        def __init__(self, sigmas):
            self.sigmas, self.log_sigmas = sigmas, sigmas.log()

        def sigma_to_t(self, sigma):
            log_sigma = sigma.log()
            dists = log_sigma - self.log_sigmas[:, None]
            low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
            high_idx = low_idx + 1
            low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
            w = ((low - log_sigma) / (low - high)).clamp(0, 1)
            return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    class Denoiser(DiscreteSchedule):            # CompVisDenoiser / CompVisVDenoiser + A1111-style CFG
        def __init__(self, pred, cfg):
            super().__init__(((1 - acp) / acp) ** 0.5)
            self.pred, self.cfg = pred, cfg

        def inner(self, x_in, t):
            xs = x_in.numpy()
            out, _ = guided(xs, float(t[0]), self.cfg, np.dtype(np.float64))
            return torch.from_numpy(out)

        def __call__(self, x, sigma):
            s = sigma[:, None, None, None]
            c_in = 1 / (s ** 2 + 1) ** 0.5
            out = self.inner(x * c_in, self.sigma_to_t(sigma))
            if self.pred == "eps":
                return x + out * -s
            c_skip = 1 / (s ** 2 + 1)
            c_out = -s * 1 / (s ** 2 + 1) ** 0.5
            return out * c_out + x * c_skip

    def to_d(x, sigma, denoised):
        return (x - denoised) / sigma

    def euler(model, x, sigmas):
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * s_in)
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigmas[i + 1] - sigmas[i])
        return x

    def euler_a(model, x, sigmas, noises):
        s_in = x.new_ones([x.shape[0]])
        it = iter(noises)
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * s_in)
            sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1])
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
            if sigmas[i + 1] > 0:
                x = x + next(it) * 1.0 * sigma_up
        return x

    def dpmpp_2m(model, x, sigmas):
        s_in = x.new_ones([x.shape[0]])
        sigma_fn = lambda t: t.neg().exp()
        t_fn = lambda sigma: sigma.log().neg()
        old_denoised = None
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * s_in)
            t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
            h = t_next - t
            if old_denoised is None or sigmas[i + 1] == 0:
                x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
            else:
                h_last = t - t_fn(sigmas[i - 1])
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
                x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
            old_denoised = denoised
        return x

    def ddim(x, n, cfg):                           # ldm ddim.py, eta = 0
        ts = make_ddim_timesteps(a1111_ddim_steps(n))
        alphas = acp[ts]
        alphas_prev = np.asarray([acp[0].item()] + acp[ts[:-1]].tolist())
        sqrt_one_minus = (1. - alphas).sqrt()
        for i, step in enumerate(np.flip(ts)):
            index = len(ts) - i - 1
            e_t = torch.from_numpy(guided(x.numpy(), int(step), cfg, np.dtype(np.float64))[0])
            a_t, a_prev = alphas[index], torch.tensor(alphas_prev[index], dtype=D)
            pred_x0 = (x - sqrt_one_minus[index] * e_t) / a_t.sqrt()
            dir_xt = (1. - a_prev - 0.0 ** 2).sqrt() * e_t
            x = a_prev.sqrt() * pred_x0 + dir_xt
        return x

    def lcm(x, n, noises):                          # diffusers scheduling_lcm.py step()
        ts = torch.from_numpy(lcm_timesteps(n))
        for step_index, timestep in enumerate(ts):
            model_output = torch.from_numpy(guided(x.numpy(), int(timestep), 1.0, np.dtype(np.float64))[0])
            prev_step_index = step_index + 1
            prev_timestep = ts[prev_step_index] if prev_step_index < len(ts) else timestep
            alpha_prod_t = acp[timestep]
            alpha_prod_t_prev = acp[prev_timestep]
            beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
            scaled_timestep = timestep * 10.0
            c_skip = 0.5 ** 2 / (scaled_timestep ** 2 + 0.5 ** 2)
            c_out = scaled_timestep / (scaled_timestep ** 2 + 0.5 ** 2) ** 0.5
            predicted_original_sample = (x - beta_prod_t.sqrt() * model_output) / alpha_prod_t.sqrt()
            denoised = c_out * predicted_original_sample + c_skip * x
            if step_index != n - 1:
                x = alpha_prod_t_prev.sqrt() * denoised + beta_prod_t_prev.sqrt() * noises[step_index]
            else:
                x = denoised
        return x

    worst = 0.0
    tn = [torch.from_numpy(z.astype(np.float64)) for z in noise]
    for name, sampler, n, cfg, pred in RUNS:
        init = tn[0]
        if sampler in ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras"):
            sig = torch.tensor(get_sigmas_karras(n) if sampler == "dpmpp_2m_karras" else get_sigmas(n), dtype=D)
            m = Denoiser(pred, cfg)
            x = init * sig[0]
            if sampler == "euler":
                x = euler(m, x, sig)
            elif sampler == "euler_a":
                x = euler_a(m, x, sig, tn[1:])
            else:
                x = dpmpp_2m(m, x, sig)
        elif sampler == "ddim":
            x = ddim(init, n, cfg)
        else:
            x = lcm(init, n, tn[1:])
        ref = runs_out["run.%s.n%d.x" % (name, n)]
        dd = float(np.max(np.abs(x.numpy() - ref[-1])) / np.max(np.abs(ref[-1])))
        worst = max(worst, dd)
    # the stored x are float32 roundings of the float64 values (<= 6e-8 of
    # the largest element); the diffusers port also rounds LCM's c_skip/c_out
    # to float32 as diffusers does
    assert worst < 1e-7, worst
    return "line-by-line torch float64 ports of the upstream samplers agree with the goldens: max |diff| / " \
           "max |x| = %.1e over all runs (the goldens are float32 roundings)" % worst


# ----------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------

def noise_stream(count):
    """torch CPU randn, seed 42: [initial latent noise, step noise 1, 2, ...]."""
    import torch
    g = torch.Generator().manual_seed(SEED)
    return [torch.randn(SHAPE[1:], generator=g).numpy()[None].astype(np.float32) for _ in range(count)]


RUNS = [
    # name, sampler, steps, cfg, prediction
    *[("euler", "euler", n, CFG_SCALE, "eps") for n in (1, 2, 10, 20)],
    *[("euler_a", "euler_a", n, CFG_SCALE, "eps") for n in (1, 2, 10, 20)],
    *[("dpmpp_2m", "dpmpp_2m", n, CFG_SCALE, "eps") for n in (1, 2, 10, 20)],
    *[("dpmpp_2m_karras", "dpmpp_2m_karras", n, CFG_SCALE, "eps") for n in (1, 2, 10, 20)],
    *[("ddim", "ddim", n, CFG_SCALE, "eps") for n in (1, 2, 10, 20)],
    *[("lcm", "lcm", n, 1.0, "eps") for n in (1, 2, 4, 8)],
    ("euler_v", "euler", 10, CFG_SCALE, "v"),
    ("dpmpp_2m_v", "dpmpp_2m", 10, CFG_SCALE, "v"),
]


def run_one(sampler, n, cfg, pred, dt, sched, noise):
    """sched: dict with the schedule arrays in the run's precision."""
    f = dt.type
    init = noise[0].astype(dt)
    step_noise = [z.astype(dt) for z in noise[1:]]
    if sampler in ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras"):
        sigmas = sched["karras"](n) if sampler == "dpmpp_2m_karras" else sched["kdiff"](n)
        x = (init * f(sigmas[0])).astype(dt)
        fn = {"euler": sample_euler, "euler_a": sample_euler_ancestral,
              "dpmpp_2m": sample_dpmpp_2m, "dpmpp_2m_karras": sample_dpmpp_2m}[sampler]
        rec = fn(x, sigmas, cfg, pred, dt, step_noise, sched["log_sigmas"])
        extra = {"sigmas": np.asarray(sigmas, dtype=np.float64)}
        used = n - 1 if sampler == "euler_a" else 0
    elif sampler == "ddim":
        ts = make_ddim_timesteps(a1111_ddim_steps(n))
        alphas, alphas_prev = make_ddim_params(ts, sched["acp_ldm"])
        rec = sample_ddim(init, ts, alphas, alphas_prev, cfg, dt)
        extra = {"timesteps": ts}
        used = 0
    else:
        ts = lcm_timesteps(n)
        rec = sample_lcm(init, ts, sched["acp_diffusers"], cfg, dt, step_noise)
        extra = {"timesteps": ts}
        used = n - 1
    return rec, extra, used


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                 "..", "tests", "data", "golden")
    os.makedirs(out_dir, exist_ok=True)
    import torch

    T, checks = {}, []
    f32 = torch_f32_schedules()

    # --- schedules
    T["sched.betas"] = BETAS
    T["sched.alphas_cumprod"] = ALPHAS_CUMPROD
    T["sched.sigmas"] = SIGMAS
    T["sched.f32.alphas_cumprod_ldm"] = f32["acp_ldm"].numpy()
    T["sched.f32.alphas_cumprod_diffusers"] = f32["acp_diffusers"].numpy()
    T["sched.f32.sigmas"] = f32["sigmas"].numpy()
    for n in range(1, 51):
        s = get_sigmas(n)
        T["sched.kdiff.n%d.sigmas" % n] = s
        T["sched.kdiff.n%d.t" % n] = sigma_to_t(s[:-1])
        k = get_sigmas_karras(n)
        T["sched.karras.n%d.sigmas" % n] = k
        T["sched.karras.n%d.t" % n] = sigma_to_t(k[:-1])
        T["sched.kdiff_f32.n%d.sigmas" % n] = f32["kdiff"][n][0].numpy()
        T["sched.kdiff_f32.n%d.t" % n] = f32["kdiff"][n][1].numpy()
        T["sched.karras_f32.n%d.sigmas" % n] = f32["karras"][n][0].numpy()
        T["sched.karras_f32.n%d.t" % n] = f32["karras"][n][1].numpy()
        ts = make_ddim_timesteps(a1111_ddim_steps(n))
        a, ap = make_ddim_params(ts)
        T["sched.ddim.n%d.timesteps" % n] = ts
        T["sched.ddim.n%d.alphas" % n] = a
        T["sched.ddim.n%d.alphas_prev" % n] = ap
        T["sched.lcm.n%d.timesteps" % n] = lcm_timesteps(n)

    def reld(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))
    checks.append("alphas_cumprod: ldm float32 buffer vs float64: max rel %.1e; diffusers float32 chain vs "
                  "float64: max rel %.1e" % (reld(T["sched.f32.alphas_cumprod_ldm"], ALPHAS_CUMPROD),
                                             reld(T["sched.f32.alphas_cumprod_diffusers"], ALPHAS_CUMPROD)))
    checks.append("sigmas: k-diffusion float32 vs float64: max rel %.1e" % reld(T["sched.f32.sigmas"], SIGMAS))
    ds = max(reld(T["sched.kdiff_f32.n%d.sigmas" % n][:-1], T["sched.kdiff.n%d.sigmas" % n][:-1])
             for n in range(1, 51))
    dt_ = max(float(np.max(np.abs(T["sched.kdiff_f32.n%d.t" % n] - T["sched.kdiff.n%d.t" % n])))
              for n in range(1, 51))
    dk = max(reld(T["sched.karras_f32.n%d.sigmas" % n][:-1], T["sched.karras.n%d.sigmas" % n][:-1])
             for n in range(1, 51))
    dkt = max(float(np.max(np.abs(T["sched.karras_f32.n%d.t" % n] - T["sched.karras.n%d.t" % n])))
              for n in range(1, 51))
    checks.append("get_sigmas(1..50): A1111 float32 vs float64: sigmas max rel %.1e, t max abs %.1e" % (ds, dt_))
    checks.append("get_sigmas_karras(1..50): A1111 float32 vs float64: sigmas max rel %.1e, t max abs %.1e"
                  % (dk, dkt))

    # --- runs
    noise = noise_stream(21)
    T["run.noise"] = np.concatenate(noise, axis=0)                       # [21, 4, 8, 8]
    sched64 = {"kdiff": get_sigmas, "karras": get_sigmas_karras, "log_sigmas": LOG_SIGMAS,
               "acp_ldm": ALPHAS_CUMPROD, "acp_diffusers": ALPHAS_CUMPROD}
    log32 = f32["sigmas"].log().numpy()
    sched32 = {"kdiff": lambda n: f32["kdiff"][n][0].numpy(), "karras": lambda n: f32["karras"][n][0].numpy(),
               "log_sigmas": log32, "acp_ldm": f32["acp_ldm"].numpy(),
               "acp_diffusers": f32["acp_diffusers"].numpy()}
    runs_meta = []
    worst = {}
    for name, sampler, n, cfg, pred in RUNS:
        rec, extra, used = run_one(sampler, n, cfg, pred, np.dtype(np.float64), sched64, noise)
        a = rec.arrays()
        p = "run.%s.n%d." % (name, n)
        for key in ("x_in", "eps", "denoised", "x"):
            T[p + key] = a[key].astype(np.float32)
        if n <= 2 and cfg != 1.0:
            T[p + "out"] = a["out"].astype(np.float32)
        T[p + "t"] = a["t"]
        for key, v in extra.items():
            T[p + key] = v
        if used:
            T[p + "step_noise"] = np.concatenate(noise[1:1 + used], axis=0)[:, None]
        runs_meta.append({"run": p[:-1], "sampler": sampler, "steps": n, "model_calls": len(a["t"]),
                          "cfg": cfg, "prediction": pred, "step_noise": used})
        # the same run in float32 with the float32 schedules the tools hold
        r32, _, _ = run_one(sampler, n, cfg, pred, np.dtype(np.float32), sched32, noise)
        d = float(np.max(np.abs(r32.arrays()["x"][-1].astype(np.float64) - a["x"][-1])))
        worst[name] = max(worst.get(name, 0.0), d)
    checks.append(upstream_check(T, noise))
    checks.append("final latent, float32 run on the tools' float32 schedules vs the float64 golden, max abs: "
                  + ", ".join("%s %.1e" % (k, v) for k, v in worst.items()))

    meta = {
        "generator": "tools/sampler_reference.py",
        "spec": "tests/data/golden/SAMPLERS.md",
        "model": "0.8*tanh(x_in) + 0.1*sin(t/100) + 0.05*c*x_in, c=0 uncond, c=1 cond",
        "cfg_batch_order": "uncond, cond",
        "cfg_scale": str(CFG_SCALE),
        "noise": "torch CPU randn, seed 42, shape [4,8,8] per call: call 0 initial latent, call k step noise k",
        "runs": json.dumps(runs_meta, separators=(",", ":")),
        "checks": json.dumps(checks),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
    }
    path = os.path.join(out_dir, "samplers.safetensors")
    write_safetensors(path, T, meta)
    for c in checks:
        print(c)
    print("wrote %s (%d tensors, %d bytes)" % (path, len(T), os.path.getsize(path)))


if __name__ == "__main__":
    main()
