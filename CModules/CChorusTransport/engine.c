// The engine's connections: the table, sending, reading frames, accepting, failing, and the public
// calls on connections. Who drives them (the I/O thread, or a caller waiting in the engine) is in
// engine_progress.c.
//
// Locking (always taken in this order):
//   conn->io_lock    – the read side (header and payload progress, the receive being filled), the
//                      connection's timers and its failure; held by whichever thread serves the
//                      connection (engine_serve), never waited for while another io_lock is held.
//   conn->send_lock  – the send queue and the socket's write side; held by whichever thread writes
//                      (the owner posts and writes inline when the queue is empty, which saves a
//                      thread hop per message; the io_lock holder flushes the rest on EPOLLOUT).
//   conn->rdma_lock  – an RDMA connection's link, slots, credits and queued data sends (engine_rdma.c);
//                      taken before engine->lock, never together with send_lock.
//   engine->lock     – the connection table, posted receives, request completion, the event queue.
// Sockets are edge-triggered: a reader stops only at EAGAIN, or when a data header waits for a
// receive to be posted (then the connection is "paused" and its idle timer stops, because the stall
// is ours, not the peer's).
#define _GNU_SOURCE
#include "engine_internal.h"

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

static void free_conn(conn *c) {
    pthread_mutex_destroy(&c->io_lock);
    pthread_mutex_destroy(&c->send_lock);
    pthread_mutex_destroy(&c->rdma_lock);
    free(c->control_payload);
    free(c);
}

void engine_release(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&e->lock);
    if (last) free_conn(c);
}

int engine_errno_status(int error) {
    return error == 0 || error == EPIPE || error == ECONNRESET ? CHORUS_ERR_PEER_CLOSED : CHORUS_ERR_SYSTEM;
}

void engine_fail_later(chorus_engine *e, conn *c, int status, int sys_errno) {
    pthread_mutex_lock(&e->lock);
    if (c->pending_status == CHORUS_OK) {
        c->pending_status = status;
        c->pending_errno = sys_errno;
    }
    pthread_mutex_unlock(&e->lock);
    engine_serve(e, c, IO_ATTENTION);
}

// MARK: - Sending (caller holds c->send_lock)

static void enqueue_send(conn *c, send_item *item) {
    item->next = NULL;
    if (c->send_tail) c->send_tail->next = item; else c->send_head = item;
    c->send_tail = item;
}

static void finish_item(chorus_engine *e, send_item *item, int status) {
    if (item->request != NULL) {
        pthread_mutex_lock(&e->lock);
        engine_complete_locked(e, item->request, status);
        pthread_mutex_unlock(&e->lock);
    } else if (item->heap_owned) {
        free(item);
    }
}

void engine_arm_credit_locked(conn *c) {
    chorus_frame_header h = {.type = CHORUS_FRAME_CREDIT, .tag = c->credits_owed};
    chorus_frame_encode(&h, c->credit.header);
    c->credit.header_sent = 0;
    c->credits_owed = 0;
    c->credit_queued = 1;
}

/// Writes queued frames until the queue is empty or the socket is full. Returns 0, or errno.
static int flush_sends(chorus_engine *e, conn *c) {
    while (c->send_head != NULL && !c->send_closed) {
        send_item *item = c->send_head;
        struct iovec iov[2];
        int n = 0;
        if (item->header_sent < CHORUS_FRAME_HEADER_BYTES)
            iov[n++] = (struct iovec){item->header + item->header_sent, CHORUS_FRAME_HEADER_BYTES - item->header_sent};
        if (item->payload_sent < item->length)
            iov[n++] = (struct iovec){(void *)(item->payload + item->payload_sent), item->length - item->payload_sent};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0; // EPOLLOUT will resume us
            return errno;
        }
        c->last_send_ms = chorus_now_ms();
        size_t left = (size_t)sent;
        uint32_t header_part = CHORUS_FRAME_HEADER_BYTES - item->header_sent;
        if (left >= header_part) {
            item->header_sent = CHORUS_FRAME_HEADER_BYTES;
            item->payload_sent += (uint32_t)(left - header_part);
        } else {
            item->header_sent += (uint32_t)left;
        }
        if (item->header_sent == CHORUS_FRAME_HEADER_BYTES && item->payload_sent == item->length) {
            c->send_head = item->next;
            if (c->send_head == NULL) c->send_tail = NULL;
            if (item == &c->credit) {
                c->credit_queued = 0;
                if (c->credits_owed > 0) { // more slots were freed while it waited: send those too
                    engine_arm_credit_locked(c);
                    enqueue_send(c, item);
                }
            } else {
                finish_item(e, item, CHORUS_OK);
            }
        }
    }
    return 0;
}

