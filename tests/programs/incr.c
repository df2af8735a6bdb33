/* Incremental-checkpoint target. usage: incr PAGES
 * Maps region `big` of PAGES anonymous pages, each filled from (page, generation); prints
 * `region big ADDR LEN` and `ready`. Then reads commands on stdin, one per line, and answers
 * each with any `region NAME ADDR LEN` lines it creates and `ready`:
 *   rewrite N GEN    rewrite pages 0, s, 2s, ... (N of them, s = PAGES / N) of `big` with GEN
 *   map NAME PAGES   map a new anonymous region, filled
 *   unmap NAME       unmap it
 *   grow NAME PAGES  make PAGES more of its reservation writable (one VMA, grown), filled
 *   shrink NAME PAGES unmap its last PAGES pages
 *   move NAME        mremap it elsewhere (same contents, new address)
 *   remap NAME       unmap it and map it again at the same address, filled differently
 *   drop NAME PAGES  MADV_DONTNEED its first PAGES pages (they read as zero again)
 *   touch NAME PAGES read its first PAGES pages
 *   churn MS SLEEP   for MS ms: rewrite a different 1% of `big`, sleep SLEEP ms, again
 *   creep NAME MS    grow NAME by one page (not written) every MS ms until its reservation
 *                    is full
 *   bench N          write a word of every page of `big` N times, print `took NANOSECONDS`
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PS 4096
#define MAXR 16

struct reg {
    char name[32];
    uint8_t *p;
    size_t pages;
};
static struct reg regs[MAXR];

static void fill_page(uint8_t *pg, uint64_t tag, uint64_t gen) {
    uint64_t *q = (uint64_t *)pg;
    for (int i = 0; i < PS / 8; i++)
        q[i] = (tag * 0x9e3779b97f4a7c15ULL) ^ (gen << 32) ^ (uint64_t)i ^ 0x5555;
}

static void fill(uint8_t *p, size_t pages, uint64_t salt, uint64_t gen) {
    for (size_t i = 0; i < pages; i++)
        fill_page(p + i * PS, salt + i, gen);
}

static struct reg *find(const char *n) {
    for (int i = 0; i < MAXR; i++)
        if (regs[i].p && strcmp(regs[i].name, n) == 0)
            return &regs[i];
    return NULL;
}

static struct reg *add(const char *n) {
    for (int i = 0; i < MAXR; i++)
        if (!regs[i].p) {
            snprintf(regs[i].name, sizeof regs[i].name, "%s", n);
            return &regs[i];
        }
    return NULL;
}

static void report(struct reg *r) {
    printf("region %s %lx %lx\n", r->name, (unsigned long)(uintptr_t)r->p,
           (unsigned long)(r->pages * PS));
}

/* Each region sits in its own reservation (PROT_NONE) with room to grow, so that regions never
 * merge with their neighbours. */
