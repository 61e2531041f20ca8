"""A pull from the hub into the store: pick files, reuse what is already on disk, download the
rest in parallel, lay them out as the Hugging Face cache does, register the model.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import diffusion_files, diffusion_parts, diffusion_pipeline, hfcache
from ohmygpu.core.diffusion import diffusion_info
from ohmygpu.core.download import RateLimiter, check_space, fetch
from ohmygpu.core.errors import InvalidArgument, NotFound
from ohmygpu.core.gguf import read_model_header
from ohmygpu.core.hub import HubClient, RemoteFile, RepoSnapshot
from ohmygpu.core.index_db import timestamp
from ohmygpu.core.kinds import classify_files, format_of
from ohmygpu.core.transformers_info import fill_record
from ohmygpu.core.names import (
    is_later_shard,
    is_main_gguf,
    is_projector,
    parse_model_name,
    parse_part_source,
    parse_source,
    quant_of,
)
from ohmygpu.core.safetensors_header import read_header
from ohmygpu.core.speech_files import speech_info
from ohmygpu.core.store import ModelStore, describe_gguf

log = logging.getLogger("ohmygpu.pull")
PREFERRED_QUANTS = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q8_0")


@dataclass
class FileState:
    filename: str
    total: int
    sha256: str = ""
    completed: int = 0
    state: str = "queued"


@dataclass
class PullProgress:
    """What a pull has done so far; `changed` is called after every update."""

    changed: Callable[[], None] = lambda: None
    files: dict[str, FileState] = field(default_factory=dict)
    downloaded: int = 0
    stage: str = "pulling manifest"
    note: str = ""
    started: float = field(default_factory=time.monotonic)
    _window: list[tuple[float, int]] = field(default_factory=list)

    def add_bytes(self, n: int) -> None:
        self.downloaded += n
        now = time.monotonic()
        self._window.append((now, self.downloaded))
        while self._window and now - self._window[0][0] > 3.0:
            self._window.pop(0)

    @property
    def rate(self) -> float:
        if len(self._window) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._window[0], self._window[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def completed(self) -> int:
        return sum(f.completed for f in self.files.values())

    @property
    def total(self) -> int:
        return sum(f.total for f in self.files.values())


def select_files(snap: RepoSnapshot, *, quant: str, include: list[str], exclude: list[str],
                 progress: PullProgress | None = None) -> list[RemoteFile]:
    """The files a pull takes. For GGUF repos, one quantization (the asked one, else a sensible
    default) plus the small non-weight files; for diffusion repos one single-file checkpoint (the
    one :TAG names, else the smallest: core/diffusion_files.py); raises NotFound naming the choices."""
    files = list(snap.files)
    if include:
        files = [f for f in files if any(fnmatch.fnmatch(f.path, p) for p in include)]
    if exclude:
        files = [f for f in files if not any(fnmatch.fnmatch(f.path, p) for p in exclude)]
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    if ggufs and not include:
        # One quantization: all its parts when split; projectors (mmproj) only with --include,
        # as no runtime here uses them yet.
        quants: dict[str, list[RemoteFile]] = {}
        for f in ggufs:
            if not is_projector(f.path):
                quants.setdefault(quant_of(f.path) or f.path, []).append(f)
        if not quants:
            raise NotFound(f"{snap.repo_id} has only projector GGUFs (mmproj), no model weights")
        choice = ""
        if quant:
            choice = next((q for q in quants if q.upper() == quant.upper()), "")
            if not choice:
                raise NotFound(f"no {quant} file in {snap.repo_id}; available: {', '.join(sorted(quants))}")
        elif len(quants) == 1:
            choice = next(iter(quants))
        else:
            choice = next((q for q in PREFERRED_QUANTS if q in quants), "") or min(
                quants, key=lambda q: sum(f.size for f in quants[q]))
            note = f"picked {choice} of {', '.join(sorted(quants))}; name another with :QUANT"
            log.info("%s: %s", snap.repo_id, note)
            if progress is not None:
                progress.note = note
        weights = {f.path for f in ggufs}
        files = [f for f in files if f.path not in weights or f in quants[choice]]
    elif not include and diffusion_files.is_diffusion_repo(snap):
        # One single-file checkpoint, not every variant and the pipeline folders beside it.
        choice = diffusion_files.choose(snap, quant)
        if choice.note:
            log.info("%s: %s", snap.repo_id, choice.note)
            if progress is not None:
                progress.note = choice.note
        files = [f for f in files if f in choice.files]
    elif quant:
        raise NotFound(f"{snap.repo_id} has no GGUF files, so no quantization '{quant}' to pick")
    if not files:
        raise NotFound(f"no files of {snap.repo_id} match the include/exclude patterns")
    return files


@dataclass(frozen=True)
class _Wanted:
    """One file a pull downloads: from the pulled repo, or a part's from another repo."""

    repo_id: str
    revision: str
    snap: RepoSnapshot
    file: RemoteFile
    key: str  # its name in the progress and the record: the path, or "org/repo/path" for a part


