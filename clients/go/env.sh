# Sourced by generate.sh and test.sh: Go in GOPATH mode over Debian's Go libraries, offline.
# Debian's google.golang.org/grpc (1.33) declares a go.mod whose requirements (envoy, xds, uuid)
# Debian does not ship, so module mode cannot resolve it without a network; GOPATH mode builds
# from the sources in /usr/share/gocode as they are. This directory is linked into a private
# GOPATH at its import path, github.com/ohmygpu/ohmygpu/clients/go ($GO_PKG_DIR).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GO111MODULE=off GOPROXY=off GOFLAGS=
export GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ohmygpu/go-build}"
OMG_GOPATH="${OMG_GOPATH:-${XDG_CACHE_HOME:-$HOME/.cache}/ohmygpu/gopath}"
mkdir -p "$OMG_GOPATH/src/github.com/ohmygpu/ohmygpu/clients"
ln -sfn "$HERE" "$OMG_GOPATH/src/github.com/ohmygpu/ohmygpu/clients/go"
export GOPATH="$OMG_GOPATH:/usr/share/gocode"
export GO_PKG_DIR="$OMG_GOPATH/src/github.com/ohmygpu/ohmygpu/clients/go"
