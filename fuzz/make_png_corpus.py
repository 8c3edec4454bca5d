#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_png: tiny PNGs of every colour type and
bit depth libpng reads (gray 1-16 bits, gray + alpha, RGB, RGBA, palette),
with and without transparency (tRNS), interlaced (Adam7), with text and
colour chunks, at odd sizes. Standard library only (zlib, struct); the
output is deterministic, so running it again changes nothing.

    fuzz/make_png_corpus.py [OUT_DIR]     (default: fuzz/corpus/png)
"""
import os
import struct
import sys
import zlib

GRAY, RGB, PALETTE, GRAY_ALPHA, RGBA = 0, 2, 3, 4, 6
CHANNELS = {GRAY: 1, RGB: 3, PALETTE: 1, GRAY_ALPHA: 2, RGBA: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def sample(x, y, c, depth):
    """A deterministic pattern that uses the whole range of the depth."""
    top = (1 << depth) - 1
    return (x * 37 + y * 101 + c * 59 + x * y * 13) % (top + 1)


def pack_row(values, depth):
    if depth == 8:
        return bytes(values)
    if depth == 16:
        return b"".join(struct.pack(">H", v) for v in values)
    out, acc, bits = bytearray(), 0, 0
    for v in values:
        acc = acc << depth | v
        bits += depth
        if bits == 8:
            out.append(acc)
            acc, bits = 0, 0
    if bits:
        out.append(acc << (8 - bits))
    return bytes(out)


def raw_rows(xs, ys, color, depth):
    n = CHANNELS[color]
    return b"".join(b"\0" + pack_row([sample(x, y, c, depth) for x in xs for c in range(n)], depth) for y in ys)


def png(width, height, color, depth, interlace=False, extra=(), after_idat=()):
    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7:
            xs, ys = range(x0, width, dx), range(y0, height, dy)
            if len(xs) and len(ys):
                data += raw_rows(xs, ys, color, depth)
    else:
        data = raw_rows(range(width), range(height), color, depth)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, body in extra:
        out += chunk(kind, body)
    out += chunk(b"IDAT", zlib.compress(data, 9))
    for kind, body in after_idat:
        out += chunk(kind, body)
    return out + chunk(b"IEND", b"")


def palette(n):
    return bytes(v for i in range(n) for v in ((i * 67) % 256, (i * 151) % 256, (i * 29 + 7) % 256))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "png")
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for depth in (1, 2, 4, 8, 16):
        files["gray%d.png" % depth] = png(7, 5, GRAY, depth)
    files["gray8_trns.png"] = png(5, 3, GRAY, 8, extra=[(b"tRNS", struct.pack(">H", 37))])
    files["gray2_trns.png"] = png(9, 2, GRAY, 2, extra=[(b"tRNS", struct.pack(">H", 1))])
    for depth in (8, 16):
        files["gray_alpha%d.png" % depth] = png(3, 4, GRAY_ALPHA, depth)
        files["rgb%d.png" % depth] = png(5, 3, RGB, depth)
        files["rgba%d.png" % depth] = png(4, 3, RGBA, depth)
    files["rgb8_trns.png"] = png(6, 2, RGB, 8, extra=[(b"tRNS", struct.pack(">HHH", 37, 101, 59))])
    files["rgb16_trns.png"] = png(2, 2, RGB, 16, extra=[(b"tRNS", struct.pack(">HHH", 0, 59, 118))])
    for depth in (1, 2, 4, 8):
        n = 1 << depth
        files["palette%d.png" % depth] = png(7, 3, PALETTE, depth, extra=[(b"PLTE", palette(n))])
    files["palette8_trns.png"] = png(5, 5, PALETTE, 8,
                                     extra=[(b"PLTE", palette(256)), (b"tRNS", bytes(range(0, 256, 9)))])
    files["rgb8_adam7.png"] = png(11, 9, RGB, 8, interlace=True)
    files["rgba16_adam7.png"] = png(3, 10, RGBA, 16, interlace=True)
    files["palette4_adam7.png"] = png(9, 9, PALETTE, 4, interlace=True, extra=[(b"PLTE", palette(16))])
    files["gray1_1x1.png"] = png(1, 1, GRAY, 1)
    files["rgb8_chunks.png"] = png(
        4, 4, RGB, 8,
        extra=[(b"gAMA", struct.pack(">I", 45455)), (b"sRGB", b"\0"),
               (b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)),
               (b"bKGD", struct.pack(">HHH", 1, 2, 3)), (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
               (b"tEXt", b"Software\0make_png_corpus.py")],
        after_idat=[(b"iTXt", b"parameters\0\0\0\0\0a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, "
                     b"Size: 4x4"),
                    (b"zTXt", b"Comment\0\0" + zlib.compress(b"compressed text"))])
    files["gray8_gama_sbit.png"] = png(3, 3, GRAY, 8, extra=[(b"gAMA", struct.pack(">I", 100000)),
                                                             (b"sBIT", b"\5")])
    for name, data in sorted(files.items()):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
    print("wrote %d files to %s" % (len(files), out_dir))


if __name__ == "__main__":
    main()
