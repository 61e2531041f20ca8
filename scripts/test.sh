#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
