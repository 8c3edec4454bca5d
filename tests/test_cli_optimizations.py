#!/usr/bin/env python3
"""The optimization flags of `kiln generate` and `kiln bench`, and `kiln
bench --ablate`, as a user runs them, on a tiny random-weight model:

    python3 tests/test_cli_optimizations.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

Prints "N passed, N failed".
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import check, current, finish, make_model, temp_dir  # noqa: E402


def run(kiln, *args):
    p = subprocess.run([kiln] + list(args), capture_output=True, timeout=600,
                       env=dict(os.environ, KILN_MODEL=""))
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_generate_flags(kiln, model, work):
    out = os.path.join(work, "out")
    common = ["generate", "-m", model, "-p", "a red circle", "--steps", "2", "--seed", "4", "-o", out, "-q"]
    rc, stdout, stderr = run(kiln, *common, "--attention", "plain", "--fusion", "off", "--memory", "alloc",
                             "--fast-math", "off", "--layout", "nchw", "--vae-tiling", "on", "--json")
    if check(rc == 0, "generate with every switch: rc %d, %s" % (rc, stderr)):
        rep = {o["optimization"]: o for o in json.loads(stdout)["optimizations"]}
        for name, active in (("attention", "plain"), ("fusion", "off"), ("memory", "alloc"), ("fast_math", "off")):
            check(rep[name]["active"] == active and rep[name]["available"], "%s: %s" % (name, rep[name]))
        check(rep["layout"]["available"] and rep["layout"]["active"] == "nchw" and "im2col" in rep["layout"]["note"],
              "layout: %s" % rep["layout"])
        # Winograd's kernels are NHWC: under nchw it is off, and says why
        check(not rep["winograd"]["available"] and rep["winograd"]["active"] == "off" and
              "layout nchw" in rep["winograd"]["note"], "winograd: %s" % rep["winograd"])
        # tiled decoding runs; the tiny model's 64x64 picture is within one tile
        check(rep["vae_tiling"]["available"] and rep["vae_tiling"]["active"] == "on" and
              "decoded whole" in rep["vae_tiling"]["note"] and rep["vae_tile"]["active"] == "256",
              "vae_tiling: %s %s" % (rep["vae_tiling"], rep["vae_tile"]))
    # without --json the switches that cannot run are named on stderr
    rc, stdout, stderr = run(kiln, *common, "--layout", "nchw")
    check(rc == 0 and "winograd" in stderr and "layout nchw" in stderr, "nchw on stderr: rc %d, %s" % (rc, stderr))
    for flag, value in (("--attention", "flash"), ("--memory", "pool"), ("--attention-tile", "-2"),
                        ("--fast-math", "maybe"), ("--precision", "f8"), ("--vae-tile", "100"),
                        ("--vae-tile", "4096")):
        rc, _, stderr = run(kiln, *common, flag, value)
        check(rc == 2 and flag.lstrip("-").replace("-", "_") in stderr and "allowed" in stderr,
              "%s %s: expected exit 2 naming the switch and the allowed values, got %d: %s" % (flag, value, rc,
                                                                                               stderr))


def test_bench_ablate(kiln, model, work):
    rc, stdout, stderr = run(kiln, "bench", "-m", model, "--ablate", "--runs", "1", "--warmup", "0", "--json")
    if not check(rc == 0, "bench --ablate: rc %d, %s" % (rc, stderr)):
        return
    d = json.loads(stdout)
    rows = {r["optimization"]: r for r in d["ablation"]}
    for name in ("attention", "fusion", "memory plan", "fast math", "precision f16", "precision bf16"):
        r = rows.get(name, {})
        if name == "fast math" and os.environ.get("KILN_ISA") == "scalar":
            # the scalar kernels call libm: there is no approximation to turn off, and the row says so
            check(not r.get("available") and "scalar" in r.get("note", ""), "row %s under scalar: %s" % (name, r))
            continue
        check(r.get("available") and r.get("unet_step_on_s", 0) > 0 and r.get("unet_step_off_s", 0) > 0 and
              r.get("vae_decode_on_s", 0) > 0 and r.get("peak_rss_on_bytes", 0) > 0 and
              r.get("activation_off_bytes", 0) > 0, "row %s: %s" % (name, r))
        if r.get("unet_step_on_s"):
            check(abs(r["unet_speedup"] - r["unet_step_off_s"] / r["unet_step_on_s"]) < 1e-9,
                  "speed-up is time off / time on: %s" % r)
    # channels first runs (Winograd off with it: its kernels are NHWC) and is timed
    r = rows["layout nhwc"]
    check(r.get("available") and r.get("on") == "nhwc" and r.get("off") == "nchw" and r.get("unet_step_on_s", 0) > 0 and
          r.get("unet_step_off_s", 0) > 0 and r.get("vae_decode_off_s", 0) > 0, "layout row: %s" % r)
    check(rows["attention"]["activation_off_bytes"] > rows["attention"]["activation_on_bytes"],
          "the plain attention holds a score matrix: %s" % rows["attention"])
    r = rows.get("vae tiling", {})
    check(r.get("available") and r.get("on") == "on" and r.get("off") == "off" and r.get("vae_decode_on_s", 0) > 0 and
          r.get("vae_decode_off_s", 0) > 0, "row vae tiling: %s" % r)
    # the table prints the same rows
    rc, stdout, stderr = run(kiln, "bench", "-m", model, "--ablate", "--runs", "1", "--warmup", "0")
    check(rc == 0 and "tiled -> plain" in stdout and "nhwc -> nchw" in stdout, "table: %s %s" % (stdout, stderr))


def test_bench_vae_tiles(kiln, model, work):
    # 128x128 at the tiny model's factor 8: a 16x16 latent in tiles of 8, 3 a side
    rc, stdout, stderr = run(kiln, "bench", "-m", model, "-W", "128", "-H", "128", "--runs", "1", "--warmup", "0",
                             "--vae-tiling", "on", "--vae-tile", "64", "--json")
    if check(rc == 0, "bench --vae-tiling on: rc %d, %s" % (rc, stderr)):
        d = json.loads(stdout)
        vae = [st for st in d["stages"] if st["stage"] == "vae decode"]
        check(len(vae) == 1 and vae[0]["tiles"] == 9 and vae[0]["median_s"] > 0, "tiled vae stage: %s" % vae)
        # the text encoder for one prompt and for a pair: the pair is twice the work
        text = {st["batch"]: st for st in d["stages"] if st["stage"] == "text encoder"}
        check(sorted(text) == [1, 2] and all(st["median_s"] > 0 for st in text.values()) and
              abs(text[2]["gflop"] - 2 * text[1]["gflop"]) <= 1e-9 * text[2]["gflop"],
              "text encoder stages: %s" % {b: (st["gflop"], st["median_s"]) for b, st in text.items()})
    rc, stdout, stderr = run(kiln, "bench", "-m", model, "-W", "128", "-H", "128", "--runs", "1", "--warmup", "0")
    check(rc == 0 and "vae decode:" not in stdout, "untiled bench: rc %d, %s" % (rc, stdout))


def plant_nan(model, tensor, path):
    """A copy of model (beside it: the same tokenizer/) with tensor's first value NaN."""
    with open(model, "rb") as f:
        data = bytearray(f.read())
    header_len = int.from_bytes(data[:8], "little")
    begin = json.loads(data[8:8 + header_len])[tensor]["data_offsets"][0]
    at = 8 + header_len + begin
    data[at:at + 4] = bytes.fromhex("0000c07f")  # f32 quiet NaN, little-endian
    with open(path, "wb") as f:
        f.write(data)


