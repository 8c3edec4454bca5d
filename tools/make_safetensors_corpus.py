#!/usr/bin/env python3
"""Writes the safetensors test files under tests/data/ (standard library only).

    python3 tools/make_safetensors_corpus.py [OUT_DIR]   (default: tests/data)

example.safetensors is a small valid file of the shapes a conv layer and a
linear layer have, in F32, F16 and BF16, with metadata; `kiln info` reads it
in the quick start and its figures are checked by the tests.

misaligned.safetensors (an odd, unpadded header, so every tensor starts at an
odd byte) and zero_tensors.safetensors (metadata only) are valid files for
edge cases. malformed/ holds one small file per way a header can be wrong;
malformed/EXPECTED.tsv names, for each, a substring its error message must
contain, so that the tests know the right check fired and not merely some
check. tests/test_cli_info.py imports this module to know what the example
holds.
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


def header_text(tensors, metadata=None):
    """The JSON of a header, tensors laid out in order; returns (text, data)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    return json.dumps(header, separators=(",", ":")).encode(), data


def safetensors(tensors, metadata=None, align=8):
    """tensors: list of (name, dtype, shape, bytes), laid out in that order."""
    text, data = header_text(tensors, metadata)
    text += b" " * ((-len(text)) % align)
    return struct.pack("<Q", len(text)) + text + data


# ---- valid files ------------------------------------------------------------

def example_tensors():
    conv = [((i % 7) - 3) * 0.25 for i in range(8 * 3 * 3 * 3)]
    return [
        ("conv_in.weight", "F32", [8, 3, 3, 3], f32(conv)),
        ("conv_in.bias", "F32", [8], f32([0.5 * i for i in range(8)])),
        ("proj.weight", "F16", [4, 8], f16([(i - 16) / 8 for i in range(32)])),
        ("proj.bias", "BF16", [4], bf16([1.0, -2.0, 0.5, 3.0])),
    ]


EXAMPLE_METADATA = {"format": "pt", "kiln.purpose": "example for kiln info"}


def example():
    return safetensors(example_tensors(), metadata=EXAMPLE_METADATA)


# The values of misaligned.safetensors; tests/test_safetensors.c computes the
# same formulas.
def misaligned_tensors():
    return [
        ("a.f16", "F16", [5], f16([0.5 * i - 1 for i in range(5)])),
        ("b.bf16", "BF16", [3], bf16([-1.5, 2.0, 4.25])),
        ("b2.empty", "F32", [0], b""),
        ("c.f32", "F32", [3], f32([1.0, -0.125, 65536.0])),
        # over the 1024-value staging buffer the misaligned path uses
        ("d.f16_long", "F16", [3, 500], f16([((i % 64) - 32) / 8 for i in range(1500)])),
        ("e.scalar", "F32", [], f32([7.0])),
        ("f.empty", "F16", [2, 0], b""),
        # empty, though the dims before the 0 overflow 64 bits
        ("f2.empty_huge", "F32", [1 << 32, 1 << 32, 0], b""),
        ("g.last", "BF16", [2], bf16([0.25, -8.0])),
    ]


def misaligned():
    metadata = {"note": "odd header, no padding", "b": "2", "a": "1"}  # file order, not sorted
    text, data = header_text(misaligned_tensors(), metadata=metadata)
    if len(text) % 2 == 0:
        text += b" "
    return struct.pack("<Q", len(text)) + text + data


def zero_tensors():
    return safetensors([], metadata={"note": "no tensors at all"})


# Every dtype safetensors has, with its size in bytes: two elements each.
DTYPE_SIZES = [("F32", 4), ("F16", 2), ("BF16", 2), ("I32", 4), ("F64", 8), ("I64", 8), ("I16", 2), ("I8", 1),
               ("U8", 1), ("U16", 2), ("U32", 4), ("U64", 8), ("BOOL", 1), ("F8_E4M3", 1), ("F8_E5M2", 1)]


def all_dtypes():
    return safetensors([("t." + name, name, [2], bytes(range(2 * size))) for name, size in DTYPE_SIZES])


# ---- malformed files ----------------------------------------------------------

