/* A task of N MiB of private memory (every page written) with a one-page shared anonymous
 * mapping, for the twin's downtime with shared memory: prints "ready", then on each line of
 * stdin writes the line's first byte into the shared page and prints "poked"; at end of input
 * prints a checksum of the private memory and the shared page's first bytes.
 *
 *   twinshared MIB */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    size_t len = mib << 20;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || s == MAP_FAILED)
        return perror("mmap"), 1;
    for (size_t i = 0; i < len; i += 4096)
        p[i] = (unsigned char)(i >> 12) | 1;
    strcpy(s, "shared-at-start");
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        s[0] = line[0];
        printf("poked\n");
    }
    unsigned long sum = 0;
    for (size_t i = 0; i < len; i += 4096)
        sum = sum * 31 + p[i];
    printf("sum %lx shared %.15s\n", sum, s);
    return 0;
}
