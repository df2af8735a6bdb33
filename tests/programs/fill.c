/* Benchmark target: maps MIB mebibytes of anonymous memory, writes non-zero data to every page,
 * prints `region big ADDR LEN` and `ready`, then waits.  usage: fill MIB */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 1024;
    size_t len = mib << 20;
    uint64_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < len / 8; i++)
        p[i] = (i * 0x9e3779b97f4a7c15ULL) | 1;
    printf("region big %lx %lx\nready\n", (unsigned long)(uintptr_t)p, (unsigned long)len);
    fflush(stdout);
    for (;;)
        sleep(1);
}
