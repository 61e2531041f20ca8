"""Build upstream `llama-server` once, from the llama.cpp sources that the pinned
llama-cpp-python sdist vendors (the same engine the worker runs), with the same CPU flags as our
wheel (scripts/native_wheel.py: AMX off where the CPU advertises it). The binary is kept in
~/.cache/ohmygpu/llama-server/<key>/, key = spec + flags + compiler, so a bench re-run reuses it.

    python bench/llama_server.py            # prints the binary's path (building it if needed)
    OMG_LLAMA_SERVER=/path/llama-server ...   # use a binary built elsewhere
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import native_wheel  # noqa: E402


def llama_spec() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"(llama-cpp-python==[^"]+)"', text)
    if not match:
        raise SystemExit("pyproject.toml pins no llama-cpp-python")
    return match.group(1)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "ohmygpu" / "llama-server"


def _sdist(spec: str, into: Path) -> Path:
    """The sdist: a local copy named by OMG_LLAMA_SDIST (the GPU machine has no registry), or pip's."""
    given = os.environ.get("OMG_LLAMA_SDIST")
    if given:
        return Path(given)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", str(into), spec], check=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise SystemExit(f"pip download {spec} gave no sdist")
    return found[0]


def ensure_llama_server() -> Path:
    """OMG_LLAMA_SERVER when set (a binary built elsewhere: the GPU check's CUDA build), else ours."""
    given = os.environ.get("OMG_LLAMA_SERVER")
    if given:
        return Path(given)
    spec = llama_spec()
    flags = native_wheel.cpu_flags(Path("/proc/cpuinfo").read_text())
    variant = native_wheel.variants(flags, os.environ.get("CMAKE_ARGS", ""))[0]
    key = native_wheel.build_key(spec + " llama-server", variant)
    out = cache_dir() / key / "llama-server"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
    print(f"[llama-server] building from {spec}'s vendored llama.cpp ({variant.name}); minutes, once",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with tarfile.open(_sdist(spec, work)) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            tar.extractall(work, members=members, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                        "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
                        *variant.cmake_args], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
                       check=True, stdout=subprocess.DEVNULL)
        binary = next(build.rglob("llama-server"))
        partial = out.with_suffix(".partial")
        shutil.copy2(binary, partial)
        partial.rename(out)  # appears only once complete
    return out


if __name__ == "__main__":
    print(ensure_llama_server())
