"""A client of the Hugging Face hub API at HF_ENDPOINT: repo files with sizes and hashes, the
resolved commit, and file streams. Errors come back as ours, with what the user can do.

Redirects are followed by hand: the token goes only to the endpoint's own host, never to the
CDN or any other host a redirect names (ollama CVE-2025-51471). Bodies are read with a bound:
an error's body not at all (its headers say what went wrong), a listing up to 16 MiB after
decompression, so an endless answer or a gzip bomb (ollama CVE-2024-12886) costs us nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx
from ohmygpu.core.errors import NotFound, OmgError, PermissionDenied, RateLimited, Unavailable
from ohmygpu.core.hfcache import parse_etag
from ohmygpu.core.names import parse_repo_id, parse_repo_path, parse_revision, quant_of

log = logging.getLogger("ohmygpu.hub")
# A listing of a repository with thousands of files is well under this; it bounds what an
# answer may cost after decompression.
MAX_LISTING_BYTES = 16 << 20
_MAX_REDIRECTS = 5
# The hub stores files of at most 50 GB; a size past this is a broken or hostile listing, and a
# number we would carry into progress, space checks and protobuf fields.
MAX_FILE_SIZE = 1 << 42
_MAX_COUNT = 1 << 53  # downloads and likes


class _BadNumber(ValueError):
    """A number in a hub answer that is not a sane non-negative integer."""


def hub_int(value: object, what: str, *, limit: int) -> int:
    """`value` as a JSON integer in [0, limit]; raises _BadNumber naming `what`. Booleans,
    fractions, strings and absurd magnitudes are refused here, at the edge, so nothing past the
    client ever sees them."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadNumber(f"{what} is not an integer ({str(value)[:40]!r})")
    if not 0 <= value <= limit:
        raise _BadNumber(f"{what} {value} is out of range (0 to {limit})")
    return value


@dataclass(frozen=True)
class RemoteFile:
    """A file of a repository at a commit, as the hub describes it."""

    path: str
    size: int
    sha256: str | None  # hex, for LFS files
    git_sha1: str | None  # hex git blob id, for small files

    @property
    def etag(self) -> str:
        """The blob name in the HF cache."""
        return self.sha256 or self.git_sha1 or ""


@dataclass(frozen=True)
class RepoSnapshot:
    repo_id: str
    revision: str
    commit: str
    files: list[RemoteFile]


def hub_error(response: httpx.Response, what: str) -> OmgError:
    """The error for a failed hub answer; never includes the body beyond a few KiB."""
    code = response.headers.get("X-Error-Code", "")
    status = response.status_code
    if code == "GatedRepo" or (status == 403 and "gated" in response.headers.get("X-Error-Message", "").lower()):
        return PermissionDenied(f"{what} is gated: accept its licence on the hub, then set HF_TOKEN "
                                "(or `huggingface-cli login`)")
    if code == "RepoNotFound" or status == 401:
        return NotFound(f"{what} not found on the hub (if it is private, set HF_TOKEN)")
    if code == "RevisionNotFound":
        return NotFound(f"revision not found: {what}")
    if code == "EntryNotFound" or status == 404:
        return NotFound(f"file not found: {what}")
    if status == 429:
        return RateLimited(f"the hub is rate limiting us ({what}); try again later")
    if status == 403:
        return PermissionDenied(f"access denied by the hub: {what}")
    return Unavailable(f"the hub answered {status} for {what}")


@dataclass(frozen=True)
class SearchResult:
    """One repository a hub search found."""

    repo_id: str
    downloads: int
    likes: int
    quantizations: list[str]
    pipeline_tag: str


