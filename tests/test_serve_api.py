#!/usr/bin/env python3
"""`kiln serve`'s HTTP API over real HTTP on loopback, with a tiny
random-weight model:

    python3 tests/test_serve_api.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

The A1111 calls (txt2img, img2img, progress, interrupt, samplers,
sd-models), kiln's own (info, jobs, perf, tune), /healthz and /metrics;
refusals that name the field; the body cap; clients that hang up; the
load check (50 concurrent requests against --queue 16: only 200s and 503s,
no job lost, /healthz answering throughout); the API key; the history
surviving a restart; and SIGTERM during a job. Prints "N passed, N failed".
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import Server, check, current, finish, make_model, png_size, temp_dir  # noqa: E402


def b64png(s):
    return png_size(base64.b64decode(s))


def metrics(server):
    status, _, data = server.request("GET", "/metrics")
    values = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return status, values


def wait_until(cond, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


# ---- the cases ----

def test_page_and_health(s):
    status, h, body = s.json("GET", "/healthz")
    check(status == 200 and body["status"] == "ok", "healthz: %s %s" % (status, body))
    status, h, data = s.request("GET", "/")
    check(status == 200 and h["content-type"].startswith("text/html") and b"<title>kiln</title>" in data,
          "the page: %s %s" % (status, h.get("content-type")))
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, h, data = s.request("GET", path)
        check(status == 200 and h["content-type"].startswith(kind) and len(data) > 100, "%s: %s" % (path, status))
    status, _, body = s.json("GET", "/no/such/path")
    check(status == 404 and body["error"] == "not_found", "unknown path: %s %s" % (status, body))
    status, _, body = s.json("GET", "/sdapi/v1/txt2img")
    check(status == 405, "GET on a POST route: %s %s" % (status, body))


def test_txt2img(s):
    status, _, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "a red circle", "steps": 8})
    if not check(status == 200, "txt2img: %s %s" % (status, r)):
        return None
    check(set(r) >= {"images", "parameters", "info"}, "answer keys: %s" % list(r))
    check(len(r["images"]) == 1 and b64png(r["images"][0]) == (64, 64),
          "one 64x64 PNG expected, got %d images" % len(r["images"]))
    check(r["parameters"]["prompt"] == "a red circle" and r["parameters"]["steps"] == 8,
          "parameters echo the request: %s" % r["parameters"])
    info = json.loads(r["info"])
    check(info["steps"] == 8 and info["width"] == 64 and len(info["all_seeds"]) == 1 and
          info["sampler_name"] == "Euler a" and "Seed: %d" % info["seed"] in info["infotexts"][0],
          "info: %s" % r["info"][:300])
    first = r["images"][0]

    # batches: batch_size x n_iter images, seeds seed + i, reproducible
    status, _, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "a blue square", "steps": 3, "seed": 42,
                                                       "batch_size": 2, "n_iter": 2, "sampler_name": "DPM++ 2M"})
    if check(status == 200, "batch: %s %s" % (status, r)):
        info = json.loads(r["info"])
        check(len(r["images"]) == 4 and info["all_seeds"] == [42, 43, 44, 45], "seeds %s" % info.get("all_seeds"))
        check(info["sampler_name"] == "DPM++ 2M", "sampler %s" % info["sampler_name"])
        status, _, again = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "a blue square", "steps": 3, "seed": 43,
                                                                "sampler_name": "dpmpp_2m"})
        check(status == 200 and again["images"][0] == r["images"][1],
              "image 1 of seed 42 must equal the image of seed 43 alone")
    # kiln's own: num_images not a multiple of batch_size, f16 loaded on first use
    status, _, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "x", "steps": 2, "num_images": 3, "batch_size": 2,
                                                       "precision": "f16", "width": 128, "height": 64})
    if check(status == 200, "f16, 3 images: %s %s" % (status, r)):
        info = json.loads(r["info"])
        check(len(r["images"]) == 3 and b64png(r["images"][0]) == (128, 64), "3 images of 128x64")
        check(info["kiln"]["precision"] == "f16" and info["kiln"]["perf"]["timings"]["load_s"] > 0,
              "f16 loaded lazily: %s" % info["kiln"])
        _, _, i = s.json("GET", "/api/v1/info")
        check("f16" in i["loaded_precisions"], "loaded precisions %s" % i["loaded_precisions"])
    return first


def test_img2img(s, init):
    for form in (init, "data:image/png;base64," + init):
        status, _, r = s.json("POST", "/sdapi/v1/img2img", {"prompt": "a red circle", "steps": 6, "seed": 5,
                                                           "init_images": [form], "denoising_strength": 0.5})
        if check(status == 200, "img2img: %s %s" % (status, r)):
            check(b64png(r["images"][0]) == (64, 64), "img2img image")
            check(r["parameters"]["init_images"] is None, "init images are not echoed back")
            check(json.loads(r["info"])["denoising_strength"] == 0.5, "denoising strength in info")


def test_refusals(s):
    post = "/sdapi/v1/txt2img"
    cases = [
        (b"{not json", post, 400, "malformed_json", None),
        (b"[1, 2]", post, 400, "malformed_json", None),
        ({"width": 100}, post, 400, "invalid_field", "width"),
        ({"height": 4096}, post, 400, "invalid_field", "height"),
        ({"width": "512"}, post, 400, "invalid_field", "width"),
        ({"steps": "20"}, post, 400, "invalid_field", "steps"),
        ({"steps": 0}, post, 400, "invalid_field", "steps"),
        ({"steps": 7.5}, post, 400, "invalid_field", "steps"),
        ({"cfg_scale": 31}, post, 400, "invalid_field", "cfg_scale"),
        ({"sampler_name": "Heun"}, post, 400, "invalid_field", "sampler_name"),
        ({"batch_size": 8, "n_iter": 9}, post, 400, "invalid_field", "n_iter"),
        ({"batch_size": 65}, post, 400, "invalid_field", "batch_size"),
        ({"prompt": 5}, post, 400, "invalid_field", "prompt"),
        ({"prompt": "x" * 5000}, post, 400, "invalid_field", "prompt"),
        ({"seed": -2}, post, 400, "invalid_field", "seed"),
        ({"precision": "f8"}, post, 400, "invalid_field", "precision"),
        ({"send_images": "yes"}, post, 400, "invalid_field", "send_images"),
        ({"sampler_name": "lcm", "steps": 60}, post, 400, "invalid_field", "steps"),  # the library's refusal
        ({"prompt": "x"}, "/sdapi/v1/img2img", 400, "invalid_field", "init_images"),
        ({"init_images": ["%%%"]}, "/sdapi/v1/img2img", 400, "invalid_field", "init_images"),
        ({"init_images": [base64.b64encode(b"not a png").decode()]}, "/sdapi/v1/img2img", 400, "invalid_field",
         "init_images"),
        ({"init_images": "abc"}, "/sdapi/v1/img2img", 400, "invalid_field", "init_images"),
    ]
    for body, path, want_status, want_kind, want_field in cases:
        status, h, r = s.json("POST", path, body)
        ok = (status == want_status and isinstance(r, dict) and r.get("error") == want_kind and
              r.get("field") == want_field and r.get("detail"))
        check(ok, "%s %r: expected %d %s field %s, got %s %s" % (path, body if len(str(body)) < 80 else
                                                                  str(body)[:80], want_status, want_kind,
                                                                  want_field, status, r))
    # the allowed values come with the refusal
    _, _, r = s.json("POST", post, {"sampler_name": "Heun"})
    check("euler_a" in r.get("allowed", []) and "DPM++ 2M Karras" in r.get("allowed", []), "allowed %s" % r)
    _, _, r = s.json("POST", post, {"width": 100})
    check(r.get("allowed") == {"min": 64, "max": 2048, "multiple_of": 8}, "allowed %s" % r)
    # a body over the cap is refused before it is read
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" % (33 << 20))
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    check(answer.startswith(b"HTTP/1.1 413") and b"body_too_large" in answer, "33 MB body: %r" % answer[:200])
    # a chunked body has no length up front: it is read, dropped past the cap, then refused
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * (1 << 20)
    for _ in range(33):
        sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    sock.sendall(b"0\r\n\r\n")
    answer = sock.recv(65536)
    sock.close()
    check(answer.startswith(b"HTTP/1.1 413"), "33 MB chunked body: %r" % answer[:200])
    status, _, r = s.json("GET", "/api/v1/perf/history?limit=zero")
    check(status == 400 and r["field"] == "limit", "history limit: %s %s" % (status, r))
    status, _, r = s.json("GET", "/healthz")
    check(status == 200, "healthz after the refusals: %s" % status)


def test_progress_and_interrupt(s):
    result = {}

    def long_job():
        result["answer"] = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "long", "steps": 150, "batch_size": 1,
                                                               "n_iter": 6, "seed": 1})

    t = threading.Thread(target=long_job)
    t.start()
    seen = {}

    def running():
        status, _, p = s.json("GET", "/sdapi/v1/progress")
        if status == 200 and p["state"]["sampling_step"] > 0:
            seen.update(p)
            return True
        return False

    check(wait_until(running, 30), "progress never showed a running job")
    if seen:
        check(0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 150 and
              seen["state"]["job_count"] >= 1 and seen["eta_relative"] > 0, "progress: %s" % seen)
    status, _, r = s.json("POST", "/sdapi/v1/interrupt")
    check(status == 200 and r["interrupted"] is True, "interrupt: %s %s" % (status, r))
    t.join(60)
    status, _, r = result.get("answer", (None, None, None))
    if check(status == 200, "the interrupted job answers 200: %s %s" % (status, r)):
        info = json.loads(r["info"])
        check(info["interrupted"] is True and len(r["images"]) < 6, "interrupted with %d images" % len(r["images"]))
    status, _, p = s.json("GET", "/sdapi/v1/progress")
    check(status == 200 and p["state"]["job_count"] == 0 and p["progress"] == 0, "idle progress: %s" % p)


def test_jobs_api(s):
    status, _, r = s.json("POST", "/api/v1/jobs", {"prompt": "a green triangle", "steps": 4, "num_images": 2,
                                                   "seed": 9})
    if not check(status == 202 and r["id"] > 0, "submit: %s %s" % (status, r)):
        return
    job = None

    def done():
        nonlocal job
        _, _, job = s.json("GET", r["url"])
        return job["state"] not in ("queued", "running")

    check(wait_until(done, 30), "job never finished")
    check(job["state"] == "done" and len(job["images"]) == 2, "job: %s" % job)
    perf = job["perf"]
    check(perf["images"] == 2 and perf["timings"]["total_s"] > 0 and perf["timings"]["denoise_s"] > 0 and
          perf["peak_rss_bytes"] > 0 and perf["s_per_step"] > 0 and perf["images_per_s"] > 0,
          "perf numbers: %s" % perf)
    # the metrics of the generation, as kiln generate --json has them
    m = job.get("metrics", {})
    steps_s = m.get("stages", {}).get("steps_s", [])
    check(len(steps_s) == 4 * m.get("batching", {}).get("micro_batches", 0) and all(x > 0 for x in steps_s),
          "step times: %s for 4 steps in %s" % (steps_s, m.get("batching")))
    ops = m.get("op_profile", {}).get("ops", [])
    check(ops and abs(sum(o["share"] for o in ops) - 1) < 1e-9 and m.get("images_generated") == 2,
          "op profile: %s" % ops)
    status, h, data = s.request("GET", job["images"][1]["url"])
    check(status == 200 and h["content-type"] == "image/png" and png_size(data) == (64, 64),
          "image url: %s %s" % (status, h.get("content-type")))
    check("Seed: 10" in job["images"][1]["parameters"], "parameters %s" % job["images"][1]["parameters"])
    status, _, _ = s.json("GET", "/api/v1/jobs/999999")
    check(status == 404, "unknown job: %s" % status)
    status, _, _ = s.json("GET", "/api/v1/jobs/%d/images/7.png" % r["id"])
    check(status == 404, "unknown image: %s" % status)
    # cancelling a job that waits behind another
    a = s.json("POST", "/api/v1/jobs", {"prompt": "a", "steps": 150, "num_images": 3})[2]
    b = s.json("POST", "/api/v1/jobs", {"prompt": "b", "steps": 2})[2]
    status, _, rb = s.json("POST", "/api/v1/jobs/%d/cancel" % b["id"])
    check(status == 200 and rb["state"] == "cancelled", "cancel queued: %s %s" % (status, rb))
    status, _, ra = s.json("POST", "/api/v1/jobs/%d/cancel" % a["id"])
    check(status == 200, "cancel running: %s" % status)
    check(wait_until(lambda: s.json("GET", a["url"])[2]["state"] == "cancelled", 30), "running job not cancelled")


def test_lists_perf_metrics(s):
    status, _, r = s.json("GET", "/sdapi/v1/samplers")
    check(status == 200 and {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "LCM"} <=
          {x["name"] for x in r}, "samplers: %s" % r)
    status, _, r = s.json("GET", "/sdapi/v1/sd-models")
    check(status == 200 and r[0]["model_name"] == "tiny", "sd-models: %s" % r)
    status, _, r = s.json("GET", "/api/v1/info")
    check(status == 200 and r["threads"] >= 1 and r["limits"]["max_images"] == 64 and r["model"]["name"] == "tiny",
          "info: %s" % r)
    status, _, r = s.json("GET", "/api/v1/perf/summary")
    total = r["stages"]["total_s"]
    check(status == 200 and r["count"] >= 3 and total["count"] == r["count"] and
          0 < total["min"] <= total["p50"] <= total["p95"] <= total["max"], "summary: %s" % r)
    for stage in ("text_s", "denoise_s", "decode_s", "s_per_step"):
        check(stage in r["stages"] and r["stages"][stage]["mean"] > 0, "summary stage %s" % stage)
    status, _, r = s.json("GET", "/api/v1/perf/history")
    ids = [j["id"] for j in r["jobs"]]
    finished = [j["finished_at"] for j in r["jobs"]]
    check(status == 200 and len(ids) >= 3 and finished == sorted(finished), "history newest last: %s" % ids)
    status, _, r = s.json("GET", "/api/v1/perf/history?limit=2")
    check(status == 200 and len(r["jobs"]) == 2 and r["jobs"][-1]["id"] == ids[-1], "history limit")
    # the tuner itself is tests/test_serve_tune.py; here its route answers and checks its body
    status, _, r = s.json("POST", "/api/v1/tune", {"timeout_s": 0})
    check(status == 400 and r["field"] == "timeout_s", "tune: %s %s" % (status, r))
    status, m = metrics(s)
    for name in ("kiln_jobs_total", "kiln_jobs_failed_total", "kiln_jobs_cancelled_total", "kiln_queue_length",
                 "kiln_images_total", "kiln_seconds_per_step_count", 'kiln_seconds_per_step_bucket{le="+Inf"}',
                 "kiln_peak_memory_bytes"):
        check(name in m, "metric %s missing" % name)
    check(m.get("kiln_jobs_cancelled_total", 0) >= 2 and m.get("kiln_peak_memory_bytes", 0) > 0 and
          m.get("kiln_seconds_per_step_count", 0) > 0, "metric values: %s" % m)


def test_client_gone(s):
    _, before = metrics(s)
    # a client that asks for a long job and hangs up at once
    body = json.dumps({"prompt": "gone", "steps": 150, "n_iter": 8}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.3)
    sock.close()
    # one that sends half a body and goes away
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\":")
    sock.close()

    def idle():
        _, _, p = s.json("GET", "/sdapi/v1/progress")
        return p["state"]["job_count"] == 0

    check(wait_until(idle, 20), "the abandoned job was not cancelled")
    _, after = metrics(s)
    check(after["kiln_jobs_cancelled_total"] == before["kiln_jobs_cancelled_total"] + 1,
          "cancelled %s -> %s" % (before["kiln_jobs_cancelled_total"], after["kiln_jobs_cancelled_total"]))
    status, _, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "still here", "steps": 2})
    check(status == 200 and len(r["images"]) == 1, "a request after the hang-ups: %s" % status)


def test_client_gone_while_queued(s):
    """A client that hangs up while its job waits in the queue: the job is
    dropped from the queue and counted cancelled, and the server lives (it
    once answered such a job from fields only a run fills in: SIGSEGV)."""
    _, before = metrics(s)
    holder = threading.Thread(target=lambda: s.json("POST", "/sdapi/v1/txt2img",
                                                      {"prompt": "hold", "steps": 150, "n_iter": 4}, timeout=120))
    holder.start()
    check(wait_until(lambda: s.json("GET", "/sdapi/v1/progress")[2]["state"]["sampling_step"] > 0, 30),
          "the holding job never started")
    body = json.dumps({"prompt": "queued then gone", "steps": 2}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    check(wait_until(lambda: s.json("GET", "/sdapi/v1/progress")[2]["kiln"]["queued"] == 1, 10),
          "the second job never queued")
    sock.close()
    check(wait_until(lambda: s.json("GET", "/sdapi/v1/progress")[2]["kiln"]["queued"] == 0, 10),
          "the abandoned job stayed in the queue")
    s.json("POST", "/sdapi/v1/interrupt", {})
    holder.join(60)
    status, _, _ = s.json("GET", "/healthz")
    check(status == 200 and s.proc.poll() is None, "the server after the hang-up: %s, exit %s" %
          (status, s.proc.poll()))
    _, after = metrics(s)
    check(after["kiln_jobs_cancelled_total"] == before["kiln_jobs_cancelled_total"] + 2,
          "cancelled %s -> %s (the queued and the interrupted job)" % (before["kiln_jobs_cancelled_total"],
                                                                      after["kiln_jobs_cancelled_total"]))


def test_load(s):
    """50 concurrent requests against --queue 16: only 200s and 503s (with
    Retry-After), every accepted job answered, /healthz throughout."""
    _, before = metrics(s)
    results = [None] * 50
    health = []
    stop = threading.Event()

    def client(i):
        try:
            status, h, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "load %d" % i, "steps": 4, "seed": i},
                                  timeout=120)
            results[i] = (status, h.get("retry-after"), len(r["images"]) if status == 200 else 0)
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            results[i] = ("error", str(e), 0)

    def prober():
        while not stop.is_set():
            t0 = time.time()
            try:
                status, _, _ = s.request("GET", "/healthz", timeout=5)
            except Exception as e:  # noqa: BLE001
                status = str(e)
            health.append((status, time.time() - t0))
            time.sleep(0.05)

    probe = threading.Thread(target=prober)
    probe.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, 150 - (time.time() - started)))
    stop.set()
    probe.join(10)
    statuses = [r[0] if r else "hung" for r in results]
    ok = statuses.count(200)
    busy = statuses.count(503)
    check(ok + busy == 50, "only 200 and 503 expected: %s" % sorted(set(map(str, statuses))))
    check(ok >= 17, "at least the running job and a full queue (17) must be served, got %d" % ok)
    check(all(r[2] == 1 for r in results if r and r[0] == 200), "every 200 carries its image")
    check(all(r[1] and int(r[1]) >= 1 for r in results if r and r[0] == 503), "503s carry Retry-After")
    check(len(health) > 3 and all(h[0] == 200 for h in health), "healthz during the load: %s" %
          [h for h in health if h[0] != 200][:5])
    check(max(h[1] for h in health) < 2.0, "healthz slowest answer %.2fs" % max(h[1] for h in health))
    _, after = metrics(s)
    check(after["kiln_jobs_total"] - before["kiln_jobs_total"] == ok, "jobs finished %d, 200s %d (a lost job?)" %
          (after["kiln_jobs_total"] - before["kiln_jobs_total"], ok))
    check(after["kiln_jobs_rejected_total"] - before["kiln_jobs_rejected_total"] == busy, "rejected count")
    check(after["kiln_queue_length"] == 0, "queue empty after the load")
    print("load: %d x 200, %d x 503 in %.1fs; healthz %d answers, slowest %.3fs" %
          (ok, busy, time.time() - started, len(health), max(h[1] for h in health)), flush=True)


def test_api_key_and_history(kiln, model, work, env, jobs_before):
    s = Server(kiln, model, work, "--api-key", "s3cret", "--queue", "2", env=env, name="server-key")
    try:
        status, h, r = s.json("GET", "/api/v1/info")
        check(status == 401 and r["error"] == "unauthorized" and "bearer" in h.get("www-authenticate", "").lower(),
              "no key: %s %s" % (status, r))
        status, _, _ = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "x"}, headers={"Authorization": "Bearer nope"})
        check(status == 401, "wrong key: %s" % status)
        status, _, _ = s.json("GET", "/metrics", headers={"Authorization": "s3cret"})
        check(status == 401, "key without Bearer: %s" % status)
        for path in ("/healthz", "/", "/app.js"):
            status, _, _ = s.request("GET", path)
            check(status == 200, "%s is open: %s" % (path, status))
        auth = {"Authorization": "Bearer s3cret"}
        status, _, r = s.json("POST", "/sdapi/v1/txt2img", {"prompt": "x", "steps": 2}, headers=auth)
        check(status == 200 and len(r["images"]) == 1, "right key: %s" % status)
        # the history of the first server came back from the file
        status, _, r = s.json("GET", "/api/v1/perf/history", headers=auth)
        check(status == 200 and len(r["jobs"]) == jobs_before + 1,
              "history after restart: %d jobs, expected %d" % (len(r["jobs"]), jobs_before + 1))
    finally:
        code = s.stop()
    check(code == 0, "exit status %s" % code)


def test_sigterm_during_job(kiln, model, work, env):
    s = Server(kiln, model, work, "--queue", "4", env=env, name="server-term")
    answers = {}

    def call(name, body):
        try:
            answers[name] = s.json("POST", "/sdapi/v1/txt2img", body, timeout=60)
        except Exception as e:  # noqa: BLE001
            answers[name] = ("error", str(e), None)

    a = threading.Thread(target=call, args=("running", {"prompt": "a", "steps": 150, "n_iter": 8}))
    a.start()
    check(wait_until(lambda: s.json("GET", "/sdapi/v1/progress")[2]["state"]["sampling_step"] > 0, 30),
          "the job never started")
    b = threading.Thread(target=call, args=("queued", {"prompt": "b", "steps": 2}))
    b.start()
    check(wait_until(lambda: s.json("GET", "/sdapi/v1/progress")[2]["kiln"]["queued"] == 1, 10),
          "the second job never queued")
    t0 = time.time()
    code = s.stop(signal.SIGTERM, timeout=30)
    a.join(30)
    b.join(30)
    check(code == 0, "exit status after SIGTERM: %s" % code)
    check(time.time() - t0 < 20, "stopping took %.1fs" % (time.time() - t0))
    status, _, r = answers.get("running", (None, None, None))
    check(status == 200 and json.loads(r["info"])["interrupted"], "the running job: %s %s" % (status, _))
    status, _, r = answers.get("queued", (None, None, None))
    check(status == 503 and r["error"] == "shutting_down", "the queued job: %s %s" % (status, r))
    check("stopped" in s.stderr(), "no 'stopped' line:\n%s" % s.stderr()[-2000:])


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = temp_dir()
    env = {"XDG_CACHE_HOME": os.path.join(work, "cache"), "KILN_MODEL": ""}
    t0 = time.time()
    try:
        model = make_model(make_random_model, tokenizer, work)
        s = Server(kiln, model, work, "--queue", "16", env=env)
        try:
            init = None
            for name, fn, args in (("page_and_health", test_page_and_health, ()),
                                   ("txt2img", test_txt2img, ()),
                                   ("img2img", test_img2img, None),
                                   ("refusals", test_refusals, ()),
                                   ("progress_and_interrupt", test_progress_and_interrupt, ()),
                                   ("jobs_api", test_jobs_api, ()),
                                   ("lists_perf_metrics", test_lists_perf_metrics, ()),
                                   ("client_gone", test_client_gone, ()),
                                   ("client_gone_while_queued", test_client_gone_while_queued, ()),
                                   ("load", test_load, ())):
                current[0] = name
                t = time.time()
                if args is None:
                    if init:
                        fn(s, init)
                    else:
                        check(False, "skipped: txt2img gave no image")
                else:
                    out = fn(s, *args)
                    if name == "txt2img":
                        init = out
                print("ok %s (%.1fs)" % (name, time.time() - t), flush=True)
            _, _, hist = s.json("GET", "/api/v1/perf/history")
            jobs_before = len(hist["jobs"])
        finally:
            current[0] = "shutdown"
            code = s.stop()
            check(code == 0, "exit status %s" % code)
            if __import__("serve_harness").failures:
                print(s.stderr()[-4000:], file=sys.stderr)
        history_file = os.path.join(work, "cache", "kiln", "history.jsonl")
        current[0] = "history_file"
        with open(history_file) as f:
            lines = [json.loads(line) for line in f]
        check(len(lines) == jobs_before and all("timings" in x for x in lines),
              "history.jsonl has %d lines, expected %d" % (len(lines), jobs_before))
        # the recorder reads the server's ok jobs as runs: kiln bench --history counts them
        r = subprocess.run([kiln, "bench", "--history", "--json"], capture_output=True, text=True,
                           env=dict(os.environ, **env), timeout=60)
        ok_jobs = sum(1 for x in lines if x.get("status") == "ok")
        ops = {o["op"]: o for o in json.loads(r.stdout)["operations"]} if r.returncode == 0 else {}
        check(ok_jobs > 0 and ops.get("generate", {}).get("runs") == ok_jobs and
              ops["generate"]["max_s"] == max(x["timings"]["total_s"] for x in lines if x["status"] == "ok"),
              "bench --history: %s for %d ok jobs (%s)" % (ops.get("generate"), ok_jobs, r.stderr))
        current[0] = "api_key_and_history"
        test_api_key_and_history(kiln, model, work, env, jobs_before)
        current[0] = "sigterm_during_job"
        test_sigterm_during_job(kiln, model, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("time: %.1fs" % (time.time() - t0))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
