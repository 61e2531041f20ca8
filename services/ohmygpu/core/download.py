"""Downloading one blob: hashed while written, verified before it becomes visible, resumable
across crashes, never appended to from a server that ignored Range, and fetched once even when
two pulls (tasks or processes) want it at the same time.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from ohmygpu.core.errors import CorruptDownload, InsufficientSpace, InvalidArgument, OmgError, Unavailable
from ohmygpu.core.hub import HubClient, RemoteFile

_CHUNK = 1 << 20
_RETRIES = 6
# Ranges read in smaller pieces and save their progress at least every 0.1 s (or 16 MiB of one
# range): what a kill -9 loses is what arrived since the last save plus what a read was still
# gathering, so both bound the bytes a resume fetches twice (bench/pull_throughput.py --resume:
# 1.01-1.02x in all at 15 MB/s; it was 1 MiB pieces and 0.5 s, 1.15-1.17x). Saving costs an
# fsync of what was written meanwhile.
_RANGE_CHUNK = 256 << 10
_SAVE_EVERY_S = 0.1
_SAVE_EVERY_BYTES = 16 << 20


class RateLimiter:
    """A token bucket shared by every file of a pull (bytes per second; 0 = unlimited)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.allowance = float(rate)
        self.last = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.allowance = min(float(self.rate), self.allowance + (now - self.last) * self.rate)
        self.last = now
        self.allowance -= n
        if self.allowance < 0:
            await asyncio.sleep(-self.allowance / self.rate)


class _Hashes:
    def __init__(self, want_git: bool, size: int) -> None:
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % size) if want_git else None

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)


def _hash_prefix(path: Path, hashes: _Hashes) -> int:
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hashes.update(chunk)
            done += len(chunk)
    return done


