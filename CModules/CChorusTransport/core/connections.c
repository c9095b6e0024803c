// The engine's connections: the table, accepting, failing, timers, and the public calls on
// connections. Their stream (sending, reading frames) is in stream.c; who drives them (the I/O
// thread, or a caller waiting in the engine) in progress.c; where data frames travel in the
// connection's data path (data_path.h).
//
// Locking (always taken in this order):
//   conn->io_lock    – the read side (header and payload progress, the receive being filled), the
//                      connection's timers and its failure; held by whichever thread serves the
//                      connection (engine_serve), never waited for while another io_lock is held.
//   conn->send_lock  – the send queue and the socket's write side; held by whichever thread writes
//                      (the owner posts and writes inline when the queue is empty, which saves a
//                      thread hop per message; the io_lock holder flushes the rest on EPOLLOUT).
//   a data path's own locks (its link's state and queued sends) – taken before engine->lock,
//                      never together with send_lock.
//   engine->lock     – the connection table, posted receives, request completion, the event queue.
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

// MARK: - Small helpers

static conn *find_locked(chorus_engine *e, chorus_conn_id id) {
    for (size_t i = 0; i < e->conn_count; i++)
        if (e->conns[i]->id == id) return e->conns[i];
    return NULL;
}

conn *engine_acquire(chorus_engine *e, chorus_conn_id id) {
    pthread_mutex_lock(&e->lock);
    conn *c = find_locked(e, id);
    if (c != NULL) c->refs++;
    pthread_mutex_unlock(&e->lock);
    return c;
}

conn *engine_find(chorus_engine *e, int (*match)(const conn *c, const void *context), const void *context) {
    conn *found = NULL;
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < e->conn_count && found == NULL; i++) {
        if (!e->conns[i]->failed && match(e->conns[i], context)) {
            found = e->conns[i];
            found->refs++;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return found;
}

static void free_conn(conn *c) {
    if (c->path->release != NULL) c->path->release(c);
    pthread_mutex_destroy(&c->io_lock);
    pthread_mutex_destroy(&c->send_lock);
    free(c->control_payload);
    free(c->ahead);
    free(c);
}

void engine_release(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&e->lock);
    if (last) free_conn(c);
}

int engine_conn_failed(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int failed = c->failed;
    pthread_mutex_unlock(&e->lock);
    return failed;
}

chorus_failure engine_conn_failure(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    chorus_failure failure = c->failed ? c->failure : chorus_no_failure();
    pthread_mutex_unlock(&e->lock);
    return failure;
}

int engine_data_allowed(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int allowed = c->admitted ? c->data_allowed : c->delivered_control;
    pthread_mutex_unlock(&e->lock);
    return allowed;
}

void engine_fail_later(chorus_engine *e, conn *c, chorus_failure why) {
    pthread_mutex_lock(&e->lock);
    if (c->pending.status == CHORUS_OK) c->pending = why;
    pthread_mutex_unlock(&e->lock);
    engine_serve(e, c, IO_ATTENTION);
}

chorus_failure engine_watch(chorus_engine *e, conn *c, int fd, int slot) {
    if (slot < 0 || slot >= CHORUS_PATH_MAX_WATCHED) return chorus_failure_of(CHORUS_ERR_INVALID_ARGUMENT);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(slot + 1) << KEY_SLOT_SHIFT | c->id};
    return epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? chorus_no_failure() : chorus_system_failure("epoll_ctl", errno);
}

void engine_unwatch(chorus_engine *e, int fd) { epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL); }

// MARK: - Failing and closing (io_lock held)

void engine_fail_conn(chorus_engine *e, conn *c, chorus_failure why) {
    pthread_mutex_lock(&e->lock);
    if (c->failed) {
        pthread_mutex_unlock(&e->lock);
        return;
    }
    c->failed = 1;
    c->failure = why;
    e->control_bytes -= c->control_reserved;
    c->control_reserved = 0;
    int request_status = c->owner_closed ? CHORUS_ERR_CANCELLED : why.status;
    engine_complete_all_locked(e, &c->recv_head, &c->recv_tail, request_status);
    if (c->active_recv) engine_complete_locked(e, c->active_recv, request_status);
    c->active_recv = NULL;
    for (size_t i = 0; i < e->conn_count; i++) {
        if (e->conns[i] == c) {
            e->conns[i] = e->conns[--e->conn_count];
            break;
        }
    }
    if (!c->owner_closed && !c->is_listener) {
        event_node *node = calloc(1, sizeof *node);
        if (node != NULL) {
            node->event = (chorus_event){.kind = CHORUS_EVENT_FAILED, .conn = c->id, .status = why.status,
                                         .sys_errno = why.sys_errno, .sys_call = why.call};
            engine_push_event_locked(e, node);
        }
    }
    pthread_mutex_unlock(&e->lock);

    if (c->path->teardown != NULL) c->path->teardown(e, c, request_status);
    stream_close_sends(e, c, request_status);
    engine_unwatch(e, c->fd);
    close(c->fd);
    c->fd = -1;
    engine_release(e, c); // the table's reference
}

