"""A local stand-in for the Hugging Face hub, over real HTTP, speaking its protocol.

Two servers: the hub (API, `resolve` URLs) on 127.0.0.1 and a "CDN" on localhost (another host
name, so redirects cross hosts as they do on huggingface.co). Large files are LFS: `resolve`
answers 302 to the CDN with X-Linked-Etag / X-Linked-Size; small files are served directly with
a git-blob ETag. Every answer carries X-Repo-Commit. Range requests get 206. Errors carry the
hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). Faults for
tests: ignore Range, drop the connection after N bytes, flip a byte, answer 429, limit the rate,
list hostile file sizes.

It is faithful where huggingface_hub's own client looks: `snapshot_download` with HF_ENDPOINT
pointed here downloads from it (tests/e2e/test_fake_hub.py).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

LFS_THRESHOLD = 1 << 20
CHUNK = 64 << 10


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RepoFile:
    path: str
    data: bytes

    @property
    def lfs(self) -> bool:
        return len(self.data) >= LFS_THRESHOLD or self.path.endswith((".gguf", ".bin", ".safetensors"))

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.data)


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str = ""
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    private: bool = False
    gated: bool = False
    downloads: int = 0
    likes: int = 0
    pipeline_tag: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1((self.repo_id + "".join(sorted(self.files))).encode()).hexdigest()
        self.refs.setdefault("main", self.commit)

    def file(self, path: str) -> RepoFile | None:
        if path not in self.files:
            return None
        cache = self.__dict__.setdefault("_file_cache", {})
        if path not in cache:  # hashing 100 MB per request would dominate the tests
            cache[path] = RepoFile(path, self.files[path])
        return cache[path]


@dataclass
class Faults:
    ignore_range: bool = False
    drop_after_bytes: int | None = None  # close the connection after this many body bytes
    drop_times: int = 0  # how many downloads drop before one succeeds
    flip_byte_at: int | None = None  # serve this byte XORed (same size, wrong content)
    rate_limit_429: int = 0  # answer this many requests with 429 first
    bytes_per_second: int | None = None
    endless_error_body: bool = False  # repo API answers 404 RepoNotFound with a body that never ends
    gzip_bomb_listing: bool = False  # repo API answers 200 with an endless gzip of spaces
    listing_size: object = None  # when set, the listing gives every file this size (-1, 1.5, "x", 2**70)


@dataclass
class Seen:
    method: str
    host: str
    path: str
    authorization: str | None
    range: str | None


class FakeHub:
    """Start with `with FakeHub(repos) as hub:`; `hub.endpoint` is HF_ENDPOINT."""

    def __init__(self, repos: list[FakeRepo], *, token: str = "hf_test_token") -> None:
        self.repos = {r.repo_id: r for r in repos}
        self.token = token
        self.faults = Faults()
        self.seen: list[Seen] = []
        self.bytes_served = 0
        self._servers: list[tuple[uvicorn.Server, threading.Thread]] = []
        self.hub_port = 0
        self.cdn_port = 0

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        self.hub_port = self._serve(self._hub_app(), "127.0.0.1")
        self.cdn_port = self._serve(self._cdn_app(), "127.0.0.1")
        return self

    def __exit__(self, *exc: object) -> None:
        for server, thread in self._servers:
            server.should_exit = True
            thread.join(5)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    @property
    def cdn(self) -> str:
        return f"http://localhost:{self.cdn_port}"

    def _serve(self, app: Starlette, host: str) -> int:
        import socket

        sock = socket.socket()
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        self._servers.append((server, thread))
        return port

    # -- helpers ----------------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        self.seen.append(Seen(request.method, request.headers.get("host", ""), request.url.path,
                              request.headers.get("authorization"), request.headers.get("range")))

    def _limited(self) -> Response | None:
        if self.faults.rate_limit_429 > 0:
            self.faults.rate_limit_429 -= 1
            return Response(status_code=429, headers={"Retry-After": "1"}, content=b"rate limited")
        return None

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def _repo_or_error(self, request: Request, repo_id: str) -> FakeRepo | Response:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(request)):
            return Response(status_code=401, headers={"X-Error-Code": "RepoNotFound",
                                                      "X-Error-Message": "Repository not found"})
        if repo.gated and not self._authorized(request):
            return Response(status_code=403, headers={
                "X-Error-Code": "GatedRepo",
                "X-Error-Message": "Access to model is restricted. You must have access to it and be authenticated"})
        return repo

    @staticmethod
    def _revision_error() -> Response:
        return Response(status_code=404, headers={"X-Error-Code": "RevisionNotFound",
                                                  "X-Error-Message": "Invalid rev id"})

    def _commit(self, repo: FakeRepo, revision: str) -> str | None:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision == repo.commit or (len(revision) >= 7 and repo.commit.startswith(revision)):
            return repo.commit
        return None

    def _body(self, data: bytes, request: Request, headers: dict[str, str]) -> Response:
        if self.faults.flip_byte_at is not None and self.faults.flip_byte_at < len(data):
            i = self.faults.flip_byte_at
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        start, end, status = 0, len(data), 200
        rng = request.headers.get("range")
        if rng and rng.startswith("bytes=") and not self.faults.ignore_range:
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = min(len(data), int(last) + 1) if last else len(data)
            if start >= len(data):
                return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers["Content-Length"] = str(end - start)
        headers["Accept-Ranges"] = "bytes"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        drop = None
        if self.faults.drop_after_bytes is not None and self.faults.drop_times > 0:
            self.faults.drop_times -= 1
            drop = self.faults.drop_after_bytes
        hub = self

        async def stream():
            sent = 0
            for i in range(start, end, CHUNK):
                chunk = data[i: min(end, i + CHUNK)]
                if drop is not None and sent + len(chunk) > drop:
                    chunk = chunk[: max(0, drop - sent)]
                    hub.bytes_served += len(chunk)
                    yield chunk
                    raise ConnectionResetError("fake hub dropped the connection")
                sent += len(chunk)
                hub.bytes_served += len(chunk)
                yield chunk
                if hub.faults.bytes_per_second:
                    await asyncio.sleep(len(chunk) / hub.faults.bytes_per_second)

        return StreamingResponse(stream(), status_code=status, headers=headers)

    def _hostile_answer(self) -> Response:
        """A body that never ends: plain bytes after a 404, or gzip that inflates ~1000x after a 200.
        Stops by itself after 4 GiB sent, in case a client under test reads forever."""
        gzip_bomb = self.faults.gzip_bomb_listing

        async def body() -> AsyncIterator[bytes]:
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
            yield packer.compress(b'{"siblings": [') if gzip_bomb else b"not found "
            block = b" " * (1 << 20)
            for _ in range(4096):
                yield packer.compress(block) or packer.flush(zlib.Z_SYNC_FLUSH) if gzip_bomb else block
                await asyncio.sleep(0)

        if gzip_bomb:
            return StreamingResponse(body(), status_code=200, headers={"content-encoding": "gzip"},
                                     media_type="application/json")
        return StreamingResponse(body(), status_code=404, headers={"X-Error-Code": "RepoNotFound",
                                                                  "X-Error-Message": "Repository not found"})

    # -- hub --------------------------------------------------------------------------------

    def _hub_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/models", self._search, methods=["GET"]),
            Route("/api/models/{rest:path}", self._api_models, methods=["GET"]),
            Route("/{rest:path}", self._resolve, methods=["GET", "HEAD"]),
        ])

    def _siblings(self, repo: FakeRepo) -> list[dict]:
        out = []
        for path in sorted(repo.files):
            f = repo.file(path)
            assert f is not None
            size = len(f.data) if self.faults.listing_size is None else self.faults.listing_size
            entry: dict = {"rfilename": path, "size": size, "blobId": git_blob_sha1(f.data)}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": size, "pointerSize": 134}
            out.append(entry)
        return out

    async def _search(self, request: Request) -> Response:
        # GET /api/models?search=&limit=&sort=downloads&direction=-1&full=true, as the hub answers it.
        self._record(request)
        query = request.query_params.get("search", "").lower()
        limit = int(request.query_params.get("limit", "1000"))
        found = [r for r in self.repos.values() if query in r.repo_id.lower() and not r.private]
        found.sort(key=lambda r: r.downloads, reverse=True)
        full = request.query_params.get("full") in ("true", "True", "1")
        return JSONResponse([{
            "_id": r.repo_id, "id": r.repo_id, "modelId": r.repo_id, "downloads": r.downloads, "likes": r.likes,
            "private": False, "tags": [], "pipeline_tag": r.pipeline_tag or None,
            **({"siblings": [{"rfilename": p} for p in sorted(r.files)]} if full else {}),
        } for r in found[:limit]])

    async def _api_models(self, request: Request) -> Response:
        self._record(request)
        if (limited := self._limited()) is not None:
            return limited
        if self.faults.endless_error_body or self.faults.gzip_bomb_listing:
            return self._hostile_answer()
        rest = unquote(request.path_params["rest"])
        kind, revision, subpath = "info", "main", ""
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                rest, _, tail = rest.partition(marker)
                kind = marker.strip("/")
                revision, _, subpath = tail.partition("/")
        repo = self._repo_or_error(request, rest)
        if isinstance(repo, Response):
            return repo
        commit = self._commit(repo, revision)
        if commit is None:
            return self._revision_error()
        if kind == "tree":
            items = []
            for path in sorted(repo.files):
                if subpath and not path.startswith(subpath.rstrip("/") + "/"):
                    continue
                f = repo.file(path)
                assert f is not None
                item: dict = {"type": "file", "oid": git_blob_sha1(f.data), "size": len(f.data), "path": path}
                if f.lfs:
                    item["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
                items.append(item)
            return JSONResponse(items)
        return JSONResponse({
            "_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit,
            "private": repo.private, "gated": "auto" if repo.gated else False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "lastModified": "2026-01-01T00:00:00.000Z",
            "siblings": self._siblings(repo),
        })

    async def _resolve(self, request: Request) -> Response:
        self._record(request)
        if (limited := self._limited()) is not None:
            return limited
        rest = unquote(request.path_params["rest"])
        if "/resolve/" not in rest:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        repo_id, _, tail = rest.partition("/resolve/")
        revision, _, filename = tail.partition("/")
        repo = self._repo_or_error(request, repo_id)
        if isinstance(repo, Response):
            return repo
        commit = self._commit(repo, revision)
        if commit is None:
            return self._revision_error()
        f = repo.file(filename)
        if f is None:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound",
                                                      "X-Error-Message": "Entry not found", "X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "ETag": f'"{f.etag}"'}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data)),
                            "Location": f"{self.cdn}/blobs/{f.sha256}?name={quote(filename)}&expires=9999999999",
                            "Content-Length": "0"})
            return Response(status_code=302, headers=headers)
        return self._body(f.data, request, headers)

    # -- cdn --------------------------------------------------------------------------------

    def _cdn_app(self) -> Starlette:
        return Starlette(routes=[Route("/blobs/{sha256}", self._blob, methods=["GET", "HEAD"])])

    async def _blob(self, request: Request) -> Response:
        self._record(request)
        sha = request.path_params["sha256"]
        for repo in self.repos.values():
            for path in repo.files:
                f = repo.file(path)
                if f is not None and f.lfs and f.sha256 == sha:
                    return self._body(f.data, request, {"ETag": f'"{sha}"', "Content-Type": "application/octet-stream"})
        return Response(status_code=404)


def main() -> None:
    """Serve files from the command line (benchmarks run the hub in its own process):
    python -m tests.fakes.hub REPO_ID FILE [FILE ...] [--random NAME:BYTES]"""
    import argparse
    import os
    from pathlib import Path

    p = argparse.ArgumentParser()
    p.add_argument("repo")
    p.add_argument("files", nargs="*")
    p.add_argument("--random", action="append", default=[], help="NAME:BYTES of random content")
    args = p.parse_args()
    files = {Path(f).name: Path(f).read_bytes() for f in args.files}
    for spec in args.random:
        name, size = spec.rsplit(":", 1)
        files[name] = os.urandom(int(size))
    repo = FakeRepo(args.repo, files)
    for path in files:
        _ = repo.file(path).sha256  # hash now, not during the timed downloads
    with FakeHub([repo]) as hub:
        print(hub.endpoint, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
