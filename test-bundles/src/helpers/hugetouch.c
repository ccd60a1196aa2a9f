/* hugetouch: maps hugepages and touches them, for cnfbox's NUMA tests.
 *
 *   hugetouch anon BYTES          MAP_HUGETLB anonymous mapping
 *   hugetouch file BYTES PATH     MAP_SHARED mapping of PATH (on hugetlbfs)
 *
 * Prints key=value lines: mmap=ok|<errno name>, touched=<pages> or
 * sigbus=<page index>, and numa_maps=<the mapping's /proc/self/numa_maps
 * line>. Exit status 0 when every page was touched. Built static by the
 * tests, so it runs in a busybox rootfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE (2UL << 20)

static sigjmp_buf env;

static void on_sigbus(int sig) {
    (void)sig;
    siglongjmp(env, 1);
}

static const char *errname(int e) {
    switch (e) {
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOSPC: return "ENOSPC";
    default: return strerror(e);
    }
}

static void print_numa_maps(void *addr) {
    char want[32], line[1024];
    FILE *f = fopen("/proc/self/numa_maps", "r");
    if (!f) {
        printf("numa_maps=unreadable:%s\n", errname(errno));
        return;
    }
    snprintf(want, sizeof want, "%lx ", (unsigned long)addr);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, want, strlen(want)) == 0) {
            line[strcspn(line, "\n")] = 0;
            printf("numa_maps=%s\n", line);
        }
    }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "file") == 0 && argc < 4)) {
        fprintf(stderr, "usage: hugetouch anon|file BYTES [PATH]\n");
        return 2;
    }
    unsigned long bytes = strtoul(argv[2], NULL, 10);
    void *p;
    if (strcmp(argv[1], "anon") == 0) {
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    } else {
        int fd = open(argv[3], O_CREAT | O_RDWR, 0600);
        if (fd < 0) {
            printf("open=%s\n", errname(errno));
            return 1;
        }
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    }
    if (p == MAP_FAILED) {
        printf("mmap=%s\n", errname(errno));
        return 1;
    }
    printf("mmap=ok\n");
    fflush(stdout);
    signal(SIGBUS, on_sigbus);
    volatile unsigned long i = 0;
    if (sigsetjmp(env, 1)) {
        printf("sigbus=%lu\n", i);
        return 1;
    }
    for (i = 0; i < bytes / PAGE; i++)
        ((volatile char *)p)[i * PAGE] = 1;
    printf("touched=%lu\n", bytes / PAGE);
    print_numa_maps(p);
    return 0;
}
