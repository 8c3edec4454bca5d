#!/usr/bin/env python3
"""Writes the safetensors test files under tests/data/ (standard library only).

    python3 tools/make_safetensors_corpus.py [OUT_DIR]   (default: tests/data)

example.safetensors is a small valid file of the shapes a conv layer and a
linear layer have, in F32, F16 and BF16, with metadata; `kiln info` reads it
in the quick start and its figures are checked by the tests.
"""
import json
import os
import struct
import sys


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def f16(values):
    return struct.pack("<%de" % len(values), *values)


def bf16(values):
    # truncation is exact here: every value below is representable in bf16
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def safetensors(tensors, metadata=None, align=8):
    """tensors: list of (name, dtype, shape, bytes), laid out in that order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % align)
    return struct.pack("<Q", len(text)) + text + data


def example():
    conv = [((i % 7) - 3) * 0.25 for i in range(8 * 3 * 3 * 3)]
    return safetensors(
        [
            ("conv_in.weight", "F32", [8, 3, 3, 3], f32(conv)),
            ("conv_in.bias", "F32", [8], f32([0.5 * i for i in range(8)])),
            ("proj.weight", "F16", [4, 8], f16([(i - 16) / 8 for i in range(32)])),
            ("proj.bias", "BF16", [4], bf16([1.0, -2.0, 0.5, 3.0])),
        ],
        metadata={"format": "pt", "kiln.purpose": "example for kiln info"},
    )


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "example.safetensors"), "wb") as f:
        f.write(example())


if __name__ == "__main__":
    main()
