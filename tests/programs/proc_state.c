/* Task state besides memory, for checkpoint/restore tests. usage: proc_state MODE
 * Each mode sets up some state, prints `ready`, waits about 1.5 s (a loop of 10 ms sleeps;
 * the test checkpoints and kills it in this window, then restores it), and prints what it
 * sees afterwards. Nothing printed depends on a pid or on the time, so a restored run prints
 * exactly what an uninterrupted one does.
 *   signals: SA_SIGINFO handlers on an alternate stack; SIGUSR2 queued (value 42) while
 *            blocked; SIGWINCH sent by kill (SI_USER) while blocked; SIGCHLD of an exited
 *            child pending while blocked; then SIGUSR1 sent (value 7), SIGUSR2 and SIGWINCH
 *            unblocked, the SIGCHLD taken with sigtimedwait.
 *   timers:  an interval timer (SIGALRM every 20 ms) and a POSIX timer (CLOCK_MONOTONIC,
 *            SIGRTMIN, value 99, first expiry 1.2 s after the start); counts ticks.
 *   limits:  rlimits, supplementary groups (root only), subreaper, timer slack, THP disabled,
 *            oom_score_adj, dumpable, rseq registration.
 *   creds:   prints its uids, gids, groups and capabilities. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, rt_fired, rt_value;
static char altstack[1 << 16];

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void wait_window(void) {
    for (int i = 0; i < 150; i++)
        sleep_ms(10);
}

static void on_usr(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    stack_t ss;
    sigaltstack(NULL, &ss);
    char b[160];
    int n = snprintf(b, sizeof b, "handler sig %d code %d value %d onstack %d\n", sig,
                     si->si_code, si->si_value.sival_int, (ss.ss_flags & SS_ONSTACK) != 0);
    write(1, b, n);
}

static int signals(void) {
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    if (sigaltstack(&ss, NULL))
        return 2;
    struct sigaction sa = {0};
    sa.sa_sigaction = on_usr;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGWINCH);
    sigprocmask(SIG_BLOCK, &block, NULL);
    sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 42});
    kill(getpid(), SIGWINCH); /* SI_USER */
    pid_t c = fork();
    if (c == 0)
        _exit(7);
    /* Wait until the child is a zombie (its SIGCHLD pending) without reaping it. */
    siginfo_t w;
    waitid(P_PID, c, &w, WEXITED | WNOWAIT);
    printf("ready\n");
    wait_window();
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    printf("usr1 flags %#x mask-hup %d pipe ignored %d\n",
           now.sa_flags & (SA_SIGINFO | SA_ONSTACK | SA_RESTART), sigismember(&now.sa_mask, SIGHUP),
           (void *)signal(SIGPIPE, SIG_IGN) == (void *)SIG_IGN);
    sigset_t pend;
    sigpending(&pend);
    printf("pending usr2 %d chld %d\n", sigismember(&pend, SIGUSR2), sigismember(&pend, SIGCHLD));
    sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 7});
    sigset_t u2;
    sigemptyset(&u2);
    sigaddset(&u2, SIGUSR2);
    sigaddset(&u2, SIGWINCH);
    sigprocmask(SIG_UNBLOCK, &u2, NULL);
    sigset_t ch;
    sigemptyset(&ch);
    sigaddset(&ch, SIGCHLD);
    siginfo_t si;
    struct timespec zero = {0, 0};
    if (sigtimedwait(&ch, &si, &zero) == SIGCHLD)
        printf("sigchld code %d status %d from child %d\n", si.si_code, si.si_status,
               si.si_pid == c);
    else
        printf("no sigchld pending\n");
    printf("done\n");
    return 0;
}

static void on_alarm(int sig) {
    (void)sig;
    ticks++;
}

static void on_rt(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    rt_fired++;
    rt_value = si->si_value.sival_int;
}

