/* A program holding file locks across a checkpoint (cr-dump/tests/files_lock.rs).
 *
 * usage: locks   (in a work directory)
 *   Takes a POSIX write lock on bytes 10..29 of posix.dat (fcntl F_SETLK), an exclusive
 *   flock on flock.dat and an OFD read lock on bytes 100..EOF of ofd.dat (F_OFD_SETLK), then
 *   prints `tick N` 60 times 20 ms apart (the checkpoint comes then), writes its pid to
 *   pid.txt, prints `waiting` and waits for the file `go`. Then a child of it checks, from
 *   outside, that each lock is still held (by this process for the POSIX one) and prints
 *   what it saw; the parent prints what its own F_GETLK-free view is and exits.
 * The output has no pid in it, so a restored run's equals an uninterrupted one's.
 *
 * usage: locks probe
 *   As another process: prints what F_GETLK (posix.dat, with the holder's pid), flock
 *   LOCK_NB (flock.dat) and F_OFD_GETLK (ofd.dat) say, one line each.
 * usage: locks hold posix|flock
 *   Takes a lock that conflicts with the program's (a POSIX write lock on bytes 15..16 of
 *   posix.dat, or a shared flock of flock.dat), prints `held`, and sleeps until killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

static int open_rw(const char *p) {
    int fd = open(p, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        perror(p);
        exit(2);
    }
    return fd;
}

static void setlk(int fd, int cmd, short type, off_t start, off_t len, const char *what) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl) < 0) {
        perror(what);
        exit(2);
    }
}

/* What another process sees (run in a child). */
static void check(pid_t owner) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int p = open_rw("posix.dat");
    if (fcntl(p, F_GETLK, &fl) < 0) {
        perror("F_GETLK");
        exit(2);
    }
    printf("posix.dat: %s, %s, bytes %lld+%lld, owner %s\n",
           fl.l_type == F_UNLCK ? "free" : "locked", fl.l_type == F_WRLCK ? "write" : "read",
           (long long)fl.l_start, (long long)fl.l_len, fl.l_pid == owner ? "the program" : "other");
    int f = open_rw("flock.dat");
    int r = flock(f, LOCK_SH | LOCK_NB);
    printf("flock.dat: %s\n", r < 0 && errno == EWOULDBLOCK ? "locked" : "free");
    int o = open_rw("ofd.dat");
    struct flock ol = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(o, F_OFD_GETLK, &ol) < 0) {
        perror("F_OFD_GETLK");
        exit(2);
    }
    printf("ofd.dat: %s, %s, bytes %lld+%lld\n", ol.l_type == F_UNLCK ? "free" : "locked",
           ol.l_type == F_RDLCK ? "read" : "write", (long long)ol.l_start, (long long)ol.l_len);
    struct flock rl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(o, F_OFD_SETLK, &rl) < 0) {
        perror("F_OFD_SETLK read");
        exit(2);
    }
    printf("ofd.dat: a second read lock is granted\n");
}

static int probe(void) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int p = open_rw("posix.dat");
    if (fcntl(p, F_GETLK, &fl) < 0) {
        perror("F_GETLK");
        return 2;
    }
    printf("posix.dat %s %lld+%lld pid %d\n", fl.l_type == F_UNLCK ? "free" : fl.l_type == F_WRLCK ? "write" : "read",
           (long long)fl.l_start, (long long)fl.l_len, (int)fl.l_pid);
    int f = open_rw("flock.dat");
    int r = flock(f, LOCK_EX | LOCK_NB);
    printf("flock.dat %s\n", r < 0 && errno == EWOULDBLOCK ? "locked" : "free");
    int o = open_rw("ofd.dat");
    struct flock ol = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(o, F_OFD_GETLK, &ol) < 0) {
        perror("F_OFD_GETLK");
        return 2;
    }
    printf("ofd.dat %s %lld+%lld\n", ol.l_type == F_UNLCK ? "free" : ol.l_type == F_WRLCK ? "write" : "read",
           (long long)ol.l_start, (long long)ol.l_len);
    return 0;
}

static int hold(const char *kind) {
    if (strcmp(kind, "posix") == 0) {
        setlk(open_rw("posix.dat"), F_SETLK, F_WRLCK, 15, 2, "F_SETLK");
    } else if (flock(open_rw("flock.dat"), LOCK_SH | LOCK_NB) < 0) {
        perror("flock");
        return 2;
    }
    printf("held\n");
    for (;;)
        pause();
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "probe") == 0)
        return probe();
    if (argc > 2 && strcmp(argv[1], "hold") == 0)
        return hold(argv[2]);
    int p = open_rw("posix.dat");
    setlk(p, F_SETLK, F_WRLCK, 10, 20, "F_SETLK posix.dat");
    int f = open_rw("flock.dat");
    if (flock(f, LOCK_EX | LOCK_NB) < 0) {
        perror("flock");
        exit(2);
    }
    int o = open_rw("ofd.dat");
    setlk(o, F_OFD_SETLK, F_RDLCK, 100, 0, "F_OFD_SETLK ofd.dat");
    for (int i = 0; i < 60; i++) {
        printf("tick %d\n", i);
        usleep(20000);
    }
    FILE *pf = fopen("pid.txt", "w");
    if (!pf) {
        perror("pid.txt");
        exit(2);
    }
    fprintf(pf, "%d\n", (int)getpid());
    fclose(pf);
    printf("waiting\n");
    for (int i = 0; access("go", F_OK) != 0; i++) {
        if (i > 3000) {
            fprintf(stderr, "no go file after 30 s\n");
            exit(3);
        }
        usleep(10000);
    }
    pid_t me = getpid();
    pid_t c = fork();
    if (c == 0) {
        check(me);
        exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    printf("checker exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    /* The locks are still ours: taking them again through the same files succeeds. */
    setlk(p, F_SETLK, F_WRLCK, 10, 20, "F_SETLK again");
    printf("done\n");
    return 0;
}
