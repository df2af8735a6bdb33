/* How to stream 1 GiB of a forked child's memory (read through /proc/PID/mem, as cr-dump reads
 * a copy-on-write twin) into a file: the shapes of pipeline BENCHMARKS.md compares. Each chunk
 * is 1 MiB, read into a buffer and summed (a stand-in for the zero-page check and CRC).
 *
 *   gcc -O2 -march=native -pthread -o /tmp/stream_shapes cr-dump/benches/stream_shapes.c
 *   /tmp/stream_shapes SHAPE THREADS [DIR]      (DIR defaults to /tmp)
 *
 * SHAPE:
 *   read     read and sum only, no file
 *   handoff  THREADS readers hand buffers (4 in flight) to one writer thread, in order
 *   own      each thread reads a chunk, then writes it itself with pwrite, in any order
 *   turn     each thread reads a chunk, then writes it at its turn, sleeping on a condvar
 *   spin     the same, spinning for its turn
 *   mmap     each thread reads a chunk straight into a shared mapping of the file
 *
 * Each run removes its file, syncs and waits half a second first.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { READ, HANDOFF, OWN, TURN, SPIN, MMAP };
static const size_t LEN = 1UL << 30, CH = 1UL << 20, NCH = (1UL << 30) / (1UL << 20);
static char *src, *dst;
static int memfd, outfd, shape;
static size_t next_chunk, turn;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile uint64_t sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t sum(const char *p, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i += 64)
        s += *(const uint64_t *)(p + i);
    return s;
}

static void read_chunk(char *buf, size_t c) {
    if (pread(memfd, buf, CH, (off_t)(uintptr_t)(src + c * CH)) != (ssize_t)CH) {
        perror("pread");
        exit(1);
    }
    sink += sum(buf, CH);
}

/* At 4 KiB past a MiB boundary, as cr-dump's data (each Pages record's header comes first):
 * aligned writes of 1 MiB get large page-cache folios, which on a VM that hands free memory
 * back to its host often cost ten times as much (BENCHMARKS.md). */
static void write_chunk(const char *buf, size_t c) {
    if (pwrite(outfd, buf, CH, (off_t)(4096 + c * CH)) != (ssize_t)CH) {
        perror("pwrite");
        exit(1);
    }
}

/* HANDOFF: slot s holds chunk `slot_chunk[s]` when `full[s]`; the next chunk it may take is
 * `slot_next[s]`. */
#define SLOTS 4
static char *slot_buf[SLOTS];
static size_t slot_chunk[SLOTS], slot_next[SLOTS];
static int full[SLOTS];

static void *handoff_reader(void *a) {
    (void)a;
    for (;;) {
        size_t c = __atomic_fetch_add(&next_chunk, 1, __ATOMIC_RELAXED);
        if (c >= NCH)
            return NULL;
        int s = c % SLOTS;
        pthread_mutex_lock(&mu);
        while (full[s] || slot_next[s] != c)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        read_chunk(slot_buf[s], c);
        pthread_mutex_lock(&mu);
        full[s] = 1;
        slot_chunk[s] = c;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static void *handoff_writer(void *a) {
    (void)a;
    for (size_t c = 0; c < NCH; c++) {
        int s = c % SLOTS;
        pthread_mutex_lock(&mu);
        while (!(full[s] && slot_chunk[s] == c))
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        write_chunk(slot_buf[s], c);
        pthread_mutex_lock(&mu);
        full[s] = 0;
        slot_next[s] = c + SLOTS;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void *worker(void *a) {
    (void)a;
    char *buf = aligned_alloc(4096, CH);
    memset(buf, 0, CH);
    for (;;) {
        size_t c = __atomic_fetch_add(&next_chunk, 1, __ATOMIC_RELAXED);
        if (c >= NCH)
            break;
        switch (shape) {
        case READ:
            read_chunk(buf, c);
            break;
        case OWN:
            read_chunk(buf, c);
            write_chunk(buf, c);
            break;
        case TURN:
            read_chunk(buf, c);
            pthread_mutex_lock(&mu);
            while (turn != c)
                pthread_cond_wait(&cv, &mu);
            write_chunk(buf, c);
            turn++;
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
            break;
        case SPIN:
            read_chunk(buf, c);
            while (__atomic_load_n(&turn, __ATOMIC_ACQUIRE) != c)
                __builtin_ia32_pause();
            write_chunk(buf, c);
            __atomic_store_n(&turn, c + 1, __ATOMIC_RELEASE);
            break;
        case MMAP:
            madvise(dst + c * CH, CH, MADV_POPULATE_WRITE);
            if (pread(memfd, dst + c * CH, CH, (off_t)(uintptr_t)(src + c * CH)) != (ssize_t)CH) {
                perror("pread");
                exit(1);
            }
            sink += sum(dst + c * CH, CH);
            break;
        }
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    static const char *names[] = {"read", "handoff", "own", "turn", "spin", "mmap"};
    if (argc < 3) {
        fprintf(stderr, "usage: %s read|handoff|own|turn|spin|mmap THREADS [DIR]\n", argv[0]);
        return 2;
    }
    shape = -1;
    for (int i = 0; i < 6; i++)
        if (!strcmp(argv[1], names[i]))
            shape = i;
    int nt = atoi(argv[2]);
    if (shape < 0 || nt < 1 || nt > 8) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char out[4096];
    snprintf(out, sizeof out, "%s/stream_shapes.out", argc > 3 ? argv[3] : "/tmp");

    src = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < LEN; i += 8)
        *(uint64_t *)(src + i) = (i * 0x9e3779b97f4a7c15ULL) | 1;
    int p[2];
    if (src == MAP_FAILED || pipe(p)) {
        perror("setup");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(p[1]);
        (void)!read(p[0], &c, 1);
        _exit(0);
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", child);
    memfd = open(path, O_RDONLY);
    unlink(out);
    sync();
    usleep(500000);

    double t0 = now();
    outfd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (memfd < 0 || outfd < 0) {
        perror("open");
        return 1;
    }
    if (shape == MMAP) {
        if (ftruncate(outfd, LEN)) {
            perror("ftruncate");
            return 1;
        }
        dst = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, outfd, 0);
    }
    pthread_t th[9];
    int n = 0;
    if (shape == HANDOFF) {
        for (int i = 0; i < SLOTS; i++)
            slot_buf[i] = aligned_alloc(4096, CH), memset(slot_buf[i], 0, CH), slot_next[i] = i;
        pthread_create(&th[n++], NULL, handoff_writer, NULL);
        for (int i = 0; i < nt; i++)
            pthread_create(&th[n++], NULL, handoff_reader, NULL);
    } else {
        for (int i = 0; i < nt; i++)
            pthread_create(&th[n++], NULL, worker, NULL);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    if (dst)
        munmap(dst, LEN);
    close(outfd);
    printf("%s, %d thread(s)%s: %.3f s\n", names[shape], nt,
           shape == HANDOFF ? " + a writer" : "", now() - t0);
    unlink(out);
    (void)!write(p[1], "x", 1);
    waitpid(child, NULL, 0);
    return 0;
}
