/* Test program for restore --lazy (cr-dump/tests/lazy_restore.rs): maps MIB mebibytes of
 * anonymous memory, writes a pattern to every page, writes DIR/ready.PID, then waits for
 * SIGUSR1 (checkpointed and restored meanwhile). On SIGUSR1 it does MODE and writes its
 * results to DIR/out.PID (its own pid), then exits 0:
 *   seq      checksum of every word, in order;
 *   random   the pages read in a pseudo-random order (every page once), an order-independent
 *            checksum of them;
 *   forkunmap  munmap of the 2nd quarter, MADV_DONTNEED of the 3rd (must read as zeros),
 *            mremap of the 4th to a new place, then a fork whose child checksums the 1st, 3rd and
 *            (moved) 4th quarters and writes them, the parent waiting for it and doing the same.
 * usage: lazy_touch MIB MODE DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static uint64_t sum_words(const uint64_t *p, size_t words) {
    uint64_t s = 0;
    for (size_t i = 0; i < words; i++)
        s = (s ^ p[i]) * 0x100000001b3ULL;
    return s;
}

static void put(const char *dir, const char *name, const char *text) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s.%d", dir, name, (int)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        exit(3);
    size_t n = strlen(text);
    if (write(fd, text, n) != (ssize_t)n)
        exit(3);
    close(fd);
    rename(tmp, path);
}

int main(int argc, char **argv) {
    if (argc < 4)
        return 2;
    size_t len = strtoul(argv[1], NULL, 0) << 20, words = len / 8, ps = 4096;
    const char *mode = argv[2], *dir = argv[3];
    uint64_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < words; i++)
        p[i] = (i * 0x9e3779b97f4a7c15ULL) | 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, none;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &none);
    sigdelset(&none, SIGUSR1);
    put(dir, "ready", "ready\n");
    while (!asked)
        sigsuspend(&none);
    char out[1024];
    if (strcmp(mode, "seq") == 0) {
        snprintf(out, sizeof out, "seq %016llx\n", (unsigned long long)sum_words(p, words));
    } else if (strcmp(mode, "random") == 0) {
        size_t pages = len / ps, wpp = ps / 8;
        uint64_t acc = 0, x = 12345;
        /* a full-period LCG over a power-of-two range, pages >= it skipped */
        size_t range = 1;
        while (range < pages)
            range <<= 1;
        for (size_t k = 0; k < range; k++) {
            x = (x * 6364136223846793005ULL + 1442695040888963407ULL) & (range - 1);
            if (x < pages)
                acc += sum_words(p + x * wpp, wpp) * (x + 1);
        }
        snprintf(out, sizeof out, "random %016llx\n", (unsigned long long)acc);
    } else if (strcmp(mode, "forkunmap") == 0) {
        size_t q = len / 4, qw = words / 4;
        munmap((char *)p + q, q);
        madvise((char *)p + 2 * q, q, MADV_DONTNEED);
        void *to = mmap(NULL, q, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (to == MAP_FAILED)
            return 4;
        uint64_t *moved = mremap((char *)p + 3 * q, q, q, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (moved == MAP_FAILED)
            return 4;
        pid_t c = fork();
        if (c < 0)
            return 5;
        uint64_t a = sum_words(p, qw), z = sum_words(p + 2 * qw, qw), m = sum_words(moved, qw);
        snprintf(out, sizeof out, "%s %016llx %016llx %016llx\n", c == 0 ? "child" : "parent",
                 (unsigned long long)a, (unsigned long long)z, (unsigned long long)m);
        if (c == 0) {
            put(dir, "child", out);
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        char cpath[4096], line[1024] = "";
        snprintf(cpath, sizeof cpath, "%s/child.%d", dir, (int)c);
        FILE *f = fopen(cpath, "r");
        if (f) {
            if (!fgets(line, sizeof line, f))
                line[0] = 0;
            fclose(f);
            unlink(cpath);
        }
        strncat(out, line, sizeof out - strlen(out) - 1);
    } else {
        return 2;
    }
    put(dir, "out", out);
    return 0;
}
