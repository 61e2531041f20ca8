"""Diffusion models published as several files: each file's role told from its tensors, the set
checked and registered as one model (core/diffusion_parts.py, ModelStore.add_local with parts)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import diffusion_parts
from ohmygpu.core.errors import InvalidModelFile, UnusablePart
from ohmygpu.core.store import ModelStore
from ohmygpu.runtimes.sdcpp.pipeline_view import ModelFiles
from tests.unit.test_diffusion_files import write_gguf


def sparse_safetensors(path: Path, tensors: dict[str, tuple[int, ...]], dtype: str = "F16") -> Path:
    """A real safetensors file with F16 tensors of these shapes, its data a hole (no disk used):
    a CLIP's 49408 x 768 embedding is real size without writing 76 MB."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


UNET = {"input_blocks.0.0.weight": (320, 4, 3, 3), "output_blocks.0.0.in_layers.0.weight": (640,)}
FLUX_DIT = {"double_blocks.0.img_attn.qkv.weight": (64, 32), "single_blocks.0.linear1.weight": (64, 32),
            "img_in.weight": (32, 64)}
VAE = {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3),
       "decoder.up.0.block.0.conv1.weight": (128, 128, 3, 3)}
WAN_VAE = {"conv1.weight": (32, 32, 1, 1, 1), "encoder.conv1.weight": (96, 3, 3, 3, 3),
           "decoder.conv1.weight": (384, 16, 3, 3, 3)}
CLIP_L = {"text_model.embeddings.token_embedding.weight": (49408, 768),
          "text_model.encoder.layers.0.mlp.fc1.weight": (3072, 768)}
CLIP_G = {"text_model.embeddings.token_embedding.weight": (49408, 1280),
          "text_model.encoder.layers.0.mlp.fc1.weight": (5120, 1280)}
T5 = {"encoder.block.0.layer.0.SelfAttention.q.weight": (64, 64), "shared.weight": (321, 64)}
QWEN = {"model.layers.0.self_attn.q_proj.weight": (64, 64), "model.embed_tokens.weight": (100, 64)}


@pytest.mark.parametrize("tensors, role", [
    (UNET, "diffusion_model"), (FLUX_DIT, "diffusion_model"), (VAE, "vae"), (WAN_VAE, "vae"),
    (CLIP_L, "clip_l"), (CLIP_G, "clip_g"), (T5, "t5xxl"), (QWEN, "llm"),
    ({"text_model.embeddings.token_embedding.weight": (49408, 1024)}, ""),  # OpenCLIP-H: no sd.cpp argument
    ({"lora_unet_down_blocks_0.alpha": (1,)}, ""),
])
def test_each_file_is_told_by_its_tensors(tmp_path: Path, tensors: dict, role: str) -> None:
    part = diffusion_parts.read_part(sparse_safetensors(tmp_path / "part.safetensors", tensors))
    assert diffusion_parts.role_of(part) == role


def test_gguf_text_encoders_are_told_by_their_architecture(tmp_path: Path) -> None:
    t5 = diffusion_parts.read_part(write_gguf(tmp_path / "t5.gguf", "t5encoder", ["enc.blk.0.attn_q.weight"]))
    qwen = diffusion_parts.read_part(write_gguf(tmp_path / "qwen.gguf", "qwen2", ["blk.0.attn_q.weight"]))
    flux = diffusion_parts.read_part(write_gguf(tmp_path / "flux.gguf", "flux", list(FLUX_DIT)))
    assert [diffusion_parts.role_of(p) for p in (t5, qwen, flux)] == ["t5xxl", "llm", "diffusion_model"]
    assert flux.fmt == assets_pb2.ARTIFACT_FORMAT_GGUF and flux.info is not None and flux.info.family == "flux"


