// Block quantization for the quantized all-reduce: a sender turns its f32/f16/bf16 contribution into
// 8- or 4-bit integers with one scale per block; every member turns the same bytes back into the same
// f32 values (a multiply, and an add for min-max, never fused), so sums taken in one fixed order are
// bit-identical everywhere. Only the sender rounds its own data, so quantizing needs no such care.
#include "chorus_kernels.h"

#include <math.h>
#include <string.h>
#include "scalar_ops.h"

#pragma clang fp contract(off)

static int valid_format(int bits, int scaling, size_t block) {
    return (bits == 8 || bits == 4) && (scaling == CHORUS_QUANT_ABSMAX || scaling == CHORUS_QUANT_MINMAX) &&
           block >= 1 && block <= CHORUS_QUANT_MAX_BLOCK;
}

static size_t header_bytes(int scaling) { return scaling == CHORUS_QUANT_MINMAX ? 8 : 4; }
static size_t value_bytes(size_t elements, int bits) { return bits == 8 ? elements : (elements + 1) / 2; }

size_t chorus_quantized_size(size_t count, int bits, int scaling, size_t block) {
    if (!valid_format(bits, scaling, block)) return 0;
    size_t full = count / block, rest = count % block;
    size_t size = full * (header_bytes(scaling) + value_bytes(block, bits));
    if (rest > 0) size += header_bytes(scaling) + value_bytes(rest, bits);
    return size;
}

static void put_f32(uint8_t *at, float value) { memcpy(at, &value, 4); }
static float get_f32(const uint8_t *at) { float value; memcpy(&value, at, 4); return value; }

// Rounds v (already clamped to the levels, so far below 2^22) to nearest-even: adding and taking
// away 1.5 * 2^23 leaves no fraction bits. libm's nearbyintf is a call per element on the x86-64
// baseline; this vectorizes everywhere.
static inline int32_t round_level(float v) { return (int32_t)((v + 12582912.0f) - 12582912.0f); }

// The value quantized at element j of a batch: the input, plus the feedback when there is one.
#define SENT(LOAD) (feedback ? (LOAD) + feedback[start + j] : (LOAD))

// Pass 1 over a batch of a block: its range and whether all of it is finite.
#define BLOCK_RANGE(LOAD)                                                                           \
    for (size_t j = 0; j < m; j++) {                                                                \
        float x = SENT(LOAD);                                                                       \
        finite &= isfinite(x) != 0;                                                                 \
        low = x < low ? x : low;                                                                    \
        high = x > high ? x : high;                                                                 \
        magnitude = fabsf(x) > magnitude ? fabsf(x) : magnitude;                                    \
    }

// Pass 2: the levels, (x - base) / scale clamped and rounded (as a multiply by 1 / scale; only the
// sender computes them, so any rounding rule gives the same result at every member), and the
// feedback left for next time: what was sent minus what every member will read.
#define BLOCK_LEVELS(LOAD)                                                                          \
    for (size_t j = 0; j < m; j++) {                                                                \
        float x = SENT(LOAD);                                                                       \
        float v = (x - base) * inverse;                                                             \
        v = v < lowest ? lowest : v;                                                                \
        v = v > highest ? highest : v;                                                              \
        levels[j] = sendable ? round_level(v) : 0;                                                  \
        if (feedback) feedback[start + j] = x - (base + (float)levels[j] * scale);                  \
    }

// Runs PASS over elements [start, start + m) with the input's dtype resolved outside the loop.
#define OVER_BATCH(PASS)                                                                            \
    do {                                                                                            \
        if (dtype == CHORUS_DTYPE_F32) {                                                            \
            const float *x32 = (const float *)in + start;                                           \
            PASS(x32[j])                                                                            \
        } else if (dtype == CHORUS_DTYPE_F16) {                                                     \
            const _Float16 *x16 = (const _Float16 *)in + start;                                     \
            PASS((float)x16[j])                                                                     \
        } else {                                                                                    \
            const uint16_t *xb16 = (const uint16_t *)in + start;                                    \
            PASS(bf16_to_f32(xb16[j]))                                                              \
        }                                                                                           \
    } while (0)

// Levels are computed this many at a time (even, so 4-bit pairs never straddle two batches).
#define LEVEL_BATCH 256

