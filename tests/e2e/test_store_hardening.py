"""The store and pulls against hostile or unlucky conditions, through the real daemon: hub
listings with absurd numbers, a damaged index, a full disk, symlinks planted in the cache,
copies onto existing names, files replaced behind our back."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from ohmygpu.api.v1 import jobs_pb2, jobs_pb2_grpc
from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow
REPO = "test-org/smol-GGUF"
MODEL = f"hf.co/{REPO}:Q4_1"
_ENDED = ("JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


@pytest.fixture(scope="module")
def model_bytes(gguf_path: Path) -> bytes:
    return gguf_path.read_bytes()


@pytest.fixture()
def hub(model_bytes: bytes) -> Iterator[FakeHub]:
    with FakeHub([FakeRepo(REPO, {"smol.Q4_1.gguf": model_bytes, "README.md": b"# smol\n"})]) as h:
        yield h


def _daemon(tmp: Path, hub: FakeHub, cache: Path | None = None, **env: str) -> DaemonProc:
    extra = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(cache or tmp / "hf"), "HF_HUB_DISABLE_XET": "1",
             **env}
    return new_daemon(tmp, extra_env=extra)


def _install(d: DaemonProc, source: str, **kw: object) -> str:
    r = httpx.post(f"{d.http}/v1/models/install", json={"source": source, **kw})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _wait_job(d: DaemonProc, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{d.http}/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] in _ENDED:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


@pytest.mark.parametrize("size", [-1, -(2 ** 63), 1.5, "12", True, None, 2 ** 70, 2 ** 64 + 5])
def test_hostile_hub_sizes_fail_the_job_and_never_poison_the_job_list(
        tmp_path: Path, hub: FakeHub, size: object) -> None:
    """A listing with a negative, fractional, non-numeric or absurd size fails that pull with a
    clear message; GetJob, ListJobs and WatchJob keep answering, and the next pull works."""
    hub.faults.listing_size = size if size is not None else {"not": "a number"}
    d = _daemon(tmp_path, hub).start()
    try:
        bad = _wait_job(d, _install(d, MODEL), timeout=30)
        assert bad["state"] == "JOB_STATE_FAILED", bad
        assert "the hub" in bad["error"] and "size" in bad["error"], bad["error"]
        assert "internal error" not in bad["error"] and "Error" not in bad["error"]
        listed = httpx.get(f"{d.http}/v1/jobs")
        assert listed.status_code == 200, listed.text
        assert [j["state"] for j in listed.json()["jobs"] if j["id"] == bad["id"]] == ["JOB_STATE_FAILED"]
        with grpc.insecure_channel(d.grpc_addr) as channel:
            jobs = jobs_pb2_grpc.JobServiceStub(channel)
            watched = list(jobs.WatchJob(jobs_pb2.WatchJobRequest(id=bad["id"]), timeout=10))
            assert watched and watched[-1].state == jobs_pb2.JOB_STATE_FAILED
            assert jobs.GetJob(jobs_pb2.GetJobRequest(id=bad["id"]), timeout=10).error == bad["error"]
        hub.faults.listing_size = None
        assert _wait_job(d, _install(d, MODEL))["state"] == "JOB_STATE_DONE"
        assert httpx.get(f"{d.http}/v1/jobs").status_code == 200
    finally:
        d.stop()


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 120 MB filesystem of its own (tmpfs) for the HF cache: a disk that can really fill up."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = directory / "filler"
    block = b"\xff" * (1 << 20)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
    return filler


def test_disk_full_mid_pull_says_so_and_resumes_once_there_is_room(
        tmp_path: Path, hub: FakeHub, small_disk: Path, model_bytes: bytes) -> None:
    """The space check passes, then another writer fills the disk while we download: the job
    fails saying the disk is full and how much is still needed (no path, no OSError), keeps
    its partial, and the next pull, with room again, resumes from it."""
    hub.faults.bytes_per_second = 20_000_000
    d = _daemon(tmp_path, hub, cache=small_disk).start()
    try:
        job_id = _install(d, MODEL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metas = list(small_disk.rglob("*.omg-partial.segments"))
            try:
                if metas and sum(json.loads(metas[0].read_text())["done"]) > 10_000_000:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("no partial download appeared")
        filler = _fill(small_disk)
        job = _wait_job(d, job_id, timeout=60)
        assert job["state"] == "JOB_STATE_FAILED", job
        error = job["error"]
        assert "disk" in error and "full" in error and re.search(r"needs [\d.]+ [MG]B more", error), error
        assert str(small_disk) not in error and "OSError" not in error and "internal" not in error, error
        assert list(small_disk.rglob("*.omg-partial")), "the partial download was dropped"
        filler.unlink()
        hub.faults.bytes_per_second = None
        served = hub.bytes_served
        again = _wait_job(d, _install(d, MODEL))
        assert again["state"] == "JOB_STATE_DONE", again
        assert hub.bytes_served - served < len(model_bytes) - 10_000_000  # resumed, not started over
        assert not list(small_disk.rglob("*.omg-partial"))
    finally:
        d.stop()


def test_a_damaged_index_stops_the_daemon_with_a_recovery_message(tmp_path: Path, hub: FakeHub) -> None:
    import subprocess
    import sys

    d = _daemon(tmp_path, hub)
    d.home.mkdir(parents=True)
    (d.home / "store.db").write_bytes(b"SQLite format 3\0" + b"\x07" * 9000)  # a header, then junk
    proc = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "serve"], env=d.env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "damaged" in proc.stderr and "mv " in proc.stderr and "store.db.damaged" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "DatabaseError" not in proc.stderr, proc.stderr
    # Following the advice works: the daemon starts with a fresh index.
    (d.home / "store.db").rename(d.home / "store.db.damaged")
    d.start()
    d.stop()


def test_a_damaged_record_does_not_break_listings(tmp_path: Path, hub: FakeHub, gguf_path: Path) -> None:
    import sqlite3

    d = _daemon(tmp_path, hub).start()
    try:
        for name in ("good", "bad"):
            assert d.omg("model", "add", str(gguf_path), "--name", name).returncode == 0
        with sqlite3.connect(d.home / "store.db") as db:
            db.execute("UPDATE models SET record = ? WHERE name = 'bad'", (b"\xff\xfe garbage",))
        for path in ("/api/tags", "/v1/models", "/v1/store/models"):
            r = httpx.get(d.http + path)
            assert r.status_code == 200, (path, r.text)
            assert "good" in r.text and '"bad"' not in r.text, (path, r.text)
        listed = d.omg("model", "list")
        assert listed.returncode == 0 and "good" in listed.stdout, listed.stderr
        shown = httpx.post(f"{d.http}/api/show", json={"model": "bad"})
        assert shown.status_code == 500 and "damaged" in shown.json()["error"], shown.text
        checked = d.omg("model", "verify")
        assert "damaged" in checked.stdout + checked.stderr, checked
        assert d.omg("model", "rm", "bad").returncode == 0
        assert "damaged" not in d.omg("model", "verify").stdout
    finally:
        d.stop()


def test_api_copy_never_replaces_another_model(tmp_path: Path, hub: FakeHub, gguf_path: Path) -> None:
    """Ollama's /api/copy overwrites the destination silently; we answer 409 and keep it."""
    from tests.helpers import gguf_with_uint32

    other = tmp_path / "other.gguf"
    other.write_bytes(gguf_with_uint32(gguf_path, "test.marker", 7))  # different bytes, same model
    d = _daemon(tmp_path, hub).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "first").returncode == 0
        assert d.omg("model", "add", str(other), "--name", "second").returncode == 0

        def digests() -> dict[str, str]:
            return {m["name"].removesuffix(":latest"): m["digest"] for m in httpx.get(f"{d.http}/api/tags").json()["models"]}

        before = digests()
        assert before["first"] != before["second"]
        r = httpx.post(f"{d.http}/api/copy", json={"source": "first", "destination": "second"})
        assert r.status_code == 409 and "already exists" in r.json()["error"], r.text
        assert digests() == before
        assert httpx.post(f"{d.http}/api/copy", json={"source": "first", "destination": "copy"}).status_code == 200
        # Onto a name holding the same content, or onto itself: nothing to refuse, nothing changes.
        assert httpx.post(f"{d.http}/api/copy", json={"source": "first", "destination": "copy"}).status_code == 200
        assert httpx.post(f"{d.http}/api/copy", json={"source": "first", "destination": "first"}).status_code == 200
        assert digests() == {**before, "copy": before["first"]}
    finally:
        d.stop()


