#!/usr/bin/env python3
"""The optimization switches in `kiln serve`'s API, over loopback with a
tiny random-weight model:

    python3 tests/test_serve_optimizations.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

Each switch is a field of txt2img (kiln's own, beside A1111's): good values
run and the answer reports, per switch, what was asked, what ran and why
they differ; bad values are refused with 400 naming the field and its
allowed values. Prints "N passed, N failed".
"""
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import Server, check, current, finish, make_model, temp_dir  # noqa: E402

POST = "/sdapi/v1/txt2img"


def report_of(r):
    info = json.loads(r["info"])
    return {o["optimization"]: o for o in info["kiln"]["optimizations"]}


def test_switches_run_and_report(s):
    base = {"prompt": "a red circle", "steps": 2, "seed": 3, "sampler_name": "euler"}
    status, _, plain = s.json("POST", POST, dict(base, attention="plain", fusion=False, memory="alloc",
                                                 fast_math="off"))
    status2, _, best = s.json("POST", POST, dict(base))
    if check(status == 200 and status2 == 200, "plain/unfused/alloc/precise and best: %s %s" % (status, status2)):
        rep = report_of(plain)
        for name, active in (("attention", "plain"), ("fusion", "off"), ("memory", "alloc"), ("fast_math", "off")):
            check(rep[name]["active"] == active and rep[name]["available"],
                  "%s must run as %s: %s" % (name, active, rep[name]))
        check(report_of(best)["attention"]["active"] == "tiled", "the default attention is tiled")
    # what cannot run here runs as it can, and says why
    status, _, r = s.json("POST", POST, dict(base, layout="nchw", vae_tiling=True, vae_tile=256, threads=99))
    if check(status == 200, "nchw, vae tiling: %s %s" % (status, r)):
        rep = report_of(r)
        check(rep["layout"]["available"] and rep["layout"]["active"] == "nchw" and "im2col" in rep["layout"]["note"],
              "layout: %s" % rep["layout"])
        check(not rep["winograd"]["available"] and "layout nchw" in rep["winograd"]["note"],
              "winograd: %s" % rep["winograd"])
        # tiled decoding runs (the 64x64 picture is within one 256-pixel tile: decoded whole)
        check(rep["vae_tiling"]["available"] and rep["vae_tiling"]["active"] == "on" and
              "decoded whole" in rep["vae_tiling"]["note"] and rep["vae_tile"]["active"] == "256",
              "vae_tiling: %s %s" % (rep["vae_tiling"], rep["vae_tile"]))
        check(not rep["threads"]["available"] and "engine" in rep["threads"]["note"], "threads: %s" % rep["threads"])
    # bf16: a model loaded in bf16, and the report says how it runs
    status, _, r = s.json("POST", POST, dict(base, precision="bf16"))
    if check(status == 200, "bf16: %s %s" % (status, r)):
        rep = report_of(r)
        note = rep["precision"]["note"]
        check(rep["precision"]["active"] == "bf16"
              and ("widened to f32" in note or "AVX512_BF16 dot products:" in note),
              "bf16: %s" % rep["precision"])
    # kiln's own jobs API takes the same fields and carries the same report
    status, _, r = s.json("POST", "/api/v1/jobs", dict(base, attention="plain", attention_tile=24))
    if check(status == 202, "job: %s %s" % (status, r)):
        job = {}
        deadline = time.time() + 60
        while time.time() < deadline:
            _, _, job = s.json("GET", r["url"])
            if job.get("state") in ("done", "failed", "cancelled"):
                break
            time.sleep(0.1)
        rep = {o["optimization"]: o for o in job.get("optimizations", [])}
        check(job.get("state") == "done" and rep.get("attention", {}).get("active") == "plain",
              "job %s: optimizations %s" % (job.get("state"), job.get("optimizations")))


def test_bad_values_are_refused(s):
    cases = [({"attention": "flash"}, "attention"), ({"attention_tile": -1}, "attention_tile"),
             ({"attention_tile": "big"}, "attention_tile"), ({"layout": "nchwc"}, "layout"),
             ({"fusion": "maybe"}, "fusion"), ({"fusion": 2.5}, "fusion"), ({"memory": "pool"}, "memory"),
             ({"fast_math": []}, "fast_math"), ({"threads": 5000}, "threads"), ({"vae_tiling": "x"}, "vae_tiling"),
             ({"vae_tile": 8}, "vae_tile"), ({"vae_tile": 100}, "vae_tile"), ({"vae_tile": 4096}, "vae_tile"),
             ({"precision": "f8"}, "precision")]
    for body, field in cases:
        status, _, r = s.json("POST", POST, dict({"prompt": "x", "steps": 1}, **body))
        check(status == 400 and isinstance(r, dict) and r.get("error") == "invalid_field" and r.get("field") == field
              and r.get("detail") and r.get("allowed"),
              "%r: expected 400 naming %s with the allowed values, got %s %s" % (body, field, status, r))


def test_debug_report(s):
    base = {"prompt": "a red circle", "steps": 2, "seed": 3, "sampler_name": "euler"}
    status, _, plain = s.json("POST", POST, base)
    status2, _, dbg = s.json("POST", POST, dict(base, debug=True))
    if check(status == 200 and status2 == 200, "debug and not: %s %s" % (status, status2)):
        check("debug" not in json.loads(plain["info"])["kiln"], "no report without debug")
        d = json.loads(dbg["info"])["kiln"].get("debug", {})
        psnr = d.get("psnr_min_db")
        check(d.get("nonfinite", 1) is None and d.get("validated") is True and
              (psnr == "inf" or (isinstance(psnr, float) and psnr >= 58)) and
              isinstance(d.get("latent_max_error"), float), "txt2img debug report: %s" % d)
        check(plain["images"] == dbg["images"], "debug must not change the images")
    status, _, r = s.json("POST", POST, dict(base, debug="yes"))
    check(status == 400 and r.get("field") == "debug", "debug must be a boolean: %s %s" % (status, r))
    # the jobs API: the report in the job
    status, _, r = s.json("POST", "/api/v1/jobs", dict(base, debug=True, precision="f16"))
    if check(status == 202, "debug job: %s %s" % (status, r)):
        job = {}
        deadline = time.time() + 60
        while time.time() < deadline:
            _, _, job = s.json("GET", r["url"])
            if job.get("state") in ("done", "failed", "cancelled"):
                break
            time.sleep(0.1)
        d = job.get("debug", {})
        psnr = d.get("psnr_min_db")
        # f16 weights of an f32 model: a finite PSNR, held to 47 dB as in test_debug.c
        check(job.get("state") == "done" and d.get("validated") is True and isinstance(psnr, float) and
              psnr >= 47 and "loaded again at f32" in d.get("reference", ""), "job debug report: %s" % d)


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = temp_dir()
    env = {"XDG_CACHE_HOME": os.path.join(work, "cache"), "KILN_MODEL": ""}
    try:
        model = make_model(make_random_model, tokenizer, work)
        s = Server(kiln, model, work, env=env)
        try:
            for name, fn in (("switches_run_and_report", test_switches_run_and_report),
                             ("bad_values_are_refused", test_bad_values_are_refused),
                             ("debug_report", test_debug_report)):
                current[0] = name
                fn(s)
        finally:
            s.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
