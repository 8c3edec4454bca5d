#!/usr/bin/env python3
"""Sampling the shapes model in PyTorch the way kiln samples it, and kiln's parity golden for the shipped model.

    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp /usr/bin/python3 tools/shapes/sample.py golden
        writes tests/data/golden/shapes_parity.safetensors from assets/models/shapes/model.safetensors (~30 s)
    ... sample.py png -p "a red circle" [--seed 1] [--sampler euler] [--steps N] [--cfg X] [-o out.png]
    ... sample.py eval [--seeds 2] [--sampler S --steps N --cfg X]
        judges the held-out prompts (tools/shapes/heldout_prompts.tsv) with tools/shapes/check.py

Options: --model FILE (default assets/models/shapes/model.safetensors; its tokenizer/ folder beside it).

Everything follows tests/data/golden/SAMPLERS.md: the SD scaled-linear schedule (computed in float64 by
tools/sampler_reference.py; rescaled to zero terminal SNR when the model's metadata says
kiln.scheduler.rescale_betas_zero_snr = true, its last alphas_cumprod then 2^-24), k-diffusion's Euler / Euler ancestral / DPM++ 2M (Karras) with CompVisDenoiser
(c_in = 1/sqrt(sigma^2+1), fractional timesteps), LDM's DDIM (eta 0, A1111's step adjustment), classifier-free
guidance on the model output (eps or v, per kiln.unet.prediction_type) with the batch [uncond, cond] (a single cond pass when the scale is 0 or 1, as
kiln), the unconditional prompt "" (start, end, end padding). Noise is kiln's default torch-cpu stream: image
i of a request has its own torch.Generator seeded seed + i, drawing the initial latent randn([4, h, w])
(k-diffusion samplers multiply it by sigmas[0]) and then one randn([4, h, w]) per noise-injecting step. The
final latent is divided by the model's kiln.vae.scale_factor and decoded; the image is the decoder's output
clamped to [-1, 1] (kiln writes round((v + 1) * 127.5) to its PNG).

THE PARITY GOLDEN (tests/data/golden/shapes_parity.safetensors)
    Three cases, each a txt2img run of the shipped model at its native 64x64 with its default guidance scale
    and step count, negative prompt "", one image (batch 1):
        case0  "a small red circle on a blue background, top left"   euler, seed 1
        case1  "a large yellow triangle on a black background, bottom right"  euler, seed 7
        case2  "a green cross"                                        ddim, seed 3
    The stored values are a float64 run of the model's F16 weights (converted exactly), with the noise drawn
    by torch in float32; the same run in float32 is measured against it (metadata kiln.golden.f32_vs_f64:
    how far a correct float32 implementation lands). Tensors (F32; NCHW):
        golden.<case>.input_ids  [2, T]          token ids (exact integers) of [negative "", prompt]
        golden.<case>.context    [2, T, width]   text encoder output for [uncond, cond]
        golden.<case>.noise      [1, 4, 16, 16]  the first randn([4, 16, 16]) of the generator seeded `seed`
        golden.<case>.x          [M+1, 1, 4, 16, 16]  (case0 only) the latent before each step and at the end
        golden.<case>.latent     [1, 4, 16, 16]  the final latent (as the sampler holds it, scaled)
        golden.<case>.image      [1, 3, 64, 64]  the decoded image, clamped to [-1, 1]
    Metadata "kiln.golden.cases": JSON list, per case: name, prompt, negative_prompt, seed, sampler, steps,
    model_calls, cfg_scale, width, height, rng ("torch-cpu"), the model file and its sha256.
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import model as M  # noqa: E402
import sampler_reference as S  # noqa: E402
import sd_reference as ref  # noqa: E402

DEFAULT_MODEL = os.path.join(ROOT, "assets", "models", "shapes", "model.safetensors")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden", "shapes_parity.safetensors")
GOLDEN_CASES = [
    dict(name="case0", prompt="a small red circle on a blue background, top left", seed=1, sampler="euler"),
    dict(name="case1", prompt="a large yellow triangle on a black background, bottom right", seed=7, sampler="euler"),
    dict(name="case2", prompt="a green cross", seed=3, sampler="ddim"),
]
SAMPLERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim")


class Model:
    """The three networks as tensor dictionaries (names below their checkpoint prefixes), their
    configurations, the tokenizer, the latent scale and the defaults."""

    def __init__(self, unet, vae, clip, unet_cfg, vae_cfg, clip_cfg, tok, scale, defaults=None,
                 prediction="epsilon", zero_terminal_snr=False):
        self.unet, self.vae, self.clip = unet, vae, clip
        self.v = prediction in ("v_prediction", "v")
        self.sched = S.Schedule(zero_terminal_snr)
        self.unet_cfg, self.vae_cfg, self.clip_cfg = unet_cfg, vae_cfg, clip_cfg
        self.tok, self.scale = tok, scale
        self.defaults = defaults or {}
        self.factor = M.vae_factor(vae_cfg)

    @classmethod
    def load(cls, path=DEFAULT_MODEL, tokenizer_dir=None, dtype=torch.float32):
        tensors, meta = ref.read_safetensors(path)
        parts = {ref.UNET_PREFIX: {}, ref.VAE_PREFIX: {}, ref.CLIP_PREFIX: {}}
        for name, a in tensors.items():
            for p, d in parts.items():
                if name.startswith(p):
                    d[name[len(p):]] = torch.from_numpy(a.astype(np.float32)).to(dtype)
                    break
            else:
                raise ValueError("%s: unexpected tensor %s" % (path, name))
        tok = M.Tokenizer.load(tokenizer_dir or os.path.join(os.path.dirname(path), "tokenizer"))
        unet_cfg = M.cfg_from_meta("unet", M.UNET_CFG, meta)
        vae_cfg = M.cfg_from_meta("vae", M.VAE_CFG, meta)
        clip_cfg = M.cfg_from_meta("clip", M.clip_cfg_for(tok), meta)
        defaults = dict(steps=int(meta["kiln.default.steps"]), cfg=float(meta["kiln.default.cfg_scale"]),
                        sampler=meta["kiln.default.sampler"], resolution=int(meta["kiln.resolution"]))
        m = cls(parts[ref.UNET_PREFIX], parts[ref.VAE_PREFIX], parts[ref.CLIP_PREFIX], unet_cfg, vae_cfg, clip_cfg,
                tok, float(meta["kiln.vae.scale_factor"]), defaults, meta.get("kiln.unet.prediction_type", "epsilon"),
                meta.get("kiln.scheduler.rescale_betas_zero_snr") == "true")
        m.path, m.meta = path, meta
        return m

    def to(self, dtype):
        conv = lambda d: {k: v.detach().to(dtype) for k, v in d.items()}  # noqa: E731
        return Model(conv(self.unet), conv(self.vae), conv(self.clip), self.unet_cfg, self.vae_cfg, self.clip_cfg,
                     self.tok, self.scale, self.defaults, "v_prediction" if self.v else "epsilon",
                     self.sched.zero_terminal_snr)

    def dtype(self):
        return next(iter(self.unet.values())).dtype

    def context(self, prompts):
        ids = self.tok.encode_batch(prompts, self.clip_cfg["max_position_embeddings"])
        return M.text_encode(self.clip, ids, self.clip_cfg), ids

    def decode(self, latent):
        return M.vae_decode(self.vae, latent / self.scale, self.vae_cfg)


class Guided:
    """The model output after classifier-free guidance: eps = u + s (c - u) from one batch [uncond, cond]
    UNet call, or the cond pass alone when s is 0 or 1 (kiln's rule)."""

    def __init__(self, model, ctx_uncond, ctx_cond, scale):
        self.m, self.u, self.c, self.s = model, ctx_uncond, ctx_cond, scale
        self.calls = 0

    def __call__(self, x_in, t):
        self.calls += 1
        B = x_in.shape[0]
        dt = x_in.dtype
        if self.s in (0.0, 1.0):
            return M.unet(self.m.unet, x_in, torch.full((B,), float(t), dtype=dt), self.c, self.m.unet_cfg)
        out = M.unet(self.m.unet, torch.cat([x_in, x_in]), torch.full((2 * B,), float(t), dtype=dt),
                     torch.cat([self.u, self.c]), self.m.unet_cfg)
        u, c = out[:B], out[B:]
        return u + self.s * (c - u)


def _denoise(g, x, sigma):
    """CompVisDenoiser / CompVisVDenoiser (SAMPLERS.md 3): x_in = x / sqrt(sigma^2 + 1), t = sigma_to_t(sigma);
    eps model: x - sigma out; v model: x / (sigma^2 + 1) - out sigma / sqrt(sigma^2 + 1)."""
    c_in = 1.0 / (sigma * sigma + 1.0) ** 0.5
    t = float(g.m.sched.sigma_to_t(sigma)[0])
    out = g(x * c_in, t)
    if g.m.v:
        return x * (1.0 / (sigma * sigma + 1.0)) + out * (-sigma / (sigma * sigma + 1.0) ** 0.5)
    return x - out * sigma


def run_sampler(g, noise, sampler, steps, step_noise, trace=None):
    """noise [B,4,h,w] (the initial draws); step_noise() -> [B,4,h,w] the next per-step draws.
    Returns the final latent. trace: a list that receives x before each step and at the end."""
    rec = (lambda x: trace.append(x)) if trace is not None else (lambda x: None)
    if sampler == "ddim":                                              # SAMPLERS.md 4.4
        ts = S.make_ddim_timesteps(S.a1111_ddim_steps(steps))
        alphas, alphas_prev = S.make_ddim_params(ts, g.m.sched.alphas_cumprod)
        x = noise
        for i in range(len(ts)):
            j = len(ts) - 1 - i
            rec(x)
            out = g(x, int(ts[j]))
            a, ap = float(alphas[j]), float(alphas_prev[j])
            if g.m.v:                                                  # v = sqrt(a) eps - sqrt(1-a) x0
                e = a ** 0.5 * out + (1.0 - a) ** 0.5 * x
                pred_x0 = a ** 0.5 * x - (1.0 - a) ** 0.5 * out
            else:
                e = out
                pred_x0 = (x - (1.0 - a) ** 0.5 * e) / a ** 0.5
            x = ap ** 0.5 * pred_x0 + (1.0 - ap) ** 0.5 * e
        rec(x)
        return x
    sched = g.m.sched
    sigmas = sched.get_sigmas_karras(steps) if sampler == "dpmpp_2m_karras" else sched.get_sigmas(steps)
    sigmas = [float(s) for s in sigmas]
    x = noise * sigmas[0]
    old = None
    for i in range(len(sigmas) - 1):
        s, s1 = sigmas[i], sigmas[i + 1]
        rec(x)
        den = _denoise(g, x, s)
        if sampler == "euler":                                         # 4.1
            x = x + (x - den) / s * (s1 - s)
        elif sampler == "euler_a":                                     # 4.2
            up = min(s1, (s1 * s1 * (s * s - s1 * s1) / (s * s)) ** 0.5)
            down = (s1 * s1 - up * up) ** 0.5
            x = x + (x - den) / s * (down - s)
            if s1 > 0:
                x = x + step_noise() * up
        elif sampler in ("dpmpp_2m", "dpmpp_2m_karras"):               # 4.3
            if s1 == 0:
                x = den
            else:
                t, tn = -np.log(s), -np.log(s1)
                h = tn - t
                if old is None:
                    x = (s1 / s) * x - float(np.expm1(-h)) * den
                else:
                    r = (t - (-np.log(sigmas[i - 1]))) / h
                    dd = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
                    x = (s1 / s) * x - float(np.expm1(-h)) * dd
            old = den
        else:
            raise ValueError("unknown sampler %s" % sampler)
    rec(x)
    return x


@torch.no_grad()
def generate(model, prompts, seeds, sampler, steps, cfg, negative="", size=64, trace=None):
    """One image per prompt; image i draws from its own generator seeded seeds[i]. Returns (latent, image
    clamped to [-1,1], noise, context [2,B,T,W], ids [2,B,T] (T: the text encoder's positions), model calls)."""
    dt = model.dtype()
    B = len(prompts)
    h = w = size // model.factor
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn([4, h, w], generator=gg) for gg in gens]).to(dt)
    step_noise = lambda: torch.stack([torch.randn([4, h, w], generator=gg) for gg in gens]).to(dt)  # noqa: E731
    ctx_c, ids_c = model.context(prompts)
    ctx_u, ids_u = model.context([negative] * B)
    g = Guided(model, ctx_u, ctx_c, float(cfg))
    latent = run_sampler(g, noise, sampler, steps, step_noise, trace)
    image = model.decode(latent).clamp(-1, 1)
    return latent, image, noise, torch.stack([ctx_u, ctx_c]), torch.stack([ids_u, ids_c]), g.calls


