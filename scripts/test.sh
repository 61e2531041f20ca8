#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, then pytest. OMG_SETUP_DONE=1 (set by
# .ci/run after its own install step) skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${OMG_SETUP_DONE:-}" = 1 ] || bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
