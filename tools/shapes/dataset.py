#!/usr/bin/env python3
"""The "shapes" data set: captioned 64x64 pictures of one simple shape, made by code.

    /usr/bin/python3 tools/shapes/dataset.py heldout [OUT.tsv]   writes the held-out list (default:
                                                                  tools/shapes/heldout_prompts.tsv)
    /usr/bin/python3 tools/shapes/dataset.py show N [SEED]        prints N training captions
    /usr/bin/python3 tools/shapes/dataset.py png DIR N [SEED]     writes N training pictures as PNGs

Needs numpy only (and PIL for "png"). Everything is a pure function of its seed: the same seed gives the same
pictures and captions on every machine.

CONVENTIONS (shared with kiln's image checker in C, which must judge pictures by exactly these rules)

Image     64 x 64 RGB, 8 bits per channel. A plain background of one colour and one shape of another colour.
          No anti-aliasing: every pixel is exactly the background colour or exactly the shape colour.
Colours   name     RGB               (the shape can be any of the 8; the background any of the 9 but the shape's)
          red      (220,  40,  40)
          green    ( 40, 180,  60)
          blue     ( 40,  80, 220)
          yellow   (240, 220,  40)
          purple   (140,  60, 180)
          orange   (245, 140,  30)
          white    (245, 245, 245)
          black    ( 20,  20,  20)
          gray     (128, 128, 128)   background only
Shapes    circle, square, triangle, cross. A shape of size s (its bounding box is s x s pixels) centred at
          (cx, cy) owns the box [cx - s/2, cx + s/2) x [cy - s/2, cy + s/2). A pixel (px, py) (column, row;
          row 0 at the top) is tested at its centre (x, y) = (px + 0.5, py + 0.5):
            square    the whole box (axis-aligned)
            circle    (x - cx)^2 + (y - cy)^2 <= (s/2)^2
            triangle  isosceles, apex up: apex at (cx, cy - s/2), base along y = cy + s/2 from cx - s/2 to
                      cx + s/2; inside when cy - s/2 <= y <= cy + s/2 and |x - cx| <= (y - (cy - s/2)) / 2
            cross     a plus sign: inside the box and (|x - cx| <= 0.2 s or |y - cy| <= 0.2 s), i.e. two arms
                      of thickness 0.4 s through the centre
Sizes     "small": s = 16 px, "large": s = 28 px.
Positions the box centre before jitter, x in {16: left, 32: centre, 48: right}, y in {16: top, 32: middle,
          48: bottom}. Names: "top left" (16,16), "top" (32,16), "top right" (48,16), "left" (16,32),
          "center" (32,32), "right" (48,32), "bottom left" (16,48), "bottom" (32,48), "bottom right" (48,48).
Jitter    the centre moves by an integer dx, dy each uniform in [-2, 2] (at most 2 px), so a large shape at an
          edge still lies inside the picture (its box starts at x >= 0 and ends at x <= 64).
Captions  all lower case. The full caption is
              "a {size} {colour} {shape} on a {background} background, {position}"
          e.g. "a small red circle on a blue background, top left". The shorter variants drop any of size,
          background and position (colour and shape are always named):
              "a {colour} {shape}"                                "a {size} {colour} {shape}"
              "a {colour} {shape}, {position}"                    "a {size} {colour} {shape}, {position}"
              "a {colour} {shape} on a {background} background"   "a {size} {colour} {shape} on a {background} background"
              "a {colour} {shape} on a {background} background, {position}"
          An attribute a caption leaves out is random in its picture (uniform over the allowed values).
          In training the article before "orange" is "an" half the time ("an orange square"), so both read
          right; the held-out prompts always use "a". The empty caption "" (the unconditional prompt of
          classifier-free guidance) stands for a random picture.
Held out  72 (shape, colour, background, position) combinations never drawn for training, in any size or
          caption: for each of the 9 positions and each of the 8 colours one combination; shapes, backgrounds
          and sizes are dealt out by a numpy RandomState seeded from a hash of (HELDOUT_SEED, colour), so
          each colour appears 9 times, each position 8 times, each shape 18 times, each size 36 times and
          each background 7 to 9 times (every (colour, background) pair at least once). tools/shapes/heldout_prompts.tsv lists them, one per line:
              prompt <TAB> shape <TAB> colour <TAB> background <TAB> position <TAB> size <TAB> cx <TAB> cy
          (cx, cy: the box centre before jitter), after one header line starting with "#".
"""
import hashlib
import os
import sys