/// Queues an item and writes what the socket takes now; a write error fails the connection through
/// engine_fail_later (the read side, torn down too, belongs to the io_lock holder).
int engine_submit(chorus_engine *e, conn *c, send_item *item) {
    pthread_mutex_lock(&c->send_lock);
    if (c->send_closed) {
        pthread_mutex_unlock(&c->send_lock);
        return CHORUS_ERR_NO_SUCH_CONNECTION;
    }
    int was_idle = c->send_head == NULL;
    enqueue_send(c, item);
    int error = was_idle ? flush_sends(e, c) : 0;
    pthread_mutex_unlock(&c->send_lock);
    if (error != 0) engine_fail_later(e, c, engine_errno_status(error), error);
    return CHORUS_OK;
}

// MARK: - Failing and closing (io_lock held)

void engine_fail_conn(chorus_engine *e, conn *c, int status, int sys_errno) {
    pthread_mutex_lock(&e->lock);
    if (c->failed) {
        pthread_mutex_unlock(&e->lock);
        return;
    }
    c->failed = 1;
    e->control_bytes -= c->control_reserved;
    c->control_reserved = 0;
    int request_status = c->owner_closed ? CHORUS_ERR_CANCELLED : status;
    for (chorus_request *r = c->recv_head; r != NULL;) {
        chorus_request *next = r->next;
        engine_complete_locked(e, r, request_status);
        r = next;
    }
    c->recv_head = c->recv_tail = NULL;
    if (c->active_recv) engine_complete_locked(e, c->active_recv, request_status);
    c->active_recv = NULL;
    if (c->rdma_active) engine_complete_locked(e, c->rdma_active, request_status);
    c->rdma_active = NULL;
    for (size_t i = 0; i < e->conn_count; i++) {
        if (e->conns[i] == c) {
            e->conns[i] = e->conns[--e->conn_count];
            break;
        }
    }
    if (!c->owner_closed && !c->is_listener) {
        event_node *node = calloc(1, sizeof *node);
        if (node != NULL) {
            node->event = (chorus_event){.kind = CHORUS_EVENT_FAILED, .conn = c->id, .status = status,
                                         .sys_errno = sys_errno};
            engine_push_event_locked(e, node);
        }
    }
    pthread_mutex_unlock(&e->lock);

    if (c->uses_rdma) rdma_teardown(e, c, request_status);
    if (c->rdma_listener != NULL) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, rdma_listener_fd(c->rdma_listener), NULL);
        rdma_listener_destroy(c->rdma_listener);
        c->rdma_listener = NULL;
    }
    pthread_mutex_lock(&c->send_lock);
    c->send_closed = 1;
    for (send_item *item = c->send_head; item != NULL;) {
        send_item *next = item->next;
        if (item != &c->heartbeat && item != &c->credit) finish_item(e, item, request_status);
        item = next;
    }
    c->send_head = c->send_tail = NULL;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    pthread_mutex_unlock(&c->send_lock);
    engine_release(e, c); // the table's reference
}

// MARK: - Receiving (io_lock held)