class HubClient:
    """Async client of one hub endpoint."""

    def __init__(self, endpoint: str, token: str | None, *, timeout: float = 30.0,
                 max_429_retries: int = 5) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.token = token or None
        self.max_429_retries = max_429_retries
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=60.0), follow_redirects=False,
                                      headers={"user-agent": "ohmygpu", "accept-encoding": "identity"})

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token and urlsplit(url).netloc == self.host:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, *, what: str,
                      headers: dict[str, str] | None = None) -> AsyncIterator[httpx.Response]:
        """A streamed response after redirects and 429 retries; raises our errors."""
        attempts = 0
        while True:
            current = url
            for _ in range(_MAX_REDIRECTS + 1):
                try:
                    req = self.http.build_request(method, current, headers=self._headers(current, headers))
                    response = await self.http.send(req, stream=True)
                except httpx.TransportError as e:
                    raise Unavailable(f"cannot reach the hub at {self.endpoint} ({type(e).__name__}); "
                                      "offline? set HF_ENDPOINT or try again") from None
                if response.is_redirect and "location" in response.headers:
                    await response.aclose()
                    current = urljoin(current, response.headers["location"])
                    continue
                break
            else:
                raise Unavailable(f"too many redirects for {what}")
            if response.status_code == 429 and attempts < self.max_429_retries:
                attempts += 1
                await response.aclose()
                delay = _retry_after(response.headers.get("retry-after"), attempts)
                log.warning("hub rate limited %s; retrying in %.1fs", what, delay)
                await asyncio.sleep(delay)
                continue
            try:
                if response.status_code >= 400:
                    # Not read: the hub says what went wrong in its headers, and a body may be endless.
                    raise hub_error(response, what)
                yield response
            finally:
                await response.aclose()
            return

    async def snapshot(self, repo_id: str, revision: str = "") -> RepoSnapshot:
        """The files of `repo_id` at `revision` (default branch when empty) and its commit."""
        repo_id = parse_repo_id(repo_id)
        rev = parse_revision(revision) if revision else "main"
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(rev, safe='')}?blobs=true"
        async with self.request("GET", url, what=f"{repo_id}@{rev}") as r:
            body = await read_bounded(r, f"{repo_id}@{rev}")
        try:
            info = httpx.Response(200, content=body).json()
            commit = parse_etag(str(info["sha"]))
            files = []
            for s in info.get("siblings", []):
                path = parse_repo_path(s["rfilename"])
                lfs = s.get("lfs") or {}
                sha = parse_etag(lfs["sha256"]) if lfs.get("sha256") else None
                blob = parse_etag(s["blobId"]) if s.get("blobId") and not sha else None
                size = hub_int(lfs["size"] if "size" in lfs else s.get("size", 0),
                               f"the size of {path}", limit=MAX_FILE_SIZE)
                files.append(RemoteFile(path=path, size=size, sha256=sha, git_sha1=blob))
        except _BadNumber as e:
            raise Unavailable(f"the hub sent a listing we refuse for {repo_id}@{rev}: {e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Unavailable(f"the hub sent an answer we cannot read for {repo_id}@{rev}: {e}") from None
        return RepoSnapshot(repo_id=repo_id, revision=revision, commit=commit, files=files)

    async def search(self, query: str, limit: int = 20) -> list[SearchResult]:
        """Repositories whose id contains `query`, most downloaded first, with their GGUF
        quantizations (from the file list the hub sends with full=true)."""
        params = {"search": query, "limit": str(max(1, min(limit, 100))), "sort": "downloads",
                  "direction": "-1", "full": "true"}
        url = f"{self.endpoint}/api/models?{urlencode(params)}"
        async with self.request("GET", url, what=f"search {query!r}") as r:
            body = await read_bounded(r, f"search {query!r}")
        try:
            out = []
            for item in httpx.Response(200, content=body).json():
                files = [str(s.get("rfilename", "")) for s in item.get("siblings") or []]
                quants = sorted({quant_of(f) for f in files if f.lower().endswith(".gguf")} - {""})
                out.append(SearchResult(repo_id=str(item.get("id") or item.get("modelId")),
                                        downloads=hub_int(item.get("downloads") or 0, "downloads", limit=_MAX_COUNT),
                                        likes=hub_int(item.get("likes") or 0, "likes", limit=_MAX_COUNT),
                                        quantizations=quants, pipeline_tag=str(item.get("pipeline_tag") or "")))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Unavailable(f"the hub sent a search answer we cannot read: {e}") from None
        return out

    def file_url(self, repo_id: str, commit: str, path: str) -> str:
        return f"{self.endpoint}/{parse_repo_id(repo_id)}/resolve/{parse_etag(commit)}/{quote(parse_repo_path(path))}"


async def read_bounded(response: httpx.Response, what: str, limit: int = MAX_LISTING_BYTES) -> bytes:
    """The decoded body of a hub answer, refusing one larger than `limit` as soon as it is.

    httpx decodes each network chunk as it comes (we ask for identity; a server may compress
    anyway), so one chunk costs at most deflate's ~1000x of its size on top of `limit`."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise Unavailable(f"the hub's answer for {what} is larger than {limit >> 20} MiB; not reading "
                              "more (a broken or hostile server?)")
    return bytes(body)


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        return min(60.0, max(0.0, float(value))) if value else min(30.0, 0.5 * 2 ** attempt)
    except ValueError:
        return min(30.0, 0.5 * 2 ** attempt)
