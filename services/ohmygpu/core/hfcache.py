"""The Hugging Face cache layout (`HF_HUB_CACHE`), so pulled files live once and every HF tool
finds them: `models--org--name/{blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>,
refs/<revision>}`. Blob names are the hub's etags: the sha256 for LFS files, the git blob sha1
for small ones. Every path built here comes from validated names.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from pathlib import Path

from ohmygpu.core.errors import InvalidName
from ohmygpu.core.names import parse_repo_id, parse_repo_path, parse_revision

_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
PARTIAL_SUFFIX = ".omg-partial"


def parse_etag(value: str) -> str:
    """A blob name: 40 (git sha1) or 64 (sha256) lowercase hex; raises InvalidName."""
    if not isinstance(value, str) or _ETAG.fullmatch(value) is None:
        raise InvalidName(f"invalid blob id {repr(value)[:80]} from the hub")
    return value


def repo_folder(cache: Path, repo_id: str) -> Path:
    org, name = parse_repo_id(repo_id).split("/")
    return cache / f"models--{org}--{name}"


def blob_path(cache: Path, repo_id: str, etag: str) -> Path:
    return repo_folder(cache, repo_id) / "blobs" / parse_etag(etag)


def partial_path(cache: Path, repo_id: str, etag: str) -> Path:
    # Next to the blob (same filesystem, so publishing is an atomic rename); a name that
    # huggingface_hub does not clean up (it drops its own `.incomplete` files on restart).
    return blob_path(cache, repo_id, etag).with_name(parse_etag(etag) + PARTIAL_SUFFIX)


def snapshot_path(cache: Path, repo_id: str, commit: str, filename: str) -> Path:
    return repo_folder(cache, repo_id) / "snapshots" / parse_etag(commit) / parse_repo_path(filename)


def private_name(path: Path, suffix: str) -> Path:
    """A temporary name beside `path` that no other task or process uses: two daemons sharing
    a cache publish the same snapshot links and refs at once, and with one shared temporary name
    one would rename away (or unlink) the file the other is about to rename."""
    return path.with_name(f"{path.name}{suffix}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def link_snapshot(cache: Path, repo_id: str, commit: str, filename: str, etag: str) -> Path:
    """Point snapshots/<commit>/<filename> at blobs/<etag> (relative symlink, as huggingface_hub
    does); returns the snapshot path."""
    target = blob_path(cache, repo_id, etag)
    link = snapshot_path(cache, repo_id, commit, filename)
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target, link.parent)
    tmp = private_name(link, ".omg-link")
    os.symlink(relative, tmp)
    os.replace(tmp, link)
    return link


def write_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """refs/<revision> = commit, for branch and tag names (not for commits themselves)."""
    if not revision or revision == commit:
        return
    ref = repo_folder(cache, repo_id) / "refs" / parse_revision(revision)
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_name(ref, ".omg-tmp")
    tmp.write_text(parse_etag(commit))
    os.replace(tmp, ref)


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with symlinks resolved, stays under `root` (the store never follows a
    link out of itself)."""
    try:
        path.resolve(strict=False).relative_to(root.resolve(strict=False))
        return True
    except ValueError:
        return False


def remove_file(root: Path, path: Path, *, link: bool = False) -> int | None:
    """Delete `path`, a regular file (or, with `link`, a symlink) under `root`, following no
    symlink on the way: each directory below `root` is opened with O_NOFOLLOW from the one
    above it and the file is unlinked through that directory's descriptor, so a link planted
    anywhere in the cache (or swapped in meanwhile) cannot lead the delete out of it. Returns
    the bytes freed (0 for a link), or None when nothing was deleted: `path` is not under
    `root`, crosses a symlink, or is not what was asked for."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError:  # ELOOP/ENOTDIR: a symlink or not a directory; ENOENT: gone
                return None
            os.close(fd)
            fd = child
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        if not (stat.S_ISLNK(st.st_mode) if link else stat.S_ISREG(st.st_mode)):
            return None
        try:
            os.unlink(parts[-1], dir_fd=fd)  # unlink never follows the last component
        except OSError:
            return None
        return 0 if link else st.st_size
    finally:
        os.close(fd)


__all__ = ["InvalidName", "blob_path", "inside", "link_snapshot", "parse_etag", "partial_path",
           "remove_file", "repo_folder", "snapshot_path", "write_ref"]
