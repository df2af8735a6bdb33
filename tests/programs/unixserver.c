/* A Unix stream server: listens on PATH, prints "ready", waits until the file GO exists,
 * then serves one client ("hi") and prints "served".
 *
 * usage: unixserver PATH GO */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3)
        return fprintf(stderr, "usage: unixserver PATH GO\n"), 2;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0 || bind(s, (void *)&a, sizeof a) || listen(s, 1))
        return perror("listen"), 1;
    printf("ready\n");
    fflush(stdout);
    while (access(argv[2], F_OK) != 0)
        usleep(5000);
    int c = accept(s, NULL, NULL);
    if (c < 0 || write(c, "hi", 2) != 2)
        return perror("serve"), 1;
    close(c);
    printf("served\n");
    return 0;
}
