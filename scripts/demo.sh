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

echo "== building a busybox pod bundle in $work/bundle"
"$bin/cnfbox-test-bundles" bundle --scenario sleep "$work/bundle"

echo "== cnfbox create + start (the pod sandbox)"
cnfbox create --bundle "$work/bundle" "$id" </dev/null >/dev/null 2>&1
cnfbox start "$id"
cnfbox state "$id"

echo "== inside the sandbox (cnfbox exec): its own namespaces, dropped capabilities"
cnfbox exec "$id" /bin/cnfbox-check | grep -E '^(uid_map|CapEff|CapBnd|NoNewPrivs|hostname)='
pid=$(cnfbox state "$id" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
for ns in pid net mnt uts ipc; do
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
echo "  state dirs left: ${left:-none}; cgroups left: ${cg:-none}"
[[ -z $left && -z $cg ]]
echo "demo: OK"
