#!/usr/bin/env bash
# Prepares .gpu-images/ (git-ignored) for scripts/gpu-check-images.sh: the image worker on CUDA.
# A second bundle because a lent machine receives at most 64 MiB and the LLM bundle (.gpu/) fills
# most of it: the same daemon wheels (CPython 3.12), Pillow, and stable-diffusion-cpp-python's
# sdist with our abort hook already applied (scripts/patches/; the machine may lack `patch`).
# The test model is generated there (scripts/tiny_sd.py needs only numpy, which the image has).
# Then: device run with carry [".gpu-images"] and the command `bash scripts/gpu-check-images.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
rm -rf .gpu-images && mkdir -p .gpu-images/wheels
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --no-deps -d .gpu-images/wheels grpcio==1.85.1 'protobuf>=6.31' 'googleapis-common-protos>=1.70' \
  'starlette>=0.47' 'uvicorn>=0.34' 'httptools>=0.6' 'prompt_toolkit>=3.0' 'wcwidth' \
  'python-multipart>=0.0.18' 'argcomplete>=3' 'pytest-asyncio>=0.24' 'diskcache>=5.6' \
  'scikit-build-core>=0.10' 'pathspec' 'packaging' 'httpx' 'httpcore' 'h11' 'anyio' 'sniffio' 'idna' \
  'certifi' 'cryptography>=42' 'cffi' 'pycparser' 'pillow>=10'
SD_SPEC=$(sed -n 's/.*"\(stable-diffusion-cpp-python==[^"]*\)".*/\1/p' pyproject.toml)
tmp=$(mktemp -d)
"$PY" - "$SD_SPEC" "$tmp" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "scripts")
from native_wheel import patched_source
root = patched_source(sys.argv[1], (Path("scripts/patches/stable-diffusion-cpp-abort.patch"), Path("scripts/patches/stable-diffusion-cpp-unet-parts.patch")), Path(sys.argv[2]))
print(root)
PYEOF
src=$(ls -d "$tmp"/src/stable_diffusion_cpp_python-*/)
rm -rf "$src"vendor/stable-diffusion.cpp/{docs,assets,.github} "$src"vendor/stable-diffusion.cpp/ggml/{examples,tests,docs}
tar czf .gpu-images/stable-diffusion-cpp-python.tar.gz -C "$tmp/src" "$(basename "$src")"
rm -rf "$tmp"
du -sh .gpu-images
