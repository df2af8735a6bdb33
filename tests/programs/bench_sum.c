/* Benchmark target for cr-dump/benches/vs_criu.py: maps MIB mebibytes of anonymous memory and
 * writes non-zero data to every page, then writes a checksum of it to DIR/sum.PID; on SIGUSR1
 * (in a restored copy) it writes the checksum again, to DIR/sum.PID of its own pid.  Its
 * descriptors are only 0-2 (the bench gives it /dev/null) so that both tools restore it alike.
 * usage: bench_sum MIB DIR */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static uint64_t *p;
static size_t words;

static void write_sum(const char *dir) {
    uint64_t s = 0;
    for (size_t i = 0; i < words; i++)
        s = (s ^ p[i]) * 0x100000001b3ULL; /* every word, in order */
    char path[4096], tmp[4200], line[64];
    snprintf(path, sizeof path, "%s/sum.%d", dir, (int)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int n = snprintf(line, sizeof line, "%016llx\n", (unsigned long long)s);
    if (write(fd, line, n) == n)
        rename(tmp, path);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    size_t len = strtoul(argv[1], NULL, 0) << 20;
    words = len / 8;
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < words; i++)
        p[i] = (i * 0x9e3779b97f4a7c15ULL) | 1;
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
