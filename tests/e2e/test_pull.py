"""Pulls through the daemon from the fake hub: the model store's promises, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, PtySession, gguf_with_uint32, new_daemon, run_in_pty

pytestmark = pytest.mark.slow
REPO = "test-org/smol-GGUF"
MODEL = f"hf.co/{REPO}:Q4_1"


@pytest.fixture(scope="module")
def model_bytes(gguf_path: Path) -> bytes:
    return gguf_path.read_bytes()


@pytest.fixture()
def hub(model_bytes: bytes) -> Iterator[FakeHub]:
    repos = [
        FakeRepo(REPO, {"smol.Q4_1.gguf": model_bytes, "README.md": b"# smol\n", "params.json": b'{"x": 1}'}),
        FakeRepo("test-org/gated-GGUF", {"g.Q4_1.gguf": model_bytes}, gated=True),
        FakeRepo("test-org/evil", {"../../escape.gguf": b"x" * 10}),
    ]
    with FakeHub(repos) as h:
        yield h


def _daemon(tmp: Path, hub: FakeHub, **env: str) -> DaemonProc:
    extra = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp / "hf"), "HF_HUB_DISABLE_XET": "1", **env}
    return new_daemon(tmp, extra_env=extra)


def _wait_job(d: DaemonProc, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{d.http}/v1/jobs/{job_id}").json()
        if job["state"] in ("JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def _install(d: DaemonProc, source: str, **kw: object) -> str:
    r = httpx.post(f"{d.http}/v1/models/install", json={"source": source, **kw})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _served_blob_bytes(hub: FakeHub) -> int:
    return hub.bytes_served


def test_pull_chat_and_hf_cache_layout(tmp_path: Path, hub: FakeHub, model_bytes: bytes) -> None:
    d = _daemon(tmp_path, hub).start()
    try:
        r = d.omg("pull", MODEL, "--quiet")
        assert r.returncode == 0, r.stderr
        assert "pulled" in r.stdout
        listed = json.loads(d.omg("model", "list", "--json").stdout)["models"]
        rec = next(m for m in listed if m["name"] == MODEL)
        assert rec["revision"]["commit"] == hub.repos[REPO].commit and rec["gguf"]["quantization"] == "Q4_1"
        assert {a["filename"] for a in rec["artifacts"]} == {"smol.Q4_1.gguf", "README.md", "params.json"}
        # Usable by name in the APIs.
        client = openai.OpenAI(base_url=d.http + "/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.usage.completion_tokens == 4
        # huggingface_hub, offline, finds what we pulled.
        code = ("import huggingface_hub as h; print(h.hf_hub_download(%r, 'smol.Q4_1.gguf', cache_dir=%r))"
                % (REPO, str(tmp_path / "hf")))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        path = Path(out.stdout.strip().splitlines()[-1])
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(model_bytes).digest()
        assert not list((tmp_path / "hf").rglob("*.omg-partial"))
        # A second pull moves no bytes.
        served = hub.bytes_served
        job = _wait_job(d, _install(d, MODEL, name="again"))
        assert job["state"] == "JOB_STATE_DONE" and int(job.get("downloadedBytes", 0)) == 0
        assert hub.bytes_served == served
    finally:
        d.stop()


def test_pull_reuses_existing_hf_cache(tmp_path: Path, hub: FakeHub) -> None:
    code = ("import huggingface_hub as h; h.snapshot_download(%r, cache_dir=%r)" % (REPO, str(tmp_path / "hf")))
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1")
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
    served = hub.bytes_served
    d = _daemon(tmp_path, hub).start()
    try:
        job = _wait_job(d, _install(d, MODEL))
        assert job["state"] == "JOB_STATE_DONE", job
        assert hub.bytes_served == served  # nothing downloaded again
        assert {f["state"] for f in job["files"]} == {"reused"}
    finally:
        d.stop()


def test_kill_9_mid_download_resumes_after_restart(tmp_path: Path, hub: FakeHub, model_bytes: bytes) -> None:
    hub.faults.bytes_per_second = 25_000_000  # ~4 s for the model: time to kill it midway
    d = _daemon(tmp_path, hub).start()
    job_id = _install(d, MODEL)
    cache = tmp_path / "hf"
    deadline = time.monotonic() + 30
    kept = 0

    def present() -> int:
        # Bytes the download claims durable: its ranges' saved progress (a sparse file's size
        # says nothing), or a single stream's length.
        for meta in cache.rglob("*.omg-partial.segments"):
            return sum(json.loads(meta.read_text())["done"])
        return sum(p.stat().st_size for p in cache.rglob("*.omg-partial"))

    while time.monotonic() < deadline:
        try:
            kept = present()
        except (OSError, ValueError):
            continue
        if kept > 20_000_000:
            break
        time.sleep(0.05)
    assert kept > 20_000_000, "no partial download appeared"
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    sha = hashlib.sha256(model_bytes).hexdigest()
    assert not (cache / f"models--test-org--smol-GGUF/blobs/{sha}").exists()  # no half blob visible
    kept = present()
    hub.faults.bytes_per_second = None
    served_before = hub.bytes_served
    # Kill the orphaned worker-less daemon's leftovers and restart on the same home.
    d2 = DaemonProc(home=d.home, http_port=d.http_port, grpc_port=d.grpc_port, extra_env=d.extra_env).start()
    try:
        job = _wait_job(d2, job_id)
        assert job["state"] == "JOB_STATE_DONE", job
        assert hub.bytes_served - served_before <= len(model_bytes) - kept + (1 << 20)
        blob = cache / f"models--test-org--smol-GGUF/blobs/{sha}"
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
    finally:
        d2.stop()


def test_flipped_byte_is_rejected_and_nothing_published(tmp_path: Path, hub: FakeHub) -> None:
    hub.faults.flip_byte_at = 12345
    d = _daemon(tmp_path, hub).start()
    try:
        job = _wait_job(d, _install(d, MODEL))
        assert job["state"] == "JOB_STATE_FAILED" and "do not match" in job["error"]
        assert not list((tmp_path / "hf").rglob("blobs/*" + "[0-9a-f]" * 4)) or all(
            p.stat().st_size < 1000 for p in (tmp_path / "hf").rglob("blobs/*"))
        assert not list((tmp_path / "hf").rglob("*.omg-partial"))
        assert MODEL not in d.omg("model", "list").stdout
    finally:
        d.stop()


def test_server_ignoring_range_and_dropped_connections(tmp_path: Path, hub: FakeHub, model_bytes: bytes) -> None:
    sha = hashlib.sha256(model_bytes).hexdigest()
    folder = tmp_path / "hf" / "models--test-org--smol-GGUF" / "blobs"
    folder.mkdir(parents=True)
    (folder / f"{sha}.omg-partial").write_bytes(model_bytes[:3_000_000])  # a previous partial
    hub.faults.ignore_range = True
    hub.faults.drop_after_bytes = 10_000_000
    hub.faults.drop_times = 1
    d = _daemon(tmp_path, hub).start()
    try:
        job = _wait_job(d, _install(d, MODEL))
        assert job["state"] == "JOB_STATE_DONE", job
        assert hashlib.sha256((folder / sha).read_bytes()).hexdigest() == sha
    finally:
        d.stop()


def test_concurrent_pulls_download_once(tmp_path: Path, hub: FakeHub, model_bytes: bytes) -> None:
    hub.faults.bytes_per_second = 60_000_000
    d = _daemon(tmp_path, hub).start()
    try:
        served = hub.bytes_served
        ids = [_install(d, MODEL, name=f"copy{i}") for i in range(2)]
        jobs = [_wait_job(d, i) for i in ids]
        assert all(j["state"] == "JOB_STATE_DONE" for j in jobs), jobs
        assert hub.bytes_served - served < len(model_bytes) * 1.1
    finally:
        d.stop()


def test_token_goes_only_to_the_hub(tmp_path: Path, hub: FakeHub) -> None:
    d = _daemon(tmp_path, hub, HF_TOKEN=hub.token).start()
    try:
        job = _wait_job(d, _install(d, "hf.co/test-org/gated-GGUF:Q4_1"))
        assert job["state"] == "JOB_STATE_DONE", job
        cdn = [s for s in hub.seen if s.path.startswith("/blobs/")]
        api = [s for s in hub.seen if s.path.startswith("/api/") or "/resolve/" in s.path]
        assert cdn and all(s.authorization is None for s in cdn)
        assert api and all(s.authorization == f"Bearer {hub.token}" for s in api)
    finally:
        d.stop()


def test_pull_errors_are_actionable(tmp_path: Path, hub: FakeHub) -> None:
    d = _daemon(tmp_path, hub).start()
    try:
        gated = _wait_job(d, _install(d, "test-org/gated-GGUF"))
        assert gated["state"] == "JOB_STATE_FAILED" and "gated" in gated["error"] and "HF_TOKEN" in gated["error"]
        missing = _wait_job(d, _install(d, "test-org/nope"))
        assert missing["state"] == "JOB_STATE_FAILED" and "not found" in missing["error"]
        rev = _wait_job(d, _install(d, f"{REPO}@no-such-branch"))
        assert "revision not found" in rev["error"]
        quant = _wait_job(d, _install(d, f"hf.co/{REPO}:Q9_X"))
        assert "Q4_1" in quant["error"]  # the message lists what there is
        evil = _wait_job(d, _install(d, "test-org/evil"))
        assert evil["state"] == "JOB_STATE_FAILED" and "invalid file name" in evil["error"]
        assert not (tmp_path / "escape.gguf").exists() and not list(tmp_path.rglob("escape.gguf"))
        for bad in ("../../etc/passwd", "org/repo@../../x", "org/../x", "/abs/path", "org/repo:Q4\x00"):
            r = httpx.post(f"{d.http}/v1/models/install", json={"source": bad})
            assert r.status_code == 400, (bad, r.text)
        hub.faults.rate_limit_429 = 2  # honoured with Retry-After, then it works
        ok = _wait_job(d, _install(d, MODEL))
        assert ok["state"] == "JOB_STATE_DONE", ok
    finally:
        d.stop()


def test_hostile_hub_answers_are_read_with_a_bound(tmp_path: Path, hub: FakeHub) -> None:
    """An error with an endless body and a listing that is an endless gzip (a decompression bomb)
    fail the pull with a clear error at once; the daemon reads neither to the end and stays up."""
    d = _daemon(tmp_path, hub).start()
    try:
        hub.faults.endless_error_body = True
        missing = _wait_job(d, _install(d, MODEL), timeout=30)
        assert missing["state"] == "JOB_STATE_FAILED" and "not found" in missing["error"], missing
        hub.faults.endless_error_body, hub.faults.gzip_bomb_listing = False, True
        bomb = _wait_job(d, _install(d, MODEL), timeout=30)
        assert bomb["state"] == "JOB_STATE_FAILED" and "larger than 16 MiB" in bomb["error"], bomb
        hub.faults.gzip_bomb_listing = False
        assert _wait_job(d, _install(d, MODEL))["state"] == "JOB_STATE_DONE"  # nothing stuck behind them
    finally:
        d.stop()


def test_split_gguf_pulls_as_one_model_and_chats(tmp_path: Path, gguf_path: Path) -> None:
    """A quantization split in parts (gguf-split layout) is pulled whole, without the repo's
    other quantizations or its projector, registered as one model whose size and parameters
    are all the parts', and llama.cpp loads it from the HF cache snapshot. Added locally, the
    first part registers every part; a later part alone gets an error naming the first."""
    from tests.helpers import split_gguf

    parts = split_gguf(gguf_path, tmp_path / "parts", parts=2)
    files = {p.name: p.read_bytes() for p in parts}
    files |= {"mmproj-smol-f16.gguf": b"GGUF projector stand-in", "smol.Q8_0.gguf": b"GGUF other quant stand-in"}
    with FakeHub([FakeRepo("test-org/smol-split-GGUF", files)]) as split_hub:
        d = _daemon(tmp_path, split_hub).start()
        try:
            job = _wait_job(d, _install(d, "hf.co/test-org/smol-split-GGUF:Q4_1", name="split"))
            assert job["state"] == "JOB_STATE_DONE", job
            fetched = {s.path.rsplit("/", 1)[-1] for s in split_hub.seen if "/resolve/" in s.path}
            assert fetched == {p.name for p in parts}, fetched
            info = json.loads(d.omg("model", "info", "split", "--json").stdout)
            assert [a["filename"] for a in info["artifacts"]] == [p.name for p in parts]
            assert int(info["sizeBytes"]) == sum(p.stat().st_size for p in parts)
            assert int(info["gguf"]["parameterCount"]) == 134515008  # SmolLM2-135M, all parts counted
            r = httpx.post(f"{d.http}/api/generate", json={"model": "split", "prompt": "The capital of France is", "raw": True,
                                                            "stream": False, "options": {"num_predict": 6,
                                                                                         "temperature": 0}},
                           timeout=120)
            assert r.status_code == 200 and "Paris" in r.json()["response"], r.text
            # Local files: the first part brings the rest; a later part alone is refused, clearly.
            later = d.omg("model", "add", str(parts[1]), "--name", "part2")
            assert later.returncode == 1 and f"use the first part, {parts[0].name}" in later.stderr, later.stderr
            assert d.omg("model", "add", str(parts[0]), "--name", "local-split").returncode == 0
            local = json.loads(d.omg("model", "info", "local-split", "--json").stdout)
            assert [a["localPath"] for a in local["artifacts"]] == [str(p) for p in parts]
        finally:
            d.stop()


def test_ollama_pull_copy_delete(tmp_path: Path, hub: FakeHub) -> None:
    d = _daemon(tmp_path, hub).start()
    try:
        with httpx.stream("POST", f"{d.http}/api/pull", json={"model": MODEL}, timeout=120) as r:
            statuses = [json.loads(line) for line in r.iter_lines() if line]
        assert statuses[0] == {"status": "pulling manifest"} and statuses[-1] == {"status": "success"}
        progress = [s for s in statuses if "digest" in s]
        assert progress and all(s["digest"].startswith("sha256:") and "total" in s for s in progress)
        assert any(s["completed"] == s["total"] for s in progress)
        assert {"status": "verifying sha256 digest"} in statuses
        assert httpx.post(f"{d.http}/api/copy", json={"source": MODEL, "destination": "smol-alias"}).status_code == 200
        tags = {m["name"]: m for m in httpx.get(f"{d.http}/api/tags").json()["models"]}
        assert tags["smol-alias:latest"]["digest"] == tags[MODEL]["digest"]  # untagged names listed :latest
        assert httpx.request("DELETE", f"{d.http}/api/delete", json={"model": "smol-alias"}).status_code == 200
        r = httpx.request("DELETE", f"{d.http}/api/delete", json={"model": "smol-alias"})
        assert r.status_code == 404 and "error" in r.json()
        r = httpx.post(f"{d.http}/api/pull", json={"model": "test-org/nope", "stream": False}, timeout=60)
        assert r.status_code == 500 and "not found" in r.json()["error"]
    finally:
        d.stop()


def test_rm_gc_du_verify(tmp_path: Path, hub: FakeHub, model_bytes: bytes, gguf_path: Path) -> None:
    d = _daemon(tmp_path, hub).start()
    cache = tmp_path / "hf"
    sha = hashlib.sha256(model_bytes).hexdigest()
    blob = cache / f"models--test-org--smol-GGUF/blobs/{sha}"
    try:
        assert d.omg("pull", MODEL, "--quiet").returncode == 0
        assert d.omg("pull", MODEL, "--name", "second", "--quiet").returncode == 0
        # A local add of the same bytes shares the content too (dedup by sha256).
        assert d.omg("model", "add", str(gguf_path), "--name", "local").returncode == 0
        du = json.loads(d.omg("model", "du", "--json").stdout)
        by_name = {m["name"]: m for m in du["models"]}
        assert int(by_name[MODEL].get("uniqueBytes", 0)) == 0  # every byte shared
        assert int(du["totalBytes"]) < 2 * len(model_bytes)
        r = d.omg("model", "rm", "second")
        assert r.returncode == 0 and "freed 0 B" in r.stdout and blob.exists()
        assert d.omg("model", "rm", "local").returncode == 0 and gguf_path.exists()  # user's file kept
        r = d.omg("model", "rm", MODEL)
        assert r.returncode == 0 and "freed 0 B" not in r.stdout
        assert not blob.exists()
        # gc: an orphan blob and a stale partial are found, reported by --dry-run, then removed.
        orphan = blob.parent / ("ab" * 32)
        orphan.write_bytes(b"orphan")
        stale = blob.parent / (("cd" * 32) + ".omg-partial")
        stale.write_bytes(b"partial")
        dry = d.omg("model", "gc", "--dry-run")
        assert orphan.name in dry.stdout and stale.name in dry.stdout and orphan.exists()
        assert d.omg("model", "gc").returncode == 0 and not orphan.exists() and not stale.exists()
        # verify: a flipped byte in a pulled file is reported.
        assert d.omg("pull", MODEL, "--quiet").returncode == 0
        assert d.omg("model", "verify", MODEL).returncode == 0
        with open(blob, "r+b") as f:
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 1]))
        bad = d.omg("model", "verify")
        assert bad.returncode == 1 and "CORRUPT" in bad.stdout and "smol.Q4_1.gguf" in bad.stdout
    finally:
        d.stop()


def test_default_quant_is_picked_and_named(tmp_path: Path, model_bytes: bytes) -> None:
    repo = FakeRepo("test-org/multi-GGUF", {"m.Q8_0.gguf": model_bytes, "m.Q4_K_M.gguf": model_bytes[:-1] + b"\x01",
                                            "m.Q2_K.gguf": b"GGUF-not-really"})
    with FakeHub([repo]) as hub:
        d = _daemon(tmp_path, hub).start()
        try:
            job = _wait_job(d, _install(d, "hf.co/test-org/multi-GGUF"))
            assert [f["filename"] for f in job["files"]] == ["m.Q4_K_M.gguf"]
            assert "picked Q4_K_M" in job["message"] and "Q2_K" in job["message"] and "Q8_0" in job["message"]
            low = _wait_job(d, _install(d, "hf.co/test-org/multi-GGUF:q8_0"))  # tags are case-insensitive
            assert [f["filename"] for f in low["files"]] == ["m.Q8_0.gguf"] and low["state"] == "JOB_STATE_DONE"
            # A link copied from the hub's page of one file pulls that quantization under the short name.
            link = _wait_job(d, _install(d, "https://huggingface.co/test-org/multi-GGUF/blob/main/m.Q8_0.gguf"))
            assert link["state"] == "JOB_STATE_DONE" and [f["filename"] for f in link["files"]] == ["m.Q8_0.gguf"]
            assert "hf.co/test-org/multi-GGUF@main:Q8_0" in d.omg("model", "list").stdout
        finally:
            d.stop()


def test_two_daemons_sharing_an_hf_cache_download_once(tmp_path: Path, hub: FakeHub, model_bytes: bytes) -> None:
    hub.faults.bytes_per_second = 50_000_000
    shared = {"HF_HUB_CACHE": str(tmp_path / "shared-hf")}
    a = _daemon(tmp_path / "a", hub, **shared).start()
    b = _daemon(tmp_path / "b", hub, **shared).start()
    try:
        served = hub.bytes_served
        ja, jb = _install(a, MODEL), _install(b, MODEL)
        done_a, done_b = _wait_job(a, ja), _wait_job(b, jb)
        assert done_a["state"] == "JOB_STATE_DONE" and done_b["state"] == "JOB_STATE_DONE", (done_a, done_b)
        assert hub.bytes_served - served < len(model_bytes) * 1.1  # one process waited for the other
    finally:
        a.stop()
        b.stop()


def test_pull_links_content_already_added_locally(tmp_path: Path, hub: FakeHub, gguf_path: Path) -> None:
    d = _daemon(tmp_path, hub).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "mine").returncode == 0
        served = hub.bytes_served
        job = _wait_job(d, _install(d, MODEL))
        assert job["state"] == "JOB_STATE_DONE"
        assert hub.bytes_served - served < 100_000  # only the small files crossed the network
    finally:
        d.stop()


def test_offline_hub_is_a_clear_error(tmp_path: Path) -> None:
    from tests.helpers import free_port

    d = new_daemon(tmp_path, extra_env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                        "HF_HUB_CACHE": str(tmp_path / "hf")}).start()
    try:
        r = d.omg("pull", "org/repo", "--quiet")
        assert r.returncode == 1 and "cannot reach the hub" in r.stderr
    finally:
        d.stop()


def test_cli_progress_bars_in_a_terminal(tmp_path: Path, hub: FakeHub) -> None:
    import re

    hub.faults.bytes_per_second = 40_000_000
    d = _daemon(tmp_path, hub).start()
    try:
        status, text = run_in_pty(["pull", MODEL], d.env)
        assert status == 0, text[-2000:]
        assert "smol.Q4_1.gguf" in text and "total" in text  # a bar per file and one overall
        assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? MB", text), text[-2000:]  # bytes done / total
        assert "pulled" in text
    finally:
        d.stop()


def test_pull_a_faster_whisper_repo_and_transcribe(tmp_path: Path, whisper_path: Path,
                                                   audio: dict[str, Path]) -> None:
    files = {p.name: p.read_bytes() for p in whisper_path.iterdir() if p.is_file()}
    with FakeHub([FakeRepo("Systran/faster-whisper-tiny.en", files)]) as whisper_hub:
        d = _daemon(tmp_path, whisper_hub).start()
        try:
            r = d.omg("pull", "Systran/faster-whisper-tiny.en", "--quiet")
            assert r.returncode == 0, r.stderr
            rec = json.loads(d.omg("model", "info", "Systran/faster-whisper-tiny.en", "--json").stdout)
            assert rec["kind"] == "MODEL_KIND_WHISPER" and rec["format"] == "ARTIFACT_FORMAT_CT2"
            main = next(a for a in rec["artifacts"] if a["filename"] == "model.bin")
            assert main["format"] == "ARTIFACT_FORMAT_CT2"
            with open(audio["wav"], "rb") as f:
                resp = httpx.post(f"{d.http}/v1/audio/transcriptions", files={"file": f},
                                  data={"model": "Systran/faster-whisper-tiny.en"}, timeout=60)
            assert resp.status_code == 200 and "fox" in resp.json()["text"].lower(), resp.text
        finally:
            d.stop()


def test_pull_a_gguf_embedding_model(tmp_path: Path, gguf_path: Path) -> None:
    # SmolLM2 with a pooling type in its header reads as an embedding model (as BERT GGUFs do).
    embed_gguf = gguf_with_uint32(gguf_path, "llama.pooling_type", 1)
    with FakeHub([FakeRepo("test-org/embed-GGUF", {"embed.Q4_1.gguf": embed_gguf})]) as embed_hub:
        d = _daemon(tmp_path, embed_hub).start()
        try:
            assert d.omg("pull", "hf.co/test-org/embed-GGUF", "--name", "emb", "--quiet").returncode == 0
            rec = json.loads(d.omg("model", "info", "emb", "--json").stdout)
            assert rec["kind"] == "MODEL_KIND_EMBEDDING"
            client = openai.OpenAI(base_url=d.http + "/v1", api_key="x", max_retries=0)
            vectors = client.embeddings.create(model="emb", input=["a cat", "a cat"], encoding_format="float").data
            assert vectors[0].embedding == vectors[1].embedding and len(vectors[0].embedding) == 576
            assert httpx.post(f"{d.http}/api/embed", json={"model": "emb", "input": "x"}).status_code == 200
            with pytest.raises(openai.BadRequestError) as e:
                client.chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
            assert "embedding model" in str(e.value)
            modes = {m["mode"] for m in json.loads(d.omg("ps", "--json").stdout)["models"]}
            assert modes == {"MODE_EMBEDDINGS"}  # its own worker, in its natural mode
        finally:
            d.stop()


def test_search_the_hub(tmp_path: Path, model_bytes: bytes) -> None:
    repos = [
        FakeRepo("bartowski/SmolLM2-135M-Instruct-GGUF", {"s.Q4_K_M.gguf": b"a", "s.Q8_0.gguf": b"b", "README.md": b""},
                 downloads=5000, likes=12, pipeline_tag="text-generation"),
        FakeRepo("someone/smollm2-notes", {"README.md": b"x"}, downloads=7),
        FakeRepo("Systran/faster-whisper-tiny", {"model.bin": b"x", "config.json": b"{}"}, downloads=900,
                 pipeline_tag="automatic-speech-recognition"),
    ]
    with FakeHub(repos) as search_hub:
        # huggingface_hub's own client reads the fake hub's search answer.
        code = ("import huggingface_hub as h; print([m.id for m in h.HfApi(endpoint=%r).list_models("
                "search='smollm2', sort='downloads', full=True)])" % search_hub.endpoint)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "bartowski/SmolLM2-135M-Instruct-GGUF" in out.stdout
        d = _daemon(tmp_path, search_hub).start()
        try:
            r = d.omg("search", "smollm2", "--json")
            assert r.returncode == 0, r.stderr
            hits = json.loads(r.stdout)["hits"]
            assert [h["repo"] for h in hits] == ["bartowski/SmolLM2-135M-Instruct-GGUF", "someone/smollm2-notes"]
            assert hits[0]["quantizations"] == ["Q4_K_M", "Q8_0"] and int(hits[0]["downloads"]) == 5000
            table = d.omg("search", "whisper").stdout
            assert "Systran/faster-whisper-tiny" in table and "automatic-speech-recognition" in table
            assert d.omg("search", "nothing-like-this").returncode == 1
            r = httpx.get(f"{d.http}/v1/store:search", params={"query": "smol", "limit": 1})
            assert r.status_code == 200 and len(r.json()["hits"]) == 1
        finally:
            d.stop()


def _cancel_selected_pull_and_quit(top: PtySession, d: DaemonProc, job: str) -> None:
    top.send("c")
    top.expect(f"cancelled pull {job}", timeout=20)
    assert _wait_job(d, job)["state"] == "JOB_STATE_CANCELLED"
    top.send("q")
    assert top.close() == 0


def test_top_shows_a_pull_and_a_chat_and_keys_act(tmp_path: Path, hub: FakeHub, gguf_path: Path) -> None:
    hub.faults.bytes_per_second = 1_000_000  # per connection, 4 ranges: ~25 s, the pull stays on screen
    d = _daemon(tmp_path, hub).start()
    top = PtySession(["top", "--interval", "0.5"], d.env)
    try:
        top.expect("loaded models")
        job = _install(d, MODEL)  # before the add: else the pull would link the added bytes, not download
        assert d.omg("model", "add", str(gguf_path), "--name", "local").returncode == 0
        r = httpx.post(f"{d.http}/api/generate", json={"model": "local", "prompt": "hi", "stream": False,
                                                        "options": {"num_predict": 8}}, timeout=60)
        assert r.status_code == 200
        screen = top.expect("MB/s", timeout=30)  # a pull with its rate
        top.read_for(1.5)
        screen += top.screen
        assert "pulls" in screen and job in screen and MODEL in screen
        assert "local" in screen and "chat" in screen and "cpu (" in screen  # the loaded model, the CPU row
        assert "loaded local" in screen  # the event list
        # Keys: the first row is the loaded model; u unloads it.
        top.send("u")
        top.expect("unloaded local", timeout=15)
        deadline = time.monotonic() + 10
        while json.loads(d.omg("ps", "--json").stdout).get("models") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not json.loads(d.omg("ps", "--json").stdout).get("models")
        # A pinned run: rows are now its model, the run, the pull; j selects the run, s stops it.
        r = httpx.post(f"{d.http}/v1/runs", json={"model": {"repo": "local"}}, timeout=60)
        assert r.status_code == 200, r.text
        run_id = r.json()["id"]
        running_row = rf"{run_id}\W+local\W+running"
        _expect_frame(top, lambda frame: re.search(running_row, frame) is not None, timeout=15)
        top.send("j")
        top.send("s")
        top.expect(f"stopped run {run_id}", timeout=15)
        assert httpx.get(f"{d.http}/v1/runs/{run_id}").json()["state"] == "RUN_STATE_STOPPED"
        _expect_frame(top, lambda frame: re.search(running_row, frame) is None, timeout=15)  # rows: the model?, the pull
        # The pull is the selected row now (the selection stays in range): c cancels it.
        _cancel_selected_pull_and_quit(top, d, job)
    finally:
        if top.proc.poll() is None:
            top.proc.kill()
        d.stop()


def _expect_frame(top: PtySession, ok: Callable[[str], bool], timeout: float) -> None:
    """Wait for a whole frame of the full-screen view (header to header) for which `ok` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        top.read_for(0.5)
        frames = top.screen.split("omg top — ")[1:-1]  # the last one may be half drawn
        if frames and ok(frames[-1]):
            return
    raise AssertionError(f"no such frame in {timeout} s: ...{top.screen[-4000:]}")


