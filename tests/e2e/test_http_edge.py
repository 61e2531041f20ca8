"""The HTTP edge against a real daemon: cross-site requests, Host parsing, bounded request
heads, slow clients, lone surrogates and oversized conversations (issue 10).

None of these needs a model to load: each request is refused before it reaches a worker.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow

EVIL = "http://evil.example"
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 12


def _start(tmp: Path, gguf: Path, **env: str) -> DaemonProc:
    d = new_daemon(tmp, extra_env=env).start()
    added = d.omg("model", "add", str(gguf), "--name", "smollm2")
    assert added.returncode == 0, added.stderr
    return d


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    d = _start(tmp_path_factory.mktemp("edge"), gguf_path, OMG_HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
               OMG_HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT), OMG_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS))
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def with_origins(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    d = _start(tmp_path_factory.mktemp("origins"), gguf_path, OMG_CORS_ORIGINS="http://console.example:8080")
    try:
        yield d
    finally:
        d.stop()


def _dialect_error(path: str, r: httpx.Response) -> str:
    """The error message, checking the envelope is the dialect's own."""
    body = r.json()
    if path.startswith("/api/"):
        assert isinstance(body["error"], str), body
        return body["error"]
    if path.startswith(("/v1/shutdown", "/v1/models/install", "/v1/omg/", "/v1/store", "/v1/loaded")):
        assert isinstance(body["code"], int) and "details" in body, body
        return body["message"]
    assert body["error"]["type"] and "message" in body["error"], body
    return body["error"]["message"]


def _unchanged(d: DaemonProc) -> None:
    """The daemon is alive, holds only the model it started with, and runs no job."""
    assert d.proc is not None and d.proc.poll() is None, "the daemon stopped"
    tags = httpx.get(d.http + "/api/tags", timeout=10).json()["models"]
    assert [m["name"] for m in tags] == ["smollm2:latest"], tags
    assert httpx.get(d.http + "/v1/jobs", timeout=10).json().get("jobs", []) == []


CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# Every dialect's state-changing and inference routes, with JSON bodies.
STATEFUL = [
    ("POST", "/v1/shutdown", {}),
    ("POST", "/v1/models/install", {"source": "hf.co/org/repo"}),
    ("POST", "/v1/store:gc", {}),
    ("POST", "/v1/loaded/smollm2:unload", {}),
    ("DELETE", "/v1/store/models/smollm2", None),
    ("POST", "/v1/omg/chat", CHAT),
    ("POST", "/api/copy", {"source": "smollm2", "destination": "stolen"}),
    ("POST", "/api/pull", {"model": "hf.co/org/repo"}),
    ("DELETE", "/api/delete", {"model": "smollm2"}),
    ("POST", "/api/chat", CHAT),
    ("POST", "/api/generate", {"model": "smollm2", "prompt": "hi"}),
    ("POST", "/api/embed", {"model": "smollm2", "input": "hi"}),
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions", {"model": "smollm2", "prompt": "hi"}),
    ("POST", "/v1/embeddings", {"model": "smollm2", "input": "hi"}),
]
JSON_ROUTES = [r for r in STATEFUL if r[2] is not None]


