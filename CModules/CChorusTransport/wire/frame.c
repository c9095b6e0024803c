// Frame header encoding and validation: the one place that decides whether bytes from the network
// are a well-formed frame. Nothing is allocated or read past the header until this says yes.
#include "../include/chorus_transport.h"
#include "wire.h"

void chorus_frame_encode(const chorus_frame_header *header, uint8_t out[CHORUS_FRAME_HEADER_BYTES]) {
    chorus_put_u32(out + 0, CHORUS_FRAME_MAGIC);
    out[4] = CHORUS_PROTOCOL_VERSION;
    out[5] = header->type;
    chorus_put_u16(out + 6, header->flags);
    chorus_put_u32(out + 8, header->tag);
    chorus_put_u32(out + 12, header->length);
    chorus_put_u64(out + 16, header->epoch);
    chorus_put_u64(out + 24, header->op_id);
}

int chorus_frame_decode(const uint8_t raw[CHORUS_FRAME_HEADER_BYTES], uint32_t max_control_bytes,
                        chorus_frame_header *out) {
    if (chorus_get_u32(raw) != CHORUS_FRAME_MAGIC) return CHORUS_ERR_BAD_MAGIC;
    if (raw[4] != CHORUS_PROTOCOL_VERSION) return CHORUS_ERR_BAD_VERSION;
    chorus_frame_header h = {
        .type = raw[5],
        .flags = chorus_get_u16(raw + 6),
        .tag = chorus_get_u32(raw + 8),
        .length = chorus_get_u32(raw + 12),
        .epoch = chorus_get_u64(raw + 16),
        .op_id = chorus_get_u64(raw + 24),
    };
    if (h.flags != 0) return CHORUS_ERR_BAD_FLAGS;
    switch (h.type) {
    case CHORUS_FRAME_CONTROL:
        if (h.length > max_control_bytes) return CHORUS_ERR_CONTROL_TOO_LARGE;
        break;
    case CHORUS_FRAME_HEARTBEAT:
    case CHORUS_FRAME_PROBE:
    case CHORUS_FRAME_CREDIT:
    case CHORUS_FRAME_SHM_OFFER:
    case CHORUS_FRAME_SHM_ANSWER:
    case CHORUS_FRAME_SHM_DOORBELL:
    case CHORUS_FRAME_FENCE:
    case CHORUS_FRAME_FENCE_ANSWER:
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
