/*
 * chorus.h: the C ABI of Chorus (libchorus.so), for C, C++, Rust and Python programs.
 *
 * Conventions
 * - Every call that can fail returns a chorus_status (CHORUS_STATUS_OK = 0) and, when `error` is not
 *   NULL, fills it with the code, a message and whether the failure is retryable (call
 *   chorus_update_topology, then the same collective again). No call crashes or exits on bad input.
 * - Handles (chorus_master, chorus_comm, chorus_state, chorus_request) are created by this library
 *   and released by the matching destroy (or, for a request, by waiting on it). Passing a destroyed
 *   handle is undefined, as with free().
 * - Threading: a chorus_comm may be used from any thread; its calls run one at a time, in the order
 *   they were made (a second thread's call waits for the first). Non-blocking calls (_async) are
 *   queued in that same order, so several may be in flight and complete in order; the buffers they
 *   name are lent until the request completes. Getters never block. Every member of a group must
 *   issue the same collectives in the same order, with the same counts, types and operators.
 * - Memory: buffers are the caller's, read and written in place; the library keeps no pointer to a
 *   buffer after the call (or its request) completes, except tensors added to a chorus_state, which
 *   must stay valid until the state is destroyed.
 */
#ifndef CHORUS_H
#define CHORUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum chorus_status {
    CHORUS_STATUS_OK = 0,
    /** The collective's verdict was abort (every member got it; inputs restored). See `retryable`. */
    CHORUS_STATUS_ABORTED = 1,
    /** An earlier collective aborted in this epoch: call chorus_update_topology first. Retryable. */
    CHORUS_STATUS_TOPOLOGY_UPDATE_REQUIRED = 2,
    /** The new epoch's ring could not be connected: call chorus_update_topology again. Retryable. */
    CHORUS_STATUS_TOPOLOGY_FAILED = 3,
    /** The call is wrong: a null pointer, a bad count, type or root, a communicator that left. */
    CHORUS_STATUS_INVALID_ARGUMENT = 4,
    /** The master cannot be reached, or its connection died. */
    CHORUS_STATUS_MASTER_UNREACHABLE = 5,
    /** The master no longer counts this peer: create a new communicator to rejoin. */
    CHORUS_STATUS_EVICTED = 6,
    /** Waiting for the master (admission, topology, a verdict) passed its deadline. */
    CHORUS_STATUS_TIMED_OUT = 7,
    /** A local resource (socket, thread, RDMA) could not be set up. */
    CHORUS_STATUS_SETUP_FAILED = 8,
    /** chorus_test: the request has not completed yet. */
    CHORUS_STATUS_PENDING = 9,
    /** The master or a neighbour refused the handshake: a wrong or missing shared secret on one side
        (CHORUS_SECRET_FILE / CHORUS_SECRET). */
    CHORUS_STATUS_AUTHENTICATION_FAILED = 10
} chorus_status;

/** A short name for a status ("ok", "aborted", ...); never NULL. */
const char *chorus_status_name(int status);

typedef struct chorus_error {
    int32_t code;      /* a chorus_status */
    int32_t retryable; /* 1: update the topology and retry */
    char message[1024];
} chorus_error;

typedef enum chorus_type {
    CHORUS_TYPE_FLOAT32 = 0,
    CHORUS_TYPE_FLOAT64 = 1,
    CHORUS_TYPE_FLOAT16 = 2,
    CHORUS_TYPE_BFLOAT16 = 3,
    CHORUS_TYPE_INT32 = 4,
    CHORUS_TYPE_INT64 = 5,
    CHORUS_TYPE_UINT8 = 6
} chorus_type;

typedef enum chorus_reduce_op {
    CHORUS_OP_SUM = 0,
    CHORUS_OP_PROD = 1,
    CHORUS_OP_MIN = 2,
    CHORUS_OP_MAX = 3,
    CHORUS_OP_AVG = 4
} chorus_reduce_op;

