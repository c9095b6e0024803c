// The RDMA data path: SEND/RECV of one registered slot per message, with credit-based flow control.
// A data frame is cut into chunks; each message carries the frame's header, the chunk's offset and
// length, and the chunk. The receiver matches the first chunk of a frame against the head posted
// receive exactly as the stream does (epoch, op, tag, length), copies chunks into the caller's
// buffer, reposts the slot and returns credits in a CREDIT frame on the stream. Messages that
// arrive before their receive is posted wait in their slots (the sender runs out of credits: that
// is the flow control). A chunk that lies in memory the caller registered is sent from there (the
// slot carries only its header), and its request completes with the last chunk's work completion
// instead of when the last chunk is copied. The link's completion and CM channels are watched
// descriptors (slots below). Locking: the path's lock, then engine->lock; never with send_lock.
#define _GNU_SOURCE
#include "../core/engine.h"
#include "../wire/wire.h"
#include "verbs.h"
#if CHORUS_HAVE_RDMA_HEADERS

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

extern const chorus_data_path chorus_rdma_path;

/// The descriptors the path watches, by slot.
enum { SLOT_COMPLETIONS = 0, SLOT_CM = 1, SLOT_LISTENER = 0 };

typedef struct rdma_state {
    pthread_mutex_t lock;    // everything below but `credit*` (send_lock) and what says engine->lock
    rdma_listener *listener; // a listener's rdma_cm side
    rdma_link *link;         // NULL until connected (accepting side: until the dialer's link arrives)
    chorus_request *send_head, *send_tail; // data sends waiting for slots and credits
    uint32_t send_offset;    // bytes of the head already sent
    int head_zero_copy;      // a chunk of the head went from registered memory, uncopied
    chorus_request *slot_request[CHORUS_RDMA_SLOTS]; // a zero-copy send completing with this slot's message
    int free_slots[CHORUS_RDMA_SLOTS];
    int free_slot_count;
    uint32_t credits;        // messages the peer has room for
    int pending_slot[CHORUS_RDMA_SLOTS]; // received messages not yet consumed, oldest first
    uint32_t pending_bytes[CHORUS_RDMA_SLOTS];
    int pending_first, pending_count;
    chorus_request *active;  // engine->lock: the receive being filled from messages
    uint32_t recv_offset;    // of the frame being received into `active`
    send_item credit;        // send_lock: the CREDIT frame, reused, never freed
    int credit_queued;       // send_lock: `credit` is in the stream's send queue
    uint32_t credits_owed;   // send_lock: freed slots not yet in a credit frame
} rdma_state;

static rdma_state *state_of(const conn *c) { return c->path_state; }

// MARK: - Credits (send_lock held)

/// Encodes the owed credits into the credit frame and marks it queued.
static void arm_credit_locked(rdma_state *s) {
    chorus_frame_header h = {.type = CHORUS_FRAME_CREDIT, .tag = s->credits_owed};
    chorus_frame_encode(&h, s->credit.header);
    s->credit.header_sent = 0;
    s->credits_owed = 0;
    s->credit_queued = 1;
}

/// The credit frame was written: more slots freed while it waited go out in it again.
static void credit_written(chorus_engine *e, conn *c, send_item *item) {
    (void)e;
    rdma_state *s = state_of(c);
    s->credit_queued = 0;
    if (s->credits_owed > 0) {
        arm_credit_locked(s);
        engine_enqueue_locked(c, item);
    }
}

// MARK: - Life cycle

static chorus_failure rdma_open(chorus_engine *e, conn *c) {
    (void)e;
    rdma_state *s = calloc(1, sizeof *s);
    if (s == NULL) return chorus_system_failure("calloc", ENOMEM);
    pthread_mutex_init(&s->lock, NULL);
    s->credit.written = credit_written;
    c->path_state = s;
    return chorus_no_failure();
}

