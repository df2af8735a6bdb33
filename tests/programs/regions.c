/* Test target for cr-dump: sets up memory regions of every kind the capture must handle,
 * prints them as `region NAME ADDR LEN` lines, then `ready`, then waits (sleeping in a loop).
 *
 * usage: regions FILE [BIG_MIB]
 *   FILE     a scratch file path: created, filled, and mapped MAP_PRIVATE (some pages written)
 *   BIG_MIB  size of the big anonymous pattern mapping (default 32)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PS 4096
#define DEPTH 300

static void fill(unsigned char *p, size_t len, uint64_t seed) {
    uint64_t *w = (uint64_t *)p;
    for (size_t i = 0; i < len / 8; i++)
        w[i] = (seed * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)(uintptr_t)&w[i]) ^ (i * 31 + 1);
}

static void region(const char *name, void *addr, size_t len) {
    printf("region %s %lx %lx\n", name, (unsigned long)(uintptr_t)addr, (unsigned long)len);
}

static void *map(size_t len, int prot) {
    void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static volatile unsigned long sink;
static unsigned char *stack_top;

static void wait_forever(void) {
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        usleep(10000);
        sink++;
    }
}

static void recurse(int depth) {
    unsigned char frame[512];
    fill(frame, sizeof frame, (uint64_t)depth);
    if (depth == 0)
        stack_top = frame + sizeof frame;
    if (depth == DEPTH) {
        /* The frames above this one stay as they are while we wait: report whole pages of them,
         * leaving a margin below for the frames still in use. */
        uintptr_t lo = ((uintptr_t)frame + 16 * 512 + PS - 1) & ~(uintptr_t)(PS - 1);
        uintptr_t hi = (uintptr_t)stack_top & ~(uintptr_t)(PS - 1);
        region("stack", (void *)lo, hi - lo);
        wait_forever();
    }
    recurse(depth + 1);
    sink += frame[depth % 512];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: regions FILE [BIG_MIB]\n");
        return 2;
    }
    size_t big_mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 32;
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Heap: brk memory with a pattern. */
    size_t heap_len = 64 * 1024;
    unsigned char *heap = malloc(heap_len);
    fill(heap, heap_len, 1);
    region("heap", heap, heap_len);

    /* A large anonymous mapping, every page written with a pattern. */
    size_t big = big_mib << 20;
    unsigned char *b = map(big, PROT_READ | PROT_WRITE);
    fill(b, big, 2);
    region("big", b, big);

    /* Written, then made read-only. */
    unsigned char *ro = map(16 * PS, PROT_READ | PROT_WRITE);
    fill(ro, 16 * PS, 3);
    mprotect(ro, 16 * PS, PROT_READ);
    region("readonly", ro, 16 * PS);

    /* A private file mapping: pages 0 and 3 written (copied on write), 1 and 2 only read,
     * the rest untouched. */
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    unsigned char *fbuf = malloc(8 * PS);
    fill(fbuf, 8 * PS, 4);
    if (write(fd, fbuf, 8 * PS) != 8 * PS) {
        perror("write");
        return 1;
    }
    unsigned char *fm = mmap(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (fm == MAP_FAILED) {
        perror("mmap file");
        return 1;
    }
    memset(fm, 0x5a, 100);
    fill(fm + 3 * PS, PS, 5);
    sink += fm[PS] + fm[2 * PS + 7];
    region("file", fm, 8 * PS);

    /* Never touched. */
    unsigned char *untouched = map(256 * PS, PROT_READ | PROT_WRITE);
    region("untouched", untouched, 256 * PS);

    /* Written with zeros (present, all zero), then read-only-faulted pages (zero page). */
    unsigned char *zeros = map(32 * PS, PROT_READ | PROT_WRITE);
    memset(zeros, 0, 16 * PS);
    for (int i = 16; i < 32; i++)
        sink += zeros[i * PS];
    region("zeros", zeros, 32 * PS);

    /* A mix: data, zero, untouched pages in one mapping. */
    unsigned char *mix = map(12 * PS, PROT_READ | PROT_WRITE);
    for (int i = 0; i < 12; i++) {
        if (i % 3 == 0)
            fill(mix + i * PS, PS, 100 + i);
        else if (i % 3 == 1)
            memset(mix + i * PS, 0, PS);
    }
    region("mix", mix, 12 * PS);

    /* Many small mappings with different protections (including PROT_NONE over data). */
    static const int prots[] = {PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, PROT_NONE};
    for (int i = 0; i < 48; i++) {
        size_t len = (size_t)(1 + i % 3) * PS;
        unsigned char *m = map(len, PROT_READ | PROT_WRITE);
        fill(m, len, 1000 + i);
        mprotect(m, len, prots[i % 4]);
        char name[32];
        snprintf(name, sizeof name, "small%d", i);
        region(name, m, len);
    }

    /* A deep stack. */
    recurse(0);
    return 0;
}
