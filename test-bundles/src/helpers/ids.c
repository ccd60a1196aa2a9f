/* ids: prints the process's real, effective and saved uids and gids as
 * `ruid= euid= suid= rgid= egid= sgid=` lines. Unlike busybox, it does not
 * drop a setuid bit it was run with, so a test sees what the bit gave. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &e, &s) != 0 || getresgid(&gr, &ge, &gs) != 0) {
        perror("getres[ug]id");
        return 1;
    }
    printf("ruid=%u\neuid=%u\nsuid=%u\nrgid=%u\negid=%u\nsgid=%u\n",
           (unsigned)r, (unsigned)e, (unsigned)s, (unsigned)gr, (unsigned)ge, (unsigned)gs);
    return 0;
}
