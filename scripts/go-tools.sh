#!/usr/bin/env bash
# Builds the pinned Go tools the tests run against from the Go module
# proxy, once, into $CNFBOX_CACHE (default /var/cache/cnfbox), and prints
# the directory holding the binaries:
#
#   bash scripts/go-tools.sh containerd v2.4.2   # containerd, ctr, containerd-shim-runc-v2
#
# Idempotent: a complete build is reused; a partial one is rebuilt. The
# module cache and build cache live in the cache directory too.
set -euo pipefail
cache="${CNFBOX_CACHE:-/var/cache/cnfbox}"
log() { echo "go-tools: $*" >&2; }
usage() { echo "usage: go-tools.sh containerd VERSION" >&2; exit 2; }
(( $# == 2 )) || usage
tool=$1 version=$2
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
  *) usage ;;
esac

complete() { local b; for b in "${bins[@]}"; do [[ -x "$out/bin/$b" ]] || return 1; done; }
if ! complete; then
  log "building $tool $version from the Go module proxy into $out (once)"
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp/bin"
  start=$(date +%s)
  GOBIN="$out.tmp/bin" go install "${pkgs[@]}" >&2
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "built $tool $version in $(( $(date +%s) - start ))s"
fi
echo "$out/bin"
