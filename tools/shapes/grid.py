#!/usr/bin/env python3
"""The image grid of docs/: what kiln draws from the shipped model for held-out prompts, and what the checker saw.

    /usr/bin/python3 tools/shapes/grid.py [--kiln build/kiln] [--checker build/tools/check_image]
                                          [--count 16] [--out docs/shapes_grid.png]

Takes --count prompts from tools/shapes/heldout_prompts.tsv (combinations never seen in training; the rows are
ordered by position, then colour), the same number for each shape, spread evenly over its rows; runs `kiln
generate` once per prompt with the model's defaults and seed 1000 + row (the seeds tests/test_shapes.c uses),
asks `check_image --expect PROMPT --json` what each picture shows, and writes one PNG: each picture at 2x, the
prompt under it, and the checker's verdict (green: it agrees with the prompt on every attribute; red: the
attributes it read differently). Needs PIL (python3-pil).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image, ImageDraw, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import dataset as D  # noqa: E402

CELL = 128           # each 64 px picture drawn at 2x, nearest neighbour
TEXT_LINES = 5       # the prompt wrapped over up to four lines, the verdict on the fifth
LINE = 12
PAD = 6
GOOD, BAD = (30, 130, 50), (200, 30, 30)


def wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = (line + " " + word).strip()
    return lines + [line] if line else lines


def generate(kiln, prompt, seed, out_dir):
    run = subprocess.run([kiln, "generate", "-p", prompt, "--seed", str(seed), "-o", out_dir, "-q", "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(run.stdout)["images"][0]["path"]


def check(checker, path, prompt):
    run = subprocess.run([checker, path, "--expect", prompt, "--json"], capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise RuntimeError("check_image failed on %s: %s" % (path, run.stderr.strip()))
    return json.loads(run.stdout)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--checker", default=os.path.join(ROOT, "build", "tools", "check_image"))
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "shapes_grid.png"))
    a = ap.parse_args(argv)
    rows = D.read_heldout(os.path.join(HERE, "heldout_prompts.tsv"))
    # the same number of each shape, spread over the rows that ask for it: an even spread over all rows
    # happened to pick no triangle, the shape the model draws worst
    rows_of = {}
    for i, r in enumerate(rows):
        rows_of.setdefault(r["shape"], []).append(i)
    per_shape = max(1, a.count // len(rows_of))
    picks = sorted(ix[j * len(ix) // per_shape] for ix in rows_of.values() for j in range(per_shape))
    font = ImageFont.load_default()
    cols = a.columns
    nrows = (len(picks) + cols - 1) // cols
    cell_h = CELL + PAD + TEXT_LINES * LINE + PAD
    cell_w = CELL + 2 * PAD + 40
    sheet = Image.new("RGB", (cols * cell_w, nrows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    agreed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, row_index in enumerate(picks):
            row = rows[row_index]
            path = generate(a.kiln, row["prompt"], 1000 + row_index, tmp)
            verdict = check(a.checker, path, row["prompt"])
            x0, y0 = (k % cols) * cell_w + PAD, (k // cols) * cell_h + PAD
            sheet.paste(Image.open(path).convert("RGB").resize((CELL, CELL), Image.NEAREST), (x0 + 20, y0))
            y = y0 + CELL + PAD
            for line in wrap(row["prompt"], 26)[:TEXT_LINES - 1]:
                draw.text((x0, y), line, fill=(0, 0, 0), font=font)
                y += LINE
            wrong = verdict.get("mismatched", [])
            agreed += not wrong
            note = "checker agrees" if not wrong else "saw " + ", ".join(
                "%s %s" % (verdict.get(attr, "?"), attr) if attr in ("shape", "size") else str(verdict.get(attr, "?"))
                for attr in wrong)
            draw.text((x0, y0 + CELL + PAD + (TEXT_LINES - 1) * LINE), note[:30], fill=BAD if wrong else GOOD,
                      font=font)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    sheet.save(a.out)
    print("wrote %s: %d prompts, the checker agrees on every attribute for %d" % (a.out, len(picks), agreed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