typedef enum chorus_scan_op {
    CHORUS_SCAN_SUM = 0,
    CHORUS_SCAN_PROD = 1,
    CHORUS_SCAN_MAX = 2,
    CHORUS_SCAN_MIN = 3,
    /** h -> g*h + s with a decay g per element prefix (see chorus_all_scan). */
    CHORUS_SCAN_AFFINE = 4
} chorus_scan_op;

typedef enum chorus_sync_strategy {
    CHORUS_SYNC_ELECT = 0,
    CHORUS_SYNC_RECEIVE_ONLY = 1,
    CHORUS_SYNC_SEND_ONLY = 2
} chorus_sync_strategy;

typedef struct chorus_master chorus_master;
typedef struct chorus_comm chorus_comm;
typedef struct chorus_state chorus_state;
typedef struct chorus_request chorus_request;

/* ---- Master ------------------------------------------------------------------------------------ */

/** Starts a master serving on a background thread. host NULL: "127.0.0.1"; port 0: ephemeral. */
chorus_status chorus_master_create(const char *host, uint16_t port, chorus_master **out, chorus_error *error);
/** The bound port. */
uint16_t chorus_master_port(const chorus_master *master);
/** Stops serving (members see the master gone) and frees it. */
void chorus_master_destroy(chorus_master *master);

/* ---- Communicator ------------------------------------------------------------------------------ */

/**
 * Connects to the master at "host:port" (NULL: the CHORUS_MASTER environment variable), registers
 * and waits until admitted. `options` is NULL or a NULL-terminated list of "CHORUS_NAME=value"
 * strings, read like the CHORUS_* environment variables (which apply first), e.g.
 * "CHORUS_PEER_TIMEOUT_MS=2000".
 */
chorus_status chorus_comm_create(const char *master, const char *const *options, chorus_comm **out, chorus_error *error);
/**
 * Waits until the calls queued on the communicator have started, then releases it (a request not
 * yet waited for keeps the communicator until it is, as its buffers stay lent). A member that did
 * not leave first is seen by the others as lost: their next collective aborts (retryably).
 */
void chorus_comm_destroy(chorus_comm *comm);
/** Leaves the group at the next safe point; the communicator can then only be destroyed. */
chorus_status chorus_comm_leave(chorus_comm *comm, chorus_error *error);
/**
 * A safe point: admits waiting peers, drops lost ones, connects the new epoch. Every member calls it.
 * Waits until at least `minimum_world_size` peers can form the epoch. `admit_pending` 0 re-forms the
 * current members only and leaves waiting peers waiting (unless every other member admits): a
 * retry after a failure that should not pull a joiner into the middle of a step.
 */
chorus_status chorus_update_topology(chorus_comm *comm, int32_t minimum_world_size, int32_t admit_pending,
                                     chorus_error *error);

/** What chorus_optimize_topology measured and chose (at this member). */
typedef struct chorus_topology_optimization {
    /** 1: the members re-formed in a new ring order; 0: the current order was kept. */
    int32_t reordered;
    /** Pairs this member measured; the others' costs were known from an earlier call. */
    int32_t measured_pairs;
    /** Connections this member dials to its right neighbour in the new epoch (0 alone). */
    int32_t right_lanes;
    /** The ring's slowest link before and after, as measured (bytes per second; 0 for a member alone). */
    double slowest_link_before;
    double slowest_link_after;
} chorus_topology_optimization;

/**
 * A safe point that also orders the ring by measured link speed (every member calls it, with the
 * same `measure_ms` and `remeasure`): the members measure the pairs they have not measured before
 * (both ways at once, each pair for about twice `measure_ms`, 1...10000), share the costs, solve the
 * order whose slowest link is fastest and re-form in it, as chorus_update_topology does. Every
 * member ends with the same order; with automatic lanes (CHORUS_CONNECTIONS 0, the default) each
 * dials as many connections to its right neighbour as the measured link needs. `remeasure` 1
 * measures known pairs again. `result` may be NULL.
 * A member lost while measuring aborts it (retryable; the order is unchanged).
 */