def test_top_over_a_slow_remote_link(tmp_path: Path, hub: FakeHub) -> None:
    """omg top through a link with 150 ms each way: the view fills, follows a pull, says so when
    the link drops and recovers when it is back, and its keys act across the link; the header's
    refresh time is the link's round trip."""
    from tests.fakes.slowlink import SlowLink

    hub.faults.bytes_per_second = 600_000  # per connection, 4 ranges: ~40 s, outlasting the link cut
    d = _daemon(tmp_path, hub).start()
    try:
        with SlowLink(d.grpc_port, latency_s=0.15) as link:
            env = {**d.env, "OMG_HOST": f"127.0.0.1:{link.port}"}
            top = PtySession(["top", "--interval", "0.5"], env)
            try:
                screen = top.expect("loaded models", timeout=30)
                assert f"127.0.0.1:{link.port}" in screen
                job = _install(d, MODEL)
                screen = top.expect("MB/s", timeout=30)
                assert job in screen
                refresh_ms = [int(ms) for ms in re.findall(r"refresh (\d+) ms", screen)]
                assert refresh_ms and max(refresh_ms) >= 300, refresh_ms  # every read crossed the link
                # The link drops: the view says so and keeps running; it comes back by itself.
                link.cut()
                top.expect("not answering", timeout=20)
                link.restore()
                _expect_frame(top, lambda frame: "not answering" not in frame and job in frame, timeout=30)
                _cancel_selected_pull_and_quit(top, d, job)
            finally:
                if top.proc.poll() is None:
                    top.proc.kill()
            assert link.stats.connections >= 1 and link.stats.downstream_bytes > 0
    finally:
        d.stop()


