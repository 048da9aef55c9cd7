/* Tries to get out of the rehearsal sandbox; prints what it managed, exits 0 when nothing.
 *   escape shadow          read /etc/shadow
 *   escape write PATH      create PATH
 *   escape connect PORT    connect to 127.0.0.1:PORT
 *   escape linger SECONDS  leave a child behind that sleeps, then exit 0
 *   escape spin            never end */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "shadow")) {
        char buf[64];
        int fd = open("/etc/shadow", O_RDONLY);
        if (fd >= 0 && read(fd, buf, sizeof buf) > 0) { puts("read /etc/shadow"); return 1; }
        return 0;
    }
    if (!strcmp(argv[1], "write") && argc > 2) {
        int fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
        if (fd >= 0 && write(fd, "x", 1) == 1) { puts("wrote"); return 1; }
        return 0;
    }
    if (!strcmp(argv[1], "connect") && argc > 2) {
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s >= 0 && connect(s, (struct sockaddr *)&to, sizeof to) == 0) { puts("connected"); return 1; }
        return 0;
    }
    if (!strcmp(argv[1], "linger") && argc > 2) {
        if (fork() == 0) { setsid(); sleep((unsigned)atoi(argv[2])); return 0; }
        return 0;
    }
    if (!strcmp(argv[1], "spin")) for (;;) {}
    return 2;
}
