"""The shapes model's parts: configurations, parameters, the CLIP-style BPE tokenizer, forward passes.

The networks are not written here: every forward pass is tools/sd_reference.py's (the LDM UNetModel with
SpatialTransformer cross-attention, the LDM AutoencoderKL Encoder/Decoder, transformers' CLIPTextModel),
run on a dictionary of trainable tensors named exactly as the original single-file SD 1.x checkpoints name
them below their prefixes (model.diffusion_model., first_stage_model., cond_stage_model.transformer.text_model.).
So the file train.py writes loads in kiln through the same code as any SD 1.x checkpoint.

Tokenizer: OpenAI CLIP's simple_tokenizer (byte-level BPE, "</w>" on a word's last symbol, lower case,
pre-tokenised by CLIP's regex), with merges learnt from the data set's captions by learn_bpe(). vocab.json
and merges.txt are written in CLIP's format: ids 0-255 the byte characters (GPT-2 bytes_to_unicode order),
256-511 the same with "</w>", then one token per merge in merge order, then "<|startoftext|>",
"<|endoftext|>". A prompt is encoded as [start] + tokens + [end], padded with [end] (SD 1.x's
FrozenCLIPEmbedder pads with the end token) to the text encoder's positions: CONTEXT_LEN here, where SD 1.x
has 77.
"""
import collections
import html
import json
import math
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import fast_blas  # noqa: E402
import sd_reference as ref  # noqa: E402

# The text encoder's positions (SD 1.x: 77). The longest caption of the data set is 11 tokens, 13 with start and
# end; padding to 77 cost the trainer a fifth of its time (the UNet's cross-attention keys and values, the text
# encoder: 77 and 97 samples a second at 77 and 16) and told the model nothing. kiln takes the length from the
# position embedding's shape.
CONTEXT_LEN = 16

# ---------------------------------------------------------------------------------------------------------
# Configurations (sd_reference's dictionaries, SD 1.x's values except the sizes)

VAE_CFG = dict(ref.VAE_SD1, ch=32, ch_mult=[1, 1, 2], num_res_blocks=1)            # f = 4: 64x64 -> 16x16x4
UNET_CFG = dict(ref.UNET_SD1, model_channels=32, channel_mult=[1, 2, 4, 4], num_res_blocks=1,
                attention_resolutions=[2, 4], num_heads=4, context_dim=128)
CLIP_CFG = dict(ref.CLIP_SD1, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512,
                max_position_embeddings=CONTEXT_LEN)   # vocab_size, bos/eos ids: set from the tokenizer


def cfg_meta(kind, cfg):
    """The kiln.<kind>.* metadata of a configuration (all values strings)."""
    return ref.model_meta(kind, cfg)


def cfg_from_meta(kind, base, meta):
    """A configuration read back from kiln.<kind>.* metadata, with the types of the base configuration."""
    out = dict(base)
    for k, v in base.items():
        s = meta.get("kiln.%s.%s" % (kind, k))
        if s is None:
            continue
        if isinstance(v, bool):
            out[k] = s == "true"
        elif isinstance(v, list):
            conv = type(v[0]) if v else int
            out[k] = [conv(x) for x in s.split(",")] if s else []
        elif isinstance(v, (int, float)):
            out[k] = type(v)(s)
        else:
            out[k] = s
    return out


def vae_factor(cfg=VAE_CFG):
    return 2 ** (len(cfg["ch_mult"]) - 1)


# ---------------------------------------------------------------------------------------------------------
# Parameters

def spec_of(kind, cfg):
    s = ref.Spec()
    {"unet": ref.spec_unet, "vae": ref.spec_vae, "clip": ref.spec_clip}[kind](s, "", cfg)
    return s.items