def part_file(snap: RepoSnapshot, path: str, quant: str) -> RemoteFile:
    """The one weight file a part source names: `path`, or the repo's only weight file (its
    QUANT GGUF). Raises NotFound or InvalidArgument naming what to write instead."""
    weights = (".safetensors", ".gguf")
    if path:
        found = next((f for f in snap.files if f.path == path), None)
        if found is None:
            raise NotFound(f"{snap.repo_id} has no file {path}")
        if not path.lower().endswith(weights):
            raise InvalidArgument(f"{snap.repo_id}/{path} is not a .safetensors or .gguf file", param="parts")
        return found
    if any(f.path.lower().endswith(".gguf") for f in snap.files):  # a GGUF repo: one quantization
        chosen = [f for f in select_files(snap, quant=quant, include=[], exclude=[])
                  if f.path.lower().endswith(".gguf") and not is_later_shard(f.path)]
    elif quant:
        raise NotFound(f"{snap.repo_id} has no GGUF files, so no quantization '{quant}' to pick")
    else:  # every weight file is a candidate: a text encoder repo holds several (clip_l, t5xxl, ...)
        chosen = [f for f in snap.files if f.path.lower().endswith(weights)]
    if len(chosen) != 1:
        names = ", ".join(sorted(f.path for f in chosen)) or "none"
        raise InvalidArgument(f"{snap.repo_id} holds {len(chosen)} weight files to choose from ({names}); "
                              f"name one as {snap.repo_id}/FILE", param="parts")
    return chosen[0]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = hfcache.private_name(dst, ".omg-link")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)  # another filesystem: bytes twice, but correct
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; a copy that failed leaves nothing


async def pull(
    source: str,
    *,
    store: ModelStore,
    hub: HubClient,
    hf_cache: Path,
    progress: PullProgress,
    name: str = "",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    max_rate: int = 0,
    parallel: int = 4,
    cancelled: asyncio.Event | None = None,
    parts: list[str] | None = None,
) -> assets_pb2.InstallRecord:
    """Pull `source` and register it as `name` (default: the source). With `parts` (see
    names.parse_part_source), `source` is a diffusion model and each part one further file of it
    (its VAE, a text encoder) from any repo, the whole registered as one model. Raises our errors."""
    repo_id, revision, quant = parse_source(source)
    default = source.strip()
    if "://" in default:  # a web link names the model as the hub's short form would
        default = f"hf.co/{repo_id}" + (f"@{revision}" if revision else "") + (f":{quant}" if quant else "")
    model_name = parse_model_name(name or default)
    snap = await hub.snapshot(repo_id, revision)
    files = select_files(snap, quant=quant, include=include or [], exclude=exclude or [], progress=progress)
    # A model in ComfyUI's folders: its VAE and text encoders register as parts of the diffusion model.
    own_parts = diffusion_files.split_parts(snap, files) if not include else []
    files = [f for f in files if f not in own_parts]
    wanted = [_Wanted(repo_id, revision, snap, f, f.path) for f in files + own_parts]
    if parts and sum(f.path.lower().endswith((".safetensors", ".gguf")) for f in files) != 1:
        # Checked again on the files' tensors once downloaded (_compose); this spares the download.
        raise InvalidArgument(f"{repo_id} does not pull as one diffusion model file, so it takes no --part: "
                              "a :TAG or --include picks its file", param="parts")
    for source_of_part in parts or []:
        p_repo, p_revision, p_quant, p_path = parse_part_source(source_of_part)
        p_snap = await hub.snapshot(p_repo, p_revision)
        f = part_file(p_snap, p_path, p_quant)
        wanted.append(_Wanted(p_repo, p_revision, p_snap, f, f"{p_repo}/{f.path}"))
    if len({w.key for w in wanted}) != len(wanted):
        raise InvalidArgument("a part names a file the pull already takes", param="parts")
    for w in wanted:
        f = w.file
        progress.files[w.key] = FileState(w.key, f.size, f"sha256:{f.sha256}" if f.sha256 else "")
    progress.stage = "pulling"
    progress.changed()
    known = {a.sha256: Path(a.local_path) for r in await asyncio.to_thread(store.list) for a in r.artifacts
             if a.local_path}
    missing = 0
    for w in wanted:
        f = w.file
        blob = hfcache.blob_path(hf_cache, w.repo_id, f.etag)
        if not blob.exists():
            other = known.get(f"sha256:{f.sha256}") if f.sha256 else None
            if other is not None and other.is_file() and other.stat().st_size == f.size:
                # Same bytes already in the store (a local add, another repo): link, don't download.
                await asyncio.to_thread(_link_or_copy, other.resolve(), blob)
            else:
                try:  # another daemon sharing the cache may publish it meanwhile
                    done = hfcache.partial_path(hf_cache, w.repo_id, f.etag).stat().st_size
                except FileNotFoundError:
                    done = 0
                missing += f.size - done
    check_space(hfcache.repo_folder(hf_cache, repo_id), missing)
    limiter = RateLimiter(max_rate) if max_rate else None
    gate = asyncio.Semaphore(parallel)
    digests: dict[str, str] = {}

    async def one(w: _Wanted) -> None:
        f = w.file
        state = progress.files[w.key]
        async with gate:
            state.state = "downloading"

            def on_bytes(done: int, new: int) -> None:
                state.completed = done
                if new:
                    progress.add_bytes(new)
                progress.changed()

            result = await fetch(hub, hub.file_url(w.repo_id, w.snap.commit, f.path), f,
                                 blob=hfcache.blob_path(hf_cache, w.repo_id, f.etag),
                                 partial=hfcache.partial_path(hf_cache, w.repo_id, f.etag),
                                 progress=on_bytes, limiter=limiter, cancelled=cancelled)
            digests[w.key] = result.sha256
            state.sha256 = result.sha256
            state.state = "reused" if result.reused else "done"
            state.completed = f.size
            hfcache.link_snapshot(hf_cache, w.repo_id, w.snap.commit, f.path, f.etag)
            progress.changed()

    await asyncio.gather(*(one(w) for w in wanted))
    for repo, rev, commit in {(w.repo_id, w.revision, w.snap.commit) for w in wanted}:
        hfcache.write_ref(hf_cache, repo, rev or "main", commit)
    progress.stage = "verifying sha256 digest"
    progress.changed()
    extra = wanted[len(files):]  # the parts, after the pulled repo's other files
    return await asyncio.to_thread(_register, store, model_name, repo_id, revision, snap, files, digests, hf_cache,
                                   extra)


