/* A program watching directories with inotify across a checkpoint
 * (cr-dump/tests/files_lock.rs).
 *
 * usage: inotify [SKIP]   (in a work directory holding the directories a, watched and other)
 *   With SKIP, first adds and removes a watch of /dev/null SKIP times (reading the events),
 *   so that every wd below is SKIP higher. With $EXTRA (a directory), watches it too, last
 *   (`extra wd N`).
 *   Watches a (wd 1), watched (wd 2), removes the watch of a (its IN_IGNORED is read), then
 *   watches other (wd 3) and a again (wd 4), prints its wds, then prints `tick N` 60 times
 *   20 ms apart (the checkpoint comes then), prints `waiting` and reads events until it has
 *   seen 4 of IN_CREATE (made by the test in watched, other and a), printing each: wd, mask,
 *   name, reading them through a dup of the inotify fd (fd 4: one instance with fd 3). A
 *   restored run prints the same lines as an uninterrupted one only if the watches are back
 *   with their numbers, on one instance.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

static int add(int fd, const char *p, unsigned mask) {
    int wd = inotify_add_watch(fd, p, mask);
    if (wd < 0) {
        perror(p);
        exit(2);
    }
    return wd;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0) {
        perror("inotify_init1");
        return 2;
    }
    char buf[4096] __attribute__((aligned(8)));
    int skip = argc > 1 ? atoi(argv[1]) : 0;
    for (int i = 0; i < skip; i++) {
        inotify_rm_watch(fd, add(fd, "/dev/null", IN_ATTRIB));
        while (read(fd, buf, sizeof buf) > 0)
            ;
    }
    /* Blocking from here. */
    fcntl(fd, F_SETFL, 0);
    int a = add(fd, "a", IN_CREATE);
    int w = add(fd, "watched", IN_CREATE | IN_DELETE);
    inotify_rm_watch(fd, a);
    ssize_t n = read(fd, buf, sizeof buf);
    struct inotify_event *ev = (struct inotify_event *)buf;
    printf("removed wd %d: %zd bytes, mask %#x\n", a, n, n > 0 ? ev->mask : 0);
    int o = add(fd, "other", IN_CREATE | IN_ONLYDIR);
    int a2 = add(fd, "a", IN_CREATE | IN_MOVED_TO);
    printf("wds: watched %d other %d a %d\n", w, o, a2);
    const char *extra = getenv("EXTRA");
    if (extra)
        printf("extra wd %d\n", add(fd, extra, IN_CREATE));
    int dupfd = dup(fd);
    if (dupfd < 0) {
        perror("dup");
        return 2;
    }
    for (int i = 0; i < 60; i++) {
        printf("tick %d\n", i);
        usleep(20000);
    }
    printf("waiting\n");
    int creates = 0;
    while (creates < 4) {
        n = read(dupfd, buf, sizeof buf);
        if (n <= 0) {
            perror("read");
            return 2;
        }
        for (char *p = buf; p < buf + n;) {
            ev = (struct inotify_event *)p;
            printf("event wd %d mask %#x name %s\n", ev->wd, ev->mask, ev->len ? ev->name : "");
            if (ev->mask & IN_CREATE)
                creates++;
            p += sizeof *ev + ev->len;
        }
    }
    printf("done\n");
    return 0;
}