def test_a_diffusion_gguf_repo_pulls_the_quantization_its_tag_names(tmp_path: Path) -> None:
    from tests.unit.test_diffusion_files import FLUX, write_gguf

    q8 = write_gguf(tmp_path / "q8.gguf", "flux", FLUX, shape=(8, 64)).read_bytes()
    q4 = write_gguf(tmp_path / "q4.gguf", "flux", FLUX, shape=(8, 32)).read_bytes()
    repo = FakeRepo("test-org/flux-gguf", {"README.md": b"# flux\n", "flux1-dev-Q8_0.gguf": q8,
                                            "flux1-dev-Q4_0.gguf": q4})
    with FakeHub([repo]) as hub:
        d = _daemon(tmp_path, hub).start()
        try:
            served = hub.bytes_served
            job = _wait_job(d, _install(d, "test-org/flux-gguf:Q8_0"))
            assert job["state"] == "JOB_STATE_DONE", job
            assert [f["filename"] for f in job["files"] if f["filename"].endswith(".gguf")] == ["flux1-dev-Q8_0.gguf"]
            assert hub.bytes_served - served < len(q8) + 10_000  # the other quantization stays on the hub
            info = json.loads(d.omg("model", "info", "test-org/flux-gguf:Q8_0", "--json").stdout)
            assert info["kind"] == "MODEL_KIND_IMAGE" and info["format"] == "ARTIFACT_FORMAT_GGUF"
            assert info["diffusion"]["family"] == "flux" and info["diffusion"]["hasDenoiser"]
            assert not info["diffusion"].get("hasVae")
        finally:
            d.stop()


