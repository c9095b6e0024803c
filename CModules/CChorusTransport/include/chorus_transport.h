// Chorus C transport: framed TCP connections driven by one epoll thread per engine.
//
// The contract (DESIGN.md, "Transport contract") in short:
//   - every byte on a connection belongs to a frame: a fixed 32-byte header, then `length` payload bytes;
//   - the header is validated before anything is allocated or read into a caller's buffer;
//   - control frames (small, bounded by max_control_bytes) are delivered as events;
//   - data frames are matched, in order, against receives the caller posted, and their payload lands
//     directly in the caller's buffer; a frame that does not match (epoch, op, tag, length) fails the
//     connection with a precise status;
//   - liveness: heartbeats are sent on idle connections, and a connection on which nothing arrives for
//     idle_timeout_ms (while we are reading) fails with CHORUS_ERR_IDLE_TIMEOUT; with a suspicion
//     multiple set, so does one silent for that many times the longest silence its sender usually
//     keeps (but not less than suspicion_min_ms), which finds a hung peer long before the timeout;
//   - a probe (chorus_engine_probe) asks a peer for a sign of life within a short deadline;
//   - a caller waiting in the engine serves its connections itself (reads, accepts, flushes) instead
//     of being woken by another thread; the engine's I/O thread serves requests in flight while
//     nobody waits, and runs heartbeats and deadlines;
//   - waits take a timeout, spin briefly (yielding) and then block in poll; nothing spins for long.
#ifndef CHORUS_TRANSPORT_H
#define CHORUS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Status codes

typedef enum chorus_transport_status {
    CHORUS_OK = 0,
    // Frame validation (the offending connection is closed).
    CHORUS_ERR_BAD_MAGIC = -100,
    CHORUS_ERR_BAD_VERSION = -101,
    CHORUS_ERR_BAD_TYPE = -102,
    CHORUS_ERR_BAD_FLAGS = -103,
    CHORUS_ERR_CONTROL_TOO_LARGE = -104,
    CHORUS_ERR_BAD_LENGTH = -105,
    CHORUS_ERR_OUT_OF_SEQUENCE = -106, // an RDMA message whose chunk does not continue the frame in progress
    CHORUS_ERR_BAD_CREDIT = -107,      // more RDMA credits returned than there are slots
    // Data frame does not match the posted receive (the connection is closed).
    CHORUS_ERR_STALE_EPOCH = -110,
    CHORUS_ERR_EPOCH_MISMATCH = -111,
    CHORUS_ERR_OP_MISMATCH = -112,
    CHORUS_ERR_TAG_MISMATCH = -113,
    CHORUS_ERR_LENGTH_MISMATCH = -114,
    CHORUS_ERR_UNEXPECTED_CONTROL = -115,
    CHORUS_ERR_TOO_MANY_QUEUED = -116,
    CHORUS_ERR_UNEXPECTED_DATA = -117,
    // Connection lifecycle.
    CHORUS_ERR_PEER_CLOSED = -120,
    CHORUS_ERR_IDLE_TIMEOUT = -121,
    CHORUS_ERR_CANCELLED = -122,
    CHORUS_ERR_CONNECT_FAILED = -123,
    CHORUS_ERR_SYSTEM = -124,
    CHORUS_ERR_HANDSHAKE_TIMEOUT = -125,
    CHORUS_ERR_CONTROL_BUDGET = -126,
    CHORUS_ERR_HANDSHAKE_FLOOD = -127,
    // Calls.
    CHORUS_ERR_TIMEDOUT = -130,     // chorus_request_wait or chorus_engine_next_event: the timeout passed
    CHORUS_ERR_INTERRUPTED = -131,  // chorus_request_wait: an event waits for the owner
    CHORUS_ERR_INVALID_ARGUMENT = -132,
    CHORUS_ERR_NO_SUCH_CONNECTION = -133,
    CHORUS_ERR_ADDRESS = -134,
    CHORUS_ERR_SHUTDOWN = -135,
    CHORUS_ERR_FENCED = -136,       // chorus_engine_vouch: a fence on the connection forbids vouching for that operation
    CHORUS_ERR_OUT_OF_TOUCH = -137, // chorus_engine_vouch: the other end may have taken this one for dead (see there)
    // RDMA was asked for and is not available here (no libraries, no kernel support, no device).
    CHORUS_ERR_NO_RDMA = -140,
} chorus_transport_status;

/// A short, static, human-readable description of a status code.
const char *chorus_status_string(int status);

/// What the last failed listen or connect on the calling thread ran into: the system call, the
/// address and the errno text (e.g. "bind 127.0.0.1:28148: Address already in use"); empty when the
/// last one succeeded. Owned by the thread; valid until its next listen or connect.
const char *chorus_last_failure(void);

// MARK: - Frames

