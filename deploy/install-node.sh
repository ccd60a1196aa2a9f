#!/usr/bin/env bash
# Installs cnfbox on a Kubernetes node running containerd (as root):
#   bash deploy/install-node.sh [configuration: cnfbox-v2 (default) | runc-v2]
# Builds the release binaries, installs them in /usr/local/bin, gives cnfbox
# a host ID pool, adds the containerd drop-in and restarts containerd.
# Running pods survive the restart (their shims keep serving).
set -euo pipefail
cd "$(dirname "$0")/.."
conf="${1:-cnfbox-v2}"
[[ $EUID -eq 0 ]] || { echo "install-node.sh: run as root" >&2; exit 1; }
cargo build --release --locked -p cnfbox -p cnfbox-shim
install -m 0755 target/release/cnfbox target/release/containerd-shim-cnfbox-v2 /usr/local/bin/
# A host ID pool for the pods' ranges (subuid/subgid entries, config.toml).
[[ -f /etc/cnfbox/config.toml ]] || cnfbox setup
mkdir -p /etc/containerd/conf.d
case "$conf" in
  cnfbox-v2) install -m 0644 deploy/containerd-cnfbox.toml /etc/containerd/conf.d/cnfbox.toml ;;
  runc-v2) install -m 0644 deploy/containerd-cnfbox-runc-v2.toml /etc/containerd/conf.d/cnfbox.toml ;;
  *) echo "install-node.sh: unknown configuration $conf (cnfbox-v2 or runc-v2)" >&2; exit 1 ;;
esac
cfg=/etc/containerd/config.toml
if [[ ! -f $cfg ]]; then
  containerd config default > "$cfg"
fi
if ! grep -q '^imports' "$cfg"; then
  sed -i '1i imports = ["/etc/containerd/conf.d/*.toml"]' "$cfg"
fi
systemctl restart containerd
echo "cnfbox installed; label the node: kubectl label node $(hostname) cnfbox.io/runtime=true"
echo "then: kubectl apply -f deploy/runtimeclass.yaml"
