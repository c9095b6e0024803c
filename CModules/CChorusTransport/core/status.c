// What status codes say in words, and the transport's one mapping from a failed system call to a status.
#include "failure.h"

#include <errno.h>

chorus_failure chorus_system_failure(const char *call, int sys_errno) {
    int closed = sys_errno == 0 || sys_errno == EPIPE || sys_errno == ECONNRESET;
    return (chorus_failure){closed ? CHORUS_ERR_PEER_CLOSED : CHORUS_ERR_SYSTEM, sys_errno, call};
}

const char *chorus_status_string(int status) {
    switch (status) {
    case CHORUS_OK: return "ok";
    case CHORUS_ERR_BAD_MAGIC: return "frame has a wrong magic number";
    case CHORUS_ERR_BAD_VERSION: return "frame has an unsupported protocol version";
    case CHORUS_ERR_BAD_TYPE: return "frame has an unknown type";
    case CHORUS_ERR_BAD_FLAGS: return "frame has unknown flags set";
    case CHORUS_ERR_CONTROL_TOO_LARGE: return "control frame longer than the configured maximum";
    case CHORUS_ERR_BAD_LENGTH: return "frame length invalid for its type";
    case CHORUS_ERR_OUT_OF_SEQUENCE: return "RDMA message out of sequence: its chunk does not continue the frame in progress";
    case CHORUS_ERR_BAD_CREDIT: return "the peer returned more RDMA credits than there are message slots";
    case CHORUS_ERR_STALE_EPOCH: return "data frame from an older membership epoch";
    case CHORUS_ERR_EPOCH_MISMATCH: return "data frame epoch does not match the operation";
    case CHORUS_ERR_OP_MISMATCH: return "data frame operation id does not match the operation";
    case CHORUS_ERR_TAG_MISMATCH: return "data frame tag does not match the expected segment";
    case CHORUS_ERR_LENGTH_MISMATCH: return "data frame length does not match the agreed operation";
    case CHORUS_ERR_UNEXPECTED_CONTROL: return "unexpected frame type on this connection";
    case CHORUS_ERR_TOO_MANY_QUEUED: return "peer sent more control frames than the owner can take";
    case CHORUS_ERR_PEER_CLOSED: return "peer closed the connection";
    case CHORUS_ERR_IDLE_TIMEOUT: return "peer silent past the idle timeout";
    case CHORUS_ERR_HANDSHAKE_TIMEOUT: return "the connection did not identify itself within the handshake deadline";
    case CHORUS_ERR_UNEXPECTED_DATA: return "a data frame on a connection that carries none there (or before it identified itself)";
    case CHORUS_ERR_CONTROL_BUDGET: return "control frames in flight over every connection passed the engine's budget";
    case CHORUS_ERR_HANDSHAKE_FLOOD: return "too many connections were identifying themselves at once; this one was the oldest";
    case CHORUS_ERR_CANCELLED: return "cancelled: connection closed locally";
    case CHORUS_ERR_CONNECT_FAILED: return "could not connect";
    case CHORUS_ERR_SYSTEM: return "system call failed";
    case CHORUS_ERR_TIMEDOUT: return "timed out";
    case CHORUS_ERR_INTERRUPTED: return "interrupted by a pending event";
    case CHORUS_ERR_INVALID_ARGUMENT: return "invalid argument";
    case CHORUS_ERR_NO_SUCH_CONNECTION: return "no such connection (closed or failed)";
    case CHORUS_ERR_ADDRESS: return "address could not be resolved or bound";
    case CHORUS_ERR_SHUTDOWN: return "engine is shutting down";
    case CHORUS_ERR_FENCED: return "the master fenced this operation";
    case CHORUS_ERR_OUT_OF_TOUCH: return "the master may have taken this end for dead (nothing heard from it lately, or this process was held up)";
    case CHORUS_ERR_NO_RDMA: return "RDMA is not available here";
    default: return "unknown status";
    }
}
