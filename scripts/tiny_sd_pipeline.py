#!/usr/bin/env python3
"""Write a Stable Diffusion 1.x repo in the diffusers layout, as most hub repos ship one
(`model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`), with random
weights, for tests of pulling and running that layout.

Why full size: stable-diffusion.cpp reads a diffusers folder by renaming its tensors with the
standard SD 1.x block table (name_conversion.cpp, two res blocks per level), so the reduced UNets
(SDXS, tiny) only load as single files; the smallest diffusers pipeline it runs is SD 1.5's
(860 M UNet, 84 M VAE, 123 M CLIP ViT-L). Names, shapes and configs come from diffusers' and
transformers' own classes, built on the meta device (no memory, no init); the weights are random
F8_E4M3 bytes as in tiny_sd.py (~1.07 GB in all), norms ones, biases zeros.

Usage: tiny_sd_pipeline.py OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent


def _tiny_sd():
    spec = importlib.util.spec_from_file_location("tiny_sd", _HERE / "tiny_sd.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("tiny_sd", module)
    spec.loader.exec_module(module)
    return module


def _models():
    """The three modules of SD 1.5 (meta tensors) and their configs, as diffusers saves them."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                            block_out_channels=(128, 256, 512, 512), sample_size=512,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4)
        clip_config = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                     num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu",
                                     max_position_embeddings=77, vocab_size=49408)
        clip = CLIPTextModel(clip_config)
    unet_sd = unet.state_dict()
    vae_sd = vae.state_dict()
    # Files on the hub name the text model's tensors from `text_model.`, whatever the class keeps.
    clip_sd = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in clip.state_dict().items()
               if not k.endswith("position_ids")}
    return {
        "unet": (unet_sd, dict(unet.config), "diffusion_pytorch_model"),
        "vae": (vae_sd, dict(vae.config), "diffusion_pytorch_model"),
        "text_encoder": (clip_sd, clip_config.to_dict(), "model"),
    }


def _weights(tiny_sd, state: dict, seed: int):
    t = tiny_sd.Tensors(seed)
    for name, tensor in state.items():
        shape = tuple(tensor.shape)
        if len(shape) >= 2:
            t.random_f8(name, shape)
        elif name.endswith(".weight"):
            t.f16(name, np.ones(shape))  # norms
        else:
            t.f16(name, np.zeros(shape))
    return t


def _config_json(config: dict, class_name: str) -> str:
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if not k.startswith("_")}
    return json.dumps({"_class_name": class_name, **clean}, indent=2, default=str)


def build(out: Path, seed: int = 0) -> Path:
    tiny_sd = _tiny_sd()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    classes = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel"}
    for i, (component, (state, config, stem)) in enumerate(_models().items()):
        folder = partial / component
        folder.mkdir()
        if component == "text_encoder":
            (folder / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"], **{
                k: v for k, v in config.items() if isinstance(v, (int, float, str, bool, type(None)))}}, indent=2))
        else:
            (folder / "config.json").write_text(_config_json(config, classes[component]))
        meta = {"format": "pt", "generator": "ohmygpu scripts/tiny_sd_pipeline.py", "seed": str(seed)}
        _weights(tiny_sd, state, seed + i).save(folder / f"{stem}.safetensors", meta)
    (partial / "tokenizer").mkdir()
    (partial / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}))
    (partial / "scheduler").mkdir()
    (partial / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon"}))
    (partial / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # appears complete or not at all
    return out


def script_hash() -> str:
    """What the cached folder depends on: this script's and tiny_sd.py's text."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update((_HERE / "tiny_sd.py").read_bytes())
    return h.hexdigest()[:12]


def cached(cache_dir: Path | None = None) -> Path:
    """The pipeline for this version of the scripts, built once into the test-model cache."""
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ohmygpu" / "test-models"
    path = base / f"sd-pipeline-{script_hash()}"
    if not (path / "model_index.json").exists():
        base.mkdir(parents=True, exist_ok=True)
        build(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    build(args.out, args.seed)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