def check_space(directory: Path, needed: int) -> None:
    """Raise InsufficientSpace when `directory`'s filesystem has less than `needed` bytes free."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise InsufficientSpace(f"the pull needs {_gb(needed)} but only {_gb(free)} are free on the disk "
                                "of the model cache (HF_HUB_CACHE); free some space or point HF_HUB_CACHE "
                                "at a larger disk")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1_000_000_000 else f"{n / 1e6:.1f} MB"


def disk_error(e: OSError, directory: Path | None = None, needed: int = 0) -> OmgError:
    """What a write error means to the user, without the path (messages reach remote clients).
    A full disk (another writer filled it after our space check) names what is still needed."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = ""
        if directory is not None:
            try:
                free = f" ({_gb(shutil.disk_usage(directory).free)} free)"
            except OSError:
                pass
        more = f" needs {_gb(needed)} more" if needed > 0 else " needs more room"
        return InsufficientSpace(f"the disk of the model cache (HF_HUB_CACHE) is full{free}: the download"
                                 f"{more}; the part already downloaded is kept and the pull resumes from it "
                                 "once there is room (`omg model gc` removes it instead)")
    return Unavailable(f"cannot write to the model cache (HF_HUB_CACHE): {e.strerror or 'I/O error'}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class FetchResult:
    sha256: str  # "sha256:<hex>" of what was published
    downloaded: int  # bytes that crossed the network in this call
    reused: bool  # the blob was already there (another pull, another process, the HF cache)


class _FileLock:
    """An exclusive flock, taken in a thread so the event loop never blocks on it. flock
    is per open file, so it orders tasks of one process as well as separate processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    async def __aenter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        await asyncio.to_thread(fcntl.flock, self.fd, fcntl.LOCK_EX)
        return self

    async def __aexit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


async def fetch(
    hub: HubClient,
    url: str,
    remote: RemoteFile,
    *,
    blob: Path,
    partial: Path,
    progress: Callable[[int, int], None],
    limiter: RateLimiter | None = None,
    cancelled: asyncio.Event | None = None,
    segment_min: int = 64 << 20,
    segments: int = 4,
) -> FetchResult:
    """Make `blob` hold `remote`'s verified content, downloading only what is missing.

    Files of at least `segment_min` bytes are fetched as `segments` ranges at once (see
    _fetch_segmented); smaller ones, and servers that ignore Range, as one stream.

    `progress(completed, downloaded_now)` is called as bytes arrive. Raises CorruptDownload,
    Unavailable (network, after retries; a write error), InsufficientSpace (the disk filled up:
    the partial stays, to resume), our hub errors, asyncio.CancelledError.
    """
    if not (remote.sha256 or remote.git_sha1):
        raise InvalidArgument(f"the hub gave no hash for {remote.path}; refusing an unverifiable download")
    completed = [0]

    def track(done: int, new: int) -> None:
        completed[0] = done
        progress(done, new)

    try:
        return await _fetch(hub, url, remote, blob=blob, partial=partial, progress=track, limiter=limiter,
                            cancelled=cancelled, segment_min=segment_min, segments=segments)
    except OSError as e:
        if isinstance(e, OmgError):
            raise
        raise disk_error(e, blob.parent, remote.size - completed[0]) from None


async def _fetch(
    hub: HubClient, url: str, remote: RemoteFile, *, blob: Path, partial: Path,
    progress: Callable[[int, int], None], limiter: RateLimiter | None, cancelled: asyncio.Event | None,
    segment_min: int, segments: int,
) -> FetchResult:
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock_path = partial.with_name(partial.name + ".lock")
    async with _FileLock(lock_path):
        if blob.exists() and blob.stat().st_size == remote.size:
            # Published by another pull while we waited, or already in the HF cache.
            digest = await asyncio.to_thread(_verify_existing, blob, remote)
            if digest is not None:
                progress(remote.size, 0)
                return FetchResult(digest, 0, True)
        if segments > 1 and remote.size >= segment_min and remote.sha256:
            result = await _fetch_segmented(hub, url, remote, blob=blob, partial=partial, progress=progress,
                                            limiter=limiter, cancelled=cancelled, parts=segments)
            if result is not None:
                return result
            # The server ignored Range: fall through to one stream from the start.
        hashes = _Hashes(want_git=remote.sha256 is None, size=remote.size)
        offset = await asyncio.to_thread(_hash_prefix, partial, hashes) if partial.exists() else 0
        if offset > remote.size:
            partial.unlink()
            hashes, offset = _Hashes(remote.sha256 is None, remote.size), 0
        downloaded = 0
        progress(offset, 0)
        failures = 0
        while offset < remote.size:
            if cancelled is not None and cancelled.is_set():
                raise asyncio.CancelledError()
            before = offset
            headers = {"range": f"bytes={offset}-"} if offset else {}
            error: object = "the connection ended early"
            try:
                async with hub.request("GET", url, what=remote.path, headers=headers) as r:
                    if offset and r.status_code != 206:
                        # The server ignored Range: start over rather than append the whole file.
                        hashes, offset = _Hashes(remote.sha256 is None, remote.size), 0
                    elif r.status_code == 206 and not r.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                        raise Unavailable(f"the server sent the wrong range for {remote.path}")
                    with open(partial, "ab" if offset else "wb") as f:
                        try:
                            async for chunk in r.aiter_bytes(_CHUNK):
                                if offset + len(chunk) > remote.size:
                                    raise CorruptDownload(f"{remote.path}: the server sent more than {remote.size} bytes")
                                f.write(chunk)
                                hashes.update(chunk)
                                offset += len(chunk)
                                downloaded += len(chunk)
                                progress(offset, len(chunk))
                                if limiter is not None:
                                    await limiter.take(len(chunk))
                                if cancelled is not None and cancelled.is_set():
                                    raise asyncio.CancelledError()
                        finally:
                            f.flush()
                            os.fsync(f.fileno())  # what we have survives a crash, for resume
            except (httpx.TransportError, Unavailable) as e:
                error = e
            if offset >= remote.size:
                break
            failures = 0 if offset > before else failures + 1
            if failures > _RETRIES:
                raise Unavailable(f"download of {remote.path} kept failing: {error}")
            await asyncio.sleep(min(10.0, 0.2 * 2 ** failures))
        return _publish(remote, hashes, partial, blob, downloaded)


def _publish(remote: RemoteFile, hashes: _Hashes, partial: Path, blob: Path, downloaded: int) -> FetchResult:
    """Check the hash and make the blob visible by an atomic rename; raises CorruptDownload."""
    digest = "sha256:" + hashes.sha256.hexdigest()
    if (remote.sha256 and hashes.sha256.hexdigest() != remote.sha256) or (
            hashes.git is not None and hashes.git.hexdigest() != remote.git_sha1):
        partial.unlink(missing_ok=True)
        _segments_file(partial).unlink(missing_ok=True)
        raise CorruptDownload(f"{remote.path}: the downloaded bytes do not match the hub's hash; "
                              "nothing was kept (try again)")
    os.replace(partial, blob)  # visible only now, complete and verified
    _segments_file(partial).unlink(missing_ok=True)
    _fsync_dir(blob.parent)
    return FetchResult(digest, downloaded, False)


def _segments_file(partial: Path) -> Path:
    return partial.with_name(partial.name + ".segments")


class _IgnoredRange(Exception):
    """The server answered a range request with the whole file."""


async def _fetch_segmented(
    hub: HubClient, url: str, remote: RemoteFile, *, blob: Path, partial: Path,
    progress: Callable[[int, int], None], limiter: RateLimiter | None, cancelled: asyncio.Event | None,
    parts: int,
) -> FetchResult | None:
    """Download a large file as `parts` ranges at once into one sparse partial file.

    Each range's progress is saved beside the partial (after an fsync of the data), so a crash
    resumes every range where it was. The sha256 is computed while the ranges arrive, by a
    cursor that follows the contiguous prefix (from the page cache), so the file is hashed once.
    Returns None when the server ignores Range (the caller then streams the file whole).
    """
    size = remote.size
    step = -(-size // parts)
    bounds = [(i, min(size, i + step)) for i in range(0, size, step)]
    meta = _segments_file(partial)
    done = [0] * len(bounds)
    if meta.exists() and partial.exists():
        try:
            saved = json.loads(meta.read_text())
            if saved.get("size") == size and [tuple(b) for b in saved["bounds"]] == bounds:
                done = [min(int(d), e - s) for d, (s, e) in zip(saved["done"], bounds)]
        except (ValueError, KeyError, TypeError):
            done = [0] * len(bounds)
    elif partial.exists():
        # A prefix written by a single-stream download: it is the first range's progress.
        done[0] = min(partial.stat().st_size, bounds[0][1])
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    downloaded = 0
    wake = asyncio.Event()
    hashes = _Hashes(want_git=False, size=size)

    last_save = [time.monotonic()]
    save_lock = threading.Lock()  # ranges save from worker threads; one writer at a time

    def save() -> None:
        with save_lock:
            claimed = list(done)
            os.fsync(fd)  # the bytes first, then the claim that they are there
            tmp = meta.with_name(meta.name + ".tmp")
            tmp.write_text(json.dumps({"size": size, "bounds": bounds, "done": claimed}))
            os.replace(tmp, meta)

    async def segment(k: int) -> None:
        nonlocal downloaded
        start, end = bounds[k]
        failures = 0
        unsaved = 0
        while done[k] < end - start:
            if cancelled is not None and cancelled.is_set():
                raise asyncio.CancelledError()
            before = done[k]
            error: object = "the connection ended early"
            try:
                async with hub.request("GET", url, what=remote.path,
                                       headers={"range": f"bytes={start + done[k]}-{end - 1}"}) as r:
                    if r.status_code != 206:
                        raise _IgnoredRange()
                    if not r.headers.get("content-range", "").startswith(f"bytes {start + done[k]}-"):
                        raise Unavailable(f"the server sent the wrong range for {remote.path}")
                    async for chunk in r.aiter_bytes(_RANGE_CHUNK):
                        chunk = chunk[: end - start - done[k]]
                        os.pwrite(fd, chunk, start + done[k])  # into the page cache: no thread hop
                        done[k] += len(chunk)
                        downloaded += len(chunk)
                        unsaved += len(chunk)
                        wake.set()
                        progress(sum(done), len(chunk))
                        if unsaved >= _SAVE_EVERY_BYTES or time.monotonic() - last_save[0] > _SAVE_EVERY_S:
                            last_save[0] = time.monotonic()
                            await asyncio.to_thread(save)
                            unsaved = 0
                        if limiter is not None:
                            await limiter.take(len(chunk))
                        if cancelled is not None and cancelled.is_set():
                            raise asyncio.CancelledError()
                        if done[k] >= end - start:
                            break
            except (httpx.TransportError, Unavailable) as e:
                error = e
            if done[k] >= end - start:
                break
            failures = 0 if done[k] > before else failures + 1
            if failures > _RETRIES:
                raise Unavailable(f"download of {remote.path} kept failing: {error}")
            await asyncio.sleep(min(10.0, 0.2 * 2 ** failures))

    def read_and_hash(pos: int, n: int) -> int:
        data = os.pread(fd, n, pos)
        hashes.update(data)  # hashlib releases the GIL on large buffers
        return len(data)

    async def hash_cursor() -> None:
        pos = 0
        while pos < size:
            k = next(i for i, (s, e) in enumerate(bounds) if s <= pos < e)
            ready = bounds[k][0] + done[k]
            if ready <= pos:
                wake.clear()
                await wake.wait()
                continue
            pos += await asyncio.to_thread(read_and_hash, pos, min(ready - pos, 8 * _CHUNK))

    # Claim the layout before the first byte lands: a partial without its claim would be read,
    # after a crash, as a contiguous prefix, holes and all.
    await asyncio.to_thread(save)
    progress(sum(done), 0)
    keep = True
    try:
        tasks = [asyncio.ensure_future(segment(k)) for k in range(len(bounds))]
        cursor = asyncio.ensure_future(hash_cursor())
        try:
            await asyncio.gather(*tasks)
            await cursor
        except _IgnoredRange:
            for t in (*tasks, cursor):
                t.cancel()
            await asyncio.gather(*tasks, cursor, return_exceptions=True)
            keep = False
            os.ftruncate(fd, 0)
            meta.unlink(missing_ok=True)
            return None
        except BaseException:
            for t in (*tasks, cursor):
                t.cancel()
            await asyncio.gather(*tasks, cursor, return_exceptions=True)
            raise
        finally:
            if keep and partial.exists():
                await asyncio.to_thread(save)  # a crash or cancel resumes from here
    finally:
        os.close(fd)
    return _publish(remote, hashes, partial, blob, downloaded)


def _verify_existing(blob: Path, remote: RemoteFile) -> str | None:
    hashes = _Hashes(want_git=remote.sha256 is None, size=remote.size)
    _hash_prefix(blob, hashes)
    if remote.sha256 and hashes.sha256.hexdigest() != remote.sha256:
        return None
    if hashes.git is not None and hashes.git.hexdigest() != remote.git_sha1:
        return None
    return "sha256:" + hashes.sha256.hexdigest()
