#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for scripts/gpu-check.sh on a lent GPU machine, which reaches no
# registry and receives at most 64 MiB: wheels (CPython 3.12, the device image's) of what the
# image lacks, llama-cpp-python's sdist without its docs and test vocabularies (76 -> ~12 MB),
# and a tiny random-weight GGUF with SmolLM2's tokenizer (scripts/tiny_gguf.py; SmolLM2 itself
# is 98 MB). faster-whisper's CTranslate2 and PyAV wheels (~78 MB) do not fit beside them, so the
# whisper-on-CUDA test skips there. Run it here, then: device run with carry [".gpu"] and the
# command `bash scripts/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
rm -rf .gpu && mkdir -p .gpu/wheels
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --no-deps -d .gpu/wheels grpcio==1.85.1 'protobuf>=6.31' 'googleapis-common-protos>=1.70' \
  'starlette>=0.47' 'uvicorn>=0.34' 'httptools>=0.6' 'prompt_toolkit>=3.0' 'wcwidth' \
  'python-multipart>=0.0.18' 'argcomplete>=3' 'pytest-asyncio>=0.24' 'diskcache>=5.6' \
  'scikit-build-core>=0.10' 'pathspec' 'packaging' 'httpx' 'httpcore' 'h11' 'anyio' 'sniffio' 'idna' 'certifi' \
  'cryptography>=42' 'cffi' 'pycparser' \
  'gguf>=0.17'  # cryptography: the node agent's certificates; gguf: transformers reads the tiny GGUF
# (tests/e2e/test_gpu_transformers.py makes its HF model from it; the image has torch and transformers)
LLAMA_SPEC=$(sed -n 's/.*"\(llama-cpp-python==[^"]*\)".*/\1/p' pyproject.toml)
tmp=$(mktemp -d)
"$PY" -m pip download -q --no-deps --no-binary :all: "$LLAMA_SPEC" -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
src=$(ls -d "$tmp"/llama_cpp_python-*/)
rm -rf "$src".git "$src"vendor/llama.cpp/{models,docs,benches,media}  # .git: a 38 MB submodule pack
tar czf .gpu/llama-cpp-python.tar.gz -C "$tmp" "$(basename "$src")"
rm -rf "$tmp"
"$PY" scripts/tiny_gguf.py .gpu/tiny.gguf
du -sh .gpu
