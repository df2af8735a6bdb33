/* Small targets for the refusal tests of cr-dump.
 *
 * usage: misc MODE
 *   spin     loop forever (sleeping)
 *   threads  start a second thread, then loop
 *   shared   map anonymous shared writable memory that a child process also maps, then loop
 *   zombie   fork a child that exits at once and is never reaped; print `child PID`, loop
 * Prints `ready` once set up.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static void *thread_main(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "spin";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "threads") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, thread_main, NULL);
    } else if (strcmp(mode, "shared") == 0) {
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 1;
        p[0] = 1;
        /* The child keeps the mapping (and dies with us). */
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;)
                pause();
        }
    } else if (strcmp(mode, "zombie") == 0) {
        pid_t c = fork();
        if (c == 0)
            _exit(0);
        printf("child %d\n", (int)c);
        usleep(100000);
    }
    printf("ready\n");
    for (;;)
        usleep(10000);
}