int engine_match_receive(const chorus_frame_header *h, const chorus_request *r) {
    if (h->epoch < r->epoch) return CHORUS_ERR_STALE_EPOCH;
    if (h->epoch != r->epoch) return CHORUS_ERR_EPOCH_MISMATCH;
    if (h->op_id != r->op_id) return CHORUS_ERR_OP_MISMATCH;
    if (h->tag != r->tag) return CHORUS_ERR_TAG_MISMATCH;
    if (h->length != r->length) return CHORUS_ERR_LENGTH_MISMATCH;
    return CHORUS_OK;
}

static void frame_done(conn *c) {
    c->have_header = 0;
    c->header_got = 0;
    c->payload_got = 0;
    c->control_payload = NULL;
    c->active_recv = NULL;
}

/// Finishes a frame whose payload is complete. Returns a status that fails the connection, or OK.
static int deliver(chorus_engine *e, conn *c) {
    int status = CHORUS_OK;
    pthread_mutex_lock(&e->lock);
    if (c->header.type == CHORUS_FRAME_CONTROL && c->owner_closed) {
        // Closed by the owner while the frame was read: no event of it follows the close.
        free(c->control_payload);
        e->control_bytes -= c->control_reserved;
        c->control_reserved = 0;
    } else if (c->header.type == CHORUS_FRAME_CONTROL) {
        event_node *node = calloc(1, sizeof *node);
        if (node == NULL) {
            status = CHORUS_ERR_SYSTEM;
        } else {
            node->event = (chorus_event){.kind = CHORUS_EVENT_CONTROL, .conn = c->id, .header = c->header,
                                         .payload = c->control_payload};
            engine_push_event_locked(e, node);
            c->control_payload = NULL;
            c->control_reserved = 0; // counted until the owner takes the event
            c->delivered_control = 1;
        }
    } else if (c->active_recv != NULL) {
        engine_complete_locked(e, c->active_recv, CHORUS_OK);
    }
    pthread_mutex_unlock(&e->lock);
    if (status == CHORUS_OK) frame_done(c);
    return status;
}

/// Prepares to receive the payload of a freshly decoded header. Returns OK, a failure status, or
/// CHORUS_ERR_INTERRUPTED when the connection pauses (a data frame with no receive posted yet).
static int begin_payload(chorus_engine *e, conn *c) {
    switch (c->header.type) {
    case CHORUS_FRAME_HEARTBEAT:
        frame_done(c);
        return CHORUS_OK;
    case CHORUS_FRAME_CONTROL: {
        // The length was bounded by max_control_bytes in chorus_frame_decode; before admission a
        // connection may send only small frames, and every connection shares one budget, so a flood
        // of unfinished frames cannot take the memory legitimate peers need.
        pthread_mutex_lock(&e->lock);
        int status = CHORUS_OK;
        uint64_t budget = e->config.max_buffered_control_bytes;
        if (e->event_count >= e->config.max_queued_events) status = CHORUS_ERR_TOO_MANY_QUEUED;
        else if (!c->admitted && c->header.length > CHORUS_UNADMITTED_MAX_CONTROL_BYTES) status = CHORUS_ERR_CONTROL_TOO_LARGE;
        else if (budget > 0 && e->control_bytes + c->header.length > budget) status = CHORUS_ERR_CONTROL_BUDGET;
        if (status == CHORUS_OK) {
            e->control_bytes += c->header.length;
            c->control_reserved = c->header.length;
        }
        pthread_mutex_unlock(&e->lock);
        if (status != CHORUS_OK) return status;
        c->control_payload = malloc(c->header.length > 0 ? c->header.length : 1);
        return c->control_payload != NULL ? CHORUS_OK : CHORUS_ERR_SYSTEM;
    }
    default: { // data
        pthread_mutex_lock(&e->lock);
        // A data frame may wait for admission only behind a control frame the owner has yet to judge
        // (a hello, with the sender's first data right behind it); before any, or on a connection
        // admitted for control only, it is a violation.
        if (c->admitted ? !c->data_allowed : !c->delivered_control) {
            pthread_mutex_unlock(&e->lock);
            return CHORUS_ERR_UNEXPECTED_DATA;
        }
        chorus_request *r = c->recv_head;
        if (r == NULL) {
            c->paused = 1;
            pthread_mutex_unlock(&e->lock);
            return CHORUS_ERR_INTERRUPTED;
        }
        int status = engine_match_receive(&c->header, r);
        if (status == CHORUS_OK) {
            c->recv_head = r->next;
            if (c->recv_head == NULL) c->recv_tail = NULL;
            c->active_recv = r;
        }
        pthread_mutex_unlock(&e->lock);
        return status;
    }
    }
}

