/* Pipes and a FIFO holding unread bytes across a checkpoint.
 *
 * usage: fdpipes FIFO GO
 *
 * Sets up, then prints "ready" and waits until the file GO exists (the test checkpoints and
 * kills it meanwhile, restores it, then creates GO):
 *   - pipe A, both ends in the task, capacity 256 KiB, the read end non-blocking, 100000
 *     bytes of a pattern unread (more than one page, so several pipe buffers);
 *   - pipe B, its write end closed after "tail of B" was written: the reader sees those bytes
 *     and then end of file;
 *   - the FIFO, opened for reading and writing (two descriptors), "fifo bytes" unread;
 *   - pipe C, held only through one descriptor opened read-write through /proc, "rw bytes"
 *     unread.
 * Then reads everything back and prints what it got; the output must be the same as an
 * uninterrupted run's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NA 100000

static unsigned sum(const unsigned char *p, size_t n) {
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fdpipes FIFO GO\n");
        return 2;
    }
    int a[2], b[2];
    static unsigned char buf[NA], got[NA + 10];
    if (pipe(a) || pipe(b))
        return perror("pipe"), 1;
    if (fcntl(a[1], F_SETPIPE_SZ, 256 * 1024) < 0)
        return perror("F_SETPIPE_SZ"), 1;
    fcntl(a[0], F_SETFL, O_NONBLOCK);
    for (int i = 0; i < NA; i++)
        buf[i] = (unsigned char)(i * 7 + i / 251);
    if (write(a[1], buf, NA) != NA)
        return perror("write a"), 1;
    if (write(b[1], "tail of B\n", 10) != 10)
        return perror("write b"), 1;
    close(b[1]);
    int fr = open(argv[1], O_RDONLY | O_NONBLOCK);
    int fw = open(argv[1], O_WRONLY);
    if (fr < 0 || fw < 0)
        return perror("open fifo"), 1;
    if (write(fw, "fifo bytes", 10) != 10)
        return perror("write fifo"), 1;
    int c[2];
    char cp[64];
    if (pipe(c))
        return perror("pipe c"), 1;
    snprintf(cp, sizeof cp, "/proc/self/fd/%d", c[0]);
    int crw = open(cp, O_RDWR);
    close(c[0]);
    close(c[1]);
    if (crw < 0 || write(crw, "rw bytes", 8) != 8)
        return perror("pipe c read-write"), 1;
    printf("ready\n");
    fflush(stdout);
    while (access(argv[2], F_OK) != 0)
        usleep(5000);

    printf("A capacity %d nonblock %d\n", fcntl(a[0], F_GETPIPE_SZ),
           (fcntl(a[0], F_GETFL) & O_NONBLOCK) != 0);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(a[0], got + n, sizeof got - n);
        if (r > 0) {
            n += r;
            continue;
        }
        if (r < 0 && errno == EAGAIN)
            break;
        return perror("read a"), 1;
    }
    printf("A read %zu bytes, %s, sum %08x\n", n,
           n == NA && !memcmp(got, buf, NA) ? "same" : "DIFFERENT", sum(got, n));
    if (write(a[1], "more", 4) != 4 || read(a[0], got, 10) != 4)
        return perror("pipe a after restore"), 1;
    printf("A still a pipe: %.4s\n", got);
    ssize_t r = read(b[0], got, 100);
    printf("B read %zd: %.*s", r, r > 0 ? (int)r : 0, got);
    r = read(b[0], got, 100);
    printf("B then %zd (end of file)\n", r);
    r = read(fr, got, 100);
    printf("FIFO read %zd: %.*s\n", r, r > 0 ? (int)r : 0, got);
    if (write(fw, "again", 5) != 5)
        return perror("write fifo again"), 1;
    r = read(fr, got, 100);
    printf("FIFO again %zd: %.*s\n", r, r > 0 ? (int)r : 0, got);
    r = read(crw, got, 100);
    printf("C read-write %zd: %.*s\n", r, r > 0 ? (int)r : 0, got);
    struct stat st;
    fstat(fr, &st);
    printf("FIFO is a fifo: %d\n", S_ISFIFO(st.st_mode));
    return 0;
}
