#!/bin/sh
# pgrep PATTERN: prints the pids whose name (/proc/PID/comm) contains
# PATTERN, exits 1 when there is none. Debian's busybox is built without
# pgrep; critest's execSync timeout spec runs `pgrep sleep`. No forks, so
# the script never finds itself under another name.
[ $# -eq 1 ] || { echo "usage: pgrep PATTERN" >&2; exit 2; }
found=1
for d in /proc/[0-9]*; do
	[ "${d#/proc/}" = "$$" ] && continue
	read -r name < "$d/comm" 2>/dev/null || continue
	case "$name" in
	*"$1"*) echo "${d#/proc/}"; found=0 ;;
	esac
done
exit $found