def _send(d: DaemonProc, method: str, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else None
    return httpx.request(method, d.http + path, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize("browser", [
    {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8", "Sec-Fetch-Site": "cross-site"},
    {"Origin": EVIL, "Content-Type": "application/json"},
    {"Origin": "null", "Content-Type": "text/plain"},  # sandboxed iframes, file:// pages
    {"Origin": f"{EVIL}:11434"},
    {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},  # a browser that left Origin out
], ids=["simple-text-plain", "json", "null-origin", "no-type", "sec-fetch-only"])
@pytest.mark.parametrize("method,path,body", STATEFUL, ids=[f"{m} {p}" for m, p, _ in STATEFUL])
def test_cross_site_requests_refused(edge: DaemonProc, browser: dict[str, str], method: str,
                                     path: str, body: object) -> None:
    r = _send(edge, method, path, body, browser)
    assert r.status_code == 403, (r.status_code, r.text)
    assert "refused" in _dialect_error(path, r)
    _unchanged(edge)


def test_cross_site_audio_upload_refused(edge: DaemonProc) -> None:
    # Multipart stays multipart (the audio routes read forms), but not from a foreign page.
    r = httpx.post(edge.http + "/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")},
                   data={"model": "whisper"}, headers={"Origin": EVIL}, timeout=30)
    assert r.status_code == 403 and "refused" in r.json()["error"]["message"]


@pytest.mark.parametrize("ctype", ["text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x",
                                   "application/xml", ""])
@pytest.mark.parametrize("method,path,body", JSON_ROUTES, ids=[f"{m} {p}" for m, p, _ in JSON_ROUTES])
def test_json_routes_refuse_bodies_that_are_not_json(edge: DaemonProc, ctype: str, method: str,
                                                     path: str, body: object) -> None:
    r = _send(edge, method, path, body, {"Content-Type": ctype})
    assert r.status_code == 415, (r.status_code, r.text)
    assert "must be JSON" in _dialect_error(path, r)
    _unchanged(edge)


def test_browser_form_posts_refused_but_curl_d_works(edge: DaemonProc) -> None:
    form = "application/x-www-form-urlencoded"
    body = json.dumps({"model": "smollm2"})
    # `curl -d` sends this type with a JSON body, as ollama's documentation does everywhere.
    r = httpx.post(edge.http + "/api/show", content=body, headers={"Content-Type": form})
    assert r.status_code == 200, r.text
    # From a browser (Sec-Fetch-* headers; a same-origin page would send JSON): refused.
    r = httpx.post(edge.http + "/api/show", content=body, headers={"Content-Type": form, "Sec-Fetch-Mode": "no-cors"})
    assert r.status_code == 415, r.text


def test_clients_without_origin_and_same_origin_pages_work(edge: DaemonProc) -> None:
    body = json.dumps({"model": "smollm2"})
    for headers in ({}, {"Content-Type": "application/json"},
                    # the console, served by the daemon itself: Origin is the URL's own
                    {"Content-Type": "application/json", "Origin": edge.http, "Sec-Fetch-Site": "same-origin"},
                    {"Content-Type": "application/json", "Origin": f"http://localhost:{edge.http_port}",
                     "Host": f"localhost:{edge.http_port}"}):
        r = httpx.post(edge.http + "/api/show", content=body, headers=headers)
        assert r.status_code == 200, (headers, r.text)
    # Another port of the same host is another origin (another program's page).
    r = httpx.post(edge.http + "/api/show", content=body,
                   headers={"Origin": f"http://127.0.0.1:{edge.http_port + 1}", "Sec-Fetch-Site": "same-site"})
    assert r.status_code == 403
    # Reads are not refused: the browser keeps their answers from the page (no CORS header).
    r = httpx.get(edge.http + "/api/tags", headers={"Origin": EVIL})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("method,path,body", STATEFUL, ids=[f"{m} {p}" for m, p, _ in STATEFUL])
def test_configured_origins_do_not_let_others_in(with_origins: DaemonProc, method: str, path: str,
                                                 body: object) -> None:
    r = _send(with_origins, method, path, body, {"Origin": EVIL, "Content-Type": "text/plain"})
    assert r.status_code == 403, r.text
    _unchanged(with_origins)


def test_configured_origin_is_allowed(with_origins: DaemonProc) -> None:
    origin = "http://console.example:8080"
    pre = httpx.options(with_origins.http + "/api/show", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
    r = httpx.post(with_origins.http + "/api/show", json={"model": "smollm2"}, headers={"Origin": origin})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    # Configured or not, a text/plain body is not JSON.
    r = httpx.post(with_origins.http + "/api/copy", content=json.dumps({"source": "smollm2", "destination": "x"}),
                   headers={"Origin": origin, "Content-Type": "text/plain"})
    assert r.status_code == 415
    _unchanged(with_origins)


@pytest.mark.parametrize("host", [
    "127.0.0.1:{port}@evil.com", "127.0.0.1:evil", "127.0.0.1:{port}:1", "localhost:{port}/x",
    "localhost:+80", "127.0.0.1:99999", "[::1", "[::1]x", "[::1]:{port}@evil.com", "evil.com#127.0.0.1",
    "127.0.0.1 evil.com", "user@127.0.0.1", "evil.com", "localhost.evil.com", "",
])
def test_host_header_parsed_strictly(edge: DaemonProc, host: str) -> None:
    r = httpx.get(edge.http + "/api/tags", headers={"Host": host.format(port=edge.http_port)})
    assert r.status_code == 403, host


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "127.0.0.2"])
def test_loopback_host_headers_accepted(edge: DaemonProc, host: str) -> None:
    r = httpx.get(edge.http + "/api/tags", headers={"Host": host.format(port=edge.http_port)})
    assert r.status_code == 200, host