int chorus_quantize(int dtype, const void *in, float *feedback, size_t count, int bits, int scaling, size_t block,
                    uint8_t *out) {
    if (!valid_format(bits, scaling, block)) return -1;
    if (dtype != CHORUS_DTYPE_F32 && dtype != CHORUS_DTYPE_F16 && dtype != CHORUS_DTYPE_BF16) return -1;
    int absmax = scaling == CHORUS_QUANT_ABSMAX;
    float highest = absmax ? (bits == 8 ? 127 : 7) : (bits == 8 ? 255 : 15);
    float lowest = absmax ? -highest : 0;
    int32_t levels[LEVEL_BATCH];
    for (size_t first = 0; first < count; first += block) {
        size_t end = count - first < block ? count : first + block;
        // A non-finite value makes the block's scale NaN, so the whole block reads back as NaN
        // (silently clamping an infinity would hide it).
        int finite = 1;
        float low = INFINITY, high = -INFINITY, magnitude = 0;
        for (size_t start = first; start < end; start += LEVEL_BATCH) {
            size_t m = end - start < LEVEL_BATCH ? end - start : LEVEL_BATCH;
            OVER_BATCH(BLOCK_RANGE);
        }
        float base = absmax ? 0 : low;
        float scale = (absmax ? magnitude : high - low) / highest;
        if (!finite) base = scale = NAN;
        int sendable = finite && scale > 0;
        float inverse = sendable ? 1 / scale : 0;
        if (absmax) {
            put_f32(out, scale);
        } else {
            put_f32(out, base);
            put_f32(out + 4, scale);
        }
        uint8_t *values = out + header_bytes(scaling);
        uint8_t offset = absmax ? 8 : 0; // 4-bit absmax levels -7...7 are stored as 1...15
        for (size_t start = first; start < end; start += LEVEL_BATCH) {
            size_t m = end - start < LEVEL_BATCH ? end - start : LEVEL_BATCH;
            OVER_BATCH(BLOCK_LEVELS);
            uint8_t *packed = values + value_bytes(start - first, bits);
            if (bits == 8) {
                for (size_t j = 0; j < m; j++) packed[j] = (uint8_t)levels[j];
            } else {
                for (size_t j = 0; j + 1 < m; j += 2) {
                    packed[j / 2] = (uint8_t)(((levels[j] + offset) & 0xF) | ((levels[j + 1] + offset) & 0xF) << 4);
                }
                if (m % 2) packed[m / 2] = (uint8_t)((levels[m - 1] + offset) & 0xF);
            }
        }
        out = values + value_bytes(end - first, bits);
    }
    return 0;
}

// One block read back: the format's branches are outside the loop, so each loop is a plain
// load-convert-multiply-add the compiler vectorizes.
#define DEQUANTIZE_LOOP(VALUE)                                                                      \
    do {                                                                                            \
        if (accumulate) {                                                                           \
            for (size_t j = 0; j < m; j++) target[j] = target[j] + (base + (float)(VALUE) * scale);   \
        } else {                                                                                    \
            for (size_t j = 0; j < m; j++) target[j] = base + (float)(VALUE) * scale;                \
        }                                                                                           \
    } while (0)

int chorus_dequantize_accumulate(const uint8_t *q, size_t count, int bits, int scaling, size_t block, float *acc,
                                 int accumulate) {
    if (!valid_format(bits, scaling, block)) return -1;
    int absmax = scaling == CHORUS_QUANT_ABSMAX;
    for (size_t start = 0; start < count; start += block) {
        size_t m = count - start < block ? count - start : block;
        float base = absmax ? 0 : get_f32(q);
        float scale = absmax ? get_f32(q) : get_f32(q + 4);
        const uint8_t *values = q + header_bytes(scaling);
        float *target = acc + start;
        if (bits == 8 && absmax) DEQUANTIZE_LOOP((int8_t)values[j]);
        else if (bits == 8) DEQUANTIZE_LOOP(values[j]);
        else if (absmax) DEQUANTIZE_LOOP((int32_t)((values[j / 2] >> ((j % 2) * 4)) & 0xF) - 8);
        else DEQUANTIZE_LOOP((values[j / 2] >> ((j % 2) * 4)) & 0xF);
        q = values + value_bytes(m, bits);
    }
    return 0;
}

int chorus_from_f32(int dtype, void *out, const float *in, size_t count, uint32_t divisor) {
    if (divisor == 0) return -1;
    for (size_t i = 0; i < count; i++) {
        float x = divisor > 1 ? in[i] / (float)divisor : in[i];
        switch (dtype) {
        case CHORUS_DTYPE_F32: ((float *)out)[i] = x; break;
        case CHORUS_DTYPE_F16: ((_Float16 *)out)[i] = (_Float16)x; break;
        case CHORUS_DTYPE_BF16: ((uint16_t *)out)[i] = f32_to_bf16(x); break;
        default: return -1;
        }
    }
    return 0;
}
