#!/usr/bin/env python3
"""Build and install a ggml-based wheel (llama-cpp-python, later stable-diffusion-cpp-python)
that runs on *this* CPU, and prove it does.

Why this exists: these packages compile ggml from source with -march=native. Some Xeons
advertise AMX (amx_tile, amx_int8, amx_bf16 in /proc/cpuinfo) yet trap on `tileloadd` in
multi-threaded prompt evaluation, so a native build dies with SIGILL on its first long prompt.
And pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS: a wheel built once with other
flags (or on another CPU sharing the cache) is silently reused.

So, per package:
1. the build flags come from what the CPU advertises (AMX off where it is advertised), plus the
   user's own CMAKE_ARGS (e.g. -DGGML_CUDA=on);
2. the wheel is built with pip's cache off into our own wheelhouse, one directory per key
   (package, flags, interpreter, compiler), and installed from that file, so pip records its
   location (direct_url.json): an installed copy not from the current key is replaced;
3. a probe runs a multi-threaded batched evaluation of a few hundred tokens in a child process;
   if the library traps, the next variant is built (portable: GGML_NATIVE off), and if none runs
   we stop with a message naming the cause.

A package may be built with patches of ours applied to its sdist first (--patch FILE, `patch
-p1` from the sdist's root; their contents are part of the key): stable-diffusion.cpp gets an
abort callback that way (scripts/patches/, see the file's header for why).

Usage: native_wheel.py llama-cpp-python==0.3.36 --probe-model PATH.gguf
       native_wheel.py stable-diffusion-cpp-python==0.4.7 --patch scripts/patches/X.patch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# x86 features a portable (GGML_NATIVE=OFF) build may still use, each only if advertised.
PORTABLE_FEATURES = (("avx", "GGML_AVX"), ("avx2", "GGML_AVX2"), ("fma", "GGML_FMA"),
                     ("f16c", "GGML_F16C"))

PROBE = r"""
import os, sys
from llama_cpp import Llama
threads = max(2, os.cpu_count() or 2)
llm = Llama(model_path=sys.argv[1], n_ctx=1024, n_batch=512, n_threads=threads,
            n_threads_batch=threads, verbose=False)
tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 40)[:400]
llm.eval(tokens)
print(f"ok: {len(tokens)} tokens on {threads} threads")
"""


@dataclass(frozen=True)
class Variant:
    """One way to build: a name for messages and the CMake arguments it adds."""

    name: str
    cmake_args: tuple[str, ...]


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo's text (x86 `flags`, ARM `Features`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def variants(flags: set[str], user_args: str) -> list[Variant]:
    """The builds to try, best first. The user's CMAKE_ARGS come last so they win."""
    user = tuple(shlex.split(user_args))
    c_flags = NO_AMX if any(f in flags for f in AMX_FLAGS) else ""
    native_args = (f"-DCMAKE_C_FLAGS={c_flags}", f"-DCMAKE_CXX_FLAGS={c_flags}") if c_flags else ()
    out = [Variant("native" + (" without AMX" if c_flags else ""), native_args + user)]
    portable = ["-DGGML_NATIVE=OFF"]
    portable += [f"-D{opt}={'ON' if feat in flags else 'OFF'}" for feat, opt in PORTABLE_FEATURES]
    out.append(Variant("portable", tuple(portable) + user))
    return out


