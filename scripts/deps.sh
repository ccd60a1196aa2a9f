#!/usr/bin/env bash
# Installs the Debian packages cnfbox builds, tests and benchmarks with.
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail
pkgs=(
  build-essential pkg-config libseccomp-dev protobuf-compiler  # build
  libelf-dev zlib1g-dev                                        # libbpf (libbpf-sys) for the cgroup v2 device program
  busybox-static uidmap iproute2 util-linux procps strace     # test bundles, namespaces, syscall budget
  runc crun hyperfine                                          # side-by-side benchmarks
  containernetworking-plugins                                  # CRI tests (containerd 2.x: scripts/go-tools.sh)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "deps: cargo (Rust toolchain) is required" >&2; exit 1; }
