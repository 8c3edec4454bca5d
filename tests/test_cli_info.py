#!/usr/bin/env python3
"""`kiln info` as a user runs it: exit status, stdout and stderr, the JSON.

    python3 tests/test_cli_info.py KILN_BINARY TESTS_DATA_DIR TOOLS_DIR

The figures are checked against what tools/make_safetensors_corpus.py knows
about the files it wrote (it is imported, not re-run); every file of
malformed/ must fail with status 1, nothing on stdout and one line on stderr
naming the file and containing its expected substring from EXPECTED.tsv.
Prints "N passed, N failed" like the C tests; exits non-zero on a failure.
"""
import importlib.util
import json
import os
import struct
import subprocess
import sys

failures = []
current = ""


def check(cond, message):
    if not cond:
        failures.append("%s: %s" % (current, message))
        print("FAIL %s: %s" % (current, message), file=sys.stderr)
    return cond


def run(*args, stdout=subprocess.PIPE):
    p = subprocess.run([KILN] + list(args), stdout=stdout, stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout or b"", p.stderr


def one_line(err, what):
    """stderr must be exactly one line of UTF-8; returns it, without the newline."""
    try:
        text = err.decode("utf-8")
    except UnicodeDecodeError:
        check(False, "%s: stderr is not UTF-8: %r" % (what, err))
        return ""
    check(text.endswith("\n") and text.count("\n") == 1 and "\r" not in text,
          "%s: expected one line on stderr, got %r" % (what, text))
    return text.rstrip("\n")


def load_generator(tools):
    spec = importlib.util.spec_from_file_location("make_safetensors_corpus",
                                                  os.path.join(tools, "make_safetensors_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def expected_figures(path, content, tensors, metadata):
    """What `kiln info --json` must print for a file the generator wrote."""
    data_start = 8 + struct.unpack("<Q", content[:8])[0]
    by_dtype, listing, offset = {}, [], data_start
    for name, dtype, shape, payload in tensors:
        d = by_dtype.setdefault(dtype, {"tensors": 0, "bytes": 0})
        d["tensors"] += 1
        d["bytes"] += len(payload)
        listing.append({"name": name, "dtype": dtype, "shape": shape, "offset": offset, "bytes": len(payload)})
        offset += len(payload)
    # kiln lists tensors in data order; an empty tensor goes before the one it
    # shares an offset with, and empty tensors sharing one go by name
    listing.sort(key=lambda t: (t["offset"], t["bytes"], t["name"].encode()))
    return {
        "file": path,
        "size": len(content),
        "tensor_count": len(tensors),
        "parameters": sum(numel(shape) for _, _, shape, _ in tensors),
        "dtypes": by_dtype,
        "metadata": metadata or {},
        "tensors": listing,
        "architecture": {},  # none of these files holds an SD component
    }


def test_architecture(data):
    """The SD components kiln finds in a checkpoint, read from the shapes."""
    global current
    current = "architecture"
    rc, out, err = run("info", "--json", "--summary", os.path.join(data, "golden", "unet_small.safetensors"))
    check(rc == 0, "exit status %d, stderr %r" % (rc, err))
    arch = json.loads(out).get("architecture", {})
    unet = arch.get("unet", {})
    check(unet.get("model_channels") == 32 and unet.get("channel_mult") == [1, 2] and unet.get("num_heads") == 8
          and unet.get("context_dim") == 32, "unet_small read as %r" % unet)
    check("vae" not in arch and "text_encoder" not in arch, "only a unet is in that file: %r" % arch)
    rc, out, err = run("info", "--summary", os.path.join(data, "golden", "vae_small.safetensors"))
    check(rc == 0 and b"factor 2" in out, "vae_small's text summary: %r" % out[-300:])


def test_valid_files(gen, data):
    global current
    files = [
        ("example.safetensors", gen.example(), gen.example_tensors(), gen.EXAMPLE_METADATA),
        ("misaligned.safetensors", gen.misaligned(), gen.misaligned_tensors(),
         {"note": "odd header, no padding", "b": "2", "a": "1"}),
        ("zero_tensors.safetensors", gen.zero_tensors(), [], {"note": "no tensors at all"}),
        ("all_dtypes.safetensors", gen.all_dtypes(),
         [("t." + n, n, [2], bytes(range(2 * s))) for n, s in gen.DTYPE_SIZES], None),
    ]
    for name, content, tensors, metadata in files:
        current = "json " + name
        path = os.path.join(data, name)
        with open(path, "rb") as f:
            check(f.read() == content, "%s differs from what the generator writes now: rerun it" % path)
        want = expected_figures(path, content, tensors, metadata)

        rc, out, err = run("info", "--json", path)
        check(rc == 0, "exit status %d, stderr %r" % (rc, err))
        check(err == b"", "stderr must be empty, got %r" % err)
        try:
            got = json.loads(out)
        except ValueError as e:
            check(False, "stdout is not JSON (%s): %r" % (e, out[:200]))
            continue
        for key in want:
            check(got.get(key) == want[key], "%s: expected %r, got %r" % (key, want[key], got.get(key)))
        check(set(got) == set(want), "keys: expected %s, got %s" % (sorted(want), sorted(got)))
        check(list(got.get("metadata", {})) == list(want["metadata"]), "metadata must keep the file's order")

        current = "json --summary " + name
        rc, out, err = run("info", path, "--summary", "--json")
        check(rc == 0 and err == b"", "exit status %d, stderr %r" % (rc, err))
        try:
            got = json.loads(out)
        except ValueError:
            check(False, "stdout is not JSON: %r" % out[:200])
            continue
        check("tensors" not in got, "--summary must leave out the tensor list")
        for key in want:
            if key != "tensors":
                check(got.get(key) == want[key], "%s: expected %r, got %r" % (key, want[key], got.get(key)))


def test_example_text(gen, data):
    global current
    current = "text example.safetensors"
    path = os.path.join(data, "example.safetensors")
    content = gen.example()
    header_len = struct.unpack("<Q", content[:8])[0]
    tensors = gen.example_tensors()
    rc, out, err = run("info", path)
    check(rc == 0 and err == b"", "exit status %d, stderr %r" % (rc, err))
    lines = out.decode("utf-8").splitlines()
    want = [
        "file        %s" % path,
        "size        {:,} bytes (header {:,} bytes)".format(len(content), header_len),
        "tensors     %d" % len(tensors),
        "parameters  {:,}".format(sum(numel(t[2]) for t in tensors)),
        "  F32       2 tensors, 896 bytes",
        "  F16       1 tensor, 64 bytes",
        "  BF16      1 tensor, 8 bytes",
        "metadata",
    ] + ["  %s = %s" % kv for kv in gen.EXAMPLE_METADATA.items()] + [""]
    width = max(4, max(len(t[0]) for t in tensors))
    want.append("%-*s  %-7s  %s" % (width, "NAME", "DTYPE", "SHAPE"))
    for name, dtype, shape, _ in tensors:
        want.append("%-*s  %-7s  [%s]" % (width, name, dtype, ", ".join(str(d) for d in shape)))
    check(lines == want, "expected\n%s\ngot\n%s" % ("\n".join(want), "\n".join(lines)))
    check(all(line == line.rstrip() for line in lines), "no line may end in spaces")

    current = "text --summary example.safetensors"
    rc, out, err = run("info", "--summary", path)
    check(rc == 0 and out.decode("utf-8").splitlines() == want[:want.index("")],
          "expected the totals and metadata only, got %r" % out)

    current = "text zero_tensors.safetensors"
    rc, out, err = run("info", "--summary", os.path.join(data, "zero_tensors.safetensors"))
    text = out.decode("utf-8")
    check(rc == 0 and "tensors     0\n" in text and "parameters  0\n" in text, "got %r" % text)

    current = "text all_dtypes.safetensors"
    rc, out, err = run("info", "--summary", os.path.join(data, "all_dtypes.safetensors"))
    text = out.decode("utf-8")
    check(rc == 0 and "metadata    (none)\n" in text, "got %r" % text)
    for name, size in gen.DTYPE_SIZES:
        check("  %-8s  1 tensor, %d bytes\n" % (name, 2 * size) in text, "no line for %s in %r" % (name, text))


def test_malformed(data):
    global current
    bad = os.path.join(data, "malformed")
    expected = {}
    with open(os.path.join(bad, "EXPECTED.tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                name, substring = line.split("\t", 1)
                expected[name] = substring
    files = sorted(n for n in os.listdir(bad) if n.endswith(".safetensors"))
    current = "malformed corpus"
    check(len(files) >= 22, "expected at least 22 malformed files, found %d" % len(files))
    check(sorted(expected) == files, "EXPECTED.tsv and malformed/ must name the same files")
    for name in files:
        path = os.path.join(bad, name)
        for options in ([], ["--json"], ["--summary"]):
            current = "malformed %s %s" % (name, " ".join(options))
            rc, out, err = run("info", path, *options)
            check(rc == 1, "expected exit status 1, got %d" % rc)
            check(out == b"", "stdout must be empty, got %r" % out[:200])
            line = one_line(err, name)
            check(line.startswith("kiln: info: "), "message must start 'kiln: info: ': %r" % line)
            check(path in line, "message must name %s: %r" % (path, line))
            check(expected.get(name, "\0") in line, "message must contain %r: %r" % (expected.get(name), line))


def test_usage(data):
    global current
    example = os.path.join(data, "example.safetensors")
    cases = [
        ("no arguments", ["info"], 2),
        ("unknown option", ["info", "--jsn", example], 2),
        ("unknown option after the file", ["info", example, "-x"], 2),
        ("two files", ["info", example, example], 2),
    ]
    for what, args, status in cases:
        current = "usage: " + what
        rc, out, err = run(*args)
        check(rc == status, "expected exit status %d, got %d" % (status, rc))
        check(out == b"", "stdout must be empty, got %r" % out)
        check(b"usage: kiln info" in err or b"one file at a time" in err, "stderr must say how to use it: %r" % err)
    current = "usage: unknown option is named"
    rc, out, err = run("info", "--jsn", example)
    check(b"unknown option '--jsn'" in err, "stderr must name the option: %r" % err)

    current = "usage: --help"
    rc, out, err = run("info", "--help")
    check(rc == 0 and b"usage: kiln info" in out and err == b"", "expected usage on stdout, status 0; got %d %r %r"
          % (rc, out, err))

    current = "missing file"
    path = os.path.join(data, "no-such-file.safetensors")
    rc, out, err = run("info", path)
    check(rc == 1 and out == b"", "expected status 1 and no stdout, got %d %r" % (rc, out))
    line = one_line(err, "missing file")
    check(path in line and "cannot open" in line, "message must name %s: %r" % (path, line))

    current = "directory"
    rc, out, err = run("info", data)
    check(rc == 1 and out == b"", "expected status 1 and no stdout, got %d %r" % (rc, out))
    line = one_line(err, "directory")
    check(data in line and "directory" in line, "message must name %s: %r" % (data, line))

    if os.path.exists("/dev/full"):
        current = "stdout cannot be written"
        with open("/dev/full", "wb") as full:
            rc, out, err = run("info", example, stdout=full)
        check(rc == 1, "a failed write must give status 1, got %d" % rc)
        line = one_line(err, "/dev/full")
        check("cannot write" in line, "message must say the write failed: %r" % line)


def main():
    global KILN
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    KILN, data, tools = sys.argv[1:]
    gen = load_generator(tools)
    tests = [("valid files", lambda: test_valid_files(gen, data)),
             ("example text", lambda: test_example_text(gen, data)),
             ("malformed", lambda: test_malformed(data)),
             ("usage", lambda: test_usage(data)),
             ("architecture", lambda: test_architecture(data))]
    passed = failed = 0
    for name, fn in tests:
        before = len(failures)
        fn()
        ok = len(failures) == before
        passed += ok
        failed += not ok
        print("%s %s" % ("ok  " if ok else "FAIL", name))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