#define CHORUS_FRAME_MAGIC 0x53524843u /* "CHRS" when read as little-endian bytes */
#define CHORUS_PROTOCOL_VERSION 1
#define CHORUS_FRAME_HEADER_BYTES 32

typedef enum chorus_frame_type {
    CHORUS_FRAME_CONTROL = 1,   // small message for the protocol layer, delivered as an event
    CHORUS_FRAME_DATA = 2,      // payload of a collective, matched against a posted receive
    CHORUS_FRAME_HEARTBEAT = 3, // liveness only, empty
    CHORUS_FRAME_CREDIT = 4,    // RDMA connections: `tag` more message slots are free at the sender; empty
    CHORUS_FRAME_PROBE = 5,     // liveness question, answered with a heartbeat (chorus_engine_probe); empty
    CHORUS_FRAME_SHM_OFFER = 6,  // shared-memory path: the dialer's segment, named by tag, epoch and op_id; empty
    CHORUS_FRAME_SHM_ANSWER = 7, // ...the acceptor's answer: tag 1 it mapped the segment, 0 it could not; empty
    CHORUS_FRAME_SHM_DOORBELL = 8, // ...a ring has data (or room) for a reader (writer) that said it waits; empty
    CHORUS_FRAME_FENCE = 9,        // operation fence (chorus_engine_fence): vouch for no operation of `epoch` from `op_id` on; empty
    CHORUS_FRAME_FENCE_ANSWER = 10, // ...answered by the fenced engine: tag 1 it had vouched for op_id already, 0 it never will; empty
} chorus_frame_type;

/// The decoded header. On the wire every field is little-endian:
/// magic u32 | version u8 | type u8 | flags u16 | tag u32 | length u32 | epoch u64 | op_id u64
typedef struct chorus_frame_header {
    uint8_t type;
    uint16_t flags;
    uint32_t tag;
    uint32_t length;
    uint64_t epoch;
    uint64_t op_id;
} chorus_frame_header;

void chorus_frame_encode(const chorus_frame_header *header, uint8_t out[CHORUS_FRAME_HEADER_BYTES]);

/// Decodes and validates a header: magic, version, type, flags (must be 0), and the length bound of
/// its type (control <= max_control_bytes, heartbeat == 0). Returns CHORUS_OK or a CHORUS_ERR_BAD_* code.
int chorus_frame_decode(const uint8_t raw[CHORUS_FRAME_HEADER_BYTES], uint32_t max_control_bytes,
                        chorus_frame_header *out);

// MARK: - Engine

typedef struct chorus_engine chorus_engine;
typedef struct chorus_request chorus_request;
typedef uint64_t chorus_conn_id;

typedef struct chorus_engine_config {
    uint32_t heartbeat_interval_ms; // send a heartbeat after this long without sending; 0 = never
    uint32_t idle_timeout_ms;       // fail a connection silent this long while we read it; 0 = never
    uint32_t max_control_bytes;     // largest control payload accepted
    uint32_t max_queued_events;     // events not yet taken by the owner before a flooding peer is cut off
    int socket_buffer_bytes;        // SO_SNDBUF/SO_RCVBUF; 0 = kernel default
    uint32_t spin_wait_us;          // poll (yielding the core) this long before blocking in a wait
    uint32_t handshake_timeout_ms;  // fail an accepted connection the owner has not admitted by then; 0: accepted ones start admitted
    uint32_t max_unadmitted;        // accepted connections not yet admitted; beyond it the oldest is failed; 0 = no bound
    uint64_t max_buffered_control_bytes; // control payloads read or queued for the owner, over every connection; 0 = no bound
    uint32_t suspicion_multiple;    // fail a connection silent this many times its sender's usual longest silence; 0 = idle timeout only
    uint32_t suspicion_min_ms;      // ...but never one silent for less than this
} chorus_engine_config;

/// The largest control frame a connection may send before it is admitted (handshake, registration, hello).
#define CHORUS_UNADMITTED_MAX_CONTROL_BYTES 4096u

/// CHORUS_OK when RDMA can be used here; else CHORUS_ERR_NO_RDMA with the reason (no libraries, a
/// kernel without RDMA, no device) in `why`.
int chorus_rdma_probe(char *why, size_t why_size);

/// Registers memory for zero-copy RDMA sends: data frames sent from inside it go to the NIC straight
/// from it instead of being copied into the link's slots, and their requests complete when the NIC is
/// done with them. Regions are made once per device, at the first send, and kept until
/// `chorus_rdma_deregister`; the memory must stay allocated until then, and no send from it may be in
/// flight when it is deregistered. CHORUS_ERR_NO_RDMA where RDMA is absent.
int chorus_rdma_register(const void *base, size_t length, uint64_t *handle);
int chorus_rdma_deregister(uint64_t handle);

