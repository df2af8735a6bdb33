/* A target for the core-file test: it spins inside a known function with a known local and
 * known globals, so gdb's `bt` and `print` on the core can be checked. Prints `ready`. */
#include <stdio.h>

volatile long global_counter = 12345;
int global_answer = 42;
static volatile int stop;

__attribute__((noinline)) void inner_loop(int marker) {
    volatile int local_value = 777 + marker;
    printf("ready\n");
    fflush(stdout);
    while (!stop)
        global_counter++;
    (void)local_value;
}

__attribute__((noinline)) void outer(void) { inner_loop(1); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    outer();
    return 0;
}
