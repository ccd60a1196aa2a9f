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
# containerd 2.x only (Kubernetes 1.36 supports nothing older; the shim
# serves the task API v3): 2.4 for every test, 2.2 (Go module proxy) and
# Debian sid's 2.1.9 (the oldest line tested) for the shim and CRI tests.
ctd_new=$(bash scripts/go-tools.sh containerd "${CNFBOX_CONTAINERD_NEW:-v2.4.2}")
ctd_mid=$(bash scripts/go-tools.sh containerd "${CNFBOX_CONTAINERD_MID:-v2.2.9}")
ctd_old=$(bash scripts/containerd2.sh)
export CNFBOX_CONTAINERD_BIN="$ctd_new"
echo "== fmt"; cargo fmt --all -- --check
echo "== build"; cargo build --workspace --all-targets --locked
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests (containerd $("$ctd_new/containerd" --version | awk '{print $3}'))"
cargo test --workspace --locked -- --test-threads="${CNFBOX_TEST_THREADS:-4}"
for bin in "$ctd_mid" "$ctd_old"; do
  echo "== shim and CRI tests again on containerd $("$bin/containerd" --version | awk '{print $3}') ($bin)"
  CNFBOX_CONTAINERD_BIN="$bin" cargo test -p integration --locked \
    --test shim_ctr --test shim_cri --test cri_userns --test cri_lifecycle --test deploy_node -- --test-threads="${CNFBOX_TEST_THREADS:-4}"
done
# critest, both handlers, with cnfbox's default config ([idmap] mode
# "always") and with kubelet choosing the user namespaces.
for conf in a b; do
  for mode in always kubelet; do
    echo "== critest v1.37.0, configuration ${conf^^}, [idmap] mode = \"$mode\" (containerd v2.4.2, scripts/critest.sh)"
    bash scripts/critest.sh --config "$conf" --idmap "$mode"
  done
done
echo "== VM lane: cgroup v2 only, two NUMA nodes, 8021q (QEMU TCG, scripts/vm-test.sh)"
bash scripts/vm-test.sh
echo "== VM lane with systemd as pid 1: --systemd-cgroup (CNFBOX_VM_SYSTEMD=1 scripts/vm-test.sh)"
CNFBOX_VM_SYSTEMD=1 bash scripts/vm-test.sh
echo "== fuzz (FUZZ_SECONDS=${FUZZ_SECONDS:-30} per target)"
bash scripts/fuzz.sh