/// Creates an engine and starts its I/O thread.
int chorus_engine_create(const chorus_engine_config *config, chorus_engine **out);
/// Stops the I/O thread, fails every pending request, closes every socket and frees the engine.
/// No request may be waited on after this.
void chorus_engine_destroy(chorus_engine *engine);

/// Where a connection's data frames travel. Control frames, heartbeats, probes and liveness always
/// use the connection's stream socket (TCP); the data path carries the collectives' bytes.
typedef enum chorus_data_path_kind {
    CHORUS_PATH_TCP = 0,  // on the stream socket itself
    CHORUS_PATH_RDMA = 1, // on an RDMA queue pair (rdma_cm, reliable connected) to the same address and port
    CHORUS_PATH_SHM = 2,  // on rings in shared memory when both ends share a host, else on the stream
} chorus_data_path_kind;

/// Listens on host and the first free port of port...last_port (port 0 = ephemeral; last_port below
/// port = port alone). Accepted connections arrive as CHORUS_EVENT_ACCEPTED and use `path` (a
/// chorus_data_path_kind; the dialer must use the same): with CHORUS_PATH_RDMA it also listens with
/// rdma_cm on the same address and port, and each accepted connection takes the RDMA link its dialer
/// opens. An unknown path is CHORUS_ERR_INVALID_ARGUMENT, one not available here CHORUS_ERR_NO_RDMA.
/// On failure, `chorus_last_failure` says why.
int chorus_engine_listen(chorus_engine *engine, const char *host, uint16_t port, uint16_t last_port, int backlog, int path,
                         uint16_t *bound_port);

/// Connects to host:port within timeout_ms, from the calling thread, then hands the socket to the
/// engine. With CHORUS_PATH_RDMA it then opens an RDMA link (rdma_cm, reliable connected) to the same
/// address and port, which carries the connection's data frames.
int chorus_engine_connect(chorus_engine *engine, const char *host, uint16_t port, int timeout_ms, int path,
                          chorus_conn_id *out);

/// Marks an accepted connection as identified by the owner (a handshake it checked): the handshake
/// deadline no longer applies. Until then its data frames wait (they may overtake the handshake's
/// processing) and the deadline runs even while they do, so a stranger cannot park a connection.
/// `allow_data` 0: any data frame on it is a protocol violation (CHORUS_ERR_UNEXPECTED_DATA), one
/// already waiting included. Connections this engine dialed are admitted from the start.
int chorus_engine_admit(chorus_engine *engine, chorus_conn_id conn, int allow_data);

/// The address an accepted connection came from ("" and 0 for dialed ones).
int chorus_engine_remote_address(chorus_engine *engine, chorus_conn_id conn, char *host, size_t host_size, uint16_t *port);

/// The engine's open connections, listeners left out (a diagnostic: how many links a peer holds).
size_t chorus_engine_connection_count(chorus_engine *engine);

/// Closes a connection: pending requests on it complete with CHORUS_ERR_CANCELLED, no event follows.
int chorus_engine_close(chorus_engine *engine, chorus_conn_id conn);

/// Asks the peer on `conn` to show it is alive: sends a probe frame, which its engine answers with a
/// heartbeat as soon as it serves the connection (at once while its owner waits in the engine,
/// otherwise at its I/O thread's next tick, half a heartbeat interval). If nothing at all arrives on
/// `conn` within max(answer_within_ms, the longest silence its sender usually keeps), the connection
/// fails with CHORUS_ERR_IDLE_TIMEOUT, unless this engine's own I/O thread was held up meanwhile (see
/// the suspicion rule). A probe while one is unanswered keeps the earlier deadline. Not judged on a
/// connection paused on an early data frame (its reply would wait behind the frame).
int chorus_engine_probe(chorus_engine *engine, chorus_conn_id conn, uint32_t answer_within_ms);

/// The operation fence, which lets members commit a collective among themselves while the master
/// can still abort it safely (Chorus DESIGN.md, "Success without the master"):
/// - a member vouches on its master connection for each operation before it tells the other
///   members it is done with it (`chorus_engine_vouch`);
/// - the master fences a member that has not reported an operation before aborting it
///   (`chorus_engine_fence`); the member's engine answers at once, whichever thread reads the frame
///   (the I/O thread while the program computes), and from then on refuses to vouch for that
///   operation or any later one of the epoch, unless it had vouched for it already (then the answer
///   says so and nothing is fenced);
/// - the answer comes back to the master as a CHORUS_EVENT_FENCE_ANSWER.
/// Vouching and answering take one lock, so a fence and a vouch are ordered: either the vouch came
/// first and the answer says so, or the vouch is refused with CHORUS_ERR_FENCED.
/// A vouch that the master cannot fence in time is worth nothing: a member the master took for dead
/// is not asked. With `heard_within_ms` > 0 (a member that commits without hearing from the other
/// members' vouches, Chorus DESIGN.md "A pair commits in one hop") the vouch is refused with
/// CHORUS_ERR_OUT_OF_TOUCH when the master may have done so: the connection failed, nothing arrived
/// on it for `heard_within_ms`, or this engine's I/O thread is more than a tick overdue or found
/// itself held up (a stopped or starved process, which may have read old frames since) within the
/// last `heard_within_ms`. 0: no such condition.
int chorus_engine_vouch(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch, uint64_t op_id, uint32_t heard_within_ms);
int chorus_engine_fence(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch, uint64_t op_id);