// MARK: - Receiving

int engine_match_receive(const chorus_frame_header *h, const chorus_request *r) {
    if (h->epoch < r->epoch) return CHORUS_ERR_STALE_EPOCH;
    if (h->epoch != r->epoch) return CHORUS_ERR_EPOCH_MISMATCH;
    if (h->op_id != r->op_id) return CHORUS_ERR_OP_MISMATCH;
    if (h->tag != r->tag) return CHORUS_ERR_TAG_MISMATCH;
    if (h->length != r->length) return CHORUS_ERR_LENGTH_MISMATCH;
    return CHORUS_OK;
}

int engine_receive_chunk(chorus_engine *e, conn *c, chorus_request **active, uint32_t *filled,
                         const chorus_frame_header *h, uint32_t offset, const uint8_t *chunk, uint32_t length) {
    pthread_mutex_lock(&e->lock);
    chorus_request *r = *active;
    if (r == NULL && offset == 0) {
        r = c->recv_head;
        if (r == NULL) {
            c->receive_wanted = 1; // chorus_engine_post_recv flags the connection for attention
            pthread_mutex_unlock(&e->lock);
            return CHORUS_PATH_WAIT;
        }
        int status = engine_match_receive(h, r);
        if (status != CHORUS_OK) {
            pthread_mutex_unlock(&e->lock);
            return status;
        }
        c->recv_head = r->next;
        if (c->recv_head == NULL) c->recv_tail = NULL;
        *active = r;
        *filled = 0;
    } else if (r == NULL || offset != *filled || engine_match_receive(h, r) != CHORUS_OK) {
        pthread_mutex_unlock(&e->lock);
        return CHORUS_ERR_OUT_OF_SEQUENCE;
    }
    pthread_mutex_unlock(&e->lock);
    // Copied without the engine lock: only the io_lock holder (here, or failing the connection)
    // completes `*active`, and its owner may not free it before then.
    if (length > 0) memcpy(r->buffer + offset, chunk, length);
    *filled = offset + length;
    if (*filled == r->length) {
        pthread_mutex_lock(&e->lock);
        engine_complete_locked(e, r, CHORUS_OK);
        *active = NULL;
        pthread_mutex_unlock(&e->lock);
    }
    return CHORUS_OK;
}

// MARK: - Work on one connection (io_lock held)

/// The socket has room: writes what waits for it. Frames that wait for a next one (a queue
/// `corked`) are not written by room alone.
static void flush_queued(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&c->send_lock);
    chorus_failure failure = c->corked ? chorus_no_failure() : stream_flush_locked(e, c);
    pthread_mutex_unlock(&c->send_lock);
    if (failure.status != CHORUS_OK) engine_fail_conn(e, c, failure);
}

/// What owners asked for or ran into without the io_lock: a close, a send error, a receive posted
/// where the stream or the data path wanted one.
static void serve_attention(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int closing = c->owner_closed;
    chorus_failure pending = c->pending;
    int resume = c->receive_wanted && c->recv_head != NULL;
    if (resume) c->receive_wanted = c->stream_paused = 0;
    pthread_mutex_unlock(&e->lock);
    if (closing) engine_fail_conn(e, c, chorus_failure_of(CHORUS_ERR_CANCELLED));
    else if (pending.status != CHORUS_OK) engine_fail_conn(e, c, pending);
    else if (resume) {
        chorus_failure failure = c->path->resume(e, c);
        if (failure.status != CHORUS_OK) engine_fail_conn(e, c, failure);
    }
}

