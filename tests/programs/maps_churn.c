/* Test target for checkpoints of a task that changes its mappings all the time
 * (cr-dump/tests/many_maps_capture.rs, issue 14): SLOTS slots of up to 4 pages, each one page
 * apart from the next (so the kernel never merges two), at a fixed address. Each step, chosen
 * by a running hash H of everything before it, maps a slot (and writes its pages), unmaps
 * it, flips its protection, its MADV_DONTDUMP, or (a few slots) MADV_WIPEONFORK or
 * MADV_DONTFORK (only with CHURN_FORKFLAGS=1 in the environment), or writes a word; then H takes in words read back from that slot. So the
 * state after N steps (mappings, their flags, the bytes) is a function of N alone, and a task
 * restored from a wrong image (a page, a mapping or a flag not as they were at the freeze)
 * either fails a system call (it exits 3: a slot it thinks free is mapped, ...) or reaches
 * another H.
 *
 * usage: maps_churn SLOTS DIR            churn; on SIGUSR1, at a step boundary, write
 *                                        "STEP DIGEST" to DIR/sum.PID
 *        maps_churn SLOTS DIR replay N   do N steps, write "STEP DIGEST" to DIR/replay.N, exit
 *        maps_churn SLOTS DIR remap      map slot 0 again and again with 1 to 4 pages (written),
 *                                        checking /proc/self/maps after each: if the slot is not
 *                                        exactly one mapping of its size, write the slot's lines
 *                                        to DIR/split.PID and exit 3
 * DIGEST covers H, the step, the slots' mappings (range, permissions, dd/wf/dc flags from
 * /proc/self/smaps) and every word of every mapped slot. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL
#define STRIDE (5 * PG)
#define ARENA 0x200000000000UL

struct slot {
    int pages, prot, dd, wf, dc;
};

static volatile sig_atomic_t asked;
static void on_usr1(int sig) { (void)sig; asked = 1; }

static struct slot *slots;
static unsigned long nslots;
static int forkflags;
static uint64_t H = 0x243f6a8885a308d3ULL, step;

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dULL;
    return x ^ (x >> 33);
}

static void die(const char *what) {
    perror(what);
    exit(3);
}

static void one_step(void) {
    uint64_t r = mix(H ^ (step * 0x9e3779b97f4a7c15ULL));
    unsigned long i = r % nslots;
    unsigned a = (r >> 20) % 16;
    struct slot *s = &slots[i];
    unsigned char *p = (unsigned char *)(ARENA + i * STRIDE);
    if (!s->pages) {
        int n = 1 + (int)((r >> 8) % 4);
        void *m = mmap(p, n * PG, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (m != p)
            die("mmap");
        for (int k = 0; k < n; k++) {
            ((uint64_t *)(p + k * PG))[0] = mix(H + k);
            ((uint64_t *)(p + k * PG))[PG / 8 - 1] = mix(H - k);
        }
        *s = (struct slot){.pages = n, .prot = PROT_READ | PROT_WRITE};
    } else if (a < 2) {
        if (munmap(p, s->pages * PG))
            die("munmap");
        *s = (struct slot){0};
    } else if (a < 4) {
        s->prot = s->prot & PROT_WRITE ? PROT_READ : PROT_READ | PROT_WRITE;
        if (mprotect(p, s->pages * PG, s->prot))
            die("mprotect");
    } else if (a == 4) {
        s->dd = !s->dd;
        if (madvise(p, s->pages * PG, s->dd ? MADV_DONTDUMP : MADV_DODUMP))
            die("madvise dontdump");
    } else if (a == 5 && forkflags && i % 16 == 0) {
        s->wf = !s->wf;
        if (madvise(p, s->pages * PG, s->wf ? MADV_WIPEONFORK : MADV_KEEPONFORK))
            die("madvise wipeonfork");
    } else if (a == 6 && forkflags && i % 16 == 1) {
        s->dc = !s->dc;
        if (madvise(p, s->pages * PG, s->dc ? MADV_DONTFORK : MADV_DOFORK))
            die("madvise dontfork");
    } else if (s->prot & PROT_WRITE) {
        ((uint64_t *)p)[(r >> 12) % (s->pages * PG / 8)] = H;
    }
    if (s->pages)
        for (int k = 0; k < s->pages; k++)
            H = mix(H ^ ((uint64_t *)(p + k * PG))[0] ^ ((uint64_t *)(p + k * PG))[PG / 8 - 1]);
    H = mix(H ^ a ^ (i << 8));
    step++;
}

/* H, the step, the slots' VMAs with their dd/wf/dc flags, and every word of the slots. */
static uint64_t digest(void) {
    uint64_t d = mix(H ^ step);
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3) {
            in = a >= ARENA && b <= ARENA + nslots * STRIDE;
            if (in)
                d = mix(d ^ a ^ (b << 1) ^ ((uint64_t)perms[1] << 56));
        } else if (in && !strncmp(line, "VmFlags:", 8)) {
            d = mix(d ^ (strstr(line, " dd") ? 1 : 0) ^ (strstr(line, " wf") ? 2 : 0) ^
                    (strstr(line, " dc") ? 4 : 0));
        }
    }
    if (f)
        fclose(f);
    for (unsigned long i = 0; i < nslots; i++) {
        const uint64_t *w = (const uint64_t *)(ARENA + i * STRIDE);
        for (unsigned long k = 0; k < slots[i].pages * PG / 8; k++)
            d = (d ^ w[k]) * 0x100000001b3ULL;
    }
    return d;
}

