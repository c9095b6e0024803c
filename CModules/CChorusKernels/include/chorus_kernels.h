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

/// How a quantized block is scaled: `ABSMAX` stores one scale (the block's largest magnitude over
/// 127 or 7) and signed integers; `MINMAX` stores the block's minimum and (max - min) / 255 or 15 and
/// unsigned integers, which spends every level on the block's actual range.
typedef enum chorus_quant_scaling {
    CHORUS_QUANT_ABSMAX = 0,
    CHORUS_QUANT_MINMAX = 1,
} chorus_quant_scaling;

/// The largest block (elements per scale) the quantization kernels take.
#define CHORUS_QUANT_MAX_BLOCK 65536

/// Bytes `count` elements take quantized: per block of `block` elements its header (the f32 scale;
/// min-max: the f32 minimum, then the scale) and its values (a byte each for 8 bits, two per byte for
/// 4 bits, the even element in the low nibble); the last block may be shorter. 0 for a bad format.
size_t chorus_quantized_size(size_t count, int bits, int scaling, size_t block);

/// Quantizes `count` elements of `in` (f32, f16 or bf16) into `out` (chorus_quantized_size bytes),
/// rounding to nearest. With `feedback` (count f32, the caller's error-feedback buffer) the value
/// quantized is in + feedback, and feedback becomes that value minus what the receivers will read.
/// A block holding a NaN or an infinity gets a NaN scale, so all of it reads back as NaN.
/// Returns 0, or -1 for a bad format or dtype.
int chorus_quantize(int dtype, const void *in, float *feedback, size_t count, int bits, int scaling, size_t block,
                    uint8_t *out);

/// acc[i] = (acc[i] +) the value element i of `q` stands for: minimum + q * scale (absmax: q * scale),
/// computed in f32 without fused multiply-add, so every member reads the same bits. `accumulate` 0
/// assigns. Returns 0, or -1 for a bad format.
int chorus_dequantize_accumulate(const uint8_t *q, size_t count, int bits, int scaling, size_t block, float *acc,
                                 int accumulate);

/// out[i] = in[i] / divisor (no division for 1) in the dtype of `out` (f32, f16 or bf16), rounded
/// once. Returns 0, or -1 for another dtype or a zero divisor.
int chorus_from_f32(int dtype, void *out, const float *in, size_t count, uint32_t divisor);

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
