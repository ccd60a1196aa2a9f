/* webserve PORT [PIDFILE [TITLE...]]: a minimal HTTP server for critest's
 * web server images (port forwarding, port mapping, multi-container specs). Answers
 * every request with 200 and a small page, one connection at a time.
 * Prints "<name>: serving on port N" (critest looks for "httpd" in the
 * httpd container's log) and writes its pid to PIDFILE if given (the
 * nginx image's /var/run/nginx.pid). Further arguments are ignored: they
 * only show in /proc/PID/cmdline (the nginx image's "master process").
 * Listens on IPv6 and IPv4 when the network has IPv6, else on IPv4 only. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char page[] = "<html><body>cnfbox webserve</body></html>\n";

static int listen_on(int port)
{
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(fd, 64) == 0)
            return fd;
        close(fd);
    }
    struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port) };
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0 || listen(fd, 64) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 80;
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    signal(SIGPIPE, SIG_IGN);
    int fd = listen_on(port);
    if (fd < 0) {
        fprintf(stderr, "%s: listen on port %d: %s\n", name, port, strerror(errno));
        return 1;
    }
    if (argc > 2) {
        FILE *f = fopen(argv[2], "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
            fprintf(stderr, "%s: write %s: %s\n", name, argv[2], strerror(errno));
            return 1;
        }
    }
    printf("%s: serving on port %d\n", name, port);
    fflush(stdout);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[4096];
        size_t got = 0;
        /* Read the request head (up to the blank line) before answering. */
        while (got < sizeof buf - 1) {
            ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
            buf[got] = 0;
            if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
                break;
        }
        char head[160];
        int len = snprintf(head, sizeof head,
                           "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                           "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                           sizeof page - 1);
        if (write(c, head, (size_t)len) == len)
            (void)!write(c, page, sizeof page - 1);
        close(c);
    }
}
