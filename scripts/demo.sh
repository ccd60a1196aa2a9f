#!/usr/bin/env bash
# The main job on a fresh Debian machine, as root: install what cnfbox needs,
# build it, run a pod sandbox with it and show what that proves.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "demo.sh: run as root" >&2; exit 1; }
bash scripts/deps.sh
echo "== building cnfbox (release)"
cargo build --release --locked -p cnfbox -p test-bundles
bin=target/release
work=$(mktemp -d /tmp/cnfbox-demo.XXXXXX)
root="$work/state"
id="demo-sandbox-$$"
cnfbox() { "$bin/cnfbox" --root "$root" "$@"; }
cleanup() { cnfbox delete --force "$id" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== cnfbox setup: a host ID pool for pods (subuid/subgid + /etc/cnfbox/config.toml, idempotent)"
"$bin/cnfbox" setup

echo "== building a busybox pod bundle in $work/bundle"
"$bin/cnfbox-test-bundles" bundle --scenario sleep "$work/bundle"

echo "== cnfbox create + start (the pod sandbox)"
cnfbox create --bundle "$work/bundle" "$id" </dev/null >/dev/null 2>&1
cnfbox start "$id"
cnfbox state "$id"

echo "== the pod's host ID range (cnfbox ranges show)"
cnfbox ranges show "$id"

echo "== inside the sandbox (cnfbox exec): root in its own user namespace, id-mapped rootfs"
cnfbox exec "$id" /bin/cnfbox-check | grep -E '^(uid_map|gid_map|id|CapEff|NoNewPrivs|hostname)='
cnfbox exec "$id" /bin/cnfbox-check | grep -E '^mountinfo_root=' | grep -o 'idmapped' | sed 's/^/  rootfs mount: /'
echo "  image file owner inside: $(cnfbox exec "$id" /bin/stat -c %u:%g /bin/busybox); on the host: $(stat -c %u:%g "$work/bundle/rootfs/bin/busybox") (nothing chowned)"
pid=$(cnfbox state "$id" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
echo "  the pod's init on the host runs as uid $(stat -c %u /proc/$pid)"
for ns in user pid net mnt uts ipc; do
  inside=$(readlink "/proc/$pid/ns/$ns"); host=$(readlink "/proc/self/ns/$ns")
  printf '  %-4s host=%s pod=%s %s\n' "$ns" "$host" "$inside" "$([[ $inside != "$host" ]] && echo private || echo SHARED)"
done

echo "== cgroup and stats"
cnfbox ps "$id"
cnfbox events --stats "$id" | head -c 200; echo ...
cnfbox pause "$id"; echo "  after pause: $(cnfbox state "$id" | grep status)"
cnfbox resume "$id"; echo "  after resume: $(cnfbox state "$id" | grep status)"

echo "== delete: nothing left behind"
cnfbox delete --force "$id"
left=$(ls "$root" | grep -v '^\.' || true)
cg=$(ls -d /sys/fs/cgroup/*/cnfbox/"$id" /sys/fs/cgroup/cnfbox/"$id" 2>/dev/null || true)
range=$(cnfbox ranges list | grep -c "$id" || true)
echo "  state dirs left: ${left:-none}; cgroups left: ${cg:-none}; ranges held: $range"
[[ -z $left && -z $cg && $range -eq 0 ]]
echo "demo: OK"