static void rdma_release(conn *c) {
    rdma_state *s = state_of(c);
    if (s == NULL) return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/// Attaches an established or accepted link and watches its channels.
static chorus_failure attach(chorus_engine *e, conn *c, rdma_link *link) {
    rdma_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    s->link = link;
    for (int slot = 0; slot < CHORUS_RDMA_SLOTS; slot++) s->free_slots[slot] = slot;
    s->free_slot_count = CHORUS_RDMA_SLOTS;
    s->credits = CHORUS_RDMA_SLOTS; // the peer posted every receive slot before connecting
    pthread_mutex_unlock(&s->lock);
    chorus_failure failure = engine_watch(e, c, rdma_link_cq_fd(link), SLOT_COMPLETIONS);
    if (failure.status == CHORUS_OK) failure = engine_watch(e, c, rdma_link_cm_fd(link), SLOT_CM);
    return failure;
}

static void rdma_teardown(chorus_engine *e, conn *c, int request_status) {
    rdma_state *s = state_of(c);
    if (s == NULL) return;
    pthread_mutex_lock(&s->lock);
    pthread_mutex_lock(&e->lock);
    engine_complete_all_locked(e, &s->send_head, &s->send_tail, request_status);
    for (int slot = 0; slot < CHORUS_RDMA_SLOTS; slot++) {
        if (s->slot_request[slot] != NULL) engine_complete_locked(e, s->slot_request[slot], request_status);
        s->slot_request[slot] = NULL;
    }
    if (s->active != NULL) engine_complete_locked(e, s->active, request_status);
    s->active = NULL;
    pthread_mutex_unlock(&e->lock);
    if (s->link != NULL) {
        engine_unwatch(e, rdma_link_cq_fd(s->link));
        engine_unwatch(e, rdma_link_cm_fd(s->link));
        rdma_link_destroy(s->link); // disconnects: the peer's link fails too
        s->link = NULL;
    }
    if (s->listener != NULL) {
        engine_unwatch(e, rdma_listener_fd(s->listener));
        rdma_listener_destroy(s->listener);
        s->listener = NULL;
    }
    pthread_mutex_unlock(&s->lock);
}

// MARK: - Sending

/// Sends what slots and credits allow. The owner, or the io_lock holder.
static chorus_failure flush_sends(chorus_engine *e, conn *c) {
    rdma_state *s = state_of(c);
    chorus_failure failure = chorus_no_failure();
    pthread_mutex_lock(&s->lock);
    while (s->link != NULL && rdma_link_established(s->link) && s->send_head != NULL && s->free_slot_count > 0 &&
           s->credits > 0) {
        chorus_request *r = s->send_head;
        uint32_t offset = s->send_offset, chunk = r->item.length - offset;
        if (chunk > CHORUS_RDMA_CHUNK_BYTES) chunk = CHORUS_RDMA_CHUNK_BYTES;
        int slot = s->free_slots[--s->free_slot_count];
        uint8_t *message = rdma_link_send_slot(s->link, slot);
        memcpy(message, r->item.header, CHORUS_FRAME_HEADER_BYTES);
        chorus_put_u32(message + CHORUS_FRAME_HEADER_BYTES, offset);
        chorus_put_u32(message + CHORUS_FRAME_HEADER_BYTES + 4, chunk);
        uint32_t lkey;
        const uint8_t *payload = r->item.payload + offset;
        int zero_copy = chunk > 0 && rdma_link_registered_key(s->link, payload, chunk, &lkey);
        if (zero_copy) {
            failure = rdma_link_post_send_gather(s->link, slot, payload, chunk, lkey);
        } else {
            if (chunk > 0) memcpy(message + CHORUS_RDMA_MESSAGE_HEADER, payload, chunk);
            failure = rdma_link_post_send(s->link, slot, CHORUS_RDMA_MESSAGE_HEADER + chunk);
        }
        if (failure.status != CHORUS_OK) {
            s->free_slots[s->free_slot_count++] = slot;
            break;
        }
        s->credits--;
        s->head_zero_copy |= zero_copy;
        s->send_offset = offset + chunk;
        if (s->send_offset == r->item.length) {
            s->send_head = r->next;
            if (s->send_head == NULL) s->send_tail = NULL;
            s->send_offset = 0;
            if (s->head_zero_copy) {
                // The NIC still reads the caller's buffer: done with this message's completion
                // (completions come in order, so every earlier chunk is done by then).
                s->slot_request[slot] = r;
                s->head_zero_copy = 0;
            } else { // copied out: the caller's buffer is free again
                pthread_mutex_lock(&e->lock);
                engine_complete_locked(e, r, CHORUS_OK);
                pthread_mutex_unlock(&e->lock);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return failure;
}

static chorus_failure rdma_post_send(chorus_engine *e, conn *c, chorus_request *r) {
    rdma_state *s = state_of(c);
    // Checked under the path's lock: engine_fail_conn marks the connection failed before its
    // teardown takes that lock to fail the queue, so a send either sees the failure or is failed by
    // the teardown.
    pthread_mutex_lock(&s->lock);
    if (engine_conn_failed(e, c)) {
        pthread_mutex_unlock(&s->lock);
        return chorus_failure_of(CHORUS_ERR_NO_SUCH_CONNECTION);
    }
    r->next = NULL;
    if (s->send_tail) s->send_tail->next = r; else s->send_head = r;
    s->send_tail = r;
    pthread_mutex_unlock(&s->lock);
    chorus_failure failure = flush_sends(e, c);
    if (failure.status != CHORUS_OK) engine_fail_later(e, c, failure);
    return chorus_no_failure();
}

// MARK: - Receiving

/// Takes one received message for the frame in progress, or the next posted receive. Caller holds
/// the path's lock. Returns CHORUS_OK, CHORUS_PATH_WAIT, or a status that fails the connection.
static int consume_one(chorus_engine *e, conn *c, const uint8_t *message, uint32_t bytes) {
    rdma_state *s = state_of(c);
    chorus_frame_header h;
    if (bytes < CHORUS_RDMA_MESSAGE_HEADER) return CHORUS_ERR_BAD_LENGTH;
    int status = chorus_frame_decode(message, 0, &h);
    if (status != CHORUS_OK) return status;
    if (h.type != CHORUS_FRAME_DATA) return CHORUS_ERR_UNEXPECTED_CONTROL;
    uint32_t offset = chorus_get_u32(message + CHORUS_FRAME_HEADER_BYTES);
    uint32_t chunk = chorus_get_u32(message + CHORUS_FRAME_HEADER_BYTES + 4);
    if (bytes != CHORUS_RDMA_MESSAGE_HEADER + chunk || offset > h.length || chunk > h.length - offset) return CHORUS_ERR_BAD_LENGTH;
    return engine_receive_chunk(e, c, &s->active, &s->recv_offset, &h, offset, message + CHORUS_RDMA_MESSAGE_HEADER, chunk);
}

/// Consumes received messages into posted receives and returns their slots' credits (io_lock held).
static chorus_failure consume(chorus_engine *e, conn *c) {
    rdma_state *s = state_of(c);
    chorus_failure failure = chorus_no_failure();
    uint32_t freed = 0;
    pthread_mutex_lock(&s->lock);
    while (s->link != NULL && s->pending_count > 0) {
        int slot = s->pending_slot[s->pending_first];
        int status = consume_one(e, c, rdma_link_recv_slot(s->link, slot), s->pending_bytes[s->pending_first]);
        if (status == CHORUS_PATH_WAIT) break;
        if (status != CHORUS_OK) {
            failure = chorus_failure_of(status);
            break;
        }
        if ((failure = rdma_link_post_recv(s->link, slot)).status != CHORUS_OK) break;
        s->pending_first = (s->pending_first + 1) % CHORUS_RDMA_SLOTS;
        s->pending_count--;
        freed++;
    }
    pthread_mutex_unlock(&s->lock);
    if (failure.status != CHORUS_OK || freed == 0) return failure;
    // One credit frame per connection, reused: while it waits to be sent, more credits add to it.
    pthread_mutex_lock(&c->send_lock);
    s->credits_owed += freed;
    int submit = !s->credit_queued;
    if (submit) arm_credit_locked(s);
    pthread_mutex_unlock(&c->send_lock);
    if (submit) engine_submit(e, c, &s->credit);
    return chorus_no_failure();
}

static int rdma_stream_data(chorus_engine *e, conn *c) {
    (void)e, (void)c;
    return CHORUS_ERR_UNEXPECTED_DATA; // data travels on the link, never on the stream
}

static chorus_failure rdma_stream_frame(chorus_engine *e, conn *c, const chorus_frame_header *h) {
    if (h->type != CHORUS_FRAME_CREDIT) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
    // Credits belong to data, which flows only once the connection may carry it.
    pthread_mutex_lock(&e->lock);
    int data_allowed = c->data_allowed;
    pthread_mutex_unlock(&e->lock);
    if (!data_allowed) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_DATA);
    rdma_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    int valid = h->tag <= CHORUS_RDMA_SLOTS - s->credits;
    if (valid) s->credits += h->tag;
    pthread_mutex_unlock(&s->lock);
    return valid ? flush_sends(e, c) : chorus_failure_of(CHORUS_ERR_BAD_CREDIT); // more credits than slots: a broken peer
}

static chorus_failure rdma_resume(chorus_engine *e, conn *c) { return consume(e, c); }

// MARK: - Readiness (io_lock held)

typedef struct completion_context {
    chorus_engine *e;
    rdma_state *s;
} completion_context;

static void on_completion(void *context, int is_send, int slot, uint32_t bytes) {
    chorus_engine *e = ((completion_context *)context)->e;
    rdma_state *s = ((completion_context *)context)->s; // its lock is held by on_completions
    if (is_send) {
        s->free_slots[s->free_slot_count++] = slot;
        if (s->slot_request[slot] != NULL) {
            pthread_mutex_lock(&e->lock);
            engine_complete_locked(e, s->slot_request[slot], CHORUS_OK);
            pthread_mutex_unlock(&e->lock);
            s->slot_request[slot] = NULL;
        }
    } else {
        int at = (s->pending_first + s->pending_count) % CHORUS_RDMA_SLOTS;
        s->pending_slot[at] = slot;
        s->pending_bytes[at] = bytes;
        s->pending_count++;
    }
}

static chorus_failure on_completions(chorus_engine *e, conn *c) {
    rdma_state *s = state_of(c);
    completion_context context = {e, s};
    pthread_mutex_lock(&s->lock);
    chorus_failure failure = s->link != NULL ? rdma_link_poll(s->link, on_completion, &context) : chorus_no_failure();
    pthread_mutex_unlock(&s->lock);
    if (failure.status == CHORUS_OK) failure = consume(e, c);
    if (failure.status == CHORUS_OK) failure = flush_sends(e, c);
    return failure;
}

static chorus_failure on_cm_events(chorus_engine *e, conn *c) {
    rdma_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    int status = s->link != NULL ? rdma_link_cm_events(s->link) : CHORUS_OK;
    pthread_mutex_unlock(&s->lock);
    if (status != CHORUS_OK) return chorus_failure_of(status);
    return flush_sends(e, c); // established: queued sends may go
}

/// Which accepted connection a dialer's link belongs to: it named the TCP connection by its source.
typedef struct link_owner {
    const char *host;
    uint16_t port;
} link_owner;

static int owns_link(const conn *c, const void *context) {
    const link_owner *owner = context;
    return c->path == &chorus_rdma_path && !c->is_listener && state_of(c)->link == NULL && c->peer_port == owner->port &&
           strcmp(c->peer_host, owner->host) == 0;
}

/// Connect requests on the listener: each link goes to the accepted connection it names.
static void on_listener(chorus_engine *e, conn *listener) {
    rdma_state *ls = state_of(listener);
    rdma_link *link;
    uint16_t port;
    char host[64];
    while (rdma_listener_take(ls->listener, &link, &port, host)) {
        link_owner owner = {host, port};
        conn *c = engine_find(e, owns_link, &owner);
        if (c == NULL) { // its TCP connection may still wait in the accept queue
            engine_accept_all(e, listener);
            c = engine_find(e, owns_link, &owner);
        }
        if (c == NULL) {
            rdma_link_reject(link);
            rdma_link_destroy(link);
            continue;
        }
        chorus_failure failure = attach(e, c, link);
        if (failure.status == CHORUS_OK) failure = rdma_link_accept(link);
        if (failure.status != CHORUS_OK) engine_fail_later(e, c, failure); // another connection than the listener
        engine_release(e, c);
    }
}

static chorus_failure rdma_ready(chorus_engine *e, conn *c, uint32_t slots) {
    if (c->is_listener) {
        on_listener(e, c);
        return chorus_no_failure();
    }
    chorus_failure failure = chorus_no_failure();
    if (slots & (1u << SLOT_COMPLETIONS)) failure = on_completions(e, c);
    if (failure.status == CHORUS_OK && (slots & (1u << SLOT_CM))) failure = on_cm_events(e, c);
    return failure;
}

// MARK: - Set-up

static chorus_failure rdma_listen(chorus_engine *e, conn *listener, const char *host, uint16_t port) {
    chorus_failure failure = rdma_open(e, listener);
    if (failure.status != CHORUS_OK) return failure;
    rdma_state *s = state_of(listener);
    int status = rdma_listener_create(host, port, &s->listener);
    if (status != CHORUS_OK) return chorus_failure_of(status);
    return engine_watch(e, listener, rdma_listener_fd(s->listener), SLOT_LISTENER);
}

static chorus_failure rdma_dial(chorus_engine *e, conn *c, const char *host, uint16_t port, uint64_t deadline_ms) {
    // The link names this connection by its local port, which the listener matches to the accepted one.
    struct sockaddr_storage local;
    socklen_t size = sizeof local;
    char ignored[64];
    uint16_t local_port = 0;
    if (getsockname(c->fd, (struct sockaddr *)&local, &size) == 0) chorus_socket_describe(&local, ignored, sizeof ignored, &local_port);
    uint64_t now = chorus_now_ms();
    rdma_link *link;
    int status = rdma_link_connect(host, port, local_port, now < deadline_ms ? (int)(deadline_ms - now) : 1, &link);
    if (status != CHORUS_OK) return chorus_failure_of(status);
    return attach(e, c, link); // a failure closes the connection, and its teardown the link
}

const chorus_data_path chorus_rdma_path = {
    .available = chorus_rdma_probe,
    .open = rdma_open,
    .release = rdma_release,
    .listen = rdma_listen,
    .dial = rdma_dial,
    .post_send = rdma_post_send,
    .stream_data = rdma_stream_data,
    .stream_frame = rdma_stream_frame,
    .resume = rdma_resume,
    .ready = rdma_ready,
    .teardown = rdma_teardown,
};
#endif // CHORUS_HAVE_RDMA_HEADERS
