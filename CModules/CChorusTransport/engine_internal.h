// Internal to the transport: the engine's data structures and the helpers that engine.c and
// engine_rdma.c share. Locking rules are in engine.c's header comment.
#ifndef CHORUS_ENGINE_INTERNAL_H
#define CHORUS_ENGINE_INTERNAL_H
#include "rdma.h"
#include "sockets.h"

#include <pthread.h>

#define WAKE_ID 0u

typedef struct send_item {
    struct send_item *next;
    uint8_t header[CHORUS_FRAME_HEADER_BYTES];
    uint32_t header_sent;
    const uint8_t *payload;
    uint32_t length;
    uint32_t payload_sent;
    chorus_request *request; // data sends; NULL for control and heartbeat frames
    int heap_owned;          // control frames: item and payload copy in one allocation
} send_item;

struct chorus_request {
    struct chorus_request *next; // posted-receive queue
    int done;
    int status;
    uint64_t epoch;
    uint64_t op_id;
    uint32_t tag;
    uint32_t length;
    uint8_t *buffer;
    send_item item; // data sends
};

typedef struct conn {
    chorus_conn_id id;
    int fd;
    int is_listener;
    int refs;            // engine->lock
    int failed;          // engine->lock
    int owner_closed;    // engine->lock: the owner closed it, so no FAILED event
    int needs_attention; // engine->lock: close requested, send error, or a receive posted while paused
    int send_error;      // engine->lock
    int sys_errno;       // engine->lock

    pthread_mutex_t send_lock;
    send_item *send_head, *send_tail; // send_lock
    int send_closed;                  // send_lock
    uint64_t last_send_ms;            // send_lock
    send_item heartbeat;              // send_lock; reused, never freed
    send_item credit;                 // send_lock; RDMA credit frame, reused, never freed
    int credit_queued;                // send_lock: `credit` is in the send queue
    uint32_t credits_owed;            // send_lock: freed slots not yet in a credit frame

    chorus_request *recv_head, *recv_tail; // engine->lock
    int paused;                            // engine->lock
    int admitted;                          // engine->lock: identified by the owner (dialed ones from the start)
    int data_allowed;                      // engine->lock: data frames may arrive (once admitted)
    uint64_t created_ms;                   // when it was accepted or dialed (the handshake deadline)

    // RDMA (engine_rdma.c). `uses_rdma`: data frames travel on `rdma`, never on the socket.
    int uses_rdma;
    rdma_listener *rdma_listener; // listeners: the rdma_cm side
    char peer_host[64];           // accepted connections: who dialed (for logs, and to match an RDMA link)
    uint16_t peer_port;
    pthread_mutex_t rdma_lock;    // the fields below; taken before engine->lock
    rdma_link *rdma;              // NULL until connected (accepting side: until the dialer's link arrives)
    chorus_request *rdma_send_head, *rdma_send_tail; // data sends waiting for slots and credits
    uint32_t rdma_send_offset;    // bytes of the head already sent
    int head_zero_copy;           // a chunk of the head went from registered memory, uncopied
    chorus_request *slot_request[CHORUS_RDMA_SLOTS]; // a zero-copy send completing with this slot's message
    int free_slots[CHORUS_RDMA_SLOTS];
    int free_slot_count;
    uint32_t credits;             // messages the peer has room for
    int pending_slot[CHORUS_RDMA_SLOTS]; // received messages not yet consumed, oldest first
    uint32_t pending_bytes[CHORUS_RDMA_SLOTS];
    int pending_first, pending_count;
    chorus_request *rdma_active;  // engine->lock: the receive being filled from RDMA messages
    uint32_t recv_offset;         // of the frame being received into rdma_active
    uint32_t returned;            // slots reposted since the last credit frame
    int rdma_paused;              // engine->lock: a message waits for a receive to be posted

    // I/O thread only.
    uint8_t header_raw[CHORUS_FRAME_HEADER_BYTES];
    uint32_t header_got;
    int have_header;
    chorus_frame_header header;
    uint8_t *control_payload;
    uint32_t control_reserved; // engine->lock: bytes of the control frame in progress counted in the budget
    int delivered_control;     // engine->lock: a control frame went to the owner
    uint32_t payload_got;
    chorus_request *active_recv;
    uint64_t last_recv_ms;
} conn;

typedef struct event_node {
    struct event_node *next;
    chorus_event event;
} event_node;

struct chorus_engine {
    chorus_engine_config config;
    int epfd;
    int wakefd;
    pthread_t thread;
    int stopping; // lock

    pthread_mutex_t lock;
    pthread_cond_t cond;
    conn **conns;
    size_t conn_count, conn_capacity;
    chorus_conn_id next_id;
    int attention; // some conn needs_attention
    event_node *event_head, *event_tail;
    uint32_t event_count;
    uint64_t control_bytes; // lock: control payloads being read or queued as events (the budget's use)
};

/// epoll keys: the connection id, tagged with what became ready.
#define KEY_SOCKET 0ull
#define KEY_RDMA_CQ (1ull << 56)
#define KEY_RDMA_CM (2ull << 56)
#define KEY_RDMA_LISTENER (3ull << 56)
#define KEY_ID_MASK ((1ull << 56) - 1)

void engine_wake(chorus_engine *e);
conn *engine_acquire(chorus_engine *e, chorus_conn_id id);
void engine_release(chorus_engine *e, conn *c);
void engine_complete_locked(chorus_engine *e, chorus_request *r, int status);
void engine_push_event_locked(chorus_engine *e, event_node *node);
void engine_flag_attention(chorus_engine *e, conn *c);
int engine_submit(chorus_engine *e, conn *c, send_item *item);
/// Encodes the owed credits into `c->credit` and marks it queued (caller holds send_lock, then queues it).
void engine_arm_credit_locked(conn *c);
void engine_fail_conn(chorus_engine *e, conn *c, int status, int sys_errno);
int engine_match_receive(const chorus_frame_header *h, const chorus_request *r);
void engine_accept_all(chorus_engine *e, conn *listener);

// engine_rdma.c
/// Queues a data send on an RDMA connection and sends what it can now.
int rdma_queue_send(chorus_engine *e, conn *c, chorus_request *r);
/// Sends what slots and credits allow. Owner or I/O thread. Returns CHORUS_OK or a failure status.
int rdma_flush_sends(chorus_engine *e, conn *c);
/// Consumes received messages into posted receives (I/O thread). Returns OK or a failure status.
int rdma_consume(chorus_engine *e, conn *c);
/// The I/O thread's handlers for a link's completion channel and CM channel, and a listener's.
void rdma_on_completions(chorus_engine *e, conn *c);
void rdma_on_cm_events(chorus_engine *e, conn *c);
void rdma_on_listener(chorus_engine *e, conn *listener);
/// A credit frame arrived on the socket (I/O thread).
int rdma_on_credit(chorus_engine *e, conn *c, uint32_t credits);
/// Attaches an established or accepted link and registers its channels with epoll.
int rdma_attach(chorus_engine *e, conn *c, rdma_link *link);
/// Fails queued sends and releases the link (I/O thread, from engine_fail_conn).
void rdma_teardown(chorus_engine *e, conn *c, int request_status);
#endif
