"""Diffusion models in the diffusers pipeline layout, as most hub repos ship them.

A pipeline repo has a `model_index.json` at the top and one folder per component: `unet/`
(`diffusion_pytorch_model.safetensors`), `vae/` (the same name), `text_encoder/` and, for SDXL,
`text_encoder_2/` (`model.safetensors`), beside `tokenizer*/`, `scheduler/` and configs. Each
weight file often comes in variants named in the middle: `.fp16.safetensors`, `.non_ema.`, and
again as `.bin` pickles, ONNX or Flax copies in other folders. stable-diffusion.cpp runs the UNet
pipelines (SD 1.x, 2.x, XL) from such a folder (model.cpp init_from_diffusers_file) but reads
each component under its plain name only, so a variant is shown to it under that name by the
worker (runtimes/sdcpp/pipeline_view.py).

What this module decides, from file names alone: which weight file of each component a pull or
an `omg model add` takes (the variant the `:TAG` names, else the smallest: fp16 where there is
one), which small files come along, and what a pipeline it cannot run looks like (a diffusion
transformer under `transformer/`, as FLUX and SD3 pipelines have; sharded weights) so that it is
refused before anything is downloaded. From the chosen files' headers it tells the family.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.diffusion import NATIVE_SIZE
from ohmygpu.core.errors import InvalidArgument, NotFound
from ohmygpu.core.safetensors_header import TensorEntry, read_header

PIPELINE_INDEX = "model_index.json"
# component folder -> the stem of its weight file, as diffusers and sd.cpp name it
COMPONENTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
              "text_encoder": "model", "text_encoder_2": "model"}
REQUIRED = ("unet", "vae", "text_encoder")
# Folders of a pipeline whose small files (configs, tokenizer vocabularies) come along.
_SMALL_FILES_FROM = ("", "unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
_SMALL_FILE = 16 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".msgpack", ".gguf", ".onnx_data", ".pb")
_SHARD = re.compile(r"-\d{5}-of-\d{5}")
PLAIN = "plain"  # the :TAG that names the un-suffixed files
_CLIP_WIDTH_FAMILY = {768: "sd1", 1024: "sd2"}  # the text encoder's width, as sd.cpp tells SD 1 from 2


@dataclass(frozen=True)
class WeightFile:
    component: str
    variant: str  # "" for the plain name, "fp16", "non_ema", ...
    path: str


def is_pipeline(paths: Iterable[str]) -> bool:
    """Whether a repo's file list is a diffusers pipeline (a single-file repo may carry its
    model_index.json too: what a pull took is told by holds_pipeline)."""
    return PIPELINE_INDEX in set(paths)


def holds_pipeline(paths: Iterable[str]) -> bool:
    """Whether registered files are a pipeline: its index and a UNet's weights."""
    paths = list(paths)
    return is_pipeline(paths) and "unet" in components(paths)


def weight_file(path: str) -> WeightFile | None:
    """`unet/diffusion_pytorch_model.fp16.safetensors` -> (unet, fp16); None for anything that
    is not a component's safetensors weights (sharded parts included: see choose_weights)."""
    folder, _, name = path.rpartition("/")
    stem = COMPONENTS.get(folder)
    if stem is None or not name.startswith(stem) or not name.endswith(".safetensors"):
        return None
    middle = name[len(stem):-len(".safetensors")]
    if middle and not middle.startswith("."):
        return WeightFile(folder, "sharded" if _SHARD.search(middle) else middle, path)
    variant = middle.lstrip(".")
    # diffusers names a sharded variant `NAME.fp16-00001-of-00002.safetensors`
    return WeightFile(folder, "sharded" if _SHARD.search(variant) else variant, path)


def variants(paths: Iterable[str]) -> set[str]:
    """The variant names (lowercase) the components' weight files come in, the plain one aside."""
    return {w.variant.lower() for p in paths if (w := weight_file(p)) is not None} - {"", "sharded"}


def choose_weights(sizes: Mapping[str, int], source: str, tag: str = "") -> dict[str, str]:
    """The weight file of each component (folder -> path) among `sizes` (path -> bytes: a repo's
    file list or a folder's). `tag` names a variant ("fp16", "non_ema", "plain" for the
    un-suffixed files); without one, the smallest, ties to the plain name. Raises InvalidArgument for a pipeline
    stable-diffusion.cpp cannot run, NotFound for a variant no component has."""
    paths = list(sizes)
    if not any(p.startswith("unet/") for p in paths) and any(p.startswith("transformer/") for p in paths):
        raise InvalidArgument(
            f"{source} is a diffusers pipeline with a diffusion transformer (transformer/: FLUX, SD3 and "
            "their kin); stable-diffusion.cpp runs only UNet pipelines (SD 1.x, 2.x, XL) in this layout: "
            "pull a single-file or GGUF release of that model")
    found: dict[str, list[WeightFile]] = {}
    for p in paths:
        w = weight_file(p)
        if w is not None:
            found.setdefault(w.component, []).append(w)
    sharded = sorted(c for c, ws in found.items() if any(w.variant == "sharded" for w in ws)
                     and all(w.variant == "sharded" for w in ws))
    if sharded:
        raise InvalidArgument(f"{source} splits its {', '.join(sharded)} weights into shards; "
                              "stable-diffusion.cpp reads one file per component")
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        others = sorted({p.rsplit("/", 1)[-1] for p in paths if p.split("/", 1)[0] in missing
                         and p.lower().endswith(_WEIGHT_SUFFIXES)})
        hint = f" (it has {', '.join(others)}: pickles or other formats, never loaded)" if others else ""
        raise InvalidArgument(f"{source} is a diffusers pipeline without safetensors weights for its "
                              f"{', '.join(missing)}{hint}")
    want = tag.lower()
    have = sorted(variants(paths))
    if want and want != PLAIN and want not in have:
        raise NotFound(f"no component of {source} has a '{tag}' variant; available: "
                       f"{', '.join([*have, PLAIN])}")
    chosen: dict[str, str] = {}
    for component, ws in found.items():
        ws = [w for w in ws if w.variant != "sharded"]
        if want:
            # The named variant; a component without it takes its plain file, as diffusers does.
            target = "" if want == PLAIN else want
            pick = next((w for w in ws if w.variant.lower() == target), None) or next(
                (w for w in ws if w.variant == ""), None) or min(ws, key=lambda w: sizes[w.path])
        else:
            # The smallest (fp16 where there is one); never non-EMA weights unless nothing else.
            pick = min(ws, key=lambda w: (w.variant == "non_ema", sizes[w.path], w.variant != ""))
        chosen[component] = pick.path
    return dict(sorted(chosen.items(), key=lambda kv: list(COMPONENTS).index(kv[0])))


