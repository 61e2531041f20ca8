#!/usr/bin/env bash
# go vet and go test of the client, offline (see env.sh); the live tests need OMG_HOST.
set -euo pipefail
cd "$(dirname "$0")"
source ./env.sh
cd "$GO_PKG_DIR"
go vet . && go test -count=1 -v "$@" .