def test_hostile_gguf_is_refused_by_add_and_by_pull(tmp_path: Path, model_bytes: bytes) -> None:
    """`omg model add`, POST /v1/store/models and a pull all refuse a GGUF that cannot load, saying
    why with no path; tests/unit/test_gguf_hostile.py covers each kind of damage."""
    truncated = tmp_path / "files" / "truncated.gguf"
    truncated.parent.mkdir()
    truncated.write_bytes(model_bytes[: len(model_bytes) // 2])
    with FakeHub([FakeRepo("test-org/broken-GGUF", {"broken.Q4_1.gguf": truncated.read_bytes()})]) as broken_hub:
        d = _daemon(tmp_path, broken_hub).start()
        try:
            added = d.omg("model", "add", str(truncated), "--name", "truncated")
            assert added.returncode == 1 and "the file is not a loadable model: " in added.stderr, added.stderr
            assert str(truncated.parent) not in added.stderr and "Traceback" not in added.stderr
            r = httpx.post(f"{d.http}/v1/store/models", json={"path": str(truncated), "name": "truncated"})
            assert r.status_code == 400 and "not a loadable model" in r.text and str(tmp_path) not in r.text, r.text
            job = _wait_job(d, _install(d, "hf.co/test-org/broken-GGUF:Q4_1", name="broken"))
            assert job["state"] == "JOB_STATE_FAILED" and "not a loadable model" in job["error"], job
            assert str(tmp_path) not in job["error"]
            assert "truncated" not in d.omg("model", "list").stdout and "broken" not in d.omg("model", "list").stdout
        finally:
            d.stop()


@pytest.mark.parametrize("replacement", ["garbage", "truncated", "removed"])
def test_errors_about_a_file_replaced_after_add_show_no_path(
        tmp_path: Path, hub: FakeHub, model_bytes: bytes, whisper_path: Path, replacement: str) -> None:
    """Models registered in place whose files are later replaced or removed: what every API tells
    a client (chat in both dialects, verify, transcription) names no local path."""
    import shutil

    model = tmp_path / "files" / "in-place.gguf"
    model.parent.mkdir()
    model.write_bytes(model_bytes)
    whisper = tmp_path / "files" / "whisper"
    shutil.copytree(whisper_path, whisper)
    d = _daemon(tmp_path, hub).start()
    try:
        assert d.omg("model", "add", str(model), "--name", "in-place").returncode == 0
        assert d.omg("model", "add", str(whisper), "--name", "whisper").returncode == 0
        for path, content in ((model, model_bytes), (whisper / "model.bin", (whisper_path / "model.bin").read_bytes())):
            if replacement == "removed":
                path.unlink()
            else:
                path.write_bytes(b"\x00garbage" * 1000 if replacement == "garbage" else content[: len(content) // 3])
        answers = [
            httpx.post(f"{d.http}/v1/chat/completions", timeout=120,
                       json={"model": "in-place", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
            httpx.post(f"{d.http}/api/chat", timeout=120, json={"model": "in-place", "stream": False,
                                                                 "messages": [{"role": "user", "content": "hi"}]}),
            httpx.post(f"{d.http}/v1/store/models:verify", json={}, timeout=120),
            httpx.post(f"{d.http}/v1/audio/transcriptions", data={"model": "whisper"}, timeout=120,
                       files={"file": ("a.wav", _silence_wav(), "audio/wav")}),
        ]
        for r in answers:
            assert str(tmp_path) not in r.text and "/files/" not in r.text, r.text
            assert "Traceback" not in r.text and "Error:" not in r.text, r.text
        assert answers[0].status_code >= 400 and answers[1].status_code >= 400
        assert answers[3].status_code >= 400
        problems = [c for c in answers[2].json()["checks"] if not c.get("ok")]
        assert {c["model"] for c in problems} == {"in-place", "whisper"}, answers[2].text
    finally:
        d.stop()


def _silence_wav() -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x01\x00" * 16000)
    return buffer.getvalue()
