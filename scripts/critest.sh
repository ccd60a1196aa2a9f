#!/usr/bin/env bash
# Runs critest (cri-tools, pinned) against a private containerd (pinned)
# with cnfbox's CRI handler, offline:
#
#   cargo build -p cnfbox -p cnfbox-shim -p test-bundles
#   bash scripts/critest.sh                     # configuration A, mode "always"
#   bash scripts/critest.sh --config b          # runc's runtime type + runtime_path
#   bash scripts/critest.sh --idmap kubelet     # [idmap] mode = "kubelet"
#   bash scripts/critest.sh --handler runc      # the same suite on runc, for comparison
#   bash scripts/critest.sh --focus 'NoNewPrivs' # a subset (a ginkgo regex)
#
# What it sets up, all under one temporary directory, and removes again:
# - a private registry (Debian's docker-registry) on loopback, holding the
#   stand-ins of every image critest pulls (test-bundles' critest module:
#   busybox-static plus the project's static helpers);
# - containerd's certs.d mirroring registry.k8s.io, k8s.gcr.io, gcr.io and
#   docker.io to it;
# - a CNI bridge (Debian's containernetworking-plugins: bridge with a
#   gateway, so the host reaches pod IPs, and portmap for hostPort);
# - containerd with CRI, NRI and the handlers `cnfbox` and `runc`, in its
#   own mount namespace (a tmpfs on /run; host mounts propagate in, its own
#   do not propagate out), own root, state and sockets;
# - a cnfbox config with the default settings, a host ID slice of its own
#   (the integration tests' slot scheme) and its own ledger.
# Specs in integration/critest-skips.txt are skipped by exact name.
# Results (critest's output, its junit report, containerd's log) are kept
# in $CARGO_TARGET_DIR/critest/<handler>-<config>-<idmap>/.
# The exit status is critest's.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
CRI_TOOLS_VERSION=v1.37.0
RUNC_VERSION=v1.5.3

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
log() { echo "critest.sh: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,12p' "$0" >&2; exit 2; }

config=a idmap=always handler=cnfbox focus= extra=()
while (( $# )); do
  case "$1" in
    --config) config=${2,,}; shift 2 ;;
    --idmap) idmap=$2; shift 2 ;;
    --handler) handler=$2; shift 2 ;;
    --focus) focus=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) usage ;;
  esac
done
[[ "$config" == a || "$config" == b ]] || usage
[[ "$idmap" == always || "$idmap" == kubelet ]] || usage
[[ "$handler" == cnfbox || "$handler" == runc ]] || usage
(( EUID == 0 )) || die "needs root (containerd, CNI, user namespaces)"

cnfbox_bin=$target/debug/cnfbox
shim_bin=$target/debug/containerd-shim-cnfbox-v2
bundles_bin=$target/debug/cnfbox-test-bundles
for b in "$cnfbox_bin" "$shim_bin" "$bundles_bin"; do
  [[ -x "$b" ]] || die "$b missing: cargo build -p cnfbox -p cnfbox-shim -p test-bundles"
done

