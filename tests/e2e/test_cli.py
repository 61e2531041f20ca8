"""`omg` end to end over gRPC: model add/list/info/rm, chat one-shot and interactive (in a
pseudo-terminal), ps, serve status/stop, and fast failure with no daemon."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import DaemonProc, free_port, new_daemon

pytestmark = pytest.mark.slow


def test_model_commands(daemon: DaemonProc, gguf_path: Path) -> None:
    listed = daemon.omg("model", "list")
    assert listed.returncode == 0 and "smollm2" in listed.stdout and "Q4_1" in listed.stdout
    data = json.loads(daemon.omg("model", "list", "--json").stdout)
    smol = next(m for m in data["models"] if m["name"] == "smollm2")
    assert smol["artifacts"][0]["sha256"].startswith("sha256:") and smol["gguf"]["architecture"] == "llama"
    info = daemon.omg("model", "info", "smollm2")
    assert info.returncode == 0 and "llama" in info.stdout and "8192" in info.stdout and "sha256:" in info.stdout
    added = daemon.omg("model", "add", str(gguf_path), "--name", "alias-of-smol")
    assert added.returncode == 0, added.stderr
    assert daemon.omg("model", "rm", "alias-of-smol").returncode == 0
    assert "alias-of-smol" not in daemon.omg("model", "list").stdout
    assert gguf_path.exists()  # registered in place: removing the name leaves the file
    missing = daemon.omg("model", "info", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_add_rejects_non_gguf(daemon: DaemonProc, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a model" * 10)
    r = daemon.omg("model", "add", str(bogus), "--name", "bogus")
    assert r.returncode == 1 and "not a readable model" in r.stderr
    assert "bogus" not in daemon.omg("model", "list").stdout
    assert daemon.omg("serve", "status").returncode == 0  # the daemon is still there


def test_chat_one_shot_and_piped(daemon: DaemonProc) -> None:
    r = daemon.omg("chat", "smollm2", "Say", "hello", "--max-tokens", "8", "--temperature", "0", "--seed", "1")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    piped = daemon.omg("chat", "smollm2", "--max-tokens", "8", "--temperature", "0", "--seed", "1", input="Say hello")
    assert piped.returncode == 0 and piped.stdout == r.stdout
    bad = daemon.omg("chat", "nope", "hi")
    assert bad.returncode == 1 and "not found" in bad.stderr


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out


def test_interactive_chat_in_a_terminal(daemon: DaemonProc) -> None:
    # openpty and a spawned child rather than pty.fork: forking a process that runs gRPC
    # threads can crash the child before it execs.
    fd, tty = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "ohmygpu.cli.main", "chat", "smollm2",
                              "--max-tokens", "12", "--temperature", "0"],
                             env=daemon.env, stdin=tty, stdout=tty, stderr=tty, start_new_session=True)
    os.close(tty)
    try:
        assert b">>>" in _read_until(fd, b">>>", 30)
        os.write(fd, b"Name a color.\r")
        text = ""
        deadline = time.monotonic() + 60
        while not re.search(r"Name a color\.[^>]*\w[^>]*>>>", text) and time.monotonic() < deadline:
            chunk = _read_until(fd, b">>>", 2)
            text += re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", chunk.decode(errors="replace"))
        reply = text.rsplit("Name a color.", 1)[-1].split(">>>", 1)[0]
        assert sum(c.isalpha() for c in reply) > 3, text
        os.write(fd, b"/bye\r")
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
        os.close(fd)


def test_ps_and_status(daemon: DaemonProc) -> None:
    daemon.omg("chat", "smollm2", "hi", "--max-tokens", "1")
    ps = daemon.omg("ps")
    assert ps.returncode == 0 and "smollm2" in ps.stdout and "llamacpp" in ps.stdout
    loaded = json.loads(daemon.omg("ps", "--json").stdout)["models"]
    assert loaded[0]["name"] == "smollm2" and int(loaded[0]["memoryBytes"]) > 50_000_000
    status = daemon.omg("serve", "status")
    assert status.returncode == 0 and f"127.0.0.1:{daemon.http_port}" in status.stdout
    cfg = daemon.omg("config")
    assert "OMG_GRPC_ADDR" in cfg.stdout and f"127.0.0.1:{daemon.grpc_port}" in cfg.stdout


def test_commands_without_daemon_fail_fast(tmp_path: Path) -> None:
    env = dict(os.environ, OMG_HOME=str(tmp_path), OMG_GRPC_ADDR=f"127.0.0.1:{free_port()}")
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    for args in (["model", "list"], ["chat", "m", "hi"], ["serve", "status"], ["ps"], ["status"], ["top"],
                 ["search", "x"], ["embed", "m", "x"], ["transcribe", str(audio)], ["logs", "r"],
                 ["model", "pull", "org/x"], ["run", "ls"]):
        started = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", *args], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 3, (args, r.stderr)
        assert "omg serve" in r.stderr and time.monotonic() - started < 10


def test_serve_stop_and_second_daemon_refused(tmp_path: Path) -> None:
    d = new_daemon(tmp_path).start()
    try:
        # A second daemon on the same OMG_HOME is refused with a clear message.
        clash = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "serve"],
                               env={**d.env, "OMG_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                                    "OMG_GRPC_ADDR": f"127.0.0.1:{free_port()}"},
                               capture_output=True, text=True, timeout=30)
        assert clash.returncode == 1 and "another omg daemon" in clash.stderr
        # A port in use is named.
        other = tmp_path / "other"
        busy = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "serve"],
                              env={**d.env, "OMG_HOME": str(other)}, capture_output=True, text=True, timeout=30)
        assert busy.returncode == 1 and "cannot listen" in busy.stderr
        stop = d.omg("serve", "stop")
        assert stop.returncode == 0 and "stopped" in stop.stdout
        d.proc.wait(10)
        assert d.proc.returncode == 0
    finally:
        d.stop()


def test_shell_completion(daemon: DaemonProc, tmp_path: Path) -> None:
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete --command omg")):
        r = daemon.omg("completion", shell)
        assert r.returncode == 0 and marker in r.stdout, (shell, r.stdout[:300])

    def complete(line: str) -> list[str]:
        out = tmp_path / "completions"
        env = {**daemon.env, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"}
        subprocess.run([sys.executable, "-m", "ohmygpu.cli.main"], env=env, timeout=30, capture_output=True)
        return out.read_text().split()

    assert "model" in complete("omg mo")
    assert "smollm2" in complete("omg chat smo")  # model names come from the daemon
    assert "smollm2" in complete("omg model info s")


def test_status_logs_and_json_listings(daemon: DaemonProc) -> None:
    r = daemon.omg("status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["version"]
    for args in (("model", "list"), ("ps",), ("config",), ("job", "list"), ("run", "ls"), ("model", "du"),
                 ("model", "info", "smollm2"), ("serve", "status")):
        r = daemon.omg(*args, "--json")
        assert r.returncode == 0, (args, r.stderr)
        json.loads(r.stdout)
    r = daemon.omg("logs", "no-such-run")
    assert r.returncode != 0 and "no-such-run" in r.stderr


def test_model_info_shows_the_daemons_estimate(tmp_path: Path, gguf_path: Path) -> None:
    # The memory `omg model info` prints is the daemon's (its OMG_CONTEXT_LENGTH), not one the
    # client works out from its own settings.
    d = new_daemon(tmp_path, extra_env={"OMG_CONTEXT_LENGTH": "1024"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
        r = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "model", "info", "smollm2"],
                           env={**d.env, "OMG_CONTEXT_LENGTH": "8192"}, capture_output=True, text=True, timeout=60,
                           check=False)
        assert r.returncode == 0, r.stderr
        memory = next(line for line in r.stdout.splitlines() if line.strip().startswith("memory"))
        assert "at 1024 tokens" in memory and "KV cache" in memory
    finally:
        d.stop()
