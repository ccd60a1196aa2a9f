/* devopen: opens a device node and uses it, for cnfbox's device tests.
 *
 *   devopen kvm PATH              open O_RDWR, ioctl KVM_CREATE_VM
 *   devopen tap PATH NAME         open O_RDWR, TUNSETIFF (IFF_TAP), TUNSETPERSIST
 *   devopen open PATH [UID GID [GROUP]]
 *                                 drop to UID:GID (supplementary GROUP or
 *                                 none) first, then open O_RDWR
 *   devopen vfio GROUP CONTAINER DEVICE
 *                                 what DPDK does with a VFIO group: open
 *                                 the container and the group, attach, set
 *                                 the type1 IOMMU, map one page for DMA,
 *                                 get the fd of PCI device DEVICE
 *   devopen detach CGROUP         what pod root would do to lift its device
 *                                 rules on cgroup v2: BPF_PROG_QUERY of
 *                                 the cgroup's BPF_CGROUP_DEVICE programs,
 *                                 BPF_PROG_GET_FD_BY_ID of the first one,
 *                                 BPF_PROG_DETACH of it (and without one)
 *
 * Prints key=value lines: open=ok|<errno name>, then vm=ok|<errno name>
 * or tap=ok|<errno name> and ifindex=<n>, or container=, viable=, attach=,
 * iommu=, dma=, device= and regions=<n>. Exit status 0 when every step
 * worked. Built static by the tests, so it runs in a busybox rootfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <linux/vfio.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
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
    case EIO: return "EIO";
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

/* Each step prints KEY=ok or KEY=<errno name>; returns -1 on failure. */
static int step(const char *key, long ret) {
    if (ret < 0) {
        printf("%s=%s\n", key, errname(errno));
        return -1;
    }
    printf("%s=ok\n", key);
    return 0;
}

static int vfio(const char *group_path, const char *container_path, const char *device) {
    int container = open(container_path, O_RDWR | O_CLOEXEC);
    if (step("container", container) < 0)
        return 1;
    if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
        ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0) {
        printf("api=unsupported\n");
        return 1;
    }
    int group = open_dev(group_path);
    if (group < 0)
        return 1;
    struct vfio_group_status status = { .argsz = sizeof status };
    if (step("status", ioctl(group, VFIO_GROUP_GET_STATUS, &status)) < 0)
        return 1;
    printf("viable=%s\n", (status.flags & VFIO_GROUP_FLAGS_VIABLE) ? "yes" : "no");
    if (step("attach", ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) < 0 ||
        step("iommu", ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU)) < 0)
        return 1;
    long page = sysconf(_SC_PAGESIZE);
    void *buf = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        printf("mmap=%s\n", errname(errno));
        return 1;
    }
    struct vfio_iommu_type1_dma_map map = {
        .argsz = sizeof map,
        .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (unsigned long)buf,
        .iova = 0x100000,
        .size = (unsigned long)page,
    };
    if (step("dma", ioctl(container, VFIO_IOMMU_MAP_DMA, &map)) < 0)
        return 1;
    int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, device);
    if (step("device", dev) < 0)
        return 1;
    struct vfio_device_info info = { .argsz = sizeof info };
    if (step("info", ioctl(dev, VFIO_DEVICE_GET_INFO, &info)) < 0)
        return 1;
    printf("regions=%u\n", info.num_regions);
    return 0;
}

static long bpf(int cmd, union bpf_attr *attr) {
    return syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

/* Prints query=, count=, getfd=, detach=, detach_any= lines. */
static int detach(const char *cgroup_path) {
    int cg = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (step("cgroup", cg) < 0)
        return 1;
    __u32 ids[64];
    union bpf_attr q;
    memset(&q, 0, sizeof q);
    q.query.target_fd = cg;
    q.query.attach_type = BPF_CGROUP_DEVICE;
    q.query.prog_ids = (__u64)(unsigned long)ids;
    q.query.prog_cnt = 64;
    if (step("query", bpf(BPF_PROG_QUERY, &q)) == 0)
        printf("count=%u\n", q.query.prog_cnt);
    union bpf_attr g;
    memset(&g, 0, sizeof g);
    g.prog_id = q.query.prog_cnt > 0 ? ids[0] : 1;
    long prog = bpf(BPF_PROG_GET_FD_BY_ID, &g);
    step("getfd", prog);
    union bpf_attr d;
    memset(&d, 0, sizeof d);
    d.target_fd = cg;
    d.attach_type = BPF_CGROUP_DEVICE;
    d.attach_bpf_fd = prog < 0 ? 0 : (__u32)prog;
    int failed = step("detach", bpf(BPF_PROG_DETACH, &d));
    d.attach_bpf_fd = 0;
    failed |= step("detach_any", bpf(BPF_PROG_DETACH, &d));
    return failed ? 1 : 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: devopen kvm|tap|open PATH ...\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    if (strcmp(mode, "detach") == 0)
        return detach(path);
    if (strcmp(mode, "vfio") == 0) {
        if (argc < 5) {
            fprintf(stderr, "usage: devopen vfio GROUP CONTAINER DEVICE\n");
            return 2;
        }
        return vfio(path, argv[3], argv[4]);
    }
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