static int timers(void) {
    signal(SIGALRM, on_alarm);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN, &sa, NULL);
    struct sigevent sev = {0};
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN;
    sev.sigev_value.sival_int = 99;
    timer_t spare, t;
    /* Two timers, the first deleted: the one kept does not have the first id. */
    if (timer_create(CLOCK_MONOTONIC, &sev, &spare) || timer_create(CLOCK_MONOTONIC, &sev, &t))
        return 2;
    timer_delete(spare);
    struct itimerspec its = {.it_value = {1, 200000000}};
    timer_settime(t, 0, &its, NULL);
    struct itimerval itv = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &itv, NULL);
    printf("ready\n");
    while (ticks < 100)
        pause();
    struct itimerval left;
    getitimer(ITIMER_REAL, &left);
    printf("ticks >= 100, interval %ld us\n", (long)left.it_interval.tv_usec);
    while (!rt_fired)
        pause();
    printf("posix timer %ld fired value %d\n", (long)(intptr_t)t, (int)rt_value);
    struct itimerspec now;
    timer_gettime(t, &now);
    printf("posix timer disarmed %d\n", now.it_value.tv_sec == 0 && now.it_value.tv_nsec == 0);
    printf("done\n");
    return 0;
}

static const int res[] = {RLIMIT_NOFILE, RLIMIT_CORE, RLIMIT_STACK, RLIMIT_NPROC, RLIMIT_MSGQUEUE};

static int rseq_registered(void) {
    /* Registering the area glibc registered again: EBUSY if it is registered, else EINVAL
     * (another area) or success. */
    extern const ptrdiff_t __rseq_offset __attribute__((weak));
    extern const unsigned int __rseq_size __attribute__((weak));
    if (!&__rseq_size || __rseq_size == 0)
        return -1;
    char *tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    long r = syscall(SYS_rseq, tp + __rseq_offset, 32, 0, 0x53053053);
    return r == -1 && errno == EBUSY;
}

static int limits(void) {
    for (unsigned i = 0; i < sizeof res / sizeof *res; i++) {
        struct rlimit r;
        getrlimit(res[i], &r);
        r.rlim_cur = r.rlim_cur > 100 + i ? 100 + i : r.rlim_cur;
        r.rlim_max = r.rlim_max > 4000 + i ? 4000 + i : r.rlim_max;
        if (res[i] == RLIMIT_STACK) {
            r.rlim_cur = 4 << 20;
            r.rlim_max = RLIM_INFINITY;
        }
        if (setrlimit(res[i], &r))
            return 2;
    }
    if (geteuid() == 0) {
        gid_t g[] = {4, 24, 27, 1234};
        if (setgroups(4, g))
            return 3;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_TIMERSLACK, 123456);
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 0);
    FILE *f = fopen("/proc/self/oom_score_adj", "w");
    if (f) {
        fputs("567", f);
        fclose(f);
    }
    printf("ready\n");
    wait_window();
    for (unsigned i = 0; i < sizeof res / sizeof *res; i++) {
        struct rlimit r;
        getrlimit(res[i], &r);
        printf("rlimit %d %llu %llu\n", res[i], (unsigned long long)r.rlim_cur,
               (unsigned long long)r.rlim_max);
    }
    gid_t g[64];
    int n = getgroups(64, g);
    printf("groups");
    for (int i = 0; i < n; i++)
        printf(" %u", g[i]);
    int sub = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &sub);
    printf("\nsubreaper %d slack %d thp-disabled %d dumpable %d\n", sub,
           prctl(PR_GET_TIMERSLACK), prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0),
           prctl(PR_GET_DUMPABLE));
    char adj[16] = "";
    f = fopen("/proc/self/oom_score_adj", "r");
    if (f) {
        fgets(adj, sizeof adj, f);
        fclose(f);
    }
    printf("oom_score_adj %s", adj);
    printf("rseq registered %d\n", rseq_registered());
    printf("done\n");
    return 0;
}

static int creds(void) {
    printf("ready\n");
    wait_window();
    uid_t r, e, s;
    gid_t gr, ge, gs;
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    printf("uid %u %u %u gid %u %u %u\n", r, e, s, gr, ge, gs);
    gid_t g[64];
    int n = getgroups(64, g);
    printf("groups %d\n", n);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10))
            fputs(line, stdout);
    if (f)
        fclose(f);
    printf("done\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *m = argc > 1 ? argv[1] : "";
    if (!strcmp(m, "signals"))
        return signals();
    if (!strcmp(m, "timers"))
        return timers();
    if (!strcmp(m, "limits"))
        return limits();
    if (!strcmp(m, "creds"))
        return creds();
    fprintf(stderr, "usage: proc_state signals|timers|limits|creds\n");
    return 2;
}
