/* devopen: opens a device node and uses it, for cnfbox's device tests.
 *
 *   devopen kvm PATH              open O_RDWR, ioctl KVM_CREATE_VM
 *   devopen tap PATH NAME         open O_RDWR, TUNSETIFF (IFF_TAP), TUNSETPERSIST
 *   devopen open PATH [UID GID [GROUP]]
 *                                 drop to UID:GID (supplementary GROUP or
 *                                 none) first, then open O_RDWR
 *
 * Prints key=value lines: open=ok|<errno name>, then vm=ok|<errno name>
 * or tap=ok|<errno name> and ifindex=<n>. Exit status 0 when every step
 * worked. Built static by the tests, so it runs in a busybox rootfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define KVM_CREATE_VM 0xAE01

static const char *errname(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    case EINVAL: return "EINVAL";
    case EBUSY: return "EBUSY";
    default: return strerror(e);
    }
}

static int open_dev(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        printf("open=%s\n", errname(errno));
        return -1;
    }
    printf("open=ok\n");
    return fd;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: devopen kvm|tap|open PATH ...\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    if (strcmp(mode, "open") == 0 && argc >= 5) {
        gid_t groups[1];
        int n = 0;
        if (argc >= 6)
            groups[n++] = (gid_t)atoi(argv[5]);
        if (setgroups(n, groups) || setgid((gid_t)atoi(argv[4])) || setuid((uid_t)atoi(argv[3]))) {
            printf("drop=%s\n", errname(errno));
            return 1;
        }
    }
    int fd = open_dev(path);
    if (fd < 0)
        return 1;
    if (strcmp(mode, "kvm") == 0) {
        int vm = ioctl(fd, KVM_CREATE_VM, 0);
        if (vm < 0) {
            printf("vm=%s\n", errname(errno));
            return 1;
        }
        printf("vm=ok\n");
        close(vm);
    } else if (strcmp(mode, "tap") == 0) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        strncpy(ifr.ifr_name, argc > 3 ? argv[3] : "cnftap0", IFNAMSIZ - 1);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0) {
            printf("tap=%s\n", errname(errno));
            return 1;
        }
        printf("tap=ok\nifindex=%u\n", if_nametoindex(ifr.ifr_name));
    }
    close(fd);
    return 0;
}
