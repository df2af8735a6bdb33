/* Copy-on-write snapshot target. usage: sweep PAGES [dontfork|wipeonfork]
 * Maps region `big` of PAGES anonymous pages and writes generation 1 to all of them (word 0 of
 * each page holds the generation, word 1 the page index); prints `region big ADDR LEN` and
 * `ready`. Then sweeps forever, generation after generation, page by page: at any instant
 * pages [0, k) hold generation G+1 and pages [k, PAGES) generation G. With `dontfork` or
 * `wipeonfork`, that madvise is applied to `big` first.
 * On SIGUSR1 it prints `sigchld N wait R ERRNO` (SIGCHLDs received; waitpid(-1, WNOHANG|__WALL)
 * and its errno) and exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PS 4096
static volatile sig_atomic_t chld, usr1;
static void on_chld(int s) { (void)s; chld++; }
static void on_usr1(int s) { (void)s; usr1 = 1; }

int main(int argc, char **argv) {
    size_t pages = argc > 1 ? strtoul(argv[1], NULL, 0) : 4096;
    uint64_t *p = mmap(NULL, pages * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    if (argc > 2) {
        int adv = strcmp(argv[2], "dontfork") == 0 ? MADV_DONTFORK : MADV_WIPEONFORK;
        if (madvise(p, pages * PS, adv)) {
            perror("madvise");
            return 1;
        }
    }
    signal(SIGCHLD, on_chld);
    signal(SIGUSR1, on_usr1);
    uint64_t g = 1;
    for (size_t i = 0; i < pages; i++) {
        p[i * (PS / 8)] = g;
        p[i * (PS / 8) + 1] = i;
    }
    printf("region big %lx %lx\nready\n", (unsigned long)(uintptr_t)p, (unsigned long)(pages * PS));
    fflush(stdout);
    while (!usr1) {
        g++;
        for (size_t i = 0; i < pages; i++)
            ((volatile uint64_t *)p)[i * (PS / 8)] = g;
    }
    errno = 0;
    int r = waitpid(-1, NULL, WNOHANG | __WALL);
    printf("sigchld %d wait %d %d\n", (int)chld, r, errno);
    fflush(stdout);
    return 0;
}
