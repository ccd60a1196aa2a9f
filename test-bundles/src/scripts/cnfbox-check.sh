#!/bin/sh
# cnfbox-check: report what a process inside the container sees, as
# key=value lines on stdout (parsed by test_bundles::CheckReport).
#
# Written into every test rootfs at /bin/cnfbox-check by cnfbox's
# test-bundles crate. Rules for extending it:
#   * one fact per line, `key=value`; the value is one line;
#   * a key may repeat (mountinfo=..., cgroup=...): readers collect all;
#   * a source that cannot be read gives `error=<key>: <why>`, never silence;
#   * the last line is `end=ok`, so a reader can tell a truncated report.
#
# /proc/self files are read through shell redirections, so they describe
# this shell (usually the container's PID 1), not a forked helper.
set -f

kv() { printf '%s=%s\n' "$1" "$2"; }

# first_line KEY FILE: the first line of FILE, whitespace collapsed.
first_line() {
	if [ -r "$2" ] && IFS= read -r _l < "$2"; then
		set -- "$1" $_l
		_k=$1; shift
		kv "$_k" "$*"
	else
		kv error "$1: cannot read $2"
	fi
}

# all_lines KEY FILE: every line of FILE joined with ';', whitespace collapsed.
all_lines() {
	_k=$1 _f=$2
	if [ ! -r "$_f" ]; then kv error "$_k: cannot read $_f"; return; fi
	_out=
	while IFS= read -r _l; do
		set -- $_l
		_out="${_out:+$_out;}$*"
	done < "$_f"
	kv "$_k" "$_out"
}

# each_line KEY FILE: one KEY=line per line of FILE.
each_line() {
	if [ ! -r "$2" ]; then kv error "$1: cannot read $2"; return; fi
	while IFS= read -r _l; do kv "$1" "$_l"; done < "$2"
}

kv pid "$$"

all_lines uid_map /proc/self/uid_map
all_lines gid_map /proc/self/gid_map
first_line setgroups /proc/self/setgroups

# Selected /proc/self/status fields, keyed by their own names.
status_keys=" Uid Gid Groups CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp Seccomp_filters Cpus_allowed_list Mems_allowed_list NSpid "
if [ -r /proc/self/status ]; then
	while IFS= read -r _l; do
		_k=${_l%%:*}
		case "$status_keys" in
		*" $_k "*)
			set -- ${_l#*:}
			kv "$_k" "$*"
			;;
		esac
	done < /proc/self/status
else
	kv error "status: cannot read /proc/self/status"
fi

first_line hostname /proc/sys/kernel/hostname
first_line domainname /proc/sys/kernel/domainname
kv id "$(id 2>&1)"
kv cwd "$PWD"
kv nofile "$(ulimit -n)"
first_line oom_score_adj /proc/self/oom_score_adj

for _ns in cgroup ipc mnt net pid time user uts; do
	if _t=$(readlink "/proc/$$/ns/$_ns" 2>/dev/null); then
		kv "ns_$_ns" "$_t"
	fi
done

each_line cgroup /proc/self/cgroup

# Mount table: every line, and the ones mounted at / on their own key.
if [ -r /proc/self/mountinfo ]; then
	while IFS= read -r _l; do
		kv mountinfo "$_l"
		set -- $_l
		[ "$5" = / ] && kv mountinfo_root "$_l"
	done < /proc/self/mountinfo
else
	kv error "mountinfo: cannot read /proc/self/mountinfo"
fi

kv end ok
