/* Benchmark and test target with many mappings (cr-dump/benches/many_maps.py, issue 14): maps N
 * one-page anonymous mappings side by side, writes a distinct pattern to every page, then makes
 * every other page read-only, so the kernel keeps N mappings apart. It writes to DIR/sum.PID
 * "CHECKSUM MAPPINGS": a checksum of all those pages (with their protections) and the number of
 * lines of /proc/self/maps; on SIGUSR1 (in a restored copy) it writes them again, to the file of
 * its own pid. Its descriptors are only 0-2 (the bench gives it /dev/null).
 * usage: many_maps N DIR */
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

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static unsigned char *base;
static size_t n;

static long count_maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    long lines = 0;
    int c;
    while ((c = getc(f)) != EOF)
        lines += c == '\n';
    fclose(f);
    return lines;
}

/* Every word of every page, in order, and whether each page still has the protection it was
 * given (a read-only page that became writable would not show in the sum otherwise). */
static uint64_t sum(void) {
    uint64_t s = 0;
    const uint64_t *w = (const uint64_t *)base;
    for (size_t i = 0; i < n * PG / 8; i++)
        s = (s ^ w[i]) * 0x100000001b3ULL;
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3 && a >= (uintptr_t)base &&
            b <= (uintptr_t)base + n * PG)
            s = (s ^ a ^ (b << 1) ^ (uint64_t)(perms[1] == 'w')) * 0x100000001b3ULL;
    }
    if (f)
        fclose(f);
    return s;
}

static void write_sum(const char *dir) {
    char path[4096], tmp[4200], line[64];
    snprintf(path, sizeof path, "%s/sum.%d", dir, (int)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int len = snprintf(line, sizeof line, "%016llx %ld\n", (unsigned long long)sum(),
                       count_maps());
    if (write(fd, line, len) == len)
        rename(tmp, path);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    n = strtoul(argv[1], NULL, 0);
    base = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint64_t *w = (uint64_t *)base;
    for (size_t i = 0; i < n * PG / 8; i++)
        w[i] = (i * 0x9e3779b97f4a7c15ULL) | 1;
    for (size_t i = 1; i < n; i += 2)
        if (mprotect(base + i * PG, PG, PROT_READ)) {
            perror("mprotect");
            return 1;
        }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, none;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &none); /* no signal lost between the check and the wait */
    sigdelset(&none, SIGUSR1);
    write_sum(argv[2]);
    for (;;) {
        sigsuspend(&none);
        if (asked) {
            asked = 0;
            write_sum(argv[2]);
        }
    }
}
