"""Shared by the kiln serve tests: a tiny random-weight model, a server on a
free loopback port, HTTP calls, and the closing "N passed, N failed" line.

Standard library only. Every server is started with --port 0 (the kernel
picks a free port, which kiln prints) and --host 127.0.0.1, and every
request goes to that address: nothing leaves the machine.
"""
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

failures = []
passed = [0]
current = [""]


def check(cond, message):
    if cond:
        passed[0] += 1
    else:
        failures.append("%s: %s" % (current[0], message))
        print("FAIL %s: %s" % (current[0], message), file=sys.stderr, flush=True)
    return cond


def finish():
    print("%d passed, %d failed" % (passed[0], len(failures)), flush=True)
    return 1 if failures else 0


def make_model(make_random_model, tokenizer, workdir):
    path = os.path.join(workdir, "tiny.safetensors")
    subprocess.run([make_random_model, "--preset", "tiny", "--f32", "--seed", "7", "--tokenizer-from", tokenizer,
                    path], check=True, timeout=120)
    return path


class Server:
    """kiln serve on 127.0.0.1, a free port; stderr goes to a log file."""

    def __init__(self, kiln, model, workdir, *extra, env=None, name="server"):
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "wb")
        environment = dict(os.environ)
        environment.update(env or {})
        # a sanitizer build checks for leaks at exit (stop() reports them);
        # an explicit detect_leaks in ASAN_OPTIONS wins
        if "detect_leaks" not in environment.get("ASAN_OPTIONS", ""):
            environment["ASAN_OPTIONS"] = ":".join(x for x in (environment.get("ASAN_OPTIONS"), "detect_leaks=1") if x)
        self.proc = subprocess.Popen([kiln, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0"] + list(extra),
                                     stdout=subprocess.PIPE, stderr=self.log, env=environment)
        self.port = None
        deadline = time.time() + 60
        line = b""
        while time.time() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if b"listening on http://127.0.0.1:" in line:
                    self.port = int(line.decode().rsplit(":", 1)[1].strip().strip("/"))
                    break
        if self.port is None:
            self.stop()
            raise RuntimeError("kiln serve did not start: %r\n%s" % (line, self.stderr()))

    def stderr(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict (lower-case names), body bytes)"""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None, timeout=120):
        status, h, data = self.request(method, path, body, headers, timeout)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return status, h, parsed

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends sig and waits; returns the exit status (None if it had to be
        killed). A sanitizer's report in the log (a leak found at exit, a
        memory error) is a failed check, with its summary."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return None
        self.log.close()
        report = [line for line in self.stderr().splitlines()
                  if "ERROR: LeakSanitizer" in line or "ERROR: AddressSanitizer" in line or
                  "runtime error:" in line or line.startswith("SUMMARY: ") or line.startswith("Direct leak") or
                  line.startswith("Indirect leak")]
        check(not report, "sanitizer report from kiln serve (%s):\n  %s" % (self.log_path, "\n  ".join(report[:12])))
        return self.proc.returncode

    def sanitized(self):
        """Whether the server runs under AddressSanitizer (its memory
        figures then include the quarantine of freed blocks)."""
        try:
            with open("/proc/%d/maps" % self.proc.pid) as f:
                if "libasan" in f.read():
                    return True
            with open("/proc/%d/exe" % self.proc.pid, "rb") as f:
                return b"__asan_init" in f.read()
        except OSError:
            return False


def png_size(data):
    """(width, height) of a PNG, or None."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def temp_dir():
    return tempfile.mkdtemp(prefix="kiln-serve-test-")