# Debian packages: the registry, the CNI plugins, busybox-static, iptables
# (portmap), and the dynamic busybox's .deb (downloaded, not installed).
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
[[ -x /bin/busybox ]] || need+=(busybox-static)
command -v iptables >/dev/null || need+=(iptables)
if (( ${#need[@]} )); then
  log "installing ${need[*]} (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
fi

containerd_dir=$(bash "$repo/scripts/go-tools.sh" containerd "$CONTAINERD_VERSION")
critest=$(bash "$repo/scripts/go-tools.sh" critest "$CRI_TOOLS_VERSION")/critest
crictl=$(bash "$repo/scripts/go-tools.sh" crictl "$CRI_TOOLS_VERSION")/crictl
runc_dir=$(bash "$repo/scripts/go-tools.sh" runc "$RUNC_VERSION")
cache="${CNFBOX_CACHE:-/var/cache/cnfbox}"

out="$target/critest/$handler-$config-$idmap"
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d /tmp/cnfbox-critest.XXXXXX)
chmod 0755 "$work"
registry_pid= containerd_pid= slot_fd= tmp_mounted= bridge= forwarding= chains_before=

# --- teardown: one way out, in reverse order of setup ---------------------
ns_pids() {
  # Processes in containerd's mount namespace (its shims, their children).
  local ns=$1 p
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/ns/mnt" 2>/dev/null)" == "$ns" ]] && echo "${p#/proc/}"
  done
}
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null; then
    local ns
    ns=$(readlink "/proc/$containerd_pid/ns/mnt")
    # Pods first, through CRI, so CNI and the runtime undo what they did.
    "$crictl" -r "unix://$work/containerd.sock" rmp -af >/dev/null 2>&1 || log "removing pods failed"
    kill -TERM "$containerd_pid"
    for _ in $(seq 100); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$containerd_pid" 2>/dev/null
    wait "$containerd_pid" 2>/dev/null
    local left
    left=$(ns_pids "$ns")
    if [[ -n "$left" ]]; then
      log "killing leftover processes of containerd's namespace: $(echo $left)"
      kill -KILL $left 2>/dev/null
      sleep 0.5
    fi
  fi
  [[ -n "$registry_pid" ]] && { kill -TERM "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null; }
  if [[ -n "$bridge" ]] && ip link show "$bridge" >/dev/null 2>&1; then
    ip link del "$bridge"
  fi
  [[ -n "$forwarding" ]] && echo "$forwarding" > /proc/sys/net/ipv4/ip_forward
  # portmap's chains (CNI-HOSTPORT-*, CNI-DN-*) this run created: the
  # jumps to them first, then their rules, then the chains.
  if [[ -n "$chains_before" ]]; then
    local t chain rule new
    for t in nat filter; do
      new=$(iptables -t "$t" -S | awk '$1 == "-N" && $2 ~ /^CNI-/ {print $2}' |
            while read -r chain; do grep -qx "$t $chain" <<<"$chains_before" || echo "$chain"; done)
      [[ -n "$new" ]] || continue
      for chain in $new; do
        iptables -t "$t" -S | grep -E -- "-j $chain( |\$)" | while read -r rule; do
          eval "iptables -t $t ${rule/-A/-D}"
        done
      done
      for chain in $new; do iptables -t "$t" -F "$chain"; done
      for chain in $new; do iptables -t "$t" -X "$chain"; done
    done
  fi
  [[ -n "$slot_fd" ]] && exec {slot_fd}>&-
  [[ -n "$tmp_mounted" ]] && umount -R "$work/tmp"
  if grep -q " $work" /proc/self/mountinfo; then
    log "mounts survive under $work; leaving it"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- registry -------------------------------------------------------------
port=
for p in $(shuf -i 30000-39999 -n 20); do
  ss -Hltn "sport = :$p" | grep -q . || { port=$p; break; }
done
[[ -n "$port" ]] || die "no free loopback port for the registry"
registry="127.0.0.1:$port"
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $registry
EOF
docker-registry serve "$work/registry.yml" > "$out/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break
  kill -0 "$registry_pid" 2>/dev/null || die "docker-registry exited: $(tail -5 "$out/registry.log")"
  sleep 0.1
done

# --- images ---------------------------------------------------------------
# The default image's shell: Debian's dynamic busybox, whose sh looks
# commands up in PATH (busybox-static's runs applets such as ls itself),
# with the libraries it links.
deb_dir="$cache/busybox-deb"
if ! ls "$deb_dir"/busybox_*.deb >/dev/null 2>&1; then
  mkdir -p "$deb_dir"
  (cd "$deb_dir" && apt-get download busybox >&2) || die "apt-get download busybox failed"
fi
dpkg -x "$(ls "$deb_dir"/busybox_*.deb | head -1)" "$work/busybox-deb"
shell_tree="$work/shell-tree"
mkdir -p "$shell_tree/bin"
cp "$work/busybox-deb/bin/busybox" "$shell_tree/bin/sh"
for lib in $(ldd "$shell_tree/bin/sh" | grep -o '/[^ ]*'); do
  mkdir -p "$shell_tree$(dirname "$lib")"
  cp -L "$lib" "$shell_tree$lib"
done
mkdir -p "$work/helpers"
log "building and pushing the critest images to $registry"
"$bundles_bin" critest-images --registry "$registry" --shell-tree "$shell_tree" \
  --work "$work/helpers" > "$out/images.txt" 2> "$out/images.log" ||
  die "critest-images failed: $(tail -5 "$out/images.log")"
sandbox_image=$(awk '$1 ~ /pause:3\.10/ {print $1}' "$out/images.txt")

for host in registry.k8s.io k8s.gcr.io gcr.io docker.io; do
  mkdir -p "$work/certs.d/$host"
  cat > "$work/certs.d/$host/hosts.toml" <<EOF
server = "https://$host"

[host."http://$registry"]
  capabilities = ["pull", "resolve"]
EOF
done

# --- cnfbox config: default settings, a host ID slice of its own -----------
# The integration tests' slots (tests/common): 500 slices of 64 * 65536
# host IDs above 2^31, each held by an flock while in use.
mkdir -p /run/cnfbox-it-slots
slot=
for i in $(seq 0 499); do
  s=$(( ($$ * 131 + i) % 500 ))
  exec {fd}>"/run/cnfbox-it-slots/$s.lock"
  if flock -n "$fd"; then slot=$s slot_fd=$fd; break; fi
  exec {fd}>&-
done
[[ -n "$slot" ]] || die "no free host ID slot in /run/cnfbox-it-slots"
pool_size=$(( 64 * 65536 ))
{
  echo "[idmap]"
  echo "pool = \"$(( (1 << 31) + slot * pool_size )):$pool_size\""
  echo "ledger_dir = \"$work/ledger\""
  [[ "$idmap" == kubelet ]] && echo 'mode = "kubelet"'
} > "$work/cnfbox.toml"

# --- CNI ------------------------------------------------------------------
bridge="cnfcrit$(( $$ % 100000 ))"
subnet="10.$(( 200 + $$ % 50 )).$(( ($$ / 50) % 256 )).0/24"
forwarding=$(cat /proc/sys/net/ipv4/ip_forward)
# The first line marks the snapshot as taken (there may be no chain at all).
chains_before=$(echo taken; for t in nat filter; do iptables -t "$t" -S | awk -v t="$t" '$1 == "-N" {print t, $2}'; done)
mkdir -p "$work/cni"
cat > "$work/cni/10-critest.conflist" <<EOF
{"cniVersion":"0.4.0","name":"cnfbox-critest-$$","plugins":[
 {"type":"bridge","bridge":"$bridge","isGateway":true,"ipMasq":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$subnet"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$work/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
EOF

# --- containerd -----------------------------------------------------------
mkdir -p "$work/bin"
ln -s "$shim_bin" "$work/bin/containerd-shim-cnfbox-v2"
ln -s "$cnfbox_bin" "$work/bin/cnfbox"
if [[ "$config" == a ]]; then
  handler_toml="
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cnfbox]
      runtime_type = \"io.containerd.cnfbox.v2\"
      pod_annotations = [\"cnfbox.io/*\"]
      container_annotations = [\"cnfbox.io/*\"]"
else
  handler_toml="
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cnfbox]
      runtime_type = \"io.containerd.runc.v2\"
      runtime_path = \"$work/bin/containerd-shim-cnfbox-v2\"
      pod_annotations = [\"cnfbox.io/*\"]
      container_annotations = [\"cnfbox.io/*\"]
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cnfbox.options]
        BinaryName = \"$work/bin/cnfbox\""
fi
cat > "$work/containerd.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"

[grpc]
  address = "$work/containerd.sock"

[ttrpc]
  address = "$work/containerd.sock.ttrpc"

[debug]
  address = "$work/debug.sock"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"

[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "$work/nri.sock"
  # critest's "container created during the Synchronize call" spec blocks
  # a plugin's Synchronize for 2 s, containerd's default request timeout:
  # which fires first is a race (a loaded node lost it once in CI).
  plugin_registration_timeout = "10s"
  plugin_request_timeout = "10s"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$work/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
$handler_toml
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
EOF
# critest's temporary directories (pod logs, host paths it mounts tmpfs
# on) live in $work/tmp, a shared mount: the host's root here is private,
# and a mount critest makes after containerd started must reach
# containerd's namespace (the readonly-mount specs) as it would on a node.
mkdir -p "$work/tmp"
mount --bind "$work/tmp" "$work/tmp"
tmp_mounted=1
mount --make-rshared "$work/tmp"
# containerd 2.x still keeps shim sockets and runc state under the fixed
# /run/containerd: a tmpfs on /run in its own mount namespace keeps them
# apart from the host's. Every mount the host shares becomes a slave in it
# (the host's mounts reach containerd, its own never reach the host), but
# $work/tmp stays in the host's peer group: a Bidirectional mount a
# container makes under a host path there reaches the host, as on a node.
cat > "$work/containerd-ns.sh" <<NS
awk -v keep="$work/tmp" '\$0 ~ / shared:/ && \$5 != keep && index(\$5, keep "/") != 1 {print \$5}' /proc/self/mountinfo |
  while read -r mp; do mount --make-slave "\$mp" || exit 1; done
mount -t tmpfs -o mode=0755 cnfbox-critest-run /run
mkdir -m 0711 /run/containerd
exec containerd --config '$work/containerd.toml'
NS
PATH="$work/bin:$containerd_dir:$runc_dir:$PATH" CNFBOX_CONFIG="$work/cnfbox.toml" \
  unshare --mount --propagation unchanged -- /bin/sh -e "$work/containerd-ns.sh" \
  > "$out/containerd.log" 2>&1 &
containerd_pid=$!
crictl_cmd=("$crictl" -r "unix://$work/containerd.sock" -i "unix://$work/containerd.sock")
for _ in $(seq 300); do
  "${crictl_cmd[@]}" version >/dev/null 2>&1 && break
  kill -0 "$containerd_pid" 2>/dev/null || die "containerd exited: $(tail -5 "$out/containerd.log")"
  sleep 0.1
done
"${crictl_cmd[@]}" version >&2 || die "containerd did not come up: $(tail -5 "$out/containerd.log")"
"${crictl_cmd[@]}" pull "$sandbox_image" >&2 || die "pulling $sandbox_image through the mirror failed"

# --- critest ----------------------------------------------------------------
skip=$(sed -n 's/^design: //p' "$repo/integration/critest-skips.txt"
       [[ "$idmap" == always ]] && sed -n 's/^always: //p' "$repo/integration/critest-skips.txt"
       sed -n 's/^env: //p' "$repo/integration/critest-skips.txt")
[[ "$handler" == runc ]] && skip=$(sed -n 's/^env: //p' "$repo/integration/critest-skips.txt")
skip_re=$(sed -e 's/[][\.*^$(){}?+|/]/\\&/g' -e 's/.*/(^| )&$/' <<<"$skip" | paste -sd'|')
args=(
  -runtime-endpoint "unix://$work/containerd.sock"
  -image-endpoint "unix://$work/containerd.sock"
  -runtime-handler "$handler"
  -nri-socket "$work/nri.sock"
  -report-dir "$out"
  -ginkgo.no-color
  -ginkgo.v
  -ginkgo.skip "$skip_re"
  -ginkgo.json-report "$out/report.json"
)
[[ -n "$focus" ]] && args+=(-ginkgo.focus "$focus")
log "critest $CRI_TOOLS_VERSION on containerd $CONTAINERD_VERSION, handler $handler (configuration ${config^^}, idmap $idmap), $(wc -l <<<"$skip") specs skipped by name; output in $out"
start=$(date +%s)
rc=0
(cd "$work" && TMPDIR="$work/tmp" "$critest" "${args[@]}" "${extra[@]}") > "$out/critest.log" 2>&1 || rc=$?
log "critest exited $rc after $(( $(date +%s) - start ))s"
grep -E '^(Ran |FAIL!|SUCCESS!|PASS|FAIL)' "$out/critest.log" >&2 || true
grep -E '^\s*\[FAIL\]' "$out/critest.log" | sort -u >&2 || true
exit "$rc"
