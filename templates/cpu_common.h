// ---- Pigeon common helpers (C++/OpenMP): storage conversions, atomics, elementwise helpers ----
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>

#define PG_INFINITY (__builtin_inff())
using std::exp; using std::log; using std::sqrt; using std::tanh; using std::erf; using std::pow;

// 16-bit floating storage: half and bfloat16 are kept as raw bits and computed in float.
struct pg_half { uint16_t bits; };
struct pg_bf16 { uint16_t bits; };

static inline float pg_bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t pg_float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

static inline float pg_to_float(pg_half x) {
    const uint32_t sign = (x.bits & 0x8000u) << 16, mantissa = x.bits & 0x3ffu;
    uint32_t exponent = (x.bits >> 10) & 0x1f, bits;
    if (exponent == 0) {
        if (mantissa == 0) return pg_bits_float(sign);
        return (sign ? -1.0f : 1.0f) * std::ldexp((float)mantissa, -24);  // subnormal
    }
    if (exponent == 31) bits = sign | 0x7f800000u | (mantissa << 13);
    else bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    return pg_bits_float(bits);
}
static inline pg_half pg_from_float_half(float f) {
    const uint32_t u = pg_float_bits(f), sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu;
    pg_half x;
    if (abs > 0x7f800000u) x.bits = (uint16_t)(sign | 0x7e00u);
    else if (abs >= 0x477ff000u) x.bits = (uint16_t)(sign | 0x7c00u);  // overflow to infinity
    else if (abs < 0x38800000u) x.bits = (uint16_t)(sign | (uint32_t)std::nearbyint(pg_bits_float(abs) * 16777216.0f));
    else x.bits = (uint16_t)(sign | ((abs + 0xfffu + ((abs >> 13) & 1u) - (112u << 23)) >> 13));
    return x;
}
static inline float pg_to_float(pg_bf16 x) { return pg_bits_float(((uint32_t)x.bits) << 16); }
static inline pg_bf16 pg_from_float_bf16(float f) {
    uint32_t u = pg_float_bits(f);
    pg_bf16 x;
    if ((u & 0x7fffffffu) > 0x7f800000u) { x.bits = (uint16_t)((u >> 16) | 0x40u); return x; }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    x.bits = (uint16_t)(u >> 16);
    return x;
}

template <typename Acc> static inline Acc pg_load(const float* p) { return (Acc)*p; }
template <typename Acc> static inline Acc pg_load(const double* p) { return (Acc)*p; }
template <typename Acc> static inline Acc pg_load(const pg_half* p) { return (Acc)pg_to_float(*p); }
template <typename Acc> static inline Acc pg_load(const pg_bf16* p) { return (Acc)pg_to_float(*p); }

static inline void pg_store(float* p, float v) { *p = v; }
static inline void pg_store(double* p, double v) { *p = v; }
static inline void pg_store(pg_half* p, float v) { *p = pg_from_float_half(v); }
static inline void pg_store(pg_bf16* p, float v) { *p = pg_from_float_bf16(v); }

// Fetch `count` elements from `p` on into the cache ahead of their use.
template <typename T> static inline void pg_prefetch(const T* p, int count) {
    for (int offset = 0; offset < count * (int)sizeof(T); offset += 64) __builtin_prefetch((const char*)p + offset);
}

// Accumulation into memory this thread alone adds to.
template <typename T, typename Acc> static inline void pg_add(T* p, Acc v) { pg_store(p, pg_load<Acc>(p) + v); }

// Accumulation into memory that other threads add to as well.
static inline void pg_atomic_add(float* p, float v) {
#pragma omp atomic
    *p += v;
}
static inline void pg_atomic_add(double* p, double v) {
#pragma omp atomic
    *p += v;
}
template <typename T>
static inline void pg_atomic_add_16(T* p, float v) {  // a compare-and-swap on the 16 bits
    uint16_t* bits = &p->bits;
    uint16_t old = __atomic_load_n(bits, __ATOMIC_RELAXED), updated;
    do {
        T x; x.bits = old;
        T y; pg_store(&y, pg_to_float(x) + v);
        updated = y.bits;
    } while (!__atomic_compare_exchange_n(bits, &old, updated, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}
static inline void pg_atomic_add(pg_half* p, float v) { pg_atomic_add_16(p, v); }
static inline void pg_atomic_add(pg_bf16* p, float v) { pg_atomic_add_16(p, v); }

// Maximum into memory (the target starts at -infinity; NaN wins, as in torch): plain where this
// thread alone writes, by compare-and-swap where other threads do too.
template <typename T> static inline bool pg_replaces(T old, T v) { return v > old || (v != v && old == old); }
template <typename T, typename Acc> static inline void pg_max_into(T* p, Acc v) {
    if (pg_replaces(pg_load<Acc>(p), v)) pg_store(p, v);
}
template <typename T> static inline void pg_atomic_max(T* p, T v) {
    T old;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    while (pg_replaces(old, v) && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

// Elementwise helpers used by generated expressions.
template <typename T> static inline T pg_max(T a, T b) { return a > b ? a : b; }
template <typename T> static inline T pg_sigmoid(T x) { return (T)1 / ((T)1 + exp(-x)); }
template <typename T> static inline T pg_gelu(T x) {
    return (T)0.5 * x * ((T)1 + erf(x * (T)0.7071067811865476));
}
template <typename T> static inline T pg_gelu_grad(T x) {
    return (T)0.5 * ((T)1 + erf(x * (T)0.7071067811865476)) + x * exp((T)-0.5 * x * x) * (T)0.3989422804014327;
}
