/* Sockets that a restore binds again, across a checkpoint.
 *
 * usage: fdsockets UNIX_PATH ABSTRACT_NAME GO
 *
 * Sets up, prints "ready", waits until the file GO exists (the test checkpoints, kills and
 * restores it meanwhile), then uses each socket and prints what happened; the output must be
 * an uninterrupted run's:
 *   - a Unix stream socket listening on UNIX_PATH (backlog 5);
 *   - a Unix datagram socket bound to the abstract name ABSTRACT_NAME;
 *   - a UDP socket bound to 127.0.0.1 on a port the kernel chose (it must keep it);
 *   - a connected Unix stream socketpair, both ends in the task;
 *   - an unbound TCP socket;
 *   - a netlink socket (not restorable: left closed) and an epoll watching it and the UDP
 *     socket (the UDP registration must come back, the netlink one is dropped). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t unix_addr(struct sockaddr_un *a, const char *name, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    strncpy(a->sun_path + abstract, name, sizeof a->sun_path - 2);
    return offsetof(struct sockaddr_un, sun_path) + abstract + strlen(name) + !abstract;
}

#define CHECK(x)                                                                           \
    if (!(x))                                                                              \
        return perror(#x), 1;

int main(int argc, char **argv) {
    if (argc != 4)
        return fprintf(stderr, "usage: fdsockets UNIX_PATH ABSTRACT_NAME GO\n"), 2;
    struct sockaddr_un ua, da;
    socklen_t ul = unix_addr(&ua, argv[1], 0), dl = unix_addr(&da, argv[2], 1);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(ls >= 0 && bind(ls, (void *)&ua, ul) == 0 && listen(ls, 5) == 0);
    int ds = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(ds >= 0 && bind(ds, (void *)&da, dl) == 0);
    int us = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t il = sizeof in;
    CHECK(us >= 0 && bind(us, (void *)&in, il) == 0 && getsockname(us, (void *)&in, &il) == 0);
    unsigned short port = ntohs(in.sin_port);
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    int ts = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(ts >= 0);
    int ns = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN, {.u32 = 1}};
    CHECK(ns >= 0 && ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, us, &ev) == 0);
    ev.data.u32 = 2;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, ns, &ev) == 0);
    printf("ready\n");
    fflush(stdout);
    while (access(argv[3], F_OK) != 0)
        usleep(5000);

    char buf[64] = {0};
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (void *)&ua, ul) == 0);
    int a = accept(ls, NULL, NULL);
    CHECK(a >= 0 && write(c, "over unix", 9) == 9 && read(a, buf, sizeof buf) == 9);
    printf("unix listener: %s\n", buf);
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(sendto(d, "datagram", 8, 0, (void *)&da, dl) == 8);
    memset(buf, 0, sizeof buf);
    CHECK(recv(ds, buf, sizeof buf, 0) == 8);
    printf("abstract datagram: %s\n", buf);
    il = sizeof in;
    CHECK(getsockname(us, (void *)&in, &il) == 0);
    printf("udp keeps its port: %d\n", ntohs(in.sin_port) == port);
    CHECK(sendto(us, "to myself", 9, 0, (void *)&in, il) == 9);
    memset(buf, 0, sizeof buf);
    CHECK(epoll_wait(ep, &ev, 1, 2000) == 1);
    printf("epoll: %u\n", ev.data.u32);
    CHECK(recv(us, buf, sizeof buf, 0) == 9);
    printf("udp: %s\n", buf);
    CHECK(write(sp[0], "pair", 4) == 4);
    memset(buf, 0, sizeof buf);
    CHECK(read(sp[1], buf, sizeof buf) == 4);
    printf("socketpair: %s\n", buf);
    close(sp[0]);
    printf("socketpair after close: %zd\n", read(sp[1], buf, sizeof buf));
    struct sockaddr_in6 t6;
    socklen_t tl = sizeof t6;
    CHECK(getsockname(ts, (void *)&t6, &tl) == 0);
    printf("tcp unbound: family %d port %d\n", t6.sin6_family == AF_INET6, ntohs(t6.sin6_port));
    return 0;
}
