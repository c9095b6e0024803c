// Internal to the transport: the byte order of everything Chorus puts on a wire (frame headers,
// RDMA message headers) is little-endian, written and read byte by byte so no alignment is assumed.
#ifndef CHORUS_WIRE_H
#define CHORUS_WIRE_H
#include <stdint.h>

static inline void chorus_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t chorus_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline void chorus_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t chorus_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void chorus_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t chorus_get_u64(const uint8_t *p) {
    return (uint64_t)chorus_get_u32(p) | (uint64_t)chorus_get_u32(p + 4) << 32;
}
#endif
