"""Which files of a diffusion repository a pull takes, decided from the file list alone.

Diffusion repos on the hub ship the same model several times: single-file checkpoints at the top
(`v1-5-pruned.safetensors`, `v1-5-pruned-emaonly.safetensors`, `*_fp16.safetensors`, a `.ckpt`
beside each), and the diffusers pipeline layout in folders (`unet/`, `vae/`, `text_encoder/`,
each again in fp32 and fp16). Taking every file, as a pull of any other repo does, means tens of
gigabytes for one model. Where a single-file checkpoint exists a pull takes one of those (the one
the `:TAG` names, else the smallest, which is the fp16 or EMA-only one) and the small files at the
top, and none of the pipeline folders; a repo that ships the pipeline only gets one weight file
per component (core/diffusion_pipeline.py). `.ckpt` files are pickles, which can run code when
read: never taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ohmygpu.core import diffusion_pipeline
from ohmygpu.core.errors import InvalidArgument, NotFound
from ohmygpu.core.hub import RemoteFile, RepoSnapshot

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")  # what single-file checkpoints end with
PIPELINE_INDEX = diffusion_pipeline.PIPELINE_INDEX  # what marks a diffusers pipeline repo
# Top-level weights that are parts or add-ons, not a whole model: a checkpoint is never one of
# these when any other candidate exists.
_NOT_A_CHECKPOINT = ("vae", "lora", "controlnet", "embedding", "text_encoder", "clip", "t5", "adapter")
_SMALL_FILE = 16 << 20  # top-level non-weight files (configs, model cards) come along below this
# ComfyUI's model folders, as Comfy-Org's repackaged repos (Wan, Qwen-Image, HunyuanVideo, ...)
# publish a model made of several files: `split_files/diffusion_models/`, `vae/`, `text_encoders/`.
_SPLIT_FOLDERS = {"diffusion_models": "model", "unet": "model", "vae": "vae", "text_encoders": "encoder",
                  "clip": "encoder"}
# Words of a file name that say its precision or format, not which model it is: two text encoder
# files that differ only by these are the same encoder in two precisions.
_PRECISION_WORDS = {"fp16", "fp32", "bf16", "fp8", "e4m3fn", "e5m2", "scaled", "fp4", "nvfp4", "mixed", "gguf"}


@dataclass(frozen=True)
class DiffusionChoice:
    """The files a pull of a diffusion repo takes, and what to tell the user about the pick."""

    files: list[RemoteFile]
    checkpoint: str  # the single-file checkpoint taken, or model_index.json for a pipeline
    note: str = ""


def _top_level(f: RemoteFile) -> bool:
    return "/" not in f.path


def _is_weights(path: str) -> bool:
    return path.lower().endswith(CHECKPOINT_SUFFIXES + (".bin", ".pt", ".pth", ".onnx", ".gguf"))


def _tokens(path: str) -> set[str]:
    stem = path.rsplit("/", 1)[-1].lower()
    for suffix in CHECKPOINT_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return {t for t in re.split(r"[-_.\s]+", stem) if t} | {stem}


def is_diffusion_repo(snap: RepoSnapshot) -> bool:
    """A diffusers pipeline repo, or one whose top level holds checkpoints and no transformers or
    CTranslate2 config (an LLM, embedding or whisper repo always has a config.json)."""
    paths = {f.path for f in snap.files}
    if PIPELINE_INDEX in paths or _split_groups(snap):
        return True
    return "config.json" not in paths and any(
        _top_level(f) and f.path.lower().endswith(CHECKPOINT_SUFFIXES) for f in snap.files)


def _split_groups(snap: RepoSnapshot) -> dict[str, list[RemoteFile]]:
    """The weight files of ComfyUI's model folders, by what they hold ("model", "vae",
    "encoder"); empty for a repo in another layout (a diffusers pipeline has model_index.json)."""
    if any(f.path == PIPELINE_INDEX for f in snap.files):
        return {}
    groups: dict[str, list[RemoteFile]] = {}
    for f in snap.files:
        segments = f.path.split("/")
        kind = _SPLIT_FOLDERS.get(segments[-2].lower()) if len(segments) >= 2 else None
        if kind and f.path.lower().endswith((".safetensors", ".gguf")):
            groups.setdefault(kind, []).append(f)
    return groups if "model" in groups else {}


def split_parts(snap: RepoSnapshot, files: list[RemoteFile]) -> list[RemoteFile]:
    """Of the files a pull takes, the further files of a model in ComfyUI's folders (its VAE and
    text encoders), which register with the diffusion model as one model (core/diffusion_parts.py)."""
    groups = _split_groups(snap)
    parts = {f.path for kind in ("vae", "encoder") for f in groups.get(kind, [])}
    return [f for f in files if f.path in parts]


def _encoder_family(path: str) -> str:
    stem = path.rsplit("/", 1)[-1].lower().removesuffix(".safetensors").removesuffix(".gguf")
    return "_".join(t for t in re.split(r"[-_.\s]+", stem) if t and t not in _PRECISION_WORDS)


def _choose_split(snap: RepoSnapshot, groups: dict[str, list[RemoteFile]], tag: str) -> DiffusionChoice:
    """One diffusion model, one VAE and one file of each text encoder from ComfyUI's folders:
    in each, the file the tag names (a word of its name) where one does, else the smallest."""
    tag = tag.lower()
    if tag and not any(tag in _tokens(f.path) for files in groups.values() for f in files):
        names = ", ".join(sorted(f.path for f in groups["model"]))
        raise NotFound(f"no file of {snap.repo_id} is named with '{tag}'; its diffusion models: {names}")

    def pick(files: list[RemoteFile]) -> RemoteFile:
        matching = [f for f in files if tag and tag in _tokens(f.path)]
        return min(matching or files, key=lambda f: f.size)

    model = pick(groups["model"])
    picked = [model] + ([pick(groups["vae"])] if "vae" in groups else [])
    families: dict[str, list[RemoteFile]] = {}
    for f in groups.get("encoder", []):
        families.setdefault(_encoder_family(f.path), []).append(f)
    picked += [pick(files) for _, files in sorted(families.items())]
    others = sorted(f.path for files in groups.values() for f in files if f not in picked)
    note = f"picked {', '.join(f.path for f in picked)}" + (
        f" of {len(others) + len(picked)} files; name others with :TAG (a word of their names) or --include"
        if others else "")
    small = [f for f in snap.files if _top_level(f) and not _is_weights(f.path) and f.size < _SMALL_FILE]
    return DiffusionChoice(files=[*picked, *small], checkpoint=model.path, note=note)


def choose(snap: RepoSnapshot, tag: str) -> DiffusionChoice:
    """One single-file checkpoint of `snap` and its top-level small files, else (a pipeline-only
    repo) one weight file per pipeline component. `tag` (from `:TAG`) picks the checkpoint whose
    name has it as a word or is it, or the pipeline's variant; empty: the smallest. Raises
    NotFound for a tag nothing has, InvalidArgument for a repo with nothing we can run."""
    top = [f for f in snap.files if _top_level(f)]
    candidates = [f for f in top if f.path.lower().endswith(".safetensors")]
    groups = _split_groups(snap)
    if groups and not candidates:
        return _choose_split(snap, groups, tag)
    whole = [f for f in candidates if not _tokens(f.path) & set(_NOT_A_CHECKPOINT)]
    pipeline = diffusion_pipeline.is_pipeline(f.path for f in snap.files)
    # In a pipeline repo a top-level add-on (a VAE, a LoRA) is no checkpoint: the pipeline is.
    candidates = whole or ([] if pipeline else candidates)
    if pipeline and tag and candidates and not any(tag.lower() in _tokens(f.path) for f in candidates):
        # A tag no single file has may be the pipeline's variant (a repo shipping both layouts).
        sizes = {f.path: f.size for f in snap.files}
        if tag.lower() in diffusion_pipeline.variants(sizes):
            candidates = []
    if not candidates and pipeline:
        paths, note = diffusion_pipeline.choose({f.path: f.size for f in snap.files}, snap.repo_id, tag)
        wanted = set(paths)
        return DiffusionChoice(files=[f for f in snap.files if f.path in wanted], checkpoint=PIPELINE_INDEX,
                               note=note)
    if not candidates and any(f.path.lower().endswith(".ckpt") for f in top):
        # A .ckpt is a pickle, which can run code when read: the store takes safetensors only.
        raise InvalidArgument(f"{snap.repo_id} ships its checkpoints as .ckpt (Python pickles, which can run "
                              "code when loaded) and none as .safetensors; this version takes safetensors only")
    if not candidates:
        raise InvalidArgument(f"{snap.repo_id} holds no .safetensors checkpoint and no diffusers pipeline "
                              f"({PIPELINE_INDEX}); name its files with --include")
    names = ", ".join(sorted(f.path for f in candidates))
    note = ""
    if tag:
        matching = [f for f in candidates if tag.lower() in _tokens(f.path)]
        if not matching:
            variants = ""
            if pipeline:  # a repo shipping both layouts: the pipeline's variants are choices too
                choices = diffusion_pipeline.variants({f.path: f.size for f in snap.files})
                variants = f"; or the diffusers pipeline's variants: {', '.join(sorted(choices))}" if choices else ""
            raise NotFound(f"no checkpoint of {snap.repo_id} is named with '{tag}'; available: {names}{variants}")
        picked = min(matching, key=lambda f: f.size)
    else:
        picked = min(candidates, key=lambda f: f.size)
        if len(candidates) > 1:
            note = f"picked {picked.path} of {names}; name another with :TAG (a word of its name)"
    small = [f for f in top if f is not picked and not _is_weights(f.path) and f.size < _SMALL_FILE]
    return DiffusionChoice(files=[picked, *small], checkpoint=picked.path, note=note)
