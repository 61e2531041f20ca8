"""Which diffusion model a checkpoint holds, told from its tensor names and shapes.

Single-file checkpoints name their parts by prefix: the Stable Diffusion (ldm) layout puts the
UNet under `model.diffusion_model.`, the VAE under `first_stage_model.` and the text encoder
under `cond_stage_model.` (SD 1.x: OpenAI CLIP `transformer.`; SD 2.x: OpenCLIP `model.`) or
`conditioner.embedders.` (SDXL). Diffusion transformers are told by their blocks: SD3's
`joint_blocks`, FLUX's `double_blocks`, Wan's `blocks.N.cross_attn` beside a `patch_embedding`.
What is missing (a FLUX transformer alone needs a VAE and text encoders beside it) is reported,
so `omg model info` can say what the model lacks.
"""

from __future__ import annotations

from collections.abc import Mapping

from ohmygpu.assets.v1 import assets_pb2
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
    return ""


def diffusion_info(tensors: Mapping[str, TensorEntry]) -> assets_pb2.DiffusionInfo | None:
    """What `tensors` (a checkpoint's header) hold, or None when they are no diffusion model."""
    names = list(tensors)
    family = family_of(names)
    if not family:
        return None
    return assets_pb2.DiffusionInfo(
        family=family,
        has_denoiser=_has(names, "model.diffusion_model.", "double_blocks.", "joint_blocks.", "blocks.0."),
        has_vae=_has(names, "first_stage_model.", "vae.", "decoder.conv_in."),
        has_text_encoder=_has(names, "cond_stage_model.", "conditioner.embedders.", "text_encoders."),
        native_size=NATIVE_SIZE.get(family, 512),
        parameters=sum(t.count for t in tensors.values()),
        dtypes=sorted({t.dtype for t in tensors.values()}),
    )
