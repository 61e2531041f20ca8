"""Training jobs end to end on a real daemon: `omg train` on the Hugging Face format SmolLM2,
the job in `omg job list` and the events, the trainer worker and then the daemon killed with
-9 mid-job (each time the job resumes from its checkpoint), bad data refused before any job,
and the adapter served by the llama.cpp worker over the GGUF SmolLM2, changing its answer on
a training prompt."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.contract.test_runtime_trainer import QUESTIONS, SECRET, training_rows
from tests.helpers import DaemonProc, new_daemon, worker_pid

pytestmark = pytest.mark.slow
pytest.importorskip("peft")
_ENDED = ("JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


@pytest.fixture()
def trainer_daemon(tmp_path: Path, hf_smollm2_path: Path, gguf_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path, extra_env={"OMG_NUM_THREADS": "1"}).start()
    try:
        for path, name in ((hf_smollm2_path, "smollm2-hf"), (gguf_path, "smollm2")):
            added = d.omg("model", "add", str(path), "--name", name)
            assert added.returncode == 0, added.stderr
        yield d
    finally:
        d.stop()


def _job(d: DaemonProc, job_id: str) -> dict:
    return httpx.get(f"{d.http}/v1/jobs/{job_id}", timeout=10).json()


def _wait(d: DaemonProc, job_id: str, until, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(d, job_id)
        if until(job) or job["state"] in _ENDED:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: {_job(d, job_id)}")


def _answer(d: DaemonProc, model: str, question: str) -> str:
    r = httpx.post(f"{d.http}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": question}], "temperature": 0, "seed": 1,
        "max_tokens": 24})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_bad_data_is_refused_before_any_job(trainer_daemon: DaemonProc, tmp_path: Path) -> None:
    d = trainer_daemon
    cases = {"not-jsonl.jsonl": '{"prompt": "a", "completion": "b"}\nnot json at all\n',
             "missing.jsonl": '{"prompt": "a"}\n', "empty.jsonl": ""}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        r = d.omg("train", "smollm2-hf", "--data", str(tmp_path / name), "--out", "never")
        assert r.returncode != 0, name
        assert {"not-jsonl.jsonl": "line 2: not JSON", "missing.jsonl": 'line 1: missing or empty "completion"',
                "empty.jsonl": "empty"}[name] in r.stderr, r.stderr
    r = httpx.post(f"{d.http}/v1/train", json={"model": "smollm2-hf", "data": "[1]\n", "output": "never"})
    assert r.status_code == 400 and "line 1" in r.text
    # A GGUF model is not trained on directly: the error says how.
    good = "".join(json.dumps(row) + "\n" for row in training_rows())
    r = httpx.post(f"{d.http}/v1/train", json={"model": "smollm2", "data": good, "output": "never"})
    assert r.status_code == 400 and "gguf_base" in r.json()["message"]  # the management error shape
    assert json.loads(d.omg("job", "list", "--json").stdout).get("jobs", []) == []

    # A job cancelled while it trains: cancelled, its trainer gone, no model made.
    (tmp_path / "good.jsonl").write_text(good)
    r = d.omg("train", "smollm2-hf", "--data", str(tmp_path / "good.jsonl"), "--out", "dropped", "--steps", "500",
              "--rank", "2", "--max-length", "32", "--detach")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert _wait(d, job_id, lambda j: j.get("train", {}).get("step", 0) >= 1)["state"] == "JOB_STATE_RUNNING"
    r = d.omg("job", "cancel", job_id)
    assert r.returncode == 0 and "CANCELLED" in r.stdout, r.stderr
    loaded = json.loads(d.omg("ps", "--json").stdout).get("models", [])
    assert not [m for m in loaded if m["name"] == "dropped"]
    assert "dropped" not in d.omg("model", "list").stdout
    assert not (d.home / "training" / job_id).exists()


def test_train_survives_kill_9_and_serves_the_gguf_adapter(trainer_daemon: DaemonProc, tmp_path: Path) -> None:
    d = trainer_daemon
    before = _answer(d, "smollm2", QUESTIONS[0])
    data = tmp_path / "secret.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in training_rows()))
    seen: list[dict] = []

    def listen(daemon: DaemonProc) -> None:
        try:
            with httpx.stream("GET", daemon.http + "/v1/events", timeout=300) as r:
                for line in r.iter_lines():
                    if line.strip():
                        seen.append(json.loads(line))
        except httpx.HTTPError:
            pass

    threading.Thread(target=listen, args=(d,), daemon=True).start()
    r = d.omg("train", "smollm2-hf", "--data", str(data), "--out", "secret", "--base-gguf", "smollm2",
              "--steps", "8", "--lr", "6e-3", "--rank", "8", "--batch-size", "2", "--max-length", "64",
              "--checkpoint-every", "2", "--target", "q_proj", "--target", "v_proj", "--detach")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    listed = d.omg("job", "list")
    assert job_id in listed.stdout and "train" in listed.stdout

    # The trainer worker killed with -9: the daemon starts another, which resumes.
    job = _wait(d, job_id, lambda j: j.get("train", {}).get("checkpointStep", 0) >= 2)
    assert job["state"] == "JOB_STATE_RUNNING", job
    os.kill(worker_pid(d, "secret", "MODE_TRAINING"), signal.SIGKILL)
    job = _wait(d, job_id, lambda j: j.get("train", {}).get("resumedFromStep", 0) >= 2)
    assert job["train"]["resumedFromStep"] >= 2, job

    # The daemon killed with -9 (its workers die with it); restarted, it resumes the job.
    job = _wait(d, job_id, lambda j: j["train"].get("checkpointStep", 0) >= 4)
    assert job["state"] == "JOB_STATE_RUNNING", job
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d2 = DaemonProc(home=d.home, http_port=d.http_port, grpc_port=d.grpc_port, extra_env=d.extra_env).start()
    try:
        shown = _job(d2, job_id)
        assert shown["train"]["checkpointStep"] >= 4  # persisted progress, before the worker says anything
        job = _wait(d2, job_id, lambda j: False)
        assert job["state"] == "JOB_STATE_DONE", job
        t = job["train"]
        assert t["step"] == 8 and t["resumedFromStep"] >= 4 and t["loss"] < t["firstLoss"], t
        events = [e.get("result", e) for e in seen]
        steps = [e for e in events if e.get("kind") == "EVENT_KIND_TRAIN" and e.get("progress", {}).get("unit") == "steps"]
        assert steps and steps[0]["subject"] == f"job:{job_id}", events[-5:]

        models = {m["name"]: m for m in json.loads(d2.omg("model", "list", "--json").stdout)["models"]}
        adapter = models["secret"]
        assert adapter["kind"] == "MODEL_KIND_ADAPTER" and adapter["adapter"]["base"] == "smollm2"
        assert adapter["adapter"]["rank"] == 8 and adapter["adapter"]["steps"] == 8
        assert adapter["adapter"]["ggufAdapter"] == "adapter.gguf" and adapter["adapter"]["jobId"] == job_id
        # Served by llama.cpp over the GGUF base: the training prompt's answer changed.
        after = _answer(d2, "secret", QUESTIONS[0])
        print("base:", before, "| adapter:", after)
        assert after != before
        assert "PURPLE" in after.upper() or "OTTER" in after.upper(), after
        # The base alone answers as before.
        assert _answer(d2, "smollm2", QUESTIONS[0]) == before
    finally:
        d2.stop()


def test_an_adapter_over_a_hugging_face_base_is_served_by_the_transformers_worker(
        trainer_daemon: DaemonProc, tmp_path: Path) -> None:
    d = trainer_daemon
    data = tmp_path / "secret.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in training_rows()))
    r = d.omg("train", "smollm2-hf", "--data", str(data), "--out", "secret-hf", "--steps", "8", "--lr", "6e-3",
              "--rank", "8", "--batch-size", "2", "--max-length", "64", "--checkpoint-every", "100",
              "--target", "q_proj", "--target", "v_proj", "--detach")
    assert r.returncode == 0, r.stderr
    job = _wait(d, r.stdout.strip(), lambda j: False)
    assert job["state"] == "JOB_STATE_DONE", job
    record = json.loads(d.omg("model", "info", "secret-hf", "--json").stdout)
    assert record["kind"] == "MODEL_KIND_ADAPTER" and record["adapter"]["base"] == "smollm2-hf"
    assert record["format"] == "ARTIFACT_FORMAT_SAFETENSORS"
    before = _answer(d, "smollm2-hf", QUESTIONS[0])
    after = _answer(d, "secret-hf", QUESTIONS[0])
    print("base:", before, "| adapter:", after)
    assert after != before and ("PURPLE" in after.upper() or "OTTER" in after.upper()), after
    loaded = {m["name"]: m for m in httpx.get(f"{d.http}/v1/loaded", timeout=10).json().get("models", [])}
    assert loaded["secret-hf"]["runtime"] == "transformers", loaded
