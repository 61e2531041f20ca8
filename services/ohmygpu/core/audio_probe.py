"""The upload check (core/audio.py `probe`) run in a short-lived child process.

An upload is untrusted: FFmpeg parsing a hostile file can crash (SIGSEGV), hang or allocate without
bound. In the daemon's own process that would take every loaded model and request down with it;
in a child it costs that one request. The child bounds itself (address space, CPU seconds) before
it imports PyAV, and the parent kills it past a wall-clock limit. It answers one JSON line on
stdout; anything else (a signal, a limit, garbage) is a clear "cannot be decoded" 400.

Run as `python -m ohmygpu.core.audio_probe PATH MAX_SECONDS MEMORY_MB CPU_S` (the daemon does).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ohmygpu.core.audio import SEND, AudioInfo
from ohmygpu.core.errors import InvalidArgument, MissingExtra

if TYPE_CHECKING:
    import asyncio

# The child imports only this module, core/audio.py and PyAV: asyncio and logging are the
# parent's (imported in the functions it runs), which keeps the child's start short.


def _undecodable(why: str) -> InvalidArgument:
    return InvalidArgument(f"the file is not audio that can be decoded ({why}); {SEND}", param="file")


async def probe_isolated(path: Path, *, max_seconds: float = 0, timeout_s: float = 10,
                         memory_mb: int = 1024) -> AudioInfo:
    """`probe(path, max_seconds=...)` in a child process bounded to `memory_mb` of address space
    and `timeout_s` (CPU and wall clock). Raises what probe raises; a child that dies, runs out
    of time or memory, or answers nonsense is InvalidArgument too. Never a local path in it."""
    import asyncio
    import logging

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ohmygpu.core.audio_probe", str(path), str(max_seconds), str(memory_mb),
        str(max(1, int(timeout_s))), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        _kill(proc)
        await proc.wait()
        raise _undecodable(f"checking it took over {timeout_s:.0f} s") from None
    except asyncio.CancelledError:  # the client went away: the child must not outlive the request
        _kill(proc)
        raise
    try:
        answer = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        # The log may say what happened (it is local); the answer must not show FFmpeg's words.
        logging.getLogger("ohmygpu.audio_probe").warning("audio probe child exited with %s: %s", _exit(proc.returncode),
                    err.decode(errors="replace")[-500:].strip())
        if proc.returncode == -signal.SIGXCPU or proc.returncode == -signal.SIGKILL:
            raise _undecodable(f"checking it took over {timeout_s:.0f} s")
        raise _undecodable("the decoder crashed on it" if (proc.returncode or 0) < 0 else "the decoder failed on it")
    if "info" in answer:
        return AudioInfo(**answer["info"])
    if answer.get("missing_extra"):
        raise MissingExtra("whisper", "whisper")
    raise InvalidArgument(str(answer.get("message", "")) or "the audio file cannot be read",
                          param=answer.get("param") or "file")


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: any helper it started dies too
    except ProcessLookupError:
        pass


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _bound(memory_mb: int, cpu_s: int) -> None:
    import resource

    if memory_mb > 0:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_s > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file of an upload


def main(argv: list[str]) -> int:
    path, max_seconds, memory_mb, cpu_s = Path(argv[0]), float(argv[1]), int(argv[2]), int(argv[3])
    _bound(memory_mb, cpu_s)
    from ohmygpu.core.audio import probe

    try:
        info = probe(path, max_seconds=max_seconds)
        answer: dict[str, object] = {"info": {"duration_s": info.duration_s, "codec": info.codec,
                                              "sample_rate": info.sample_rate}}
    except MissingExtra:
        answer = {"missing_extra": "whisper"}
    except InvalidArgument as e:
        answer = {"message": e.message, "param": e.param}
    except MemoryError:
        answer = {"message": _undecodable("decoding it needs more memory than allowed").message, "param": "file"}
    except Exception as e:  # noqa: BLE001 - a hostile file can make a decoder raise anything
        print(f"probe failed: {type(e).__name__}: {e}", file=sys.stderr)
        answer = {"message": _undecodable("the decoder failed on it").message, "param": "file"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
