"""Workers: they prove their library runs before they report ready, a library that traps marks
its model failed once with the cause and the fix, a worker that dies on every load is not
restarted forever, and a worker neither inherits secrets nor serves from a socket directory
another local user could reach."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.helpers import PARAGRAPH, DaemonProc, import_hook, new_daemon, worker_pid

pytestmark = pytest.mark.slow
NOBODY = 65534
# A prompt of several hundred tokens: long enough for ggml's batched (AMX, where built) kernels.
LONG = " ".join([PARAGRAPH] * 4) + "\n\nIn one sentence, what does the baker do?"


def _chat(d: DaemonProc, content: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(d.http + "/v1/chat/completions", headers=headers or {}, timeout=120, json={
        "model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": content}]})


def _faulty_library(tmp_path: Path, sig: str, function: str = "llama_decode",
                   when: str = "args[1].n_tokens >= 32") -> Path:
    """A PYTHONPATH dir whose sitecustomize makes llama.cpp's `function` kill its process with
    `sig` when `when` holds of its args. By default: llama_decode on any batch of 32 tokens or
    more, as an -march=native build on an AMX CPU does in a multi-threaded prompt evaluation
    (short batches work, as they do on such a machine)."""
    return import_hook(tmp_path / f"faulty-{sig}", "llama_cpp._internals", f"""
def patch(module):
    import os, signal
    real = module.llama_cpp.{function}

    def faulty(*args):
        if {when}:
            os.kill(os.getpid(), signal.{sig})
        return real(*args)

    module.llama_cpp.{function} = faulty
