/* Memory kinds for the memkinds tests of cr-dump: shared anonymous memory (one object in
 * several VMAs too), madvise flags and locks, kept across a checkpoint and restore.
 *
 * usage: memkinds [VMAS [twin]]
 *   Sets up, prints `ready`, then reads commands from stdin:
 *     maps  prints /proc/self/maps, then `end`
 *     poke  writes to the shared memory, then prints `poked`
 *     go    checks every kind, printing one line each, then `done`, and exits
 *   With VMAS, also makes that many one-page mappings that the kernel keeps apart though they
 *   touch (every other one moved into place by mremap, so its page offset does not follow
 *   its neighbour's). With `twin`, no MADV_DONTFORK or MADV_WIPEONFORK is set (either keeps
 *   cr-dump from making a copy-on-write twin).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096

static unsigned char *shared_a, *shared_b, *shared_c, *zero_priv;
static unsigned char *dontfork, *wipe, *locked, *lockedf;

static unsigned sum(const unsigned char *p, size_t n) {
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *map(size_t len, int prot, int flags, int fd) {
    void *p = mmap(NULL, len, prot, flags, fd, 0);
    if (p == MAP_FAILED)
        die("mmap");
    return p;
}

/* Runs `f` in a child; returns its wait status. */
static int in_child(void (*f)(void)) {
    fflush(stdout);
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(c, &st, 0);
    return st;
}

static void write_shared(void) {
    shared_a[0] = 0x55;
    shared_b[2 * PG + 1] = 0x66;
}
static void touch_dontfork(void) { _exit(dontfork[0] == 0x77 ? 3 : 4); }
static void read_wipe(void) { _exit(wipe[5]); }
static void fill_page3(void) {
    memset(shared_a + 3 * PG, 0x3c, PG);
    memset(shared_c, 0x5a, PG);
}

static void setup_apart(long n) {
    /* A reserved stretch: mappings placed inside it one by one. */
    unsigned char *base = map((size_t)n * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    for (long i = 0; i < n; i++) {
        unsigned char *at = base + i * PG;
        if (i % 2 == 0) {
            if (mmap(at, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0) == MAP_FAILED)
                die("mmap fixed");
        } else {
            unsigned char *t = map(PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
            t[0] = (unsigned char)i;
            if (mremap(t, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, at) == MAP_FAILED)
                die("mremap");
        }
        at[1] = (unsigned char)(i * 7);
    }
}

static long vmlck(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void go(void) {
    printf("shared a %08x b %08x c %08x\n", sum(shared_a, 4 * PG), sum(shared_b, 3 * PG),
           sum(shared_c, PG));
    int st = in_child(write_shared);
    printf("child wrote shared: status %d, a[0] %02x b %02x\n", st, shared_a[0],
           shared_b[2 * PG + 1]);
    st = in_child(touch_dontfork);
    printf("dontfork child: %s %d\n", WIFSIGNALED(st) ? "signal" : "exit",
           WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    st = in_child(read_wipe);
    printf("wipeonfork: parent %d child %d\n", wipe[5], WEXITSTATUS(st));
    printf("locked %02x %02x VmLck %ld kB\n", locked[0], lockedf[0], vmlck());
    printf("private /dev/zero %08x\n", sum(zero_priv, 3 * PG));
    printf("done\n");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    shared_a = map(4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
    /* Written only by a child: none of its pages are in our page tables. */
    shared_c = map(PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
    for (int i = 0; i < 2 * PG; i++)
        shared_a[i] = (unsigned char)(i * 13 + 1);
    /* Page 3 written only by a child that exits: not in our page tables. Page 2: a hole. */
    if (in_child(fill_page3) != 0)
        die("child");
    int z = open("/dev/zero", O_RDWR);
    if (z < 0)
        die("/dev/zero");
    shared_b = map(3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, z);
    /* Private memory from /dev/zero: anonymous, named after the device in maps. */
    zero_priv = map(3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, z);
    zero_priv[5] = 9;
    zero_priv[2 * PG] = 7;
    close(z);
    for (int i = 0; i < 3 * PG; i++)
        shared_b[i] = (unsigned char)(i * 7 + 3);
    /* One object in three VMAs: offsets 0, 1 and 2 pages. */
    if (mprotect(shared_b + PG, PG, PROT_READ) != 0)
        die("mprotect");
    /* Out of our page tables, still in the objects. */
    if (madvise(shared_a, 4 * PG, MADV_DONTNEED) != 0 || madvise(shared_b, 3 * PG, MADV_DONTNEED))
        die("MADV_DONTNEED");
    dontfork = map(PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    dontfork[0] = 0x77;
    int twin = argc > 2 && strcmp(argv[2], "twin") == 0;
    if (!twin && madvise(dontfork, PG, MADV_DONTFORK) != 0)
        die("MADV_DONTFORK");
    wipe = map(PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    wipe[5] = 42;
    if (!twin && madvise(wipe, PG, MADV_WIPEONFORK) != 0)
        die("MADV_WIPEONFORK");
    locked = map(4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    locked[0] = 0x11;
    if (mlock(locked, 4 * PG) != 0)
        die("mlock");
    lockedf = map(2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    lockedf[0] = 0x22;
    if (mlock2(lockedf, 2 * PG, MLOCK_ONFAULT) != 0)
        die("mlock2");
    if (argc > 1)
        setup_apart(atol(argv[1]));
    printf("ready\n");
    char cmd[64];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strncmp(cmd, "maps", 4) == 0) {
            FILE *f = fopen("/proc/self/maps", "r");
            char line[512];
            while (f && fgets(line, sizeof line, f))
                fputs(line, stdout);
            if (f)
                fclose(f);
            printf("end\n");
        } else if (strncmp(cmd, "poke", 4) == 0) {
            shared_a[1] = 0x99;
            shared_b[0] = 0x98;
            shared_c[0] = 0x97;
            printf("poked\n");
        } else if (strncmp(cmd, "go", 2) == 0) {
            go();
            return 0;
        }
    }
    return 1;
}
