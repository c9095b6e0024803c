// Per-element operations shared by every instantiation of reduce_impl.h. Written on bit patterns
// where IEEE semantics need it, in a branch-free form the loop vectorizer turns into blends.
#ifndef CHORUS_SCALAR_OPS_H
#define CHORUS_SCALAR_OPS_H
#include <stdint.h>
#include <string.h>

#define CHORUS_INLINE static inline __attribute__((always_inline))

CHORUS_INLINE uint32_t f32_bits(float x) { uint32_t b; memcpy(&b, &x, 4); return b; }
CHORUS_INLINE float f32_from(uint32_t b) { float x; memcpy(&x, &b, 4); return x; }
CHORUS_INLINE uint64_t f64_bits(double x) { uint64_t b; memcpy(&b, &x, 8); return b; }
CHORUS_INLINE double f64_from(uint64_t b) { double x; memcpy(&x, &b, 8); return x; }

// IEEE 754-2019 maximum/minimum: NaN wins (the first operand's if both), and on equal operands the
// sign bits decide, so max(-0, +0) = +0 and min(-0, +0) = -0.
CHORUS_INLINE float max_f32(float x, float y) {
    uint32_t xb = f32_bits(x), yb = f32_bits(y);
    uint32_t r = f32_bits(x > y ? x : y);
    r = x == y ? (xb & yb) : r;
    r = y != y ? yb : r;
    r = x != x ? xb : r;
    return f32_from(r);
}
CHORUS_INLINE float min_f32(float x, float y) {
    uint32_t xb = f32_bits(x), yb = f32_bits(y);
    uint32_t r = f32_bits(x < y ? x : y);
    r = x == y ? (xb | yb) : r;
    r = y != y ? yb : r;
    r = x != x ? xb : r;
    return f32_from(r);
}
CHORUS_INLINE double max_f64(double x, double y) {
    uint64_t xb = f64_bits(x), yb = f64_bits(y);
    uint64_t r = f64_bits(x > y ? x : y);
    r = x == y ? (xb & yb) : r;
    r = y != y ? yb : r;
    r = x != x ? xb : r;
    return f64_from(r);
}
CHORUS_INLINE double min_f64(double x, double y) {
    uint64_t xb = f64_bits(x), yb = f64_bits(y);
    uint64_t r = f64_bits(x < y ? x : y);
    r = x == y ? (xb | yb) : r;
    r = y != y ? yb : r;
    r = x != x ? xb : r;
    return f64_from(r);
}

// bfloat16 is the upper half of an f32: widening is a shift; narrowing rounds to nearest-even and
// keeps NaNs NaN (quiet bit set) instead of letting the rounding carry turn them into infinities.
CHORUS_INLINE float bf16_to_f32(uint16_t h) { return f32_from((uint32_t)h << 16); }
CHORUS_INLINE uint16_t f32_to_bf16(float x) {
    uint32_t b = f32_bits(x);
    uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
    uint32_t nan = (b >> 16) | 0x40u;
    return (uint16_t)((b & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

#endif
