#!/usr/bin/env python3
"""PyTorch reference for kiln's Stable Diffusion 1.x networks, and the goldens the C side is tested against.

RUN
    /usr/bin/python3 tools/sd_reference.py [OUT_DIR]        (default: tests/data/golden)

One command regenerates every file bit for bit (checked: two runs give identical sha256 sums). Weights and
inputs come from numpy's legacy RandomState (a stream numpy promises never to change) seeded from the file
name; the forward passes run on one thread with deterministic algorithms; tensors are written in a fixed
order. Needs only torch (Debian's python3-torch 1.13) and numpy, nothing from pip; takes ~2 s. It
re-reads every file it writes, asserts every weight was used by a forward pass, checks its attention
against torch.nn.MultiheadAttention, and checks its module specs against SD 1.5's real parameter counts
(UNet 859,520,964 in 686 tensors, VAE 83,653,863 in 248, CLIP text 123,060,480 in 196).

WHAT IT IS
    A self-contained re-implementation of the original CompVis/LDM modules as SD 1.x configures them,
    written as plain functions of a name -> tensor dictionary that uses the ORIGINAL single-file
    checkpoint names:
      UNet   ldm.modules.diffusionmodules.openaimodel.UNetModel + ldm.modules.attention (SpatialTransformer,
             BasicTransformerBlock, CrossAttention, FeedForward/GEGLU), prefix "model.diffusion_model."
             (SD 2's linear proj_in/proj_out is chosen by the rank of proj_in.weight; heads by num_heads or
             num_head_channels)
      VAE    ldm.modules.diffusionmodules.model Encoder/Decoder + AutoencoderKL, prefix "first_stage_model."
      CLIP   transformers CLIPTextModel (the ViT-L/14 text tower SD 1.x uses, FrozenCLIPEmbedder),
             prefix "cond_stage_model.transformer.text_model."
    and the same models under the diffusers folder layout and names (RULES TABLE further down).

FILES (tests/data/golden/). Weights are random (below), drawn so that activations stay O(1), with no
zero-initialised output conv, so every path matters.
    unet_small.safetensors        4.5 MB  UNet model_channels 32, channel_mult (1,2), num_res_blocks 1,
                                  attention at both levels and in the middle, num_heads 8 (head dim 4 at
                                  32 channels, 8 at 64), context_dim 32, transformer_depth 1, 4 -> 4 channels.
                                  case "default": x [2,4,8,8], timesteps [999, 37.5], context [2,77,32]
                                  (batch 2 with different timesteps and contexts, as CFG), with traces.
                                  case "nonsquare": x [2,4,8,16], same timesteps and context.
    unet_small_2head.safetensors  2.5 MB  UNet with num_heads 2 (head dim 16), channel_mult (1,1),
                                  num_res_blocks 2 (SD 1.x's), attention only at level 0 and in the middle:
                                  like SD 1.x's deepest level its level 1 has none, so its upsampler is
                                  output_blocks.2.1.conv (not .2) and its diffusers blocks are
                                  DownBlock2D / UpBlock2D; context_dim 48 (!= channels).
                                  case "default": x [2,4,12,8] (H != W), timesteps [500, 1], with traces.
    vae_small.safetensors         3.1 MB  AutoencoderKL ch 32, ch_mult (1,2), num_res_blocks 1, z_channels 4,
                                  embed_dim 4, double_z, attention only in the mid blocks (as SD 1.x).
                                  case "default": encode image [1,3,16,16], decode z [1,4,8,8], with traces.
                                  case "full": encode [1,3,32,32], decode z [1,4,16,16].
                                  case "nonsquare": encode [1,3,16,24], decode z [1,4,12,8] (-> [1,3,24,16]).
    clip_small.safetensors        0.8 MB  CLIPTextModel width 64, 2 layers, 2 heads (head dim 32), mlp 256,
                                  vocab 1000 (BOS 998, EOS = PAD 999), 77 positions.
                                  case "default": input_ids [2,77]: BOS, 5 / 12 tokens, EOS, EOS padding.
    block_*.safetensors           1.4 MB in all; one block each, its weights under "block." (the module's
                                  own names below that prefix, e.g. block.in_layers.0.weight), its inputs,
                                  output and traces:
      block_resblock                  UNet ResBlock 64 -> 32 channels (skip_connection 1x1), emb 128,
                                      x [2,64,4,6], emb [2,128]
      block_spatial_transformer       SpatialTransformer, 32 channels, 8 heads, conv proj_in (SD 1),
                                      context_dim 40, x [2,32,4,6], context [2,77,40]
      block_spatial_transformer_linear  the same with linear proj_in/proj_out (SD 2's
                                      use_linear_in_transformer), 2 heads
      block_attention_self            CrossAttention as attn1 (context = x), dim 32, 8 heads, x [2,24,32]
      block_attention_cross           CrossAttention as attn2, dim 32, context_dim 40, 8 heads,
                                      x [2,24,32], context [2,77,40]
      block_geglu                     FeedForward(glu=True): net.0.proj 32 -> 256, GEGLU, net.2 128 -> 32,
                                      x [2,24,32]
      block_downsample                UNet Downsample (op: conv 3x3 stride 2 padding 1), x [2,32,7,10]
      block_upsample                  UNet Upsample (nearest x2, conv 3x3), x [2,32,3,5]
      block_vae_resnet                VAE ResnetBlock 64 -> 32 (nin_shortcut), x [2,64,4,6]
      block_vae_attn                  VAE AttnBlock (q/k/v/proj_out 1x1 convs, one head), x [2,32,4,6]
      block_vae_downsample            VAE Downsample (pad (0,1,0,1), conv 3x3 stride 2 padding 0), x [2,32,8,10]
      block_clip_layer                CLIPEncoderLayer width 32, 2 heads, mlp 128, causal, x [2,77,32]
      block_timestep_embedding        no weights: timestep_embedding of [0, 1, 37.5, 500, 999] at dim 32
                                      (golden.output) and dim 320 (golden.output.dim320, SD 1.x's size)
    diffusers_small/              3.8 MB  unet_small, vae_small and clip_small's weights in the diffusers
                                  folder layout: model_index.json, unet/config.json +
                                  unet/diffusion_pytorch_model.safetensors, vae/config.json +
                                  vae/diffusion_pytorch_model.safetensors, text_encoder/config.json +
                                  text_encoder/model.safetensors, scheduler/scheduler_config.json (no
                                  tokenizer: the small vocabulary has no BPE files). Stored as F16 (as
                                  diffusers' fp16 variants are) holding exactly the same values as the F32
                                  goldens: every weight is drawn, then rounded to float16 precision. No golden
                                  tensors there: run these models on the inputs of unet_small / vae_small /
                                  clip_small and compare to those outputs.
    sd15_name_map.tsv             0.1 MB  every tensor of the REAL SD 1.5 UNet and VAE: original name,
                                  diffusers name ("unet/..." or "vae/..."), original shape, diffusers shape;
                                  tests a C port of the name rules at full size without the real weights.
    Total ~16.3 MB, ~9.6 MB of it the F32 weights of the four models. Setting WEIGHT_DTYPE below to
    np.float16 stores every weight as F16 (same values, so the same goldens) and brings it to ~11 MB.

GOLDEN TENSOR NAMES (every golden tensor is F32; activations NCHW exactly as PyTorch has them; token
sequences [B, T, C]; time embeddings [B, C])
    golden.input.<name>           inputs of case "default"
    golden.output[.<name>]        outputs of case "default"
    golden.trace.<module path>    output of the module at that path (its weight-name prefix without the
                                  model prefix), case "default" only. For a TimestepEmbedSequential,
                                  golden.trace.input_blocks.N is the output of the whole block (= of its
                                  last layer) and golden.trace.input_blocks.N.K is stored only for the layers
                                  before the last (nothing is stored twice).
    golden.<case>.input.<name>, golden.<case>.output[.<name>]   the other cases (golden.nonsquare.*,
                                  golden.full.*); every case stores all of its inputs, even when equal.
    Each file lists its golden tensors in its metadata "kiln.golden.tensors" (JSON: name -> shape).

    unet:  golden.input.x, golden.input.timesteps [B] (float; may be fractional), golden.input.context,
           golden.output; traces timestep_embedding (the sinusoid, [B, model_channels]), time_embed
           ([B, 4*model_channels]), input_blocks.N[.K], middle_block[.0|.1], output_blocks.N[.K]
           (output_blocks.N is after the block, whose input is cat([h, skip], dim=1)).
    vae:   golden.input.image (in [-1, 1]), golden.output.moments (= quant_conv(encoder(image)), 2*4
           channels: mean then logvar), golden.output.mean, golden.output.logvar (clamped to [-30, 20] as
           DiagonalGaussianDistribution does), golden.input.z (a latent as the decoder takes it, i.e.
           already divided by the 0.18215 scale: the scale is the pipeline's business, not the VAE's),
           golden.output.image (= decoder(post_quant_conv(z)), not clamped); traces encoder.conv_in,
           encoder.down.I.block.J, encoder.down.I.downsample, encoder.mid.block_1, encoder.mid.attn_1,
           encoder.mid.block_2, encoder.conv_out (before quant_conv), post_quant_conv, decoder.conv_in,
           decoder.mid.block_1, decoder.mid.attn_1, decoder.mid.block_2, decoder.up.I.block.J,
           decoder.up.I.upsample (decoder.up.1 runs before decoder.up.0).
    clip:  golden.input.input_ids [B,77] (F32 holding exact integers), golden.output (last_hidden_state
           after final_layer_norm, what SD 1.x conditions on), golden.output.pooled ([B, width], the
           final-normed state at the first EOS; unused by SD); traces embeddings (token + position),
           layers.N (output of encoder layer N, before final_layer_norm; layers.(L-2) is "clip skip 2").
    blocks: golden.input.x (+ golden.input.emb, golden.input.context where the block takes them;
           golden.input.timesteps for the timestep embedding), golden.output, and traces named after the
           block's sub-modules: resblock in_layers.2, emb_layers.1, out_layers.0, out_layers.3,
           skip_connection; spatial transformer norm, proj_in, transformer_blocks.0.{norm1, attn1, norm2,
           attn2, norm3, ff} (attn/ff outputs before their residual add), transformer_blocks.0, proj_out
           (before the residual add; proj_in/proj_out are [B,HW,C] in the linear variant, token index
           h*W + w); geglu net.0.proj, net.0; vae_resnet norm1, conv1, norm2, conv2, nin_shortcut;
           vae_attn norm, q, k, v, proj_out; clip_layer self_attn, mlp (before their residual adds).

HOW THE GOLDENS ARE COMPUTED, AND THE f32-vs-f64 NUMBERS
    Weights and inputs are drawn in float32 and stored as they are. Every forward pass runs twice on those
    same values: once in float64 (all arithmetic, the timestep sinusoid included) and once in float32. The
    stored golden.output / golden.trace values are the FLOAT64 results rounded to float32 (the best float32
    answer, not what PyTorch's float32 happened to give). How far PyTorch's float32 run is from them:
        max_rel = max|f32 - f64| / max|f64|   (relative to the tensor's largest magnitude)
    metadata "kiln.golden.f32_vs_f64_max_rel" = the largest max_rel over the file's outputs (traces
    excluded); "kiln.golden.f32_vs_f64" = JSON {tensor: {"max_abs", "max_rel"}} for every output and trace.
    A C float32 implementation should land within a small multiple of these. Measured (PyTorch 1.13 CPU):
        file                              tensor                                  max_abs   max_rel
        unet_small                        output / nonsquare.output               2.1e-06   1.1e-06 / 8.1e-07
        unet_small                        worst trace: timestep_embedding         8.6e-06   8.6e-06
        unet_small_2head                  output                                  1.6e-06   6.7e-07
        vae_small                         output.moments / .mean / .logvar        2.1e-06   9.8e-07 / 1.1e-06 / 7.7e-07
        vae_small                         output.image                            1.9e-06   9.8e-07
        vae_small                         full.* (32x32) / nonsquare.*            <= 2.8e-06  <= 1.1e-06
        vae_small                         worst trace: encoder.conv_out           2.4e-06   1.3e-06
        clip_small                        output / output.pooled                  1.6e-06   4.0e-07 / 4.6e-07
        block_resblock                    output                                  1.0e-06   2.7e-07
        block_spatial_transformer(_linear) output                                 1.4e-06   2.3e-07
        block_attention_self / _cross     output                                  3.4e-07   3.1e-07 / 4.0e-07
        block_geglu                       output                                  9.4e-07   2.4e-07
        block_downsample / block_upsample output                                  1.1e-06   2.7e-07 / 2.8e-07
        block_vae_resnet / vae_attn       output                                  1.1e-06   3.0e-07 / 1.3e-07
        block_vae_downsample              output                                  1.2e-06   3.0e-07
        block_clip_layer                  output                                  1.2e-06   2.4e-07
        block_timestep_embedding          output (dim 32) / output.dim320         5.2e-05   8.6e-06 / 5.2e-05
    (The sinusoid is the worst: float32 t*freq at t = 999 loses ~6e-5 absolute. The original LDM code
    computes it in float32; a C side that computes it in double gets closer to the golden.)

METADATA (all values are strings, as safetensors requires)
    format                        "pt"
    kiln.golden.kind              unet | vae | clip | block.<name>
    kiln.golden.config            JSON of the whole configuration (sizes, heads, eps, cases with input
                                  shapes, weight prefix, weights seed)
    kiln.golden.layout            how activations and weights are laid out (NCHW / [B,T,C])
    kiln.golden.compute           how the goldens were computed (float64, rounded to float32)
    kiln.golden.cases             comma-separated case names ("default" first)
    kiln.golden.tensors           JSON {golden tensor name: shape}
    kiln.golden.f32_vs_f64_max_rel, kiln.golden.f32_vs_f64   as above
    kiln.golden.generator         "tools/sd_reference.py"
    kiln.unet.*   model_channels, in_channels, out_channels, channel_mult ("1,2"), num_res_blocks,
                  attention_resolutions ("1,2": downsampling factors with attention), num_heads,
                  num_head_channels (-1: use num_heads), context_dim, transformer_depth,
                  use_linear_in_transformer, norm_groups (32), norm_eps (GroupNorm32 of ResBlocks and out:
                  1e-5), transformer_norm_eps (the SpatialTransformer's GroupNorm: 1e-6), layer_norm_eps
                  (1e-5), timestep_max_period (10000), timestep_flip_sin_to_cos ("true": cos first),
                  prediction_type ("epsilon")
    kiln.vae.*    ch, ch_mult, num_res_blocks, z_channels, embed_dim, double_z, in_channels, out_ch,
                  attn_resolutions (""), norm_groups (32), norm_eps (1e-6), scale_factor (0.18215),
                  logvar_clamp ("-30.0,20.0")
    kiln.clip.*   hidden_size, num_layers, num_heads, intermediate_size, vocab_size,
                  max_position_embeddings, layer_norm_eps (1e-5), hidden_act ("quick_gelu"), causal
                  ("true"), bos_token_id, eos_token_id, pad_token_id, output ("last_hidden_state")
    Sizes are derivable from the tensor shapes; what is not (heads, eps, prediction type) is here, with
    SD 1.x's values. A block file carries the keys of its model that apply to it (e.g. kiln.unet.num_heads).

WEIGHT INIT (random, not SD's init), then rounded to float16 precision: conv/linear weights N(0, 1/fan_in),
biases N(0, 0.05^2), norm weights 1 + N(0, 0.1^2), norm biases N(0, 0.05^2), CLIP token and position
embeddings N(0, 0.5^2). Inputs: N(0, 1) (images U(-1, 1)).
"""
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