def _register(store: ModelStore, model_name: str, repo_id: str, revision: str, snap: RepoSnapshot,
              files: list[RemoteFile], digests: dict[str, str], hf_cache: Path,
              parts: list[_Wanted] | None = None) -> assets_pb2.InstallRecord:
    record = assets_pb2.InstallRecord(
        name=model_name,
        ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_HF, repo=repo_id),
        revision=assets_pb2.Revision(requested=revision, commit=snap.commit),
    )
    record.created_at.CopyFrom(timestamp())
    paths: dict[str, Path] = {}
    for f in files:
        path = hfcache.snapshot_path(hf_cache, repo_id, snap.commit, f.path)
        paths[f.path] = path
        record.artifacts.add(filename=f.path, size=f.size, sha256=digests[f.path], etag=f.etag,
                             format=format_of(f.path), local_path=str(path))
        record.size_bytes += f.size
    gguf = next((f.path for f in files if f.path.lower().endswith(".gguf") and is_main_gguf(f.path)), "")
    if gguf:
        describe_gguf(record, read_model_header(paths[gguf], display_name=gguf), paths[gguf])
    elif diffusion_pipeline.holds_pipeline(paths):
        diffusion_pipeline.describe(record, paths)
    else:
        record.kind, record.format, main = classify_files(paths)
        if not main:
            raise InvalidArgument(f"{repo_id} has no model weights this version knows (GGUF, a CTranslate2 "
                                  "model.bin, safetensors, a Piper or Kokoro ONNX voice)")
        if record.kind == assets_pb2.MODEL_KIND_TTS:
            record.speech.CopyFrom(speech_info(paths))
        if record.kind == assets_pb2.MODEL_KIND_UNSPECIFIED and main.lower().endswith(".safetensors"):
            # No config.json names an architecture: a single-file diffusion checkpoint, by its tensors.
            info = diffusion_info(read_header(paths[main]))
            if info is not None:
                record.kind = assets_pb2.MODEL_KIND_IMAGE
                record.diffusion.CopyFrom(info)
        for artifact in record.artifacts:  # configs and tokenizers stay OTHER; the weights get the format
            artifact.format = record.format if artifact.filename == main else \
                assets_pb2.ARTIFACT_FORMAT_OTHER
        if "config.json" in paths:  # a transformers model: its kind and TransformersInfo
            fill_record(record, paths["config.json"].parent, paths)
    if parts:
        _compose(record, parts, digests, hf_cache)
    record.ref.kind = record.kind
    store.put(record)
    return record


def _compose(record: assets_pb2.InstallRecord, parts: list[_Wanted], digests: dict[str, str],
             hf_cache: Path) -> None:
    """The pulled diffusion model and its parts as one model (core/diffusion_parts.py)."""
    weights = [a for a in record.artifacts if a.format in (assets_pb2.ARTIFACT_FORMAT_GGUF,
                                                           assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)]
    if record.kind != assets_pb2.MODEL_KIND_IMAGE or not record.diffusion.has_denoiser or len(weights) != 1:
        raise InvalidArgument(f"{record.ref.repo} is not one diffusion model file, so it takes no --part: "
                              "pull the diffusion model's repo (a :TAG or --include picks its file)", param="parts")
    files = []
    for w in parts:
        path = hfcache.snapshot_path(hf_cache, w.repo_id, w.snap.commit, w.file.path)
        files.append((path, assets_pb2.Artifact(filename=w.key, size=w.file.size, sha256=digests[w.key],
                                                 etag=w.file.etag, local_path=str(path))))
    main = Path(weights[0].local_path)
    diffusion_parts.compose(record, main, diffusion_parts.read_part(main), files)