# Lone surrogates, in every field kind and dialect: JSON escapes and raw UTF-8-encoded ones.
_LONE = ["\\ud800", "\\udfff", "a\\udc00b", "\\ud83d"]  # the last: a high half with no low half
SURROGATE_CASES = [
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "x"}]}', "model"),
    ("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": "%s"}]}',
     "messages[0].content"),
    ("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": "x", "name": "%s"}]}',
     "messages[0].name"),
    ("/v1/chat/completions", '{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "stop": ["%s"]}',
     "stop[0]"),
    ("/v1/completions", '{"model": "smollm2", "prompt": "%s"}', "prompt"),
    ("/v1/embeddings", '{"model": "smollm2", "input": ["ok", "%s"]}', "input[1]"),
    ("/api/chat", '{"model": "smollm2", "messages": [{"role": "user", "content": "%s"}]}', "messages[0].content"),
    ("/api/chat", '{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], '
                  '"options": {"stop": ["%s"]}}', "options.stop[0]"),
    ("/api/generate", '{"model": "%s", "prompt": "x"}', "model"),
    ("/api/generate", '{"model": "smollm2", "prompt": "x", "system": "%s"}', "system"),
    ("/api/show", '{"model": "%s"}', "model"),
    ("/api/copy", '{"source": "smollm2", "destination": "%s"}', "destination"),
    ("/v1/omg/chat", '{"model": "smollm2", "messages": [{"role": "user", "content": "%s"}]}',
     "messages[0].content"),
    ("/v1/models/install", '{"source": "%s"}', "source"),
]


@pytest.mark.parametrize("lone", _LONE)
@pytest.mark.parametrize("path,template,field", SURROGATE_CASES, ids=[f"{p} {f}" for p, _, f in SURROGATE_CASES])
def test_lone_surrogates_are_bad_input(edge: DaemonProc, lone: str, path: str, template: str, field: str) -> None:
    r = httpx.post(edge.http + path, content=(template % lone).encode(),
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    message = _dialect_error(path, r)
    assert "surrogate" in message and f"'{field}'" in message, message
    if path.startswith("/v1/") and not path.startswith(("/v1/omg", "/v1/models/install")):
        assert r.json()["error"]["param"] == field


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/api/show"])
def test_utf8_encoded_surrogates_are_bad_input(edge: DaemonProc, path: str) -> None:
    raw = b'{"model": "smollm2", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'
    r = httpx.post(edge.http + path, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in _dialect_error(path, r)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/v1/omg/chat"])
def test_too_many_messages_answered_at_once(edge: DaemonProc, path: str) -> None:
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}] * 200_000})
    start = time.monotonic()
    r = httpx.post(edge.http + path, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert time.monotonic() - start < 10
    assert r.status_code == 400 and "OMG_MAX_MESSAGES" in _dialect_error(path, r), r.text


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"model": "smollm2", "messages": [{"role": "user", "content": "x" * 5_000_000}] * 2}),
    ("/api/generate", {"model": "smollm2", "prompt": "hello " * 1_500_000}),
    ("/v1/omg/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "x" * 9_000_000}]}),
])
def test_too_much_text_answered_at_once(edge: DaemonProc, path: str, body: dict) -> None:
    start = time.monotonic()
    r = httpx.post(edge.http + path, json=body, timeout=60)
    assert time.monotonic() - start < 10
    assert r.status_code == 413 and "OMG_MAX_TEXT_CHARS" in _dialect_error(path, r), r.text


# Request heads: bounded in size and count, answered 431/414, memory flat.