SEED_BASE = 0x5D1A

# ---------------------------------------------------------------------------------------------------------
# Configurations (SD 1.x's values where the small models do not need to differ)

UNET_SD1 = dict(in_channels=4, out_channels=4, model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=2,
                attention_resolutions=[1, 2, 4], num_heads=8, num_head_channels=-1, context_dim=768,
                transformer_depth=1, use_linear_in_transformer=False, norm_groups=32, norm_eps=1e-5,
                transformer_norm_eps=1e-6, layer_norm_eps=1e-5, timestep_max_period=10000,
                timestep_flip_sin_to_cos=True, prediction_type="epsilon")

UNET_SMALL = dict(UNET_SD1, model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[1, 2],
                  num_heads=8, context_dim=32)
UNET_SMALL_2HEAD = dict(UNET_SD1, model_channels=32, channel_mult=[1, 1], num_res_blocks=2,
                        attention_resolutions=[1], num_heads=2, context_dim=48)

VAE_SD1 = dict(ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2, z_channels=4, embed_dim=4, double_z=True,
               in_channels=3, out_ch=3, attn_resolutions=[], norm_groups=32, norm_eps=1e-6, scale_factor=0.18215,
               logvar_clamp=[-30.0, 20.0])
VAE_SMALL = dict(VAE_SD1, ch=32, ch_mult=[1, 2], num_res_blocks=1)

CLIP_SD1 = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, vocab_size=49408,
                max_position_embeddings=77, layer_norm_eps=1e-5, hidden_act="quick_gelu", causal=True,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, output="last_hidden_state")
CLIP_SMALL = dict(CLIP_SD1, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256, vocab_size=1000,
                  bos_token_id=998, eos_token_id=999, pad_token_id=999)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."


# ---------------------------------------------------------------------------------------------------------
# Parameter specs: the names and shapes a module owns, in the order PyTorch registers them

class Spec:
    def __init__(self):
        self.items = []  # (name, shape, kind)

    def add(self, name, shape, kind):
        self.items.append((name, tuple(shape), kind))

    def conv(self, name, cin, cout, k):
        self.add(name + ".weight", (cout, cin, k, k), "w")
        self.add(name + ".bias", (cout,), "b")

    def linear(self, name, cin, cout, bias=True):
        self.add(name + ".weight", (cout, cin), "w")
        if bias:
            self.add(name + ".bias", (cout,), "b")

    def norm(self, name, c):
        self.add(name + ".weight", (c,), "nw")
        self.add(name + ".bias", (c,), "nb")


def draw_weights(spec, seed):
    rs = np.random.RandomState(seed)
    out = {}
    for name, shape, kind in spec.items:
        z = rs.standard_normal(shape)
        if kind == "w":
            fan_in = int(np.prod(shape[1:]))
            v = z / math.sqrt(fan_in)
        elif kind == "b":
            v = 0.05 * z
        elif kind == "nw":
            v = 1.0 + 0.1 * z
        elif kind == "nb":
            v = 0.05 * z
        elif kind == "emb":
            v = 0.5 * z
        else:
            raise ValueError(kind)
        # rounded to float16 precision, so that the F16 diffusers copies hold exactly the same values
        out[name] = v.astype(np.float16).astype(np.float32)
    return out


def seed_of(label):
    return (zlib.crc32(label.encode()) ^ SEED_BASE) & 0xFFFFFFFF


class W:
    """Read-only view of a weight dictionary under a prefix, in the dtype of the run; records what was used."""

    def __init__(self, tensors, prefix="", used=None):
        self.t, self.p = tensors, prefix
        self.used = used if used is not None else set()

    def __call__(self, name):
        self.used.add(self.p + name)
        return self.t[self.p + name]

    def has(self, name):
        return (self.p + name) in self.t

    def __truediv__(self, sub):
        return W(self.t, self.p + sub + ".", self.used)


class Trace:
    """Collects module outputs under their module paths; a no-op when disabled."""

    def __init__(self, on=True, prefix=""):
        self.on, self.p = on, prefix
        self.d = {} if on else None

    def __call__(self, name, x):
        if self.on:
            self.d[self.p + name] = x
        return x

    def __truediv__(self, sub):
        t = Trace(False)
        t.on, t.p, t.d = self.on, self.p + sub + ".", self.d
        return t


# ---------------------------------------------------------------------------------------------------------
# Shared pieces

def group_norm(x, w, groups, eps):
    # GroupNorm32 upcasts to float32; both our runs are already float32 or float64
    return F.group_norm(x, groups, w("weight"), w("bias"), eps)


