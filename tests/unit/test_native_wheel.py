"""scripts/native_wheel.py: build flags from the CPU, wheels keyed by flags, and the installed
llama.cpp being the one built for this machine (it runs a multi-threaded batched probe)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import load_script, smollm2_path

nw = load_script("native_wheel")

AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c avx512f amx_bf16 amx_tile amx_int8\n"
PLAIN_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
LLAMA_SPEC = "llama-cpp-python==0.3.36"


def test_cpu_flags_read_the_first_cpu() -> None:
    assert {"amx_tile", "avx2"} <= nw.cpu_flags(AMX_CPUINFO)
    assert nw.cpu_flags("Features\t: fp asimd sve\n") == {"fp", "asimd", "sve"}
    assert nw.cpu_flags("") == set()


def test_amx_is_turned_off_in_both_languages_where_advertised() -> None:
    first = nw.variants(nw.cpu_flags(AMX_CPUINFO), "")[0]
    for lang in ("C", "CXX"):
        arg = next(a for a in first.cmake_args if a.startswith(f"-DCMAKE_{lang}_FLAGS="))
        assert all(f"-mno-{f}" in arg for f in ("amx-tile", "amx-int8", "amx-bf16")), arg
    plain = nw.variants(nw.cpu_flags(PLAIN_CPUINFO), "")[0]
    assert not any("amx" in a for a in plain.cmake_args)


def test_portable_fallback_uses_only_advertised_features_and_user_args_win() -> None:
    portable = nw.variants({"avx", "avx2"}, "-DGGML_CUDA=on -DGGML_AVX2=OFF")[-1]
    assert "-DGGML_NATIVE=OFF" in portable.cmake_args
    assert "-DGGML_FMA=OFF" in portable.cmake_args and "-DGGML_AVX=ON" in portable.cmake_args
    # The user's own arguments come last, so CMake takes theirs.
    assert portable.cmake_args[-2:] == ("-DGGML_CUDA=on", "-DGGML_AVX2=OFF")


def test_the_key_changes_with_the_flags_so_no_wheel_is_reused_across_them() -> None:
    amx, plain = (nw.variants(nw.cpu_flags(c), "")[0] for c in (AMX_CPUINFO, PLAIN_CPUINFO))
    cuda = nw.variants(nw.cpu_flags(PLAIN_CPUINFO), "-DGGML_CUDA=on")[0]
    keys = {nw.build_key(LLAMA_SPEC, v) for v in (amx, plain, cuda)}
    assert len(keys) == 3
    assert nw.build_key(LLAMA_SPEC, plain) == nw.build_key(LLAMA_SPEC, plain)
    assert nw.build_key("llama-cpp-python==0.3.37", plain) != nw.build_key(LLAMA_SPEC, plain)


def test_a_patch_is_part_of_the_key(tmp_path: Path) -> None:
    plain = nw.variants(nw.cpu_flags(PLAIN_CPUINFO), "")[0]
    one, two = tmp_path / "one.patch", tmp_path / "two.patch"
    one.write_text("--- a/x\n+++ b/x\n")
    two.write_text("--- a/y\n+++ b/y\n")
    keys = {nw.build_key(LLAMA_SPEC, plain, patches) for patches in ((), (one,), (two,), (one, two))}
    assert len(keys) == 4
    # A wheel built before patches existed keeps its key (no rebuild for unpatched packages).
    assert nw.build_key(LLAMA_SPEC, plain, ()) == nw.build_key(LLAMA_SPEC, plain)


def test_the_installed_stable_diffusion_cpp_has_our_abort_hook() -> None:
    """setup.sh builds it with scripts/patches/stable-diffusion-cpp-abort.patch (cancellation at
    the next denoising step): the library must export the symbol, and be ours by its record."""
    from stable_diffusion_cpp import stable_diffusion_cpp as lowlevel

    assert hasattr(lowlevel._lib, "sd_set_abort_callback")
    url = nw.installed_from("stable-diffusion-cpp-python")
    assert url is not None and str(nw.wheel_cache().as_uri()) in url, url


def test_installed_llama_cpp_is_the_wheel_built_for_this_cpu() -> None:
    url = nw.installed_from("llama-cpp-python")
    assert url is not None, "llama-cpp-python was not installed by scripts/native_wheel.py"
    flags = nw.cpu_flags(Path("/proc/cpuinfo").read_text())
    keys = [nw.build_key(LLAMA_SPEC, v) for v in nw.variants(flags, "")]
    base = (nw.wheel_cache() / "llama-cpp-python").as_uri()
    assert any(url.startswith(f"{base}/{k}/") for k in keys), (url, keys)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is needed")
def test_installed_library_has_no_amx_instructions_where_the_cpu_advertises_amx() -> None:
    flags = nw.cpu_flags(Path("/proc/cpuinfo").read_text())
    if not any(f in flags for f in nw.AMX_FLAGS):
        pytest.skip("this CPU does not advertise AMX")
    spec = importlib.util.find_spec("llama_cpp")
    assert spec and spec.submodule_search_locations
    libs = list(Path(list(spec.submodule_search_locations)[0]).rglob("libggml-cpu*.so*"))
    assert libs, "no libggml-cpu in the installed llama_cpp"
    for lib in libs:
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)],
                              capture_output=True, text=True, check=True).stdout
        assert "tileloadd" not in text and "tdpbssd" not in text, f"{lib.name} has AMX code"


@pytest.mark.slow
def test_probe_runs_a_multithreaded_batched_evaluation() -> None:
    ok, what = nw.probe(smollm2_path())
    assert ok, what
    assert what.startswith("ok: 400 tokens on ")
