// The data path of RDMA connections: SEND/RECV of one registered slot per message, with
// credit-based flow control. A data frame is cut into chunks; each message carries the frame's
// header, the chunk's offset and length, and the chunk. The receiver matches the first chunk of a
// frame against the head posted receive exactly as the socket path does (epoch, op, tag, length),
// copies chunks into the caller's buffer, reposts the slot and returns credits on the socket.
// Messages that arrive before their receive is posted wait in their slots (the sender runs out of
// credits: that is the flow control). A chunk that lies in memory the caller registered is sent
// from there (the slot carries only its header), and its request completes with the last chunk's
// work completion instead of when the last chunk is copied. Locking: c->rdma_lock, then engine->lock.
#define _GNU_SOURCE
#include "engine_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int rdma_attach(chorus_engine *e, conn *c, rdma_link *link) {
    pthread_mutex_lock(&c->rdma_lock);
    c->rdma = link;
    for (int slot = 0; slot < CHORUS_RDMA_SLOTS; slot++) c->free_slots[slot] = slot;
    c->free_slot_count = CHORUS_RDMA_SLOTS;
    c->credits = CHORUS_RDMA_SLOTS; // the peer posted every receive slot before connecting
    pthread_mutex_unlock(&c->rdma_lock);
    struct epoll_event cq = {.events = EPOLLIN, .data.u64 = KEY_RDMA_CQ | c->id};
    struct epoll_event cm = {.events = EPOLLIN, .data.u64 = KEY_RDMA_CM | c->id};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, rdma_link_cq_fd(link), &cq) != 0 ||
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, rdma_link_cm_fd(link), &cm) != 0)
        return CHORUS_ERR_SYSTEM;
    return CHORUS_OK;
}

void rdma_teardown(chorus_engine *e, conn *c, int request_status) {
    pthread_mutex_lock(&c->rdma_lock);
    pthread_mutex_lock(&e->lock);
    for (chorus_request *r = c->rdma_send_head; r != NULL;) {
        chorus_request *next = r->next;
        engine_complete_locked(e, r, request_status);
        r = next;
    }
    pthread_mutex_unlock(&e->lock);
    c->rdma_send_head = c->rdma_send_tail = NULL;
    pthread_mutex_lock(&e->lock);
    for (int slot = 0; slot < CHORUS_RDMA_SLOTS; slot++) {
        if (c->slot_request[slot] != NULL) engine_complete_locked(e, c->slot_request[slot], request_status);
        c->slot_request[slot] = NULL;
    }
    pthread_mutex_unlock(&e->lock);
    if (c->rdma != NULL) {
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, rdma_link_cq_fd(c->rdma), NULL);
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, rdma_link_cm_fd(c->rdma), NULL);
        rdma_link_destroy(c->rdma); // disconnects: the peer's link fails too
        c->rdma = NULL;
    }
    pthread_mutex_unlock(&c->rdma_lock);
}

int rdma_flush_sends(chorus_engine *e, conn *c) {
    int status = CHORUS_OK;
    pthread_mutex_lock(&c->rdma_lock);
    while (c->rdma != NULL && rdma_link_established(c->rdma) && c->rdma_send_head != NULL &&
           c->free_slot_count > 0 && c->credits > 0) {
        chorus_request *r = c->rdma_send_head;
        uint32_t offset = c->rdma_send_offset, chunk = r->item.length - offset;
        if (chunk > CHORUS_RDMA_CHUNK_BYTES) chunk = CHORUS_RDMA_CHUNK_BYTES;
        int slot = c->free_slots[--c->free_slot_count];
        uint8_t *message = rdma_link_send_slot(c->rdma, slot);
        memcpy(message, r->item.header, CHORUS_FRAME_HEADER_BYTES);
        put_u32(message + CHORUS_FRAME_HEADER_BYTES, offset);
        put_u32(message + CHORUS_FRAME_HEADER_BYTES + 4, chunk);
        uint32_t lkey;
        const uint8_t *payload = r->item.payload + offset;
        int zero_copy = chunk > 0 && rdma_link_registered_key(c->rdma, payload, chunk, &lkey);
        if (zero_copy) {
            status = rdma_link_post_send_gather(c->rdma, slot, payload, chunk, lkey);
        } else {
            if (chunk > 0) memcpy(message + CHORUS_RDMA_MESSAGE_HEADER, payload, chunk);
            status = rdma_link_post_send(c->rdma, slot, CHORUS_RDMA_MESSAGE_HEADER + chunk);
        }
        if (status != CHORUS_OK) {
            c->free_slots[c->free_slot_count++] = slot;
            break;
        }
        c->credits--;
        c->head_zero_copy |= zero_copy;
        c->rdma_send_offset = offset + chunk;
        if (c->rdma_send_offset == r->item.length) {
            c->rdma_send_head = r->next;
            if (c->rdma_send_head == NULL) c->rdma_send_tail = NULL;
            c->rdma_send_offset = 0;
            if (c->head_zero_copy) {
                // The NIC still reads the caller's buffer: done with this message's completion
                // (completions come in order, so every earlier chunk is done by then).
                c->slot_request[slot] = r;
                c->head_zero_copy = 0;
            } else { // copied out: the caller's buffer is free again
                pthread_mutex_lock(&e->lock);
                engine_complete_locked(e, r, CHORUS_OK);
                pthread_mutex_unlock(&e->lock);
            }
        }
    }
    pthread_mutex_unlock(&c->rdma_lock);
    return status;
}

