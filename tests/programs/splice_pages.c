/* Target of the splice write-back tests. usage: splice_pages STEPS [dense]
 * Maps 40 MiB of anonymous memory and fills it page by page with known contents, except: every
 * 7th page is never touched (not stored), every 11th is written then zeroed (present and all
 * zero: a zero run), every 13th is only read (the shared zero page). Then 40 small mappings of
 * 3 pages each, filled, with a one-page gap between them (separate VMAs), and 2 pages filled then
 * made PROT_NONE (read at each step between two mprotect calls). Prints `ready`, then
 * for step = 1..STEPS: rewrites one word in each of 64 pages chosen from the step (leaving the
 * page classes as they are), folds every word of all the memory into a checksum, prints
 * `step N SUM`, sleeps 20 ms. Ends with `result SUM`. Depends on nothing that changes across
 * a restore (no pid, no time). With `dense`, every page of the 40 MiB is filled. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PS 4096u
#define BIG_PAGES (40u * 256u)
#define SMALL_N 40
#define SMALL_PAGES 3u

static int dense;

static int skipped(size_t p) { return !dense && (p % 7 == 0 || p % 11 == 0 || p % 13 == 0); }

static uint64_t fold(const uint64_t *w, size_t n, uint64_t sum) {
    for (size_t i = 0; i < n; i++)
        sum = sum * 6364136223846793005ULL + w[i] + 1442695040888963407ULL;
    return sum;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    dense = argc > 2;
    uint8_t *big = mmap(NULL, (size_t)BIG_PAGES * PS, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *area = mmap(NULL, (size_t)SMALL_N * (SMALL_PAGES + 1) * PS, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big == MAP_FAILED || area == MAP_FAILED)
        return 2;
    volatile uint64_t sink = 0;
    for (size_t p = 0; p < BIG_PAGES; p++) {
        uint64_t *w = (uint64_t *)(big + p * PS);
        if (!skipped(p))
            goto fill;
        if (p % 7 == 0)
            continue;
        if (p % 11 == 0) {
            w[0] = 1;
            w[0] = 0;
            continue;
        }
        if (p % 13 == 0) {
            sink += w[0];
            continue;
        }
    fill:
        for (size_t i = 0; i < PS / 8; i++)
            w[i] = (p << 20) ^ (i * 0x9e3779b97f4a7c15ULL) ^ 0x0101010101010101ULL;
    }
    uint8_t *small[SMALL_N];
    for (int k = 0; k < SMALL_N; k++) {
        /* A gap page between them, unmapped: each its own VMA. */
        small[k] = area + (size_t)k * (SMALL_PAGES + 1) * PS;
        munmap(small[k] + SMALL_PAGES * PS, PS);
        for (size_t i = 0; i < SMALL_PAGES * PS / 8; i++)
            ((uint64_t *)small[k])[i] = (uint64_t)k * 0x1234567ULL + i + 1;
    }
    uint8_t *hidden = mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
    if (hidden == MAP_FAILED)
        return 2;
    for (size_t i = 0; i < 2 * PS / 8; i++)
        ((uint64_t *)hidden)[i] = i * 77 + 5;
    if (mprotect(hidden, 2 * PS, PROT_NONE) != 0)
        return 2;
    printf("ready\n");
    uint64_t sum = 1;
    struct timespec ts = {0, 20 * 1000 * 1000};
    for (int s = 1; s <= steps; s++) {
        for (unsigned j = 0; j < 64; j++) {
            size_t p = ((size_t)s * 7919u + j * 104729u) % BIG_PAGES;
            if (skipped(p))
                continue;
            uint64_t *w = (uint64_t *)(big + p * PS);
            w[(s + j) % (PS / 8)] += (uint64_t)s * 31u + j + 1;
        }
        ((uint64_t *)small[s % SMALL_N])[s % 100] += (uint64_t)s;
        sum = fold((const uint64_t *)big, (size_t)BIG_PAGES * PS / 8, sum);
        for (int k = 0; k < SMALL_N; k++)
            sum = fold((const uint64_t *)small[k], SMALL_PAGES * PS / 8, sum);
        if (mprotect(hidden, 2 * PS, PROT_READ) != 0)
            return 2;
        sum = fold((const uint64_t *)hidden, 2 * PS / 8, sum);
        if (mprotect(hidden, 2 * PS, PROT_NONE) != 0)
            return 2;
        printf("step %d %016llx\n", s, (unsigned long long)sum);
        nanosleep(&ts, NULL);
    }
    printf("result %016llx\n", (unsigned long long)sum);
    return (int)(sink & 0);
}
