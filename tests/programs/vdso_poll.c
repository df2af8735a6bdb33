/* A target for the core-through-the-vDSO test: it polls clock_gettime, which runs inside the
 * vDSO, so a checkpoint most likely stops it there. Prints `ready`. */
#include <stdio.h>
#include <time.h>

volatile long polls;

__attribute__((noinline)) void poll_clock(void) {
    struct timespec ts;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        polls++;
    }
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    fflush(stdout);
    poll_clock();
    return 0;
}
