#!/usr/bin/env python3
"""kiln against PyTorch on the same model file, the same stages and the same threads, in the same run.

RUN (from the repository root, after scripts/build.sh build)
    /usr/bin/python3 bench/compare_pytorch.py [--model FILE] [-W 256 -H 256] [--runs 3] [--rounds 2]
                                             [--threads 2] [--kiln build/kiln] [--json]

Without --model it writes (once) a random-weight full-size SD 1.5 checkpoint, F16, with
build/tools/make_random_model --preset sd15 to /tmp/kiln-bench/sd15.safetensors (2.1 GB), with
the CLIP tokenizer of ../shared/data/clip-tokenizer beside it.

Stages, as `kiln bench` times them: the text encoder on 77 tokens (a prompt) and on 2 x 77 (the prompt and
the negative), one UNet evaluation at batch 1 and at batch 2 (classifier-free guidance), one VAE decode of
one latent. PyTorch
runs tools/sd_reference.py's forward passes (plain torch.nn.functional: conv2d, linear, group_norm,
softmax; the layers diffusers calls) in float32 with torch.no_grad(), on the weights widened to f32 as
kiln's f32 path widens them. Debian's python3-torch is re-run on OpenBLAS at the CPU's own kernel level
(tools/fast_blas.py), which needs libopenblas0-openmp: without it PyTorch's linear layers run on the
reference BLAS and the comparison would flatter kiln 20-30x (the script refuses then).

The machine may be shared, so each round runs kiln (its own process: `kiln bench --json`) and then
PyTorch, and the medians are over all rounds' runs; the spread (min-max) is printed beside them.
Peak memory: kiln's peak RSS as it reports it; PyTorch's is this process's (it holds the f16 file's bytes
and the f32 copies).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fast_blas  # noqa: E402

if __name__ == "__main__":
    fast_blas.reexec()

import torch  # noqa: E402

import sd_reference as ref  # noqa: E402

DEFAULT_MODEL = "/tmp/kiln-bench/sd15.safetensors"   # with tokenizer/ beside it
STAGES = [("text encoder", 1), ("text encoder", 2), ("unet", 1), ("unet", 2), ("vae decode", 1)]


def kiln_round(kiln, model, width, height, runs, threads):
    out = subprocess.run([kiln, "bench", "-m", model, "-W", str(width), "-H", str(height), "--runs", str(runs),
                          "--threads", str(threads), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("compare_pytorch: kiln bench failed (exit %d): %s" % (out.returncode, out.stderr.strip()))
    report = json.loads(out.stdout)
    times = {}
    for s in report["stages"]:
        # kiln bench reports median/min/max per stage; its runs are not listed one by one
        times[(s["stage"], s["batch"])] = dict(median=s["median_s"], min=s["min_s"], max=s["max_s"], gflop=s["gflop"])
    return times, report


class Torch:
    """SD 1.5's three networks as sd_reference's functions over one file's weights, in float32."""

    def __init__(self, path):
        arrays, _ = ref.read_safetensors(path)
        self.w = {k: torch.from_numpy(a.astype("float32")) for k, a in arrays.items()}
        del arrays
        self.unet = ref.W(self.w, ref.UNET_PREFIX)
        self.vae = ref.W(self.w, ref.VAE_PREFIX)
        self.clip = ref.W(self.w, ref.CLIP_PREFIX)
        self.clip_cfg = dict(ref.CLIP_SD1, vocab_size=self.w[ref.CLIP_PREFIX + "embeddings.token_embedding.weight"]
                             .shape[0])

    def stage(self, name, batch, lh, lw):
        """A function running one evaluation of the stage (inputs made once, outside the timing)."""
        g = torch.Generator().manual_seed(1)
        if name == "text encoder":
            ids = torch.randint(0, self.clip_cfg["vocab_size"] - 2, (batch, 77), generator=g)
            ids[:, 0] = self.clip_cfg["vocab_size"] - 2
            ids[:, 20:] = self.clip_cfg["vocab_size"] - 1
            cfg = dict(self.clip_cfg, bos_token_id=self.clip_cfg["vocab_size"] - 2,
                       eos_token_id=self.clip_cfg["vocab_size"] - 1)
            return lambda: ref.clip_forward(self.clip, ids, cfg, ref.Trace(False))
        if name == "unet":
            x = torch.randn(batch, 4, lh, lw, generator=g)
            t = torch.full((batch,), 500.0)
            ctx = torch.randn(batch, 77, ref.UNET_SD1["context_dim"], generator=g)
            return lambda: ref.unet_forward(self.unet, x, t, ctx, ref.UNET_SD1, ref.Trace(False))
        z = torch.randn(batch, 4, lh, lw, generator=g)
        return lambda: ref.vae_decode(self.vae, z, ref.VAE_SD1, ref.Trace(False))


