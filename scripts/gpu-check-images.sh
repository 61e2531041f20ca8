#!/usr/bin/env bash
# Run on a lent GPU machine after `bash scripts/gpu-bundle-images.sh` here, with .gpu-images
# carried: stable-diffusion.cpp built with CUDA for this GPU (its abort hook applied), then the
# gpu-marked image test (placement on the GPU, seeded pixels, VRAM freed) and bench/images.py
# (daemon vs in-process, 256 and 512 px) on the random-weight SDXS-512 model generated here.
# A second script beside scripts/gpu-check.sh: both CUDA builds do not fit in one 10-minute run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -d .gpu-images ] || { echo "no .gpu-images/: run scripts/gpu-bundle-images.sh first and carry it" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -m pip install -q --no-index --find-links .gpu-images/wheels grpcio protobuf googleapis-common-protos \
  starlette uvicorn httptools prompt_toolkit python-multipart argcomplete pytest-asyncio diskcache \
  scikit-build-core httpx cryptography pillow
arch=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}")' 2>/dev/null || echo 90)
work=$(mktemp -d)
tar xzf .gpu-images/stable-diffusion-cpp-python.tar.gz -C "$work"
sdist=$(ls -d "$work"/stable_diffusion_cpp_python-*/)
time CMAKE_ARGS="-DSD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$arch" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PY" -m pip install -q --no-index --no-build-isolation --no-deps --no-cache-dir "$sdist"
"$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e .
"$PY" -c 'from ohmygpu.runtimes.sdcpp.worker import abort_supported, library_has_gpu
assert library_has_gpu(), "stable-diffusion.cpp was built without CUDA"
assert abort_supported(), "the abort hook patch is missing"
print("stable-diffusion.cpp with CUDA and the abort hook")'
export PYTHONUNBUFFERED=1
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/e2e/test_gpu.py -k sdcpp
timeout 240 "$PY" bench/images.py --sizes 256,512 --steps 8 --runs 2 --threads 8