def to_uint8(image):
    """[B,3,H,W] in [-1,1] -> uint8 [B,H,W,3], as kiln's to_byte: round((v + 1) * 127.5), ties to even."""
    x = ((image.double() + 1.0) * 127.5).clamp(0, 255)
    return np.rint(x.permute(0, 2, 3, 1).numpy()).astype(np.uint8)


def evaluate(model, rows, sampler, steps, cfg, seeds=(1,), batch=24):
    """Judge generated pictures of held-out rows (dataset.read_heldout) -> (accuracy per attribute, details)."""
    import check
    results = []
    for seed in seeds:
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            _, image, _, _, _, _ = generate(model, [r["prompt"] for r in chunk],
                                            [seed * 1000 + i + k for k in range(len(chunk))], sampler, steps, cfg)
            for r, img in zip(chunk, to_uint8(image)):
                j = check.judge(img)
                results.append((r, j, check.score(j, r), img))
    keys = ["shape", "colour", "shape_colour", "position", "size", "background"]
    acc = {k: float(np.mean([s[k] for _, _, s, _ in results])) for k in keys}
    return acc, results


def write_golden(model_path, out_path):
    m32 = Model.load(model_path)
    m64 = m32.to(torch.float64)
    d = m32.defaults
    size = d["resolution"]
    tensors, cases, errs = [], [], {}
    sha = hashlib.sha256(open(model_path, "rb").read()).hexdigest()
    for c in GOLDEN_CASES:
        runs = {}
        for tag, m in (("f64", m64), ("f32", m32)):
            trace = []
            latent, image, noise, ctx, ids, calls = generate(m, [c["prompt"]], [c["seed"]], c["sampler"], d["steps"],
                                                             d["cfg"], "", size, trace)
            runs[tag] = dict(latent=latent, image=image, noise=noise, context=ctx[:, 0], ids=ids[:, 0],
                             x=torch.stack(trace), calls=calls)
        r, f = runs["f64"], runs["f32"]
        assert torch.equal(r["noise"].float(), f["noise"])
        n = c["name"]
        items = [("input_ids", r["ids"].float()), ("context", r["context"]), ("noise", r["noise"]),
                 ("latent", r["latent"]), ("image", r["image"])]
        if n == "case0":
            items.append(("x", r["x"]))
        for k, v in items:
            name = "golden.%s.%s" % (n, k)
            tensors.append((name, v.to(torch.float32).numpy()))
            if k in ("context", "latent", "image", "x"):
                dd = (f[k if k != "context" else "context"].double() - r[k].double()).abs().max().item()
                mm = r[k].abs().max().item()
                errs[name] = {"max_abs": float("%.3g" % dd), "max_rel": float("%.3g" % (dd / mm))}
        cases.append(dict(name=n, prompt=c["prompt"], negative_prompt="", seed=c["seed"], sampler=c["sampler"],
                          steps=d["steps"], model_calls=r["calls"], cfg_scale=d["cfg"], width=size, height=size,
                          num_images=1, rng="torch-cpu", model=os.path.relpath(model_path, ROOT),
                          model_sha256=sha))
    meta = {
        "format": "pt",
        "kiln.golden.kind": "pipeline.shapes",
        "kiln.golden.generator": "tools/shapes/sample.py golden",
        "kiln.golden.cases": json.dumps(cases),
        "kiln.golden.layout": "NCHW; input_ids and context [2 = (uncond, cond), positions(, width)]",
        "kiln.golden.compute": "float64 run of the model's F16 weights (exact in float64), noise from torch's "
                               "float32 CPU randn; rounded to float32. kiln.golden.f32_vs_f64: the same run in "
                               "PyTorch float32 against it",
        "kiln.golden.f32_vs_f64": json.dumps(errs),
        "kiln.golden.tensors": json.dumps({k: list(v.shape) for k, v in tensors}),
    }
    ref.write_file(out_path, tensors, meta)
    return cases, errs


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["golden", "png", "eval"])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("-o", "--out")
    ap.add_argument("-p", "--prompt", default="a red circle")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--sampler")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--cfg", type=float)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.what == "golden":
        cases, errs = write_golden(a.model, a.out or GOLDEN)
        print("wrote %s" % (a.out or GOLDEN))
        for c in cases:
            print("  %s" % json.dumps(c))
        print("  f32 vs f64: %s" % json.dumps(errs))
        return 0
    m = Model.load(a.model)
    sampler = a.sampler or m.defaults["sampler"]
    steps = a.steps or m.defaults["steps"]
    cfg = m.defaults["cfg"] if a.cfg is None else a.cfg
    if a.what == "png":
        from PIL import Image
        _, image, _, _, _, _ = generate(m, [a.prompt], [a.seed], sampler, steps, cfg)
        out = a.out or "shapes.png"
        Image.fromarray(to_uint8(image)[0]).save(out)
        print("wrote %s (%s, %d steps, cfg %g, seed %d)" % (out, sampler, steps, cfg, a.seed))
    else:
        import dataset
        rows = dataset.read_heldout(os.path.join(HERE, "heldout_prompts.tsv"))
        acc, _ = evaluate(m, rows, sampler, steps, cfg, seeds=range(1, a.seeds + 1))
        print("%s %d steps cfg %g: %s" % (sampler, steps, cfg, " ".join("%s %.3f" % kv for kv in acc.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