def test_memory_budget(kiln, model, work):
    """A budget of 60% of what an unconstrained run's process peaked at: the run completes inside it (decoding in
    tiles, as the refusal without them suggests), and one below the minimum is refused before anything is made."""
    if os.environ.get("KILN_ISA") == "scalar":
        # the plan and the pages are the kernels' business at no level; the scalar kernels take minutes here
        print("  memory budget: not run under KILN_ISA=scalar (its kernels take minutes at 512x512 x 8)")
        return
    with open(kiln, "rb") as f:
        if b"__asan_init" in f.read():
            # ASan's shadow memory and its quarantine of freed blocks (up to 256 MB) are in the resident
            # size: it says nothing about kiln's own memory there
            print("  memory budget: not run under AddressSanitizer (shadow memory and quarantine in the RSS)")
            return
    out = os.path.join(work, "budget")
    common = ["generate", "-m", model, "-p", "a red circle", "-W", "512", "-H", "512", "--num-images", "8",
              "--steps", "1", "--seed", "3", "-o", out, "-q", "--overwrite", "--no-history", "--json"]
    rc, stdout, stderr = run(kiln, *common)
    if not check(rc == 0, "unconstrained run: rc %d, %s" % (rc, stderr)):
        return
    free = json.loads(stdout)
    peak = free["memory"]["peak_rss_bytes"]
    budget = int(peak * 0.6)
    rc, stdout, stderr = run(kiln, *common, "--max-memory", str(budget))
    if rc != 0:
        # whole decoding does not fit: the refusal names the budget and tiling as the way in
        check("max_memory" in stderr and "--vae-tiling on" in stderr, "refusal at 60%%: rc %d, %s" % (rc, stderr))
        rc, stdout, stderr = run(kiln, *common, "--max-memory", str(budget), "--vae-tiling", "on")
    if check(rc == 0, "a run with 60%% of %d bytes (%d): rc %d, %s" % (peak, budget, rc, stderr)):
        d = json.loads(stdout)
        got = d["memory"]["peak_rss_bytes"]
        print("  unconstrained: batch %d, peak RSS %.1f MB; budget %.1f MB: batch %d x %d, %d tiles, planned %.1f MB, "
              "peak RSS %.1f MB" % (free["plan"]["batch"], peak / 1048576, budget / 1048576, d["plan"]["batch"],
                                    d["plan"]["micro_batches"], d["plan"]["vae_tiles"],
                                    d["plan"]["total_bytes"] / 1048576, got / 1048576))
        check(len(d["images"]) == 8 and d["plan"]["batch"] < 8 and d["plan"]["total_bytes"] <= budget and
              0 < got <= budget,
              "within the budget: %d images, planned %d, peak RSS %d, budget %d" %
              (len(d["images"]), d["plan"]["total_bytes"], got, budget))
    before = set(os.listdir(out)) if os.path.isdir(out) else set()
    rc, stdout, stderr = run(kiln, *common, "--max-memory", "16M")
    after = set(os.listdir(out)) if os.path.isdir(out) else set()
    check(rc != 0 and "max_memory" in stderr and "budget is 16 MB" in stderr and after == before,
          "16 MB must be refused up front, naming max_memory, writing nothing: rc %d, %s" % (rc, stderr))


