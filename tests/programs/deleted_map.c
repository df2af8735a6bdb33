/* A private mapping of a file deleted since (written to once, so one page is the task's own
 * copy), and a read-only one of the same file at an offset; for the memkinds tests.
 *
 * usage: deleted_map PATH
 *   Creates PATH (3 pages and 100 bytes), maps it, deletes it, prints `ready`; on `go` from
 *   stdin prints a checksum of what both mappings show, then exits.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    static char buf[3 * PG + 100];
    for (int i = 0; i < (int)sizeof buf; i++)
        buf[i] = (char)(i * 7 + 1);
    if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
        return 2;
    unsigned char *p = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    unsigned char *q = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, PG);
    if (p == MAP_FAILED || q == MAP_FAILED)
        return 2;
    close(fd);
    unlink(argv[1]);
    p[PG] = 0xee;
    printf("ready\n");
    char cmd[64];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strncmp(cmd, "go", 2) == 0) {
            unsigned s = 0, t = 0;
            for (int i = 0; i < (int)sizeof buf; i++)
                s = s * 31 + p[i];
            for (int i = 0; i < 2 * PG; i++)
                t = t * 31 + q[i];
            printf("sums %08x %08x\n", s, t);
            printf("done\n");
            return 0;
        }
    }
    return 1;
}
