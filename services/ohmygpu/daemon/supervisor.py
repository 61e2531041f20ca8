"""Worker processes: spawn, connect, load, watch, stop (the whole process tree).

Each worker runs in its own session (process group), so a stop kills everything it started
and frees its memory (LocalAI #7958 freed nothing when only the parent died). Its stderr goes to
a log file under OMG_HOME/logs, whose tail explains a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import WorkerFailed
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2, runtime_pb2_grpc
from ohmygpu.runtimes.api.registry import RuntimeEntry

if TYPE_CHECKING:  # pool.py imports this module
    from ohmygpu.daemon.pool import WorkerKey

log = logging.getLogger("ohmygpu.supervisor")
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20)]


# What a worker may inherit from the daemon's environment: an allow-list, because workers parse
# untrusted files (GGUF headers, chat templates) and need no secret (OMG_TOKEN, OMG_ADMIN_TOKEN,
# HF_TOKEN, a cloud key in the user's shell...). Kept: where programs and libraries are, the
# locale and temp dir, and the knobs of the compute libraries (OpenMP, BLAS, CUDA/ROCm, ggml).
_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER",
    "PYTHONHASHSEED", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "CONDA_PREFIX", "SYSTEMROOT",
})
_ENV_PREFIXES = ("LC_", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "BLIS_", "GGML_", "LLAMA_",
                 "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "HSA_", "CT2_")
_ENV_SECRET_MARKS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")


def worker_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The environment a worker starts with: the allow-listed part of `parent`, never a
    variable whose name says it holds a secret, and the hub switched off (a worker loads local
    files only)."""
    env = {k: v for k, v in parent.items()
           if (k in _ENV_NAMES or k.startswith(_ENV_PREFIXES))
           and not any(mark in k.upper() for mark in _ENV_SECRET_MARKS)}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class WorkerTrapped(WorkerFailed):
    """A worker was killed by a signal its library raises whatever the request (SIGILL: built
    for instructions this CPU lacks; SIGBUS while loading): the model is marked failed at once."""


# gRPC codes of a load whose worker may have died under it (a worker that refuses a model
# answers INTERNAL or INVALID_ARGUMENT and lives on).
_DEATH_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
_LIBRARY_NAMES = {"llamacpp": "llama.cpp", "whisper": "CTranslate2 (faster-whisper)"}
# Signals that say the library cannot run here, with the cause and the fix.
_TRAPS = {
    signal.SIGILL: "the {library} library was built for instructions this CPU cannot run (the worker for "
                   "'{model}' was killed by SIGILL); reinstall it for this machine with `bash scripts/setup.sh`",
    signal.SIGBUS: "the worker for '{model}' was killed by SIGBUS: its model file was truncated or replaced "
                   "while being read, or the {library} library does not run on this CPU; check the file "
                   "(`omg model verify`) or reinstall with `bash scripts/setup.sh`",
}