/// Learns the rhythm of a connection's sender from a silence that just ended: only silences of at
/// least half a heartbeat interval count (within a burst of frames the gaps say nothing about
/// liveness). A longer one is taken at once and a shorter one pulls the rhythm down by an eighth of
/// the difference, so a slow moment (a core taken by other load) raises the bar at once and it comes
/// down over a few seconds of regular heartbeats.
static void note_silence(chorus_engine *e, conn *c, uint64_t silence_ms) {
    if (silence_ms * 2 < e->config.heartbeat_interval_ms) return;
    if (silence_ms >= c->rhythm_ms) c->rhythm_ms = silence_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)silence_ms;
    else c->rhythm_ms -= (uint32_t)((c->rhythm_ms - silence_ms) / 8);
}

/// Queues a heartbeat and writes what the socket takes, unless frames are queued already (they say
/// as much). Caller holds c->send_lock. Returns 0, or errno.
static int send_heartbeat_locked(chorus_engine *e, conn *c) {
    if (c->send_closed || c->send_head != NULL) return 0;
    c->heartbeat.header_sent = 0;
    enqueue_send(c, &c->heartbeat);
    return flush_sends(e, c);
}

/// Answers a probe on an admitted connection (a stranger gets nothing). Returns 0, or errno.
static int answer_probe(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int admitted = c->admitted;
    pthread_mutex_unlock(&e->lock);
    if (!admitted) return 0;
    pthread_mutex_lock(&c->send_lock);
    int error = send_heartbeat_locked(e, c);
    pthread_mutex_unlock(&c->send_lock);
    return error;
}

/// Reads what the socket holds, up to `length`. Returns the bytes read, 0 when the socket is drained
/// (EAGAIN), or -1 when the connection failed (and has been failed here).
static ssize_t read_some(chorus_engine *e, conn *c, void *buffer, size_t length) {
    for (;;) {
        ssize_t got = recv(c->fd, buffer, length, 0);
        if (got > 0) {
            __atomic_store_n(&c->probe_deadline_ms, 0, __ATOMIC_RELEASE); // any sign of life answers a probe
            uint64_t now = chorus_now_ms();
            note_silence(e, c, now - c->last_recv_ms);
            c->last_recv_ms = now;
            return got;
        }
        int error = got == 0 ? 0 : errno;
        if (error == EINTR) continue;
        if (error == EAGAIN || error == EWOULDBLOCK) return 0;
        engine_fail_conn(e, c, engine_errno_status(error), error);
        return -1;
    }
}