def init_params(kind, cfg, seed):
    """Fresh trainable tensors {name: tensor}. LeCun-normal weights, zero biases, unit norms; LDM's
    zero_module()s (a ResBlock's last conv, a SpatialTransformer's proj_out, the UNet's out conv) start at 0;
    CLIP's embeddings N(0, 0.02^2) / N(0, 0.01^2) as transformers initialises them."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, k in spec_of(kind, cfg):
        if k == "w":
            fan_in = int(np.prod(shape[1:]))
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
            if kind == "unet" and (name.endswith("out_layers.3.weight") or name.endswith("proj_out.weight")
                                   or name == "out.2.weight"):
                t.zero_()
        elif k in ("b", "nb"):
            t = torch.zeros(shape)
        elif k == "nw":
            t = torch.ones(shape)
        elif k == "emb":
            t = torch.randn(shape, generator=g) * (0.01 if "position" in name else 0.02)
        else:
            raise ValueError(k)
        out[name] = t.requires_grad_(True)
    return out


def count(params):
    return sum(p.numel() for p in params.values())


# ---------------------------------------------------------------------------------------------------------
# Forward passes (sd_reference's functions)

NO_TRACE = ref.Trace(False)


def unet(params, x, t, context, cfg=UNET_CFG):
    """eps prediction: x [B,4,h,w], t [B] float timesteps, context [B,positions,width]."""
    return ref.unet_forward(ref.W(params), x, t, context, cfg, NO_TRACE)


def vae_encode(params, img, cfg=VAE_CFG):
    """img [B,3,H,W] in [-1,1] -> (mean, logvar) [B,4,H/f,W/f] (logvar clamped as LDM does)."""
    _, mean, logvar = ref.vae_encode(ref.W(params), img, cfg, NO_TRACE)
    return mean, logvar


def vae_decode(params, z, cfg=VAE_CFG):
    """z [B,4,h,w] (unscaled: already divided by the latent scale) -> image [B,3,H,W], not clamped."""
    return ref.vae_decode(ref.W(params), z, cfg, NO_TRACE)


def text_encode(params, ids, cfg):
    """ids [B,T] long -> last_hidden_state after final_layer_norm [B,T,width] (what SD 1.x conditions on)."""
    # ref.clip_forward's lines, with index_select for the token lookup (its backward, one index_add, is far
    # cheaper on the CPU than advanced indexing's or F.embedding's; the values are identical)
    w = ref.W(params)
    B, T = ids.shape
    tok = w("embeddings.token_embedding.weight")
    x = tok.index_select(0, ids.reshape(-1)).reshape(B, T, tok.shape[1]) + \
        w("embeddings.position_embedding.weight")[:T][None]
    for i in range(cfg["num_layers"]):
        x = ref.clip_layer(w / ("encoder.layers.%d" % i), x, cfg, NO_TRACE)
    return ref.layer_norm(x, w / "final_layer_norm", cfg["layer_norm_eps"])


# ---------------------------------------------------------------------------------------------------------
# Tokenizer: CLIP's simple_tokenizer, with our own merges

def bytes_to_unicode():
    """GPT-2 / CLIP: byte -> printable character, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
# CLIP's pattern with \p{L} / \p{N} written for what str.isalpha / isdigit say (enough for any caption; the
# regex module is not in Debian's standard install). Contractions first, then letters, digits, the rest.
_PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""",
                  re.IGNORECASE)


def clean(text):
    """CLIP's basic_clean (ftfy is skipped: captions are plain ASCII) + whitespace_clean + lower()."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def pre_tokenize(text):
    return _PAT.findall(clean(text))


def word_symbols(word):
    chars = [BYTE_ENCODER[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + "</w>",)


def learn_bpe(texts):
    """Merges [(a, b)] from a corpus: start from each word's byte characters ("</w>" on the last), merge the
    most frequent adjacent pair (ties: the lexicographically smallest), until every word is one symbol."""
    words = collections.Counter()
    for t in texts:
        for w in pre_tokenize(t):
            words[word_symbols(w)] += 1
    merges = []
    made = set(BYTE_ENCODER.values()) | {c + "</w>" for c in BYTE_ENCODER.values()}
    while True:
        pairs = collections.Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = best[0] + best[1]
        assert merged not in made, merged       # each merge makes a new vocabulary entry
        made.add(merged)
        merges.append(best)
        new = collections.Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += n
        words = new
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        vocab = list(BYTE_ENCODER.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in self.merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        assert len(set(vocab)) == len(vocab)
        self.vocab = vocab
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.bos = self.encoder["<|startoftext|>"]
        self.eos = self.encoder["<|endoftext|>"]
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        w = list(word_symbols(word))
        while len(w) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(w, w[1:]))]
            r, _ = min(pairs)
            if r == 1 << 30:
                break
            a, b = self.merges[r]
            out, i = [], 0
            while i < len(w):   # merge every occurrence of the pair, left to right (simple_tokenizer.bpe)
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            w = out
        self.cache[word] = w
        return w

    def tokens(self, text):
        return [self.encoder[s] for word in pre_tokenize(text) for s in self.bpe(word)]

    def encode(self, text, length):
        """[length] ids: start, up to length - 2 tokens, end, end padding."""
        ids = [self.bos] + self.tokens(text)[:length - 2] + [self.eos]
        return ids + [self.eos] * (length - len(ids))

    def encode_batch(self, texts, length):
        return torch.tensor([self.encode(t, length) for t in texts], dtype=torch.long)

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "vocab.json.tmp"), "w", encoding="utf-8") as f:
            json.dump(self.encoder, f, ensure_ascii=False)
        with open(os.path.join(folder, "merges.txt.tmp"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write("%s %s\n" % (a, b))
        for n in ("vocab.json", "merges.txt"):
            os.replace(os.path.join(folder, n + ".tmp"), os.path.join(folder, n))

    @classmethod
    def load(cls, folder):
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        assert lines[0].startswith("#version")
        merges = [tuple(l.split(" ")) for l in lines[1:] if l]
        tok = cls(merges)
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            assert json.load(f) == tok.encoder
        return tok


def clip_cfg_for(tok, cfg=CLIP_CFG):
    return dict(cfg, vocab_size=len(tok.vocab), bos_token_id=tok.bos, eos_token_id=tok.eos, pad_token_id=tok.eos)


# ---------------------------------------------------------------------------------------------------------
# Running fast on Debian's PyTorch: tools/fast_blas.py

fast_blas_reexec = fast_blas.reexec