def small_files(sizes: Mapping[str, int]) -> list[str]:
    """The configs, tokenizer and scheduler files a pipeline carries: small, not weights, in the
    top folder or a component's (never safety_checker/ or feature_extractor/, unused here)."""
    return sorted(p for p, size in sizes.items()
                  if p.rpartition("/")[0] in _SMALL_FILES_FROM and size < _SMALL_FILE
                  and not p.lower().endswith(_WEIGHT_SUFFIXES))


def choose(sizes: Mapping[str, int], source: str, tag: str = "") -> tuple[list[str], str]:
    """(paths a pull or add takes, a note on the pick) for the pipeline in `sizes`."""
    weights = choose_weights(sizes, source, tag)
    taken = {weight_file(p).variant for p in weights.values()}
    others = {w.variant for p in sizes if (w := weight_file(p)) is not None} - taken - {"sharded"}
    note = ""
    if others and not tag:
        shown = sorted(v or PLAIN for v in others)
        note = f"picked {', '.join(weights.values())}; other variants: {', '.join(shown)}; name one with :TAG"
    return [*weights.values(), *small_files(sizes)], note


def components(paths: Iterable[str]) -> dict[str, str]:
    """component -> weight path among a registered pipeline's artifacts (one per component), in
    COMPONENTS' order."""
    out: dict[str, str] = {}
    for p in paths:
        w = weight_file(p)
        if w is not None and w.variant != "sharded":
            out.setdefault(w.component, p)
    return {c: out[c] for c in COMPONENTS if c in out}  # the UNet first


def pipeline_info(headers: Mapping[str, Mapping[str, TensorEntry]]) -> assets_pb2.DiffusionInfo:
    """What a pipeline holds, from each chosen component's header (component -> tensors). The
    family is told as sd.cpp tells it: a second text encoder (or the UNet's SDXL add_embedding)
    is SDXL, else the first encoder's width says SD 1.x (768) or 2.x (1024)."""
    unet = headers.get("unet", {})
    te = headers.get("text_encoder", {})
    if "text_encoder_2" in headers or "add_embedding.linear_1.weight" in unet:
        family = "sdxl"
    else:
        embedding = te.get("text_model.embeddings.token_embedding.weight")
        family = _CLIP_WIDTH_FAMILY.get(embedding.shape[-1] if embedding and embedding.shape else 0, "unknown")
    has_text = "text_encoder" in headers and (family != "sdxl" or "text_encoder_2" in headers)
    tensors = [t for h in headers.values() for t in h.values()]
    return assets_pb2.DiffusionInfo(
        family=family, has_denoiser="unet" in headers, has_vae="vae" in headers, has_text_encoder=has_text,
        native_size=NATIVE_SIZE.get(family, 512), parameters=sum(t.count for t in tensors),
        dtypes=sorted({t.dtype for t in tensors}))


def describe(record: assets_pb2.InstallRecord, paths: Mapping[str, Path]) -> None:
    """Make `record` (its artifacts added, named by their paths in the pipeline) an image model:
    kind, format, DiffusionInfo from the chosen weights' headers, each artifact's format."""
    weights = components(paths)
    headers = {component: read_header(paths[p]) for component, p in weights.items()}
    record.kind = assets_pb2.MODEL_KIND_IMAGE
    record.format = assets_pb2.ARTIFACT_FORMAT_SAFETENSORS
    record.diffusion.CopyFrom(pipeline_info(headers))
    order = {p: i for i, p in enumerate(weights.values())}  # the UNet first: the model's digest is its
    artifacts = []
    for artifact in record.artifacts:
        copy = assets_pb2.Artifact()
        copy.CopyFrom(artifact)
        copy.format = assets_pb2.ARTIFACT_FORMAT_SAFETENSORS if copy.filename in order \
            else assets_pb2.ARTIFACT_FORMAT_OTHER
        artifacts.append(copy)
    artifacts.sort(key=lambda a: order.get(a.filename, len(order)))
    del record.artifacts[:]
    record.artifacts.extend(artifacts)


def local_files(folder: Path, limit: int) -> dict[str, Path]:
    """The files of a pipeline folder on disk that `omg model add` registers (path in the
    pipeline -> file), chosen as a pull would; raises InvalidArgument as choose does."""
    sizes: dict[str, int] = {}
    files: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            if len(files) >= limit:
                raise InvalidArgument(f"{folder.name} holds more than {limit} files")
            sizes[rel], files[rel] = p.stat().st_size, p
    paths, _ = choose(sizes, folder.name)
    return {rel: files[rel] for rel in paths}
