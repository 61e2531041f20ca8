#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install, then pytest. OMG_SETUP_DONE=1 (set by
# .ci/run after its own install step) skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${OMG_SETUP_DONE:-}" = 1 ] || bash scripts/setup.sh
# Two pytest processes, each taking whole files (module fixtures: one daemon per file): most e2e
# tests wait on daemons and workers, so two share the 2 cores of a small machine well (24 -> 17
# minutes here). OMG_TEST_WORKERS=0 runs everything in this one process.
exec "${PYTHON:-python3}" -m pytest -n "${OMG_TEST_WORKERS:-2}" --dist loadfile "$@"
