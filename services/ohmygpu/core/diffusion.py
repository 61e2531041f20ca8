"""Which diffusion model a checkpoint holds, told from its tensor names and shapes.

Single-file checkpoints name their parts by prefix: the Stable Diffusion (ldm) layout puts the
UNet under `model.diffusion_model.`, the VAE under `first_stage_model.` and the text encoder
under `cond_stage_model.` (SD 1.x: OpenAI CLIP `transformer.`; SD 2.x: OpenCLIP `model.`) or
`conditioner.embedders.` (SDXL). Diffusion transformers are told by their blocks: SD3's
`joint_blocks`, FLUX's `double_blocks`, Wan's `blocks.N.cross_attn` beside a `patch_embedding`.
A UNet may also come alone with its prefix stripped (`input_blocks.`), as ComfyUI's
`diffusion_models/` files do. What is missing (a FLUX transformer alone needs a VAE and text
encoders beside it; core/diffusion_parts.py registers such sets) is reported,
so `omg model info` can say what the model lacks.

GGUF diffusion models come two ways: stable-diffusion.cpp's own `convert` keeps the checkpoint's
tensor names and writes no metadata at all; the ComfyUI-GGUF converters (most hub GGUFs of FLUX,
SD3, Wan) strip the `model.diffusion_model.` prefix and name the family in
`general.architecture`. Either is told here; an architecture llama.cpp knows is an LLM's.
"""

from __future__ import annotations

from collections.abc import Mapping

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.gguf import GgufHeader
from ohmygpu.core.gguf_check import GGML_TYPE_NAMES
from ohmygpu.core.safetensors_header import TensorEntry

NATIVE_SIZE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024, "wan": 832}


def _has(names: list[str], *fragments: str) -> bool:
    return any(f in n for n in names for f in fragments)


def family_of(names: list[str]) -> str:
    """"sd1", "sd2", "sdxl", "sd3", "flux", "wan", or "" when the names are no diffusion model."""
    if _has(names, "double_blocks.", "single_blocks."):
        return "flux"
    if _has(names, "joint_blocks."):
        return "sd3"
    if _has(names, "patch_embedding.") and _has(names, ".cross_attn."):
        return "wan"
    if _has(names, "conditioner.embedders.") or _has(names, "model.diffusion_model.label_emb."):
        return "sdxl"
    if _has(names, "model.diffusion_model.input_blocks.", "first_stage_model."):
        return "sd2" if _has(names, "cond_stage_model.model.") else "sd1"
    if any(n.startswith("input_blocks.") for n in names):
        # A UNet alone, its prefix stripped (ComfyUI's diffusion_models/ files): SDXL has label_emb.
        return "sdxl" if any(n.startswith("label_emb.") for n in names) else "sd1"
    return ""


def _info(names: list[str], family: str, parameters: int, dtypes: set[str]) -> assets_pb2.DiffusionInfo:
    return assets_pb2.DiffusionInfo(
        family=family,
        has_denoiser=_has(names, "model.diffusion_model.", "double_blocks.", "joint_blocks.", "blocks.0.")
        or any(n.startswith("input_blocks.") for n in names),  # a UNet with its prefix stripped
        has_vae=_has(names, "first_stage_model.", "vae.", "decoder.conv_in."),
        has_text_encoder=_has(names, "cond_stage_model.", "conditioner.embedders.", "text_encoders."),
        native_size=NATIVE_SIZE.get(family, 512),
        parameters=parameters,
        dtypes=sorted(dtypes),
    )


def diffusion_info(tensors: Mapping[str, TensorEntry]) -> assets_pb2.DiffusionInfo | None:
    """What `tensors` (a checkpoint's header) hold, or None when they are no diffusion model."""
    names = list(tensors)
    family = family_of(names)
    if not family:
        return None
    if family == "sd1" and any(n.endswith("attn2.to_k.weight") and t.shape[-1] == 1024 for n, t in tensors.items()):
        family = "sd2"  # a UNet alone: SD 2.x cross-attends to OpenCLIP's 1024 wide context
    return _info(names, family, sum(t.count for t in tensors.values()), {t.dtype for t in tensors.values()})


def gguf_diffusion_info(header: GgufHeader) -> assets_pb2.DiffusionInfo | None:
    """What a GGUF's `header` holds when it is a diffusion model, else None (an LLM, say)."""
    arch = header.architecture
    # The ComfyUI-GGUF converters' general.architecture is our family name, for those sd.cpp runs.
    if arch and arch not in NATIVE_SIZE:
        return None  # llama.cpp's architectures, and anything else we do not run
    names = [t.name for t in header.tensors]
    family = family_of(names) or arch
    if not family:
        return None
    return _info(names, family, header.parameter_count,
                 {GGML_TYPE_NAMES.get(t.ggml_type, f"type {t.ggml_type}") for t in header.tensors})