int rdma_queue_send(chorus_engine *e, conn *c, chorus_request *r) {
    // Checked under rdma_lock: engine_fail_conn marks the connection failed before its teardown takes
    // that lock to fail the queue, so a send either sees the failure or is failed by the teardown.
    pthread_mutex_lock(&c->rdma_lock);
    pthread_mutex_lock(&e->lock);
    int failed = c->failed;
    pthread_mutex_unlock(&e->lock);
    if (failed) {
        pthread_mutex_unlock(&c->rdma_lock);
        return CHORUS_ERR_NO_SUCH_CONNECTION;
    }
    r->next = NULL;
    if (c->rdma_send_tail) c->rdma_send_tail->next = r; else c->rdma_send_head = r;
    c->rdma_send_tail = r;
    pthread_mutex_unlock(&c->rdma_lock);
    int status = rdma_flush_sends(e, c);
    if (status != CHORUS_OK) engine_fail_later(e, c, status, 0);
    return CHORUS_OK;
}

/// Takes one received message for the frame in progress, or the next posted receive. Caller holds
/// c->rdma_lock. Returns OK, CHORUS_ERR_INTERRUPTED when no receive is posted yet, or a failure.
static int consume_one(chorus_engine *e, conn *c, const uint8_t *message, uint32_t bytes) {
    chorus_frame_header h;
    if (bytes < CHORUS_RDMA_MESSAGE_HEADER) return CHORUS_ERR_BAD_LENGTH;
    int status = chorus_frame_decode(message, 0, &h);
    if (status != CHORUS_OK) return status;
    if (h.type != CHORUS_FRAME_DATA) return CHORUS_ERR_UNEXPECTED_CONTROL;
    uint32_t offset = get_u32(message + CHORUS_FRAME_HEADER_BYTES), chunk = get_u32(message + CHORUS_FRAME_HEADER_BYTES + 4);
    if (bytes != CHORUS_RDMA_MESSAGE_HEADER + chunk || offset > h.length || chunk > h.length - offset) return CHORUS_ERR_BAD_LENGTH;
    pthread_mutex_lock(&e->lock);
    chorus_request *r = c->rdma_active;
    if (r == NULL && offset == 0) {
        r = c->recv_head;
        if (r == NULL) {
            c->rdma_paused = 1; // post_recv flags it for attention
            pthread_mutex_unlock(&e->lock);
            return CHORUS_ERR_INTERRUPTED;
        }
        if ((status = engine_match_receive(&h, r)) != CHORUS_OK) {
            pthread_mutex_unlock(&e->lock);
            return status;
        }
        c->recv_head = r->next;
        if (c->recv_head == NULL) c->recv_tail = NULL;
        c->rdma_active = r;
        c->recv_offset = 0;
    } else if (r == NULL || offset != c->recv_offset || engine_match_receive(&h, r) != CHORUS_OK) {
        pthread_mutex_unlock(&e->lock);
        return CHORUS_ERR_BAD_LENGTH; // a chunk out of sequence
    }
    pthread_mutex_unlock(&e->lock);
    // Copied without the engine lock: only the io_lock holder (here, or failing the connection)
    // completes `rdma_active`, and its owner may not free it before then.
    if (chunk > 0) memcpy(r->buffer + offset, message + CHORUS_RDMA_MESSAGE_HEADER, chunk);
    c->recv_offset = offset + chunk;
    if (c->recv_offset == r->length) {
        pthread_mutex_lock(&e->lock);
        engine_complete_locked(e, r, CHORUS_OK);
        c->rdma_active = NULL;
        pthread_mutex_unlock(&e->lock);
    }
    return CHORUS_OK;
}

