#!/usr/bin/env bash
# Runs every cnfbox test on a fresh Debian machine, as root:
# installs what the tests need, builds the binaries, runs unit, property and
# black-box integration tests, then each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
  echo "test.sh: run as root (tests create namespaces, cgroups and mounts)" >&2
  exit 1
fi
bash scripts/deps.sh
echo "== fmt"; cargo fmt --all -- --check
echo "== build"; cargo build --workspace --all-targets --locked
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked -- --test-threads="${CNFBOX_TEST_THREADS:-4}"
echo "== shim and CRI tests again on containerd 2.x (Debian sid, unpacked by scripts/containerd2.sh)"
containerd2_bin=$(bash scripts/containerd2.sh)
CNFBOX_CONTAINERD_BIN="$containerd2_bin" cargo test -p integration --locked \
  --test shim_ctr --test shim_cri --test cri_userns --test cri_lifecycle -- --test-threads="${CNFBOX_TEST_THREADS:-4}"
echo "== VM lane: cgroup v2 only, two NUMA nodes, 8021q (QEMU TCG, scripts/vm-test.sh)"
bash scripts/vm-test.sh
echo "== VM lane with systemd as pid 1: --systemd-cgroup (CNFBOX_VM_SYSTEMD=1 scripts/vm-test.sh)"
CNFBOX_VM_SYSTEMD=1 bash scripts/vm-test.sh
echo "== fuzz (FUZZ_SECONDS=${FUZZ_SECONDS:-30} per target)"
bash scripts/fuzz.sh