/// Whether the sender of a connection paused on an early data frame (nothing is read from it until a
/// receive is posted) has gone silent: its kernel has delivered nothing for `idle_ms` (heartbeats
/// keep arriving behind the frame while it lives), and our receive buffer has room, so the silence
/// is not our own flow control holding it back.
static int paused_sender_silent(const conn *c, uint64_t idle_ms) {
    struct tcp_info info;
    socklen_t size = sizeof info;
    int queued = 0, buffer = 0;
    socklen_t buffer_size = sizeof buffer;
    if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0 || ioctl(c->fd, FIONREAD, &queued) != 0 ||
        getsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buffer, &buffer_size) != 0)
        return 0;
    return info.tcpi_last_data_recv > idle_ms && queued < buffer / 4;
}

/// How long `c` may stay silent: the idle timeout, or earlier, a multiple of its sender's rhythm
/// (suspicion), unless this engine's I/O thread was itself held up lately (then the silence may be
/// ours: a paused process or a starved core reads late), or nothing has arrived on it yet (a fresh
/// link's other end answers when its engine first serves it, which on a crowded machine took over
/// the suspicion's 600 ms: 256 members on 2 cores failed shared-memory offers that way).
static uint64_t silence_allowed_ms(chorus_engine *e, const conn *c, uint64_t now) {
    uint64_t allowed = e->config.idle_timeout_ms;
    // Held up lately, the peers' silence may be our own: suspect nobody until they have had two
    // ticks to be heard.
    if (e->config.suspicion_multiple == 0 || !c->heard || engine_held_up_within(e, now, 2 * (uint64_t)e->tick_ms))
        return allowed;
    uint64_t suspicion = (uint64_t)c->rhythm_ms * e->config.suspicion_multiple;
    if (suspicion < e->config.suspicion_min_ms) suspicion = e->config.suspicion_min_ms;
    return suspicion < allowed ? suspicion : allowed;
}

/// The handshake deadline of an unadmitted connection, the idle timeout of a silent one (including
/// one whose stream is paused on an early data frame, judged by what its kernel received), and a
/// heartbeat on one that has sent nothing for a while.
static void serve_timers(chorus_engine *e, conn *c) {
    if (c->is_listener) return;
    uint64_t now = chorus_now_ms();
    pthread_mutex_lock(&e->lock);
    int paused = c->stream_paused, admitted = c->admitted;
    pthread_mutex_unlock(&e->lock);
    uint32_t handshake = e->config.handshake_timeout_ms;
    uint64_t idle = e->config.idle_timeout_ms > 0 ? silence_allowed_ms(e, c, now) : 0;
    uint64_t probe = __atomic_load_n(&c->probe_deadline_ms, __ATOMIC_ACQUIRE);
    int unanswered = probe != 0 && !paused && now >= probe && !engine_held_up_within(e, now, 2 * (uint64_t)e->tick_ms);
    if (!admitted && handshake > 0 && now > c->created_ms + handshake) {
        engine_fail_conn(e, c, chorus_failure_of(CHORUS_ERR_HANDSHAKE_TIMEOUT));
    } else if (unanswered || (idle > 0 && (paused ? paused_sender_silent(c, idle) : now > c->last_recv_ms + idle))) {
        engine_fail_conn(e, c, chorus_failure_of(CHORUS_ERR_IDLE_TIMEOUT));
    } else if (e->config.heartbeat_interval_ms > 0 && pthread_mutex_trylock(&c->send_lock) == 0) {
        chorus_failure failure = now >= c->last_send_ms + e->config.heartbeat_interval_ms ? stream_heartbeat_locked(e, c)
                                                                                         : chorus_no_failure();
        pthread_mutex_unlock(&c->send_lock);
        if (failure.status != CHORUS_OK) engine_fail_conn(e, c, failure);
    }
}

void engine_do_work(chorus_engine *e, conn *c, uint32_t work) {
    // Each step may fail the connection; the ones after it then have nothing to do.
    if ((work & IO_ATTENTION) && !engine_conn_failed(e, c)) serve_attention(e, c);
    if ((work & IO_TIMERS) && !engine_conn_failed(e, c)) serve_timers(e, c);
    if ((work & IO_WRITE) && !engine_conn_failed(e, c)) flush_queued(e, c);
    if (work & IO_HANGUP) c->hung_up = 1;
    if ((work & IO_READ) && !engine_conn_failed(e, c)) {
        pthread_mutex_lock(&e->lock);
        int paused = c->stream_paused;
        pthread_mutex_unlock(&e->lock);
        if (!paused) stream_read(e, c);
    }
    uint32_t slots = work >> IO_PATH_SHIFT;
    if (slots != 0 && c->path->ready != NULL && !engine_conn_failed(e, c)) {
        chorus_failure failure = c->path->ready(e, c, slots);
        if (failure.status != CHORUS_OK) engine_fail_conn(e, c, failure);
    }
    if ((work & IO_ACCEPT) && !engine_conn_failed(e, c)) engine_accept_all(e, c);
}

