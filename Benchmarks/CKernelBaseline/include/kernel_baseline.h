// Scalar loops the vectorizer is told to leave alone: the baseline chorus-kernel-bench compares the
// real kernels against, to show they are vectorized.
#ifndef KERNEL_BASELINE_H
#define KERNEL_BASELINE_H
#include <stddef.h>
#include <stdint.h>

void baseline_sum_f32(float *out, const float *a, const float *b, size_t n);
void baseline_max_f32(float *out, const float *a, const float *b, size_t n);
void baseline_sum_f64(double *out, const double *a, const double *b, size_t n);
void baseline_sum_bf16(uint16_t *out, const uint16_t *a, const uint16_t *b, size_t n);
void baseline_sum_f16(uint16_t *out, const uint16_t *a, const uint16_t *b, size_t n);
void baseline_sum_i32(int32_t *out, const int32_t *a, const int32_t *b, size_t n);
void baseline_sum_u8(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n);
#endif