def test_generate_debug(kiln, model, work):
    out = os.path.join(work, "debug")
    common = ["generate", "-m", model, "-p", "a red circle", "--steps", "2", "--seed", "4", "-o", out, "-q",
              "--overwrite"]
    rc, stdout, stderr = run(kiln, *common, "--debug", "--json")
    if check(rc == 0, "generate --debug --json: rc %d, %s" % (rc, stderr)):
        d = json.loads(stdout).get("debug", {})
        psnr = d.get("psnr_min_db")
        # the bound test_debug.c holds the best configuration to (58 dB); "inf" for identical images
        check(d.get("nonfinite", 1) is None and d.get("validated") is True and
              (psnr == "inf" or (isinstance(psnr, float) and psnr >= 58)) and
              isinstance(d.get("latent_max_error"), float) and len(d.get("psnr_db", [])) == 1 and
              "f32 reference" in d.get("reference", ""), "debug report: %s" % d)
        check("debug: first NaN/Inf: none" in stderr and "PSNR min" in stderr and "max latent error" in stderr,
              "the report on stderr: %s" % stderr)
        with open(os.path.join(out, "00000-4.png"), "rb") as f:
            with_debug = f.read()
        rc, stdout, _ = run(kiln, *common, "--json")
        with open(os.path.join(out, "00000-4.png"), "rb") as f:
            check(rc == 0 and f.read() == with_debug and "debug" not in json.loads(stdout),
                  "the same image without --debug, and no report")
    # a NaN in the UNet's first convolution's weight: named, with its graph and step
    bad = os.path.join(work, "nan.safetensors")
    plant_nan(model, "model.diffusion_model.input_blocks.0.0.weight", bad)
    rc, stdout, stderr = run(kiln, "generate", "-m", bad, "-p", "a red circle", "--steps", "2", "--seed", "4",
                             "-o", out, "-q", "--debug", "--json")
    if check(rc == 0, "generate --debug with a NaN weight: rc %d, %s" % (rc, stderr)):
        nf = json.loads(stdout)["debug"]["nonfinite"] or {}
        check(nf.get("node") == "input_blocks.0.0" and nf.get("op") == "conv2d" and nf.get("graph") == "unet" and
              nf.get("step") == 0 and nf.get("first_value") == "nan" and nf.get("count", 0) > 0,
              "the NaN's first node: %s" % nf)
        check("node 'input_blocks.0.0' (conv2d" in stderr and "in the unet, step 0" in stderr,
              "named on stderr: %s" % stderr)


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = temp_dir()
    try:
        model = make_model(make_random_model, tokenizer, work)
        for name, fn in (("generate_flags", test_generate_flags), ("bench_ablate", test_bench_ablate),
                         ("bench_vae_tiles", test_bench_vae_tiles), ("memory_budget", test_memory_budget),
                         ("generate_debug", test_generate_debug)):
            current[0] = name
            fn(kiln, model, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