static void write_digest(const char *dir, const char *name) {
    char path[4096], tmp[4200], line[64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die("open");
    int len = snprintf(line, sizeof line, "%llu %016llx\n", (unsigned long long)step,
                       (unsigned long long)digest());
    if (write(fd, line, len) != len || rename(tmp, path))
        die("write");
    close(fd);
}

/* The "remap" mode: a checkpoint that registers for write tracking a range read before the
 * last remap splits the slot's mapping (seen as two lines here). */
static int remap(const char *dir) {
    unsigned char *p = (unsigned char *)ARENA;
    char lines[4096], line[512], path[4200];
    for (unsigned long it = 0;; it++) {
        unsigned long n = 1 + it % 4;
        if (it && munmap(p, STRIDE))
            die("munmap");
        if (mmap(p, n * PG, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != p)
            die("mmap");
        struct timespec pause = {0, 50000};
        nanosleep(&pause, NULL);
        /* Written after the pause: a part of the slot split off meanwhile then gets its own
         * anon_vma, and the split stays. */
        for (unsigned long k = 0; k < n; k++)
            p[k * PG] = (unsigned char)(it + k + 1);
        FILE *f = fopen("/proc/self/maps", "r");
        if (!f)
            die("maps");
        size_t used = 0;
        int count = 0, exact = 0;
        lines[0] = 0;
        while (fgets(line, sizeof line, f)) {
            unsigned long a, b;
            if (sscanf(line, "%lx-%lx", &a, &b) != 2 || b <= ARENA || a >= ARENA + STRIDE)
                continue;
            count++;
            exact = a == ARENA && b == ARENA + n * PG;
            if (used + strlen(line) < sizeof lines) {
                strcpy(lines + used, line);
                used += strlen(line);
            }
        }
        fclose(f);
        if (count != 1 || !exact) {
            snprintf(path, sizeof path, "%s/split.%d", dir, (int)getpid());
            FILE *o = fopen(path, "w");
            if (o) {
                fprintf(o, "after mapping %lu pages:\n%s", n, lines);
                fclose(o);
            }
            exit(3);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    nslots = strtoul(argv[1], NULL, 0);
    forkflags = getenv("CHURN_FORKFLAGS") && !strcmp(getenv("CHURN_FORKFLAGS"), "1");
    slots = calloc(nslots, sizeof *slots);
    if (!slots || !nslots)
        return 2;
    char name[64];
    if (argc == 4 && !strcmp(argv[3], "remap"))
        return remap(argv[2]);
    if (argc == 5 && !strcmp(argv[3], "replay")) {
        unsigned long long n = strtoull(argv[4], NULL, 0);
        while (step < n)
            one_step();
        snprintf(name, sizeof name, "replay.%llu", n);
        write_digest(argv[2], name);
        return 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    struct timespec pause = {0, 20000};
    for (;;) {
        if (asked) {
            asked = 0;
            snprintf(name, sizeof name, "sum.%d", (int)getpid());
            write_digest(argv[2], name);
        }
        one_step();
        if (step % 4 == 0)
            nanosleep(&pause, NULL);
    }
}
