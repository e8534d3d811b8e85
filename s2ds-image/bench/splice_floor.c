/* The floor of a plain relay, for bench.sh: the least a TCP relay can do on
 * this kernel. Per accepted connection: connect to the target, then one
 * thread per direction doing blocking splice(2) socket -> pipe -> socket
 * through a pipe of the same size as s2ds's (F_SETPIPE_SZ), and shutdown of
 * the write half at EOF. No event loop, no rate limit, no metrics, no error
 * handling beyond closing (SIGPIPE ignored): a reference to measure CPU per GiB against, not a
 * relay to run.
 *
 *   cc -O2 -pthread -o splice_floor splice_floor.c
 *   splice_floor LISTEN_PORT TARGET_PORT PIPE_BYTES     (127.0.0.1 both)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int pipe_bytes;

struct dir {
    int from, to;
    struct dir *peer; /* the other direction; the last one done closes both */
    int done;
    pthread_mutex_t *lock;
};

static void *one_way(void *arg) {
    struct dir *d = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
        fcntl(p[1], F_SETPIPE_SZ, pipe_bytes);
        for (;;) {
            ssize_t n = splice(d->from, NULL, p[1], NULL, (size_t)pipe_bytes, SPLICE_F_MOVE);
            if (n <= 0)
                break;
            while (n > 0) {
                ssize_t m = splice(p[0], NULL, d->to, NULL, (size_t)n, SPLICE_F_MOVE);
                if (m <= 0)
                    goto out;
                n -= m;
            }
        }
    out:
        close(p[0]);
        close(p[1]);
    }
    shutdown(d->to, SHUT_WR);
    pthread_mutex_lock(d->lock);
    d->done = 1;
    int last = d->peer->done;
    pthread_mutex_unlock(d->lock);
    if (last) {
        close(d->from);
        close(d->to);
        pthread_mutex_destroy(d->lock);
        free(d->lock);
        free(d < d->peer ? d : d->peer);
    }
    return NULL;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: splice_floor LISTEN_PORT TARGET_PORT PIPE_BYTES\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a peer's reset ends that connection, not the relay */
    pipe_bytes = atoi(argv[3]);
    struct sockaddr_in la = loopback(atoi(argv[1])), ta = loopback(atoi(argv[2]));
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&la, sizeof la) || listen(l, 1024)) {
        perror("splice_floor: listen");
        return 1;
    }
    for (;;) {
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(t, (struct sockaddr *)&ta, sizeof ta)) {
            close(c);
            close(t);
            continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct dir *d = calloc(2, sizeof *d);
        pthread_mutex_t *lock = malloc(sizeof *lock);
        pthread_mutex_init(lock, NULL);
        d[0] = (struct dir){.from = c, .to = t, .peer = &d[1], .lock = lock};
        d[1] = (struct dir){.from = t, .to = c, .peer = &d[0], .lock = lock};
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_create(&th, &attr, one_way, &d[0]);
        pthread_create(&th, &attr, one_way, &d[1]);
        pthread_attr_destroy(&attr);
    }
}
