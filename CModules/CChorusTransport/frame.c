// Frame header encoding and validation: the one place that decides whether bytes from the network
// are a well-formed frame. Nothing is allocated or read past the header until this says yes.
#include "chorus_transport.h"

#include <string.h>

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

void chorus_frame_encode(const chorus_frame_header *header, uint8_t out[CHORUS_FRAME_HEADER_BYTES]) {
    put_u32(out + 0, CHORUS_FRAME_MAGIC);
    out[4] = CHORUS_PROTOCOL_VERSION;
    out[5] = header->type;
    put_u16(out + 6, header->flags);
    put_u32(out + 8, header->tag);
    put_u32(out + 12, header->length);
    put_u64(out + 16, header->epoch);
    put_u64(out + 24, header->op_id);
}

int chorus_frame_decode(const uint8_t raw[CHORUS_FRAME_HEADER_BYTES], uint32_t max_control_bytes,
                        chorus_frame_header *out) {
    if (get_u32(raw) != CHORUS_FRAME_MAGIC) return CHORUS_ERR_BAD_MAGIC;
    if (raw[4] != CHORUS_PROTOCOL_VERSION) return CHORUS_ERR_BAD_VERSION;
    chorus_frame_header h = {
        .type = raw[5],
        .flags = get_u16(raw + 6),
        .tag = get_u32(raw + 8),
        .length = get_u32(raw + 12),
        .epoch = get_u64(raw + 16),
        .op_id = get_u64(raw + 24),
    };
    if (h.flags != 0) return CHORUS_ERR_BAD_FLAGS;
    switch (h.type) {
    case CHORUS_FRAME_CONTROL:
        if (h.length > max_control_bytes) return CHORUS_ERR_CONTROL_TOO_LARGE;
        break;
    case CHORUS_FRAME_HEARTBEAT:
    case CHORUS_FRAME_PROBE:
    case CHORUS_FRAME_CREDIT:
        if (h.length != 0) return CHORUS_ERR_BAD_LENGTH;
        break;
    case CHORUS_FRAME_DATA:
        break; // checked against the posted receive before a byte of payload is read
    default:
        return CHORUS_ERR_BAD_TYPE;
    }
    *out = h;
    return CHORUS_OK;
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
    case CHORUS_ERR_UNEXPECTED_DATA: return "a data frame on a connection that carries none (or before it identified itself)";
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
    case CHORUS_ERR_NO_RDMA: return "RDMA is not available here";
    default: return "unknown status";
    }
}
