"""Store upkeep: remove a model's bytes that nothing else uses, collect garbage, report disk use,
re-verify content. Nothing is deleted outside the HF cache and OMG_HOME, no symlink is followed
by a delete (a link planted in the cache cannot lead one out of it), and a file that a user
registered in place (`omg model add`) is never deleted.
"""

from __future__ import annotations

import fcntl
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.digests import sha256_file
from ohmygpu.core import hfcache
from ohmygpu.core.errors import CorruptIndex, InvalidName
from ohmygpu.core.hfcache import PARTIAL_SUFFIX
from ohmygpu.core.store import ModelStore


def _in_cache(record: assets_pb2.InstallRecord) -> bool:
    """Whether the record's files are the store's own, in the HF cache: pulled, or uploaded
    (core/blobs.py). A file registered in place is the user's."""
    return record.ref.provider in (assets_pb2.PROVIDER_HF, assets_pb2.PROVIDER_UPLOAD)


def remove_model(store: ModelStore, name: str, hf_cache: Path) -> int:
    """Forget `name` and delete the pulled bytes no other model uses; returns bytes freed.
    Raises ModelNotFound. A damaged index record is forgotten (its files, unknown, are left)."""
    try:
        record = store.get(name)
    except CorruptIndex:
        store.delete(name)
        return 0
    store.delete(name)
    return free_unused(store, record, hf_cache)


def free_unused(store: ModelStore, record: assets_pb2.InstallRecord, hf_cache: Path) -> int:
    """Delete the files of `record`, no longer in the index, that no model in it uses (none when
    they are registered in place: the user's files stay); returns bytes freed."""
    if not _in_cache(record):
        return 0
    # By path: another model with the same content elsewhere (a local add, another repo, an
    # upload) does not keep this copy; one naming the same snapshot file (an alias) does, and a
    # blob another snapshot links to stays (_linked_from_snapshots).
    still_used = {a.local_path for r in store.list() for a in r.artifacts}
    freed = 0
    for artifact in record.artifacts:
        if artifact.local_path in still_used:
            continue
        # Only the store's own names are deleted: the snapshot link the record names, and the
        # blob its etag names in its repo, each without following any link (hfcache.remove_file).
        hfcache.remove_file(hf_cache, Path(artifact.local_path), link=True)
        try:
            blob = hfcache.blob_path(hf_cache, record.ref.repo, artifact.etag)
        except InvalidName:
            continue  # a record that names no blob of ours (tampered, or pre-etag)
        if not _linked_from_snapshots(blob):
            freed += hfcache.remove_file(hf_cache, blob) or 0
    return freed


def _linked_from_snapshots(blob: Path) -> bool:
    """Whether any snapshot of the blob's repo (ours or another tool's) still points at it."""
    snapshots = blob.parent.parent / "snapshots"
    if snapshots.is_symlink() or not snapshots.is_dir():
        return False
    target = blob.resolve()
    for link in snapshots.rglob("*"):
        if link.is_symlink() and link.resolve() == target:
            return True
    return False


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    freed: int = 0


def _partial_in_use(partial: Path) -> bool:
    lock = partial.with_name(partial.name + ".lock")
    if lock.is_symlink() or not lock.is_file():
        return False
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the lock if we took it
    return False


def collect_garbage(store: ModelStore, hf_cache: Path, *, dry_run: bool) -> GcReport:
    """Blobs in the HF cache that no snapshot points to (useless to every tool) and partial
    downloads no pull is writing."""
    report = GcReport()
    if not hf_cache.is_dir():
        return report
    referenced = {Path(a.local_path).resolve() for r in store.list() for a in r.artifacts if a.local_path}
    for repo in sorted(hf_cache.glob("models--*")):
        blobs = repo / "blobs"
        if repo.is_symlink() or blobs.is_symlink() or not blobs.is_dir():
            continue  # a link planted in the cache: nothing through it is ours to delete
        linked = {p.resolve() for p in (repo / "snapshots").rglob("*") if p.is_symlink()} \
            if (repo / "snapshots").is_dir() else set()
        for f in sorted(blobs.iterdir()):
            if f.is_symlink() or not f.is_file():
                continue
            if f.name.endswith(PARTIAL_SUFFIX):
                stale = not _partial_in_use(f)
            elif f.name.endswith(".lock"):
                partial = f.with_name(f.name[: -len(".lock")])
                stale = not partial.exists() and not _partial_in_use(partial)
            else:
                stale = f.resolve() not in linked and f.resolve() not in referenced
            if stale:
                if dry_run:
                    size: int | None = f.lstat().st_size
                else:
                    size = hfcache.remove_file(hf_cache, f)  # no link followed, even one swapped in now
                if size is not None:
                    report.removed.append(str(f.relative_to(hf_cache)))
                    report.freed += size
    return report


def disk_usage(store: ModelStore) -> tuple[list[tuple[str, int, int]], int]:
    """(name, size, unique bytes) per model, and distinct bytes overall."""
    users: dict[str, set[str]] = defaultdict(set)
    sizes: dict[str, int] = {}
    records = store.list()
    for r in records:
        for a in r.artifacts:
            users[a.sha256].add(r.name)
            sizes[a.sha256] = a.size
    rows = []
    for r in records:
        unique = sum(sizes[a.sha256] for a in r.artifacts if users[a.sha256] == {r.name})
        rows.append((r.name, r.size_bytes, unique))
    return rows, sum(sizes.values())


@dataclass
class Check:
    model: str
    filename: str
    expected: str
    actual: str
    problem: str

    @property
    def ok(self) -> bool:
        return not self.problem


def verify(store: ModelStore, name: str = "") -> list[Check]:
    """Re-hash every file of one model (or all); raises ModelNotFound for an unknown name."""
    records = [store.get(name)] if name else store.list()
    checks = [] if name else [
        Check(bad, "", "", "", f"the index record is damaged; `omg model rm {bad}` forgets it")
        for bad in store.damaged()]
    for r in records:
        for a in r.artifacts:
            try:
                actual = sha256_file(Path(a.local_path))
                problem = "" if actual == a.sha256 else "content changed: the file is corrupt or was replaced"
            except OSError:
                actual, problem = "", "file is missing or unreadable"
            checks.append(Check(r.name, a.filename, a.sha256, actual, problem))
    return checks
