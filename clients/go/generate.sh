#!/usr/bin/env bash
# Regenerate gen/ from proto/; `./generate.sh DIR` writes DIR/gen instead (the freshness test
# compares it with gen/). Offline: protoc-gen-go built from Debian's golang-google-protobuf-dev,
# Debian's protoc-gen-go-grpc, buf from the repository root's `npm ci`.
set -euo pipefail
cd "$(dirname "$0")"
base="${1:-.}"
source ./env.sh
if [ ! -x bin/protoc-gen-go ]; then
  (cd "$GO_PKG_DIR" && go build -o "$HERE/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go)
fi
BUF="../../node_modules/.bin/buf"
[ -x "$BUF" ] || BUF=buf
"$BUF" generate ../.. --template buf.gen.yaml --path ../../proto/ohmygpu -o "$base"