// MARK: - Connections

/// Registers a socket with its data path (a listener's is the one its accepted connections take),
/// and gives the path its state. `admitted`: dialed by us (an accepted one waits for the owner's
/// chorus_engine_admit). `peer_host`: who dialed an accepted one. On failure the socket is closed.
static int add_conn(chorus_engine *e, int fd, int is_listener, const chorus_data_path *path, int admitted,
                    const char *peer_host, uint16_t peer_port, chorus_conn_id *out) {
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return CHORUS_ERR_SYSTEM;
    }
    c->fd = fd;
    c->is_listener = is_listener;
    c->path = path;
    c->refs = 1; // the table's
    c->last_recv_ms = c->last_send_ms = c->created_ms = chorus_now_ms();
    c->rhythm_ms = e->config.heartbeat_interval_ms * 3 / 2; // heartbeats leave on the timer's tick (half an interval)
    c->admitted = c->data_allowed = admitted;
    if (peer_host != NULL) snprintf(c->peer_host, sizeof c->peer_host, "%s", peer_host);
    c->peer_port = peer_port;
    pthread_mutex_init(&c->io_lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    chorus_frame_header beat = {.type = CHORUS_FRAME_HEARTBEAT};
    chorus_frame_encode(&beat, c->heartbeat.header);
    chorus_failure opened = !is_listener && path->open != NULL ? path->open(e, c) : chorus_no_failure();
    if (opened.status != CHORUS_OK) {
        close(fd);
        free_conn(c);
        return opened.status;
    }

    pthread_mutex_lock(&e->lock);
    if (e->conn_count == e->conn_capacity) {
        size_t capacity = e->conn_capacity ? e->conn_capacity * 2 : 16;
        conn **grown = realloc(e->conns, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&e->lock);
            close(fd);
            free_conn(c);
            return CHORUS_ERR_SYSTEM;
        }
        e->conns = grown;
        e->conn_capacity = capacity;
    }
    c->id = ++e->next_id;
    e->conns[e->conn_count++] = c;
    pthread_mutex_unlock(&e->lock);

    struct epoll_event ev = {.events = EPOLLIN | EPOLLET | (is_listener ? 0 : EPOLLOUT | EPOLLRDHUP),
                             .data.u64 = c->id};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        chorus_failure failure = chorus_system_failure("epoll_ctl", errno);
        pthread_mutex_lock(&e->lock);
        c->owner_closed = 1;
        c->refs++; // failing drops the table's reference
        pthread_mutex_unlock(&e->lock);
        pthread_mutex_lock(&c->io_lock); // not in epoll: nobody else serves it
        engine_fail_conn(e, c, failure);
        pthread_mutex_unlock(&c->io_lock);
        engine_release(e, c);
        return failure.status;
    }
    *out = c->id;
    return CHORUS_OK;
}

/// Fails a connection the owner never saw (its set-up failed) and forgets it.
static void discard(chorus_engine *e, chorus_conn_id id) { chorus_engine_close(e, id); }

/// Past `max_unadmitted` connections still identifying themselves, fails the oldest of them: a flood
/// of connections that never finish their handshake then costs only itself, and a genuine peer,
/// which finishes within a round trip, is almost never the oldest.
static void bound_unadmitted(chorus_engine *e) {
    if (e->config.max_unadmitted == 0) return;
    pthread_mutex_lock(&e->lock);
    size_t waiting = 0;
    conn *oldest = NULL;
    for (size_t i = 0; i < e->conn_count; i++) {
        conn *c = e->conns[i];
        if (c->is_listener || c->admitted || c->failed) continue;
        waiting++;
        if (oldest == NULL || c->id < oldest->id) oldest = c;
    }
    if (waiting <= e->config.max_unadmitted) oldest = NULL;
    if (oldest != NULL) oldest->refs++;
    pthread_mutex_unlock(&e->lock);
    if (oldest == NULL) return;
    engine_fail_later(e, oldest, chorus_failure_of(CHORUS_ERR_HANDSHAKE_FLOOD));
    engine_release(e, oldest);
}

