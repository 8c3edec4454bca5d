#!/usr/bin/env python3
"""`kiln generate --trace`, the metrics of `--json`, and the history that
`kiln bench --history` summarises, with a tiny random-weight model:

    python3 tests/test_cli_trace.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

The trace is checked against the trace-event format that Perfetto and
chrome://tracing read (a JSON object with "traceEvents", every event a
complete slice: ph "X", numeric ts and dur >= 0, pid and tid, a non-empty
name), and against the run's own --json: a slice per node the op profile
counted, a step slice per step time, the UNet's nodes inside their step.
The history lives under a temporary XDG_CACHE_HOME; its summary is checked
against nearest-rank statistics computed here from the file itself.
Standard library only. Prints "N passed, N failed".
"""
import csv
import io
import json
import math
import numbers
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import check, current, finish, make_model  # noqa: E402


class Kiln:
    def __init__(self, kiln, model, work):
        self.kiln, self.model, self.work = kiln, model, work
        self.cache = os.path.join(work, "cache")
        self.env = dict(os.environ, KILN_MODEL="", XDG_CACHE_HOME=self.cache)

    def generate(self, *extra, env=None):
        args = [self.kiln, "generate", "-m", self.model, "-p", "a red circle", "--seed", "3", "-q", "--threads",
                "2", "--steps", "3", "--sampler", "euler", "--cfg", "5", "-o", os.path.join(self.work, "out"),
                "--overwrite"] + list(extra)
        r = subprocess.run(args, capture_output=True, text=True, env=env or self.env, timeout=300)
        return r.returncode, r.stdout, r.stderr

    def bench_history(self, *extra):
        r = subprocess.run([self.kiln, "bench", "--history"] + list(extra), capture_output=True, text=True,
                           env=self.env, timeout=60)
        return r.returncode, r.stdout, r.stderr

    def history_path(self):
        return os.path.join(self.cache, "kiln", "history.jsonl")


def is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def nearest_rank(values, q):
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s) - 1e-9)) - 1]


# ---- the cases ----

def test_trace(k):
    trace = os.path.join(k.work, "trace.json")
    # 3 images in micro-batches of 2 and 1, 3 steps each
    code, stdout, stderr = k.generate("--num-images", "3", "--batch-size", "2", "--json", "--trace", trace)
    if not check(code == 0, "exit %d: %s" % (code, stderr)):
        return
    run = json.loads(stdout)
    try:
        with open(trace) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        check(False, "the trace is not JSON: %s" % e)
        return
    check(isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list), "top level: an object with traceEvents")
    check(doc.get("displayTimeUnit") in ("ms", "ns"), "displayTimeUnit: %r" % doc.get("displayTimeUnit"))
    events = doc.get("traceEvents", [])
    bad = []
    for e in events:
        if not (isinstance(e, dict) and e.get("ph") == "X" and isinstance(e.get("name"), str) and e["name"]
                and isinstance(e.get("cat"), str) and is_number(e.get("ts")) and e["ts"] >= 0
                and is_number(e.get("dur")) and e["dur"] >= 0 and isinstance(e.get("pid"), int)
                and isinstance(e.get("tid"), int) and isinstance(e.get("args", {}), dict)):
            bad.append(e)
    check(events and not bad, "%d events, %d not complete slices of the format, e.g. %r" %
          (len(events), len(bad), bad[:1]))

    nodes = [e for e in events if e["cat"] != "stage"]
    stages = [e for e in events if e["cat"] == "stage"]
    profiled = sum(op["nodes"] for op in run["op_profile"]["ops"])
    check(len(nodes) == profiled, "%d node slices, the profile counted %d" % (len(nodes), profiled))
    kinds = {op["op"] for op in run["op_profile"]["ops"]}
    check({e["cat"] for e in nodes} == kinds, "slice categories %s, profile kinds %s" %
          (sorted({e["cat"] for e in nodes}), sorted(kinds)))

    # the work of each op kind: the slices' gflop add up to the profile's, and
    # gflops is gflop over the slice's duration
    for op in run["op_profile"]["ops"]:
        of_kind = [e for e in nodes if e["cat"] == op["op"]]
        got = sum(e["args"].get("gflop", 0) for e in of_kind)
        check(abs(got - op["gflop"]) <= 1e-6 * max(op["gflop"], 1e-9) + 1e-12,
              "%s: the slices carry %.9g GFLOP, the profile %.9g" % (op["op"], got, op["gflop"]))
    rated = [e for e in nodes if "gflop" in e["args"] and e["dur"] > 0]
    check(any(e["cat"] == "conv2d" for e in rated), "no conv2d slice carries its gflop")
    # dur is written to the nanosecond, so the rate it gives is off by up to 0.5 ns / dur
    off = [e for e in rated if abs(e["args"]["gflops"] * e["dur"] * 1e-6 / e["args"]["gflop"] - 1) >
           1e-6 + 1e-3 / e["dur"]]
    check(not off, "%d slices whose gflops is not gflop over their duration, e.g. %r" % (len(off), off[:1]))
    check(all("gflop" not in e["args"] for e in stages), "a stage slice carries gflop")

    steps = [e for e in stages if e["name"].startswith("step ")]
    steps_s = run["stages"]["steps_s"]
    check(len(steps) == len(steps_s) == 6, "%d step slices, %d step times, expected 6" % (len(steps), len(steps_s)))
    steps.sort(key=lambda e: e["ts"])
    for e, s in zip(steps, steps_s):
        check(abs(e["dur"] * 1e-6 - s) < 1e-6, "step slice of %g us against a step time of %g s" % (e["dur"], s))
    for name, count in (("text", 1), ("denoise", 2), ("decode", 2)):
        got = sum(1 for e in stages if e["name"] == name)
        check(got == count, "%d '%s' slices, expected %d" % (got, name, count))

    # the UNet's nodes: inside their step, the same number in every step
    unet = [e for e in nodes if e["args"].get("graph") == "unet"]
    per_step = {}
    for e in unet:
        key = (e["args"].get("batch"), e["args"].get("step"))
        per_step.setdefault(key, []).append(e)
    check(len(per_step) == 6 and len({len(v) for v in per_step.values()}) == 1,
          "UNet node slices per (batch, step): %s" % {k2: len(v) for k2, v in per_step.items()})
    check(len(unet) == run["timings"]["unet_evals"] * len(next(iter(per_step.values()), [])),
          "%d UNet slices for %d evaluations" % (len(unet), run["timings"]["unet_evals"]))
    outside = 0
    for e in steps:
        key = (e["args"].get("batch"), e["args"].get("step"))
        for n in per_step.get(key, []):
            if n["ts"] < e["ts"] - 1e-3 or n["ts"] + n["dur"] > e["ts"] + e["dur"] + 1e-3:
                outside += 1
    check(outside == 0, "%d UNet slices outside their step slice" % outside)
    # slices on the one thread nest: none ends inside another it started after
    ordered = sorted(events, key=lambda e: (e["ts"], -e["dur"]))
    stack, crossing = [], 0
    for e in ordered:
        while stack and stack[-1] <= e["ts"] + 1e-3:
            stack.pop()
        if stack and e["ts"] + e["dur"] > stack[-1] + 1e-3:
            crossing += 1
        stack.append(e["ts"] + e["dur"])
    check(crossing == 0, "%d slices cross another instead of nesting" % crossing)


