"""Several "hosts" on one machine for the node tests and bench: each node agent in its own network
namespace joined to this one by a veth pair (as root, where `ip netns` works), else on its own
loopback address; always with its own OMG_HOME and Hugging Face cache."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port, terminate


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_available() -> bool:
    """Whether this machine lets us make a network namespace with a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name, tag = f"omgprobe{os.getpid()}", os.getpid() % 10000
    try:
        ok = _ip("netns", "add", name, check=False).returncode == 0
        if ok:
            ok = _ip("link", "add", f"vp{tag}", "type", "veth", "peer", "name", f"vq{tag}", check=False).returncode == 0
            _ip("link", "del", f"vp{tag}", check=False)
        return ok
    finally:
        _ip("netns", "del", name, check=False)


@dataclass
class Host:
    """A place to run a node agent: a namespace (address `addr`, this machine at `gateway`)
    or a loopback address (both the same machine)."""

    index: int
    netns: str = ""  # empty: loopback only
    addr: str = "127.0.0.1"
    gateway: str = "127.0.0.1"  # where the daemon is reached from this host
    veth: str = ""  # this machine's end of the link

    @classmethod
    def make(cls, index: int, use_netns: bool) -> Host:
        if not use_netns:
            return cls(index, addr=f"127.0.0.{10 + index}")
        tag = uuid.uuid4().hex[:6]
        ns, outer, inner = f"omg{tag}", f"vo{tag}", f"vi{tag}"
        used = _ip("-o", "addr").stdout
        subnet = next(n for n in random.sample(range(40, 250), 210) if f"10.231.{n}." not in used)
        gw, addr = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        _ip("netns", "add", ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("addr", "add", f"{gw}/24", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", inner)
        _ip("netns", "exec", ns, "ip", "link", "set", inner, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        return cls(index, netns=ns, addr=addr, gateway=gw, veth=outer)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def cut(self) -> None:
        """Take the link down (the namespace's veth): packets stop, no connection is closed."""
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.veth, "up")

    def remove(self) -> None:
        if self.netns:
            _ip("link", "del", self.veth, check=False)
            _ip("netns", "del", self.netns, check=False)


@dataclass
class NodeProc:
    """A running `omg node join` on a host."""

    host: Host
    name: str
    home: Path
    daemon_port: int
    token: str
    fingerprint: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    advertise: str = ""  # the address the daemon dials (a proxy in the bench); default: our own
    proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in [k for k in env if k.startswith("OMG_")]:
            del env[k]
        env.update(OMG_HOME=str(self.home), HF_HUB_CACHE=str(self.home / "hf"), OMG_NUM_THREADS="2",
                   OMG_NODE_HUB="off", OMG_LOG_LEVEL="info")
        env.update(self.extra_env)
        return env

    @property
    def log(self) -> Path:
        return self.home / "node.log"

    def _joins(self) -> int:
        return self.log.read_text().count(f"omg node {self.name}: joined") if self.log.exists() else 0

    def start(self, *, wait: bool = True) -> NodeProc:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [*self.host.prefix(), sys.executable, "-m", "ohmygpu.cli.main", "node", "join",
                f"{self.host.gateway}:{self.daemon_port}", "--token", self.token, "--name", self.name,
                "--listen", f"{self.host.addr}:{self.port}", "--fingerprint", self.fingerprint]
        if self.advertise or not self.host.netns:  # loopback: the daemon would see 127.0.0.1, not ours
            args += ["--advertise", self.advertise or f"{self.host.addr}:{self.port}"]
        before = self._joins()
        self.proc = subprocess.Popen(args, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        if wait:
            self.wait_joined(before)
        return self

    def wait_joined(self, before: int, timeout: float = 30) -> None:
        """Until the agent says it joined more often than `before` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.log.read_text()[-2000:]}")
            if self._joins() > before:
                return
            time.sleep(0.1)
        raise RuntimeError(f"node {self.name} did not join: {self.log.read_text()[-2000:]}")

    def cut(self) -> None:
        """Cut the node off: its link down (a namespace), else its agent frozen (SIGSTOP): either
        way the daemon hears nothing and no connection is closed."""
        if self.host.netns:
            self.host.cut()
        elif self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def restore(self) -> None:
        if self.host.netns:
            self.host.restore()
        elif self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: no goodbye, its sockets close with the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        terminate(self.proc)
