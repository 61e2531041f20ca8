"""The store and pulls against hostile or unlucky conditions, through the real daemon: hub
listings with absurd numbers, a damaged index, a full disk, symlinks planted in the cache,
copies onto existing names, files replaced behind our back."""

from __future__ import annotations

import json
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