chorus_status chorus_optimize_topology(chorus_comm *comm, int32_t measure_ms, int32_t remeasure, int32_t minimum_world_size,
                                       int32_t admit_pending, chorus_topology_optimization *result, chorus_error *error);

int32_t chorus_comm_rank(const chorus_comm *comm);
int32_t chorus_comm_world_size(const chorus_comm *comm);
uint64_t chorus_comm_epoch(const chorus_comm *comm);
uint64_t chorus_comm_peer_id(const chorus_comm *comm);
/**
 * Reads what the master has sent since the last call without waiting (after the communicator's
 * queued requests). The pending counts below are otherwise updated while calls run: a member that
 * runs no collective (alone in its world) polls to learn of a joiner.
 */
chorus_status chorus_comm_poll(chorus_comm *comm, chorus_error *error);
/** Peers waiting to join / members waiting to leave at the next chorus_update_topology. */
int32_t chorus_comm_pending_joins(const chorus_comm *comm);
int32_t chorus_comm_pending_leaves(const chorus_comm *comm);

/* ---- Collectives (blocking) -------------------------------------------------------------------- */

/** `count` elements of `send` reduced across members into `receive` (the same pointer: in place). */
chorus_status chorus_all_reduce(chorus_comm *comm, const void *send, void *receive, size_t count, chorus_type type,
                                chorus_reduce_op op, chorus_error *error);
/**
 * The all-reduce sent quantized (f32, f16 or bf16; SUM or AVG): `bits` 8 or 4, a scale per `block`
 * elements (1...65536), `scaling` 0 for absmax, 1 for min-max. Every member receives the same bits:
 * each contribution is quantized once and summed in rank order in f32. `feedback` (NULL, or `count`
 * floats the caller keeps, zeros at first) carries what quantizing lost into the next call; an
 * aborted call leaves it as it was. Every member must pass the same format.
 */
chorus_status chorus_all_reduce_quantized(chorus_comm *comm, const void *send, void *receive, size_t count, chorus_type type,
                                          chorus_reduce_op op, int32_t bits, int32_t scaling, size_t block, float *feedback,
                                          chorus_error *error);
/** `send` holds world-size blocks of `count`; block `rank` of their reduction lands in `receive` (`count`). */
chorus_status chorus_reduce_scatter(chorus_comm *comm, const void *send, void *receive, size_t count, chorus_type type,
                                    chorus_reduce_op op, chorus_error *error);
/** Every member's `count` elements land in block `rank` of `receive` (world-size blocks). */
chorus_status chorus_all_gather(chorus_comm *comm, const void *send, void *receive, size_t count, chorus_type type,
                                chorus_error *error);
/** `root`'s `count` elements replace everyone's `buffer`. */
chorus_status chorus_broadcast(chorus_comm *comm, void *buffer, size_t count, chorus_type type, int32_t root,
                               chorus_error *error);
/** Returns once every member has called it. */
chorus_status chorus_barrier(chorus_comm *comm, chorus_error *error);
/**
 * All-Scan: `exclusive` gets the fold of the states of the ranks before this one (rank 0: the
 * operator's identity), `inclusive` that fold combined with this rank's state; either may be NULL.
 * CHORUS_SCAN_AFFINE reads `decay` (`decay_count` elements, a leading prefix of the state's shape,
 * float types only); other operators ignore it. `reverse` folds from the last rank down.
 */
chorus_status chorus_all_scan(chorus_comm *comm, const void *state, void *exclusive, void *inclusive, size_t count,
                              chorus_type type, chorus_scan_op op, const void *decay, size_t decay_count, int32_t reverse,
                              chorus_error *error);

/* ---- Collectives (non-blocking) ---------------------------------------------------------------- */