import numpy as np

IMAGE_SIZE = 64
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUNDS = dict(COLOURS, gray=(128, 128, 128))
SHAPE_COLOURS = list(COLOURS)
BACKGROUND_COLOURS = list(BACKGROUNDS)
SHAPES = ["circle", "square", "triangle", "cross"]
SIZES = {"small": 16, "large": 28}
POSITIONS = {
    "top left": (16, 16), "top": (32, 16), "top right": (48, 16),
    "left": (16, 32), "center": (32, 32), "right": (48, 32),
    "bottom left": (16, 48), "bottom": (32, 48), "bottom right": (48, 48),
}
POSITION_NAMES = list(POSITIONS)
JITTER = 2
CROSS_ARM = 0.4
HELDOUT_SEED = "kiln-shapes-heldout-v1"

# Caption variants: which optional attributes (size, background, position) a caption names, with weights.
# The full caption (what the held-out prompts use) gets the largest share.
VARIANTS = [  # (size, background, position), weight
    ((True, True, True), 0.40),
    ((False, False, False), 0.08),
    ((True, False, False), 0.06),
    ((False, False, True), 0.10),
    ((True, False, True), 0.10),
    ((False, True, False), 0.08),
    ((True, True, False), 0.06),
    ((False, True, True), 0.12),
]


def caption(shape, colour, background=None, position=None, size=None, article_an=False):
    """The caption naming the given attributes (None: left out), per the conventions above."""
    words = ["a"]
    if size:
        words.append(size)
    words.append(colour)
    if article_an and words[1] == "orange":
        words[0] = "an"
    words.append(shape)
    text = " ".join(words)
    if background:
        text += " on a %s background" % background
    if position:
        text += ", " + position
    return text


def shape_mask(shape, size, cx, cy, n=IMAGE_SIZE):
    """Boolean [n, n] mask (row, column) of a shape of bounding box size x size centred at (cx, cy)."""
    c = np.arange(n, dtype=np.float64) + 0.5
    x = c[None, :]
    y = c[:, None]
    h = size / 2.0
    in_box = (x >= cx - h) & (x < cx + h) & (y >= cy - h) & (y < cy + h)
    if shape == "square":
        return in_box
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    if shape == "triangle":
        top = cy - h
        return (y >= top) & (y <= cy + h) & (np.abs(x - cx) <= (y - top) / 2.0)
    if shape == "cross":
        t = CROSS_ARM * size / 2.0
        return in_box & ((np.abs(x - cx) <= t) | (np.abs(y - cy) <= t))
    raise ValueError(shape)


def render(shape, colour, background, position, size, dx=0, dy=0):
    """uint8 [64, 64, 3] picture."""
    cx, cy = POSITIONS[position]
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    img[:] = BACKGROUNDS[background]
    img[shape_mask(shape, SIZES[size], cx + dx, cy + dy)] = COLOURS[colour]
    return img


def _seed(*parts):
    h = hashlib.sha256(("|".join([HELDOUT_SEED] + [str(p) for p in parts])).encode()).digest()
    return int.from_bytes(h[:4], "little")


def heldout_combos():
    """[(shape, colour, background, position, size)]: 72 combinations, one per (position, colour), balanced:
    each shape 18 times, each size 36 times, every (colour, background) pair at least once."""
    out = []
    for ci, colour in enumerate(SHAPE_COLOURS):
        rs = np.random.RandomState(_seed(colour))
        order = rs.permutation(len(POSITION_NAMES))            # which position gets which slot
        bgs = [b for b in BACKGROUND_COLOURS if b != colour]
        bg_slots = list(rs.permutation(bgs)) + [bgs[rs.randint(len(bgs))]]
        for slot, pi in enumerate(order):
            shape = SHAPES[(slot + ci) % len(SHAPES)]          # colour ci: 3x one shape, 2x the others
            size = list(SIZES)[(slot + ci) % 2]
            out.append((shape, colour, str(bg_slots[slot]), POSITION_NAMES[pi], size))
    out.sort(key=lambda t: (POSITION_NAMES.index(t[3]), SHAPE_COLOURS.index(t[1])))
    return out


HELDOUT = frozenset(c[:4] for c in heldout_combos())


def all_combos():
    return [(s, c, b, p) for s in SHAPES for c in SHAPE_COLOURS for b in BACKGROUND_COLOURS if b != c
            for p in POSITION_NAMES]


