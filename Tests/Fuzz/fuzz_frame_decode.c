// libFuzzer target: the frame header decoder must accept or reject any 32 bytes without crashing,
// and what it accepts must encode back to the same bytes.
#include <string.h>

#include "chorus_transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < CHORUS_FRAME_HEADER_BYTES) return 0;
    chorus_frame_header header;
    if (chorus_frame_decode(data, 1u << 20, &header) != CHORUS_OK) return 0;
    uint8_t again[CHORUS_FRAME_HEADER_BYTES];
    chorus_frame_encode(&header, again);
    if (memcmp(again, data, CHORUS_FRAME_HEADER_BYTES) != 0) __builtin_trap();
    return 0;
}