/// Queues a control frame without writing it: it leaves, in order, with the connection's next
/// frame, at chorus_engine_flush, or when a heartbeat is due (so within a heartbeat interval and a
/// tick). It replaces a frame sent this way that has not left yet: for messages nobody waits for,
/// of which the newest says all (a member's word that it committed a collective, which implies the
/// earlier ones), and which would otherwise cost a wake-up of the receiver each.
int chorus_engine_send_control_later(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch, uint64_t op_id,
                                     const void *payload, uint32_t length);
/// Writes what chorus_engine_send_control_later queued on `conn`, if anything.
int chorus_engine_flush(chorus_engine *engine, chorus_conn_id conn);

/// Queues a control frame; the payload is copied. Failures surface as a CHORUS_EVENT_FAILED.
int chorus_engine_send_control(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch,
                               uint64_t op_id, const void *payload, uint32_t length);

/// Posts a data frame. `buffer` must stay valid and unchanged until the request completes.
int chorus_engine_post_send(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch, uint64_t op_id,
                            uint32_t tag, const void *buffer, uint32_t length, chorus_request **out);

/// Posts a data frame that waits, on a connection whose data frames travel on its stream (TCP), for
/// the connection's next frame, chorus_engine_flush or a heartbeat, and leaves in one write with it:
/// a small frame followed at once by another costs one system call at both ends, not two (a pair's
/// token ahead of its data). Other data paths write it at once.
int chorus_engine_post_send_with_next(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch, uint64_t op_id,
                                      uint32_t tag, const void *buffer, uint32_t length, chorus_request **out);

/// Posts a receive for the next data frame on `conn`, which must carry exactly (epoch, op_id, tag,
/// length). The payload is written straight into `buffer`, which must stay valid until completion.
/// A frame that arrived before its receive is read when the engine next makes progress (a wait on
/// this engine, or the I/O thread's tick), not inside this call.
int chorus_engine_post_recv(chorus_engine *engine, chorus_conn_id conn, uint64_t epoch, uint64_t op_id,
                            uint32_t tag, void *buffer, uint32_t length, chorus_request **out);

/// Blocks until the request completes (returns its final status, >= CHORUS_OK meaning success, and
/// frees it), the timeout passes (CHORUS_ERR_TIMEDOUT), or, when `interruptible`, an event is waiting
/// for the owner (CHORUS_ERR_INTERRUPTED). After TIMEDOUT or INTERRUPTED the request is still live.
/// While it waits, the calling thread serves the engine's ready connections (as does next_event).
int chorus_request_wait(chorus_engine *engine, chorus_request *request, int timeout_ms, int interruptible);

/// 1 when the request has finished (chorus_request_wait then returns its status at once, without a
/// look at the sockets), 0 while it is in flight. Never blocks.
int chorus_request_done(const chorus_request *request);

typedef enum chorus_event_kind {
    CHORUS_EVENT_ACCEPTED = 1, // a new inbound connection
    CHORUS_EVENT_CONTROL = 2,  // a control frame arrived
    CHORUS_EVENT_FAILED = 3,   // a connection failed (status says why); it is closed
    CHORUS_EVENT_FENCE_ANSWER = 4, // a fence this engine sent was answered (header: epoch, op_id, tag 1 vouched / 0 fenced)
} chorus_event_kind;

typedef struct chorus_event {
    int kind;
    chorus_conn_id conn;
    int status;               // CHORUS_EVENT_FAILED: why
    int sys_errno;            // CHORUS_EVENT_FAILED by a failed system call: its errno (0 otherwise)
    const char *sys_call;     // ...and its name, a static string ("recv", "ibv_post_send"); NULL otherwise
    chorus_frame_header header; // CHORUS_EVENT_CONTROL
    uint8_t *payload;          // CHORUS_EVENT_CONTROL: owned by the event, free with chorus_event_release
} chorus_event;

/// Takes the next event, waiting up to timeout_ms. Returns CHORUS_OK or CHORUS_ERR_TIMEDOUT.
int chorus_engine_next_event(chorus_engine *engine, int timeout_ms, chorus_event *out);
void chorus_event_release(chorus_event *event);

#ifdef __cplusplus
}
#endif
#endif
