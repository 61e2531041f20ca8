"""Diffusion models published as several files, and what each file is, told from its tensors.

FLUX, SD3, Wan, Qwen-Image and Z-Image are rarely shipped as one checkpoint: the hub has the
diffusion model (often as a GGUF of its own quantization), the VAE and each text encoder as
separate files (`flux1-schnell-Q4_0.gguf`, `ae.safetensors`, `clip_l.safetensors`,
`t5xxl_fp16.safetensors`), as ComfyUI's `diffusion_models/`, `vae/` and `text_encoders/` folders
hold them. stable-diffusion.cpp takes each under its own argument (`diffusion_model_path`,
`vae_path`, `clip_l_path`, ...), so the store keeps the role of every file of such a model
(Artifact.role), told here from the tensor names and shapes, never from a file's name: names on
the hub are free text.

Roles, as stable-diffusion.cpp's arguments name them: "diffusion_model", "vae", "clip_l" (CLIP
ViT-L, 768 wide), "clip_g" (OpenCLIP ViT-bigG, 1280 wide), "t5xxl" (T5-XXL, and Wan's umT5-XXL,
which sd.cpp reads through the same argument) and "llm" (a language model used as the text
encoder: Qwen-Image's Qwen2.5-VL, Z-Image's Qwen3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import diffusion
from ohmygpu.core.errors import InvalidModelFile
from ohmygpu.core.gguf import read_header as read_gguf_header
from ohmygpu.core.gguf_check import GGML_TYPE_NAMES
from ohmygpu.core.safetensors_header import read_header as read_safetensors_header

DENOISER = "diffusion_model"
VAE = "vae"
ENCODERS = ("clip_l", "clip_g", "t5xxl", "llm")
ROLES = (DENOISER, VAE, *ENCODERS)
# What stable-diffusion.cpp calls each role's file (StableDiffusion's keyword arguments).
SDCPP_ARGUMENT = {role: f"{role}_path" for role in ROLES}
_CLIP_WIDTHS = {768: "clip_l", 1280: "clip_g"}
# GGUF architectures of language models sd.cpp takes as text encoders.
_LLM_ARCHES = ("qwen2", "qwen2vl", "qwen25vl", "qwen3", "llama", "mistral", "mistral3", "gemma3")
_T5_ARCHES = ("t5", "t5encoder", "umt5")
# Prefixes every tensor of a standalone VAE starts with: the ldm and diffusers layouts
# (`encoder.`, `decoder.`, `quant_conv.`), and Wan's 3D VAE (`conv1.`, `conv2.` between them).
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "conv1.", "conv2.",
                 "first_stage_model.", "vae.")


@dataclass(frozen=True)
class PartFile:
    """One file of a multi-file model: its tensors' names and shapes, dtypes and architecture."""

    shapes: Mapping[str, tuple[int, ...]]
    dtypes: frozenset[str]
    parameters: int
    architecture: str  # general.architecture of a GGUF; "" for safetensors
    info: assets_pb2.DiffusionInfo | None  # set when the file is a diffusion model
    fmt: int  # ArtifactFormat


def read_part(path: Path) -> PartFile:
    """The tensor table of a .safetensors or .gguf file; raises InvalidModelFile otherwise."""
    if path.suffix.lower() == ".gguf":
        header = read_gguf_header(path)
        shapes = {t.name: tuple(reversed(t.dims)) for t in header.tensors}  # ggml lists dims innermost first
        return PartFile(shapes=shapes, parameters=header.parameter_count,
                        dtypes=frozenset(GGML_TYPE_NAMES.get(t.ggml_type, f"type {t.ggml_type}") for t in header.tensors),
                        architecture=header.architecture or "", info=diffusion.gguf_diffusion_info(header),
                        fmt=assets_pb2.ARTIFACT_FORMAT_GGUF)
    if path.suffix.lower() == ".safetensors":
        tensors = read_safetensors_header(path)
        return PartFile(shapes={n: t.shape for n, t in tensors.items()},
                        parameters=sum(t.count for t in tensors.values()),
                        dtypes=frozenset(t.dtype for t in tensors.values()), architecture="",
                        info=diffusion.diffusion_info(tensors), fmt=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)
    raise InvalidModelFile(f"{path.name} is neither a .safetensors nor a .gguf file")


