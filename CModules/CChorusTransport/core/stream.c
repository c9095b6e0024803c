// The framed stream socket every connection has: its send queue and the reader of its frames.
// Control frames become events; heartbeats, probes and fences are answered here; a data frame is handed to
// the connection's data path, which names the posted receive its payload is read into (or says the
// frame waits for one: then the stream pauses, and its sender is judged by its kernel, see
// connections.c's timers); any other frame type is the path's own (its flow control, say).
// Sockets are edge-triggered: a reader stops at EAGAIN, at a short read (for a stream socket that
// says it is drained, epoll(7)) once what it read is parsed, or when the stream pauses. Reads go
// into a read-ahead buffer (READ_AHEAD_BYTES), and a payload's rest straight into its place with the
// buffer behind it: small frames that arrive together (a pair's token and data, 4 KiB) cost one read
// and a copy, not a header read and a payload read each.
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

// MARK: - Sending (caller holds c->send_lock)

void engine_enqueue_locked(conn *c, send_item *item) {
    item->next = NULL;
    if (c->send_tail) c->send_tail->next = item; else c->send_head = item;
    c->send_tail = item;
}

/// A frame left the queue: complete its request, free it, or tell a reused frame it was written.
static void finish_item(chorus_engine *e, conn *c, send_item *item, int status) {
    if (item->request != NULL) {
        pthread_mutex_lock(&e->lock);
        engine_complete_locked(e, item->request, status);
        pthread_mutex_unlock(&e->lock);
    } else if (item->heap_owned) {
        free(item);
    } else if (status == CHORUS_OK && item->written != NULL) {
        item->written(e, c, item);
    }
}

// Frames written per system call: a frame that waited for its next one (a frame sent for later, a
// pair's token) leaves in the same write as that one.
#define FRAMES_PER_WRITE 8

chorus_failure stream_flush_locked(chorus_engine *e, conn *c) {
    while (c->send_head != NULL && !c->send_closed) {
        struct iovec iov[2 * FRAMES_PER_WRITE];
        int n = 0, frames = 0;
        for (send_item *item = c->send_head; item != NULL && frames < FRAMES_PER_WRITE; item = item->next, frames++) {
            if (item->header_sent < CHORUS_FRAME_HEADER_BYTES)
                iov[n++] = (struct iovec){item->header + item->header_sent, CHORUS_FRAME_HEADER_BYTES - item->header_sent};
            if (item->payload_sent < item->length)
                iov[n++] = (struct iovec){(void *)(item->payload + item->payload_sent), item->length - item->payload_sent};
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return chorus_no_failure(); // EPOLLOUT will resume us
            return chorus_system_failure("sendmsg", errno);
        }
        c->last_send_ms = chorus_now_ms();
        // Hand the written bytes to the frames in order; the first one not written whole stays.
        size_t left = (size_t)sent;
        while (c->send_head != NULL) {
            send_item *item = c->send_head;
            size_t header_part = CHORUS_FRAME_HEADER_BYTES - item->header_sent;
            size_t take = left < header_part ? left : header_part;
            item->header_sent += (uint32_t)take;
            left -= take;
            size_t payload_part = item->length - item->payload_sent;
            take = left < payload_part ? left : payload_part;
            item->payload_sent += (uint32_t)take;
            left -= take;
            if (item->header_sent < CHORUS_FRAME_HEADER_BYTES || item->payload_sent < item->length) break;
            c->send_head = item->next;
            if (c->send_head == NULL) c->send_tail = NULL;
            finish_item(e, c, item, CHORUS_OK);
        }
    }
    return chorus_no_failure();
}

/// Drops every queued frame with `status` and closes the write side (from engine_fail_conn).
void stream_close_sends(chorus_engine *e, conn *c, int status) {
    pthread_mutex_lock(&c->send_lock);
    c->send_closed = 1;
    for (send_item *item = c->send_head; item != NULL;) {
        send_item *next = item->next;
        finish_item(e, c, item, status);
        item = next;
    }
    c->send_head = c->send_tail = NULL;
    pthread_mutex_unlock(&c->send_lock);
}

