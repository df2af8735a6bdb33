/* Test program for restore --lazy (cr-dump/tests/lazy_restore.rs): the task moves its memory
 * about while it is filled. Maps MIB mebibytes of anonymous memory, writes a pattern to every
 * page, writes DIR/ready.PID, then waits for SIGUSR1 (checkpointed and restored meanwhile). On
 * SIGUSR1 it moves every mebibyte, one at a time and in a scattered order, to a second area
 * (mremap MREMAP_FIXED: each move a UFFD_EVENT_REMAP, and a copy to the old place meanwhile
 * finds no VMA there), discards (MADV_DONTNEED) every 8th mebibyte at its new place, moves every
 * mebibyte back in another order, splits the memory with mprotect, and writes a checksum
 * of each mebibyte to DIR/out.PID (its own pid), then exits 0. A discarded mebibyte must read as
 * zeros, every other as it was written.
 * usage: lazy_moves MIB MODE DIR (MODE: moves) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static uint64_t sum_words(const uint64_t *p, size_t words) {
    uint64_t s = 0;
    for (size_t i = 0; i < words; i++) {
        s = (s ^ p[i]) * 0x100000001b3ULL;
        s ^= s >> 29;
    }
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
    if (argc < 4 || strcmp(argv[2], "moves") != 0)
        return 2;
    size_t mib = strtoul(argv[1], NULL, 0), stripe = 1 << 20, len = mib * stripe;
    const char *dir = argv[3];
    uint64_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mib == 0)
        return 1;
    for (size_t i = 0; i < len / 8; i++)
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
    char *a = (char *)p;
    char *b = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        return 4;
    /* An odd step visits every stripe once (mib a power of two, or coprime with it). */
    size_t step = 37 % mib ? 37 : 1;
    for (size_t k = 0; k < mib; k++) {
        size_t i = (k * step) % mib;
        if (mremap(a + i * stripe, stripe, stripe, MREMAP_MAYMOVE | MREMAP_FIXED,
                   b + i * stripe) == MAP_FAILED)
            return 5;
    }
    for (size_t i = 3; i < mib; i += 8)
        madvise(b + i * stripe, stripe, MADV_DONTNEED);
    size_t back = 29 % mib ? 29 : 1;
    for (size_t k = 0; k < mib; k++) {
        size_t i = (mib - 1 - (k * back) % mib);
        if (mremap(b + i * stripe, stripe, stripe, MREMAP_MAYMOVE | MREMAP_FIXED,
                   a + i * stripe) == MAP_FAILED)
            return 6;
    }
    /* Split the memory (no event: the VMAs stay registered; a copy across a split finds
     * no VMA holding all of it). */
    for (size_t i = 1; i < mib; i += 4)
        mprotect(a + i * stripe + stripe / 2, stripe / 4, PROT_READ);
    /* One line per stripe, then all of them. */
    size_t cap = mib * 20 + 64, at = 0;
    char *out = malloc(cap);
    if (!out)
        return 7;
    uint64_t all = 0;
    for (size_t i = 0; i < mib; i++) {
        uint64_t s = sum_words((uint64_t *)(a + i * stripe), stripe / 8);
        all = (all ^ s) * 0x100000001b3ULL;
        all ^= all >> 29;
        at += snprintf(out + at, cap - at, "%zu %016llx\n", i, (unsigned long long)s);
    }
    snprintf(out + at, cap - at, "all %016llx\n", (unsigned long long)all);
    put(dir, "out", out);
    return 0;
}