/**
 * As the blocking forms; `*request` completes when the collective has its verdict. Non-blocking
 * calls start on the communicator's queue in the order they were made, and the queue moves on once
 * a call's data has moved: up to CHORUS_OPERATIONS_IN_FLIGHT (8) collectives wait for their
 * verdicts together, and the master's round trip of one overlaps the data of the next. Requests
 * complete in the order they were made; an abort of one is also the verdict of every later one of
 * the epoch. A blocking call first waits for every request made before it.
 */
chorus_status chorus_all_reduce_async(chorus_comm *comm, const void *send, void *receive, size_t count, chorus_type type,
                                      chorus_reduce_op op, chorus_request **request, chorus_error *error);
chorus_status chorus_all_reduce_quantized_async(chorus_comm *comm, const void *send, void *receive, size_t count,
                                                chorus_type type, chorus_reduce_op op, int32_t bits, int32_t scaling,
                                                size_t block, float *feedback, chorus_request **request, chorus_error *error);
chorus_status chorus_reduce_scatter_async(chorus_comm *comm, const void *send, void *receive, size_t count,
                                          chorus_type type, chorus_reduce_op op, chorus_request **request,
                                          chorus_error *error);
chorus_status chorus_all_gather_async(chorus_comm *comm, const void *send, void *receive, size_t count, chorus_type type,
                                      chorus_request **request, chorus_error *error);
chorus_status chorus_broadcast_async(chorus_comm *comm, void *buffer, size_t count, chorus_type type, int32_t root,
                                     chorus_request **request, chorus_error *error);
chorus_status chorus_barrier_async(chorus_comm *comm, chorus_request **request, chorus_error *error);
chorus_status chorus_all_scan_async(chorus_comm *comm, const void *state, void *exclusive, void *inclusive, size_t count,
                                    chorus_type type, chorus_scan_op op, const void *decay, size_t decay_count,
                                    int32_t reverse, chorus_request **request, chorus_error *error);

/** Waits until the request completes, frees it, and returns the collective's status. */
chorus_status chorus_wait(chorus_request *request, chorus_error *error);
/** CHORUS_STATUS_PENDING while running; otherwise its status (the request stays valid until waited on). */
chorus_status chorus_test(chorus_request *request, chorus_error *error);

/* ---- Shared state ------------------------------------------------------------------------------ */

typedef struct chorus_sync_info {
    uint64_t revision;          /* the elected revision, now this state's */
    int32_t was_outdated;       /* 1 when this peer received tensors */
    int32_t tensors_received;
    uint64_t bytes_received;
    int32_t sources;            /* members that served the transfer */
    int32_t lost_sources;       /* sources lost on the way (replaced by others) */
    uint64_t bytes_sent;        /* bytes this peer served to outdated members */
} chorus_sync_info;

chorus_status chorus_state_create(uint64_t revision, chorus_state **out, chorus_error *error);
void chorus_state_destroy(chorus_state *state);
/**
 * Adds a tensor over the caller's memory (`count` elements of `type`), which must stay valid and
 * unmoved until the state is destroyed. Names are unique and the same on every member.
 * `allowed_to_differ`: per-peer data, never compared or transferred.
 */
chorus_status chorus_state_add_tensor(chorus_state *state, const char *name, void *memory, size_t count, chorus_type type,
                                      int32_t allowed_to_differ, chorus_error *error);
uint64_t chorus_state_revision(const chorus_state *state);
void chorus_state_set_revision(chorus_state *state, uint64_t revision);
/** 64-bit xxHash3 over every tensor not allowed to differ (equal on every member after a sync). */
uint64_t chorus_state_content_hash(const chorus_state *state);
/** Makes the state bit-identical on every member (see the Swift `synchronize`). `info` may be NULL. */
chorus_status chorus_synchronize(chorus_comm *comm, chorus_state *state, chorus_sync_strategy strategy,
                                 chorus_sync_info *info, chorus_error *error);

#ifdef __cplusplus
}
#endif
#endif
