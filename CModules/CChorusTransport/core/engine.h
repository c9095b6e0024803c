// Internal to the transport: the core's data structures and the calls its files share. The core
// owns connections, requests, waits, the event queue and the loop; it never names a data path
// (data_path.h is the table each one fills). Locking rules are in connections.c's header comment.
#ifndef CHORUS_ENGINE_H
#define CHORUS_ENGINE_H
#include "data_path.h"
#include "failure.h"
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
    int with_next;           // chorus_engine_post_send_with_next: waits for the connection's next frame
    // Reused frames (neither a request nor heap-owned): called under send_lock once it is written.
    void (*written)(chorus_engine *e, conn *c, struct send_item *item);
} send_item;

struct chorus_request {
    struct chorus_request *next; // posted-receive queue; a data path's own send queue
    int done;
    int status;
    uint64_t epoch;
    uint64_t op_id;
    uint32_t tag;
    uint32_t length;
    uint8_t *buffer;
    send_item item; // data sends
};

struct conn {
    chorus_conn_id id;
    int fd; // the stream socket (a listener's listening socket)
    int is_listener;
    const chorus_data_path *path;
    void *path_state;    // the data path's own, per connection (NULL for paths that keep none)
    int refs;            // engine->lock
    int failed;          // engine->lock
    int owner_closed;    // engine->lock: the owner closed it, so no FAILED event
    int needs_attention; // engine->lock: in the attention scan (a receive posted while one was wanted)
    chorus_failure pending; // engine->lock: a failure found without io_lock (a send error), applied under it
    chorus_failure failure; // engine->lock: why it failed, once `failed` (a dial in progress reports it)

    // Held by whichever thread serves the connection's readiness, timers and failure (the I/O thread
    // or a waiting caller); everything marked "I/O side" below belongs to its holder. Never waited
    // for while another connection's io_lock is held: see engine_serve.
    pthread_mutex_t io_lock;
    uint32_t io_work; // atomic: IO_* work left for the io_lock holder

    pthread_mutex_t send_lock;
    send_item *send_head, *send_tail; // send_lock
    int send_closed;                  // send_lock
    uint64_t last_send_ms;            // send_lock
    int corked;                       // send_lock: the queue holds frames sent for later (engine_submit_later) that nobody is writing
    send_item heartbeat;              // send_lock; reused, never freed

    chorus_request *recv_head, *recv_tail; // engine->lock: posted receives, oldest first
    int receive_wanted;                    // engine->lock: the stream or the data path stopped at a frame for want of a posted receive
    int stream_paused;                     // engine->lock: the stream reader stopped at a data frame (nothing is read until a receive is posted)
    int admitted;                          // engine->lock: identified by the owner (dialed ones from the start)
    int data_allowed;                      // engine->lock: data frames may arrive (once admitted)
    uint64_t created_ms;                   // when it was accepted or dialed (the handshake deadline)
    char peer_host[64];                    // accepted connections: who dialed (for logs; a data path may match its link by it)
    uint16_t peer_port;

    // I/O side (io_lock): the stream reader.
    uint8_t *ahead;                       // bytes read past the frame in progress (READ_AHEAD_BYTES, made at the first read)
    uint32_t ahead_start, ahead_end;      // the unparsed ones: ahead[ahead_start, ahead_end)
    int hung_up;                          // epoll said the other end closed or reset: read to the end of the stream
    uint8_t header_raw[CHORUS_FRAME_HEADER_BYTES];
    uint32_t header_got;
    int have_header;
    chorus_frame_header header;
    uint8_t *control_payload;
    uint32_t control_reserved; // engine->lock: bytes of the control frame in progress counted in the budget
    int delivered_control;     // engine->lock: a control frame went to the owner
    uint32_t payload_got;
    chorus_request *active_recv; // the posted receive a data frame on the stream is read into
    uint64_t last_recv_ms; // atomic: written by its reader, read by chorus_engine_vouch
    int heard;          // something arrived (until then the sender has shown no rhythm to judge it by)
    uint32_t rhythm_ms; // the longest silence its sender usually keeps between frames (see note_silence)
    uint64_t probe_deadline_ms; // atomic: an unanswered probe's deadline (0: none); anything received clears it

