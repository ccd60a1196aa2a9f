#!/usr/bin/env bash
# Installs cnfbox on a Kubernetes node running containerd 2.x (as root):
#   bash deploy/install-node.sh [configuration: cnfbox-v2 (default) | runc-v2]
# Builds the release binaries, installs them in /usr/local/bin, gives cnfbox
# a host ID pool, adds the containerd drop-in and restarts containerd.
# Running pods survive the restart (their shims keep serving).
#
# containerd 2.3+ writes config version 4, whose default already imports
# /etc/containerd/conf.d/*.toml; for 2.0-2.2 (version 3) or a config
# without `imports` the line is added. The drop-ins are version 3, which
# every containerd 2.x reads.
#
# For tests and image builds:
#   CNFBOX_INSTALL_ROOT=DIR  install under DIR instead of / (config paths,
#                            imports included, point into DIR; no `cnfbox
#                            setup`, no restart)
#   CNFBOX_BIN_DIR=DIR       take cnfbox and the shim from DIR instead of
#                            building release binaries
#   CONTAINERD=PATH          the containerd whose `config default` seeds a
#                            missing config.toml (default: containerd on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
conf="${1:-cnfbox-v2}"
root="${CNFBOX_INSTALL_ROOT:-}"
root="${root%/}"
containerd="${CONTAINERD:-containerd}"
die() { echo "install-node.sh: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root"
case "$conf" in
  cnfbox-v2) dropin=deploy/containerd-cnfbox.toml ;;
  runc-v2) dropin=deploy/containerd-cnfbox-runc-v2.toml ;;
  *) die "unknown configuration $conf (cnfbox-v2 or runc-v2)" ;;
esac
command -v "$containerd" >/dev/null || die "no containerd ($containerd) found: install containerd 2.x first"
version=$("$containerd" --version | awk '{print $3}')
[[ "${version#v}" == 2.* ]] || die "containerd $version at $(command -v "$containerd") is not 2.x (cnfbox's shim needs containerd 2.0+)"
bin="${CNFBOX_BIN_DIR:-}"
if [[ -z "$bin" ]]; then
  cargo build --release --locked -p cnfbox -p cnfbox-shim
  bin=target/release
fi
install -d "$root/usr/local/bin" "$root/etc/containerd/conf.d"
install -m 0755 "$bin/cnfbox" "$bin/containerd-shim-cnfbox-v2" "$root/usr/local/bin/"
# A host ID pool for the pods' ranges (subuid/subgid entries, config.toml).
if [[ -z "$root" && ! -f /etc/cnfbox/config.toml ]]; then
  cnfbox setup
fi
sed "s|'/usr/local/bin/|'$root/usr/local/bin/|" "$dropin" > "$root/etc/containerd/conf.d/cnfbox.toml"
chmod 0644 "$root/etc/containerd/conf.d/cnfbox.toml"
cfg=$root/etc/containerd/config.toml
if [[ ! -f $cfg ]]; then
  "$containerd" config default > "$cfg"
fi
imports="$root/etc/containerd/conf.d/*.toml"
if [[ -n "$root" ]]; then
  # The default's own import names the real /etc: point it into the root.
  sed -i "s|['\"]/etc/containerd/conf.d/\*.toml['\"]|'$imports'|" "$cfg"
fi
if ! grep -qF "$imports" "$cfg"; then
  if grep -q '^imports *=' "$cfg"; then
    sed -i "s|^imports *= *\[|imports = ['$imports', |" "$cfg"
  else
    sed -i "1i imports = ['$imports']" "$cfg"
  fi
fi
echo "cnfbox ($conf) installed for containerd $version under ${root:-/}"
if [[ -z "$root" ]]; then
  systemctl restart containerd
  echo "label the node: kubectl label node $(hostname) cnfbox.io/runtime=true"
  echo "then: kubectl apply -f deploy/runtimeclass.yaml"
fi
