/* Test target of cr-dump/tests/restore_maps.rs (issue 14): many small mappings of every kind
 * side by side, each with its own protection, so that the kernel keeps them apart:
 *  - N one-page anonymous mappings cut from one mapping, protections in a cycle of 8: written
 *    read-write, written read-only, written read-write, a guard page (PROT_NONE, never written),
 *    written read-write, written then PROT_NONE, written read+exec, read-only never written;
 *  - between them, every 64th page, a page of a file (DIR/mixed.data, written by this program):
 *    private read-only, private read-write and written (its own copy), shared read-only, in turn;
 *  - pairs of one-page anonymous mappings with the same protection that touch but are not one
 *    (the second made elsewhere, written, and moved next to the first: its page offset does not
 *    follow);
 * then writes to DIR/sum.PID "CHECKSUM": a checksum of the contents of every one of those pages,
 * read through /proc/self/mem (which reads PROT_NONE pages too), and again (to the file of its
 * own pid) on SIGUSR1, as a restored copy does. Prints "ready" on stdout once the first sum is
 * written.
 * usage: mixed_maps N DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096
#define PAIRS 16

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static unsigned char *base, *pairs[PAIRS][2];
static size_t n;

static const int prots[8] = {
    PROT_READ | PROT_WRITE, PROT_READ,  PROT_READ | PROT_WRITE, PROT_NONE,
    PROT_READ | PROT_WRITE, PROT_NONE,  PROT_READ | PROT_EXEC,  PROT_READ,
};
/* Whether page i of the cycle is written before its protection is set. */
static const int written[8] = {1, 1, 1, 0, 1, 1, 1, 0};

static void fill(unsigned char *p, uint64_t tag) {
    uint64_t *w = (uint64_t *)p;
    for (size_t k = 0; k < PG / 8; k++)
        w[k] = (tag * 0x9e3779b97f4a7c15ULL) ^ (k * 0x100000001b3ULL) ^ 0x5a5a5a5a5a5a5a5aULL;
}

static uint64_t mix(uint64_t s, const unsigned char *b, size_t len) {
    const uint64_t *w = (const uint64_t *)b;
    for (size_t k = 0; k < len / 8; k++)
        s = (s ^ w[k]) * 0x100000001b3ULL;
    return s;
}

static uint64_t sum(void) {
    static unsigned char buf[PG];
    uint64_t s = 0xcbf29ce484222325ULL;
    int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (pread(fd, buf, PG, (off_t)(uintptr_t)(base + i * PG)) != PG)
            s ^= 0xdead0000 + i;
        else
            s = mix(s, buf, PG);
    }
    for (int k = 0; k < PAIRS; k++)
        for (int j = 0; j < 2; j++)
            s = mix(s, pairs[k][j], PG);
    close(fd);
    return s;
}

static void write_sum(const char *dir) {
    char path[4096], tmp[4200], line[64];
    snprintf(path, sizeof path, "%s/sum.%d", dir, (int)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int len = snprintf(line, sizeof line, "%016llx\n", (unsigned long long)sum());
    if (write(fd, line, len) == len)
        rename(tmp, path);
    close(fd);
}

/* The file whose pages are mapped between the anonymous ones: FILE_PAGES pages, each with its
 * own pattern. */
#define FILE_PAGES 8
static int make_file(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/mixed.data", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    static unsigned char page[PG];
    for (int i = 0; i < FILE_PAGES; i++) {
        fill(page, 1000000 + i);
        if (write(fd, page, PG) != PG)
            return -1;
    }
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    n = strtoul(argv[1], NULL, 0);
    int fd = make_file(argv[2]);
    if (fd < 0) {
        perror("file");
        return 1;
    }
    base = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = base + i * PG;
        if (i % 64 == 63) {
            /* A page of the file in place of the anonymous one. */
            int kind = (int)(i / 64) % 3;
            int prot = kind == 1 ? PROT_READ | PROT_WRITE : PROT_READ;
            int flags = (kind == 2 ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED;
            off_t off = (off_t)((i / 64) % FILE_PAGES) * PG;
            if (mmap(p, PG, prot, flags, fd, off) == MAP_FAILED) {
                perror("mmap file");
                return 1;
            }
            if (kind == 1)
                memset(p + 100, (int)(i & 0xff), 200);
            continue;
        }
        if (written[i % 8])
            fill(p, i);
        if (mprotect(p, PG, prots[i % 8])) {
            perror("mprotect");
            return 1;
        }
    }
    /* Pairs that touch, the same in every way maps shows, kept apart by their page offsets. */
    for (int k = 0; k < PAIRS; k++) {
        int prot = k % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
        unsigned char *a = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char *b = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                -1, 0);
        if (a == MAP_FAILED || b == MAP_FAILED)
            return 1;
        munmap(a + PG, 2 * PG);
        fill(a, 2000000 + 2 * k);
        fill(b, 2000001 + 2 * k);
        if (mremap(b, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + PG) == MAP_FAILED) {
            perror("mremap");
            return 1;
        }
        b = a + PG;
        mprotect(a, PG, prot);
        mprotect(b, PG, prot);
        pairs[k][0] = a;
        pairs[k][1] = b;
    }
    close(fd);
    signal(SIGUSR1, on_usr1);
    write_sum(argv[2]);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        pause();
        if (asked) {
            asked = 0;
            write_sum(argv[2]);
        }
    }
}