#define RESERVE 64
static uint8_t *anon(size_t pages) {
    uint8_t *p = mmap(NULL, (pages + 2 + RESERVE) * PS, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    if (mprotect(p + PS, pages * PS, PROT_READ | PROT_WRITE)) {
        perror("mprotect");
        exit(1);
    }
    return p + PS;
}

int main(int argc, char **argv) {
    size_t pages = argc > 1 ? strtoul(argv[1], NULL, 0) : 2000;
    struct reg *big = add("big");
    big->p = anon(pages);
    big->pages = pages;
    fill(big->p, pages, 1000000, 0);
    report(big);
    printf("ready\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = "", name[32] = "";
        unsigned long a = 0, b = 0;
        int n = sscanf(line, "%31s %31s %lu", cmd, name, &a);
        if (n < 1)
            continue;
        if (strcmp(cmd, "rewrite") == 0) {
            unsigned long cnt = strtoul(name, NULL, 0);
            sscanf(line, "%*s %*s %lu", &b);
            size_t step = cnt ? pages / cnt : pages;
            for (unsigned long i = 0; i < cnt; i++)
                fill_page(big->p + (i * step) * PS, 1000000 + i * step, b);
        } else if (strcmp(cmd, "map") == 0) {
            struct reg *r = add(name);
            r->p = anon(a);
            r->pages = a;
            fill(r->p, a, (uintptr_t)r->p / PS, 7);
            report(r);
        } else if (strcmp(cmd, "unmap") == 0) {
            struct reg *r = find(name);
            munmap(r->p, r->pages * PS);
            r->p = NULL;
        } else if (strcmp(cmd, "grow") == 0) {
            struct reg *r = find(name);
            uint8_t *end = r->p + r->pages * PS;
            if (a > RESERVE || mprotect(end, a * PS, PROT_READ | PROT_WRITE)) {
                fprintf(stderr, "grow: cannot grow %s\n", name);
                exit(1);
            }
            fill(end, a, 555, 9);
            r->pages += a;
            report(r);
        } else if (strcmp(cmd, "shrink") == 0) {
            struct reg *r = find(name);
            r->pages -= a;
            munmap(r->p + r->pages * PS, a * PS);
            report(r);
        } else if (strcmp(cmd, "move") == 0) {
            struct reg *r = find(name);
            size_t len = r->pages * PS;
            /* A free place away from the old one. */
            uint8_t *dst = anon(r->pages + 64);
            munmap(dst, (r->pages + 64) * PS);
            dst += 32 * PS;
            void *q = mremap(r->p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
            if (q == MAP_FAILED) {
                perror("mremap");
                exit(1);
            }
            r->p = q;
            report(r);
        } else if (strcmp(cmd, "remap") == 0) {
            struct reg *r = find(name);
            void *q = mmap(r->p, r->pages * PS, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (q != r->p) {
                perror("mmap fixed");
                exit(1);
            }
            /* Only every other page written: the rest reads zero again. */
            for (size_t i = 0; i < r->pages; i += 2)
                fill_page(r->p + i * PS, 777 + i, 11);
            report(r);
        } else if (strcmp(cmd, "bench") == 0) {
            /* Write one word of every page of `big` NAME times; print the time taken. */
            unsigned long rounds = strtoul(name, NULL, 0);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            for (unsigned long k = 0; k < rounds; k++)
                for (size_t i = 0; i < pages; i++)
                    ((volatile uint64_t *)(big->p + i * PS))[1] += 1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            printf("took %ld\n", (long)((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec)));
        } else if (strcmp(cmd, "churn") == 0) {
            /* For NAME milliseconds: rewrite 1% of `big` (a different 1% each time, new
             * contents), then sleep A milliseconds; again. */
            unsigned long ms = strtoul(name, NULL, 0);
            struct timespec t0, t;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            uint64_t g = 1000;
            size_t off = 0;
            for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= (long)ms)
                    break;
                for (size_t i = off; i < pages; i += 100)
                    fill_page(big->p + i * PS, 1000000 + i, g);
                off = (off + 1) % 100;
                g++;
                struct timespec d = {0, (long)a * 1000000L};
                nanosleep(&d, NULL);
            }
        } else if (strcmp(cmd, "creep") == 0) {
            /* Mappings made next to a mapping, one page at a time, while a checkpoint runs;
             * not written, so that they have no anon_vma of their own and the kernel merges
             * them with NAME once both are registered with a userfaultfd. */
            struct reg *r = find(name);
            for (int i = 0; i < RESERVE; i++) {
                uint8_t *end = r->p + r->pages * PS;
                if (mprotect(end, PS, PROT_READ | PROT_WRITE)) {
                    perror("creep: mprotect");
                    exit(1);
                }
                r->pages++;
                struct timespec d = {0, (long)a * 1000000L};
                nanosleep(&d, NULL);
            }
            report(r);
        } else if (strcmp(cmd, "touch") == 0) {
            struct reg *r = find(name);
            volatile uint8_t sum = 0;
            for (unsigned long i = 0; i < a; i++)
                sum += r->p[i * PS];
            (void)sum;
        } else if (strcmp(cmd, "drop") == 0) {
            struct reg *r = find(name);
            madvise(r->p, a * PS, MADV_DONTNEED);
        } else {
            fprintf(stderr, "unknown command %s\n", cmd);
        }
        printf("ready\n");
        fflush(stdout);
    }
    return 0;
}
