/* nnp: prints "Effective uid: N", as the nonewprivs image of Kubernetes'
 * e2e tests does. Installed setuid root: with no_new_privs the kernel
 * ignores the bit and N is the caller's uid, without it N is 0. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    printf("Effective uid: %u\n", (unsigned)geteuid());
    return 0;
}