def test_metrics(k):
    code, stdout, stderr = k.generate("--num-images", "3", "--batch-size", "2", "--json", "--no-history")
    if not check(code == 0, "exit %d: %s" % (code, stderr)):
        return
    run = json.loads(stdout)
    m = run.get("machine", {})
    check(m.get("cores", 0) >= 1 and m.get("threads") == 2 and m.get("isa") in ("scalar", "avx2", "avx512"),
          "machine: %r" % m)
    b = run.get("batching", {})
    check(b == {"batch_size": 2, "micro_batches": 2, "effective_batch_size": 4}, "batching: %r" % b)
    check(run.get("images_generated") == 3 and run.get("precision") == "f32", "images %r, precision %r" %
          (run.get("images_generated"), run.get("precision")))
    st = run.get("stages", {})
    check(sum(st.get("steps_s", [0])) > 0 and sum(st["steps_s"]) <= st["denoise_s"] + 1e-6,
          "steps add up to %g s of %g s denoising" % (sum(st.get("steps_s", [])), st.get("denoise_s", 0)))
    check(st["step_s"]["count"] == 6 and st["step_s"]["p50"] == nearest_rank(st["steps_s"], 0.5),
          "step statistics %r against the step times %r" % (st["step_s"], st["steps_s"]))
    ops = run["op_profile"]["ops"]
    check(abs(sum(o["share"] for o in ops) - 1) < 1e-9, "shares add up to %r" % sum(o["share"] for o in ops))
    check(run["op_profile"]["graph_runs"] == 1 + 6 + 3, "graph runs: %r (text 1 + UNet 6 + decode 3)" %
          run["op_profile"]["graph_runs"])
    mem = run.get("memory", {})
    check(mem.get("peak_rss_bytes", 0) > mem.get("arena_bytes", 0) > 0, "memory: %r" % mem)
    t = run["timings"]
    check(abs(run["throughput"]["images_per_s"] - 3 / t["total_s"]) < 1e-6 * run["throughput"]["images_per_s"],
          "images per second %r for 3 in %r s" % (run["throughput"]["images_per_s"], t["total_s"]))
    check(run["inference_s"] == t["total_s"] and run["cpu_s"] > 0, "inference %r, cpu %r" %
          (run["inference_s"], run["cpu_s"]))
    check(set(run["optimizations_active"]) >= {"attention", "precision", "threads"} and
          run["optimizations_active"]["threads"] == "2", "optimizations active: %r" % run["optimizations_active"])
    check("history" not in run, "--no-history: no history summary in the JSON")