def test_a_diffusion_repo_pulls_one_checkpoint_not_every_variant(tmp_path: Path) -> None:
    from tests.unit.test_diffusion_files import SD1, write_safetensors

    full = write_safetensors(tmp_path / "full.safetensors", SD1, shape=(64, 64)).read_bytes()
    half = write_safetensors(tmp_path / "half.safetensors", SD1, shape=(8, 8)).read_bytes()
    repo = FakeRepo("test-org/sd-tiny", {
        "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}', "README.md": b"# sd\n",
        "sd-tiny.safetensors": full, "sd-tiny-fp16.safetensors": half, "sd-tiny.ckpt": b"PK" + b"\0" * 4096,
        "unet/diffusion_pytorch_model.safetensors": b"u" * 100_000, "unet/config.json": b"{}",
        "vae/diffusion_pytorch_model.safetensors": b"v" * 50_000})
    pipeline_only = FakeRepo("test-org/sd-pipeline", {
        "model_index.json": b"{}", "unet/diffusion_pytorch_model.safetensors": b"u" * 1000})
    with FakeHub([repo, pipeline_only]) as hub:
        d = _daemon(tmp_path, hub).start()
        try:
            served = hub.bytes_served
            job = _wait_job(d, _install(d, "test-org/sd-tiny"))
            assert job["state"] == "JOB_STATE_DONE", job
            assert sorted(f["filename"] for f in job["files"]) == ["README.md", "model_index.json",
                                                                    "sd-tiny-fp16.safetensors"]
            assert "picked sd-tiny-fp16.safetensors" in job["message"] and "sd-tiny.safetensors" in job["message"]
            assert hub.bytes_served - served < len(half) + 10_000  # no other variant, no pipeline folder
            info = json.loads(d.omg("model", "info", "test-org/sd-tiny", "--json").stdout)
            assert info["kind"] == "MODEL_KIND_IMAGE" and info["diffusion"]["family"] == "sd1"
            # :TAG names another checkpoint by a word of its name (or its whole name).
            tagged = _wait_job(d, _install(d, "test-org/sd-tiny:sd-tiny"))
            assert [f["filename"] for f in tagged["files"] if f["filename"].endswith(".safetensors")] == [
                "sd-tiny.safetensors"]
            missing = _wait_job(d, _install(d, "test-org/sd-tiny:q8"))
            assert missing["state"] == "JOB_STATE_FAILED" and "sd-tiny-fp16.safetensors" in missing["error"]
            refused = _wait_job(d, _install(d, "test-org/sd-pipeline"))
            assert refused["state"] == "JOB_STATE_FAILED" and "diffusers pipeline" in refused["error"]
            assert "test-org/sd-pipeline" not in d.omg("model", "list").stdout
        finally:
            d.stop()