def test_a_flux_set_registers_as_one_model_with_each_files_role(tmp_path: Path) -> None:
    dit = write_gguf(tmp_path / "flux1-schnell-Q4_0.gguf", "flux", list(FLUX_DIT))
    vae = sparse_safetensors(tmp_path / "ae.safetensors", VAE)
    clip = sparse_safetensors(tmp_path / "clip_l.safetensors", CLIP_L)
    t5 = write_gguf(tmp_path / "t5xxl-Q8_0.gguf", "t5encoder", ["enc.blk.0.attn_q.weight"])
    store = ModelStore(tmp_path / "store")
    rec = store.add_local(dit, name="flux-schnell", parts=[vae, clip, t5])
    assert rec.kind == assets_pb2.MODEL_KIND_IMAGE and rec.format == assets_pb2.ARTIFACT_FORMAT_GGUF
    assert [(a.filename, a.role) for a in rec.artifacts] == [
        ("flux1-schnell-Q4_0.gguf", "diffusion_model"), ("ae.safetensors", "vae"),
        ("clip_l.safetensors", "clip_l"), ("t5xxl-Q8_0.gguf", "t5xxl")]
    d = rec.diffusion
    assert d.family == "flux" and d.has_denoiser and d.has_vae and d.has_text_encoder
    assert d.parameters == sum(diffusion_parts.read_part(p).parameters for p in (dit, vae, clip, t5))
    assert set(d.dtypes) == {"F16"}
    assert rec.size_bytes == sum(p.stat().st_size for p in (dit, vae, clip, t5))
    assert store.get("flux-schnell").artifacts[3].role == "t5xxl"  # kept by the index
    # The memory estimate counts every file sd.cpp holds, whatever its format.
    from ohmygpu.core.estimate import estimate

    assert estimate(rec, context_length=0).weights == rec.size_bytes
    # The worker hands each file to sd.cpp under its role's argument.
    files = ModelFiles(store.get("flux-schnell"))
    assert files.arguments == {"diffusion_model_path": str(dit), "vae_path": str(vae),
                               "clip_l_path": str(clip), "t5xxl_path": str(t5)}
    assert files.path == str(dit)


def test_a_set_that_does_not_add_up_is_refused_naming_the_file(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    unet = sparse_safetensors(tmp_path / "unet.safetensors", UNET)
    vae = sparse_safetensors(tmp_path / "vae.safetensors", VAE)
    vae2 = sparse_safetensors(tmp_path / "vae-ft-mse.safetensors", VAE)
    clip = sparse_safetensors(tmp_path / "clip_l.safetensors", CLIP_L)
    lora = sparse_safetensors(tmp_path / "style-lora.safetensors", {"lora_unet_down_blocks_0.alpha": (1,)})
    with pytest.raises(UnusablePart, match="vae-ft-mse.safetensors is a VAE, which vae.safetensors already gives"):
        store.add_local(unet, name="m", parts=[vae, vae2])
    with pytest.raises(UnusablePart, match="style-lora.safetensors is none of the parts"):
        store.add_local(unet, name="m", parts=[vae, lora])
    with pytest.raises(UnusablePart, match="unet.safetensors is a diffusion model; a further file must be"):
        store.add_local(sparse_safetensors(tmp_path / "flux.safetensors", FLUX_DIT), name="m", parts=[unet])
    with pytest.raises(UnusablePart, match="must be its diffusion model"):
        store.add_local(clip, name="m", parts=[unet])
    # A checkpoint that holds its VAE takes no second one.
    whole = sparse_safetensors(tmp_path / "whole.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (4, 4),
                                                                 "first_stage_model.decoder.conv_in.weight": (4, 4)})
    with pytest.raises(UnusablePart, match="which the diffusion model's own file already gives"):
        store.add_local(whole, name="m", parts=[vae])
    # A missing part says no more than a missing model does (no oracle for which paths exist).
    with pytest.raises(InvalidModelFile, match="not a readable model") as missing:
        store.add_local(unet, name="m", parts=[tmp_path / "nope.safetensors"])
    assert not isinstance(missing.value, UnusablePart)
    assert store.list() == []  # nothing registered by any refusal


def test_a_unet_alone_is_told_by_its_blocks(tmp_path: Path) -> None:
    part = diffusion_parts.read_part(sparse_safetensors(tmp_path / "u.safetensors", UNET))
    assert part.info is not None and (part.info.family, part.info.has_denoiser, part.info.has_vae) == ("sd1", True, False)
    sd2 = diffusion_parts.read_part(sparse_safetensors(tmp_path / "u2.safetensors", {
        **UNET, "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}))
    assert sd2.info is not None and sd2.info.family == "sd2"
    xl = diffusion_parts.read_part(sparse_safetensors(tmp_path / "xl.safetensors", {**UNET, "label_emb.0.0.weight": (8, 8)}))
    assert xl.info is not None and xl.info.family == "sdxl"