class Worker:
    """One worker process serving one model."""

    def __init__(self, model: str, runtime: RuntimeEntry, run_dir: Path, log_dir: Path) -> None:
        self.model = model
        # The orchestrator's pool key (daemon/pool.py WorkerKey: model and mode), set when it
        # takes the worker; until then the model name.
        self.key: WorkerKey | str = model
        self.mode = run_spec_pb2.MODE_CHAT  # what it serves, set by the orchestrator
        self.tokens_per_second = 0.0  # of its last finished generation
        self.runtime = runtime
        self.id = uuid.uuid4().hex[:8]
        self.socket_path = run_dir / f"w-{self.id}.sock"
        self.log_path = log_dir / f"{runtime.name}-{self.id}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: runtime_pb2_grpc.RuntimeStub | None = None
        self.started_at = time.time()
        self.load_ns = 0
        self.memory_bytes = 0
        self.context_length = 0
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.expires_at: float | None = None  # wall-clock unload time when idle; None: never
        self.pinned = False  # a run holds it: never evicted or expired
        self.load_key: tuple[object, ...] = ()  # the load options it was started with
        self.node = 0  # the index of the node it runs on (see daemon/nodes.py)
        self.device = "cpu"
        self.vram_estimate = 0
        self.exited = asyncio.Event()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def lost(self) -> bool:
        """Whether it went with its machine (a remote node down), not of a crash of its own:
        such a loss is neither counted toward max_crashes nor blamed on a request."""
        return False

    def exit_description(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is None:
            return "is running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def trap_hint(self) -> str | None:
        """What it means and what to do, when the worker died of a signal that its library
        raises on every run (an instruction this CPU lacks): restarting it cannot help."""
        code = self.proc.returncode if self.proc else None
        if code is None or code >= 0 or -code not in _TRAPS:
            return None
        library = _LIBRARY_NAMES.get(self.runtime.name, self.runtime.library)
        return _TRAPS[-code].format(library=library, model=self.model)

    def death(self, stage: str) -> WorkerFailed:
        """The error for a worker found dead `stage` ("while loading"): a trap's cause and fix
        (WorkerTrapped), else how it exited with the tail of its log."""
        hint = self.trap_hint()
        if hint is not None:
            return WorkerTrapped(hint, model=self.model)
        return WorkerFailed(f"worker for '{self.model}' {self.exit_description()} {stage}: "
                            f"{_tail(self.log_path) or 'no output'}", model=self.model)

    async def start(self, record: assets_pb2.InstallRecord, spec: run_spec_pb2.RunSpec,
                    *, timeout_s: float, base: assets_pb2.InstallRecord | None = None) -> None:
        """Spawn the process, wait for its socket, load the model; raises WorkerFailed."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        check_private_dir(self.socket_path.parent)  # still ours: never connect through a swapped one
        started = time.perf_counter_ns()
        env = worker_environment(os.environ)
        # ggml's OpenMP threads sleep after GOMP_SPINCOUNT idle spins. The default is tuned for
        # one process; here the daemon and the worker's gRPC thread run between tokens, and a
        # worker thread gone to sleep costs a wake-up on every token. Spinning longer (a few ms,
        # then sleep) measured 0.91 -> 0.97 of in-process tokens/s on 2 cores (bench/).
        env.setdefault("GOMP_SPINCOUNT", "3000000")
        with open(self.log_path, "ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.runtime.worker_module,
                "--socket", str(self.socket_path), "--parent-pid", str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True, env=env,
            )
        asyncio.get_running_loop().create_task(self._wait_exit())
        self.channel = grpc.aio.insecure_channel(f"unix://{self.socket_path}", options=_CHANNEL_OPTIONS)
        self.stub = runtime_pb2_grpc.RuntimeStub(self.channel)
        try:
            await asyncio.wait_for(self._connect_and_load(record, spec, base), timeout_s)
        except asyncio.TimeoutError:
            await self.stop()
            raise WorkerFailed(f"worker for '{self.model}' did not load within {timeout_s:g}s",
                               model=self.model) from None
        except grpc.aio.AioRpcError as e:
            if e.code() in _DEATH_CODES:  # the socket closed under the call: did it die?
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.exited.wait(), 2.0)
            died = not self.alive
            await self.stop()
            if died:
                raise self.death("while loading") from None
            raise WorkerFailed(f"worker for '{self.model}' failed to load: {e.details()}",
                               model=self.model) from None
        self.load_ns = time.perf_counter_ns() - started
        log.info("worker %s (pid %d) loaded %s in %.2fs", self.id, self.pid, self.model,
                 self.load_ns / 1e9)

    async def _connect_and_load(self, record: assets_pb2.InstallRecord, spec: run_spec_pb2.RunSpec,
                                base: assets_pb2.InstallRecord | None = None) -> None:
        assert self.channel is not None and self.stub is not None
        ready = asyncio.ensure_future(self.channel.channel_ready())
        died = asyncio.ensure_future(self.exited.wait())
        done, _ = await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        died.cancel()
        if not self.alive:
            raise self.death("while starting")
        async for progress in self.stub.Load(runtime_pb2.LoadRequest(spec=spec, model=record, base=base)):
            if progress.done:
                self.memory_bytes = progress.memory_bytes
        status = await self.stub.GetStatus(runtime_pb2.GetStatusRequest(), timeout=5)
        self.context_length = status.context_length

    async def _wait_exit(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        self.exited.set()
        if self.proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            log.warning("worker %s for %s %s", self.id, self.model, self.exit_description())

    async def stop(self, grace_s: float = 3.0) -> None:
        """Terminate the worker's whole process group; SIGKILL after `grace_s`."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exited.wait(), grace_s)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.exited.wait()
        # Whatever the leader did, nothing of its group may outlive it.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        self.socket_path.unlink(missing_ok=True)


_SOCKET_PATH_MAX = 107  # bytes of a Unix socket path (sun_path, less its terminating NUL)
# What a worker socket adds to the temporary directory: "/omg-<uid>-" + mkdtemp's 8 characters
# + "/w-<8 hex>.sock".
_SOCKET_DIR_ROOM = len(f"/omg-{os.getuid()}-") + 8 + len("/w-01234567.sock")


def socket_dir() -> Path:
    """A fresh private directory for this daemon's worker sockets (removed at shutdown).

    Short (Unix socket paths are limited to 107 bytes, which a deep OMG_HOME would exceed) and
    made by mkdtemp: an unpredictable name, created atomically by us with mode 0700. The fixed
    name used before (`omg-<uid>-<hash of home>`, created with exist_ok) could be made first by
    another local user with mode 0777, who then swapped each worker's socket for their own and
    received the daemon's prompts. A temporary directory too deep to hold such a socket (a CI
    runner's or a test runner's TMPDIR) is passed over for /tmp."""
    base = tempfile.gettempdir()
    if len(base) + _SOCKET_DIR_ROOM > _SOCKET_PATH_MAX:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix=f"omg-{os.getuid()}-", dir=base))


def check_private_dir(path: Path) -> None:
    """Raise WorkerFailed unless `path` is a real directory (not a link) owned by us that no one
    else may enter or write: a worker's socket is only ever made and dialled in such a place."""
    try:
        st = os.lstat(path)
        private = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
    except OSError:
        private = False
    if not private:
        log.error("worker socket directory %s is missing or not private to uid %d (it must be a "
                  "directory we own with mode 0700)", path, os.getuid())
        raise WorkerFailed("the worker socket directory is missing or not private to the daemon's user; "
                           "no worker is started (see the daemon log)")
