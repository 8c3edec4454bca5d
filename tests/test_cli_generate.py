#!/usr/bin/env python3
"""`kiln generate` when things go wrong around it, with a tiny random-weight
model:

    python3 tests/test_cli_generate.py KILN MAKE_RANDOM_MODEL TOKENIZER_DIR

The output folder: missing (made; a missing parent is an error naming it),
not a folder, read-only (a tmpfs mounted read-only in a private mount
namespace: root ignores file permissions), full (a small tmpfs, and a
file-size limit with SIGXFSZ ignored); existing files are never replaced
without --overwrite. And Ctrl-C during several images: the images finished
so far are on disk, whole, nothing half-written is left, and kiln says how
many it kept and exits 1.

Every PNG found is checked whole (chunk CRCs, the pixel data inflates to
the full image) and compared with the same seed's image from a clean run.
Standard library only. Prints "N passed, N failed"; a case that cannot be
arranged here (no mount namespaces) says "skipped" and why.
"""
import glob
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import check, current, finish, make_model  # noqa: E402

SEED = 5
ENV = dict(os.environ, KILN_MODEL="")


def png_whole(path):
    """None if the file is a complete RGB PNG, else what is wrong."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "bad signature"
    pos, idat, width, height, seen_end = 8, b"", 0, 0, False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            return "chunk %r cut short" % kind
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            return "chunk %r: bad CRC" % kind
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if not seen_end:
        return "no IEND"
    try:
        pixels = zlib.decompress(idat)
    except zlib.error as e:
        return "pixel data: %s" % e
    if len(pixels) != height * (1 + 3 * width):
        return "pixel data of %d bytes for %dx%d" % (len(pixels), width, height)
    return None


def leftovers(folder):
    """Files that are not finished PNGs (temporaries, probes)."""
    return sorted(n for n in os.listdir(folder) if not n.endswith(".png"))


class Kiln:
    def __init__(self, kiln, model, work):
        self.kiln, self.model, self.work = kiln, model, work
        self.reference = {}  # seed -> PNG bytes from a clean run

    def args(self, out, *extra):
        return [self.kiln, "generate", "-m", self.model, "-p", "a red circle", "--seed", str(SEED), "-q",
                "--threads", "2", "-o", out] + list(extra)

    def run(self, out, *extra, prefix=(), preexec=None, timeout=300):
        r = subprocess.run(list(prefix) + self.args(out, *extra), capture_output=True, text=True, env=ENV,
                           preexec_fn=preexec, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def same_as_reference(self, path):
        seed = int(os.path.basename(path).split("-")[1].split(".")[0])
        with open(path, "rb") as f:
            return self.reference.get(seed) == f.read()


def check_pngs(k, folder, expect_count, what):
    pngs = sorted(glob.glob(os.path.join(folder, "*.png")))
    check(len(pngs) == expect_count, "%s: %d PNGs, expected %d: %s" % (what, len(pngs), expect_count,
                                                                        [os.path.basename(p) for p in pngs]))
    for p in pngs:
        problem = png_whole(p)
        check(problem is None, "%s: %s is not whole: %s" % (what, os.path.basename(p), problem))
        check(k.same_as_reference(p), "%s: %s differs from the clean run's image" % (what, os.path.basename(p)))
    check(not leftovers(folder), "%s: files left behind: %s" % (what, leftovers(folder)))
    return pngs


# ---- the cases ----

def test_clean_run(k):
    out = os.path.join(k.work, "clean")
    code, stdout, stderr = k.run(out, "--num-images", "3")
    check(code == 0, "exit %d: %s" % (code, stderr))
    paths = stdout.split()
    check(len(paths) == 3 and all(os.path.dirname(p) == out for p in paths), "printed paths: %r" % stdout)
    for p in paths:
        with open(p, "rb") as f:
            k.reference[int(os.path.basename(p).split("-")[1].split(".")[0])] = f.read()
    check(sorted(k.reference) == [SEED, SEED + 1, SEED + 2], "seeds %s" % sorted(k.reference))
    check_pngs(k, out, 3, "clean run")


def test_never_overwrites(k):
    out = os.path.join(k.work, "clean")
    before = {p: open(p, "rb").read() for p in glob.glob(os.path.join(out, "*.png"))}
    code, stdout, stderr = k.run(out, "--num-images", "1")
    check(code == 0 and stdout.strip() == os.path.join(out, "00001-%d.png" % SEED),
          "a second run picks a new name: %d %r %s" % (code, stdout, stderr))
    for p, data in before.items():
        check(open(p, "rb").read() == data, "%s was changed" % p)
    target = os.path.join(out, "00000-%d.png" % SEED)
    os.truncate(target, 10)  # a user's file, now different from what kiln makes
    code, stdout, stderr = k.run(out, "--num-images", "1", "--overwrite")
    check(code == 0 and stdout.strip() == target, "--overwrite: %d %r %s" % (code, stdout, stderr))
    check(png_whole(target) is None and k.same_as_reference(target), "--overwrite replaced the file")
    check(not leftovers(out), "files left behind: %s" % leftovers(out))


def test_missing_folder(k):
    made = os.path.join(k.work, "made")
    code, stdout, stderr = k.run(made)
    check(code == 0 and len(glob.glob(os.path.join(made, "*.png"))) == 1, "a missing folder is made: %d %s" %
          (code, stderr))
    deep = os.path.join(k.work, "no", "such", "folder")
    t0 = time.time()
    code, stdout, stderr = k.run(deep)
    check(code == 1 and deep in stderr and "No such file or directory" in stderr,
          "missing parent: exit %d, stderr %r" % (code, stderr))
    check(time.time() - t0 < 30 and not os.path.exists(deep), "missing parent: refused before generating")
    a_file = os.path.join(k.work, "a-file")
    open(a_file, "w").close()
    code, stdout, stderr = k.run(a_file)
    check(code == 1 and a_file in stderr and "not a directory" in stderr, "a file as -o: %d %r" % (code, stderr))


def mount_namespace_works(work):
    probe = os.path.join(work, "mnt-probe")
    os.mkdir(probe)
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=4k tmpfs "$1"', "sh", probe],
                           capture_output=True, text=True, timeout=30)
        return r.returncode == 0, r.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)


def in_tmpfs(options):
    """A prefix that runs the command with a tmpfs mounted on its -o folder
    (the argument after -o), in a private mount namespace, and then lists
    what the folder holds after a line "--files--"."""
    script = ('dir=$1; opts=$2; shift 2; mount -t tmpfs -o "$opts" tmpfs "$dir" || exit 99; '
              '"$@"; rc=$?; echo --files--; for f in "$dir"/* "$dir"/.[!.]*; do '
              '[ -e "$f" ] && echo "$(basename "$f") $(wc -c < "$f")"; done; exit $rc')
    return lambda folder: ["unshare", "-m", "sh", "-c", script, "sh", folder, options]


def test_read_only(k, namespaces):
    if not namespaces[0]:
        print("skipped read_only: no mount namespace here (%s); root ignores file permissions, so a chmod "
              "would prove nothing" % namespaces[1], flush=True)
        return
    out = os.path.join(k.work, "ro")
    os.mkdir(out)
    t0 = time.time()
    code, stdout, stderr = k.run(out, "--num-images", "2", prefix=in_tmpfs("ro,size=1m")(out))
    listing = stdout.split("--files--", 1)[-1].split()
    check(code == 1 and out in stderr and "Read-only file system" in stderr,
          "read-only: exit %d, stderr %r" % (code, stderr))
    check("cannot write to output directory" in stderr and time.time() - t0 < 60,
          "refused before generating: %r (%.1fs)" % (stderr, time.time() - t0))
    check(listing == [], "read-only folder holds %s" % listing)


def test_full_tmpfs(k, namespaces):
    if not namespaces[0]:
        print("skipped full_tmpfs: no mount namespace here (%s)" % namespaces[1], flush=True)
        return
    # room for the first image and a part of the second
    first = len(k.reference[SEED])
    pages = (first + 4095) // 4096
    size = (pages + 1) * 4096
    out = os.path.join(k.work, "full")
    os.mkdir(out)
    code, stdout, stderr = k.run(out, "--num-images", "3", "--batch-size", "1",
                                 prefix=in_tmpfs("size=%d" % size)(out))
    printed, _, listing = stdout.partition("--files--")
    files = dict(line.rsplit(" ", 1) for line in listing.strip().splitlines())
    second = os.path.join(out, "00000-%d.png" % (SEED + 1))
    check(code == 1 and second in stderr and "No space left on device" in stderr,
          "full: exit %d, stderr %r" % (code, stderr))
    check("could not save image 2 of 3; kept the 1 saved before it" in stderr, "full: the count: %r" % stderr)
    check(printed.split() == [os.path.join(out, "00000-%d.png" % SEED)], "full: printed %r" % printed)
    check(files == {"00000-%d.png" % SEED: str(first)}, "full: the folder holds %s (only the first image, whole, "
          "expected: %d bytes)" % (files, first))


def test_file_size_limit(k):
    out = os.path.join(k.work, "fsize")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    code, stdout, stderr = k.run(out, "--num-images", "2", preexec=limit)
    check(code == 1 and os.path.join(out, "00000-%d.png" % SEED) in stderr and "File too large" in stderr,
          "file-size limit: exit %d, stderr %r" % (code, stderr))
    check("kept the 0 saved" in stderr, "file-size limit: the count: %r" % stderr)
    check(os.listdir(out) == [], "file-size limit: the folder holds %s" % os.listdir(out))


def test_interrupt(k):
    out = os.path.join(k.work, "interrupt")
    os.mkdir(out)
    images = 6
    proc = subprocess.Popen(k.args(out, "--num-images", str(images), "--batch-size", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not glob.glob(os.path.join(out, "*.png")):
        time.sleep(0.02)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    took = time.time() - sent
    check(proc.returncode == 1, "exit %s after SIGINT: %r" % (proc.returncode, stderr))
    pngs = sorted(glob.glob(os.path.join(out, "*.png")))
    kept = len(pngs)
    check(1 <= kept < images, "kept %d of %d images" % (kept, images))
    check("interrupted; kept the %d finished image%s of %d" % (kept, "" if kept == 1 else "s", images) in stderr,
          "the message: %r" % stderr)
    check(stdout.split() == pngs, "printed %r, on disk %s" % (stdout, pngs))
    check_pngs(k, out, kept, "interrupt")
    check(took < 60, "stopping took %.1fs" % took)
    print("interrupt: kept %d of %d images, stopped %.2fs after SIGINT" % (kept, images, took), flush=True)


def main():
    kiln, make_random_model, tokenizer = sys.argv[1:4]
    work = tempfile.mkdtemp(prefix="kiln-generate-test-")
    t0 = time.time()
    try:
        k = Kiln(kiln, make_model(make_random_model, tokenizer, work), work)
        namespaces = mount_namespace_works(work)
        for name, fn, args in (("clean_run", test_clean_run, ()),
                               ("never_overwrites", test_never_overwrites, ()),
                               ("missing_folder", test_missing_folder, ()),
                               ("read_only", test_read_only, (namespaces,)),
                               ("full_tmpfs", test_full_tmpfs, (namespaces,)),
                               ("file_size_limit", test_file_size_limit, ()),
                               ("interrupt", test_interrupt, ())):
            current[0] = name
            t = time.time()
            if name != "clean_run" and len(k.reference) != 3:
                check(False, "skipped: the clean run failed")
                continue
            fn(k, *args)
            print("ok %s (%.1fs)" % (name, time.time() - t), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("time: %.1fs" % (time.time() - t0))
    return finish()


if __name__ == "__main__":
    sys.exit(main())