static void read_conn(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int failed = c->failed;
    pthread_mutex_unlock(&e->lock);
    if (failed) return;
    for (;;) {
        if (!c->have_header) {
            ssize_t got = read_some(e, c, c->header_raw + c->header_got, CHORUS_FRAME_HEADER_BYTES - c->header_got);
            if (got <= 0) return;
            c->header_got += (uint32_t)got;
            if (c->header_got < CHORUS_FRAME_HEADER_BYTES) continue;
            int status = chorus_frame_decode(c->header_raw, e->config.max_control_bytes, &c->header);
            if (status != CHORUS_OK) { engine_fail_conn(e, c, status, 0); return; }
            c->have_header = 1;
            if (c->header.type == CHORUS_FRAME_HEARTBEAT || c->header.type == CHORUS_FRAME_PROBE) {
                int error = c->header.type == CHORUS_FRAME_PROBE ? answer_probe(e, c) : 0;
                if (error != 0) { engine_fail_conn(e, c, engine_errno_status(error), error); return; }
                frame_done(c);
                continue;
            }
            if (c->header.type == CHORUS_FRAME_CREDIT || (c->header.type == CHORUS_FRAME_DATA && c->uses_rdma)) {
                // Credits belong to RDMA connections, whose data never travels on the socket, and
                // only once data may flow.
                pthread_mutex_lock(&e->lock);
                int data_allowed = c->data_allowed;
                pthread_mutex_unlock(&e->lock);
                if (!data_allowed) status = CHORUS_ERR_UNEXPECTED_DATA;
                else status = c->uses_rdma && c->header.type == CHORUS_FRAME_CREDIT ? rdma_on_credit(e, c, c->header.tag)
                                                                                    : CHORUS_ERR_UNEXPECTED_CONTROL;
                if (status != CHORUS_OK) { engine_fail_conn(e, c, status, 0); return; }
                frame_done(c);
                continue;
            }
        }
        if (c->header.type == CHORUS_FRAME_DATA && c->active_recv == NULL) {
            int status = begin_payload(e, c);
            if (status == CHORUS_ERR_INTERRUPTED) return; // paused until a receive is posted
            if (status != CHORUS_OK) { engine_fail_conn(e, c, status, 0); return; }
        } else if (c->header.type == CHORUS_FRAME_CONTROL && c->control_payload == NULL) {
            int status = begin_payload(e, c);
            if (status != CHORUS_OK) { engine_fail_conn(e, c, status, 0); return; }
        }
        uint8_t *target = c->header.type == CHORUS_FRAME_CONTROL ? c->control_payload : c->active_recv->buffer;
        if (c->payload_got < c->header.length) {
            ssize_t got = read_some(e, c, target + c->payload_got, c->header.length - c->payload_got);
            if (got <= 0) return;
            c->payload_got += (uint32_t)got;
            if (c->payload_got < c->header.length) continue;
        }
        int status = deliver(e, c);
        if (status != CHORUS_OK) { engine_fail_conn(e, c, status, 0); return; }
    }
}

// MARK: - Work on one connection (io_lock held)

static int conn_failed(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int failed = c->failed;
    pthread_mutex_unlock(&e->lock);
    return failed;
}

static void flush_queued(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&c->send_lock);
    int error = flush_sends(e, c);
    pthread_mutex_unlock(&c->send_lock);
    if (error != 0) engine_fail_conn(e, c, engine_errno_status(error), error);
}