def raw(header, data=b"", length=None):
    """A file with this header text and data; length overrides the prefix."""
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def at(header, name):
    """The file offset of a tensor's entry as the loader reports it: the first
    place its quoted name appears in the header."""
    return 8 + header.index(b'"' + name.encode() + b'"')


def entry_case(name, header, what, data=b""):
    """A file whose tensor `name` is wrong in the way `what` says."""
    return raw(header, data), "tensor '%s' (header byte %d): %s" % (name, at(header, name), what)


def malformed():
    """(file name, bytes, substring the error message must contain)."""
    cases = []

    def add(name, content, expect):
        cases.append((name + ".safetensors", content, expect))

    def add_entry(name, header, tensor, what, data=b""):
        content, expect = entry_case(tensor, header, what, data)
        add(name, content, expect)

    # the length prefix
    add("empty", b"", "file is 0 bytes")
    add("shorter_than_8_bytes", b"\x10\x00\x00\x00\x00", "file is 5 bytes")
    add("header_length_past_eof", struct.pack("<Q", 64), "header length 64 at byte 0 runs past the end of the file (8 bytes)")
    good = dumps({"w": entry("F32", [2], 0, 8)})
    add("header_truncated", raw(good[:20], length=len(good)),
        "header length %d at byte 0 runs past the end of the file (28 bytes)" % len(good))
    add("header_length_2pow63", struct.pack("<Q", 1 << 63) + good, "header length %d at byte 0 is over the limit" % (1 << 63))
    add("header_length_200mb", struct.pack("<Q", 200 << 20) + good, "header length %d at byte 0 is over the limit" % (200 << 20))
    add("header_length_max_u64", struct.pack("<Q", (1 << 64) - 1) + good, "is over the limit")
    add("header_length_zero", raw(b""), "header length 0 at byte 0 is too short for a JSON object")
    add("header_length_one", raw(b"{", b"}"), "header length 1 at byte 0 is too short for a JSON object")

    # the JSON
    add("header_not_brace", raw(b"safetensors?"), "header at byte 8 does not start with '{'")
    add("header_leading_space", raw(b' {"w":{}}'), "header at byte 8 does not start with '{'")
    add("header_json_array", raw(b'[{"w":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}]', b"\0" * 4),
        "header at byte 8 does not start with '{'")
    # (the messages after "header JSON at byte N: " are jansson's)
    add("bad_json_syntax", raw(b'{"w":{"dtype":"F32",,"shape":[1]}}'), "header JSON at byte 29: string or '}' expected")
    add("bad_json_unterminated", raw(b'{"w":{"dtype":"F32"'), "header JSON at byte 27: '}' expected near end of file")
    add("json_trailing_garbage", raw(b'{} {}'), "header JSON at byte 12: end of file expected")
    add("raw_newline_in_name", raw(b'{"bad\nname":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        "header JSON at byte 13: unexpected newline")
    add("invalid_utf8_in_name", raw(b'{"w\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        "header JSON at byte 11: unable to decode byte 0xff")
    add("invalid_utf8_overlong", raw(b'{"__metadata__":{"k":"\xc0\xaf"}}'), "header JSON at byte 30: unable to decode byte 0xc0")
    add("nul_escape_in_name", raw(b'{"w\\u0000x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        "NUL byte in object key not supported")
    add("shape_dim_past_int64", raw(b'{"w":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}', b"\0"),
        "header JSON at byte 56: too big integer")
    add("duplicate_tensor_names",
        raw(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
            b"\0" * 8),
        "header JSON at byte 65: duplicate object key")

    # one entry
    h = dumps({"w": [1, 2]})
    add_entry("entry_not_object", h, "w", "entry is not a JSON object")
    h = dumps({"w": {"shape": [1], "data_offsets": [0, 4]}})
    add_entry("dtype_missing", h, "w", "'dtype' is missing or not a string", b"\0" * 4)
    h = dumps({"w": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}})
    add_entry("dtype_not_string", h, "w", "'dtype' is missing or not a string", b"\0" * 4)
    h = dumps({"w": entry("F31", [1], 0, 4)})
    add_entry("dtype_unknown", h, "w", "unknown dtype 'F31'", b"\0" * 4)
    h = dumps({"w": entry("f32", [1], 0, 4)})
    add_entry("dtype_lower_case", h, "w", "unknown dtype 'f32'", b"\0" * 4)
    h = dumps({"w": {"dtype": "F32", "data_offsets": [0, 4]}})
    add_entry("shape_missing", h, "w", "'shape' is missing or not an array", b"\0" * 4)
    h = dumps({"w": entry("F32", 4, 0, 16)})
    add_entry("shape_not_array", h, "w", "'shape' is missing or not an array", b"\0" * 16)
    h = dumps({"w": entry("F32", [2, -3], 0, 24)})
    add_entry("shape_negative_dim", h, "w", "shape dim 1 is not a non-negative integer", b"\0" * 24)
    h = dumps({"w": entry("F32", [2.0, 2], 0, 16)})
    add_entry("shape_float_dim", h, "w", "shape dim 0 is not a non-negative integer", b"\0" * 16)
    h = dumps({"w": entry("F32", [2, "2"], 0, 16)})
    add_entry("shape_string_dim", h, "w", "shape dim 1 is not a non-negative integer", b"\0" * 16)
    h = dumps({"w": entry("U8", [1] * 9, 0, 1)})
    add_entry("shape_nine_dims", h, "w", "shape has 9 dims (kiln reads at most 8)", b"\0")
    h = dumps({"w": entry("F32", [4], 0, 12)})
    add_entry("size_too_few_bytes", h, "w", "shape [4] of F32 needs 16 bytes but data_offsets give 12", b"\0" * 12)
    h = dumps({"w": entry("F16", [2, 3], 0, 16)})
    add_entry("size_too_many_bytes", h, "w", "shape [2, 3] of F16 needs 12 bytes but data_offsets give 16", b"\0" * 16)
    h = dumps({"w": entry("U8", [1 << 32, 1 << 32, 2], 0, 4)})
    add_entry("shape_product_overflow", h, "w", "shape [4294967296, 4294967296, 2] of U8 needs more than 2^64 bytes but data_offsets give 4", b"\0" * 4)
    h = dumps({"w": entry("U8", [(1 << 63) - 1] * 8, 0, 1)})
    add_entry("shape_eight_huge_dims", h, "w", "shape [%s] of U8 needs more than 2^64 bytes" % ", ".join(
        [str((1 << 63) - 1)] * 8), b"\0")
    h = dumps({"w": entry("F64", [1 << 62], 0, 8)})
    add_entry("shape_bytes_overflow", h, "w", "shape [4611686018427387904] of F64 needs more than 2^64 bytes but data_offsets give 8", b"\0" * 8)
    h = dumps({"w": entry("F32", [0], 8, 4)})
    add_entry("offsets_end_before_begin", h, "w", "data_offsets [8, 4) end before they begin", b"\0" * 8)
    h = dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})
    add_entry("offsets_one_value", h, "w", "'data_offsets' must be [begin, end]", b"\0" * 4)
    h = dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})
    add_entry("offsets_three_values", h, "w", "'data_offsets' must be [begin, end]", b"\0" * 8)
    h = dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})
    add_entry("offsets_negative", h, "w", "'data_offsets' must be [begin, end]", b"\0" * 4)
    h = dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}})
    add_entry("offsets_not_array", h, "w", "'data_offsets' must be [begin, end]", b"\0" * 4)
    h = dumps({"a": entry("F32", [2], 0, 8), "b": entry("F32", [4], 8, 24)})
    add_entry("offsets_past_eof", h, "b", "data [8, 24) runs past the end of the file (data section holds 16 bytes)",
              b"\0" * 16)
    h = dumps({"w": entry("F32", [1], (1 << 62), (1 << 62) + 4)})
    add_entry("offsets_huge", h, "w", "data [4611686018427387904, 4611686018427387908) runs past the end of the file (data section holds 4 bytes)", b"\0" * 4)

    # how the entries cover the data section
    h = dumps({"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)})
    add("tensors_overlap", raw(h, b"\0" * 24),
        "tensor 'b' (data at byte %d) overlaps tensor 'a' (bytes %d to %d)" % (8 + len(h) + 8, 8 + len(h), 8 + len(h) + 16))
    h = dumps({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)})
    add("tensors_same_range", raw(h, b"\0" * 8), "overlaps tensor")
    h = dumps({"a": entry("F32", [4], 0, 16), "z": entry("F32", [0], 8, 8)})
    add("empty_tensor_inside_another", raw(h, b"\0" * 16), "tensor 'z' (data at byte %d) overlaps tensor 'a'" % (8 + len(h) + 8))
    h = dumps({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)})
    add("hole_between_tensors", raw(h, b"\0" * 20),
        "bytes %d to %d of the file, in the data section, belong to no tensor (before 'b')" % (8 + len(h) + 8, 8 + len(h) + 12))
    h = dumps({"a": entry("F32", [2], 4, 12)})
    add("hole_before_first_tensor", raw(h, b"\0" * 12), "bytes %d to %d of the file, in the data section, belong to no tensor (before 'a')" % (8 + len(h), 8 + len(h) + 4))
    h = dumps({"a": entry("F32", [4], 0, 16)})
    add("trailing_bytes", raw(h, b"\0" * 20),
        "bytes %d to %d at the end of the file belong to no tensor" % (8 + len(h) + 16, 8 + len(h) + 20))
    add("trailing_bytes_no_tensors", raw(b"{}", b"PK\x03\x04"), "bytes 10 to 14 at the end of the file belong to no tensor")

    # the metadata
    h = dumps({"__metadata__": "pt", "w": entry("F32", [1], 0, 4)})
    add("metadata_not_object", raw(h, b"\0" * 4), "'__metadata__' (header byte 9) is not an object of strings")
    h = dumps({"__metadata__": {"format": "pt", "epoch": 3}})
    add("metadata_value_not_string", raw(h), "'__metadata__' (header byte 9): value of 'epoch' is not a string")
    h = dumps({"w": entry("F32", [1], 0, 4), "__metadata__": {"nested": {"a": "b"}}})
    add("metadata_value_object", raw(h, b"\0" * 4), "value of 'nested' is not a string")

    # names that must not break the one-line message
    h = dumps({"bad\nname": entry("X9", [1], 0, 1)})
    add("name_with_newline", raw(h, b"\0"), "tensor 'bad\\x0aname' (header byte 8): unknown dtype 'X9'")
    h = dumps({"w": entry("F32\r\n", [1], 0, 4)})
    add_entry("dtype_with_newline", h, "w", "unknown dtype 'F32\\x0d\\x0a'", b"\0" * 4)
    h = dumps({"n" * 300: entry("X", [1], 0, 1)})
    add("name_very_long", raw(h, b"\0"), "nnnn...' (header byte 9): unknown dtype 'X'")
    h = json.dumps({"\u00e9" * 200: entry("X", [1], 0, 1)}, ensure_ascii=False, separators=(",", ":")).encode()
    add("name_very_long_utf8", raw(h, b"\0"), "\u00e9\u00e9...' (header byte 9): unknown dtype 'X'")
    return cases


def write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "example.safetensors"), example())
    write(os.path.join(out, "misaligned.safetensors"), misaligned())
    write(os.path.join(out, "zero_tensors.safetensors"), zero_tensors())
    write(os.path.join(out, "all_dtypes.safetensors"), all_dtypes())

    bad = os.path.join(out, "malformed")
    os.makedirs(bad, exist_ok=True)
    cases = malformed()
    names = [name for name, _, _ in cases]
    assert len(set(names)) == len(names), "duplicate file names"
    lines = ["# file\tsubstring its error message must contain (taken literally)\n"]
    for name, content, expect in cases:
        assert len(content) < 2048, name
        assert "\t" not in expect and "\n" not in expect, name
        write(os.path.join(bad, name), content)
        lines.append("%s\t%s\n" % (name, expect))
    for name in os.listdir(bad):  # files of cases since renamed or dropped
        if name.endswith(".safetensors") and name not in names:
            os.remove(os.path.join(bad, name))
    with open(os.path.join(bad, "EXPECTED.tsv"), "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
