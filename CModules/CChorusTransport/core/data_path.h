// Internal to the transport: the table a data path fills, and the core's calls a data path may make.
//
// Every connection is a framed stream socket (TCP): control frames, heartbeats, probes and liveness
// travel on it whatever the data path. The data path decides where data frames travel and how they
// land in posted receives: `tcp/` on the stream itself, `rdma/` on a queue pair beside it, `shm/` in
// rings of shared memory when both ends share a host. The core calls a path only through this
// table, and the paths are listed in one place (data_paths.c), so a new one is a folder and a line
// there. Entries marked "may be NULL" are skipped when absent.
#ifndef CHORUS_DATA_PATH_H
#define CHORUS_DATA_PATH_H
#include "failure.h"

#include <stddef.h>
#include <stdint.h>

typedef struct conn conn;
struct send_item;

/// What a path's receiving steps return when a frame must wait for a receive to be posted (then
/// c->receive_wanted is set, and the post brings the connection back to the path's `resume`). Not a status.
#define CHORUS_PATH_WAIT 1
/// Descriptors one connection's data path may watch in the engine's epoll set (slots 0...3).
#define CHORUS_PATH_MAX_WATCHED 4

typedef struct chorus_data_path {
    /// CHORUS_OK when the path can be used here, else its status with the reason in `why`. May be NULL (always).
    int (*available)(char *why, size_t why_size);
    /// A new connection (dialed or accepted, not a listener): sets up c->path_state. May be NULL.
    chorus_failure (*open)(chorus_engine *e, conn *c);
    /// Frees c->path_state when the last reference to the connection goes. May be NULL.
    void (*release)(conn *c);
    /// A listener's own side (rdma: an rdma_cm listener on the same address and port). May be NULL.
    chorus_failure (*listen)(chorus_engine *e, conn *listener, const char *host, uint16_t port);
    /// After the stream connected: opens the data link by `deadline_ms`. May be NULL.
    chorus_failure (*dial)(chorus_engine *e, conn *c, const char *host, uint16_t port, uint64_t deadline_ms);
    /// Queues a data send (its request's item holds header, buffer and length) and sends what it can.
    chorus_failure (*post_send)(chorus_engine *e, conn *c, chorus_request *r);
    /// A data frame's header arrived on the stream (io_lock held, admission already checked): sets
    /// c->active_recv to the receive its payload is read into and returns CHORUS_OK, returns
    /// CHORUS_PATH_WAIT when none is posted yet, or a status that fails the connection.
    int (*stream_data)(chorus_engine *e, conn *c);
    /// A frame of a type the core does not handle arrived on the stream (rdma: credits; shm: offer,
    /// answer, doorbell; tcp: refuses an offer), admitted or not (engine_data_allowed says whether
    /// data may flow yet). May be NULL (none valid).
    chorus_failure (*stream_frame)(chorus_engine *e, conn *c, const chorus_frame_header *h);
    /// A receive was posted after the path wanted one (io_lock held).
    chorus_failure (*resume)(chorus_engine *e, conn *c);
    /// Descriptors it watches became ready (bit s: slot s; io_lock held). May be NULL.
    chorus_failure (*ready)(chorus_engine *e, conn *c, uint32_t slots);
    /// Fails what it queued with `request_status` and closes its link (io_lock held). May be NULL.
    void (*teardown)(chorus_engine *e, conn *c, int request_status);
} chorus_data_path;

/// The table of a chorus_data_path_kind, NULL for an unknown one (data_paths.c).
const chorus_data_path *chorus_data_path_for(int kind);

// MARK: - The core's calls for data paths

/// Adds `fd` to the engine's epoll set: its readiness reaches the path's `ready` as slot `slot`.
chorus_failure engine_watch(chorus_engine *e, conn *c, int fd, int slot);
void engine_unwatch(chorus_engine *e, int fd);
/// Queues a frame on the stream and writes what the socket takes now; a write error fails the
/// connection later (engine_fail_later). CHORUS_ERR_NO_SUCH_CONNECTION once it is closed.
int engine_submit(chorus_engine *e, conn *c, struct send_item *item);
/// Queues `item` without writing it: it leaves with the next send, a flush or the heartbeat timer,
/// and replaces an earlier such item that has not left.
int engine_submit_later(chorus_engine *e, conn *c, struct send_item *item);
/// Queues an empty frame (`h`'s length is ignored) on the stream: a signal of the core's or a path's.
int engine_send_signal(chorus_engine *e, conn *c, const chorus_frame_header *h);
/// Appends to the stream's send queue. Caller holds c->send_lock (a reused frame re-queuing itself).
void engine_enqueue_locked(conn *c, struct send_item *item);
/// Fails a connection: completes its requests, queues a FAILED event (unless the owner closed it),
/// has its path tear down, closes the socket. Caller holds c->io_lock. A second failure is ignored.
void engine_fail_conn(chorus_engine *e, conn *c, chorus_failure why);
/// Fails `c` from a thread that may not hold its io_lock: records why, then serves it.
void engine_fail_later(chorus_engine *e, conn *c, chorus_failure why);
int engine_conn_failed(chorus_engine *e, conn *c);
/// Why `c` failed (chorus_no_failure() while it has not).
chorus_failure engine_conn_failure(chorus_engine *e, conn *c);
/// Whether data may flow on `c` yet: admitted with data allowed, or (not yet judged) behind a control
/// frame the owner has still to judge, as a data frame may be.
int engine_data_allowed(chorus_engine *e, conn *c);
/// Whether a data frame's header is the one `r` expects: CHORUS_OK or the precise mismatch.
int engine_match_receive(const chorus_frame_header *h, const chorus_request *r);
/// For paths that carry a data frame as chunks (offset, length) of its payload: copies one into the
/// receive of the frame in progress (`*active`, filled up to `*filled`) or, for a frame's first
/// chunk, into the head posted receive once its header matches. Completes the receive with its last
/// chunk. Returns CHORUS_OK (taken), CHORUS_PATH_WAIT (it stays where it is), a mismatch status, or
/// CHORUS_ERR_OUT_OF_SEQUENCE for a chunk that does not continue the frame in progress. The caller
/// holds io_lock (only its holder completes `*active`) and checked offset + length <= h->length.
int engine_receive_chunk(chorus_engine *e, conn *c, chorus_request **active, uint32_t *filled,
                         const chorus_frame_header *h, uint32_t offset, const uint8_t *chunk, uint32_t length);
/// The first connection `match` accepts (called under engine->lock), with a reference; NULL if none.
conn *engine_find(chorus_engine *e, int (*match)(const conn *c, const void *context), const void *context);
#endif