void engine_accept_all(chorus_engine *e, conn *listener) {
    for (;;) {
        int fd = accept4(listener->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return; // EAGAIN, or out of descriptors: try again on the next edge
        }
        chorus_socket_configure(fd, e->config.socket_buffer_bytes);
        pthread_mutex_lock(&e->lock);
        int flooded = e->event_count >= e->config.max_queued_events;
        pthread_mutex_unlock(&e->lock);
        if (flooded) {
            close(fd);
            continue;
        }
        // The dialer's address: for logs, and a data path may match its own link to it.
        struct sockaddr_storage peer;
        socklen_t size = sizeof peer;
        char peer_host[64] = "";
        uint16_t peer_port = 0;
        if (getpeername(fd, (struct sockaddr *)&peer, &size) == 0) chorus_socket_describe(&peer, peer_host, sizeof peer_host, &peer_port);
        // Without a handshake deadline there is no identification stage: admitted at once.
        int admitted = e->config.handshake_timeout_ms == 0;
        chorus_conn_id id;
        if (add_conn(e, fd, 0, listener->path, admitted, peer_host, peer_port, &id) != CHORUS_OK) continue;
        event_node *node = calloc(1, sizeof *node);
        pthread_mutex_lock(&e->lock);
        if (node != NULL) {
            node->event = (chorus_event){.kind = CHORUS_EVENT_ACCEPTED, .conn = id};
            engine_push_event_locked(e, node);
        }
        pthread_mutex_unlock(&e->lock);
        // The socket may already hold the peer's first frame; with edge triggering nobody else reads it.
        conn *c = engine_acquire(e, id);
        if (c != NULL) {
            engine_serve(e, c, IO_READ);
            engine_release(e, c);
        }
        if (!admitted) bound_unadmitted(e);
    }
}

// MARK: - Public API

/// The data path of a chorus_data_path_kind, if it is known and available here.
static int usable_path(int kind, const chorus_data_path **out) {
    const chorus_data_path *path = chorus_data_path_for(kind);
    if (path == NULL) return CHORUS_ERR_INVALID_ARGUMENT;
    int status = path->available != NULL ? path->available(NULL, 0) : CHORUS_OK;
    if (status == CHORUS_OK) *out = path;
    return status;
}

int chorus_engine_listen(chorus_engine *e, const char *host, uint16_t port, uint16_t last_port, int backlog, int kind,
                         uint16_t *bound_port) {
    const chorus_data_path *path;
    int status = usable_path(kind, &path); // before binding anything
    if (status != CHORUS_OK) return status;
    int fd;
    if ((status = chorus_socket_listen(host, port, last_port, backlog, &fd, bound_port)) != CHORUS_OK) return status;
    chorus_conn_id id;
    if ((status = add_conn(e, fd, 1, path, 1, NULL, 0, &id)) != CHORUS_OK || path->listen == NULL) return status;
    conn *c = engine_acquire(e, id);
    chorus_failure failure = c != NULL ? path->listen(e, c, host, *bound_port) : chorus_failure_of(CHORUS_ERR_NO_SUCH_CONNECTION);
    if (c != NULL) engine_release(e, c);
    if (failure.status != CHORUS_OK) discard(e, id);
    return failure.status;
}

int chorus_engine_connect(chorus_engine *e, const char *host, uint16_t port, int timeout_ms, int kind, chorus_conn_id *out) {
    const chorus_data_path *path;
    int status = usable_path(kind, &path);
    if (status != CHORUS_OK) return status;
    uint64_t deadline = chorus_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    int fd;
    if ((status = chorus_socket_connect(host, port, timeout_ms, e->config.socket_buffer_bytes, &fd)) != CHORUS_OK) return status;
    if ((status = add_conn(e, fd, 0, path, 1, NULL, 0, out)) != CHORUS_OK || path->dial == NULL) return status;
    conn *c = engine_acquire(e, *out);
    chorus_failure failure = c != NULL ? path->dial(e, c, host, port, deadline) : chorus_failure_of(CHORUS_ERR_NO_SUCH_CONNECTION);
    if (c != NULL) engine_release(e, c);
    if (failure.status != CHORUS_OK) {
        discard(e, *out);
        if (failure.call != NULL)
            chorus_note_failure("%s:%u: setting up the data path: %s: %s", host, (unsigned)port, failure.call, strerror(failure.sys_errno));
        else
            chorus_note_failure("%s:%u: setting up the data path: %s", host, (unsigned)port, chorus_status_string(failure.status));
    }
    return failure.status;
}

