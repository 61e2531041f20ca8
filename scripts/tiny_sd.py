#!/usr/bin/env python3
"""Write the smallest single-file Stable Diffusion checkpoint stable-diffusion.cpp loads and runs:
an SDXS-512 layout (SD 1.x family, reduced UNet, tiny autoencoder), random weights.

Why this architecture: sd.cpp hard-codes every SD 1.x dimension (320 model channels, CLIP ViT-L
with 12 layers of 768, 8 heads) and refuses a file that lacks any tensor it expects, so nothing
can be shrunk by shape. What it does choose from the tensor *names* is the variant
(model.cpp get_sd_version): CLIP width 768 = SD 1.x; no `middle_block.1` = a tiny UNet (one res
block per level, channel_mult 1,2,4); no `output_blocks.7.1` on top of that = SDXS-512, which
needs no KL VAE at all (sd.cpp decodes it with TAESD, read from `first_stage_model.*` renamed
`tae.*`). That is ~316 M UNet + ~123 M CLIP + 2.4 M TAESD parameters, the floor for SD 1.x.

To halve the file, every weight matrix and convolution is stored as F8_E4M3 (sd.cpp widens it to
f16 on load); norms and biases are f16. Random bytes make them: a sign, an exponent near
1/sqrt(fan_in), a mantissa, so activations stay in range without any float conversion (numpy has
no fp8).

The autoencoder is not random: its weights are set by hand so that decode(encode(x)) is x
averaged over 8x8 blocks (the encoder's stride-2 convolutions average 2x2, the decoder's
nearest upsampling repeats, every residual block passes through), latents being RGB mapped to
[-1, 1]. Image to image therefore means something measurable: a low strength keeps the input,
a high one does not.

Usage: tiny_sd.py OUT.safetensors [--seed N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np

MODEL_CHANNELS = 320
TIME_EMBED = 1280
CONTEXT = 768  # CLIP ViT-L width: what makes sd.cpp read the file as SD 1.x
CLIP_LAYERS, CLIP_FF, CLIP_VOCAB, CLIP_POSITIONS = 12, 3072, 49408, 77
TAE_CHANNELS, LATENT = 64, 4

Shape = tuple[int, ...]


class Tensors:
    """Named tensors in writing order: F8_E4M3 bytes for weights, f16 arrays for the rest."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.items: dict[str, tuple[str, Shape, bytes]] = {}

    def random_f8(self, name: str, shape: Shape) -> None:
        """Random E4M3 values of magnitude ~1/sqrt(fan_in) (He-like, so GroupNorm-ed stacks stay
        finite): exponent field E-1 or E (E = 7 + log2 of the target), any mantissa, any sign."""
        fan_in = math.prod(shape[1:])
        target = max(1, min(14, round(math.log2(1.0 / math.sqrt(fan_in))) + 7))
        n = math.prod(shape)
        exponent = target - self.rng.integers(0, 2, n, dtype=np.uint8)
        codes = (self.rng.integers(0, 2, n, dtype=np.uint8) << 7) | (exponent << 3) | \
            self.rng.integers(0, 8, n, dtype=np.uint8)
        self.items[name] = ("F8_E4M3", shape, codes.astype(np.uint8).tobytes())

    def f16(self, name: str, value: np.ndarray) -> None:
        self.items[name] = ("F16", tuple(value.shape), value.astype("<f2").tobytes())

    # layers, in sd.cpp's (= the original LDM / HF CLIP) naming
    def linear(self, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
        self.random_f8(f"{name}.weight", (n_out, n_in))
        if bias:
            self.f16(f"{name}.bias", np.zeros(n_out))

    def conv(self, name: str, n_in: int, n_out: int, k: int = 3, bias: bool = True) -> None:
        self.random_f8(f"{name}.weight", (n_out, n_in, k, k))
        if bias:
            self.f16(f"{name}.bias", np.zeros(n_out))

    def norm(self, name: str, channels: int) -> None:
        self.f16(f"{name}.weight", np.ones(channels))
        self.f16(f"{name}.bias", np.zeros(channels))

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        """The safetensors format: u64 header length, JSON header, data (header padded to 8)."""
        header: dict[str, object] = {"__metadata__": metadata}
        offset = 0
        for name, (dtype, shape, data) in self.items.items():
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
            offset += len(data)
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for _, _, data in self.items.values():
                f.write(data)
        os.replace(tmp, path)  # appears complete or not at all


def unet(t: Tensors) -> None:
    """sd.cpp's UnetModelBlock for VERSION_SDXS_512_DS (unet.hpp), tensor for tensor."""
    p = "model.diffusion_model."

    def res(name: str, c_in: int, c_out: int) -> None:
        t.norm(f"{name}.in_layers.0", c_in)
        t.conv(f"{name}.in_layers.2", c_in, c_out)
        t.linear(f"{name}.emb_layers.1", TIME_EMBED, c_out)
        t.norm(f"{name}.out_layers.0", c_out)
        t.conv(f"{name}.out_layers.3", c_out, c_out)
        if c_in != c_out:
            t.conv(f"{name}.skip_connection", c_in, c_out, 1)

    def transformer(name: str, c: int) -> None:
        t.norm(f"{name}.norm", c)
        t.conv(f"{name}.proj_in", c, c, 1)
        b = f"{name}.transformer_blocks.0"
        for attn, c_kv in (("attn1", c), ("attn2", CONTEXT)):
            t.linear(f"{b}.{attn}.to_q", c, c, bias=False)
            t.linear(f"{b}.{attn}.to_k", c_kv, c, bias=False)
            t.linear(f"{b}.{attn}.to_v", c_kv, c, bias=False)
            t.linear(f"{b}.{attn}.to_out.0", c, c)
        t.linear(f"{b}.ff.net.0.proj", c, c * 8)  # GEGLU: two halves of 4c
        t.linear(f"{b}.ff.net.2", c * 4, c)
        for i in (1, 2, 3):
            t.norm(f"{b}.norm{i}", c)
        t.conv(f"{name}.proj_out", c, c, 1)

    t.linear(p + "time_embed.0", MODEL_CHANNELS, TIME_EMBED)
    t.linear(p + "time_embed.2", TIME_EMBED, TIME_EMBED)
    t.conv(p + "input_blocks.0.0", LATENT, MODEL_CHANNELS)
    mults, attention_at = (1, 2, 4), (4, 2)  # tiny UNet; SDXS: no attention at full resolution
    skips, ch, idx, ds = [MODEL_CHANNELS], MODEL_CHANNELS, 0, 1
    for level, mult in enumerate(mults):
        idx += 1
        res(f"{p}input_blocks.{idx}.0", ch, mult * MODEL_CHANNELS)
        ch = mult * MODEL_CHANNELS
        if ds in attention_at:
            transformer(f"{p}input_blocks.{idx}.1", ch)
        skips.append(ch)
        idx += 1  # a tiny UNet's block numbers skip the dropped second res block
        if level != len(mults) - 1:
            idx += 1
            t.conv(f"{p}input_blocks.{idx}.0.op", ch, ch)
            skips.append(ch)
            ds *= 2
    out = 0
    for level in range(len(mults) - 1, -1, -1):
        for j in range(2):
            res(f"{p}output_blocks.{out}.0", ch + skips.pop(), mults[level] * MODEL_CHANNELS)
            ch = mults[level] * MODEL_CHANNELS
            up = 1
            if ds in attention_at:
                transformer(f"{p}output_blocks.{out}.1", ch)
                up = 2
            if level > 0 and j == 1:
                out += 1
                if out == 2:
                    up = 1
                t.conv(f"{p}output_blocks.{out}.{up}.conv", ch, ch)
                ds //= 2
            out += 1
    t.norm(p + "out.0", ch)
    t.conv(p + "out.2", MODEL_CHANNELS, LATENT)


def clip(t: Tensors) -> None:
    """CLIP ViT-L/14's text model (HF names under cond_stage_model.transformer)."""
    p = "cond_stage_model.transformer.text_model."
    t.random_f8(p + "embeddings.token_embedding.weight", (CLIP_VOCAB, CONTEXT))
    t.f16(p + "embeddings.position_embedding.weight",
          t.rng.normal(0, 0.01, (CLIP_POSITIONS, CONTEXT)))
    for i in range(CLIP_LAYERS):
        layer = f"{p}encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t.linear(f"{layer}.self_attn.{proj}", CONTEXT, CONTEXT)
        t.norm(f"{layer}.layer_norm1", CONTEXT)
        t.norm(f"{layer}.layer_norm2", CONTEXT)
        t.linear(f"{layer}.mlp.fc1", CONTEXT, CLIP_FF)
        t.linear(f"{layer}.mlp.fc2", CLIP_FF, CONTEXT)
    t.norm(p + "final_layer_norm", CONTEXT)


def tae(t: Tensors) -> None:
    """TAESD (tae.hpp TinyEncoder / TinyDecoder) set to a block-averaging identity, see above."""
    c = TAE_CHANNELS

    def conv(name: str, n_in: int, n_out: int, taps: dict[tuple[int, int, int, int], float],
             bias: dict[int, float] | None = None, has_bias: bool = True) -> None:
        w = np.zeros((n_out, n_in, 3, 3))
        for at, v in taps.items():
            w[at] = v
        t.f16(f"{name}.weight", w)
        if has_bias:
            b = np.zeros(n_out)
            for at, v in (bias or {}).items():
                b[at] = v
            t.f16(f"{name}.bias", b)

    def passthrough(name: str) -> None:
        # relu(conv4(...) + x) with conv4 = 0 is relu(x) = x: everything here is >= 0
        for k in ("conv.0", "conv.2", "conv.4"):
            conv(f"{name}.{k}", c, c, {})

    rgb = range(3)
    centre = {(k, k, 1, 1): 1.0 for k in rgb}
    average = {(k, k, dy, dx): 0.25 for k in rgb for dy in (1, 2) for dx in (1, 2)}

    enc = "first_stage_model.encoder.layers"
    conv(f"{enc}.0", 3, c, centre)  # input in [0, 1] (sd.cpp does not rescale for TAESD)
    passthrough(f"{enc}.1")
    idx = 2
    for _ in range(3):
        conv(f"{enc}.{idx}", c, c, average, has_bias=False)  # stride 2, padding 1: taps 1,2 = 2i, 2i+1
        for i in range(3):
            passthrough(f"{enc}.{idx + 1 + i}")
        idx += 4
    conv(f"{enc}.{idx}", c, LATENT, {(k, k, 1, 1): 2.0 for k in rgb}, {k: -1.0 for k in rgb})  # [-1, 1]

    dec = "first_stage_model.decoder.layers"
    conv(f"{dec}.0", LATENT, c, {(k, k, 1, 1): 0.5 for k in rgb}, {k: 0.5 for k in rgb})  # back to [0, 1]
    for idx in (2, 3, 4, 7, 8, 9, 12, 13, 14, 17):
        passthrough(f"{dec}.{idx}")
    for idx in (6, 11, 16):  # after each nearest upsampling
        conv(f"{dec}.{idx}", c, c, centre, has_bias=False)
    conv(f"{dec}.18", c, 3, centre)


def build(out: Path, seed: int = 0) -> Path:
    t = Tensors(seed)
    unet(t)
    clip(t)
    tae(t)
    t.save(out, {"format": "pt", "generator": "ohmygpu scripts/tiny_sd.py", "seed": str(seed),
                 "architecture": "SDXS-512 (SD 1.x tiny UNet + TAESD), random weights"})
    return out


def script_hash() -> str:
    """What the cached file depends on: this script's own text."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def cached(cache_dir: Path | None = None) -> Path:
    """The model for this version of the script, built once into the test-model cache."""
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ohmygpu" / "test-models"
    path = base / f"tiny-sd-{script_hash()}.safetensors"
    if not path.exists():
        base.mkdir(parents=True, exist_ok=True)
        build(path)
    return path


def cached_gguf(cache_dir: Path | None = None) -> Path:
    """The same model as a GGUF, written by stable-diffusion.cpp's own converter (Q4_0 where a
    tensor can take it, F16 elsewhere; tensor names kept, no metadata), as sd.cpp users make
    theirs. Needs the images extra."""
    source = cached(cache_dir)
    path = source.with_name(f"tiny-sd-{script_hash()}-q4_0.gguf")
    if not path.exists():
        from stable_diffusion_cpp import stable_diffusion_cpp as lowlevel

        partial = path.with_name(path.name + ".partial")
        if not lowlevel.convert(str(source).encode(), b"", str(partial).encode(), 2, b"", False):
            raise RuntimeError(f"stable-diffusion.cpp could not convert {source} to GGUF")
        partial.rename(path)
    return path


# The checkpoint's parts as separate files, the way FLUX, SD3 and Wan are published (and ComfyUI's
# diffusion_models/, vae/ and text_encoders/ folders hold them): each file without its prefix.
PARTS = {"model.diffusion_model.": "sdxs-unet.safetensors", "first_stage_model.": "sdxs-taesd.safetensors",
         "cond_stage_model.transformer.": "clip_l.safetensors"}


def cached_parts(cache_dir: Path | None = None) -> Path:
    """The same model as three files (UNet, autoencoder, CLIP-L text encoder) in one folder."""
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ohmygpu" / "test-models"
    folder = base / f"tiny-sd-{script_hash()}-parts"
    if not all((folder / name).exists() for name in PARTS.values()):
        whole = Tensors(0)  # the seed cached() builds with: the same weights as the single file
        unet(whole)
        clip(whole)
        tae(whole)
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, name in PARTS.items():
            part = Tensors(0)
            part.items = {n[len(prefix):]: v for n, v in whole.items.items() if n.startswith(prefix)}
            part.save(folder / name, {"format": "pt", "generator": "ohmygpu scripts/tiny_sd.py", "part": name})
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    build(args.out, args.seed)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
