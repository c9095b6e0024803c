// Reduction kernels with run-time dispatch between an AVX2+F16C build of the loops and the x86-64
// baseline (other architectures get the portable loops only). No -ffast-math anywhere: results must
// be the IEEE scalar results, bit for bit, on every peer.
#include "chorus_kernels.h"

#include <string.h>
#include "scalar_ops.h"

#pragma clang fp contract(off)

#if defined(__x86_64__)
#define KERNEL_ATTR __attribute__((target("avx2,f16c")))
#define KERNEL_NAME(name) avx2_##name
#include "reduce_impl.h"
#undef KERNEL_ATTR
#undef KERNEL_NAME
#endif

#define KERNEL_ATTR
#define KERNEL_NAME(name) baseline_##name
#include "reduce_impl.h"
#undef KERNEL_ATTR
#undef KERNEL_NAME

typedef int (*reduce_fn)(int, int, void *, const void *, const void *, size_t);

static int cpu_has_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

// -1 until the first call decides from the CPU; chorus_kernels_select may change it (both builds
// give the same bits, so switching while reductions run elsewhere changes nothing but speed).
static int selected_avx2 = -1;

static int use_avx2(void) {
    int selected = __atomic_load_n(&selected_avx2, __ATOMIC_RELAXED);
    if (selected < 0) {
        selected = cpu_has_avx2();
        __atomic_store_n(&selected_avx2, selected, __ATOMIC_RELAXED);
    }
    return selected;
}

const char *chorus_kernels_isa(void) { return use_avx2() ? "avx2+f16c" : "baseline"; }

int chorus_kernels_supports(const char *isa) {
    return strcmp(isa, "baseline") == 0 || (strcmp(isa, "avx2+f16c") == 0 && cpu_has_avx2());
}

int chorus_kernels_select(const char *isa) {
    if (!chorus_kernels_supports(isa)) return -1;
    __atomic_store_n(&selected_avx2, strcmp(isa, "avx2+f16c") == 0, __ATOMIC_RELAXED);
    return 0;
}

size_t chorus_dtype_size(int dtype) {
    switch (dtype) {
    case CHORUS_DTYPE_F32: case CHORUS_DTYPE_I32: return 4;
    case CHORUS_DTYPE_F64: case CHORUS_DTYPE_I64: return 8;
    case CHORUS_DTYPE_F16: case CHORUS_DTYPE_BF16: return 2;
    case CHORUS_DTYPE_U8: return 1;
    default: return 0;
    }
}

int chorus_reduce(int dtype, int op, void *out, const void *a, const void *b, size_t count) {
#if defined(__x86_64__)
    if (use_avx2()) return avx2_reduce(dtype, op, out, a, b, count);
#endif
    return baseline_reduce(dtype, op, out, a, b, count);
}

#define DIVIDE(T, EXPR)                                                                             \
    do {                                                                                            \
        T *p = (T *)buffer;                                                                         \
        for (size_t i = 0; i < count; i++) {                                                       \
            T x = p[i];                                                                             \
            p[i] = (EXPR);                                                                          \
        }                                                                                           \
    } while (0)

int chorus_divide(int dtype, void *buffer, size_t count, uint32_t divisor) {
    if (divisor == 0) return -1;
    switch (dtype) {
    case CHORUS_DTYPE_F32: DIVIDE(float, x / (float)divisor); return 0;
    case CHORUS_DTYPE_F64: DIVIDE(double, x / (double)divisor); return 0;
    case CHORUS_DTYPE_F16: DIVIDE(_Float16, (_Float16)((float)x / (float)divisor)); return 0;
    case CHORUS_DTYPE_BF16: DIVIDE(uint16_t, f32_to_bf16(bf16_to_f32(x) / (float)divisor)); return 0;
    case CHORUS_DTYPE_I32: DIVIDE(int32_t, (int32_t)(x / (int64_t)divisor)); return 0;
    case CHORUS_DTYPE_I64: DIVIDE(int64_t, x / (int64_t)divisor); return 0;
    case CHORUS_DTYPE_U8: DIVIDE(uint8_t, (uint8_t)(x / divisor)); return 0;
    default: return -1;
    }
}

#define AFFINE(T, LOAD, STORE)                                                                      \
    do {                                                                                            \
        const T *g = (const T *)decay, *xv = (const T *)x, *sv = (const T *)s;                     \
        T *o = (T *)out;                                                                            \
        for (size_t i = 0; i < count; i++) {                                                       \
            o[i] = STORE(LOAD(g[i / decay_stride]) * LOAD(xv[i]) + LOAD(sv[i]));                   \
        }                                                                                           \
    } while (0)

#define IDENTITY(v) (v)
#define F16_LOAD(v) ((float)(v))
#define F16_STORE(v) ((_Float16)(v))

int chorus_affine_step(int dtype, void *out, const void *decay, const void *x, const void *s, size_t count,
                       size_t decay_stride) {
    if (decay_stride == 0) return -1;
    switch (dtype) {
    case CHORUS_DTYPE_F32: AFFINE(float, IDENTITY, IDENTITY); return 0;
    case CHORUS_DTYPE_F64: AFFINE(double, IDENTITY, IDENTITY); return 0;
    case CHORUS_DTYPE_F16: AFFINE(_Float16, F16_LOAD, F16_STORE); return 0;
    case CHORUS_DTYPE_BF16: AFFINE(uint16_t, bf16_to_f32, f32_to_bf16); return 0;
    default: return -1;
    }
}