def layer_norm(x, w, eps):
    return F.layer_norm(x, (x.shape[-1],), w("weight"), w("bias"), eps)


def conv2d(x, w, stride=1, padding=None):
    k = w("weight")
    if padding is None:
        padding = k.shape[-1] // 2
    return F.conv2d(x, k, w("bias"), stride=stride, padding=padding)


def linear(x, w):
    return F.linear(x, w("weight"), w("bias") if w.has("bias") else None)


def attention_core(q, k, v, heads, mask=None):
    """q [B,N,h*d], k/v [B,M,h*d] -> [B,N,h*d]; softmax(q k^T / sqrt(d) + mask) v per head, channel = head*d + i."""
    B, N, C = q.shape
    M = k.shape[1]
    d = C // heads
    # heads folded into the batch: a 4-D matmul on transposed views loops over small products on the CPU
    # (the shapes trainer's attention, forward and backward, ran up to 1.6x slower that way)
    q = q.reshape(B, N, heads, d).transpose(1, 2).reshape(B * heads, N, d)
    k = k.reshape(B, M, heads, d).transpose(1, 2).reshape(B * heads, M, d)
    v = v.reshape(B, M, heads, d).transpose(1, 2).reshape(B * heads, M, d)
    s = torch.bmm(q, k.transpose(1, 2)) * (d ** -0.5)
    if mask is not None:
        s = s + mask
    p = torch.softmax(s, dim=-1)
    return torch.bmm(p, v).reshape(B, heads, N, d).transpose(1, 2).reshape(B, N, C)


# ---------------------------------------------------------------------------------------------------------
# UNet (openaimodel.UNetModel with use_spatial_transformer=True, as SD 1.x's v1-inference.yaml)