def _raw(d: DaemonProc, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` on a fresh connection and return what the daemon answers (b"" if nothing)."""
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:  # the daemon stopped reading and closed: expected past a limit
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


@pytest.mark.parametrize("head,status", [
    (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (100 << 10) + b"\r\n\r\n", 431),
    (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n" + b"X-Many: b\r\n" * 200 + b"\r\n", 431),
    (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n"  # under the count, over the size
     + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(90)) + b"\r\n", 431),
    (b"GET /api/" + b"a" * (20 << 10) + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (b"GET /v1/models?" + b"q=1&" * (8 << 10) + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
])
def test_oversized_request_heads_refused(edge: DaemonProc, head: bytes, status: int) -> None:
    answer = _raw(edge, head)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert "limit" in json.dumps(body) or "more than" in json.dumps(body)


def _rss(d: DaemonProc) -> int:
    assert d.proc is not None
    return psutil.Process(d.proc.pid).memory_info().rss


@pytest.mark.parametrize("prefix,unit", [
    (b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Big: ", b"a" * (1 << 20)),  # one endless header value
    (b"GET /", b"a" * (1 << 20)),  # an endless URL
    (b"GET /api/tags HTTP/1.1\r\n", b"X-h: v\r\n" * (1 << 17)),  # an endless stream of headers
])
def test_memory_stays_flat_under_endless_heads(edge: DaemonProc, prefix: bytes, unit: bytes) -> None:
    before = _rss(edge)
    sent = 0
    with socket.create_connection(("127.0.0.1", edge.http_port), timeout=10) as s:
        try:
            s.sendall(prefix)
            while sent < (64 << 20):
                s.sendall(unit)
                sent += len(unit)
        except OSError:
            pass
    grown = _rss(edge) - before
    assert sent < (64 << 20), "the daemon read 64 MiB of request head"
    assert grown < (16 << 20), f"daemon RSS grew {grown >> 20} MiB"
    assert httpx.get(edge.http + "/api/version").status_code == 200


# Slow clients.

def _dripper(d: DaemonProc) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=30)
    s.sendall(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Drip: ")
    return s


def _closed_within(s: socket.socket, seconds: float) -> bytes | None:
    """What the daemon sent before closing `s`, dripping a byte every 0.2 s meanwhile; None
    if it was still open after `seconds`."""
    deadline = time.monotonic() + seconds
    s.settimeout(0.2)
    got = b""
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
        except TimeoutError:
            try:
                s.sendall(b"a")
            except OSError:
                return got
        except OSError:
            return got
    return None


def test_dripping_headers_are_timed_out(edge: DaemonProc) -> None:
    drippers = [_dripper(edge) for _ in range(5)]
    silent = socket.create_connection(("127.0.0.1", edge.http_port))  # connects, sends nothing
    results: list[bytes | None] = [None] * len(drippers)

    def watch(i: int) -> None:
        results[i] = _closed_within(drippers[i], HEADER_TIMEOUT + 5)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(drippers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert got is not None, "a dripping connection was still open"
        assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got[:100]
    silent.settimeout(HEADER_TIMEOUT + 5)
    assert silent.recv(100) == b""  # closed
    for s in [*drippers, silent]:
        s.close()


def test_stalled_body_is_timed_out(edge: DaemonProc) -> None:
    with socket.create_connection(("127.0.0.1", edge.http_port), timeout=BODY_TIMEOUT + 10) as s:
        s.sendall(b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"model\": ")
        start = time.monotonic()
        answer = s.recv(4096)
        assert time.monotonic() - start < BODY_TIMEOUT + 5
        assert answer.startswith(b"HTTP/1.1 408 ") and b"OMG_HTTP_BODY_TIMEOUT" in answer, answer


def test_drippers_cannot_starve_real_clients(edge: DaemonProc) -> None:
    assert edge.proc is not None
    daemon = psutil.Process(edge.proc.pid)
    stop = threading.Event()
    drippers = [_dripper(edge) for _ in range(20)]

    def drip() -> None:
        while not stop.wait(0.2):
            for s in drippers:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass

    t = threading.Thread(target=drip)
    t.start()
    try:
        time.sleep(0.3)
        open_conns = [c for c in daemon.net_connections("tcp")
                      if c.laddr and c.laddr.port == edge.http_port and c.status == psutil.CONN_ESTABLISHED]
        assert len(open_conns) <= MAX_CONNECTIONS
        for _ in range(5):  # each real request finds room, though drippers keep the limit full
            start = time.monotonic()
            r = httpx.get(edge.http + "/api/version", timeout=5)
            assert r.status_code == 200 and time.monotonic() - start < 2
    finally:
        stop.set()
        t.join()
        for s in drippers:
            s.close()


def test_base64_audio_is_bound_by_the_body_limit_only(edge: DaemonProc) -> None:
    # TranscribeRequest.audio is bytes: base64 text in JSON, which the text bound must not cut.
    import base64

    audio = base64.b64encode(b"\0" * 7_000_000).decode()  # 9.3 M characters, under 32 MiB
    r = httpx.post(edge.http + "/v1/omg/transcribe", json={"model": "no-such-whisper", "audio": audio}, timeout=60)
    assert r.status_code == 404 and "not found" in r.json()["message"], r.text[:300]
