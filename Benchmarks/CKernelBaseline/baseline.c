#include "kernel_baseline.h"

#include <string.h>

#pragma clang fp contract(off)
#define SCALAR _Pragma("clang loop vectorize(disable) interleave(disable)")

void baseline_sum_f32(float *out, const float *a, const float *b, size_t n) {
    SCALAR for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void baseline_max_f32(float *out, const float *a, const float *b, size_t n) {
    SCALAR for (size_t i = 0; i < n; i++) {
        float x = a[i], y = b[i], r = x > y ? x : y;
        uint32_t xb, yb, rb;
        memcpy(&xb, &x, 4); memcpy(&yb, &y, 4); memcpy(&rb, &r, 4);
        rb = x == y ? (xb & yb) : rb;
        rb = y != y ? yb : rb;
        rb = x != x ? xb : rb;
        memcpy(&out[i], &rb, 4);
    }
}

void baseline_sum_f64(double *out, const double *a, const double *b, size_t n) {
    SCALAR for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void baseline_sum_bf16(uint16_t *out, const uint16_t *a, const uint16_t *b, size_t n) {
    SCALAR for (size_t i = 0; i < n; i++) {
        uint32_t xa = (uint32_t)a[i] << 16, xb = (uint32_t)b[i] << 16;
        float fa, fb;
        memcpy(&fa, &xa, 4); memcpy(&fb, &xb, 4);
        float s = fa + fb;
        uint32_t bits;
        memcpy(&bits, &s, 4);
        out[i] = (bits & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)((bits >> 16) | 0x40u)
                                                      : (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
}

void baseline_sum_f16(uint16_t *out, const uint16_t *a, const uint16_t *b, size_t n) {
    const _Float16 *x = (const _Float16 *)a, *y = (const _Float16 *)b;
    _Float16 *o = (_Float16 *)out;
    SCALAR for (size_t i = 0; i < n; i++) o[i] = (_Float16)((float)x[i] + (float)y[i]);
}

void baseline_sum_i32(int32_t *out, const int32_t *a, const int32_t *b, size_t n) {
    SCALAR for (size_t i = 0; i < n; i++) out[i] = (int32_t)((uint32_t)a[i] + (uint32_t)b[i]);
}

void baseline_sum_u8(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n) {
    SCALAR for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(a[i] + b[i]);
}
