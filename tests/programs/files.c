/* Test program for open-file checkpoint/restore (cr-dump/tests/files.rs). Each mode works in
 * small steps with a pause between them, so that a checkpoint lands mid-run, and prints what
 * it sees; the output of a run interrupted by checkpoint -> kill -> restore must equal an
 * uninterrupted run's.
 *   files read FILE      read FILE 64 bytes at a time, print a running checksum per chunk
 *   files chdir DIR N    chdir(DIR), then write N files out-K.txt by relative path
 *   files deleted N      create ghost.tmp, write to it, unlink it, then N times append a line
 *                        and print a checksum of the whole file read back through the fd
 *   files dup FILE       open FILE, dup it, read 16 bytes alternately from both descriptors
 *                        (one offset) and print each chunk
 *   files inotify N      hold an inotify descriptor (which images cannot describe), count to N
 *   files lock FILE N    hold a POSIX write lock on FILE, count to N
 *   files fd3 N          write N numbered lines to descriptor 3 (given by the parent)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static void pause_step(void) { usleep(20000); }

static unsigned long sum(const unsigned char *b, ssize_t n, unsigned long s) {
    for (ssize_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

static int mode_read(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    unsigned char buf[64];
    unsigned long s = 7;
    ssize_t n;
    int k = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        s = sum(buf, n, s);
        printf("chunk %d %zd %lx\n", k++, n, s);
        fflush(stdout);
        pause_step();
    }
    if (n < 0) { perror("read error"); return 1; }
    printf("end %lx\n", s);
    return 0;
}

static int mode_chdir(const char *dir, int n) {
    if (chdir(dir) != 0) { perror("chdir"); return 1; }
    for (int k = 0; k < n; k++) {
        char name[64];
        snprintf(name, sizeof name, "out-%d.txt", k);
        FILE *f = fopen(name, "w");
        if (!f) { perror("fopen"); return 1; }
        fprintf(f, "file %d\n", k);
        fclose(f);
        printf("wrote %s\n", name);
        fflush(stdout);
        pause_step();
    }
    return 0;
}

static int mode_deleted(int n) {
    int fd = open("ghost.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror("open"); return 1; }
    const char *head = "a file deleted while open\n";
    if (write(fd, head, strlen(head)) < 0) { perror("write"); return 1; }
    if (unlink("ghost.tmp") != 0) { perror("unlink"); return 1; }
    for (int k = 0; k < n; k++) {
        char line[64];
        int len = snprintf(line, sizeof line, "line %d\n", k);
        if (write(fd, line, len) != len) { perror("write"); return 1; }
        off_t end = lseek(fd, 0, SEEK_CUR);
        unsigned char buf[4096];
        ssize_t got = pread(fd, buf, sizeof buf, 0);
        if (got < 0) { perror("pread"); return 1; }
        printf("step %d size %ld sum %lx\n", k, (long)end, sum(buf, got, 7));
        fflush(stdout);
        pause_step();
    }
    return 0;
}

static int mode_dup(const char *path) {
    int a = open(path, O_RDONLY);
    if (a < 0) { perror("open"); return 1; }
    int b = dup(a);
    char buf[17];
    for (int k = 0;; k++) {
        ssize_t n = read(k % 2 ? b : a, buf, 16);
        if (n < 0) { perror("read"); return 1; }
        if (n == 0) break;
        buf[n] = 0;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n') buf[i] = '|';
        printf("%c %s\n", k % 2 ? 'b' : 'a', buf);
        fflush(stdout);
        pause_step();
    }
    return 0;
}

static int count_to(int n) {
    for (int k = 0; k < n; k++) {
        printf("count %d\n", k);
        fflush(stdout);
        pause_step();
    }
    return 0;
}

static int mode_inotify(int n) {
    if (inotify_init1(0) < 0) { perror("inotify_init1"); return 1; }
    return count_to(n);
}

static int mode_lock(const char *path, int n) {
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0) { perror("open"); return 1; }
    struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    if (fcntl(fd, F_SETLK, &l) != 0) { perror("fcntl F_SETLK"); return 1; }
    return count_to(n);
}

static int mode_fd3(int n) {
    for (int k = 0; k < n; k++) {
        dprintf(3, "line %d\n", k);
        printf("wrote %d\n", k);
        fflush(stdout);
        pause_step();
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "read")) return mode_read(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "chdir")) return mode_chdir(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "deleted")) return mode_deleted(atoi(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "dup")) return mode_dup(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "inotify")) return mode_inotify(atoi(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "lock")) return mode_lock(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "fd3")) return mode_fd3(atoi(argv[2]));
    fprintf(stderr, "usage: files read FILE | chdir DIR N | deleted N | dup FILE | inotify N | lock FILE N | fd3 N\n");
    return 2;
}
