// Internal to the transport: the engine's data structures and the helpers that engine.c,
// engine_progress.c and engine_rdma.c share. Locking rules are in engine.c's header comment.
#ifndef CHORUS_ENGINE_INTERNAL_H
#define CHORUS_ENGINE_INTERNAL_H
#include "rdma.h"
#include "sockets.h"

#include <pthread.h>

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
    int needs_attention; // engine->lock: in the attention scan (a receive posted while paused)
    int pending_status;  // engine->lock: a failure found without io_lock (a send error), applied under it
    int pending_errno;   // engine->lock

    // Held by whichever thread serves the connection's readiness, timers and failure (the I/O thread
    // or a waiting caller); everything marked "I/O side" below belongs to its holder. Never waited
    // for while another connection's io_lock is held: see engine_serve.
    pthread_mutex_t io_lock;
    uint32_t io_work; // atomic: IO_* work left for the io_lock holder

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

    // I/O side (io_lock).
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
    uint32_t rhythm_ms; // the longest silence its sender usually keeps between frames (see note_silence)
    uint64_t probe_deadline_ms; // atomic: an unanswered probe's deadline (0: none); anything received clears it
} conn;

typedef struct event_node {
    struct event_node *next;
    chorus_event event;
} event_node;

struct chorus_engine {
    chorus_engine_config config;
    int epfd;
    int wakefd; // wakes the I/O thread (to stop); not in epfd
    pthread_t thread;
    int stopping; // lock
    int pollers;   // atomic: callers waiting in this engine, who serve readiness themselves
    int io_parked; // atomic: the I/O thread stands aside for them until its next tick
    int in_flight; // atomic: requests posted and not completed

    pthread_mutex_t lock;
    struct sleeper *sleepers; // lock: callers blocked in poll, woken by completions and events
    conn **conns;
    size_t conn_count, conn_capacity;
    chorus_conn_id next_id;
    int attention; // lock to write (atomically: peeked without it); some conn needs_attention
    event_node *event_head, *event_tail;
    uint32_t event_count;
    uint64_t control_bytes; // lock: control payloads being read or queued as events (the budget's use)
    uint64_t judge_from_ms; // atomic: no early (suspicion) failure before this; set when the I/O thread was held up
    uint64_t timers_due_ms; // atomic: run the timers by then, before the next tick (a probe's deadline); 0: none
    uint64_t spin_resumes_us; // atomic: no spinning before this (a yield found the core taken; see spin_yield)
    uint64_t spin_pause_us;   // atomic: the last such pause, doubled while yields keep finding the core taken
};

/// Work on a connection, done by the holder of its io_lock (engine_serve).
enum {
    IO_READ = 1u << 0,        // the socket is readable (or hung up)
    IO_WRITE = 1u << 1,       // the socket is writable: flush queued sends
    IO_RDMA_CQ = 1u << 2,     // the link's completion channel
    IO_RDMA_CM = 1u << 3,     // the link's connection-manager channel
    IO_ACCEPT = 1u << 4,      // a listener's socket
    IO_RDMA_ACCEPT = 1u << 5, // a listener's rdma_cm channel
    IO_ATTENTION = 1u << 6,   // a close, a pending failure, or a receive posted while paused
    IO_TIMERS = 1u << 7,      // handshake and idle deadlines, heartbeats
};

/// epoll keys: the connection id, tagged with what became ready.
#define KEY_SOCKET 0ull
#define KEY_RDMA_CQ (1ull << 56)
#define KEY_RDMA_CM (2ull << 56)
#define KEY_RDMA_LISTENER (3ull << 56)
#define KEY_ID_MASK ((1ull << 56) - 1)

conn *engine_acquire(chorus_engine *e, chorus_conn_id id);
void engine_release(chorus_engine *e, conn *c);
void engine_complete_locked(chorus_engine *e, chorus_request *r, int status);
void engine_push_event_locked(chorus_engine *e, event_node *node);
/// Does `work` on `c` under its io_lock, on this thread; when another thread holds the lock, leaves
/// the work to it (it repeats until none is left). Never blocks, so a holder of one connection's
/// io_lock may call it for another.
void engine_serve(chorus_engine *e, conn *c, uint32_t work);
/// What engine_serve does, the lock held (engine_progress.c dispatches; engine.c implements).
void engine_do_work(chorus_engine *e, conn *c, uint32_t work);
/// Fails `c` from a thread that may not hold its io_lock: records the status, then serves it.
void engine_fail_later(chorus_engine *e, conn *c, int status, int sys_errno);
/// The status of a failed socket call: the peer's reset or close, or a local system error.
int engine_errno_status(int error);
/// Harvests ready connections and serves them on the calling thread, waiting up to timeout_ms for
/// readiness (0: only look), then serves connections flagged for attention. Returns how many
/// readiness events it harvested.
int engine_progress(chorus_engine *e, int timeout_ms);
int engine_submit(chorus_engine *e, conn *c, send_item *item);
/// Encodes the owed credits into `c->credit` and marks it queued (caller holds send_lock, then queues it).
void engine_arm_credit_locked(conn *c);
/// Fails a connection: completes its requests, queues a FAILED event (unless the owner closed it),
/// closes the socket. Caller holds c->io_lock.
void engine_fail_conn(chorus_engine *e, conn *c, int status, int sys_errno);
int engine_match_receive(const chorus_frame_header *h, const chorus_request *r);
void engine_accept_all(chorus_engine *e, conn *listener);
/// Has the I/O thread run the timers by `due_ms` (earlier than its tick, if need be).
void engine_timers_due_by(chorus_engine *e, uint64_t due_ms);

// engine_rdma.c
/// Queues a data send on an RDMA connection and sends what it can now.
int rdma_queue_send(chorus_engine *e, conn *c, chorus_request *r);
/// Sends what slots and credits allow. The owner, or the io_lock holder. Returns CHORUS_OK or a failure status.
int rdma_flush_sends(chorus_engine *e, conn *c);
/// Consumes received messages into posted receives (io_lock held). Returns OK or a failure status.
int rdma_consume(chorus_engine *e, conn *c);
/// The handlers (io_lock held) for a link's completion channel and CM channel, and a listener's.
void rdma_on_completions(chorus_engine *e, conn *c);
void rdma_on_cm_events(chorus_engine *e, conn *c);
void rdma_on_listener(chorus_engine *e, conn *listener);
/// A credit frame arrived on the socket (io_lock held).
int rdma_on_credit(chorus_engine *e, conn *c, uint32_t credits);
/// Attaches an established or accepted link and registers its channels with epoll.
int rdma_attach(chorus_engine *e, conn *c, rdma_link *link);
/// Fails queued sends and releases the link (from engine_fail_conn).
void rdma_teardown(chorus_engine *e, conn *c, int request_status);
#endif
