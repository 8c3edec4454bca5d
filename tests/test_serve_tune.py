#!/usr/bin/env python3
"""The auto-tuner through kiln serve, on a tiny random-weight model, with the
tuning cache in a temporary XDG_CACHE_HOME: GET /api/v1/tune before and
after a run, POST /api/v1/tune (its table, its errors), requests with
"tuned": true, and kiln serve --tuned.

    python3 tests/test_serve_tune.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

Checks consistency, never timings. Prints "N passed, N failed".
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import Server, check, current, finish, make_model, temp_dir  # noqa: E402

TUNE = {"width": 64, "height": 64, "steps": 1, "runs": 1, "max_batch": 2, "precision": ["f32", "bf16"],
        "threads": [1], "timeout_s": 300}


def report(r):
    return {o["optimization"]: o["active"] for o in r["kiln"]["optimizations"]}


def test_api(kiln, model, work, env):
    s = Server(kiln, model, work, env=env)
    try:
        status, _, r = s.json("GET", "/api/v1/tune")
        check(status == 404 and r["error"] == "not_tuned" and "no tuned settings" in r["detail"],
              "GET before tuning: %s %s" % (status, r))
        status, _, r = s.json("POST", "/api/v1/tune", {"timeout_s": "soon"})
        check(status == 400 and r["field"] == "timeout_s", "bad timeout: %s %s" % (status, r))
        status, _, r = s.json("POST", "/api/v1/tune", {"precision": ["f8"], "timeout_s": 60})
        check(status == 400 and r["error"] == "tune_failed" and "precision" in r["detail"],
              "bad precision: %s %s" % (status, r))
        status, _, r = s.json("POST", "/api/v1/tune", TUNE, timeout=400)
        if not check(status == 200 and r and r.get("stored"), "POST tune: %s %s" % (status, r)):
            return
        rows = r["candidates"]
        best = max((c for c in rows if c["ok"]), key=lambda c: c["images_per_s"])
        check(r["best"] == best["index"] and rows[0]["default"], "the table's best and default: %s" % r["best"])
        status, _, g = s.json("GET", "/api/v1/tune")
        check(status == 200 and g["entry"]["batch_size"] == best["batch_size"] and
              g["entry"]["optimizations"] == best["optimizations"] and g["entry"]["resolution"] == "64x64",
              "GET after tuning is the best row: %s %s" % (status, g))
        tuned = best["optimizations"]

        body = {"prompt": "a red circle", "steps": 1, "seed": 2, "width": 64, "height": 64, "num_images": 2}
        status, _, r = s.json("POST", "/sdapi/v1/txt2img", dict(body, tuned=True))
        if check(status == 200, "txt2img tuned: %s %s" % (status, r)):
            act = report(r["info"] if isinstance(r.get("info"), dict) else json.loads(r["info"]))
            check(act["precision"] == tuned["precision"] and act["attention"] == tuned["attention"],
                  "tuned request runs the stored switches: %s vs %s" % (act, tuned))
        status, _, r = s.json("POST", "/sdapi/v1/txt2img", dict(body, tuned=True, precision="f16"))
        if check(status == 200, "txt2img tuned + precision: %s %s" % (status, r)):
            act = report(r["info"] if isinstance(r.get("info"), dict) else json.loads(r["info"]))
            check(act["precision"] == "f16", "the request's precision wins: %s" % act)
        status, _, r = s.json("POST", "/sdapi/v1/txt2img", dict(body, tuned="yes"))
        check(status == 400 and r["field"] == "tuned", "tuned must be a boolean: %s %s" % (status, r))
        status, _, r = s.json("GET", "/api/v1/info")
        check(status == 200 and r["tuned"] is False, "info: not started with --tuned")
    finally:
        s.stop()


def test_serve_tuned(kiln, model, work, env):
    s = Server(kiln, model, work, "--tuned", env=env, name="tuned")
    try:
        check("using tuned settings from" in s.stderr(), "serve --tuned says so: %s" % s.stderr())
        status, _, r = s.json("GET", "/api/v1/info")
        check(status == 200 and r["tuned"] is True, "info says tuned: %s" % r.get("tuned"))
    finally:
        s.stop()
    # a corrupt cache: a warning, and the server still starts with its defaults
    with open(os.path.join(env["XDG_CACHE_HOME"], "kiln", "tuning.json"), "w") as f:
        f.write("{ not json")
    s = Server(kiln, model, work, "--tuned", env=env, name="corrupt")
    try:
        check("warning" in s.stderr() and "tuning.json" in s.stderr(), "corrupt cache warns: %s" % s.stderr())
        status, _, r = s.json("GET", "/api/v1/tune")
        check(status == 500 and r["error"] == "corrupt_cache", "GET on a corrupt cache: %s %s" % (status, r))
        status, _, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "a red circle", "steps": 1, "tuned": True})
        check(status == 200, "a tuned request on a corrupt cache runs with the defaults: %s" % status)
    finally:
        s.stop()


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = temp_dir()
    env = {"XDG_CACHE_HOME": os.path.join(work, "xdg-cache"), "KILN_MODEL": ""}
    try:
        model = make_model(make_random_model, tokenizer, work)
        for name, fn in (("api", test_api), ("serve_tuned", test_serve_tuned)):
            current[0] = name
            fn(kiln, model, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