int rdma_consume(chorus_engine *e, conn *c) {
    int status = CHORUS_OK;
    uint32_t freed = 0;
    pthread_mutex_lock(&c->rdma_lock);
    while (c->rdma != NULL && c->pending_count > 0) {
        int slot = c->pending_slot[c->pending_first];
        status = consume_one(e, c, rdma_link_recv_slot(c->rdma, slot), c->pending_bytes[c->pending_first]);
        if (status == CHORUS_ERR_INTERRUPTED) {
            status = CHORUS_OK;
            break;
        }
        if (status != CHORUS_OK || (status = rdma_link_post_recv(c->rdma, slot)) != CHORUS_OK) break;
        c->pending_first = (c->pending_first + 1) % CHORUS_RDMA_SLOTS;
        c->pending_count--;
        freed++;
    }
    pthread_mutex_unlock(&c->rdma_lock);
    if (status != CHORUS_OK || freed == 0) return status;
    // One credit frame per connection, reused: while it waits to be sent, more credits add to it.
    pthread_mutex_lock(&c->send_lock);
    c->credits_owed += freed;
    int submit = !c->credit_queued;
    if (submit) engine_arm_credit_locked(c);
    pthread_mutex_unlock(&c->send_lock);
    if (submit) engine_submit(e, c, &c->credit);
    return CHORUS_OK;
}

int rdma_on_credit(chorus_engine *e, conn *c, uint32_t credits) {
    pthread_mutex_lock(&c->rdma_lock);
    int valid = credits <= CHORUS_RDMA_SLOTS - c->credits;
    if (valid) c->credits += credits;
    pthread_mutex_unlock(&c->rdma_lock);
    return valid ? rdma_flush_sends(e, c) : CHORUS_ERR_BAD_LENGTH; // more credits than slots: a broken peer
}

typedef struct completion_context {
    chorus_engine *e;
    conn *c;
} completion_context;

static void on_completion(void *context, int is_send, int slot, uint32_t bytes) {
    chorus_engine *e = ((completion_context *)context)->e;
    conn *c = ((completion_context *)context)->c; // c->rdma_lock is held by rdma_on_completions
    if (is_send) {
        c->free_slots[c->free_slot_count++] = slot;
        if (c->slot_request[slot] != NULL) {
            pthread_mutex_lock(&e->lock);
            engine_complete_locked(e, c->slot_request[slot], CHORUS_OK);
            pthread_mutex_unlock(&e->lock);
            c->slot_request[slot] = NULL;
        }
    } else {
        int at = (c->pending_first + c->pending_count) % CHORUS_RDMA_SLOTS;
        c->pending_slot[at] = slot;
        c->pending_bytes[at] = bytes;
        c->pending_count++;
    }
}

void rdma_on_completions(chorus_engine *e, conn *c) {
    completion_context context = {e, c};
    pthread_mutex_lock(&c->rdma_lock);
    int status = c->rdma != NULL ? rdma_link_poll(c->rdma, on_completion, &context) : CHORUS_OK;
    pthread_mutex_unlock(&c->rdma_lock);
    if (status == CHORUS_OK) status = rdma_consume(e, c);
    if (status == CHORUS_OK) status = rdma_flush_sends(e, c);
    if (status != CHORUS_OK) engine_fail_conn(e, c, status, 0);
}

void rdma_on_cm_events(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&c->rdma_lock);
    int status = c->rdma != NULL ? rdma_link_cm_events(c->rdma) : CHORUS_OK;
    pthread_mutex_unlock(&c->rdma_lock);
    if (status == CHORUS_OK) status = rdma_flush_sends(e, c); // established: queued sends may go
    if (status != CHORUS_OK) engine_fail_conn(e, c, status, 0);
}

/// The accepted connection a dialer's link belongs to (a reference), or NULL.
static conn *find_unlinked(chorus_engine *e, const char *host, uint16_t port) {
    conn *found = NULL;
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < e->conn_count && found == NULL; i++) {
        conn *c = e->conns[i];
        if (c->uses_rdma && c->rdma == NULL && !c->failed && c->peer_port == port && strcmp(c->peer_host, host) == 0) {
            c->refs++;
            found = c;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return found;
}

void rdma_on_listener(chorus_engine *e, conn *listener) {
    rdma_link *link;
    uint16_t port;
    char host[64];
    while (listener->rdma_listener != NULL && rdma_listener_take(listener->rdma_listener, &link, &port, host) == CHORUS_OK) {
        conn *c = find_unlinked(e, host, port);
        if (c == NULL) { // its TCP connection may still wait in the accept queue
            engine_accept_all(e, listener);
            c = find_unlinked(e, host, port);
        }
        if (c == NULL) {
            rdma_link_reject(link);
            rdma_link_destroy(link);
            continue;
        }
        int status = rdma_attach(e, c, link);
        if (status == CHORUS_OK) status = rdma_link_accept(link);
        if (status != CHORUS_OK) engine_fail_later(e, c, status, errno); // another connection than the listener
        engine_release(e, c);
    }
}
