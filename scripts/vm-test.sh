#!/usr/bin/env bash
# The VM lane: boots Debian's bookworm-backports kernel under QEMU TCG as a
# node this machine is not (cgroup v2 only, two NUMA nodes with one CPU
# each, 8021q/veth/macvlan available, an e1000e NIC behind QEMU's emulated
# Intel IOMMU for vfio-pci) and runs the lane's test executables
# inside, built on the host and seen by the guest through a read-only 9p
# share of the host's `/` with a tmpfs overlay on top. A second, writable
# 9p share brings their output and exit status back. Prints the tests'
# output and exits with their status.
#
#   bash scripts/vm-test.sh            # the lane's tests (see LANE below)
#   CNFBOX_VM_TESTS="numa vm_node" bash scripts/vm-test.sh
#   CNFBOX_VM_FILTER=node1 bash scripts/vm-test.sh   # test-name filter
#   CNFBOX_VM_BENCH=30 bash scripts/vm-test.sh       # also the numa_start benchmark, 30 rounds
#   CNFBOX_VM_SYSTEMD=1 bash scripts/vm-test.sh      # systemd as the guest's PID 1 (--systemd-cgroup tests)
#
# With CNFBOX_VM_SYSTEMD=1 the guest boots the host's /lib/systemd/systemd
# instead of busybox init, straight into a target that only runs the
# tests (a oneshot service; no other unit of the host's is started), and
# the lane defaults to the tests that use `--systemd-cgroup`.
#
# Downloads (qemu from bookworm-backports, the kernel package) go through
# private apt directories in $CNFBOX_CACHE (default /var/cache/cnfbox):
# the machine's apt sources are not changed. The guest's scratch files live
# in a temporary directory that is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
if [[ $EUID -ne 0 ]]; then
  echo "vm-test.sh: run as root (qemu's 9p passthrough of / and the guest's tests need it)" >&2
  exit 1
fi
cache="${CNFBOX_CACHE:-/var/cache/cnfbox}"
# The lane's integration test targets, in run order; `target:a,b` runs only
# the tests of `target` whose names contain `a` or `b`.
systemd_mode="${CNFBOX_VM_SYSTEMD:-}"
if [[ -n "$systemd_mode" ]]; then
  [[ -x /lib/systemd/systemd ]] || { echo "vm-test.sh: CNFBOX_VM_SYSTEMD needs /lib/systemd/systemd on this machine" >&2; exit 1; }
  : "${CNFBOX_VM_TESTS:=devices:device_rules escapes:console}"
fi
read -r -a lane <<< "${CNFBOX_VM_TESTS:-vm_node numa hugepages lifecycle:pause_and_resume,events_stats,cgroups_path net_devices:vlan,macvlan_pods,trunk shim_ctr:ctr_exec_kill_pause_metrics,oom_kill_publishes shim_cri:cri_pods_on_cnfbox_and_runc,kubelets_cpuset_binds devices:vfio,device_rules escapes:console,reused_pid doc_examples:spec_examples_run}"
filter="${CNFBOX_VM_FILTER:-}"
boot_timeout="${CNFBOX_VM_BOOT_TIMEOUT:-180}"  # until the guest's init reports
setup_timeout="${CNFBOX_VM_SETUP_TIMEOUT:-90}"  # from init's report until the tests start
run_timeout="${CNFBOX_VM_RUN_TIMEOUT:-1500}"   # the whole boot, tests included
mods=(9pnet_virtio 9p overlay 8021q veth macvlan dummy bridge sch_ingress cls_bpf vfio vfio_iommu_type1 vfio-pci)
mkdir -p "$cache"

log() { echo "vm-test: $*" >&2; }