""")


def _worker_logs(d: DaemonProc) -> list[Path]:
    return sorted((d.home / "logs").glob("llamacpp-*.log"))


def test_multithreaded_long_prompt_and_the_real_self_test(tmp_path: Path, gguf_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_NUM_THREADS": "2"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        r = _chat(d, LONG)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] >= 300
        assert r.json()["choices"][0]["message"]["content"]
        # The worker evaluated its self-test batch on both threads before it said ready.
        (log,) = _worker_logs(d)
        assert re.search(r"self-test: (64|256) tokens batched on 2 threads", log.read_text())
        assert _chat(d, LONG).status_code == 200  # and the worker lives on
    finally:
        d.stop()


def test_a_library_that_traps_marks_the_model_failed_once(tmp_path: Path, gguf_path: Path) -> None:
    hook = _faulty_library(tmp_path, "SIGILL")
    d = new_daemon(tmp_path, extra_env={"PYTHONPATH": str(hook), "OMG_MAX_CRASHES": "3"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        first = _chat(d, "hi")  # a short prompt: only the self-test's batch can trap
        assert first.status_code == 500
        message = first.json()["error"]["message"]
        assert "llama.cpp library was built for instructions this CPU cannot run" in message
        assert "SIGILL" in message and "bash scripts/setup.sh" in message
        for _ in range(3):
            again = _chat(d, LONG)
            assert again.status_code == 500
            assert "marked failed" in again.json()["error"]["message"]
            assert "bash scripts/setup.sh" in again.json()["error"]["message"]
        assert len(_worker_logs(d)) == 1  # one worker started, not one per request
        serve_log = (d.home / "serve.log").read_text()
        assert serve_log.count("marked failed") == 1
        assert httpx.get(d.http + "/api/tags").status_code == 200  # the daemon carries on
    finally:
        d.stop()


def test_a_worker_that_dies_on_every_load_is_not_restarted_forever(tmp_path: Path, gguf_path: Path) -> None:
    hook = _faulty_library(tmp_path, "SIGSEGV", "llama_model_load_from_file", "True")
    d = new_daemon(tmp_path, extra_env={"PYTHONPATH": str(hook), "OMG_MAX_CRASHES": "3"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        answers = [_chat(d, "hi") for _ in range(6)]
        assert [a.status_code for a in answers] == [500] * 6
        assert all("SIGSEGV while loading" in a.json()["error"]["message"] for a in answers[:3])
        for a in answers[3:]:
            assert "marked failed" in a.json()["error"]["message"]
            assert "crashed 3 times" in a.json()["error"]["message"]
        assert len(_worker_logs(d)) == 3
    finally:
        d.stop()


def test_workers_get_no_secrets_and_a_private_socket_directory(tmp_path: Path, gguf_path: Path) -> None:
    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="omgt-"))  # a TMPDIR a socket fits in (pytest's may not)
    try:
        _no_secrets_and_a_private_socket_directory(tmp_path, tmp, gguf_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _no_secrets_and_a_private_socket_directory(tmp_path: Path, tmp: Path, gguf_path: Path) -> None:
    home = tmp_path / "home"
    # Another local user planted the directory name the daemon used to choose: mode 0777, theirs.
    planted = tmp / f"omg-{os.getuid()}-{hashlib.sha256(str(home).encode()).hexdigest()[:12]}"
    planted.mkdir()
    planted.chmod(0o777)
    os.chown(planted, NOBODY, NOBODY)
    secrets = {"OMG_ADMIN_TOKEN": "admin-secret-1", "HF_TOKEN": "hf_secret_2",
               "AWS_SECRET_ACCESS_KEY": "aws-secret-3", "GITHUB_TOKEN": "gh-secret-4"}
    d = new_daemon(tmp_path, token="user-secret-0", extra_env={"TMPDIR": str(tmp), **secrets}).start()
    auth = {"Authorization": "Bearer user-secret-0"}
    try:
        added = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "model", "add", str(gguf_path),
                                "--name", "m"], env={**d.env, "OMG_TOKEN": "admin-secret-1"},
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        assert _chat(d, "hi", auth).status_code == 200
        pid = worker_pid(d, "m")
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        for value in ["user-secret-0", *secrets.values()]:
            assert value.encode() not in environ
        names = {item.split(b"=", 1)[0] for item in environ.split(b"\0") if item}
        assert {b"PATH", b"HF_HUB_OFFLINE"} <= names and b"OMG_TOKEN" not in names
        # The worker's socket lives in a fresh directory that is ours alone.
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        sock = Path(argv[argv.index(b"--socket") + 1].decode())
        assert sock.parent != planted and sock.parent.parent == tmp
        st = os.lstat(sock.parent)
        assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
        assert list(planted.iterdir()) == []
    finally:
        d.stop()
    assert not sock.parent.exists()  # removed at shutdown


def test_a_request_that_kills_its_worker_is_refused_again_and_does_not_fail_the_model(
        tmp_path: Path, gguf_path: Path) -> None:
    # Any batch of 150+ tokens kills the worker (a stand-in for a hostile input that crashes the
    # inference library); the load's self-test batch is shorter, and so is a short chat.
    hook = _faulty_library(tmp_path, "SIGSEGV", when="args[1].n_tokens >= 150")
    d = new_daemon(tmp_path, extra_env={"PYTHONPATH": str(hook), "OMG_MAX_CRASHES": "2"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        first = _chat(d, LONG)
        assert first.status_code == 500
        assert "SIGSEGV" in first.json()["error"]["message"]
        assert "refused if sent again" in first.json()["error"]["message"]
        # The same input again (another seed changes nothing) is refused before any worker runs.
        again = httpx.post(d.http + "/v1/chat/completions", timeout=30, json={
            "model": "m", "max_tokens": 4, "seed": 7, "messages": [{"role": "user", "content": LONG}]})
        assert again.status_code == 400, again.text
        assert "refused" in again.json()["error"]["message"]
        assert len(_worker_logs(d)) == 1
        assert _chat(d, "hi").status_code == 200  # the model serves everyone else
        # Other killing inputs, more of them than OMG_MAX_CRASHES: the model is still not failed.
        for n in range(2):
            assert _chat(d, LONG + f" Variant {n}.").status_code == 500
        assert _chat(d, "hi").status_code == 200
        assert len(_worker_logs(d)) == 4
        assert "marked failed" not in (d.home / "serve.log").read_text()
    finally:
        d.stop()
