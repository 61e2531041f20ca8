#!/usr/bin/env bash
# Run on a lent GPU machine (one H200, 16 cores, no registry), after `bash scripts/gpu-bundle.sh`
# here and with .gpu carried. One CUDA build (sm_90 on an H200) of the llama.cpp that the pinned
# llama-cpp-python vendors makes both the shared libraries the worker loads and upstream
# llama-server (~4 min on 16 cores: two CUDA builds would not fit); llama-cpp-python's Python
# side is installed without a build of its own and given those libraries. Then every gpu-marked
# test (tests/e2e/test_gpu_transformers.py among them: the image's own CUDA torch and transformers,
# an HF model converted from the tiny GGUF), and the batching bench against llama-server on a ~1B random-weight model
# (generated here: decoding must be bound by reading the weights, as with real models). Well
# under 10 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -d .gpu ] || { echo "no .gpu/: run scripts/gpu-bundle.sh first and carry .gpu" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -m pip install -q --no-index --find-links .gpu/wheels grpcio protobuf googleapis-common-protos \
  starlette uvicorn httptools prompt_toolkit python-multipart argcomplete pytest-asyncio diskcache \
  scikit-build-core httpx gguf
arch=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}{n}")' 2>/dev/null || echo 90)
work=$(mktemp -d)
tar xzf .gpu/llama-cpp-python.tar.gz -C "$work"
sdist=$(ls -d "$work"/llama_cpp_python-*/)
build="$work/build"
time {
  cmake -S "$sdist/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES="$arch" -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
  cmake --build "$build" --target llama-server -j "$(nproc)" >/dev/null
}
# The Python package alone (LLAMA_BUILD=OFF), then the libraries just built, where its wheel keeps them.
CMAKE_ARGS="-DLLAMA_BUILD=OFF" "$PY" -m pip install -q --no-index --no-build-isolation --no-deps "$sdist"
lib=$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib")')
mkdir -p "$lib"
cp -P "$build"/bin/*.so* "$lib"/
"$PY" -c 'import llama_cpp; assert llama_cpp.llama_supports_gpu_offload(), "the build has no GPU offload"; print("llama.cpp", llama_cpp.__version__, "with CUDA")'
"$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e .
export OMG_TEST_GGUF="$PWD/.gpu/tiny.gguf" PYTHONUNBUFFERED=1
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests/
"$PY" scripts/tiny_gguf.py "$work/random-1b.gguf" --size 1b --source .gpu/tiny.gguf
OMG_LLAMA_SERVER="$build/bin/llama-server" timeout 240 "$PY" bench/vs_llama_server.py \
  --model "$work/random-1b.gguf" --gpu-layers 999 --threads 8 --parallel 8 --clients 1,4,8,16 \
  --trials 2 --max-tokens 128 --window 2048
