/* Restore target. usage: restore_count STEPS [FILE]
 * Fills 4 MiB of anonymous memory (mmap) and 256 KiB of heap (malloc, brk) deterministically,
 * then for step = 1..STEPS: mixes every word of both into a running checksum and rewrites the
 * memory from it, prints `step N SUM` (line-buffered), sleeps 10 ms. Ends with `result SUM`.
 * With FILE, maps it privately, writes into its first page and folds its bytes in too.
 * Prints `ready` first. Depends on nothing that changes across a restore (no pid, no time). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BIG (4u << 20)
#define SMALL (256u << 10)

static uint64_t mix(uint64_t *p, size_t words, uint64_t sum) {
    for (size_t i = 0; i < words; i++) {
        sum = sum * 6364136223846793005ULL + p[i] + 1442695040888963407ULL;
        p[i] ^= sum >> 17;
    }
    return sum;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int steps = argc > 1 ? atoi(argv[1]) : 200;
    uint64_t *big = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *small = malloc(SMALL);
    if (big == MAP_FAILED || !small)
        return 2;
    for (size_t i = 0; i < BIG / 8; i++)
        big[i] = i * 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < SMALL / 8; i++)
        small[i] = i ^ 0x5555aaaa5555aaaaULL;
    uint8_t *file = NULL;
    size_t flen = 0;
    if (argc > 2) {
        int fd = open(argv[2], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
            return 3;
        flen = (size_t)st.st_size;
        file = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (file == MAP_FAILED)
            return 4;
        close(fd);
        file[0] ^= 0x5a;
    }
    printf("ready\n");
    uint64_t sum = 1;
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int s = 1; s <= steps; s++) {
        sum = mix(big, BIG / 8, sum);
        sum = mix(small, SMALL / 8, sum);
        for (size_t i = 0; i < flen; i++)
            sum = sum * 31 + file[i];
        printf("step %d %016llx\n", s, (unsigned long long)sum);
        nanosleep(&ts, NULL);
    }
    printf("result %016llx\n", (unsigned long long)sum);
    return 0;
}