def role_of(part: PartFile) -> str:
    """The part's role (see the module doc), or "" when the tensors are none we know."""
    if part.info is not None and part.info.has_denoiser:
        return DENOISER
    names = list(part.shapes)
    arch = part.architecture.lower()
    if arch in _T5_ARCHES or any("encoder.block." in n or n.startswith("enc.blk.") for n in names):
        return "t5xxl"
    embedding = next((part.shapes[n] for n in names if n.endswith("token_embedding.weight")), None)
    if embedding is not None and len(embedding) == 2:
        return _CLIP_WIDTHS.get(min(embedding), "")
    if arch in _LLM_ARCHES or any(n.startswith(("model.layers.", "blk.")) for n in names):
        return "llm"
    if names and all(n.startswith(_VAE_PREFIXES) for n in names) and any("decoder." in n for n in names):
        return VAE
    return ""


def _describe(role: str) -> str:
    return {DENOISER: "a diffusion model", VAE: "a VAE", "clip_l": "a CLIP-L text encoder",
            "clip_g": "a CLIP-G text encoder", "t5xxl": "a T5-XXL text encoder",
            "llm": "a language-model text encoder"}.get(role, "none of the parts a diffusion model is made of")


def roles(main: PartFile, parts: Mapping[str, PartFile]) -> dict[str, str]:
    """Each further file's role, checked as a set: `main` is the diffusion model, every part is a
    VAE or a text encoder and no role is given twice (including by the main file itself, a
    checkpoint that holds its VAE). Raises InvalidModelFile saying which file is wrong."""
    if role_of(main) != DENOISER:
        raise InvalidModelFile("the first file of a multi-file diffusion model must be its diffusion model "
                               "(UNet or diffusion transformer)")
    assert main.info is not None
    taken = {DENOISER: "the diffusion model"}
    if main.info.has_vae:
        taken[VAE] = "the diffusion model's own file"
    out: dict[str, str] = {}
    for name, part in parts.items():
        role = role_of(part)
        if role in ("", DENOISER):
            raise InvalidModelFile(f"{name} is {_describe(role)}; a further file must be a VAE or a text encoder")
        if role in taken:
            raise InvalidModelFile(f"{name} is {_describe(role)}, which {taken[role]} already gives")
        taken[role] = name
        out[name] = role
    return out


def set_info(main: PartFile, parts: Mapping[str, PartFile], part_roles: Mapping[str, str]) -> assets_pb2.DiffusionInfo:
    """The DiffusionInfo of the whole set: the family of the diffusion model, what the set holds."""
    assert main.info is not None
    info = assets_pb2.DiffusionInfo()
    info.CopyFrom(main.info)
    given = set(part_roles.values())
    info.has_vae = info.has_vae or VAE in given
    info.has_text_encoder = info.has_text_encoder or bool(given & set(ENCODERS))
    info.parameters = main.parameters + sum(p.parameters for p in parts.values())
    info.ClearField("dtypes")
    info.dtypes.extend(sorted(main.dtypes.union(*(p.dtypes for p in parts.values()))))
    return info


def compose(record: assets_pb2.InstallRecord, main_path: Path, main: PartFile,
            parts: list[tuple[Path, assets_pb2.Artifact]]) -> None:
    """Make `record`, a diffusion model whose main file (read as `main`) is at `main_path`, the
    set of it and `parts` (each file with its artifact: filename, size, digest, local path):
    every artifact gets its role, the set's DiffusionInfo replaces the main file's. Raises
    InvalidModelFile naming the file when the set does not add up (see `roles`)."""
    read = {artifact.filename: read_part(path) for path, artifact in parts}
    part_roles = roles(main, read)
    for artifact in record.artifacts:
        if artifact.local_path == str(main_path):
            artifact.role = DENOISER
    for _, artifact in parts:
        artifact.role = part_roles[artifact.filename]
        artifact.format = read[artifact.filename].fmt
        record.artifacts.append(artifact)
        record.size_bytes += artifact.size
    record.diffusion.CopyFrom(set_info(main, read, part_roles))


def sdcpp_arguments(artifacts: list[tuple[str, str]]) -> dict[str, str]:
    """stable-diffusion.cpp's keyword arguments for the (role, local path) pairs of a set."""
    return {SDCPP_ARGUMENT[role]: path for role, path in artifacts if role in SDCPP_ARGUMENT}
