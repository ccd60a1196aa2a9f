#!/bin/sh
# cnfbox-pause: the pause container's entrypoint. Sleeps until SIGTERM or
# SIGINT, then exits 0.
#
# As PID 1 of a PID namespace the kernel delivers only signals this process
# has a handler for (pid_namespaces(7)), so the traps are what make it
# stoppable. `wait` is interrupted by a trapped signal, a foreground `sleep`
# would not be.
trap 'kill $! 2>/dev/null; exit 0' TERM INT
while :; do
	sleep 3600 &
	wait $!
done