def compiler_id() -> str:
    try:
        return subprocess.run(["cc", "--version"], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def build_key(spec: str, variant: Variant, patches: tuple[Path, ...] = ()) -> str:
    """What makes two wheels interchangeable: any difference gives another directory."""
    ident = {"spec": spec, "cmake": list(variant.cmake_args), "python": sys.version,
             "machine": platform.machine(), "cc": compiler_id()}
    if patches:  # absent when none, so the keys of unpatched builds stay what they were
        ident["patches"] = [hashlib.sha256(p.read_bytes()).hexdigest() for p in patches]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def wheel_cache() -> Path:
    base = os.environ.get("OMG_WHEEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ohmygpu", "wheels")
    return Path(base)


def dist_name(spec: str) -> str:
    return spec.split("==")[0].split(">")[0].split("<")[0].strip()


def installed_from(dist: str) -> str | None:
    """The file URL the installed distribution was installed from, if pip recorded one."""
    from importlib import metadata

    try:
        text = metadata.distribution(dist).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        return str(json.loads(text).get("url") or "") or None
    except ValueError:
        return None


def patched_source(spec: str, patches: tuple[Path, ...], into: Path) -> Path:
    """The sdist of `spec`, unpacked under `into` with `patches` applied; its root."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", str(into), spec], check=True)
    sdists = sorted(into.glob("*.tar.gz"))
    if len(sdists) != 1:
        raise SystemExit(f"[native-wheel] expected one sdist of {spec}, got {sdists}")
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(into / "src", filter="data")
    (root,) = (into / "src").iterdir()
    for patch in patches:
        done = subprocess.run(["patch", "-p1", "--forward", "--batch", "-d", str(root), "-i", str(patch.resolve())],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"[native-wheel] {patch} does not apply to {spec}: {done.stdout.strip()[-600:]}")
    return root


def build(spec: str, variant: Variant, out_dir: Path, patches: tuple[Path, ...] = ()) -> Path:
    """Build the wheel with pip's caches off (a cached wheel ignores CMAKE_ARGS)."""
    existing = sorted(out_dir.glob("*.whl"))
    if existing:
        return existing[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=shlex.join(variant.cmake_args))
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    print(f"[native-wheel] building {spec} ({variant.name}); this takes several minutes once",
          flush=True)
    tmp = out_dir / "partial"
    with tempfile.TemporaryDirectory() as work:
        source = str(patched_source(spec, patches, Path(work))) if patches else spec
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir",
                        "--no-binary", dist_name(spec), "-w", str(tmp), source], env=env, check=True)
    wheels = sorted(tmp.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"[native-wheel] expected one wheel from building {spec}, got {wheels}")
    final = out_dir / wheels[0].name
    wheels[0].rename(final)  # the wheel appears in the keyed directory only once complete
    tmp.rmdir()
    return final


def install(wheel: Path, dist: str) -> None:
    if installed_from(dist) == wheel.as_uri():
        return
    print(f"[native-wheel] installing {wheel.name} from {wheel.parent}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--force-reinstall", "--no-cache-dir", str(wheel)], check=True)
    # llama-cpp-python's own dependencies (numpy, diskcache, jinja2, typing-extensions).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", str(wheel)], check=True)


def probe(model: Path, timeout: float = 300) -> tuple[bool, str]:
    """Run a multi-threaded batched evaluation in a child; (ran, what happened)."""
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE, str(model)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"the probe did not finish in {timeout:.0f} s"
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return False, f"killed by {sig} (the library uses instructions this CPU cannot run)"
    return False, f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="requirement, e.g. llama-cpp-python==0.3.36")
    ap.add_argument("--probe-model", type=Path, help="GGUF for the multi-threaded probe")
    ap.add_argument("--patch", type=Path, action="append", default=[],
                    help="a patch of ours to apply to the sdist before building (repeatable)")
    args = ap.parse_args(argv)
    patches = tuple(args.patch)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    dist = dist_name(args.spec)
    tried: list[str] = []
    for variant in variants(cpu_flags(cpuinfo), os.environ.get("CMAKE_ARGS", "")):
        key = build_key(args.spec, variant, patches)
        wheel = build(args.spec, variant, wheel_cache() / dist / key, patches)
        install(wheel, dist)
        if args.probe_model is None:
            return 0
        ok, what = probe(args.probe_model)
        if ok:
            print(f"[native-wheel] {dist} ({variant.name}) runs here: {what}", flush=True)
            return 0
        print(f"[native-wheel] {dist} ({variant.name}) does not run here: {what}", flush=True)
        tried.append(f"{variant.name}: {what}")
    print(f"[native-wheel] no build of {dist} runs on this CPU ({'; '.join(tried)}). "
          "Set CMAKE_ARGS to flags this CPU supports and run scripts/setup.sh again.",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