def test_a_diffusers_pipeline_repo_pulls_one_variant_per_component_and_generates(
        tmp_path: Path, sd_pipeline_path: Path) -> None:
    def real(rel: str) -> bytes:
        return (sd_pipeline_path / rel).read_bytes()

    unet = "unet/diffusion_pytorch_model"
    small = {rel: real(rel) for rel in ("model_index.json", "unet/config.json", "vae/config.json",
                                        "text_encoder/config.json", "tokenizer/tokenizer_config.json",
                                        "scheduler/scheduler_config.json")}
    # As hub repos ship it: the UNet in variants (the fp16 file is the real one here; the plain
    # and non-EMA ones would be 3 GB on the hub), pickles beside, folders this version never reads.
    repo = FakeRepo("test-org/sd15-pipeline", {
        **small, "README.md": b"# sd15\n",
        f"{unet}.fp16.safetensors": real(f"{unet}.safetensors"), f"{unet}.safetensors": b"x" * 300_000,
        f"{unet}.non_ema.safetensors": b"x" * 300_000, f"{unet}.bin": b"PK" + b"\0" * 100_000,
        "vae/diffusion_pytorch_model.safetensors": real("vae/diffusion_pytorch_model.safetensors"),
        "text_encoder/model.safetensors": real("text_encoder/model.safetensors"),
        "text_encoder/pytorch_model.bin": b"PK" + b"\0" * 100_000,
        "safety_checker/model.safetensors": b"s" * 200_000, "onnx/unet/model.onnx": b"o" * 200_000})
    flux = FakeRepo("test-org/flux-pipeline", {
        "model_index.json": b'{"_class_name": "FluxPipeline"}',
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors": b"t" * 1000,
        "vae/diffusion_pytorch_model.safetensors": b"v" * 1000, "text_encoder/model.safetensors": b"c" * 1000})
    weights = sum(len(v) for k, v in repo.files.items() if k.endswith(".safetensors") and
                  k.startswith(("unet/diffusion_pytorch_model.fp16", "vae/", "text_encoder/")))
    with FakeHub([repo, flux]) as hub:
        d = _daemon(tmp_path, hub, OMG_NUM_THREADS="1").start()
        try:
            served = hub.bytes_served
            job = _wait_job(d, _install(d, "test-org/sd15-pipeline:fp16"), timeout=300)
            assert job["state"] == "JOB_STATE_DONE", job
            assert sorted(f["filename"] for f in job["files"]) == sorted([
                "README.md", *small, f"{unet}.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors"])
            assert hub.bytes_served - served < weights + 50_000  # no other variant, pickle or folder
            info = json.loads(d.omg("model", "info", "test-org/sd15-pipeline:fp16", "--json").stdout)
            assert info["kind"] == "MODEL_KIND_IMAGE" and info["diffusion"]["family"] == "sd1"
            assert info["diffusion"]["hasVae"] and info["diffusion"]["hasTextEncoder"]
            assert info["diffusion"]["dtypes"] == ["F16", "F8_E4M3"]

            # sd.cpp reads the pipeline, the fp16 UNet shown to it under the plain name.
            r = httpx.post(f"{d.http}/v1/images/generations", timeout=300, json={
                "model": "test-org/sd15-pipeline:fp16", "prompt": "a boat", "size": "64x64",
                "response_format": "b64_json", "seed": 1, "steps": 2})
            assert r.status_code == 200, r.text
            import base64
            import io

            from PIL import Image
            image = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
            assert image.format == "PNG" and image.size == (64, 64)
            assert len(set(image.tobytes())) > 16  # decoded from latents, not a blank frame

            # The same folder on disk registers in place, as the pull took it: same UNet, same digest.
            added = d.omg("model", "add", str(sd_pipeline_path), "--name", "local-sd15")
            assert added.returncode == 0, added.stderr
            local = json.loads(d.omg("model", "info", "local-sd15", "--json").stdout)
            assert local["kind"] == "MODEL_KIND_IMAGE" and local["diffusion"]["family"] == "sd1"
            assert local["artifacts"][0]["filename"] == f"{unet}.safetensors"
            assert local["artifacts"][0]["sha256"] == info["artifacts"][0]["sha256"]

            # A transformer pipeline (FLUX) is refused before anything is downloaded.
            served = hub.bytes_served
            refused = _wait_job(d, _install(d, "test-org/flux-pipeline"))
            assert refused["state"] == "JOB_STATE_FAILED" and "diffusion transformer" in refused["error"]
            assert hub.bytes_served - served < 5_000
        finally:
            d.stop()