int chorus_engine_admit(chorus_engine *e, chorus_conn_id id, int allow_data) {
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    pthread_mutex_lock(&e->lock);
    c->admitted = 1;
    c->data_allowed = allow_data != 0;
    int refused = c->stream_paused && !c->data_allowed; // a data frame already waits on it
    pthread_mutex_unlock(&e->lock);
    if (refused) engine_fail_later(e, c, chorus_failure_of(CHORUS_ERR_UNEXPECTED_DATA));
    engine_release(e, c);
    return CHORUS_OK;
}

size_t chorus_engine_connection_count(chorus_engine *e) {
    size_t count = 0;
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < e->conn_count; i++) count += !e->conns[i]->is_listener;
    pthread_mutex_unlock(&e->lock);
    return count;
}

int chorus_engine_remote_address(chorus_engine *e, chorus_conn_id id, char *host, size_t host_size, uint16_t *port) {
    if (host == NULL || host_size == 0 || port == NULL) return CHORUS_ERR_INVALID_ARGUMENT;
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    snprintf(host, host_size, "%s", c->peer_host);
    *port = c->peer_port;
    engine_release(e, c);
    return CHORUS_OK;
}

/// Removes the queued control events of connection `id`: its owner closed it, and no event of a
/// closed connection reaches the owner (a refused stranger's next frames would otherwise be judged,
/// and refused, again).
static void drop_queued_events_locked(chorus_engine *e, chorus_conn_id id) {
    event_node **link = &e->event_head, *last = NULL;
    while (*link != NULL) {
        event_node *node = *link;
        if (node->event.conn == id && node->event.kind == CHORUS_EVENT_CONTROL) {
            *link = node->next;
            e->control_bytes -= node->event.header.length;
            __atomic_store_n(&e->event_count, e->event_count - 1, __ATOMIC_RELEASE);
            free(node->event.payload);
            free(node);
        } else {
            last = node;
            link = &node->next;
        }
    }
    e->event_tail = last;
}

int chorus_engine_close(chorus_engine *e, chorus_conn_id id) {
    pthread_mutex_lock(&e->lock);
    conn *c = find_locked(e, id);
    if (c != NULL) {
        drop_queued_events_locked(e, id);
        c->owner_closed = 1;
        c->refs++;
    }
    pthread_mutex_unlock(&e->lock);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    engine_serve(e, c, IO_ATTENTION); // here, unless another thread is serving it right now
    engine_release(e, c);
    return CHORUS_OK;
}