int engine_submit(chorus_engine *e, conn *c, send_item *item) {
    pthread_mutex_lock(&c->send_lock);
    if (c->send_closed) {
        pthread_mutex_unlock(&c->send_lock);
        return CHORUS_ERR_NO_SUCH_CONNECTION;
    }
    // An empty queue, or one holding only frames sent for later, is nobody's to flush: this send's.
    int was_idle = c->send_head == NULL || c->corked;
    engine_enqueue_locked(c, item);
    if (item->with_next) {
        if (was_idle) c->corked = 1; // leaves with the next frame (or with the queue being written)
        pthread_mutex_unlock(&c->send_lock);
        return CHORUS_OK;
    }
    c->corked = 0;
    chorus_failure failure = was_idle ? stream_flush_locked(e, c) : chorus_no_failure();
    pthread_mutex_unlock(&c->send_lock);
    if (failure.status != CHORUS_OK) engine_fail_later(e, c, failure);
    return CHORUS_OK;
}

int engine_submit_later(chorus_engine *e, conn *c, send_item *item) {
    (void)e;
    pthread_mutex_lock(&c->send_lock);
    if (c->send_closed) {
        pthread_mutex_unlock(&c->send_lock);
        return CHORUS_ERR_NO_SUCH_CONNECTION;
    }
    if (c->corked) {
        // Every queued frame is an unwritten one sent for later: the newest control frame stands
        // for the earlier ones (a data frame waiting for its next one stays).
        send_item *old = c->send_head;
        c->send_head = c->send_tail = NULL;
        while (old != NULL) {
            send_item *next = old->next;
            if (old->heap_owned) free(old); else engine_enqueue_locked(c, old);
            old = next;
        }
    }
    if (c->send_head == NULL) c->corked = 1; // otherwise it leaves with the queue being written
    engine_enqueue_locked(c, item);
    pthread_mutex_unlock(&c->send_lock);
    return CHORUS_OK;
}

int engine_send_signal(chorus_engine *e, conn *c, const chorus_frame_header *h) {
    send_item *item = malloc(sizeof *item);
    if (item == NULL) return CHORUS_ERR_SYSTEM;
    chorus_frame_header empty = *h;
    empty.length = 0;
    *item = (send_item){.heap_owned = 1};
    chorus_frame_encode(&empty, item->header);
    int status = engine_submit(e, c, item);
    if (status != CHORUS_OK) free(item);
    return status;
}

chorus_failure stream_uncork_locked(chorus_engine *e, conn *c) {
    if (!c->corked) return chorus_no_failure();
    c->corked = 0;
    return stream_flush_locked(e, c);
}

chorus_failure stream_heartbeat_locked(chorus_engine *e, conn *c) {
    if (c->send_closed) return chorus_no_failure();
    if (c->corked) return stream_uncork_locked(e, c); // frames sent for later are the sign of life, and leave now
    if (c->send_head != NULL) return chorus_no_failure();
    c->heartbeat.header_sent = 0;
    engine_enqueue_locked(c, &c->heartbeat);
    return stream_flush_locked(e, c);
}

// MARK: - Receiving (io_lock held)

/// Resets the reader for the next frame.
static void stream_frame_done(conn *c) {
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
    if (status == CHORUS_OK) stream_frame_done(c);
    return status;
}

