/* icmpecho: sends one ICMP echo to 127.0.0.1 on an unprivileged ICMP
 * socket (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), allowed by
 * net.ipv4.ping_group_range) and prints icmp=ok or icmp=<error>.
 * `icmpecho UID GID` first becomes that user (groups cleared). */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 3) {
        gid_t gid = (gid_t)strtoul(argv[2], NULL, 10);
        if (setgroups(0, NULL) || setgid(gid) || setuid((uid_t)strtoul(argv[1], NULL, 10))) {
            printf("icmp=setuid:%s\n", strerror(errno));
            return 1;
        }
    }
    int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    if (fd < 0) {
        printf("icmp=socket:%s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_in to = {.sin_family = AF_INET};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct icmphdr req = {.type = ICMP_ECHO};
    req.un.echo.sequence = htons(1);
    if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0) {
        printf("icmp=send:%s\n", strerror(errno));
        return 1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1) {
        printf("icmp=no-reply\n");
        return 1;
    }
    struct icmphdr rep;
    if (recv(fd, &rep, sizeof rep, 0) < (ssize_t)sizeof rep || rep.type != ICMP_ECHOREPLY) {
        printf("icmp=bad-reply\n");
        return 1;
    }
    printf("icmp=ok\n");
    return 0;
}