def timestep_embedding(t, dim, max_period=10000, dtype=torch.float64):
    """cos first, then sin; freqs exp(-ln(max_period) * i / half), i < half; (dim odd: zero pad)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def unet_heads(cfg, ch):
    if cfg["num_head_channels"] == -1:
        return cfg["num_heads"]
    return ch // cfg["num_head_channels"]


def unet_layout(cfg):
    """Per input/middle/output block, its layers: ("conv", cin, cout) ("res", cin, cout) ("attn", ch)
    ("down", ch) ("up", ch) -- the structure UNetModel.__init__ builds."""
    mc, mult, nrb, attn = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"], cfg["attention_resolutions"]
    inputs = [[("conv", cfg["in_channels"], mc)]]
    chans, ch, ds = [mc], mc, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            layers = [("res", ch, m * mc)]
            ch = m * mc
            if ds in attn:
                layers.append(("attn", ch))
            inputs.append(layers)
            chans.append(ch)
        if level != len(mult) - 1:
            inputs.append([("down", ch)])
            chans.append(ch)
            ds *= 2
    middle = [("res", ch, ch), ("attn", ch), ("res", ch, ch)]
    outputs = []
    for level, m in reversed(list(enumerate(mult))):
        for i in range(nrb + 1):
            ich = chans.pop()
            layers = [("res", ch + ich, mc * m)]
            ch = mc * m
            if ds in attn:
                layers.append(("attn", ch))
            if level and i == nrb:
                layers.append(("up", ch))
                ds //= 2
            outputs.append(layers)
    return inputs, middle, outputs


def spec_resblock(s, p, cin, cout, emb_ch):
    s.norm(p + "in_layers.0", cin)
    s.conv(p + "in_layers.2", cin, cout, 3)
    s.linear(p + "emb_layers.1", emb_ch, cout)
    s.norm(p + "out_layers.0", cout)
    s.conv(p + "out_layers.3", cout, cout, 3)
    if cin != cout:
        s.conv(p + "skip_connection", cin, cout, 1)


def spec_cross_attention(s, p, qdim, cdim, inner):
    s.linear(p + "to_q", qdim, inner, bias=False)
    s.linear(p + "to_k", cdim, inner, bias=False)
    s.linear(p + "to_v", cdim, inner, bias=False)
    s.linear(p + "to_out.0", inner, qdim)


def spec_feed_forward(s, p, dim, mult=4):
    inner = dim * mult
    s.linear(p + "net.0.proj", dim, 2 * inner)
    s.linear(p + "net.2", inner, dim)


def spec_basic_transformer_block(s, p, dim, cdim):
    # registration order of BasicTransformerBlock: attn1, ff, attn2, norm1, norm2, norm3
    spec_cross_attention(s, p + "attn1.", dim, dim, dim)
    spec_feed_forward(s, p + "ff.", dim)
    spec_cross_attention(s, p + "attn2.", dim, cdim, dim)
    s.norm(p + "norm1", dim)
    s.norm(p + "norm2", dim)
    s.norm(p + "norm3", dim)


def spec_spatial_transformer(s, p, ch, cdim, depth, use_linear):
    s.norm(p + "norm", ch)
    if use_linear:
        s.linear(p + "proj_in", ch, ch)
    else:
        s.conv(p + "proj_in", ch, ch, 1)
    for d in range(depth):
        spec_basic_transformer_block(s, p + "transformer_blocks.%d." % d, ch, cdim)
    if use_linear:
        s.linear(p + "proj_out", ch, ch)
    else:
        s.conv(p + "proj_out", ch, ch, 1)


def spec_unet(s, p, cfg):
    mc = cfg["model_channels"]
    ted = 4 * mc
    s.linear(p + "time_embed.0", mc, ted)
    s.linear(p + "time_embed.2", ted, ted)
    inputs, middle, outputs = unet_layout(cfg)

    def layer(q, item):
        kind = item[0]
        if kind == "conv":
            s.conv(q, item[1], item[2], 3)
        elif kind == "res":
            spec_resblock(s, q + ".", item[1], item[2], ted)
        elif kind == "attn":
            spec_spatial_transformer(s, q + ".", item[1], cfg["context_dim"], cfg["transformer_depth"],
                                     cfg["use_linear_in_transformer"])
        elif kind == "down":
            s.conv(q + ".op", item[1], item[1], 3)
        elif kind == "up":
            s.conv(q + ".conv", item[1], item[1], 3)

    for i, blk in enumerate(inputs):
        for k, item in enumerate(blk):
            layer(p + "input_blocks.%d.%d" % (i, k), item)
    for k, item in enumerate(middle):
        layer(p + "middle_block.%d" % k, item)
    for i, blk in enumerate(outputs):
        for k, item in enumerate(blk):
            layer(p + "output_blocks.%d.%d" % (i, k), item)
    s.norm(p + "out.0", mc)
    s.conv(p + "out.2", mc, cfg["out_channels"], 3)


def resblock(w, x, emb, cfg, tr):
    """ResBlock._forward without scale-shift norm or up/down: skip(x) + out_layers(in_layers(x) + emb_layers(emb))."""
    g, eps = cfg["norm_groups"], cfg["norm_eps"]
    h = F.silu(group_norm(x, w / "in_layers.0", g, eps))
    h = tr("in_layers.2", conv2d(h, w / "in_layers.2"))
    e = tr("emb_layers.1", linear(F.silu(emb), w / "emb_layers.1"))
    h = h + e[:, :, None, None]
    h = F.silu(tr("out_layers.0", group_norm(h, w / "out_layers.0", g, eps)))
    h = tr("out_layers.3", conv2d(h, w / "out_layers.3"))  # dropout (out_layers.2) is the identity
    skip = tr("skip_connection", conv2d(x, w / "skip_connection")) if w.has("skip_connection.weight") else x
    return skip + h


def cross_attention(w, x, context, heads):
    """CrossAttention: to_q/to_k/to_v without bias, softmax(q k^T * d^-0.5) v per head, to_out.0 with bias."""
    ctx = x if context is None else context
    q = linear(x, w / "to_q")
    k = linear(ctx, w / "to_k")
    v = linear(ctx, w / "to_v")
    return linear(attention_core(q, k, v, heads), w / "to_out.0")


def feed_forward(w, x, tr):
    """FeedForward(glu=True): GEGLU (proj to 2*inner, x * gelu(gate), exact erf GELU), dropout, Linear."""
    h = tr("net.0.proj", linear(x, w / "net.0.proj"))
    a, gate = h.chunk(2, dim=-1)
    h = tr("net.0", a * F.gelu(gate))
    return linear(h, w / "net.2")


def basic_transformer_block(w, x, context, heads, eps, tr):
    n1 = tr("norm1", layer_norm(x, w / "norm1", eps))
    x = x + tr("attn1", cross_attention(w / "attn1", n1, None, heads))
    n2 = tr("norm2", layer_norm(x, w / "norm2", eps))
    x = x + tr("attn2", cross_attention(w / "attn2", n2, context, heads))
    n3 = tr("norm3", layer_norm(x, w / "norm3", eps))
    return x + tr("ff", feed_forward(w / "ff", n3, Trace(False)))  # its insides: block_geglu


def spatial_transformer(w, x, context, heads, cfg, tr):
    """SpatialTransformer: GroupNorm(32, eps 1e-6), proj_in (1x1 conv in SD 1, Linear in SD 2 after the
    reshape), transformer blocks on [B, H*W, C] tokens, proj_out, + x. Token order is h*W + w."""
    b, c, hh, ww = x.shape
    h = tr("norm", group_norm(x, w / "norm", cfg["norm_groups"], cfg["transformer_norm_eps"]))
    use_linear = w("proj_in.weight").dim() == 2
    if use_linear:
        h = h.permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        h = tr("proj_in", linear(h, w / "proj_in"))  # [B, HW, C]
    else:
        h = tr("proj_in", conv2d(h, w / "proj_in"))  # [B, C, H, W]
        h = h.permute(0, 2, 3, 1).reshape(b, hh * ww, c)
    d = 0
    while w.has("transformer_blocks.%d.norm1.weight" % d):
        name = "transformer_blocks.%d" % d
        h = tr(name, basic_transformer_block(w / name, h, context, heads, cfg["layer_norm_eps"], tr / name))
        d += 1
    if use_linear:
        h = tr("proj_out", linear(h, w / "proj_out"))
        h = h.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
    else:
        h = h.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        h = tr("proj_out", conv2d(h, w / "proj_out"))
    return h + x


def downsample_unet(w, x):
    return conv2d(x, w / "op", stride=2, padding=1)


def upsample(w, x):
    return conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w / "conv")


def unet_forward(w, x, timesteps, context, cfg, tr):
    dtype = x.dtype
    mc = cfg["model_channels"]
    temb = tr("timestep_embedding", timestep_embedding(timesteps, mc, cfg["timestep_max_period"], dtype))
    emb = linear(F.silu(linear(temb, w / "time_embed.0")), w / "time_embed.2")
    tr("time_embed", emb)
    inputs, middle, outputs = unet_layout(cfg)

    def run_block(name, blk, h):
        for k, item in enumerate(blk):
            q = "%s.%d" % (name, k)
            kind = item[0]
            if kind == "conv":
                h = conv2d(h, w / q)
            elif kind == "res":
                h = resblock(w / q, h, emb, cfg, Trace(False))
            elif kind == "attn":
                h = spatial_transformer(w / q, h, context, unet_heads(cfg, item[1]), cfg, Trace(False))
            elif kind == "down":
                h = downsample_unet(w / q, h)
            elif kind == "up":
                h = upsample(w / q, h)
            tr(q if k < len(blk) - 1 else name, h)
        return h

    hs = []
    h = x
    for i, blk in enumerate(inputs):
        h = run_block("input_blocks.%d" % i, blk, h)
        hs.append(h)
    h = run_block("middle_block", middle, h)
    for i, blk in enumerate(outputs):
        h = torch.cat([h, hs.pop()], dim=1)
        h = run_block("output_blocks.%d" % i, blk, h)
    h = F.silu(group_norm(h, w / "out.0", cfg["norm_groups"], cfg["norm_eps"]))
    return conv2d(h, w / "out.2")


# ---------------------------------------------------------------------------------------------------------
# VAE (ldm.modules.diffusionmodules.model Encoder / Decoder, AutoencoderKL)

def spec_vae_resnet(s, p, cin, cout):
    s.norm(p + "norm1", cin)
    s.conv(p + "conv1", cin, cout, 3)
    s.norm(p + "norm2", cout)
    s.conv(p + "conv2", cout, cout, 3)
    if cin != cout:
        s.conv(p + "nin_shortcut", cin, cout, 1)


def spec_vae_attn(s, p, c):
    s.norm(p + "norm", c)
    for n in ("q", "k", "v", "proj_out"):
        s.conv(p + n, c, c, 1)


def spec_encoder(s, p, cfg):
    ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
    s.conv(p + "conv_in", cfg["in_channels"], ch, 3)
    in_mult = [1] + list(mult)
    for lvl in range(len(mult)):
        bin_, bout = ch * in_mult[lvl], ch * mult[lvl]
        for j in range(nrb):
            spec_vae_resnet(s, p + "down.%d.block.%d." % (lvl, j), bin_, bout)
            bin_ = bout
        if lvl != len(mult) - 1:
            s.conv(p + "down.%d.downsample.conv" % lvl, bin_, bin_, 3)
    c = ch * mult[-1]
    spec_vae_resnet(s, p + "mid.block_1.", c, c)
    spec_vae_attn(s, p + "mid.attn_1.", c)
    spec_vae_resnet(s, p + "mid.block_2.", c, c)
    s.norm(p + "norm_out", c)
    s.conv(p + "conv_out", c, 2 * cfg["z_channels"] if cfg["double_z"] else cfg["z_channels"], 3)


def spec_decoder(s, p, cfg):
    ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
    c = ch * mult[-1]
    s.conv(p + "conv_in", cfg["z_channels"], c, 3)
    spec_vae_resnet(s, p + "mid.block_1.", c, c)
    spec_vae_attn(s, p + "mid.attn_1.", c)
    spec_vae_resnet(s, p + "mid.block_2.", c, c)
    ups = []
    bin_ = c
    for lvl in reversed(range(len(mult))):
        s2 = Spec()
        bout = ch * mult[lvl]
        for j in range(nrb + 1):
            spec_vae_resnet(s2, p + "up.%d.block.%d." % (lvl, j), bin_, bout)
            bin_ = bout
        if lvl != 0:
            s2.conv(p + "up.%d.upsample.conv" % lvl, bin_, bin_, 3)
        ups.insert(0, s2)  # self.up.insert(0, up): registered in level order 0, 1, ...
    for s2 in ups:
        s.items += s2.items
    s.norm(p + "norm_out", ch * mult[0])
    s.conv(p + "conv_out", ch * mult[0], cfg["out_ch"], 3)


def spec_vae(s, p, cfg):
    spec_encoder(s, p + "encoder.", cfg)
    spec_decoder(s, p + "decoder.", cfg)
    z, e = cfg["z_channels"], cfg["embed_dim"]
    s.conv(p + "quant_conv", 2 * z, 2 * e, 1)
    s.conv(p + "post_quant_conv", e, z, 1)


def vae_resnet(w, x, cfg, tr):
    g, eps = cfg["norm_groups"], cfg["norm_eps"]
    h = tr("conv1", conv2d(F.silu(tr("norm1", group_norm(x, w / "norm1", g, eps))), w / "conv1"))
    h = tr("conv2", conv2d(F.silu(tr("norm2", group_norm(h, w / "norm2", g, eps))), w / "conv2"))  # dropout: identity
    if w.has("nin_shortcut.weight"):
        x = tr("nin_shortcut", conv2d(x, w / "nin_shortcut"))
    return x + h


def vae_attn(w, x, cfg, tr):
    """AttnBlock: one head over all C channels, scale C^-0.5, q/k/v/proj_out as 1x1 convs, + x."""
    b, c, hh, ww = x.shape
    h = tr("norm", group_norm(x, w / "norm", cfg["norm_groups"], cfg["norm_eps"]))
    q = tr("q", conv2d(h, w / "q")).reshape(b, c, hh * ww).transpose(1, 2)
    k = tr("k", conv2d(h, w / "k")).reshape(b, c, hh * ww).transpose(1, 2)
    v = tr("v", conv2d(h, w / "v")).reshape(b, c, hh * ww).transpose(1, 2)
    o = attention_core(q, k, v, 1).transpose(1, 2).reshape(b, c, hh, ww)
    return x + tr("proj_out", conv2d(o, w / "proj_out"))


def vae_downsample(w, x):
    return conv2d(F.pad(x, (0, 1, 0, 1)), w / "conv", stride=2, padding=0)


def encoder_forward(w, x, cfg, tr):
    mult, nrb = cfg["ch_mult"], cfg["num_res_blocks"]
    h = tr("conv_in", conv2d(x, w / "conv_in"))
    for lvl in range(len(mult)):
        for j in range(nrb):
            name = "down.%d.block.%d" % (lvl, j)
            h = tr(name, vae_resnet(w / name, h, cfg, Trace(False)))
        if lvl != len(mult) - 1:
            name = "down.%d.downsample" % lvl
            h = tr(name, vae_downsample(w / name, h))
    h = tr("mid.block_1", vae_resnet(w / "mid.block_1", h, cfg, Trace(False)))
    h = tr("mid.attn_1", vae_attn(w / "mid.attn_1", h, cfg, Trace(False)))
    h = tr("mid.block_2", vae_resnet(w / "mid.block_2", h, cfg, Trace(False)))
    h = F.silu(group_norm(h, w / "norm_out", cfg["norm_groups"], cfg["norm_eps"]))
    return tr("conv_out", conv2d(h, w / "conv_out"))


def decoder_forward(w, z, cfg, tr):
    mult, nrb = cfg["ch_mult"], cfg["num_res_blocks"]
    h = tr("conv_in", conv2d(z, w / "conv_in"))
    h = tr("mid.block_1", vae_resnet(w / "mid.block_1", h, cfg, Trace(False)))
    h = tr("mid.attn_1", vae_attn(w / "mid.attn_1", h, cfg, Trace(False)))
    h = tr("mid.block_2", vae_resnet(w / "mid.block_2", h, cfg, Trace(False)))
    for lvl in reversed(range(len(mult))):
        for j in range(nrb + 1):
            name = "up.%d.block.%d" % (lvl, j)
            h = tr(name, vae_resnet(w / name, h, cfg, Trace(False)))
        if lvl != 0:
            name = "up.%d.upsample" % lvl
            h = tr(name, upsample(w / name, h))
    h = F.silu(group_norm(h, w / "norm_out", cfg["norm_groups"], cfg["norm_eps"]))
    return conv2d(h, w / "conv_out")


def vae_encode(w, x, cfg, tr):
    moments = conv2d(encoder_forward(w / "encoder", x, cfg, tr / "encoder"), w / "quant_conv")
    mean, logvar = moments.chunk(2, dim=1)
    lo, hi = cfg["logvar_clamp"]
    return moments, mean, torch.clamp(logvar, lo, hi)


def vae_decode(w, z, cfg, tr):
    h = tr("post_quant_conv", conv2d(z, w / "post_quant_conv"))
    return decoder_forward(w / "decoder", h, cfg, tr / "decoder")


# ---------------------------------------------------------------------------------------------------------
# CLIP text encoder (transformers CLIPTextModel)

def spec_clip_layer(s, p, width, inter):
    # CLIPEncoderLayer registration order: self_attn (k, v, q, out), layer_norm1, mlp (fc1, fc2), layer_norm2
    for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
        s.linear(p + "self_attn." + n, width, width)
    s.norm(p + "layer_norm1", width)
    s.linear(p + "mlp.fc1", width, inter)
    s.linear(p + "mlp.fc2", inter, width)
    s.norm(p + "layer_norm2", width)


def spec_clip(s, p, cfg):
    width = cfg["hidden_size"]
    s.add(p + "embeddings.token_embedding.weight", (cfg["vocab_size"], width), "emb")
    s.add(p + "embeddings.position_embedding.weight", (cfg["max_position_embeddings"], width), "emb")
    for i in range(cfg["num_layers"]):
        spec_clip_layer(s, p + "encoder.layers.%d." % i, width, cfg["intermediate_size"])
    s.norm(p + "final_layer_norm", width)


def causal_mask(n, dtype, device=None):
    return torch.triu(torch.full((n, n), float("-inf"), dtype=dtype, device=device), diagonal=1)


def clip_layer(w, x, cfg, tr):
    """Pre-LN: x + out_proj(attn(layer_norm1(x)), causal), then x + fc2(quick_gelu(fc1(layer_norm2(x))))."""
    eps, heads = cfg["layer_norm_eps"], cfg["num_heads"]
    h = layer_norm(x, w / "layer_norm1", eps)
    q = linear(h, w / "self_attn.q_proj")
    k = linear(h, w / "self_attn.k_proj")
    v = linear(h, w / "self_attn.v_proj")
    a = attention_core(q, k, v, heads, causal_mask(x.shape[1], x.dtype, x.device) if cfg["causal"] else None)
    x = x + tr("self_attn", linear(a, w / "self_attn.out_proj"))
    h = layer_norm(x, w / "layer_norm2", eps)
    h = linear(h, w / "mlp.fc1")
    h = h * torch.sigmoid(1.702 * h)  # quick_gelu
    return x + tr("mlp", linear(h, w / "mlp.fc2"))


def clip_forward(w, ids, cfg, tr):
    """ids [B, T] (long). Returns (last_hidden_state after final_layer_norm, pooled at the first EOS)."""
    T = ids.shape[1]
    x = w("embeddings.token_embedding.weight")[ids] + w("embeddings.position_embedding.weight")[:T][None]
    tr("embeddings", x)
    for i in range(cfg["num_layers"]):
        name = "layers.%d" % i
        x = tr(name, clip_layer(w / ("encoder." + name), x, cfg, Trace(False)))
    x = layer_norm(x, w / "final_layer_norm", cfg["layer_norm_eps"])
    eos = (ids == cfg["eos_token_id"]).int().argmax(dim=-1)
    return x, x[torch.arange(x.shape[0], device=x.device), eos]


# ---------------------------------------------------------------------------------------------------------
# Diffusers layout: name mapping rules (single-file name -> diffusers name), ported from diffusers'
# scripts/convert_original_stable_diffusion_to_diffusers.py (convert_from_ckpt.py) and
# scripts/convert_diffusers_to_original_stable_diffusion.py, written out generally for
# L = len(channel_mult) levels and N = num_res_blocks (SD 1.x: L = 4, N = 2).
#
# UNet  (file unet/diffusion_pytorch_model.safetensors; model.diffusion_model. prefix removed)
#   time_embed.0.*                                  -> time_embedding.linear_1.*
#   time_embed.2.*                                  -> time_embedding.linear_2.*
#   input_blocks.0.0.*                              -> conv_in.*
#   input_blocks.{1+l*(N+1)+j}.0.*   (j < N)        -> down_blocks.l.resnets.j.*        (resnet parts below)
#   input_blocks.{1+l*(N+1)+j}.1.*   (j < N)        -> down_blocks.l.attentions.j.*     (inside unchanged)
#   input_blocks.{(l+1)*(N+1)}.0.op.* (l < L-1)     -> down_blocks.l.downsamplers.0.conv.*
#   middle_block.0.*                                -> mid_block.resnets.0.*
#   middle_block.1.*                                -> mid_block.attentions.0.*
#   middle_block.2.*                                -> mid_block.resnets.1.*
#   output_blocks.{u*(N+1)+j}.0.*    (j <= N)       -> up_blocks.u.resnets.j.*          u = L-1-l: up_blocks.0
#   output_blocks.{u*(N+1)+j}.1.*    (attn level)   -> up_blocks.u.attentions.j.*       is the deepest level
#   output_blocks.{u*(N+1)+N}.{2 if attn else 1}.conv.* (u < L-1) -> up_blocks.u.upsamplers.0.conv.*
#   out.0.*                                         -> conv_norm_out.*
#   out.2.*                                         -> conv_out.*
#   resnet parts: in_layers.0 -> norm1, in_layers.2 -> conv1, emb_layers.1 -> time_emb_proj,
#                 out_layers.0 -> norm2, out_layers.3 -> conv2, skip_connection -> conv_shortcut
#   attention parts (Transformer2DModel): unchanged (norm, proj_in, transformer_blocks.K.{norm1,attn1.to_q,
#                 attn1.to_k, attn1.to_v, attn1.to_out.0, norm2, attn2.*, norm3, ff.net.0.proj, ff.net.2},
#                 proj_out); shapes unchanged (proj_in/proj_out stay [C,C,1,1] when not use_linear_projection)
#   config: block_out_channels = model_channels*mult, layers_per_block = N, down_block_types
#           CrossAttnDownBlock2D where the level has attention else DownBlock2D (up_block_types reversed),
#           attention_head_dim = num_heads (diffusers' historical misnomer: for SD 1.x it holds the number
#           of heads, 8, not the head size), cross_attention_dim = context_dim.
# VAE   (file vae/diffusion_pytorch_model.safetensors; first_stage_model. prefix removed)
#   encoder.down.l.block.j.*                        -> encoder.down_blocks.l.resnets.j.*
#   encoder.down.l.downsample.conv.*                -> encoder.down_blocks.l.downsamplers.0.conv.*
#   {encoder,decoder}.mid.block_1.*                 -> {encoder,decoder}.mid_block.resnets.0.*
#   {encoder,decoder}.mid.block_2.*                 -> {encoder,decoder}.mid_block.resnets.1.*
#   {encoder,decoder}.mid.attn_1.norm.*             -> {..}.mid_block.attentions.0.group_norm.*
#   {encoder,decoder}.mid.attn_1.{q,k,v}.*          -> {..}.mid_block.attentions.0.{to_q,to_k,to_v}.*
#   {encoder,decoder}.mid.attn_1.proj_out.*         -> {..}.mid_block.attentions.0.to_out.0.*
#       and these four weights are reshaped [C,C,1,1] -> [C,C] (Linear); biases unchanged
#   decoder.up.l.block.j.*                          -> decoder.up_blocks.{L-1-l}.resnets.j.*
#   decoder.up.l.upsample.conv.*                    -> decoder.up_blocks.{L-1-l}.upsamplers.0.conv.*
#   {encoder,decoder}.norm_out.*                    -> {..}.conv_norm_out.*
#   resnet part nin_shortcut                        -> conv_shortcut (norm1, conv1, norm2, conv2 unchanged)
#   conv_in, conv_out, quant_conv, post_quant_conv  -> unchanged
#   (older diffusers files name the attention query/key/value/proj_attn, with group_norm)
# CLIP  (file text_encoder/model.safetensors)
#   cond_stage_model.transformer.text_model.*       -> text_model.*   (transformers names are the same)

def unet_to_diffusers(cfg):
    """Returns [(single-file prefix, diffusers prefix)] for every UNet module, per the table above."""
    L, N = len(cfg["channel_mult"]), cfg["num_res_blocks"]
    attn_levels = [(1 << l) in cfg["attention_resolutions"] for l in range(L)]
    rules = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
             ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."),
             ("middle_block.0.", "mid_block.resnets.0."), ("middle_block.1.", "mid_block.attentions.0."),
             ("middle_block.2.", "mid_block.resnets.1.")]
    for l in range(L):
        for j in range(N):
            rules.append(("input_blocks.%d.0." % (1 + l * (N + 1) + j), "down_blocks.%d.resnets.%d." % (l, j)))
            if attn_levels[l]:
                rules.append(("input_blocks.%d.1." % (1 + l * (N + 1) + j), "down_blocks.%d.attentions.%d." % (l, j)))
        if l < L - 1:
            rules.append(("input_blocks.%d.0.op." % ((l + 1) * (N + 1)), "down_blocks.%d.downsamplers.0.conv." % l))
    for u in range(L):
        l = L - 1 - u
        for j in range(N + 1):
            rules.append(("output_blocks.%d.0." % (u * (N + 1) + j), "up_blocks.%d.resnets.%d." % (u, j)))
            if attn_levels[l]:
                rules.append(("output_blocks.%d.1." % (u * (N + 1) + j), "up_blocks.%d.attentions.%d." % (u, j)))
        if u < L - 1:
            rules.append(("output_blocks.%d.%d.conv." % (u * (N + 1) + N, 2 if attn_levels[l] else 1),
                          "up_blocks.%d.upsamplers.0.conv." % u))
    return rules


UNET_RESNET_PARTS = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
                     ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut.")]


def map_unet_name(name, rules):
    """Longest matching module prefix wins (input_blocks.3.0.op. before input_blocks.3.0.)."""
    best = max((r for r in rules if name.startswith(r[0])), key=lambda r: len(r[0]))
    rest = name[len(best[0]):]
    if ".resnets." in best[1]:
        for a, b in UNET_RESNET_PARTS:
            if rest.startswith(a):
                rest = b + rest[len(a):]
                break
    return best[1] + rest


def vae_to_diffusers(cfg):
    L, N = len(cfg["ch_mult"]), cfg["num_res_blocks"]
    rules = []
    for side in ("encoder.", "decoder."):
        rules += [(side + "mid.block_1.", side + "mid_block.resnets.0."),
                  (side + "mid.block_2.", side + "mid_block.resnets.1."),
                  (side + "mid.attn_1.norm.", side + "mid_block.attentions.0.group_norm."),
                  (side + "mid.attn_1.q.", side + "mid_block.attentions.0.to_q."),
                  (side + "mid.attn_1.k.", side + "mid_block.attentions.0.to_k."),
                  (side + "mid.attn_1.v.", side + "mid_block.attentions.0.to_v."),
                  (side + "mid.attn_1.proj_out.", side + "mid_block.attentions.0.to_out.0."),
                  (side + "norm_out.", side + "conv_norm_out."),
                  (side + "conv_in.", side + "conv_in."), (side + "conv_out.", side + "conv_out.")]
    for l in range(L):
        for j in range(N):
            rules.append(("encoder.down.%d.block.%d." % (l, j), "encoder.down_blocks.%d.resnets.%d." % (l, j)))
        if l < L - 1:
            rules.append(("encoder.down.%d.downsample.conv." % l, "encoder.down_blocks.%d.downsamplers.0.conv." % l))
        for j in range(N + 1):
            rules.append(("decoder.up.%d.block.%d." % (l, j), "decoder.up_blocks.%d.resnets.%d." % (L - 1 - l, j)))
        if l > 0:
            rules.append(("decoder.up.%d.upsample.conv." % l, "decoder.up_blocks.%d.upsamplers.0.conv." % (L - 1 - l)))
    rules += [("quant_conv.", "quant_conv."), ("post_quant_conv.", "post_quant_conv.")]
    return rules


def map_vae(name, arr, rules):
    best = max((r for r in rules if name.startswith(r[0])), key=lambda r: len(r[0]))
    rest = name[len(best[0]):]
    if ".resnets." in best[1] and rest.startswith("nin_shortcut."):
        rest = "conv_shortcut." + rest[len("nin_shortcut."):]
    new = best[1] + rest
    if ".mid_block.attentions.0.to_" in new and new.endswith(".weight"):
        arr = arr.reshape(arr.shape[0], arr.shape[1])  # 1x1 conv -> Linear
    return new, arr


def unet_diffusers_config(cfg, sample_size):
    L = len(cfg["channel_mult"])
    attn_levels = [(1 << l) in cfg["attention_resolutions"] for l in range(L)]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn_levels]
    return {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.21.4", "act_fn": "silu",
        "attention_head_dim": cfg["num_heads"] if cfg["num_head_channels"] == -1
        else [cfg["model_channels"] * m // cfg["num_head_channels"] for m in cfg["channel_mult"]],
        "block_out_channels": [cfg["model_channels"] * m for m in cfg["channel_mult"]],
        "center_input_sample": False, "cross_attention_dim": cfg["context_dim"],
        "down_block_types": down, "downsample_padding": 1, "dual_cross_attention": False,
        "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": cfg["in_channels"],
        "layers_per_block": cfg["num_res_blocks"], "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": cfg["norm_eps"], "norm_num_groups": cfg["norm_groups"], "only_cross_attention": False,
        "out_channels": cfg["out_channels"], "sample_size": sample_size,
        "transformer_layers_per_block": cfg["transformer_depth"],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn_levels)],
        "upcast_attention": False, "use_linear_projection": cfg["use_linear_in_transformer"],
    }


def vae_diffusers_config(cfg, sample_size):
    L = len(cfg["ch_mult"])
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.21.4", "act_fn": "silu",
        "block_out_channels": [cfg["ch"] * m for m in cfg["ch_mult"]],
        "down_block_types": ["DownEncoderBlock2D"] * L, "in_channels": cfg["in_channels"],
        "latent_channels": cfg["z_channels"], "layers_per_block": cfg["num_res_blocks"],
        "norm_num_groups": cfg["norm_groups"], "out_channels": cfg["out_ch"], "sample_size": sample_size,
        "scaling_factor": cfg["scale_factor"], "up_block_types": ["UpDecoderBlock2D"] * L,
    }


def clip_transformers_config(cfg):
    return {
        "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": cfg["bos_token_id"],
        "dropout": 0.0, "eos_token_id": cfg["eos_token_id"], "hidden_act": cfg["hidden_act"],
        "hidden_size": cfg["hidden_size"], "initializer_factor": 1.0, "initializer_range": 0.02,
        "intermediate_size": cfg["intermediate_size"], "layer_norm_eps": cfg["layer_norm_eps"],
        "max_position_embeddings": cfg["max_position_embeddings"], "model_type": "clip_text_model",
        "num_attention_heads": cfg["num_heads"], "num_hidden_layers": cfg["num_layers"],
        "pad_token_id": cfg["pad_token_id"], "projection_dim": cfg["hidden_size"], "torch_dtype": "float32",
        "transformers_version": "4.33.0", "vocab_size": cfg["vocab_size"],
    }


# ---------------------------------------------------------------------------------------------------------
# safetensors writer / reader

DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
          np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}
WEIGHT_DTYPE = np.float16     # weights in the single-file and block goldens: F16 storage of the same (f16-rounded) values
DIFFUSERS_DTYPE = np.float16  # the diffusers copies: F16 (values identical to the F32 goldens', see draw_weights)


def safetensors_bytes(tensors, metadata):
    """tensors: list of (name, ndarray) laid out in that order; header padded with spaces to 8 bytes."""
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    rev = {v: k for k, v in DTYPES.items()}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype=rev[h["dtype"]].newbyteorder("<")).reshape(h["shape"])
    return out, meta


def write_file(path, tensors, metadata):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    blob = safetensors_bytes(tensors, metadata)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    # re-read: same names, shapes and bytes
    back, meta = read_safetensors(path)
    assert meta == metadata and list(back) == [n for n, _ in tensors], path
    for name, a in tensors:
        assert back[name].shape == a.shape and back[name].tobytes() == np.ascontiguousarray(a).tobytes(), name
    return len(blob)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------------------
# Running a golden: float64 (stored) and float32 (measured against it)

def to_torch(weights, dtype):
    return {k: torch.from_numpy(v).to(dtype) for k, v in weights.items()}


def run_both(fn, weights, inputs):
    """fn(W, inputs_as_torch, Trace) -> dict name -> tensor. Runs in f64 and f32 on the same f32 values.
    Returns (f64 outputs+traces as f32 numpy, per-tensor {max_abs, max_rel} of the f32 run, used weights)."""
    results = {}
    used = set()
    for dtype in (torch.float64, torch.float32):
        w = W(to_torch(weights, dtype), "", used)
        ins = {k: (torch.from_numpy(v).to(dtype) if v.dtype.kind == "f" else torch.from_numpy(v))
               for k, v in inputs.items()}
        tr = Trace(True)
        with torch.no_grad():
            outs = fn(w, ins, tr)
        outs.update({"golden.trace." + k: v for k, v in tr.d.items()})
        results[dtype] = outs
    err = {}
    for k, ref in results[torch.float64].items():
        d = (results[torch.float32][k].double() - ref).abs().max().item()
        m = ref.abs().max().item()
        err[k] = {"max_abs": d, "max_rel": d / m if m > 0 else d}
    stored = {k: v.to(torch.float32).numpy() for k, v in results[torch.float64].items()}
    return stored, err, used


def normal(rs, shape, scale=1.0):
    return (scale * rs.standard_normal(shape)).astype(np.float32)


F32_REPORT = []  # (file, tensor, max_abs, max_rel) for outputs


def emit(out_dir, fname, kind, cfg, weights, weight_prefix, cases, fn, layout, extra_meta):
    """cases: list of (case name, inputs dict name->ndarray, trace?). Writes out_dir/fname.
    weights: dict of names WITHOUT weight_prefix; stored with it."""
    tensors_golden = {}
    errs = {}
    all_used = set()
    for case, inputs, with_trace in cases:
        stored, err, used = run_both(fn, weights, inputs)
        all_used |= used
        pre = "golden." if case == "default" else "golden.%s." % case
        for k, v in inputs.items():
            tensors_golden[pre + "input." + k] = v.astype(np.float32)
        for k, v in stored.items():
            if k.startswith("golden.trace."):
                if not with_trace:
                    continue
                name = k
            else:
                name = pre + k[len("golden."):]
            tensors_golden[name] = v
            errs[name] = err[k]
    unused = set(weights) - all_used
    assert not unused, "%s: weights never used: %s" % (fname, sorted(unused)[:5])
    outputs = [k for k in errs if ".trace." not in k]
    max_rel = max(errs[k]["max_rel"] for k in outputs)
    for k in outputs:
        F32_REPORT.append((fname, k, errs[k]["max_abs"], errs[k]["max_rel"]))
    traces = [k for k in errs if ".trace." in k]
    if traces:
        worst = max(traces, key=lambda k: errs[k]["max_rel"])
        F32_REPORT.append((fname, "worst trace: " + worst[len("golden.trace."):], errs[worst]["max_abs"],
                           errs[worst]["max_rel"]))
    full_cfg = dict(cfg)
    full_cfg["cases"] = {c: {k: list(v.shape) for k, v in ins.items()} for c, ins, _ in cases}
    full_cfg["weights_seed"] = seed_of(fname + ".weights")
    full_cfg["weight_prefix"] = weight_prefix
    meta = {
        "format": "pt",
        "kiln.golden.generator": "tools/sd_reference.py",
        "kiln.golden.kind": kind,
        "kiln.golden.config": json.dumps(full_cfg, sort_keys=True),
        "kiln.golden.layout": layout,
        "kiln.golden.compute": "outputs and traces computed in float64 from the stored float32 weights and "
                               "inputs, then rounded to float32; PyTorch's own float32 run differs from "
                               "them by kiln.golden.f32_vs_f64",
        "kiln.golden.cases": ",".join(c for c, _, _ in cases),
        "kiln.golden.tensors": json.dumps({k: list(v.shape) for k, v in sorted(tensors_golden.items())}),
        "kiln.golden.f32_vs_f64_max_rel": "%.3g" % max_rel,
        "kiln.golden.f32_vs_f64": json.dumps({k: {"max_abs": float("%.3g" % e["max_abs"]),
                                                  "max_rel": float("%.3g" % e["max_rel"])}
                                              for k, e in sorted(errs.items())}),
    }
    meta.update(extra_meta)
    tensors = [(weight_prefix + k, weights[k].astype(WEIGHT_DTYPE)) for k in sorted(weights)]
    tensors += sorted(tensors_golden.items())
    size = write_file(os.path.join(out_dir, fname), tensors, meta)
    return size, tensors_golden


def model_meta(prefix, cfg):
    out = {}
    for k, v in cfg.items():
        if isinstance(v, bool):
            s = "true" if v else "false"
        elif isinstance(v, list):
            s = ",".join(str(x) for x in v)
        else:
            s = str(v)
        out["kiln.%s.%s" % (prefix, k)] = s
    return out


NCHW = "activations NCHW (PyTorch's layout); token sequences [B, T, C]; time embeddings [B, C]; weights as " \
       "PyTorch stores them (conv [Cout, Cin, kh, kw], linear [out, in])"


# ---------------------------------------------------------------------------------------------------------
# The goldens

def unet_weights(cfg, fname):
    s = Spec()
    spec_unet(s, "", cfg)
    return draw_weights(s, seed_of(fname + ".weights"))


def unet_fn(cfg):
    def fn(w, ins, tr):
        return {"golden.output": unet_forward(w, ins["x"], ins["timesteps"], ins["context"], cfg, tr)}
    return fn


def make_unet(out_dir, fname, cfg, default_hw, timesteps, nonsquare_hw=None):
    rs = np.random.RandomState(seed_of(fname + ".inputs"))
    ctx = normal(rs, (2, 77, cfg["context_dim"]))
    ts = np.array(timesteps, dtype=np.float32)
    cases = [("default", {"x": normal(rs, (2, cfg["in_channels"]) + default_hw), "timesteps": ts, "context": ctx}, True)]
    if nonsquare_hw:
        cases.append(("nonsquare", {"x": normal(rs, (2, cfg["in_channels"]) + nonsquare_hw), "timesteps": ts,
                                    "context": ctx}, False))
    weights = unet_weights(cfg, fname)
    size, _ = emit(out_dir, fname, "unet", cfg, weights, UNET_PREFIX, cases, unet_fn(cfg), NCHW,
                   model_meta("unet", cfg))
    return size, weights


def make_vae(out_dir, fname, cfg):
    s = Spec()
    spec_vae(s, "", cfg)
    weights = draw_weights(s, seed_of(fname + ".weights"))
    rs = np.random.RandomState(seed_of(fname + ".inputs"))

    def img(shape):
        return rs.uniform(-1.0, 1.0, shape).astype(np.float32)

    # traces only for the small default case: a 32-channel trace at 32x32 is 128 KB
    cases = [("default", {"image": img((1, 3, 16, 16)), "z": normal(rs, (1, 4, 8, 8))}, True),
             ("full", {"image": img((1, 3, 32, 32)), "z": normal(rs, (1, 4, 16, 16))}, False),
             ("nonsquare", {"image": img((1, 3, 16, 24)), "z": normal(rs, (1, 4, 12, 8))}, False)]

    def fn(w, ins, tr):
        moments, mean, logvar = vae_encode(w, ins["image"], cfg, tr)
        return {"golden.output.moments": moments, "golden.output.mean": mean, "golden.output.logvar": logvar,
                "golden.output.image": vae_decode(w, ins["z"], cfg, tr)}

    size, _ = emit(out_dir, fname, "vae", cfg, weights, VAE_PREFIX, cases, fn, NCHW, model_meta("vae", cfg))
    return size, weights


def clip_ids(cfg, lengths, rs):
    T = cfg["max_position_embeddings"]
    ids = np.full((len(lengths), T), cfg["pad_token_id"], dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, 0] = cfg["bos_token_id"]
        ids[b, 1:1 + n] = rs.randint(0, cfg["bos_token_id"], n)
        ids[b, 1 + n] = cfg["eos_token_id"]
    return ids


def make_clip(out_dir, fname, cfg):
    s = Spec()
    spec_clip(s, "", cfg)
    weights = draw_weights(s, seed_of(fname + ".weights"))
    rs = np.random.RandomState(seed_of(fname + ".inputs"))
    ids = clip_ids(cfg, [5, 12], rs)

    def fn(w, ins, tr):
        h, pooled = clip_forward(w, ins["input_ids"].long(), cfg, tr)
        return {"golden.output": h, "golden.output.pooled": pooled}

    # ids travel as F32 (exact integers); the forward casts them back
    size, _ = emit(out_dir, fname, "clip", cfg, weights, CLIP_PREFIX, [("default", {"input_ids": ids.astype(np.float32)}, True)],
                   fn, NCHW, model_meta("clip", cfg))
    return size, weights


def make_blocks(out_dir):
    sizes = {}
    ucfg = dict(UNET_SD1)
    ukeys = ["norm_groups", "norm_eps", "transformer_norm_eps", "layer_norm_eps"]
    umeta = {k: v for k, v in model_meta("unet", ucfg).items() if k.split(".")[-1] in ukeys}
    vmeta = {k: v for k, v in model_meta("vae", VAE_SD1).items() if k.split(".")[-1] in ("norm_groups", "norm_eps")}

    def block(name, cfg, spec_fn, inputs, fn, meta):
        fname = "block_%s.safetensors" % name
        s = Spec()
        spec_fn(s)
        weights = draw_weights(s, seed_of(fname + ".weights"))
        rs = np.random.RandomState(seed_of(fname + ".inputs"))
        ins = {k: f(rs) for k, f in inputs.items()}

        def wrapped(w, i, tr):
            return {"golden.output": fn(w, i, tr)}

        sizes[fname], _ = emit(out_dir, fname, "block." + name, cfg, weights, "block." if weights else "",
                               [("default", ins, True)], wrapped, NCHW, meta)

    block("resblock", dict(cin=64, cout=32, emb_channels=128),
          lambda s: spec_resblock(s, "", 64, 32, 128),
          {"x": lambda rs: normal(rs, (2, 64, 4, 6)), "emb": lambda rs: normal(rs, (2, 128))},
          lambda w, i, tr: resblock(w, i["x"], i["emb"], ucfg, tr), umeta)

    st_cfg = dict(channels=32, num_heads=8, context_dim=40, depth=1, use_linear=False)
    block("spatial_transformer", st_cfg,
          lambda s: spec_spatial_transformer(s, "", 32, 40, 1, False),
          {"x": lambda rs: normal(rs, (2, 32, 4, 6)), "context": lambda rs: normal(rs, (2, 77, 40))},
          lambda w, i, tr: spatial_transformer(w, i["x"], i["context"], 8, ucfg, tr),
          dict(umeta, **{"kiln.unet.num_heads": "8", "kiln.unet.use_linear_in_transformer": "false"}))
    st2 = dict(st_cfg, num_heads=2, use_linear=True)
    block("spatial_transformer_linear", st2,
          lambda s: spec_spatial_transformer(s, "", 32, 40, 1, True),
          {"x": lambda rs: normal(rs, (2, 32, 4, 6)), "context": lambda rs: normal(rs, (2, 77, 40))},
          lambda w, i, tr: spatial_transformer(w, i["x"], i["context"], 2, ucfg, tr),
          dict(umeta, **{"kiln.unet.num_heads": "2", "kiln.unet.use_linear_in_transformer": "true"}))
    block("attention_self", dict(query_dim=32, num_heads=8, dim_head=4),
          lambda s: spec_cross_attention(s, "", 32, 32, 32),
          {"x": lambda rs: normal(rs, (2, 24, 32))},
          lambda w, i, tr: cross_attention(w, i["x"], None, 8), {"kiln.unet.num_heads": "8"})
    block("attention_cross", dict(query_dim=32, context_dim=40, num_heads=8, dim_head=4),
          lambda s: spec_cross_attention(s, "", 32, 40, 32),
          {"x": lambda rs: normal(rs, (2, 24, 32)), "context": lambda rs: normal(rs, (2, 77, 40))},
          lambda w, i, tr: cross_attention(w, i["x"], i["context"], 8), {"kiln.unet.num_heads": "8"})
    block("geglu", dict(dim=32, mult=4, inner=128),
          lambda s: spec_feed_forward(s, "", 32),
          {"x": lambda rs: normal(rs, (2, 24, 32))},
          lambda w, i, tr: feed_forward(w, i["x"], tr), {})
    block("downsample", dict(channels=32, stride=2, padding=1),
          lambda s: s.conv("op", 32, 32, 3),
          {"x": lambda rs: normal(rs, (2, 32, 7, 10))},
          lambda w, i, tr: downsample_unet(w, i["x"]), {})
    block("upsample", dict(channels=32, mode="nearest", scale=2),
          lambda s: s.conv("conv", 32, 32, 3),
          {"x": lambda rs: normal(rs, (2, 32, 3, 5))},
          lambda w, i, tr: upsample(w, i["x"]), {})
    block("vae_resnet", dict(cin=64, cout=32),
          lambda s: spec_vae_resnet(s, "", 64, 32),
          {"x": lambda rs: normal(rs, (2, 64, 4, 6))},
          lambda w, i, tr: vae_resnet(w, i["x"], VAE_SD1, tr), vmeta)
    block("vae_attn", dict(channels=32),
          lambda s: spec_vae_attn(s, "", 32),
          {"x": lambda rs: normal(rs, (2, 32, 4, 6))},
          lambda w, i, tr: vae_attn(w, i["x"], VAE_SD1, tr), vmeta)
    block("vae_downsample", dict(channels=32, pad=[0, 1, 0, 1], stride=2, padding=0),
          lambda s: s.conv("conv", 32, 32, 3),
          {"x": lambda rs: normal(rs, (2, 32, 8, 10))},
          lambda w, i, tr: vae_downsample(w, i["x"]), {})
    ccfg = dict(CLIP_SD1, hidden_size=32, num_heads=2, intermediate_size=128)
    block("clip_layer", dict(hidden_size=32, num_heads=2, intermediate_size=128, causal=True),
          lambda s: spec_clip_layer(s, "", 32, 128),
          {"x": lambda rs: normal(rs, (2, 77, 32))},
          lambda w, i, tr: clip_layer(w, i["x"], ccfg, tr),
          {k: v for k, v in model_meta("clip", ccfg).items()
           if k.split(".")[-1] in ("hidden_size", "num_heads", "intermediate_size", "layer_norm_eps", "hidden_act", "causal")})

    # timestep embedding: no weights
    fname = "block_timestep_embedding.safetensors"
    ts = np.array([0.0, 1.0, 37.5, 500.0, 999.0], dtype=np.float32)

    def temb_fn(w, i, tr):
        return {"golden.output": timestep_embedding(i["timesteps"], 32, 10000, i["timesteps"].dtype),
                "golden.output.dim320": timestep_embedding(i["timesteps"], 320, 10000, i["timesteps"].dtype)}

    sizes[fname], _ = emit(out_dir, fname, "block.timestep_embedding", dict(dims=[32, 320], max_period=10000,
                                                                            order="cos then sin"),
                           {}, "", [("default", {"timesteps": ts}, True)], temb_fn, NCHW,
                           {"kiln.unet.timestep_max_period": "10000", "kiln.unet.timestep_flip_sin_to_cos": "true"})
    return sizes


def make_diffusers(out_dir, unet_cfg, unet_w, vae_cfg, vae_w, clip_cfg, clip_w):
    base = os.path.join(out_dir, "diffusers_small")
    sizes = {}
    rules = unet_to_diffusers(unet_cfg)
    unet_d = {}
    for k, v in unet_w.items():
        nk = map_unet_name(k, rules)
        assert nk not in unet_d, nk
        unet_d[nk] = v
    vrules = vae_to_diffusers(vae_cfg)
    vae_d = {}
    for k, v in vae_w.items():
        nk, nv = map_vae(k, v, vrules)
        assert nk not in vae_d, nk
        vae_d[nk] = nv
    clip_d = {"text_model." + k: v for k, v in clip_w.items()}
    note = {"format": "pt", "kiln.golden.generator": "tools/sd_reference.py",
            "kiln.golden.note": "the weights of unet_small / vae_small / clip_small.safetensors under diffusers "
                                "names, stored as F16 holding exactly the same values; compare to those goldens"}
    for d in (unet_d, vae_d, clip_d):
        for k, v in d.items():
            c = v.astype(DIFFUSERS_DTYPE)
            assert np.array_equal(c.astype(np.float32), v), k  # the copy is exact
            d[k] = c
    sizes["diffusers_small/unet/diffusion_pytorch_model.safetensors"] = write_file(
        os.path.join(base, "unet", "diffusion_pytorch_model.safetensors"), sorted(unet_d.items()), note)
    sizes["diffusers_small/vae/diffusion_pytorch_model.safetensors"] = write_file(
        os.path.join(base, "vae", "diffusion_pytorch_model.safetensors"), sorted(vae_d.items()), note)
    sizes["diffusers_small/text_encoder/model.safetensors"] = write_file(
        os.path.join(base, "text_encoder", "model.safetensors"), sorted(clip_d.items()), note)
    write_json(os.path.join(base, "unet", "config.json"), unet_diffusers_config(unet_cfg, 8))
    write_json(os.path.join(base, "vae", "config.json"), vae_diffusers_config(vae_cfg, 32))
    write_json(os.path.join(base, "text_encoder", "config.json"), clip_transformers_config(clip_cfg))
    write_json(os.path.join(base, "scheduler", "scheduler_config.json"), {
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.21.4", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "timestep_spacing": "leading", "trained_betas": None})
    write_json(os.path.join(base, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.21.4",
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": [None, None], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]})
    return sizes, unet_d, vae_d, clip_d


def write_name_map(out_dir):
    """sd15_name_map.tsv: every tensor of the real SD 1.x UNet and VAE (sizes of SD 1.5, checked against its
    parameter counts), original name -> diffusers name with both shapes, for testing a C port of the rules
    without the real weights. CLIP is a plain prefix change and is left out."""
    lines = ["# original name\tdiffusers name\toriginal shape\tdiffusers shape  (tools/sd_reference.py)"]
    s = Spec()
    spec_unet(s, "", UNET_SD1)
    assert sum(int(np.prod(sh)) for _, sh, _ in s.items) == 859520964 and len(s.items) == 686
    rules = unet_to_diffusers(UNET_SD1)
    for name, shape, _ in s.items:
        lines.append("%s%s\tunet/%s\t%s\t%s" % (UNET_PREFIX, name, map_unet_name(name, rules),
                                                  ",".join(map(str, shape)), ",".join(map(str, shape))))
    s = Spec()
    spec_vae(s, "", VAE_SD1)
    assert sum(int(np.prod(sh)) for _, sh, _ in s.items) == 83653863 and len(s.items) == 248
    vrules = vae_to_diffusers(VAE_SD1)
    for name, shape, _ in s.items:
        new, arr = map_vae(name, np.zeros(shape, np.float32), vrules)
        lines.append("%s%s\tvae/%s\t%s\t%s" % (VAE_PREFIX, name, new, ",".join(map(str, shape)),
                                                 ",".join(map(str, arr.shape))))
    names = [l.split("\t")[1] for l in lines[1:]]
    assert len(set(names)) == len(names)
    s = Spec()
    spec_clip(s, "", CLIP_SD1)
    assert sum(int(np.prod(sh)) for _, sh, _ in s.items) == 123060480 and len(s.items) == 196
    path = os.path.join(out_dir, "sd15_name_map.tsv")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return os.path.getsize(path)


def check_sd1_mapping():
    """The general rules reproduce diffusers' hard-coded SD 1.x tables (L=4, N=2, no attention at level 3)."""
    rules = dict(unet_to_diffusers(UNET_SD1))
    expect = {"input_blocks.1.0.": "down_blocks.0.resnets.0.", "input_blocks.2.1.": "down_blocks.0.attentions.1.",
              "input_blocks.3.0.op.": "down_blocks.0.downsamplers.0.conv.",
              "input_blocks.9.0.op.": "down_blocks.2.downsamplers.0.conv.",
              "input_blocks.11.0.": "down_blocks.3.resnets.1.", "output_blocks.2.1.conv.": "up_blocks.0.upsamplers.0.conv.",
              "output_blocks.5.2.conv.": "up_blocks.1.upsamplers.0.conv.", "output_blocks.3.1.": "up_blocks.1.attentions.0.",
              "output_blocks.11.1.": "up_blocks.3.attentions.2.", "output_blocks.8.0.": "up_blocks.2.resnets.2."}
    for k, v in expect.items():
        assert rules[k] == v, (k, rules.get(k), v)
    assert "input_blocks.10.1." not in rules and "output_blocks.0.1." not in rules
    vr = dict(vae_to_diffusers(VAE_SD1))
    assert vr["decoder.up.3.block.2."] == "decoder.up_blocks.0.resnets.2."
    assert vr["decoder.up.1.upsample.conv."] == "decoder.up_blocks.2.upsamplers.0.conv."
    assert vr["encoder.down.2.downsample.conv."] == "encoder.down_blocks.2.downsamplers.0.conv."