/// Makes room for a control frame's payload. The length was bounded by max_control_bytes in
/// chorus_frame_decode; before admission a connection may send only small frames, and every
/// connection shares one budget, so a flood of unfinished frames cannot take the memory legitimate
/// peers need.
static int begin_control(chorus_engine *e, conn *c) {
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

/// Hands a data frame's header to the data path. A data frame may wait for admission only behind a
/// control frame the owner has yet to judge (a hello, with the sender's first data right behind
/// it); before any, or on a connection admitted for control only, it is a violation.
static int begin_data(chorus_engine *e, conn *c) {
    if (!engine_data_allowed(e, c)) return CHORUS_ERR_UNEXPECTED_DATA;
    int status = c->path->stream_data(e, c);
    if (status == CHORUS_PATH_WAIT) {
        pthread_mutex_lock(&e->lock);
        c->stream_paused = 1;
        pthread_mutex_unlock(&e->lock);
    }
    return status;
}

/// A frame type the core does not handle belongs to the data path (which judges admission itself).
static chorus_failure path_frame(chorus_engine *e, conn *c) {
    if (c->path->stream_frame == NULL) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
    return c->path->stream_frame(e, c, &c->header);
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

/// Answers a probe on an admitted connection (a stranger gets nothing).
static chorus_failure answer_probe(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    int admitted = c->admitted;
    pthread_mutex_unlock(&e->lock);
    if (!admitted) return chorus_no_failure();
    pthread_mutex_lock(&c->send_lock);
    chorus_failure failure = stream_heartbeat_locked(e, c);
    pthread_mutex_unlock(&c->send_lock);
    return failure;
}

/// Bytes read ahead of the parser per connection: a few small frames, a 4 KiB payload with its
/// header and the frame before it (larger payloads are read in place, only their first part copied).
#define READ_AHEAD_BYTES 8192

/// What `fill` found.
enum { FILL_FAILED = -1, FILL_NOTHING = 0, FILL_SHORT = 1, FILL_FULL = 2 };

/// Reads what the socket holds into `direct` (the rest of a payload, in place; may be empty) and
/// then the empty read-ahead buffer. FILL_SHORT: it held less than both, so it is drained now.
/// FILL_NOTHING: EAGAIN. FILL_FAILED: the connection failed (and has been failed here).
static int fill(chorus_engine *e, conn *c, uint8_t *direct, size_t direct_wanted, size_t *direct_got) {
    if (c->ahead == NULL && (c->ahead = malloc(READ_AHEAD_BYTES)) == NULL) {
        engine_fail_conn(e, c, chorus_system_failure("malloc", ENOMEM));
        return FILL_FAILED;
    }
    struct iovec parts[2];
    int count = 0;
    if (direct_wanted > 0) parts[count++] = (struct iovec){direct, direct_wanted};
    parts[count++] = (struct iovec){c->ahead, READ_AHEAD_BYTES};
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = (size_t)count};
    ssize_t got;
    while ((got = recvmsg(c->fd, &message, 0)) < 0 && errno == EINTR) {}
    if (got <= 0) {
        int error = got == 0 ? 0 : errno;
        if (error == EAGAIN || error == EWOULDBLOCK) return FILL_NOTHING;
        engine_fail_conn(e, c, chorus_system_failure("recv", error));
        return FILL_FAILED;
    }
    __atomic_store_n(&c->probe_deadline_ms, 0, __ATOMIC_RELEASE); // any sign of life answers a probe
    uint64_t now = chorus_now_ms();
    note_silence(e, c, now - c->last_recv_ms);
    __atomic_store_n(&c->last_recv_ms, now, __ATOMIC_RELEASE);
    c->heard = 1;
    size_t in_place = (size_t)got < direct_wanted ? (size_t)got : direct_wanted;
    if (direct_got != NULL) *direct_got = in_place;
    c->ahead_start = 0;
    c->ahead_end = (uint32_t)((size_t)got - in_place);
    return (size_t)got < direct_wanted + READ_AHEAD_BYTES ? FILL_SHORT : FILL_FULL;
}

/// Moves up to `wanted` bytes read ahead to `to`; returns how many.
static uint32_t take_ahead(conn *c, uint8_t *to, uint32_t wanted) {
    uint32_t have = c->ahead_end - c->ahead_start;
    uint32_t n = have < wanted ? have : wanted;
    if (n > 0) memcpy(to, c->ahead + c->ahead_start, n);
    c->ahead_start += n;
    return n;
}

/// What take_header found.
enum { HEADER_FAILED = -1, HEADER_PAYLOAD_NEXT = 1, HEADER_READ_ON = 2 };

/// Decodes a complete header; answers heartbeats, probes and the path's own frames.
static int take_header(chorus_engine *e, conn *c) {
    int status = chorus_frame_decode(c->header_raw, e->config.max_control_bytes, &c->header);
    if (status != CHORUS_OK) {
        engine_fail_conn(e, c, chorus_failure_of(status));
        return HEADER_FAILED;
    }
    c->have_header = 1;
    chorus_failure failure = chorus_no_failure();
    switch (c->header.type) {
    case CHORUS_FRAME_CONTROL:
    case CHORUS_FRAME_DATA: return HEADER_PAYLOAD_NEXT;
    case CHORUS_FRAME_HEARTBEAT: break;
    case CHORUS_FRAME_PROBE: failure = answer_probe(e, c); break;
    case CHORUS_FRAME_FENCE:
    case CHORUS_FRAME_FENCE_ANSWER: failure = fence_frame(e, c); break;
    default: failure = path_frame(e, c); break;
    }
    if (failure.status != CHORUS_OK) {
        engine_fail_conn(e, c, failure);
        return HEADER_FAILED;
    }
    stream_frame_done(c);
    return HEADER_READ_ON;
}

/// A status from reading a frame as the failure it is (the only system failure there is memory).
static chorus_failure frame_failure(int status) {
    return status == CHORUS_ERR_SYSTEM ? chorus_system_failure("malloc", ENOMEM) : chorus_failure_of(status);
}

void stream_read(chorus_engine *e, conn *c) {
    if (engine_conn_failed(e, c)) return;
    // A read came back short: parse what was read, read no more (epoll(7)), unless the other end
    // hung up: its end of the stream came with the last bytes, and only a read finds it.
    int drained = 0;
    for (;;) {
        if (!c->have_header) {
            c->header_got += take_ahead(c, c->header_raw + c->header_got, CHORUS_FRAME_HEADER_BYTES - c->header_got);
            if (c->header_got < CHORUS_FRAME_HEADER_BYTES) {
                int got = drained ? FILL_NOTHING : fill(e, c, NULL, 0, NULL);
                if (got == FILL_FAILED || got == FILL_NOTHING) return;
                drained = got == FILL_SHORT && !c->hung_up;
                continue;
            }
            int next = take_header(e, c);
            if (next == HEADER_FAILED) return;
            if (next == HEADER_READ_ON) continue;
        }
        int status = CHORUS_OK;
        if (c->header.type == CHORUS_FRAME_DATA && c->active_recv == NULL) status = begin_data(e, c);
        else if (c->header.type == CHORUS_FRAME_CONTROL && c->control_payload == NULL) status = begin_control(e, c);
        if (status == CHORUS_PATH_WAIT) return; // paused until a receive is posted (what was read ahead waits)
        if (status != CHORUS_OK) {
            engine_fail_conn(e, c, frame_failure(status));
            return;
        }
        uint8_t *target = c->header.type == CHORUS_FRAME_CONTROL ? c->control_payload : c->active_recv->buffer;
        c->payload_got += take_ahead(c, target + c->payload_got, c->header.length - c->payload_got);
        if (c->payload_got < c->header.length) {
            size_t in_place = 0;
            int got = drained ? FILL_NOTHING : fill(e, c, target + c->payload_got, c->header.length - c->payload_got, &in_place);
            if (got == FILL_FAILED || got == FILL_NOTHING) return;
            c->payload_got += (uint32_t)in_place;
            drained = got == FILL_SHORT && !c->hung_up;
            if (c->payload_got < c->header.length) continue; // the rest is not here yet, or did not fit
        }
        if ((status = deliver(e, c)) != CHORUS_OK) {
            engine_fail_conn(e, c, frame_failure(status));
            return;
        }
    }
}
