/* An eventfd + timerfd + signalfd + epoll loop, and a memfd, across a checkpoint.
 *
 * usage: fdevents GO
 *
 * Sets up, prints "ready", waits until the file GO exists (the test checkpoints, kills and
 * restores it meanwhile), then runs its loop and prints what it sees; everything printed is
 * independent of timing, so the output must be an uninterrupted run's:
 *   - eventfd E with counter 3 (non-blocking), eventfd S with counter 2 and EFD_SEMAPHORE;
 *   - timerfd T1, one-shot, expired long before the checkpoint and never read (must read 1);
 *   - timerfd T2, one-shot in 3600 s (must still be armed, with at most that left);
 *   - timerfd P, every 20 ms (the loop waits for 5 expirations through epoll);
 *   - timerfd Q, every 1 ms from before the checkpoint, never read (it must still read as
 *     expired, and keep expiring);
 *   - signalfd for SIGUSR1 (blocked), raised after the restore;
 *   - epoll with E (edge-triggered), S, T1, P, the signalfd;
 *   - memfd "cr-test-memfd" with 10000 bytes, offset 5, sealed against shrinking and growing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

enum { E, S, T1, P, SIG, N };
static const char *names[N] = {"E", "S", "T1", "P", "SIG"};

static void arm(int fd, long first_ns, long every_ns) {
    struct itimerspec it = {{every_ns / 1000000000, every_ns % 1000000000},
                            {first_ns / 1000000000, first_ns % 1000000000}};
    if (timerfd_settime(fd, 0, &it, NULL))
        perror("timerfd_settime"), exit(1);
}

/* Waits up to 2 s and prints the names of the ready descriptors, in a fixed order. */
static void ready_set(int ep, int skip) {
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, 2000), seen[N] = {0};
    for (int i = 0; i < n; i++)
        seen[ev[i].data.u32] = 1;
    printf("ready:");
    for (int i = 0; i < N; i++)
        if (seen[i] && i != skip)
            printf(" %s", names[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc != 2)
        return fprintf(stderr, "usage: fdevents GO\n"), 2;
    int fd[N];
    fd[E] = eventfd(3, EFD_NONBLOCK);
    fd[S] = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    fd[T1] = timerfd_create(CLOCK_MONOTONIC, 0);
    int t2 = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    fd[P] = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, NULL);
    fd[SIG] = signalfd(-1, &m, SFD_NONBLOCK);
    int ep = epoll_create1(0);
    for (int i = 0; i < N; i++) {
        if (fd[i] < 0)
            return perror("create"), 1;
        struct epoll_event ev = {EPOLLIN | (i == E ? EPOLLET : 0), {.u32 = i}};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev))
            return perror("epoll_ctl"), 1;
    }
    arm(fd[T1], 1000000, 0);
    arm(t2, 3600L * 1000000000, 0);
    int q = timerfd_create(CLOCK_MONOTONIC, 0);
    if (q < 0)
        return perror("timerfd q"), 1;
    arm(q, 1000000, 1000000);
    int mfd = memfd_create("cr-test-memfd", MFD_ALLOW_SEALING);
    char blob[10000];
    for (int i = 0; i < (int)sizeof blob; i++)
        blob[i] = 'a' + i % 26;
    if (mfd < 0 || write(mfd, blob, sizeof blob) != sizeof blob)
        return perror("memfd"), 1;
    lseek(mfd, 5, SEEK_SET);
    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    usleep(20000); /* T1 has expired. */
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0)
        usleep(5000);

    /* E, S and T1 are ready; SIG not yet; P not armed. */
    ready_set(ep, P);
    uint64_t v;
    ssize_t r = read(fd[E], &v, 8);
    printf("E read %zd value %llu\n", r, (unsigned long long)v);
    r = read(fd[E], &v, 8);
    printf("E again %zd (errno EAGAIN: %d)\n", r, errno == EAGAIN);
    for (int i = 0; i < 3; i++) {
        r = read(fd[S], &v, 8);
        printf("S read %zd value %llu\n", r, r == 8 ? (unsigned long long)v : 0ULL);
    }
    r = read(fd[T1], &v, 8);
    printf("T1 read %zd ticks %llu\n", r, (unsigned long long)v);
    struct itimerspec cur;
    timerfd_gettime(t2, &cur);
    printf("T2 armed %d within the hour %d nonblock %d\n",
           cur.it_value.tv_sec > 0 || cur.it_value.tv_nsec > 0, cur.it_value.tv_sec < 3600,
           (fcntl(t2, F_GETFL) & O_NONBLOCK) != 0);
    r = read(q, &v, 8);
    printf("Q expired %d\n", r == 8 && v >= 1);
    r = read(q, &v, 8);
    printf("Q still periodic %d\n", r == 8 && v >= 1);
    arm(fd[P], 20000000, 20000000);
    uint64_t ticks = 0;
    while (ticks < 5) {
        struct epoll_event ev;
        if (epoll_wait(ep, &ev, 1, 2000) != 1)
            return printf("epoll_wait: nothing for 2 s\n"), 1;
        if (ev.data.u32 == P && read(fd[P], &v, 8) == 8)
            ticks += v;
    }
    printf("P ticked at least 5 times through epoll\n");
    arm(fd[P], 0, 0);
    raise(SIGUSR1);
    ready_set(ep, P);
    struct signalfd_siginfo si;
    r = read(fd[SIG], &si, sizeof si);
    printf("SIG read %zd signo %u\n", r, si.ssi_signo);
    printf("eventfd write then read: ");
    v = 7;
    write(fd[E], &v, 8);
    read(fd[E], &v, 8);
    printf("%llu\n", (unsigned long long)v);

    char got[20] = {0};
    r = read(mfd, got, 10);
    printf("memfd read %zd: %s\n", r, got);
    printf("memfd size %lld seals %#x\n", (long long)lseek(mfd, 0, SEEK_END),
           fcntl(mfd, F_GET_SEALS));
    printf("memfd grow refused %d\n", ftruncate(mfd, 20000) != 0);
    char link[64], path[256] = {0};
    snprintf(link, sizeof link, "/proc/self/fd/%d", mfd);
    readlink(link, path, sizeof path - 1);
    printf("memfd link %s\n", path);
    return 0;
}
