// Socket set-up for the engine: resolve, bind, listen, connect with a deadline, and the options every
// Chorus socket carries (non-blocking, close-on-exec, TCP_NODELAY, buffer sizes).
#define _GNU_SOURCE
#include "sockets.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t chorus_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t chorus_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

// The last set-up failure of this thread, like errno but with the call and the address in words.
static _Thread_local char last_failure[256];

const char *chorus_last_failure(void) { return last_failure; }

void chorus_note_failure(const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(last_failure, sizeof last_failure, format, arguments);
    va_end(arguments);
}

void chorus_socket_configure(int fd, int buffer_bytes) {
    int one = 1;
    // Small control frames must not wait for Nagle's algorithm (PCCL pays ~50 ms per op for that).
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (buffer_bytes > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
    }
}

int chorus_socket_resolve(const char *host, uint16_t port, int passive, struct addrinfo **out) {
    if (host == NULL || host[0] == '\0') return CHORUS_ERR_INVALID_ARGUMENT;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    int error = getaddrinfo(host, service, &hints, out);
    if (error == 0) return CHORUS_OK;
    chorus_note_failure("getaddrinfo %s: %s", host, error == EAI_SYSTEM ? strerror(errno) : gai_strerror(error));
    return CHORUS_ERR_ADDRESS;
}

/// Binds and listens on one port; CHORUS_ERR_ADDRESS (with the failure noted) when it cannot.
static int listen_on(const char *host, uint16_t port, int backlog, int *fd_out, uint16_t *bound_port) {
    struct addrinfo *list = NULL;
    int status = chorus_socket_resolve(host, port, 1, &list);
    if (status != CHORUS_OK) return status;
    status = CHORUS_ERR_ADDRESS;
    for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            chorus_note_failure("socket for %s:%u: %s", host, (unsigned)port, strerror(errno));
            continue;
        }
        // A restarted master or peer can bind its port again at once, past old connections in TIME_WAIT.
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        const char *call = "bind";
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && (call = "listen", listen(fd, backlog > 0 ? backlog : 128) == 0)) {
            struct sockaddr_storage local;
            socklen_t len = sizeof local;
            getsockname(fd, (struct sockaddr *)&local, &len);
            *bound_port = ntohs(local.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&local)->sin6_port
                                                            : ((struct sockaddr_in *)&local)->sin_port);
            *fd_out = fd;
            status = CHORUS_OK;
            break;
        }
        chorus_note_failure("%s %s:%u: %s", call, host, (unsigned)port, strerror(errno));
        close(fd);
    }
    freeaddrinfo(list);
    return status;
}

int chorus_socket_listen(const char *host, uint16_t port, uint16_t last_port, int backlog, int *fd_out, uint16_t *bound_port) {
    last_failure[0] = 0;
    if (last_port < port || port == 0) last_port = port;
    int status = CHORUS_ERR_ADDRESS;
    for (uint32_t candidate = port; candidate <= last_port && status != CHORUS_OK; candidate++)
        status = listen_on(host, (uint16_t)candidate, backlog, fd_out, bound_port);
    if (status != CHORUS_OK && last_port > port) {
        char reason[sizeof last_failure];
        snprintf(reason, sizeof reason, "%s", last_failure);
        chorus_note_failure("no free port in %u-%u (last: %s)", (unsigned)port, (unsigned)last_port, reason);
    }
    if (status == CHORUS_OK) last_failure[0] = 0;
    return status;
}

static int connect_one(const struct addrinfo *ai, uint64_t deadline_ms, int buffer_bytes, int *fd_out) {
    char where[INET6_ADDRSTRLEN + 8];
    uint16_t port = 0;
    chorus_socket_describe((const struct sockaddr_storage *)ai->ai_addr, where, sizeof where, &port);
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        chorus_note_failure("socket for %s:%u: %s", where, (unsigned)port, strerror(errno));
        return CHORUS_ERR_SYSTEM;
    }
    chorus_socket_configure(fd, buffer_bytes);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        chorus_note_failure("connect %s:%u: %s", where, (unsigned)port, strerror(errno));
        close(fd);
        return CHORUS_ERR_CONNECT_FAILED;
    }
    for (;;) {
        uint64_t now = chorus_now_ms();
        if (now >= deadline_ms) {
            chorus_note_failure("connect %s:%u: no answer within the connect timeout", where, (unsigned)port);
            close(fd);
            return CHORUS_ERR_TIMEDOUT;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int ready = poll(&pfd, 1, (int)(deadline_ms - now));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) continue; // timeout is handled at the top of the loop
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error != 0) {
            chorus_note_failure("connect %s:%u: %s", where, (unsigned)port, strerror(error));
            close(fd);
            return CHORUS_ERR_CONNECT_FAILED;
        }
        *fd_out = fd;
        return CHORUS_OK;
    }
}

int chorus_socket_connect(const char *host, uint16_t port, int timeout_ms, int buffer_bytes, int *fd_out) {
    last_failure[0] = 0;
    struct addrinfo *list = NULL;
    int status = chorus_socket_resolve(host, port, 0, &list);
    if (status != CHORUS_OK) return status;
    uint64_t deadline = chorus_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    status = CHORUS_ERR_CONNECT_FAILED;
    for (struct addrinfo *ai = list; ai != NULL && status != CHORUS_OK; ai = ai->ai_next)
        status = connect_one(ai, deadline, buffer_bytes, fd_out);
    freeaddrinfo(list);
    if (status == CHORUS_OK) last_failure[0] = 0;
    return status;
}

void chorus_socket_describe(const struct sockaddr_storage *address, char *host, size_t host_size, uint16_t *port) {
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, (socklen_t)host_size);
        *port = ntohs(v6->sin6_port);
    } else {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &v4->sin_addr, host, (socklen_t)host_size);
        *port = ntohs(v4->sin_port);
    }
}
