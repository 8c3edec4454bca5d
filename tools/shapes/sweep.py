#!/usr/bin/env python3
"""Trains several UNet recipes of the shapes model side by side and scores each on the held-out prompts: the
tool behind docs/shapes-training.md. Meant for a machine with a GPU (an hour of the 2-core CPU buys one
recipe; a GPU trains eight at once in minutes); the shipped model itself is made by train.py on the CPU.

RUN (from the repository root)
    python3 tools/shapes/sweep.py SPECS.json --vae WORK/vae.pt [--latents FILE] [--out DIR]

SPECS.json is a list of recipes, each a dict:
    "name"        what the recipe is called in the output (its results: OUT/NAME.json)
    UPPER_CASE    any of train.py's settings (UNET_STEPS, UNET_BATCH, UNET_LR, EMA_DECAY, HIGH_T_SHARE, ...)
    "UNET_CFG"    entries that replace model.UNET_CFG's (e.g. {"attention_resolutions": [1, 2, 4]})
    "eval_at"     steps at which the EMA weights are scored as well as at the end
    "cfgs"        guidance scales to score with (default: train.py's DEFAULT_CFG)
    "device"      where the UNet trains (default cuda); "threads" CPU threads per recipe (default 2)
The VAE comes from a train.py work folder (--vae); the latents are encoded once with train.py's seed and
count into --latents (default /tmp/kiln-shapes-sweep-latents.pt) and reused. Scoring is train.py's: the
F16-rounded EMA weights sample the 72 held-out prompts with two seeds, check.py judges them; the output
adds shape accuracy per size and the shape confusion counts (asked>seen).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dataset as D  # noqa: E402
import model as M  # noqa: E402
import sample as SM  # noqa: E402
import train as T  # noqa: E402


def encode_latents(vae_path, out_path):
    """train.py's latents stage (same seed and count), on cuda when there is one."""
    vae = torch.load(vae_path)
    t = time.time()
    if torch.cuda.is_available():
        v = {k: x.cuda() for k, x in vae.items()}
        rng = np.random.RandomState(T.SEED + 3)
        combos = D.training_combos()
        means, stds, attrs = [], [], []
        with torch.no_grad():
            for i in range(0, T.N_LATENTS, 400):
                imgs, a = T.draw_pictures(rng, min(400, T.N_LATENTS - i), combos)
                mean, logvar = M.vae_encode(v, T.to_unit(imgs).cuda())
                means.append(mean.cpu())
                stds.append(torch.exp(0.5 * logvar).cpu())
                attrs += a
        result = (torch.cat(means), torch.cat(stds), attrs)
    else:
        result = T.encode_latents(vae, T.N_LATENTS, T.SEED + 3)
    torch.save(result, out_path)
    print("latents: %.1f s" % (time.time() - t), flush=True)


def score(spec, step, unet, clip, vae, clip_cfg, tok, scale, rows):
    r16 = lambda d: {k: v.detach().cpu().to(torch.float16).float() for k, v in d.items()}  # noqa: E731
    model = SM.Model(r16(unet), r16(vae), r16(clip), M.UNET_CFG, M.VAE_CFG, clip_cfg, tok, scale,
                     prediction=T.PREDICTION, zero_terminal_snr=T.ZERO_TERMINAL_SNR)
    out = {}
    for cfg in spec.get("cfgs", [T.DEFAULT_CFG]):
        acc, results = SM.evaluate(model, rows, T.DEFAULT_SAMPLER, T.DEFAULT_STEPS, cfg, seeds=(1, 2))
        e = {k: round(100 * x, 1) for k, x in acc.items()}
        for size in D.SIZES:
            e["shape_" + size] = round(100 * float(np.mean([s["shape"] for r, _, s, _ in results
                                                             if r["size"] == size])), 1)
        confusion = {}
        for r, judged, _, _ in results:
            key = "%s>%s" % (r["shape"], judged.get("shape"))
            confusion[key] = confusion.get(key, 0) + 1
        e["confusion"] = confusion
        out["%d_cfg%g" % (step, cfg)] = e
        print(spec["name"], "step", step, "cfg", cfg, {k: v for k, v in e.items() if k != "confusion"}, flush=True)
    return out


def run_one(spec, vae_path, latents_path, out_dir):
    torch.set_num_threads(spec.get("threads", 2))
    for k, v in spec.items():
        if k.isupper() and k != "UNET_CFG":
            setattr(T, k, v)
    M.UNET_CFG.update(spec.get("UNET_CFG", {}))   # in place: model.unet's default argument is this dict
    lat_mean, lat_std, attrs = torch.load(latents_path)
    vae = torch.load(vae_path)
    scale = 1.0 / lat_mean.std().item()
    tok = M.Tokenizer(M.learn_bpe(D.all_caption_words()))
    clip_cfg = M.clip_cfg_for(tok)
    rows = D.read_heldout(os.path.join(HERE, "heldout_prompts.tsv"))
    evals = {}
    t0 = time.time()
    on_ema = lambda step, u, c: evals.update(score(spec, step, u, c, vae, clip_cfg, tok, scale, rows))  # noqa: E731
    unet, clip = T.train_unet(lat_mean, lat_std, attrs, scale, tok, clip_cfg, T.UNET_STEPS, T.SEED + 4,
                              device=spec.get("device", "cuda"), on_ema=on_ema, ema_at=spec.get("eval_at", []))
    print(spec["name"], "trained in %.0f s" % (time.time() - t0), flush=True)
    on_ema(T.UNET_STEPS, unet, clip)
    with open(os.path.join(out_dir, spec["name"] + ".json"), "w") as f:
        json.dump(dict(spec=spec, evals=evals, seconds=round(time.time() - t0, 1)), f, indent=1)


def main(argv):
    ap = argparse.ArgumentParser(description="train and score shapes-model recipes side by side")
    ap.add_argument("specs", help="JSON list of recipes (see the header)")
    ap.add_argument("--vae", required=True, help="vae.pt from a train.py work folder")
    ap.add_argument("--latents", default="/tmp/kiln-shapes-sweep-latents.pt")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--one", help=argparse.SUPPRESS)   # a single recipe, as JSON: how the children run
    a = ap.parse_args(argv)
    if a.one:
        run_one(json.loads(a.one), a.vae, a.latents, a.out)
        return 0
    if not os.path.exists(a.latents):
        encode_latents(a.vae, a.latents)
    common = ["--vae", a.vae, "--latents", a.latents, "--out", a.out]
    children = [subprocess.Popen([sys.executable, __file__, a.specs, "--one", json.dumps(s)] + common)
                for s in json.load(open(a.specs))]
    return max(p.wait() for p in children)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
