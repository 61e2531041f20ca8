#!/usr/bin/env bash
# Run on a lent GPU machine (one H200, 16 cores, no registry), after `bash scripts/gpu-bundle.sh`
# here and with .gpu carried: installs the carried wheels, builds llama-cpp-python with CUDA for
# the GPU it finds (sm_90 on an H200; ~4 min on 16 cores), then runs every gpu-marked test and the
# chat bench on the GPU. Well under 10 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -d .gpu ] || { echo "no .gpu/: run scripts/gpu-bundle.sh first and carry .gpu" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -m pip install -q --no-index --find-links .gpu/wheels grpcio protobuf googleapis-common-protos \
  starlette uvicorn httptools prompt_toolkit python-multipart argcomplete pytest-asyncio diskcache
arch=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}")' 2>/dev/null || echo 90)
time CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$arch" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PY" -m pip install -q --no-index --no-build-isolation --no-deps .gpu/llama-cpp-python.tar.gz
"$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e .
export OMG_TEST_GGUF="$PWD/.gpu/tiny.gguf" PYTHONUNBUFFERED=1
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/
