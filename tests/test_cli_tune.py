#!/usr/bin/env python3
"""`kiln tune` and `--tuned` as a user runs them, on a tiny random-weight
model, with the tuning cache in a temporary XDG_CACHE_HOME:

    python3 tests/test_cli_tune.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

Checks consistency, never timings: the stored entry is the best row of the
tuner's own table, --tuned reuses it without measuring, and a cache made on
another CPU, for another model file, or corrupt is not used (with a message)
and generation goes on with the defaults. Prints "N passed, N failed".
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import check, current, finish, make_model, temp_dir  # noqa: E402

ENV = {}


def run(kiln, *args):
    p = subprocess.run([kiln] + list(args), capture_output=True, timeout=600,
                       env=dict(os.environ, KILN_MODEL="", **ENV))
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def cache_file():
    return os.path.join(ENV["XDG_CACHE_HOME"], "kiln", "tuning.json")


TUNE = ["-W", "64", "-H", "64", "--steps", "1", "--runs", "1", "--max-batch", "2", "--precision", "f32,bf16",
        "--threads", "1"]


def test_tune_writes_cache(kiln, model, work, state):
    rc, stdout, stderr = run(kiln, "tune", "-m", model, *TUNE, "--json")
    if not check(rc == 0, "tune: rc %d, %s" % (rc, stderr)):
        return
    table = json.loads(stdout)
    state["table"] = table
    rows = table["candidates"]
    check(len(rows) >= 4, "candidates: %d" % len(rows))
    check(table["default"] == 0 and rows[0]["default"] and rows[0]["precision"] == "f32" and
          rows[0]["attention"] == "tiled" and rows[0]["attention_tile"] == 0,
          "the default configuration is measured first: %s" % rows[0])
    check({r["precision"] for r in rows} == {"f32", "bf16"}, "both precisions tried")
    check({r["batch_size"] for r in rows} == {1, 2}, "batch sizes 1 and 2 tried")
    check(any(r["attention"] == "plain" for r in rows), "the plain attention tried")
    check(rows[0]["winograd"] == "on" and any(r["winograd"] == "off" for r in rows), "Winograd off tried")
    ok = [r for r in rows if r["ok"]]
    best = max(ok, key=lambda r: r["images_per_s"])
    check(table["best"] == best["index"], "best is the fastest row: %s vs %s" % (table["best"], best["index"]))
    check(best["images_per_s"] >= rows[0]["images_per_s"], "the pick is at least as fast as the default")
    check(table["stored"] and table["cache"] == cache_file(), "stored in %s: %s" % (cache_file(), table["cache"]))
    check("measuring" in stderr and "images/s" in stderr and "best: #" in stderr,
          "the text table on stderr with --json: %s" % stderr[-400:])

    with open(cache_file()) as f:
        cache = json.load(f)
    entries = cache["entries"]
    if not check(len(entries) == 1, "one entry: %s" % entries):
        return
    e = entries[0]
    state["entry"] = e
    check(e["cpu"] == table["cpu"] and e["isa"] == table["isa"], "key cpu/isa: %s" % e)
    check(re.fullmatch(r"[0-9a-f]{64}", e["model_hash"]) is not None and e["model_hash"] == table["model_hash"],
          "model hash: %s" % e["model_hash"])
    check(e["resolution"] == "64x64" and e["width"] == 64 and e["height"] == 64, "resolution: %s" % e)
    check(e["model_path"] == os.path.realpath(model), "model path: %s" % e["model_path"])
    check(e["batch_size"] == best["batch_size"] and e["optimizations"] == best["optimizations"] and
          abs(e["images_per_s"] - best["images_per_s"]) < 1e-9, "the entry is the best row: %s vs %s" % (e, best))
    check(e["kiln_version"] and e["measured_at"] and e["measured_at_unix"] > 0, "when and by what: %s" % e)

    # the text table on stdout without --json, and --no-store leaves the cache alone
    before = open(cache_file()).read()
    rc, stdout, stderr = run(kiln, "tune", "-m", model, *TUNE, "--no-store")
    check(rc == 0 and "batch" in stdout and "(default)" in stdout and "best: #" in stdout, "table: %s" % stdout)
    check(open(cache_file()).read() == before, "--no-store does not write the cache")

    # tuning the same key again replaces the entry rather than adding one
    rc, _, stderr = run(kiln, "tune", "-m", model, *TUNE)
    with open(cache_file()) as f:
        check(rc == 0 and len(json.load(f)["entries"]) == 1, "one entry per key after a second tune")
    with open(cache_file(), "w") as f:
        json.dump(cache, f)  # back to the one the checks above know


def test_target_stops_early(kiln, model, work, state):
    rc, stdout, stderr = run(kiln, "tune", "-m", model, *TUNE, "--target", "0.0001", "--json", "--no-store")
    if check(rc == 0, "tune --target: rc %d, %s" % (rc, stderr)):
        t = json.loads(stdout)
        check(t["stopped_early"] and len(t["candidates"]) == 1 and t["candidates"][0]["default"],
              "a target any candidate meets stops after the default: %s" % t["candidates"])


def generate(kiln, model, work, *extra):
    out = os.path.join(work, "out")
    return run(kiln, "generate", "-m", model, "-p", "a red circle", "--steps", "1", "--seed", "3", "-o", out,
               "-q", "--json", *extra)


def active(stdout):
    d = json.loads(stdout)
    return d, {o["optimization"]: o["active"] for o in d["optimizations"]}


def test_generate_tuned(kiln, model, work, state):
    e = state.get("entry")
    if not check(e is not None, "needs the tune test's entry"):
        return
    rc, stdout, stderr = generate(kiln, model, work, "-W", "64", "-H", "64", "--num-images", "2", "--tuned")
    if not check(rc == 0, "generate --tuned: rc %d, %s" % (rc, stderr)):
        return
    check("using tuned settings from %s" % cache_file() in stderr, "says it uses the cache: %s" % stderr)
    check("measuring" not in stderr, "no measuring under --tuned: %s" % stderr)
    d, act = active(stdout)
    check(act["precision"] == e["optimizations"]["precision"] and act["threads"] == e["optimizations"]["threads"] and
          act["attention"] == e["optimizations"]["attention"] and act["winograd"] == e["optimizations"]["winograd"],
          "runs the tuned switches: %s vs %s" % (act, e))
    check(d["plan"]["batch"] == min(2, e["batch_size"]), "the tuned batch: %s vs %d" % (d["plan"], e["batch_size"]))
    # a flag given beside --tuned wins over the cache
    other = "f32" if e["optimizations"]["precision"] != "f32" else "bf16"
    rc, stdout, stderr = generate(kiln, model, work, "-W", "64", "-H", "64", "--tuned", "--precision", other)
    check(rc == 0 and active(stdout)[1]["precision"] == other, "--precision beside --tuned wins: %s" % stderr)
    # the model's native size when no -W/-H (the tiny model's is 64): the same entry
    rc, stdout, stderr = generate(kiln, model, work, "--tuned")
    check(rc == 0 and "using tuned settings" in stderr, "native size finds the entry: %s" % stderr)
    # bench --tuned reads the same entry
    rc, stdout, stderr = run(kiln, "bench", "-m", model, "-W", "64", "-H", "64", "--runs", "1", "--warmup", "0",
                             "--tuned", "--json")
    check(rc == 0 and "using tuned settings" in stderr and
          json.loads(stdout)["precision"] == e["optimizations"]["precision"], "bench --tuned: %s" % stderr)


def with_cache(text):
    with open(cache_file(), "w") as f:
        f.write(text)


def test_stale_and_corrupt(kiln, model, work, state):
    e = state.get("entry")
    if not check(e is not None, "needs the tune test's entry"):
        return
    good = open(cache_file()).read()
    # no entry for this size
    rc, stdout, stderr = generate(kiln, model, work, "-W", "128", "-H", "64", "--tuned")
    check(rc == 0 and "no tuned settings" in stderr and active(stdout)[1]["precision"] == "f32",
          "another size: defaults with a message: %s" % stderr)
    # another CPU
    cache = json.loads(good)
    cache["entries"][0]["cpu"] = "Some Other CPU 9000"
    with_cache(json.dumps(cache))
    rc, stdout, stderr = generate(kiln, model, work, "-W", "64", "-H", "64", "--tuned")
    check(rc == 0 and "another CPU" in stderr and "Some Other CPU 9000" in stderr and "defaults" in stderr,
          "another CPU: ignored with a message: %s" % stderr)
    check(rc == 0 and active(stdout)[1]["precision"] == "f32", "another CPU: the defaults run")
    # the model file changed since (same path, another hash)
    cache = json.loads(good)
    cache["entries"][0]["model_hash"] = "0" * 64
    with_cache(json.dumps(cache))
    rc, stdout, stderr = generate(kiln, model, work, "-W", "64", "-H", "64", "--tuned")
    check(rc == 0 and "changed since it was tuned" in stderr and "defaults" in stderr,
          "model changed: ignored with a message: %s" % stderr)
    # corrupt files: a warning naming the file, the defaults, never a crash
    for text in ("{\"format\": \"kiln-tuning\", \"entries\": [", "not json at all", "[]",
                 json.dumps({"format": "kiln-tuning", "version": 1, "entries": [{"cpu": 3}]})):
        with_cache(text)
        rc, stdout, stderr = generate(kiln, model, work, "-W", "64", "-H", "64", "--tuned")
        check(rc == 0 and "warning" in stderr and cache_file() in stderr and "defaults" in stderr,
              "corrupt cache %r: rc %d, %s" % (text[:20], rc, stderr))
    # tune replaces a corrupt file with a good one
    rc, stdout, stderr = run(kiln, "tune", "-m", model, *TUNE, "--target", "0.0001")
    check(rc == 0 and "replacing it" in stderr, "tune over a corrupt cache warns: %s" % stderr)
    with open(cache_file()) as f:
        check(len(json.load(f)["entries"]) == 1, "a good cache again")


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = temp_dir()
    ENV["XDG_CACHE_HOME"] = os.path.join(work, "xdg-cache")
    state = {}
    try:
        model = make_model(make_random_model, tokenizer, work)
        for name, fn in (("tune_writes_cache", test_tune_writes_cache), ("target_stops_early", test_target_stops_early),
                         ("generate_tuned", test_generate_tuned), ("stale_and_corrupt", test_stale_and_corrupt)):
            current[0] = name
            fn(kiln, model, work, state)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