int chorus_engine_probe(chorus_engine *e, chorus_conn_id id, uint32_t answer_within_ms) {
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    // Armed before the frame leaves: the answer may arrive before this call returns. A sender whose
    // heartbeats come slower than asked gets its own rhythm (its engine answers on its tick).
    uint32_t rhythm = __atomic_load_n(&c->rhythm_ms, __ATOMIC_RELAXED);
    uint64_t deadline = chorus_now_ms() + (answer_within_ms > rhythm ? answer_within_ms : rhythm), none = 0;
    int armed = __atomic_compare_exchange_n(&c->probe_deadline_ms, &none, deadline, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    chorus_frame_header probe = {.type = CHORUS_FRAME_PROBE};
    int status = engine_send_signal(e, c, &probe);
    if (status == CHORUS_OK && armed) engine_timers_due_by(e, deadline);
    engine_release(e, c);
    return status;
}

/// Queues a control frame, written at once or (`later`) at the next send, flush or heartbeat.
static int send_control(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id,
                        const void *payload, uint32_t length, int later) {
    if (length > e->config.max_control_bytes || (length > 0 && payload == NULL)) return CHORUS_ERR_INVALID_ARGUMENT;
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    send_item *item = malloc(sizeof *item + length);
    if (item == NULL) {
        engine_release(e, c);
        return CHORUS_ERR_SYSTEM;
    }
    chorus_frame_header h = {.type = CHORUS_FRAME_CONTROL, .length = length, .epoch = epoch, .op_id = op_id};
    *item = (send_item){.payload = (const uint8_t *)(item + 1), .length = length, .heap_owned = 1};
    chorus_frame_encode(&h, item->header);
    if (length > 0) memcpy(item + 1, payload, length);
    int status = later ? engine_submit_later(e, c, item) : engine_submit(e, c, item);
    if (status != CHORUS_OK) free(item);
    engine_release(e, c);
    return status;
}

int chorus_engine_send_control(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id,
                               const void *payload, uint32_t length) {
    return send_control(e, id, epoch, op_id, payload, length, 0);
}

int chorus_engine_send_control_later(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id,
                                     const void *payload, uint32_t length) {
    return send_control(e, id, epoch, op_id, payload, length, 1);
}

int chorus_engine_flush(chorus_engine *e, chorus_conn_id id) {
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    pthread_mutex_lock(&c->send_lock);
    chorus_failure failure = stream_uncork_locked(e, c);
    pthread_mutex_unlock(&c->send_lock);
    if (failure.status != CHORUS_OK) engine_fail_later(e, c, failure);
    engine_release(e, c);
    return CHORUS_OK;
}

static int post_send(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id, uint32_t tag,
                     const void *buffer, uint32_t length, int with_next, chorus_request **out) {
    if (out == NULL || (length > 0 && buffer == NULL)) return CHORUS_ERR_INVALID_ARGUMENT;
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    chorus_request *r = calloc(1, sizeof *r);
    if (r == NULL) {
        engine_release(e, c);
        return CHORUS_ERR_SYSTEM;
    }
    chorus_frame_header h = {.type = CHORUS_FRAME_DATA, .tag = tag, .length = length, .epoch = epoch, .op_id = op_id};
    chorus_frame_encode(&h, r->item.header);
    r->item.payload = buffer;
    r->item.length = length;
    r->item.request = r;
    r->item.with_next = with_next;
    __atomic_add_fetch(&e->in_flight, 1, __ATOMIC_SEQ_CST); // before it can complete
    int status = c->path->post_send(e, c, r).status;
    engine_release(e, c);
    if (status != CHORUS_OK) {
        __atomic_sub_fetch(&e->in_flight, 1, __ATOMIC_SEQ_CST);
        free(r);
        return status;
    }
    *out = r;
    return CHORUS_OK;
}

int chorus_engine_post_send(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id, uint32_t tag,
                            const void *buffer, uint32_t length, chorus_request **out) {
    return post_send(e, id, epoch, op_id, tag, buffer, length, 0, out);
}

int chorus_engine_post_send_with_next(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id, uint32_t tag,
                                      const void *buffer, uint32_t length, chorus_request **out) {
    return post_send(e, id, epoch, op_id, tag, buffer, length, 1, out);
}

int chorus_engine_post_recv(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id, uint32_t tag,
                            void *buffer, uint32_t length, chorus_request **out) {
    if (out == NULL || (length > 0 && buffer == NULL)) return CHORUS_ERR_INVALID_ARGUMENT;
    chorus_request *r = calloc(1, sizeof *r);
    if (r == NULL) return CHORUS_ERR_SYSTEM;
    *r = (chorus_request){.epoch = epoch, .op_id = op_id, .tag = tag, .length = length, .buffer = buffer};
    pthread_mutex_lock(&e->lock);
    conn *c = find_locked(e, id);
    if (c == NULL) {
        pthread_mutex_unlock(&e->lock);
        free(r);
        return CHORUS_ERR_NO_SUCH_CONNECTION;
    }
    if (c->recv_tail) c->recv_tail->next = r; else c->recv_head = r;
    c->recv_tail = r;
    __atomic_add_fetch(&e->in_flight, 1, __ATOMIC_SEQ_CST);
    // A connection that wanted a receive resumes when this engine next makes progress: in the owner's
    // wait for the receive, or at the I/O thread's next tick; not inline, so posting never reads a
    // whole frame.
    if (c->receive_wanted) {
        c->needs_attention = 1;
        __atomic_store_n(&e->attention, 1, __ATOMIC_RELEASE); // also peeked without the lock
    }
    pthread_mutex_unlock(&e->lock);
    *out = r;
    return CHORUS_OK;
}
