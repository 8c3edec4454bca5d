"""A rule-based judge of generated shapes pictures (the trainer's own, for tuning; kiln's C checker is separate).

judge(img) -> dict(background, colour, shape, size, position, cx, cy, fg_pixels) for a uint8 [64, 64, 3] image,
following the conventions in dataset.py:
  1. every pixel gets the nearest palette colour (the 9 of dataset.BACKGROUNDS, Euclidean RGB distance);
  2. the background is the most common class on the picture's border;
  3. the foreground is the largest 4-connected region of pixels of one non-background class, which gives the
     colour (a blurred edge of another class cannot win over the body of the shape);
  4. its bounding box gives the size (side >= 22 px: large) and the position (the box centre's nearest of
     16 / 32 / 48 on each axis);
  5. the shape is the template (dataset.shape_mask) at the box's centre and size with the best IoU with the
     region, where the region is the foreground class's pixels inside a margin around the box.
score(judged, want) -> dict of booleans per attribute.
"""
import numpy as np

import dataset as D

PALETTE_NAMES = list(D.BACKGROUNDS)
PALETTE = np.array([D.BACKGROUNDS[n] for n in PALETTE_NAMES], np.float64)


def classify(img):
    d = ((img[:, :, None, :].astype(np.float64) - PALETTE[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def components(mask):
    """Labels of the 4-connected components of a boolean mask (0 = none), and their sizes."""
    h, w = mask.shape
    lab = np.zeros((h, w), np.int32)
    sizes = [0]
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not lab[y, x]:
                n += 1
                stack = [(y, x)]
                lab[y, x] = n
                k = 0
                while stack:
                    cy, cx = stack.pop()
                    k += 1
                    for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not lab[ny, nx]:
                            lab[ny, nx] = n
                            stack.append((ny, nx))
                sizes.append(k)
    return lab, sizes


def judge(img):
    cls = classify(img)
    border = np.concatenate([cls[0], cls[-1], cls[:, 0], cls[:, -1]])
    bg = np.bincount(border, minlength=len(PALETTE)).argmax()
    best = None
    for c in range(len(PALETTE_NAMES)):
        if c == bg or PALETTE_NAMES[c] == "gray":
            continue
        m = cls == c
        if m.sum() < 12:
            continue
        lab, sizes = components(m)
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (sizes[k], c, lab == k)
    out = dict(background=PALETTE_NAMES[bg], colour=None, shape=None, size=None, position=None, cx=None, cy=None,
               fg_pixels=0)
    if best is None:
        return out
    n, c, region = best
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side = max(x1 - x0, y1 - y0)
    out.update(colour=PALETTE_NAMES[c], fg_pixels=int(n), cx=cx, cy=cy, size="large" if side >= 22 else "small")
    col = min((16, 32, 48), key=lambda v: abs(v - cx))
    row = min((16, 32, 48), key=lambda v: abs(v - cy))
    out["position"] = {v: k for k, v in D.POSITIONS.items()}[(col, row)]
    # shape: best IoU against templates at this box (side: the mean of width and height, as a blur or a
    # missing row affects one of them)
    s = ((x1 - x0) + (y1 - y0)) / 2.0
    body = cls == c
    m = 3
    win = np.zeros_like(body)
    win[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = True
    body = body & win
    scores = {}
    for shape in D.SHAPES:
        t = D.shape_mask(shape, s, cx, cy)
        scores[shape] = (t & body).sum() / max(1, (t | body).sum())
    out["shape"] = max(scores, key=scores.get)
    out["iou"] = float(scores[out["shape"]])
    return out


def score(j, want):
    return dict(shape=j["shape"] == want["shape"], colour=j["colour"] == want["colour"],
                background=j["background"] == want["background"], position=j["position"] == want["position"],
                size=j["size"] == want["size"],
                shape_colour=j["shape"] == want["shape"] and j["colour"] == want["colour"])


def _self_check():
    rng = np.random.RandomState(3)
    bad = 0
    for _ in range(300):
        img, a = D.sample(rng, D.all_combos())
        s = score(judge(img), a)
        if not all(s.values()):
            bad += 1
            print("misjudged", a, judge(img))
    print("self check: %d / 300 training pictures misjudged" % bad)
    return bad == 0


if __name__ == "__main__":
    _self_check()