def test_history(k):
    path = k.history_path()
    before = 0
    if os.path.exists(path):
        with open(path) as f:
            before = sum(1 for _ in f)
    for _ in range(3):
        code, _, stderr = k.generate()
        check(code == 0, "exit %d: %s" % (code, stderr))
    code, _, stderr = k.generate("--no-history")
    with open(path) as f:
        records = [json.loads(line) for line in f]
    check(len(records) == before + 3, "%d records after 3 runs and one --no-history, expected %d" %
          (len(records), before + 3))
    last = records[-1]
    check(last.get("source") == "kiln generate" and last.get("images") == 1 and last.get("steps") == 3,
          "the record: %r" % {x: last.get(x) for x in ("source", "images", "steps")})

    walls = {}
    for r in records:
        for op in r["operations"]:
            walls.setdefault(op["op"], []).append(op["wall_s"])
    code, stdout, stderr = k.bench_history("--json")
    if not check(code == 0, "bench --history --json: exit %d: %s" % (code, stderr)):
        return
    summary = json.loads(stdout)
    check(summary["records"] == len(records) and summary["file"] == path, "summary of %r records in %r" %
          (summary["records"], summary["file"]))
    by_op = {o["op"]: o for o in summary["operations"]}
    check(set(by_op) == set(walls), "operations %s, expected %s" % (sorted(by_op), sorted(walls)))
    for name, values in walls.items():
        o = by_op.get(name, {})
        want = {"runs": len(values), "min_s": min(values), "max_s": max(values),
                "p50_s": nearest_rank(values, 0.5), "p95_s": nearest_rank(values, 0.95)}
        got = {x: o.get(x) for x in want}
        check(all(abs(got[x] - want[x]) <= 1e-12 * max(1, abs(want[x])) for x in want if got[x] is not None)
              and None not in got.values(), "%s: %r, expected %r" % (name, got, want))
        check(abs(o.get("mean_s", -1) - sum(values) / len(values)) < 1e-9, "%s mean" % name)

    code, stdout, stderr = k.bench_history("--csv")
    rows = list(csv.DictReader(io.StringIO(stdout)))
    check(code == 0 and {r["op"] for r in rows} == set(walls), "CSV operations: %s" % [r["op"] for r in rows])
    for r in rows:
        values = walls.get(r["op"], [0])
        check(int(r["runs"]) == len(values) and abs(float(r["p95_s"]) - nearest_rank(values, 0.95)) < 1e-6,
              "CSV %s: runs %s p95 %s" % (r["op"], r["runs"], r["p95_s"]))
    code, stdout, _ = k.bench_history()
    check(code == 0 and "generate" in stdout and "nearest-rank" in stdout, "bench --history text: %r" % stdout)


def test_failures(k):
    # a history that cannot be written is a warning naming the file; the run succeeds
    blocker = os.path.join(k.work, "not-a-folder")
    with open(blocker, "w") as f:
        f.write("x")
    env = dict(k.env, XDG_CACHE_HOME=blocker)
    code, _, stderr = k.generate(env=env)
    check(code == 0 and "warning" in stderr and blocker in stderr, "unwritable history: exit %d, %r" % (code, stderr))
    # a trace that cannot be written fails the run, naming the file, and keeps the image
    missing = os.path.join(k.work, "no", "such", "trace.json")
    code, stdout, stderr = k.generate("--trace", missing, "--no-history")
    check(code == 1 and missing in stderr, "unwritable trace: exit %d, %r" % (code, stderr))
    check(stdout.strip().endswith(".png") and os.path.exists(stdout.strip()), "the image is kept: %r" % stdout)
    check(not [n for n in os.listdir(k.work) if n.startswith(".kiln-trace")], "no temporary trace left behind")


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = tempfile.mkdtemp(prefix="kiln-trace-test-")
    t0 = time.time()
    try:
        k = Kiln(kiln, make_model(make_random_model, tokenizer, work), work)
        for name, fn in (("trace", test_trace), ("metrics", test_metrics), ("history", test_history),
                         ("failures", test_failures)):
            current[0] = name
            t = time.time()
            fn(k)
            print("ok %s (%.1fs)" % (name, time.time() - t), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("time: %.1fs" % (time.time() - t0))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
