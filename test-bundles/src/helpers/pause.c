/* pause: a pod sandbox's process, as Kubernetes' pause image has it: one
 * process that sleeps in pause(2), exits 0 on SIGTERM or SIGINT, and reaps
 * the children it inherits as PID 1 of the pod's PID namespace. Unlike the
 * shell script cnfbox's own pause image runs, it has no `sleep` child for
 * the pod's containers to see (critest's execSync timeout spec runs
 * `pgrep sleep` in a container that shares the pod's PID namespace). */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void down(int sig)
{
    (void)sig;
    _exit(0);
}

static void reap(int sig)
{
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

int main(void)
{
    struct sigaction stop = { .sa_handler = down };
    struct sigaction child = { .sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART };
    if (sigaction(SIGTERM, &stop, NULL) != 0 || sigaction(SIGINT, &stop, NULL) != 0 ||
        sigaction(SIGCHLD, &child, NULL) != 0)
        return 1;
    for (;;)
        pause();
}