    // The operation fence (fence.c), engine->lock: the newest operation this end vouched for, and
    // the first operation a fence forbids it to vouch for (fence_op 0: none in fence_epoch).
    uint64_t vouched_epoch, vouched_op;
    uint64_t fence_epoch, fence_op;
    uint32_t fences_unanswered; // fences this end sent that its other end has not answered yet
};

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
    uint32_t tick_ms;       // the I/O thread's timer period (engine_tick_ms)
    uint64_t last_tick_ms;  // atomic: when the I/O thread last ran its timers
    uint64_t held_up_ms;    // atomic: when the I/O thread last found its timer late by more than a tick (engine_held_up_within)
    uint64_t timers_due_ms; // atomic: run the timers by then, before the next tick (a probe's deadline); 0: none
    uint64_t spin_resumes_us; // atomic: no spinning before this (a yield found the core taken; see spin_yield)
    uint64_t spin_pause_us;   // atomic: the last such pause, doubled while yields keep finding the core taken
};

/// Work on a connection, done by the holder of its io_lock (engine_serve).
enum {
    IO_READ = 1u << 0,      // the stream socket is readable (or hung up)
    IO_WRITE = 1u << 1,     // the stream socket is writable: flush queued sends
    IO_ACCEPT = 1u << 2,    // a listener's socket
    IO_ATTENTION = 1u << 3, // a close, a pending failure, or a receive posted where one was wanted
    IO_TIMERS = 1u << 4,    // handshake and idle deadlines, heartbeats
    IO_HANGUP = 1u << 5,    // with IO_READ: the other end closed or reset (a short read no longer says drained)
    IO_PATH_SHIFT = 8,      // bits 8.. : descriptors the data path watches, by slot (CHORUS_PATH_MAX_WATCHED)
};

/// epoll keys: the connection id, tagged with what became ready (0: the stream socket; slot + 1: a
/// descriptor its data path watches).
#define KEY_SLOT_SHIFT 56
#define KEY_ID_MASK ((1ull << KEY_SLOT_SHIFT) - 1)

// connections.c
conn *engine_acquire(chorus_engine *e, chorus_conn_id id);
void engine_release(chorus_engine *e, conn *c);
/// Does `work` on `c` under its io_lock (progress.c dispatches; connections.c implements).
void engine_do_work(chorus_engine *e, conn *c, uint32_t work);
void engine_accept_all(chorus_engine *e, conn *listener);

// stream.c: the framed stream socket every connection has.
/// Writes queued frames until the queue is empty or the socket is full. Caller holds send_lock.
chorus_failure stream_flush_locked(chorus_engine *e, conn *c);
/// Reads frames until the socket is drained, the connection fails, or a data frame waits for a receive.
void stream_read(chorus_engine *e, conn *c);
/// A heartbeat unless frames are queued already (they say as much). Caller holds send_lock.
chorus_failure stream_heartbeat_locked(chorus_engine *e, conn *c);
/// Writes the frames sent for later (engine_submit_later), if the queue holds only those. Caller
/// holds send_lock.
chorus_failure stream_uncork_locked(chorus_engine *e, conn *c);
/// A fence or a fence's answer that the stream read (io_lock held; fence.c).
chorus_failure fence_frame(chorus_engine *e, conn *c);
/// Drops every queued frame with `status` and closes the write side (from engine_fail_conn).
void stream_close_sends(chorus_engine *e, conn *c, int status);

// progress.c
void engine_complete_locked(chorus_engine *e, chorus_request *r, int status);
/// Completes every request of a queue (linked by `next`) with `status` and empties it.
void engine_complete_all_locked(chorus_engine *e, chorus_request **head, chorus_request **tail, int status);
void engine_push_event_locked(chorus_engine *e, event_node *node);
/// Does `work` on `c` under its io_lock, on this thread; when another thread holds the lock, leaves
/// the work to it (it repeats until none is left). Never blocks, so a holder of one connection's
/// io_lock may call it for another.
void engine_serve(chorus_engine *e, conn *c, uint32_t work);
/// Harvests ready connections and serves them on the calling thread, waiting up to timeout_ms for
/// readiness (0: only look), then serves connections flagged for attention. Returns how many
/// readiness events it harvested.
int engine_progress(chorus_engine *e, int timeout_ms);
/// Has the I/O thread run the timers by `due_ms` (earlier than its tick, if need be).
void engine_timers_due_by(chorus_engine *e, uint64_t due_ms);
/// True when the I/O thread found itself held up (its timer late by more than a tick: a stopped or
/// starved process, which reads late) within `window_ms` before `now` (progress.c).
int engine_held_up_within(chorus_engine *e, uint64_t now, uint64_t window_ms);
#endif
