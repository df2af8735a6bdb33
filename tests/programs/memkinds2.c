/* Memfds mapped shared, and mlockall, across a checkpoint.
 *
 *   memkinds2 join    a memfd open as fd 5 and mapped shared twice (offset 0, 3 pages,
 *                     writable; offset 2 pages, 1 page, read-only), sealed against shrinking;
 *                     after the checkpoint, writes through the fd are read through the mapping
 *                     and the other way round (one object), and the name, seals and maps line
 *                     are printed;
 *   memkinds2 maponly a memfd mapped shared whose descriptor is closed: the contents survive;
 *   memkinds2 private a memfd mapped privately (its bytes, one page written by the task, so
 *                     copied on write), its descriptor kept open;
 *   memkinds2 other   a memfd mapped shared by a child too (checkpoint refused, naming it);
 *   memkinds2 sysv    System V shared memory attached (checkpoint refused);
 *   memkinds2 lockall mlockall(MCL_CURRENT|MCL_FUTURE): a mapping made after the checkpoint is
 *                     locked (VmLck grows).
 *
 * Prints "ready" when set up, sleeps 600 ms (the checkpoint comes then), then the results. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static void nap(void) {
    struct timespec ts = {0, 600 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* The line of /proc/self/maps that covers addr, without its range. */
static void maps_name(void *addr, char *out, size_t n) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (unsigned long)addr >= a &&
            (unsigned long)addr < b) {
            char *p = strchr(line, '/');
            snprintf(out, n, "%s", p ? p : "(none)\n");
            break;
        }
    }
    if (f)
        fclose(f);
}

static int join(void) {
    int m = memfd_create("cr-test-shm", MFD_ALLOW_SEALING);
    if (m < 0 || dup2(m, 5) != 5)
        return perror("memfd"), 1;
    close(m);
    int fd = 5;
    if (ftruncate(fd, 3 * PAGE) != 0)
        return perror("ftruncate"), 1;
    char *rw = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *ro = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 2 * PAGE);
    if (rw == MAP_FAILED || ro == MAP_FAILED)
        return perror("mmap"), 1;
    strcpy(rw, "written through the mapping before");
    if (pwrite(fd, "written through the fd before", 29, PAGE) != 29)
        return perror("pwrite"), 1;
    strcpy(rw + 2 * PAGE, "third page");
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0)
        return perror("seal"), 1;
    printf("ready\n");
    fflush(stdout);
    nap();
    printf("before: %s | %.29s | %s\n", rw, rw + PAGE, ro);
    if (pwrite(fd, "fd-after", 8, 100) != 8)
        return perror("pwrite"), 1;
    printf("mapping sees the fd's write: %.8s\n", rw + 100);
    memcpy(rw + 2 * PAGE + 50, "map-after", 9);
    char buf[10] = {0};
    if (pread(fd, buf, 9, 2 * PAGE + 50) != 9)
        return perror("pread"), 1;
    printf("fd sees the mapping's write: %s; read-only view: %.9s\n", buf, ro + 50);
    char link[256] = {0};
    if (readlink("/proc/self/fd/5", link, sizeof link - 1) < 0)
        return perror("readlink"), 1;
    struct stat st;
    fstat(fd, &st);
    printf("fd 5: %s, size %lld, seals %#x\n", link, (long long)st.st_size,
           fcntl(fd, F_GET_SEALS));
    char name[512];
    maps_name(rw, name, sizeof name);
    printf("maps: %s", name);
    maps_name(ro, name, sizeof name);
    printf("maps: %s", name);
    printf("shrink refused: %d\n", ftruncate(fd, PAGE) != 0);
    return 0;
}

static int maponly(void) {
    int fd = memfd_create("cr-test-maponly", 0);
    if (fd < 0 || ftruncate(fd, 2 * PAGE) != 0)
        return perror("memfd"), 1;
    char *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return perror("mmap"), 1;
    close(fd);
    strcpy(p + PAGE + 7, "only mapped");
    printf("ready\n");
    fflush(stdout);
    nap();
    printf("contents: %s, first page zero: %d\n", p + PAGE + 7, p[0] == 0 && p[PAGE - 1] == 0);
    strcpy(p, "writable");
    printf("written: %s\n", p);
    return 0;
}

static int private_map(void) {
    int fd = memfd_create("cr-test-private", 0);
    if (fd < 0 || ftruncate(fd, 3 * PAGE) != 0 || pwrite(fd, "the memfd's bytes", 17, 0) != 17 ||
        pwrite(fd, "page three", 10, 2 * PAGE) != 10)
        return perror("memfd"), 1;
    char *p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return perror("mmap"), 1;
    strcpy(p + PAGE, "the task's own copy");
    printf("ready\n");
    fflush(stdout);
    nap();
    char name[512];
    maps_name(p, name, sizeof name);
    printf("%s | %s | %s\nmaps: %s", p, p + PAGE, p + 2 * PAGE, name);
    return 0;
}

static int other(void) {
    int fd = memfd_create("cr-test-other", 0);
    if (fd < 0 || ftruncate(fd, PAGE) != 0)
        return perror("memfd"), 1;
    char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return perror("mmap"), 1;
    pid_t c = fork();
    if (c == 0) {
        for (int i = 0; i < 100 && getppid() != 1; i++)
            usleep(100 * 1000);
        _exit(0);
    }
    printf("child %d\n", c);
    printf("ready\n");
    fflush(stdout);
    nap();
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    printf("done\n");
    return 0;
}

static int sysv(void) {
    int id = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
    if (id < 0)
        return perror("shmget"), 1;
    char *p = shmat(id, NULL, 0);
    shmctl(id, IPC_RMID, NULL);
    if (p == (void *)-1)
        return perror("shmat"), 1;
    printf("ready\n");
    fflush(stdout);
    nap();
    printf("done\n");
    return 0;
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

static int lockall(const char *how) {
    int flags = MCL_CURRENT | MCL_FUTURE;
    if (how && strcmp(how, "onfault") == 0)
        flags |= MCL_ONFAULT;
    if (mlockall(flags) != 0)
        return perror("mlockall"), 1;
    printf("ready\n");
    fflush(stdout);
    nap();
    long before = vmlck();
    char *p = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return perror("mmap"), 1;
    p[0] = 1;
    long after = vmlck();
    /* MCL_FUTURE: the new mapping is locked (all of it, or with MCL_ONFAULT as it is touched). */
    printf("new mapping locked: %d\n", after - before >= 4);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "join") == 0)
        return join();
    if (strcmp(mode, "maponly") == 0)
        return maponly();
    if (strcmp(mode, "private") == 0)
        return private_map();
    if (strcmp(mode, "other") == 0)
        return other();
    if (strcmp(mode, "sysv") == 0)
        return sysv();
    if (strcmp(mode, "lockall") == 0)
        return lockall(argc > 2 ? argv[2] : NULL);
    fprintf(stderr, "usage: memkinds2 join|maponly|private|other|sysv|lockall [onfault]\n");
    return 2;
}
