#!/usr/bin/env python3
"""Per-phase syscall counts and wall time of one `cnfbox --debug --log L run`
traced with `strace -f -tt -s 300 -o TRACE` (README, "Container start").
Phases start at log lines (seen as write()s in the trace); the log writes
themselves are not counted. Usage: start-phases.py TRACE"""
import re, sys
from datetime import datetime
PHASES = [
    (None, "exec, CLI, logging"),
    ("resolved ID pools", "config, bundle, ID range allocate (ledger fsync)"),
    ("allocated host ID range", "id-mapped rootfs view (userns helper, open_tree)"),
    ("id-mapped bind mount attached", "caps/sysctl policy, stage spec"),
    ("container with new user namespace should be created", "libcontainer builder: state dir, notify socket"),
    ("cgroup manager V1 will be used", "cgroup v1 setup (main) + fork intermediate"),
    ("unshare or setns: LinuxNamespace { typ: User", "user namespace + id maps"),
    ("unshare or setns: LinuxNamespace { typ: Pid", "pid ns, fork init, uts/ipc/net/mnt ns"),
    ("prepare rootfs", "rootfs: propagation, bind root"),
    ("mounting Mount { destination:", "mounts: proc, dev, devpts, shm, mqueue, sys"),
    ("bind_dev with full container path", "default devices (6 binds)"),
    ("readonly path", "readonly/masked paths, pivot_root"),
    ("reset all caps", "caps, find executable"),
    ("init pid is", "create done: harden views, save state"),
    ("notify container start", "start: exec /bin/true, wait"),
    ("container status: Stopped", "delete: cgroup v1 removal, state dir"),
    ("remove dir", "teardown views, release range (ledger fsync)"),
]
line_re = re.compile(r'^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$')
def ts(s):
    return datetime.strptime(s, "%H:%M:%S.%f")
counts = [0]*len(PHASES); first=[None]*len(PHASES); last=[None]*len(PHASES)
phase = 0; t_prev=None
for raw in open(sys.argv[1]):
    m = line_re.match(raw)
    if not m: continue
    pid, t, rest = m.groups()
    t = ts(t)
    if rest.startswith('<...') or rest.startswith('+++') or rest.startswith('---'):
        continue
    is_log = rest.startswith('write(') and 'time=\\"' in rest or ('write(' in rest and 'level=' in rest)
    if is_log:
        for i,(mark,_) in enumerate(PHASES):
            if mark and i > phase and mark in rest:
                phase = i
                break
        # phase ends at this marker; do not count log write
        if first[phase] is None: first[phase]=t
        last[phase]=t
        continue
    counts[phase]+=1
    if first[phase] is None: first[phase]=t
    last[phase]=t
tot=sum(counts)
# time of a phase: from its first marker to the next phase's first event
starts=[f for f in first]
print("| phase | syscalls | ms |")
print("|---|---:|---:|")
for i,(mark,name) in enumerate(PHASES):
    nxt = next((starts[j] for j in range(i+1,len(PHASES)) if starts[j]), last[i])
    ms = (nxt-starts[i]).total_seconds()*1000 if starts[i] and nxt else 0
    print(f"| {name} | {counts[i]} | {ms:.1f} |")
print(f"| total | {tot} | |")
