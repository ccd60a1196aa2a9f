#!/usr/bin/env bash
# Builds the pinned Go tools the tests run against from the Go module
# proxy, once, into $CNFBOX_CACHE (default /var/cache/cnfbox), and prints
# the directory holding the binaries:
#
#   bash scripts/go-tools.sh containerd v2.4.2   # containerd, ctr, containerd-shim-runc-v2
#   bash scripts/go-tools.sh runc v1.5.3         # runc (cgo, seccomp tag; needs libseccomp-dev)
#   bash scripts/go-tools.sh crictl v1.37.0      # crictl (sigs.k8s.io/cri-tools)
#   bash scripts/go-tools.sh critest v1.37.0     # critest, a Go test binary (go test -c)
#
# Idempotent: a complete build is reused; a partial one is rebuilt. The
# module cache and build cache live in the cache directory too.
set -euo pipefail
cache="${CNFBOX_CACHE:-/var/cache/cnfbox}"
log() { echo "go-tools: $*" >&2; }
usage() { echo "usage: go-tools.sh containerd|runc|crictl|critest VERSION" >&2; exit 2; }
(( $# == 2 )) || usage
tool=$1 version=$2
goflags=()
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { log "version '$version': expected vMAJOR.MINOR.PATCH"; exit 2; }
# Go is installed by the machine's image (/usr/local/go), not by apt:
# Debian 12's golang-go is too old for containerd 2.x.
[[ -x /usr/local/go/bin/go ]] && export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { log "go (1.24 or later) is required on PATH or in /usr/local/go"; exit 1; }
export GOPATH="$cache/go" GOCACHE="$cache/go-build" GOFLAGS=-mod=mod GOTOOLCHAIN=local

case "$tool" in
  containerd)
    out="$cache/containerd-$version"
    bins=(containerd ctr containerd-shim-runc-v2)
    pkgs=()
    for b in "${bins[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$b@$version"); done
    ;;
  runc)
    # cgo with the seccomp tag (libseccomp-dev), as runc's Makefile builds
    # it; not the libpathrs tag, whose Rust library Debian 12 cannot link.
    out="$cache/runc-$version"
    bins=(runc)
    pkgs=("github.com/opencontainers/runc@$version")
    pkg-config --exists libseccomp || { log "runc needs libseccomp-dev (apt-get install libseccomp-dev)"; exit 1; }
    export CGO_ENABLED=1
    goflags=(-tags seccomp -ldflags "-X main.version=${version#v}")
    ;;
  crictl)
    out="$cache/crictl-$version"
    bins=(crictl)
    pkgs=("sigs.k8s.io/cri-tools/cmd/crictl@$version")
    ;;
  critest)
    # critest is the test binary of cmd/critest: `go test -c` needs a main
    # module, so a scratch one under the cache requires cri-tools at the
    # pinned version (its go.mod then decides every dependency's version).
    out="$cache/critest-$version"
    bins=(critest)
    ;;
  *) usage ;;
esac

# One build per tool and version at a time: a second caller waits, then
# finds it built.
mkdir -p "$cache"
exec 9>"$out.lock"
flock 9
complete() { local b; for b in "${bins[@]}"; do [[ -x "$out/bin/$b" ]] || return 1; done; }
if ! complete; then
  log "building $tool $version from the Go module proxy into $out (once)"
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp/bin"
  start=$(date +%s)
  if [[ "$tool" == critest ]]; then
    mkdir -p "$out.tmp/src"
    (cd "$out.tmp/src"
     go mod init cnfbox.invalid/critest-build >&2 2>/dev/null
     go get "sigs.k8s.io/cri-tools@$version" >&2
     go test -c -o "$out.tmp/bin/critest" sigs.k8s.io/cri-tools/cmd/critest >&2)
  else
    GOBIN="$out.tmp/bin" go install "${goflags[@]}" "${pkgs[@]}" >&2
  fi
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "built $tool $version in $(( $(date +%s) - start ))s"
fi
echo "$out/bin"