def time_runs(fn, runs, warmup=1):
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


def openblas_loaded():
    with open("/proc/self/maps") as f:
        return "openblas" in f.read()


def main(argv):
    ap = argparse.ArgumentParser(description="kiln vs PyTorch on the same SD 1.x file, same run")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("-W", "--width", type=int, default=256)
    ap.add_argument("-H", "--height", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not openblas_loaded():
        sys.exit("compare_pytorch: PyTorch is not running on OpenBLAS (install libopenblas0-openmp): its "
                 "reference BLAS would make the comparison meaningless")
    if not os.path.exists(a.model):
        if a.model != DEFAULT_MODEL:
            sys.exit("compare_pytorch: %s: no such file" % a.model)
        maker = os.path.join(os.path.dirname(a.kiln), "tools", "make_random_model")
        os.makedirs(os.path.dirname(a.model), exist_ok=True)
        subprocess.run([maker, "--preset", "sd15", "--tokenizer-from",
                        os.path.join(ROOT, "..", "shared", "data", "clip-tokenizer"), a.model], check=True)
    torch.set_num_threads(a.threads)
    lh, lw = a.height // 8, a.width // 8

    kiln_runs = {s: [] for s in STAGES}
    torch_runs = {s: [] for s in STAGES}
    kiln_gflop, kiln_rss, kiln_peaks, kiln_report = {}, [], [], None
    net = None
    for r in range(a.rounds):
        times, kiln_report = kiln_round(a.kiln, a.model, a.width, a.height, a.runs, a.threads)
        kiln_rss.append(kiln_report["peak_rss_mb"])
        kiln_peaks.append(kiln_report["peak_fp32_gflops"])
        for s in STAGES:
            kiln_runs[s] += [times[s]["median"], times[s]["min"], times[s]["max"]]
            kiln_gflop[s] = times[s]["gflop"]
        if net is None:
            net = Torch(a.model)
        for s in STAGES:
            torch_runs[s] += time_runs(net.stage(s[0], s[1], lh, lw), a.runs)
        print("round %d of %d done" % (r + 1, a.rounds), file=sys.stderr, flush=True)

    rows = []
    for s in STAGES:
        k, p = kiln_runs[s], torch_runs[s]
        # kiln's per-round (median, min, max) triples: the median of its round medians, the spread of all
        k_med = statistics.median(k[0::3])
        p_med = statistics.median(p)
        rows.append(dict(stage=s[0], batch=s[1], kiln_s=k_med, kiln_min_s=min(k), kiln_max_s=max(k), pytorch_s=p_med,
                         pytorch_min_s=min(p), pytorch_max_s=max(p), gflop=kiln_gflop[s],
                         kiln_gflops=kiln_gflop[s] / k_med, pytorch_gflops=kiln_gflop[s] / p_med,
                         speedup=p_med / k_med))
    torch_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary = dict(model=a.model, width=a.width, height=a.height, threads=a.threads, runs=a.runs, rounds=a.rounds,
                   cpu=kiln_report["cpu"], isa=kiln_report["isa"], kiln=kiln_report["kiln"],
                   precision=kiln_report["precision"], torch=torch.__version__,
                   openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"), stages=rows,
                   kiln_peak_rss_mb=max(kiln_rss), pytorch_peak_rss_mb=torch_rss,
                   fma_peak_gflops=kiln_peaks)
    if a.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print("kiln %s vs PyTorch %s (OpenBLAS %s): %s, %d threads, kiln kernels %s, f32, %dx%d; medians of %d runs "
          "x %d rounds, (min-max)" % (summary["kiln"], summary["torch"], summary["openblas_coretype"], summary["cpu"],
                                      a.threads, summary["isa"], a.width, a.height, a.runs, a.rounds))
    print("  %-13s %5s %22s %22s %8s %8s %8s" % ("stage", "batch", "kiln s", "PyTorch s", "GFLOP", "kiln/s",
                                               "speed-up"))
    for r in rows:
        print("  %-13s %5d %7.3f (%6.3f-%6.3f) %7.3f (%6.3f-%6.3f) %8.1f %8.1f %7.2fx" % (
            r["stage"], r["batch"], r["kiln_s"], r["kiln_min_s"], r["kiln_max_s"], r["pytorch_s"], r["pytorch_min_s"],
            r["pytorch_max_s"], r["gflop"], r["kiln_gflops"], r["speedup"]))
    print("peak RSS: kiln %.0f MB, PyTorch %.0f MB (this process: the file's bytes and f32 copies)" % (
        summary["kiln_peak_rss_mb"], torch_rss))
    # a shared machine's speed moves: the FMA peak kiln bench measured at the start of each round
    print("FP32 FMA peak measured by kiln bench per round: %s GFLOP/s" % ", ".join("%.0f" % p for p in kiln_peaks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
