#!/bin/bash
# Runs inside the VM lane's guest (scripts/vm-test.sh boots it), started by
# busybox init as its sysinit step, on the overlay of the host's `/`.
# Sets the node up (cgroup v2 only, hugepages on both NUMA nodes, tmpfs
# for everything the tests make), runs the lane's test executables from
# /vmresults/plan.sh and leaves their output and exit status in
# /vmresults, then powers the guest off.
set -u
res=/vmresults
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
# Powers the guest off with reboot(2) (busybox's -f): no /proc needed,
# so a guest that cannot set itself up ends at once instead of waiting
# out the host's watchdog.
power_off() {
  sync
  /bin/busybox poweroff -f
  sleep 60
}
fail() {
  echo "vm-guest: $*"
  echo "vm-guest: $*" > /dev/console 2>/dev/null
  echo 1 > "$res/status"
  power_off
  exit 1
}
# CNFBOX_VM_SYSTEMD: systemd is pid 1 (a service of it runs this) and has
# mounted /proc, /sys, the cgroup2 hierarchy and /run (whose
# /run/systemd it needs) already.
sd=${CNFBOX_VM_SYSTEMD:-}
if [[ -z "$sd" ]]; then
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
fi
[[ -r /proc/self/fd ]] || fail "no /proc after mounting it"
ln -sfn /proc/self/fd /dev/fd
exec > >(tee -a "$res/output") 2>&1
[[ -d /proc/sys/kernel ]] || fail "/proc vanished after mounting /sys"
if [[ -z "$sd" ]]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
elif [[ ! -d /run/systemd/system ]] || [[ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]]; then
  fail "CNFBOX_VM_SYSTEMD: no /run/systemd/system or no cgroup2 at /sys/fs/cgroup"
fi
# systemd's PrivateMounts= namespace is shared (MountFlags= defaults to
# shared), and a mount under a shared parent cannot be moved (the repo
# bind below): nothing here needs to propagate anywhere.
[[ -n "$sd" ]] && { mount --make-rprivate / || fail "make / private"; }
mkdir -p /dev/pts /dev/shm /dev/hugepages
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t hugetlbfs hugetlbfs /dev/hugepages
# The checkout (and its target/) may live under /tmp or /run (a CI
# clone): keep it reachable across the tmpfs mounts below.
# shellcheck source=/dev/null
. "$res/plan.sh"
# A checkout under /tmp or /run arrives as its own overlay at /vmrepo
# (the initramfs mounted it): moved to its path once /tmp and /run are up.
case "$repo" in
  /tmp/*|/run/*) mountpoint -q /vmrepo || fail "no /vmrepo for the checkout $repo" ;;
esac
[[ -n "$sd" ]] || mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
if mountpoint -q /vmrepo 2>/dev/null; then
  mkdir -p "$repo" && mount --move /vmrepo "$repo" || fail "move $repo back"
fi
mkdir -p /vmtmp && mount -t tmpfs -o mode=1777 vmtmp /vmtmp
ip link set lo up
hostname cnfbox-vm
for c in cpuset cpu io memory hugetlb pids; do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || fail "enable the $c controller"
done
for n in /sys/devices/system/node/node[0-9]*; do
  echo 16 > "$n/hugepages/hugepages-2048kB/nr_hugepages" || fail "reserve hugepages on $n"
done
[[ -n "$sd" ]] && echo "vm-guest: pid 1 is $(cat /proc/1/comm) ($(systemctl --version | head -n1))"
echo "vm-guest: kernel $(uname -r), nodes $(ls -d /sys/devices/system/node/node[0-9]* | wc -l)," \
  "cgroup $(stat -fc %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
for n in /sys/devices/system/node/node[0-9]*; do
  echo "vm-guest: $(basename "$n") cpus $(cat "$n/cpulist")" \
    "free 2M pages $(cat "$n/hugepages/hugepages-2048kB/free_hugepages")"
done
# The VFIO test's device: QEMU's e1000e (8086:10d3, no driver in the
# guest) in its own IOMMU group, bound to vfio-pci.
vfio_dev=
for d in /sys/bus/pci/devices/*; do
  [[ "$(cat "$d/vendor"):$(cat "$d/device")" == 0x8086:0x10d3 ]] && vfio_dev=$(basename "$d")
done
if [[ -n "$vfio_dev" && -e "/sys/bus/pci/devices/$vfio_dev/iommu_group" ]]; then
  echo vfio-pci > "/sys/bus/pci/devices/$vfio_dev/driver_override" || fail "driver_override of $vfio_dev"
  echo "$vfio_dev" > /sys/bus/pci/drivers/vfio-pci/bind || fail "bind $vfio_dev to vfio-pci"
  group=$(basename "$(readlink "/sys/bus/pci/devices/$vfio_dev/iommu_group")")
  [[ -c "/dev/vfio/$group" && -c /dev/vfio/vfio ]] || fail "no /dev/vfio/$group or /dev/vfio/vfio after binding $vfio_dev"
  export CNFBOX_VM_VFIO=$vfio_dev
  echo "vm-guest: $vfio_dev (e1000e) bound to vfio-pci, IOMMU group $group" \
    "($(ls "/sys/kernel/iommu_groups/$group/devices" | tr '\n' ' '))"
else
  echo "vm-guest: no e1000e behind an IOMMU (found '${vfio_dev}'): the VFIO test will skip"
fi

export CNFBOX_VM_LANE=1 TMPDIR=/vmtmp RUST_BACKTRACE=1
cd "$repo" || fail "cd $repo"
echo started > "$res/started"
status=0
for e in "${exes[@]}"; do
  IFS='=' read -r name exe only <<< "$e"
  echo "vm-guest: == $name ($exe) ${only:+only: $only}"
  echo "$name" > "$res/progress"  # the host shows where the guest is
  # shellcheck disable=SC2086
  "$exe" --test-threads=1 --nocapture ${only:-$filter} 2>&1 | tee "/tmp/$name.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
done
if (( ${#bench[@]} )); then
  echo "vm-guest: == benchmark numa_start (${bench[1]} rounds; does not change the status)"
  "${bench[0]}" "${bench[1]}" 2>&1 || echo "vm-guest: the benchmark failed"
fi
echo "vm-guest: == summary"
for e in "${exes[@]}"; do
  name=${e%%=*}
  echo "vm-guest: $name: $(grep -E '^test result:' "/tmp/$name.log" || echo 'no result (crashed?)')"
  grep -E '^SKIP' "/tmp/$name.log" | sed "s/^/vm-guest: $name: /"
done
if [[ -n "$sd" ]]; then
  # What systemd said (no journald runs: it logs to the kernel's buffer).
  dmesg | grep -E 'systemd\[1\]' > "$res/systemd.log" || true
  echo "vm-guest: systemd's messages: $(wc -l < "$res/systemd.log") lines in systemd.log of the results"
fi
echo "$status" > "$res/status"
exec >/dev/console 2>&1
sleep 1
power_off