def training_combos():
    """Every (shape, colour, background, position) not held out: 2304 - 72 = 2232."""
    return [t for t in all_combos() if t not in HELDOUT]


def sample(rng, combos=None):
    """One training example: (uint8 image [64, 64, 3], attributes dict). rng: numpy RandomState."""
    combos = combos or training_combos()
    shape, colour, background, position = combos[rng.randint(len(combos))]
    size = list(SIZES)[rng.randint(2)]
    dx, dy = rng.randint(-JITTER, JITTER + 1, size=2)
    img = render(shape, colour, background, position, size, int(dx), int(dy))
    return img, dict(shape=shape, colour=colour, background=background, position=position, size=size,
                     dx=int(dx), dy=int(dy))


def random_caption(rng, a, p_empty=0.0):
    """A caption for the attributes a (a dict from sample()), a variant drawn by the weights in VARIANTS;
    the empty caption with probability p_empty."""
    if p_empty and rng.random_sample() < p_empty:
        return ""
    weights = np.array([w for _, w in VARIANTS])
    k = rng.choice(len(VARIANTS), p=weights / weights.sum())
    use_size, use_bg, use_pos = VARIANTS[k][0]
    return caption(a["shape"], a["colour"], a["background"] if use_bg else None,
                   a["position"] if use_pos else None, a["size"] if use_size else None,
                   article_an=rng.random_sample() < 0.5)


def all_caption_words():
    """Every caption a training example can get (for learning the BPE merges)."""
    out = []
    for s, c, b, p in all_combos():
        for size in SIZES:
            out.append(caption(s, c, b, p, size))
    out.append(caption("square", "orange", article_an=True))
    return out


def write_heldout(path):
    lines = ["# prompt\tshape\tcolour\tbackground\tposition\tsize\tcx\tcy  "
             "(tools/shapes/dataset.py: 72 combinations never used in training)"]
    for shape, colour, background, position, size in heldout_combos():
        cx, cy = POSITIONS[position]
        lines.append("\t".join([caption(shape, colour, background, position, size), shape, colour, background,
                                position, size, str(cx), str(cy)]))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def read_heldout(path):
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            prompt, shape, colour, background, position, size, cx, cy = line.rstrip("\n").split("\t")
            out.append(dict(prompt=prompt, shape=shape, colour=colour, background=background, position=position,
                            size=size, cx=int(cx), cy=int(cy)))
    return out


def _self_check():
    assert len(heldout_combos()) == 72 and len(HELDOUT) == 72
    assert len(training_combos()) == 2304 - 72
    for shape, colour, background, position, size in heldout_combos():
        assert background != colour
    # masks: sizes and symmetry
    for shape in SHAPES:
        for size, s in SIZES.items():
            m = shape_mask(shape, s, 32, 32)
            ys, xs = np.nonzero(m)
            assert xs.min() >= 32 - s // 2 and xs.max() <= 32 + s // 2 - 1, (shape, size)
            assert np.array_equal(m, m[:, ::-1]), shape   # every shape is symmetric left-right
    for size, s in SIZES.items():   # the largest jittered shape stays inside the picture
        for pos in POSITIONS.values():
            assert pos[0] - s // 2 - JITTER >= 0 and pos[0] + s // 2 + JITTER <= IMAGE_SIZE


def main(argv):
    _self_check()
    here = os.path.dirname(os.path.abspath(__file__))
    if len(argv) >= 1 and argv[0] == "heldout":
        path = argv[1] if len(argv) > 1 else os.path.join(here, "heldout_prompts.tsv")
        write_heldout(path)
        print("wrote %s (%d prompts)" % (path, len(heldout_combos())))
    elif len(argv) >= 2 and argv[0] == "show":
        rng = np.random.RandomState(int(argv[2]) if len(argv) > 2 else 0)
        for _ in range(int(argv[1])):
            _, a = sample(rng)
            print(random_caption(rng, a), "|", a)
    elif len(argv) >= 3 and argv[0] == "png":
        from PIL import Image
        os.makedirs(argv[1], exist_ok=True)
        rng = np.random.RandomState(int(argv[3]) if len(argv) > 3 else 0)
        for i in range(int(argv[2])):
            img, a = sample(rng)
            Image.fromarray(img).save(os.path.join(argv[1], "%03d_%s.png" % (i, random_caption(rng, a).replace(" ", "_").replace(",", ""))))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