def test_a_diffusion_model_pulls_with_its_parts_from_other_repos_and_generates(
        tmp_path: Path, sd_parts_path: Path, sd_model_path: Path) -> None:
    """The tiny checkpoint's UNet, autoencoder and CLIP-L in three repos, as FLUX's transformer, VAE
    and text encoders are published: one pull with --part takes what it names (nothing else of
    those repos), registers one model and generates the single file's pixels."""
    def real(name: str) -> bytes:
        return (sd_parts_path / name).read_bytes()

    unet = FakeRepo("test-org/sdxs-unet", {"sdxs-unet.safetensors": real("sdxs-unet.safetensors"),
                                           "README.md": b"# a UNet alone\n"})
    vae = FakeRepo("test-org/sdxs-vae", {"sdxs-taesd.safetensors": real("sdxs-taesd.safetensors")})
    encoders = FakeRepo("test-org/text-encoders", {"clip_l.safetensors": real("clip_l.safetensors"),
                                                   "t5xxl_fp16.safetensors": b"t" * 400_000})
    # The same three files in ComfyUI's folders, as Comfy-Org's repackaged repos ship models (the
    # choice among precisions is tests/unit/test_diffusion_pull.py's), and a folder not taken.
    comfy = FakeRepo("test-org/sdxs-comfy", {
        "README.md": b"# repackaged\n",
        "split_files/diffusion_models/sdxs-unet.safetensors": real("sdxs-unet.safetensors"),
        "split_files/vae/sdxs-taesd.safetensors": real("sdxs-taesd.safetensors"),
        "split_files/text_encoders/clip_l.safetensors": real("clip_l.safetensors"),
        "split_files/clip_vision/clip_vision_h.safetensors": b"v" * 100_000})
    with FakeHub([unet, vae, encoders, comfy]) as hub:
        d = _daemon(tmp_path, hub, OMG_NUM_THREADS="1").start()
        try:
            # A part repo with several weight files must name one; refused before any download.
            failed = _wait_job(d, _install(d, "test-org/sdxs-unet", name="bad", parts=["test-org/text-encoders"]))
            assert failed["state"] == "JOB_STATE_FAILED", failed
            assert "clip_l.safetensors, t5xxl_fp16.safetensors" in failed["error"] and \
                "test-org/text-encoders/FILE" in failed["error"], failed
            served = hub.bytes_served
            pulled = d.omg("pull", "test-org/sdxs-unet", "--name", "sdxs", "--quiet",
                           "--part", "test-org/sdxs-vae", "--part", "test-org/text-encoders/clip_l.safetensors",
                           timeout=300)
            assert pulled.returncode == 0, pulled.stderr
            weights = sum(len(real(n)) for n in ("sdxs-unet.safetensors", "sdxs-taesd.safetensors", "clip_l.safetensors"))
            assert weights <= hub.bytes_served - served < weights + 50_000  # no t5xxl
            info = json.loads(d.omg("model", "info", "sdxs", "--json").stdout)
            assert {a["filename"]: a.get("role") for a in info["artifacts"]} == {
                "sdxs-unet.safetensors": "diffusion_model", "README.md": None,
                "test-org/sdxs-vae/sdxs-taesd.safetensors": "vae",
                "test-org/text-encoders/clip_l.safetensors": "clip_l"}
            assert info["diffusion"]["hasVae"] and info["diffusion"]["hasTextEncoder"]
            # Each part sits in its own repo's folder of the Hugging Face cache.
            assert (tmp_path / "hf" / "models--test-org--text-encoders" / "refs" / "main").is_file()
            assert d.omg("model", "add", str(sd_model_path), "--name", "whole").returncode == 0

            def pixels(model: str) -> bytes:
                import base64
                import io

                from PIL import Image
                r = httpx.post(f"{d.http}/v1/images/generations", timeout=300, json={
                    "model": model, "prompt": "a boat", "size": "64x64", "response_format": "b64_json",
                    "seed": 2, "steps": 2})
                assert r.status_code == 200, r.text
                return Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).tobytes()

            assert pixels("sdxs") == pixels("whole")
            served = hub.bytes_served
            job = _wait_job(d, _install(d, "test-org/sdxs-comfy"), timeout=300)
            assert job["state"] == "JOB_STATE_DONE", job
            assert hub.bytes_served - served < 50_000  # the same bytes as the first pull: linked, not fetched
            comfy_info = json.loads(d.omg("model", "info", "test-org/sdxs-comfy", "--json").stdout)
            assert {a["filename"]: a.get("role") for a in comfy_info["artifacts"]} == {
                "README.md": None, "split_files/diffusion_models/sdxs-unet.safetensors": "diffusion_model",
                "split_files/vae/sdxs-taesd.safetensors": "vae", "split_files/text_encoders/clip_l.safetensors": "clip_l"}
            assert pixels("test-org/sdxs-comfy") == pixels("whole")
            # A VAE is no diffusion model to add parts to; nothing registers.
            failed = _wait_job(d, _install(d, "test-org/sdxs-vae", name="bad",
                                           parts=["test-org/text-encoders/clip_l.safetensors"]))
            assert failed["state"] == "JOB_STATE_FAILED" and "takes no --part" in failed["error"], failed
            assert "bad" not in d.omg("model", "list").stdout
        finally:
            d.stop()
