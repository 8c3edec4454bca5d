#!/usr/bin/env python3
"""The kiln serve page in Debian's chromium, driven by playwright-core
(tests/browser/serve_page.mjs), against a server on a free loopback port
with a tiny random-weight model:

    python3 tests/test_serve_browser.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR OUT_DIR

Screenshots go to OUT_DIR (serve.png, serve-phone.png). Needs
/usr/bin/chromium (scripts/install-deps.sh) and tests/browser/node_modules
(`npm ci` there; scripts/test.sh runs it). docs/serve.png is this test's
desktop screenshot.
"""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import Server, check, current, finish, make_model, temp_dir  # noqa: E402


def main():
    kiln, make_random_model, tokenizer, out_dir = sys.argv[1:5]
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser")
    current[0] = "setup"
    if not check(os.path.exists("/usr/bin/chromium"), "no /usr/bin/chromium: run scripts/install-deps.sh") or \
            not check(os.path.isdir(os.path.join(here, "node_modules", "playwright-core")),
                      "no playwright-core: run 'npm ci' in tests/browser (scripts/test.sh does)"):
        return finish()
    os.makedirs(out_dir, exist_ok=True)
    work = temp_dir()
    t0 = time.time()
    try:
        model = make_model(make_random_model, tokenizer, work)
        s = Server(kiln, model, work, env={"XDG_CACHE_HOME": os.path.join(work, "cache"), "KILN_MODEL": ""})
        try:
            current[0] = "page"
            p = subprocess.run(["node", "serve_page.mjs", "http://127.0.0.1:%d/" % s.port,
                                os.path.join(out_dir, "serve.png"), os.path.join(out_dir, "serve-phone.png")],
                               cwd=here, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
            out = p.stdout.decode("utf-8", "replace")
            print(out, end="")
            check(p.returncode == 0, "serve_page.mjs exited %d" % p.returncode)
            check(os.path.getsize(os.path.join(out_dir, "serve.png")) > 10000, "the screenshot was saved")
        finally:
            code = s.stop()
            check(code == 0, "server exit status %s" % code)
            if __import__("serve_harness").failures:
                print(s.stderr()[-3000:], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("time: %.1fs" % (time.time() - t0))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
