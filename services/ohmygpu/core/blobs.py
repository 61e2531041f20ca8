"""Uploaded blobs (Ollama's /api/blobs) and the models made from them.

An upload is kept in the HF cache, where the store keeps what it pulls, as one more repository
folder, `models--omg--uploads`: `blobs/<sha256 hex>`, written to a private partial file that
is hashed while it is written and renamed into place only when the digest the client named
matches (a mismatch keeps nothing). A model made from a blob (`register`) links
`snapshots/<hex>/<file name>` to it, as a pull links its files, so the store's rm, gc, du and
verify treat it like a pulled file: `omg model rm` of the last model using it deletes it, and
`omg model gc` deletes a blob no model was made from (as Ollama prunes unused blobs). A partial
is flock'd while it is written (`<partial>.lock`), so gc leaves an upload in progress alone.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import hfcache
from ohmygpu.core.digests import hex_of, parse_digest
from ohmygpu.core.errors import (
    InsufficientSpace,
    InvalidArgument,
    InvalidModelFile,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from ohmygpu.core.gguf import read_model_header
from ohmygpu.core.gguf_check import check_loadable
from ohmygpu.core.index_db import timestamp
from ohmygpu.core.names import parse_model_name, parse_repo_path
from ohmygpu.core.store import gguf_info, kind_of

REPO = "omg/uploads"  # HF_HUB_CACHE/models--omg--uploads
_WRITE_CHUNK = 4 << 20  # bytes gathered before one write-and-hash off the event loop


def blob_file(hf_cache: Path, digest: str) -> Path:
    """Where the blob `digest` ("sha256:<hex>", checked) is kept."""
    return hfcache.blob_path(hf_cache, REPO, hex_of(digest))


def exists(hf_cache: Path, digest: str) -> bool:
    """Whether blob `digest` was uploaded (and is still kept); raises InvalidDigest."""
    path = blob_file(hf_cache, digest)
    return not path.is_symlink() and path.is_file()


class _Partial:
    """A private partial file next to the blob, flock'd (so gc leaves it) while it is written."""

    def __init__(self, blob: Path) -> None:
        self.path = blob.with_name(f"{blob.name}.{uuid.uuid4().hex[:12]}{hfcache.PARTIAL_SUFFIX}")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def publish(self, blob: Path) -> None:
        os.fsync(self.fd)
        os.chmod(self.path, 0o644)
        os.replace(self.path, blob)  # visible only now, whole and verified

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)  # gone after publish; the upload's remains otherwise
        self.lock_path.unlink(missing_ok=True)
        os.close(self.lock)


async def receive(hf_cache: Path, digest: str, chunks: AsyncIterator[bytes], *, limit: int,
                  declared: int | None = None) -> int:
    """Store the bytes of `chunks` as blob `digest`; returns their size. Raises InvalidDigest,
    InvalidArgument (the bytes do not hash to `digest`: nothing is kept), PayloadTooLarge (past
    `limit` bytes, OMG_MAX_BLOB_GB), InsufficientSpace and Unavailable (disk errors). An upload
    cut off (the client gone) keeps nothing either."""
    blob = blob_file(hf_cache, digest)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the blob of {declared} bytes is over the {limit} byte limit (OMG_MAX_BLOB_GB)")
    try:
        blob.parent.mkdir(parents=True, exist_ok=True)
        if declared:
            _check_space(blob.parent, declared)
        partial = await asyncio.to_thread(_Partial, blob)
    except OSError as e:
        raise _disk_error(e) from None
    try:
        pending: list[bytes] = []
        held = 0
        async for chunk in chunks:
            if partial.size + held + len(chunk) > limit:
                raise PayloadTooLarge(f"the blob is over the {limit} byte limit (OMG_MAX_BLOB_GB)")
            pending.append(chunk)
            held += len(chunk)
            if held >= _WRITE_CHUNK:
                await asyncio.to_thread(partial.write, b"".join(pending))
                pending, held = [], 0
        if pending:
            await asyncio.to_thread(partial.write, b"".join(pending))
        got = "sha256:" + partial.sha256.hexdigest()
        if got != digest:
            raise InvalidArgument(f"the uploaded bytes hash to {got}, not {digest}; nothing was kept",
                                  param="digest")
        await asyncio.to_thread(partial.publish, blob)
        return partial.size
    except OSError as e:
        raise _disk_error(e) from None
    finally:
        await asyncio.to_thread(partial.close)