# ---- a private apt directory for bookworm (+ backports) -------------------
apt_dir="$cache/bpo-apt"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list" -o "Dir::Etc::sourceparts=/nonexistent"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
private_apt() {
  if [[ ! -f "$apt_dir/etc/sources.list" || -n "$(find "$apt_dir/lists" -maxdepth 0 -mmin +1440 2>/dev/null)" \
        || -z "$(ls "$apt_dir/lists" 2>/dev/null | grep -v partial)" ]]; then
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc"
    local k="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    {
      echo "deb $k http://deb.debian.org/debian bookworm main"
      echo "deb $k http://deb.debian.org/debian bookworm-updates main"
      echo "deb $k http://deb.debian.org/debian-security bookworm-security main"
      echo "deb $k http://deb.debian.org/debian bookworm-backports main"
    } > "$apt_dir/etc/sources.list"
    log "apt-get update (bookworm + backports, private lists in $apt_dir)"
    apt-get "${apt_opts[@]}" update -qq >&2
    touch "$apt_dir/lists"
  fi
}
machine_has_backports() {
  grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

# ---- qemu, busybox-static --------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
  log "installing qemu-system-x86 from bookworm-backports"
  export DEBIAN_FRONTEND=noninteractive
  if machine_has_backports; then
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >&2
  else
    private_apt
    apt-get "${apt_opts[@]}" install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >&2
    apt-get "${apt_opts[@]}" clean >&2
  fi
fi
need=()
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v jq >/dev/null || need+=(jq)
command -v xz >/dev/null || need+=(xz-utils)
command -v setfattr >/dev/null || need+=(attr)
if (( ${#need[@]} )); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi

# ---- the guest kernel (unpacked, never installed) -------------------------
kernel_dir() {
  local d
  d=$(ls -d "$cache"/vm-kernel-6.12.*/ 2>/dev/null | sort -V | tail -n1)
  [[ -n "$d" && -f "$d/vmlinuz" && -f "$d/modules.order" ]] || return 1
  local m
  for m in "${mods[@]}"; do
    grep -qx "$m" "$d/modules.order" || { rm -rf "$d"; return 1; }  # a module was added: unpack again
  done
  echo "${d%/}"
}
kdir=$(kernel_dir || true)
if [[ -z "$kdir" ]]; then
  private_apt
  pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-6.12-amd64 | awk '/Depends: linux-image-6\.12\..*-amd64/ {print $2; exit}')
  [[ -n "$pkg" ]] || { log "no linux-image-6.12.*-amd64 in bookworm-backports"; exit 1; }
  ver=${pkg#linux-image-}
  log "fetching $pkg"
  tmp=$(mktemp -d "$cache/kernel.XXXXXX")
  (cd "$tmp" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
  dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
  out="$cache/vm-kernel-$ver"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp/modules"
  cp "$tmp/x/boot/vmlinuz-$ver" "$out.tmp/vmlinuz"
  # The modules the guest needs, decompressed, dependencies first.
  declare -A seen=()
  order=()
  add_mod() {
    local name=$1 f deps d
    [[ -n "${seen[$name]:-}" ]] && return 0
    seen[$name]=1
    f=$(find "$tmp/x/lib/modules/$ver" -name "$name.ko.xz" -o -name "$name.ko" | head -n1)
    [[ -n "$f" ]] || { log "module $name missing from $pkg"; exit 1; }
    case "$f" in *.xz) xz -dc "$f" > "$out.tmp/modules/$name.ko" ;; *) cp "$f" "$out.tmp/modules/$name.ko" ;; esac
    deps=$(tr '\0' '\n' < "$out.tmp/modules/$name.ko" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do add_mod "$d"; done
    order+=("$name")
  }
  for m in "${mods[@]}"; do add_mod "$m"; done
  printf '%s\n' "${order[@]}" > "$out.tmp/modules.order"
  rm -rf "$tmp" "$out"
  mv "$out.tmp" "$out"
  kdir=$out
fi
log "kernel $(basename "$kdir")"

# ---- containerd 2.x for the shim tests (the guest sees the host's cache) ---
: "${CNFBOX_CONTAINERD_BIN:=$(bash scripts/go-tools.sh containerd v2.4.2)}"

# ---- the test binaries, built on the host ----------------------------------
log "building (cargo build + cargo test --no-run)"
cargo build --workspace --locked >&2
test_args=()
for t in "${lane[@]}"; do test_args+=(--test "${t%%:*}"); done
declare -A exe_of=()
while IFS=$'\t' read -r name exe; do
  exe_of[$name]=$exe
done < <(cargo test -p integration --locked --no-run --message-format=json "${test_args[@]}" \
          | jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
                   | [.target.name, .executable] | @tsv')
exes=()
for t in "${lane[@]}"; do
  name=${t%%:*} only=
  [[ "$t" == *:* ]] && only=${t#*:}
  [[ -n "${exe_of[$name]:-}" ]] || { log "no test executable for $name"; exit 1; }
  exes+=("$name=${exe_of[$name]}=${only//,/ }")
done

# The benchmark (CNFBOX_VM_BENCH=ROUNDS): NUMA + hugepages start latency
# against a plain pod-profile start, in the guest. Dev profile: the lane's
# binaries are debug builds; the ratio is what it reports.
bench=()
if [[ -n "${CNFBOX_VM_BENCH:-}" ]]; then
  bench_exe=$(cargo bench -p integration --locked --profile dev --no-run --bench numa_start --message-format=json \
    | jq -r 'select(.reason == "compiler-artifact" and .target.name == "numa_start" and .executable != null) | .executable')
  bench=("$bench_exe" "$CNFBOX_VM_BENCH")
fi

# ---- the initramfs ---------------------------------------------------------
work=$(mktemp -d /var/tmp/cnfbox-vm.XXXXXX)
qemu_pid=
cleanup() {
  if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then kill -9 "$qemu_pid" 2>/dev/null || true; fi
  if [[ -n "${CNFBOX_VM_KEEP:-}" ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/initramfs"/{bin,dev,proc,sys,lower,upper,newroot,lib} "$work/results"
cp /bin/busybox "$work/initramfs/bin/busybox"
# setfattr (busybox has none) with the libraries it loads: the init marks
# the guest's mount points opaque in the overlay's upper layer.
cp "$(command -v setfattr)" "$work/initramfs/bin/setfattr"
while read -r lib; do
  mkdir -p "$work/initramfs$(dirname "$lib")"
  cp -L "$lib" "$work/initramfs$lib"
done < <(ldd "$(command -v setfattr)" | grep -oE '/[^ ]+')
# The checkout, if it lives under a directory the guest mounts over.
case "$repo" in /tmp/*|/run/*) printf '%s\n' "$repo" > "$work/initramfs/repo-path" ;; esac
cp "$kdir"/modules/*.ko "$work/initramfs/lib/"
cp "$kdir/modules.order" "$work/initramfs/modules.order"
cat > "$work/initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/lib/$m.ko" || echo "vm-init: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || exec sh
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/u /upper/w
# Every directory the guest mounts over is an opaque directory of the
# tmpfs upper, never one looked up through the 9p lower: there it would be
# the host's own mount point, which the 9p client may find changed and
# invalidate, detaching whatever the guest mounted on it (kernel 6.12.118:
# /proc vanished after the next mount).
for d in proc sys dev run tmp; do
  mkdir -m 0755 "/upper/u/$d" && setfattr -n trusted.overlay.opaque -v y "/upper/u/$d" || exec sh
done
chmod 1777 /upper/u/tmp
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || exec sh
mkdir -p /newroot/vmresults
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none results /newroot/vmresults || exec sh
# A checkout under /tmp or /run (hidden by the opaque directories): an
# overlay of its own at /vmrepo, which the guest moves to its path.
if [ -f /repo-path ]; then
  repo=$(cat /repo-path)
  mkdir -p /upper/r/u /upper/r/w /newroot/vmrepo
  mount -t overlay -o "lowerdir=/lower$repo,upperdir=/upper/r/u,workdir=/upper/r/w" overlay /newroot/vmrepo || exec sh
fi
echo booted > /newroot/vmresults/booted
if [ -f /systemd-mode ]; then
  # systemd as pid 1, booting only into the tests (units on the tmpfs upper).
  # A /.dockerenv of the host's would make it take the VM for a container
  # (where it ignores systemd.unit= on the kernel command line): hidden.
  rm -f /newroot/.dockerenv /newroot/run/.containerenv
  mkdir -p /newroot/etc/systemd/system
  cp /cnfbox-vm.target /cnfbox-vm.service /newroot/etc/systemd/system/
  umount /proc /sys
  mount --move /dev /newroot/dev
  exec switch_root /newroot /lib/systemd/systemd
fi
# busybox init as pid 1 reaps the orphans cnfbox leaves to it.
mkdir -p /newroot/etc
echo "::sysinit:/bin/bash /vmresults/guest.sh" > /newroot/etc/inittab
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/busybox init
EOF
if [[ -n "$systemd_mode" ]]; then
  touch "$work/initramfs/systemd-mode"
  cat > "$work/initramfs/cnfbox-vm.target" <<'EOF'
[Unit]
Description=cnfbox VM lane tests
Requires=cnfbox-vm.service
After=cnfbox-vm.service
AllowIsolate=yes
EOF
  cat > "$work/initramfs/cnfbox-vm.service" <<'EOF'
[Unit]
Description=cnfbox VM lane tests (scripts/vm-guest.sh)
DefaultDependencies=no
[Service]
Type=oneshot
Environment=CNFBOX_VM_SYSTEMD=1
ExecStart=/bin/bash /vmresults/guest.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
TimeoutStartSec=infinity
# The tests' mounts (views, pins, device tmpfs) stay out of pid 1's mount
# namespace: under TCG systemd's tracking of every mount change kept it
# from answering D-Bus calls within libcgroups' 10 s receive timeout.
PrivateMounts=yes
EOF
fi
chmod 0755 "$work/initramfs/init"
(cd "$work/initramfs" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd.gz"

# ---- the guest's plan ------------------------------------------------------
cp scripts/vm-guest.sh "$work/results/guest.sh"
{
  printf 'repo=%q\n' "$repo"
  printf 'filter=%q\n' "$filter"
  printf 'export CNFBOX_CONTAINERD_BIN=%q\n' "$CNFBOX_CONTAINERD_BIN"
  printf 'exes=(%s)\n' "$(printf '%q ' "${exes[@]}")"
  printf 'bench=(%s)\n' "$( ((${#bench[@]})) && printf '%q ' "${bench[@]}")"
} > "$work/results/plan.sh"

# ---- boot, with a watchdog and one retry ------------------------------------
boot() {
  rm -f "$work/results/booted" "$work/results/started" "$work/results/status" "$work/results/output" "$work/results/progress"
  # q35 for the emulated IOMMU (created before the PCI devices): the
  # e1000e, which no guest driver claims, gets an IOMMU group of its own
  # for vfio-pci (Debian's kernel has no VFIO_NOIOMMU).
  qemu-system-x86_64 \
    -machine q35 -accel tcg -cpu max -smp 3 -m 3G \
    -device intel-iommu,intremap=on \
    -object memory-backend-ram,id=m0,size=1536M -object memory-backend-ram,id=m1,size=1536M \
    -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2,memdev=m1 \
    -kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 loglevel=4 panic=-1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all intel_iommu=on iommu=pt${systemd_mode:+ systemd.unit=cnfbox-vm.target systemd.show_status=0}" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -virtfs "local,path=$work/results,mount_tag=results,security_model=passthrough,multidevs=remap" \
    -device e1000e,id=vfionic -nic none -display none -monitor none -serial "file:$work/console" -no-reboot &
  qemu_pid=$!
  local t=0 setup_t=0 seen=
  while kill -0 "$qemu_pid" 2>/dev/null; do
    # Progress: the guest's milestones and each test target as it starts.
    local now=
    [[ -f "$work/results/booted" ]] && now="booted"
    [[ -f "$work/results/started" ]] && now="tests started"
    [[ -s "$work/results/progress" ]] && now="running $(cat "$work/results/progress" 2>/dev/null)"
    if [[ -n "$now" && "$now" != "$seen" ]]; then
      log "guest ${now} (${t}s)"
      seen=$now
    fi
    if [[ ! -f "$work/results/booted" ]] && (( t >= boot_timeout )); then
      log "no sign of the guest's init after ${boot_timeout}s: killing the boot"
      kill -9 "$qemu_pid" 2>/dev/null || true
      break
    fi
    if [[ -f "$work/results/booted" && ! -f "$work/results/started" ]]; then
      setup_t=$((setup_t + 1))
      if (( setup_t >= setup_timeout )); then
        log "the guest booted but did not start its tests within ${setup_timeout}s: killing it"
        kill -9 "$qemu_pid" 2>/dev/null || true
        break
      fi
    fi
    if (( t >= run_timeout )); then
      log "the guest ran for ${run_timeout}s: killing it (a test hangs?)"
      kill -9 "$qemu_pid" 2>/dev/null || true
      break
    fi
    sleep 1
    t=$((t + 1))
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  [[ -f "$work/results/status" ]]
}
start=$(date +%s)
ok=
for attempt in 1 2; do
  log "boot $attempt (TCG, 2 NUMA nodes, cgroup v2 only)"
  if boot; then ok=1; break; fi
  log "boot $attempt produced no test status; console tail:"
  tail -n 30 "$work/console" >&2 || true
  [[ -f "$work/results/booted" ]] && break  # the tests started: a hang there is not retried
done
cat "$work/results/output" 2>/dev/null || true
log "wall time $(( $(date +%s) - start ))s"
if [[ -z "$ok" ]]; then
  log "the guest never reported a test status"
  exit 1
fi
status=$(cat "$work/results/status")
log "guest test status: $status"
exit "$status"