def self_checks():
    # our attention equals the CompVis einsum formulation; timestep embedding as util.timestep_embedding
    rs = np.random.RandomState(1)
    q, k, v = (torch.from_numpy(rs.standard_normal((2, 5, 16))) for _ in range(3))
    h = 4
    qq, kk, vv = (t.reshape(2, -1, h, 4).permute(0, 2, 1, 3).reshape(2 * h, -1, 4) for t in (q, k, v))
    sim = torch.einsum("b i d, b j d -> b i j", qq, kk) * 4 ** -0.5
    ref = torch.einsum("b i j, b j d -> b i d", sim.softmax(-1), vv).reshape(2, h, -1, 4).permute(0, 2, 1, 3).reshape(2, -1, 16)
    assert torch.allclose(attention_core(q, k, v, h), ref, atol=1e-12)
    t = torch.tensor([3.0, 999.0])
    half = 4
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    ref = torch.cat([torch.cos(args), torch.sin(args)], -1)
    assert torch.allclose(timestep_embedding(t, 8, dtype=torch.float32), ref)
    # a CLIP layer's attention equals torch.nn.MultiheadAttention with the same weights and a causal mask
    width, heads, T = 16, 2, 7
    sp = Spec()
    spec_clip_layer(sp, "", width, 32)
    wd = to_torch(draw_weights(sp, 7), torch.float64)
    mha = torch.nn.MultiheadAttention(width, heads, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([wd["self_attn.%s_proj.weight" % n] for n in "qkv"]))
        mha.in_proj_bias.copy_(torch.cat([wd["self_attn.%s_proj.bias" % n] for n in "qkv"]))
        mha.out_proj.weight.copy_(wd["self_attn.out_proj.weight"])
        mha.out_proj.bias.copy_(wd["self_attn.out_proj.bias"])
        x = torch.from_numpy(rs.standard_normal((2, T, width)))
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        h = F.layer_norm(x, (width,), wd["layer_norm1.weight"], wd["layer_norm1.bias"], 1e-5)
        ref = mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        tr = Trace(True)
        clip_layer(W(wd), x, dict(CLIP_SD1, num_heads=heads), tr)
    assert torch.allclose(tr.d["self_attn"], ref, atol=1e-12)
    check_sd1_mapping()


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                                  "tests", "data", "golden")
    out_dir = os.path.normpath(out_dir)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    self_checks()
    sizes = {}
    sizes["unet_small.safetensors"], unet_w = make_unet(out_dir, "unet_small.safetensors", UNET_SMALL, (8, 8),
                                                        [999.0, 37.5], nonsquare_hw=(8, 16))
    sizes["unet_small_2head.safetensors"], _ = make_unet(out_dir, "unet_small_2head.safetensors", UNET_SMALL_2HEAD,
                                                         (12, 8), [500.0, 1.0])
    sizes["vae_small.safetensors"], vae_w = make_vae(out_dir, "vae_small.safetensors", VAE_SMALL)
    sizes["clip_small.safetensors"], clip_w = make_clip(out_dir, "clip_small.safetensors", CLIP_SMALL)
    sizes.update(make_blocks(out_dir))
    dsizes, _, _, _ = make_diffusers(out_dir, UNET_SMALL, unet_w, VAE_SMALL, vae_w, CLIP_SMALL, clip_w)
    sizes.update(dsizes)
    sizes["sd15_name_map.tsv"] = write_name_map(out_dir)

    print("%-58s %10s" % ("file", "bytes"))
    for k in sorted(sizes):
        print("%-58s %10d" % (k, sizes[k]))
    print("%-58s %10d" % ("total", sum(sizes.values())))
    print()
    print("float32 vs float64: %-38s %-44s %-9s %s" % ("", "", "max_abs", "max_rel = max|f32-f64| / max|f64|"))
    for fname, k, a, r in F32_REPORT:
        print("  %-46s %-44s %.2e  %.2e" % (fname, k, a, r))


if __name__ == "__main__":
    main()