/// What owners asked for or ran into without the io_lock: a close, a send error, a receive posted
/// on a connection paused for want of one.
static void serve_attention(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int closing = c->owner_closed, status = c->pending_status, sys_errno = c->pending_errno;
    int resume = c->paused && c->recv_head != NULL;
    if (resume) c->paused = 0;
    int rdma_resume = c->rdma_paused && c->recv_head != NULL;
    if (rdma_resume) c->rdma_paused = 0;
    pthread_mutex_unlock(&e->lock);
    if (closing) engine_fail_conn(e, c, CHORUS_ERR_CANCELLED, 0);
    else if (status != CHORUS_OK) engine_fail_conn(e, c, status, sys_errno);
    else if (resume) read_conn(e, c);
    else if (rdma_resume) {
        int consumed = rdma_consume(e, c);
        if (consumed != CHORUS_OK) engine_fail_conn(e, c, consumed, 0);
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
/// ours: a paused process or a starved core reads late).
static uint64_t silence_allowed_ms(chorus_engine *e, const conn *c, uint64_t now) {
    uint64_t allowed = e->config.idle_timeout_ms;
    if (e->config.suspicion_multiple == 0 || now < __atomic_load_n(&e->judge_from_ms, __ATOMIC_ACQUIRE)) return allowed;
    uint64_t suspicion = (uint64_t)c->rhythm_ms * e->config.suspicion_multiple;
    if (suspicion < e->config.suspicion_min_ms) suspicion = e->config.suspicion_min_ms;
    return suspicion < allowed ? suspicion : allowed;
}

/// The handshake deadline of an unadmitted connection, the idle timeout of a silent one (including
/// one paused on an early data frame, judged by what its kernel received), and a heartbeat on one
/// that has sent nothing for a while.
static void serve_timers(chorus_engine *e, conn *c) {
    if (c->is_listener) return;
    uint64_t now = chorus_now_ms();
    pthread_mutex_lock(&e->lock);
    int paused = c->paused, admitted = c->admitted;
    pthread_mutex_unlock(&e->lock);
    uint32_t handshake = e->config.handshake_timeout_ms;
    uint64_t idle = e->config.idle_timeout_ms > 0 ? silence_allowed_ms(e, c, now) : 0;
    uint64_t probe = __atomic_load_n(&c->probe_deadline_ms, __ATOMIC_ACQUIRE);
    int unanswered = probe != 0 && !paused && now >= probe && now >= __atomic_load_n(&e->judge_from_ms, __ATOMIC_ACQUIRE);
    if (!admitted && handshake > 0 && now > c->created_ms + handshake) {
        engine_fail_conn(e, c, CHORUS_ERR_HANDSHAKE_TIMEOUT, 0);
    } else if (unanswered || (idle > 0 && (paused ? paused_sender_silent(c, idle) : now > c->last_recv_ms + idle))) {
        engine_fail_conn(e, c, CHORUS_ERR_IDLE_TIMEOUT, 0);
    } else if (e->config.heartbeat_interval_ms > 0 && pthread_mutex_trylock(&c->send_lock) == 0) {
        int error = now >= c->last_send_ms + e->config.heartbeat_interval_ms ? send_heartbeat_locked(e, c) : 0;
        pthread_mutex_unlock(&c->send_lock);
        if (error != 0) engine_fail_conn(e, c, engine_errno_status(error), error);
    }
}

void engine_do_work(chorus_engine *e, conn *c, uint32_t work) {
    // Each step may fail the connection; the ones after it then have nothing to do.
    if ((work & IO_ATTENTION) && !conn_failed(e, c)) serve_attention(e, c);
    if ((work & IO_TIMERS) && !conn_failed(e, c)) serve_timers(e, c);
    if ((work & IO_WRITE) && !conn_failed(e, c)) flush_queued(e, c);
    if ((work & IO_READ) && !conn_failed(e, c)) {
        pthread_mutex_lock(&e->lock);
        int paused = c->paused;
        pthread_mutex_unlock(&e->lock);
        if (!paused) read_conn(e, c);
    }
    if ((work & IO_RDMA_CQ) && !conn_failed(e, c)) rdma_on_completions(e, c);
    if ((work & IO_RDMA_CM) && !conn_failed(e, c)) rdma_on_cm_events(e, c);
    if ((work & IO_ACCEPT) && !conn_failed(e, c)) engine_accept_all(e, c);
    if ((work & IO_RDMA_ACCEPT) && !conn_failed(e, c)) rdma_on_listener(e, c);
}

// MARK: - Connections

/// Registers a socket. `uses_rdma`: its data frames travel on an RDMA link attached afterwards.
/// `admitted`: dialed by us (an accepted one waits for the owner's chorus_engine_admit).
static int add_conn(chorus_engine *e, int fd, int is_listener, int uses_rdma, int admitted, chorus_conn_id *out) {
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) return CHORUS_ERR_SYSTEM;
    c->fd = fd;
    c->is_listener = is_listener;
    c->uses_rdma = uses_rdma && !is_listener;
    pthread_mutex_init(&c->rdma_lock, NULL);
    c->refs = 1; // the table's
    c->last_recv_ms = c->last_send_ms = c->created_ms = chorus_now_ms();
    c->rhythm_ms = e->config.heartbeat_interval_ms * 3 / 2; // heartbeats leave on the timer's tick (half an interval)
    c->admitted = c->data_allowed = admitted;
    pthread_mutex_init(&c->io_lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    chorus_frame_header beat = {.type = CHORUS_FRAME_HEARTBEAT};
    chorus_frame_encode(&beat, c->heartbeat.header);

    pthread_mutex_lock(&e->lock);
    if (e->conn_count == e->conn_capacity) {
        size_t capacity = e->conn_capacity ? e->conn_capacity * 2 : 16;
        conn **grown = realloc(e->conns, capacity * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&e->lock);
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
        int saved = errno;
        pthread_mutex_lock(&e->lock);
        c->owner_closed = 1;
        c->refs++; // failing drops the table's reference
        pthread_mutex_unlock(&e->lock);
        pthread_mutex_lock(&c->io_lock); // not in epoll: nobody else serves it
        engine_fail_conn(e, c, CHORUS_ERR_SYSTEM, saved);
        pthread_mutex_unlock(&c->io_lock);
        engine_release(e, c);
        return CHORUS_ERR_SYSTEM;
    }
    *out = c->id;
    return CHORUS_OK;
}

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
    engine_fail_later(e, oldest, CHORUS_ERR_HANDSHAKE_FLOOD, 0);
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
        chorus_conn_id id;
        int rdma = listener->rdma_listener != NULL;
        // Without a handshake deadline there is no identification stage: admitted at once.
        int admitted = e->config.handshake_timeout_ms == 0;
        if (flooded || add_conn(e, fd, 0, rdma, admitted, &id) != CHORUS_OK) {
            if (flooded) close(fd);
            continue;
        }
        { // remember the dialer's address: for logs, and an RDMA link names this connection by it
            struct sockaddr_storage peer;
            socklen_t size = sizeof peer;
            conn *accepted = engine_acquire(e, id);
            if (accepted != NULL && getpeername(fd, (struct sockaddr *)&peer, &size) == 0)
                chorus_socket_describe(&peer, accepted->peer_host, sizeof accepted->peer_host, &accepted->peer_port);
            if (accepted != NULL) engine_release(e, accepted);
        }
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

int chorus_engine_listen(chorus_engine *e, const char *host, uint16_t port, uint16_t last_port, int backlog, int rdma,
                         uint16_t *bound_port) {
    rdma_listener *listener = NULL;
    if (rdma) { // fail before binding anything when RDMA is not there
        int status = chorus_rdma_probe(NULL, 0);
        if (status != CHORUS_OK) return status;
    }
    int fd;
    int status = chorus_socket_listen(host, port, last_port, backlog, &fd, bound_port);
    if (status != CHORUS_OK) return status;
    if (rdma && (status = rdma_listener_create(host, *bound_port, &listener)) != CHORUS_OK) {
        close(fd);
        return status;
    }
    chorus_conn_id id;
    if ((status = add_conn(e, fd, 1, 0, 1, &id)) != CHORUS_OK) {
        rdma_listener_destroy(listener);
        return status;
    }
    if (listener == NULL) return CHORUS_OK;
    conn *c = engine_acquire(e, id);
    c->rdma_listener = listener;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = KEY_RDMA_LISTENER | id};
    status = epoll_ctl(e->epfd, EPOLL_CTL_ADD, rdma_listener_fd(listener), &ev) == 0 ? CHORUS_OK : CHORUS_ERR_SYSTEM;
    engine_release(e, c);
    if (status != CHORUS_OK) chorus_engine_close(e, id);
    return status;
}

int chorus_engine_connect(chorus_engine *e, const char *host, uint16_t port, int timeout_ms, int rdma, chorus_conn_id *out) {
    int fd;
    int status = rdma ? chorus_rdma_probe(NULL, 0) : CHORUS_OK;
    if (status != CHORUS_OK) return status;
    uint64_t deadline = chorus_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    if ((status = chorus_socket_connect(host, port, timeout_ms, e->config.socket_buffer_bytes, &fd)) != CHORUS_OK) return status;
    rdma_link *link = NULL;
    if (rdma) { // the link names this connection by its local port
        struct sockaddr_storage local;
        socklen_t size = sizeof local;
        char ignored[64];
        uint16_t local_port = 0;
        if (getsockname(fd, (struct sockaddr *)&local, &size) == 0) chorus_socket_describe(&local, ignored, sizeof ignored, &local_port);
        uint64_t now = chorus_now_ms();
        status = rdma_link_connect(host, port, local_port, now < deadline ? (int)(deadline - now) : 1, &link);
        if (status != CHORUS_OK) {
            close(fd);
            return status;
        }
    }
    if ((status = add_conn(e, fd, 0, rdma, 1, out)) != CHORUS_OK) {
        rdma_link_destroy(link);
        return status;
    }
    if (link == NULL) return CHORUS_OK;
    conn *c = engine_acquire(e, *out);
    status = c != NULL ? rdma_attach(e, c, link) : CHORUS_ERR_NO_SUCH_CONNECTION;
    if (c != NULL) engine_release(e, c);
    if (status != CHORUS_OK) chorus_engine_close(e, *out);
    return status;
}

int chorus_engine_admit(chorus_engine *e, chorus_conn_id id, int allow_data) {
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    pthread_mutex_lock(&e->lock);
    c->admitted = 1;
    c->data_allowed = allow_data != 0;
    int refused = c->paused && !c->data_allowed; // a data frame already waits on it
    pthread_mutex_unlock(&e->lock);
    if (refused) engine_fail_later(e, c, CHORUS_ERR_UNEXPECTED_DATA, 0);
    engine_release(e, c);
    return CHORUS_OK;
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
    send_item *item = malloc(sizeof *item);
    if (item == NULL) {
        engine_release(e, c);
        return CHORUS_ERR_SYSTEM;
    }
    chorus_frame_header h = {.type = CHORUS_FRAME_PROBE};
    *item = (send_item){.heap_owned = 1};
    chorus_frame_encode(&h, item->header);
    // Armed before the frame leaves: the answer may arrive before this call returns. A sender whose
    // heartbeats come slower than asked gets its own rhythm (its engine answers on its tick).
    uint32_t rhythm = __atomic_load_n(&c->rhythm_ms, __ATOMIC_RELAXED);
    uint64_t deadline = chorus_now_ms() + (answer_within_ms > rhythm ? answer_within_ms : rhythm), none = 0;
    int armed = __atomic_compare_exchange_n(&c->probe_deadline_ms, &none, deadline, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    int status = engine_submit(e, c, item);
    if (status != CHORUS_OK) free(item);
    else if (armed) engine_timers_due_by(e, deadline);
    engine_release(e, c);
    return status;
}

int chorus_engine_send_control(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id,
                               const void *payload, uint32_t length) {
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
    int status = engine_submit(e, c, item);
    if (status != CHORUS_OK) free(item);
    engine_release(e, c);
    return status;
}

int chorus_engine_post_send(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id, uint32_t tag,
                            const void *buffer, uint32_t length, chorus_request **out) {
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
    __atomic_add_fetch(&e->in_flight, 1, __ATOMIC_SEQ_CST); // before it can complete
    int status = c->uses_rdma ? rdma_queue_send(e, c, r) : engine_submit(e, c, &r->item);
    engine_release(e, c);
    if (status != CHORUS_OK) {
        __atomic_sub_fetch(&e->in_flight, 1, __ATOMIC_SEQ_CST);
        free(r);
        return status;
    }
    *out = r;
    return CHORUS_OK;
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
    // A paused connection resumes when this engine next makes progress: in the owner's wait for the
    // receive, or at the I/O thread's next tick; not inline, so posting never reads a whole frame.
    if (c->paused || c->rdma_paused) {
        c->needs_attention = 1;
        __atomic_store_n(&e->attention, 1, __ATOMIC_RELEASE); // also peeked without the lock
    }
    pthread_mutex_unlock(&e->lock);
    *out = r;
    return CHORUS_OK;
}
