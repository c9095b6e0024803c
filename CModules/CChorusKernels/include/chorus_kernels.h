// Chorus reduction kernels: element-wise `out = a op b` over the dtypes Chorus reduces, vectorized,
// with IEEE semantics for NaN, -0.0 and subnormals (no fast-math, no fused multiply-add).
#ifndef CHORUS_KERNELS_H
#define CHORUS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum chorus_dtype {
    CHORUS_DTYPE_F32 = 0,
    CHORUS_DTYPE_F64 = 1,
    CHORUS_DTYPE_F16 = 2,  // IEEE binary16, reduced in f32
    CHORUS_DTYPE_BF16 = 3, // bfloat16, reduced in f32
    CHORUS_DTYPE_I32 = 4,
    CHORUS_DTYPE_I64 = 5,
    CHORUS_DTYPE_U8 = 6,
} chorus_dtype;

typedef enum chorus_redop {
    CHORUS_REDOP_SUM = 0,
    CHORUS_REDOP_PROD = 1,
    CHORUS_REDOP_MIN = 2,
    CHORUS_REDOP_MAX = 3,
    CHORUS_REDOP_AVG = 4, // reduced as SUM; chorus_divide finishes it
} chorus_redop;

/// Bytes per element, or 0 for an unknown dtype.
size_t chorus_dtype_size(int dtype);

/// out[i] = a[i] op b[i] for i < count. `out` may be `a` or `b` exactly, but must not partially overlap.
/// Integer sum and product wrap (two's complement). Float min/max follow IEEE 754-2019
/// maximum/minimum: a NaN operand is returned (a's when both are NaN), and -0.0 < +0.0.
/// f16/bf16 are widened to f32, combined, and rounded back to nearest-even once.
/// Returns 0, or -1 for an unknown dtype or op.
int chorus_reduce(int dtype, int op, void *out, const void *a, const void *b, size_t count);

/// buffer[i] = buffer[i] / divisor, finishing an average. Integers divide truncating toward zero;
/// f16/bf16 divide in f32 and round once. Returns 0, or -1 for an unknown dtype or a zero divisor.
int chorus_divide(int dtype, void *buffer, size_t count, uint32_t divisor);

/// One step of a decayed (affine) scan: out[i] = decay[i / decay_stride] * x[i] + s[i], computed in
/// f32 for f16/bf16 (rounded once) and without fused multiply-add. Float dtypes only; `out` may be
/// `x` or `s`. Returns 0, or -1 for a non-float dtype or a zero stride.
int chorus_affine_step(int dtype, void *out, const void *decay, const void *x, const void *s, size_t count,
                       size_t decay_stride);

/// The instruction set the kernels dispatched to on this machine ("avx2+f16c" or "baseline").
const char *chorus_kernels_isa(void);

/// 1 when this CPU can run the kernels built for `isa` ("avx2+f16c" or "baseline"), else 0.
int chorus_kernels_supports(const char *isa);

/// Makes the kernels use `isa` ("avx2+f16c" or "baseline") from now on, so both builds can be tested
/// (and compared) on one machine. 0 on success, -1 when this CPU cannot run it.
int chorus_kernels_select(const char *isa);

#ifdef __cplusplus
}
#endif
#endif
