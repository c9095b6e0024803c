// One instantiation of the reduction loops. reduce.c includes this twice: once compiled for
// AVX2+F16C and once for the x86-64 baseline, and picks one at run time. Define KERNEL_ATTR
// (function attributes) and KERNEL_NAME(name) (a prefixing macro) before including.

// `assume_safety`: out[i] depends only on a[i] and b[i], so out == a (in-place) is safe to vectorize;
// without it clang's runtime overlap check sends the in-place case to the scalar loop.
#define ELEMENTWISE(T, EXPR)                                                                        \
    do {                                                                                            \
        T *o_ = (T *)out;                                                                           \
        const T *a_ = (const T *)a;                                                                 \
        const T *b_ = (const T *)b;                                                                 \
        _Pragma("clang loop vectorize(assume_safety) interleave(enable)")                          \
        for (size_t i = 0; i < count; i++) {                                                       \
            T x = a_[i], y = b_[i];                                                                 \
            o_[i] = (EXPR);                                                                         \
        }                                                                                           \
    } while (0)

#define SELECT_OP(T, SUM, PROD, MIN, MAX)                                                           \
    switch (op) {                                                                                   \
    case CHORUS_REDOP_SUM: case CHORUS_REDOP_AVG: ELEMENTWISE(T, SUM); return 0;                  \
    case CHORUS_REDOP_PROD: ELEMENTWISE(T, PROD); return 0;                                        \
    case CHORUS_REDOP_MIN: ELEMENTWISE(T, MIN); return 0;                                          \
    case CHORUS_REDOP_MAX: ELEMENTWISE(T, MAX); return 0;                                          \
    default: return -1;                                                                             \
    }

KERNEL_ATTR static int KERNEL_NAME(reduce)(int dtype, int op, void *out, const void *a, const void *b, size_t count) {
    switch (dtype) {
    case CHORUS_DTYPE_F32: SELECT_OP(float, x + y, x * y, min_f32(x, y), max_f32(x, y))
    case CHORUS_DTYPE_F64: SELECT_OP(double, x + y, x * y, min_f64(x, y), max_f64(x, y))
    case CHORUS_DTYPE_F16:
        SELECT_OP(_Float16, (_Float16)((float)x + (float)y), (_Float16)((float)x * (float)y),
                  (_Float16)min_f32((float)x, (float)y), (_Float16)max_f32((float)x, (float)y))
    case CHORUS_DTYPE_BF16:
        SELECT_OP(uint16_t, f32_to_bf16(bf16_to_f32(x) + bf16_to_f32(y)), f32_to_bf16(bf16_to_f32(x) * bf16_to_f32(y)),
                  f32_to_bf16(min_f32(bf16_to_f32(x), bf16_to_f32(y))), f32_to_bf16(max_f32(bf16_to_f32(x), bf16_to_f32(y))))
    case CHORUS_DTYPE_I32:
        SELECT_OP(int32_t, (int32_t)((uint32_t)x + (uint32_t)y), (int32_t)((uint32_t)x * (uint32_t)y),
                  x < y ? x : y, x > y ? x : y)
    case CHORUS_DTYPE_I64:
        SELECT_OP(int64_t, (int64_t)((uint64_t)x + (uint64_t)y), (int64_t)((uint64_t)x * (uint64_t)y),
                  x < y ? x : y, x > y ? x : y)
    case CHORUS_DTYPE_U8:
        SELECT_OP(uint8_t, (uint8_t)(x + y), (uint8_t)(x * y), x < y ? x : y, x > y ? x : y)
    default:
        return -1;
    }
}

#undef SELECT_OP
#undef ELEMENTWISE