def _check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise InsufficientSpace(f"the blob needs {needed} bytes but the disk of the model cache (HF_HUB_CACHE) "
                                f"has {free} free")


def _disk_error(e: OSError) -> InsufficientSpace | Unavailable:
    """A write error as the client may see it: no path (messages reach remote clients)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace("the disk of the model cache (HF_HUB_CACHE) is full; the upload was not kept")
    return Unavailable(f"cannot write the blob into the model cache (HF_HUB_CACHE): {e.strerror or 'I/O error'}")


def upload_record(hf_cache: Path, name: str, files: dict[str, str]) -> assets_pb2.InstallRecord:
    """The record of model `name` made from uploaded files (file name -> digest): one GGUF file,
    checked as `omg model add` checks one (its header, that it can load). Nothing is written: the
    caller links it with `link` once the record may be stored. Raises InvalidArgument naming
    `files`, InvalidDigest, InvalidName, NotFound (a blob not uploaded), InvalidModelFile and
    UnloadableModel (not a loadable GGUF)."""
    name = parse_model_name(name)
    if len(files) != 1:
        raise InvalidArgument("'files' must name exactly one GGUF file (a model split in parts, an "
                              "adapter or a projector cannot be made into a model here)", param="files")
    (filename, digest), = files.items()
    if "/" in filename or not filename.lower().endswith(".gguf"):
        raise InvalidArgument(f"'files' names {filename[:80]!r}: only a GGUF file (a name ending in .gguf, "
                              "no folders) can be made into a model; convert safetensors with llama.cpp's "
                              "convert_hf_to_gguf.py first", param="files")
    parse_repo_path(filename)
    parse_digest(digest)
    path = blob_file(hf_cache, digest)
    if path.is_symlink() or not path.is_file():
        raise NotFound(f"blob {digest} was not uploaded; send it first (POST /api/blobs/{digest})")
    try:
        header = read_model_header(path, display_name=filename)
    except InvalidModelFile as e:
        raise InvalidModelFile(f"'files': {filename} is not a GGUF model file: {e.message}") from None
    if header.shards > 1:
        raise InvalidArgument(f"'files': {filename} is one part of a model split in {header.shards}; "
                              "join the parts (llama-gguf-split --merge) and upload the whole file", param="files")
    check_loadable(header, path)
    hexdigest = hex_of(digest)
    size = path.stat().st_size
    record = assets_pb2.InstallRecord(
        name=name, ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_UPLOAD, repo=REPO, kind=kind_of(header)),
        revision=assets_pb2.Revision(commit=hexdigest), kind=kind_of(header),
        format=assets_pb2.ARTIFACT_FORMAT_GGUF, gguf=gguf_info(header), size_bytes=size)
    record.artifacts.add(filename=filename, size=size, sha256=digest, etag=hexdigest,
                         format=assets_pb2.ARTIFACT_FORMAT_GGUF,
                         local_path=str(hfcache.snapshot_path(hf_cache, REPO, hexdigest, filename)))
    record.created_at.CopyFrom(timestamp())
    record.derived.SetInParent()
    return record


def link(hf_cache: Path, record: assets_pb2.InstallRecord) -> list[Path]:
    """Link the snapshot path of each of `record`'s artifacts (an upload_record's) to its blob;
    returns the links made (those that were not there already)."""
    made = []
    for a in record.artifacts:
        path = Path(a.local_path)
        if not path.is_symlink():
            made.append(hfcache.link_snapshot(hf_cache, REPO, record.revision.commit, a.filename, a.etag))
    return made


def unlink(hf_cache: Path, links: list[Path]) -> None:
    """Undo `link` (the record could not be stored); the blobs themselves stay."""
    for path in links:
        hfcache.remove_file(hf_cache, path, link=True)
