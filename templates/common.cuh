// ---- Pigeon common helpers: index types, storage conversions, warp reductions, atomics ----
#if defined(__CUDACC_RTC__)
typedef long long int64_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
#define PG_INFINITY __int_as_float(0x7f800000)
#elif !defined(PG_INFINITY)
#define PG_INFINITY (__builtin_inff())
#endif

// 16-bit floating storage: half and bfloat16 are kept as raw bits and computed in float.
struct pg_half { uint16_t bits; };
struct pg_bf16 { uint16_t bits; };

#if defined(__CUDACC__)
__device__ __forceinline__ float pg_to_float(pg_half x) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits)); return f;
}
__device__ __forceinline__ pg_half pg_from_float_half(float f) {
    pg_half x; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(x.bits) : "f"(f)); return x;
}
#else  // the CPU test harness (tests/cuda_cpu) converts in software
__device__ __forceinline__ float pg_to_float(pg_half x) { return pg_half_bits_to_float(x.bits); }
__device__ __forceinline__ pg_half pg_from_float_half(float f) { pg_half x = {pg_float_to_half_bits(f)}; return x; }
#endif
__device__ __forceinline__ float pg_to_float(pg_bf16 x) {
    return __int_as_float(((unsigned int)x.bits) << 16);
}
__device__ __forceinline__ pg_bf16 pg_from_float_bf16(float f) {
    unsigned int u = (unsigned int)__float_as_int(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) { pg_bf16 nan = {(uint16_t)((u >> 16) | 0x40u)}; return nan; }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    pg_bf16 x = {(uint16_t)(u >> 16)}; return x;
}

template <typename Acc> __device__ __forceinline__ Acc pg_load(const float* p) { return (Acc)*p; }
template <typename Acc> __device__ __forceinline__ Acc pg_load(const double* p) { return (Acc)*p; }
template <typename Acc> __device__ __forceinline__ Acc pg_load(const pg_half* p) { return (Acc)pg_to_float(*p); }
template <typename Acc> __device__ __forceinline__ Acc pg_load(const pg_bf16* p) { return (Acc)pg_to_float(*p); }

// N consecutive elements in one load (N * sizeof(T) bytes at most 16, or 16 at a time): p is
// aligned to that (inputs start at 16-byte boundaries, rows hold multiples of N elements).
template <int N, typename T> struct alignas(N * sizeof(T) < 16 ? N * sizeof(T) : 16) pg_chunk { T v[N]; };
template <int N, typename Acc, typename T> __device__ __forceinline__ void pg_load_vector(Acc (&out)[N], const T* p) {
    const pg_chunk<N, T> chunk = *reinterpret_cast<const pg_chunk<N, T>*>(p);
    for (int j = 0; j < N; ++j) out[j] = pg_load<Acc>(&chunk.v[j]);
}

__device__ __forceinline__ void pg_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void pg_store(double* p, double v) { *p = v; }
__device__ __forceinline__ void pg_store(pg_half* p, float v) { *p = pg_from_float_half(v); }
__device__ __forceinline__ void pg_store(pg_bf16* p, float v) { *p = pg_from_float_bf16(v); }

// Tensor cores: one warp adds the product of a 16 x k tile of A (rows) and a k x 8 tile of B
// (columns) to a 16 x 8 float accumulator: mma.sync m16n8k16 for half and bfloat16 (raw bits,
// two per register), m16n8k8 for tf32. The fragments are laid out as the PTX ISA says, with
// lane = 4 * group + quad:
//   A, 16-bit: a[r] = row group + 8 * (r & 1), columns 2 * quad + 8 * (r >> 1) and the next
//   A, tf32:   a[r] = row group + 8 * (r & 1), column quad + 4 * (r >> 1)
//   B, 16-bit: b[r] = rows 2 * quad + 8 * r and the next, column group
//   B, tf32:   b[r] = row quad + 4 * r, column group
//   D:         d[i] = row group + 8 * (i >> 1), column 2 * quad + (i & 1)
// Every lane of the warp must call them. Below sm_80 (and in the CPU test harness) the same
// product is formed from the other lanes' fragments through shuffles.
__device__ __forceinline__ unsigned int pg_tf32_bits(float f) {  // round to nearest, ties away
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned int u; asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(f)); return u;
#else
    unsigned int u = (unsigned int)__float_as_int(f);
    if ((u & 0x7f800000u) != 0x7f800000u) u += 0x1000u;  // finite: half an ulp of tf32, then cut
    return u & 0xffffe000u;
#endif
}
template <typename T> __device__ __forceinline__ float pg_unpack(unsigned int pair, int high) {
    T x = {(uint16_t)(high ? pair >> 16 : pair & 0xffffu)};
    return pg_to_float(x);
}

template <typename T>  // T: pg_half or pg_bf16
__device__ __forceinline__ void pg_mma_16x8x16_by_lanes(float d[4], const unsigned int a[4], const unsigned int b[2]) {
    const int lane = (int)(threadIdx.x & 31u), group = lane / 4, quad = lane % 4;
    for (int q = 0; q < 4; ++q) {  // the k columns 2q, 2q + 1, 2q + 8, 2q + 9, held by the lanes of quad q
        unsigned int rows[4], cols[2][2];
        for (int r = 0; r < 4; ++r) rows[r] = __shfl_sync(0xffffffffu, a[r], 4 * group + q);
        for (int c = 0; c < 2; ++c)
            for (int r = 0; r < 2; ++r) cols[c][r] = __shfl_sync(0xffffffffu, b[r], 4 * (2 * quad + c) + q);
        for (int i = 0; i < 4; ++i)
            for (int half = 0; half < 2; ++half)  // k = 2q + 8 * half and the next
                for (int next = 0; next < 2; ++next)
                    d[i] += pg_unpack<T>(rows[2 * half + (i >> 1)], next) * pg_unpack<T>(cols[i & 1][half], next);
    }
}
__device__ __forceinline__ void pg_mma_16x8x16(pg_bf16, float d[4], const unsigned int a[4], const unsigned int b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    pg_mma_16x8x16_by_lanes<pg_bf16>(d, a, b);
#endif
}
__device__ __forceinline__ void pg_mma_16x8x16(pg_half, float d[4], const unsigned int a[4], const unsigned int b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    pg_mma_16x8x16_by_lanes<pg_half>(d, a, b);
#endif
}

__device__ __forceinline__ void pg_mma_16x8x8_tf32(float d[4], const unsigned int a[4], const unsigned int b[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    const int lane = (int)(threadIdx.x & 31u), group = lane / 4, quad = lane % 4;
    for (int q = 0; q < 4; ++q) {  // the k columns q and q + 4, held by the lanes of quad q
        unsigned int rows[4], cols[2][2];
        for (int r = 0; r < 4; ++r) rows[r] = __shfl_sync(0xffffffffu, a[r], 4 * group + q);
        for (int c = 0; c < 2; ++c)
            for (int r = 0; r < 2; ++r) cols[c][r] = __shfl_sync(0xffffffffu, b[r], 4 * (2 * quad + c) + q);
        for (int i = 0; i < 4; ++i)
            for (int half = 0; half < 2; ++half)  // k = q + 4 * half
                d[i] += __int_as_float((int)rows[2 * half + (i >> 1)]) * __int_as_float((int)cols[i & 1][half]);
    }
#endif
}

// Asynchronous copies from global to shared memory (cp.async, sm_80 and later): BYTES (4, 8 or
// 16) bytes, or zeros where `valid` is false (nothing is read then). A thread commits the copies
// it issued as one group; pg_cp_async_wait<N> waits until at most its N newest groups are in
// flight. Before sm_80 the copies are made at once. (The CPU test harness defines its own, which
// make a copy only when it is waited for: a read of a tile before its wait shows.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <int BYTES> __device__ __forceinline__ void pg_cp_async(void* dst, const void* src, bool valid) {
    unsigned int to;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(to) : "l"(dst));
    if (BYTES == 16)  // whole 16-byte lines bypass L1 (.cg); smaller copies must go through it (.ca)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(to), "l"(src), "r"(valid ? 16 : 0));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" :: "r"(to), "l"(src), "n"(BYTES), "r"(valid ? BYTES : 0));
}
__device__ __forceinline__ void pg_cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void pg_cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N)); }
#elif !defined(PG_CP_ASYNC_DEFERRED)
template <int BYTES> __device__ __forceinline__ void pg_cp_async(void* dst, const void* src, bool valid) {
    for (int i = 0; i < BYTES / 4; ++i)
        ((unsigned int*)dst)[i] = valid ? ((const unsigned int*)src)[i] : 0u;
}
__device__ __forceinline__ void pg_cp_async_commit() {}
template <int N> __device__ __forceinline__ void pg_cp_async_wait() {}
#endif

// Atomic accumulation. 16-bit values are added by the hardware where it can (half from sm_70,
// bfloat16 from sm_90: red.add.noftz; the addend is rounded to 16 bits first, as torch's
// atomicAdd on half does), else through a compare-and-swap on their 32-bit word.
__device__ __forceinline__ void pg_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void pg_atomic_add(double* p, double v) { atomicAdd(p, v); }
template <typename T>
__device__ __forceinline__ void pg_atomic_add_16(T* p, float v) {
    unsigned int* word = (unsigned int*)((unsigned long long)p & ~3ull);
    const bool high = ((unsigned long long)p & 2ull) != 0;
    unsigned int old = *word, assumed;
    do {
        assumed = old;
        T x = {(uint16_t)(high ? (assumed >> 16) : (assumed & 0xffffu))};
        float sum = pg_to_float(x) + v;
        T y; pg_store(&y, sum);
        unsigned int updated = high ? ((assumed & 0x0000ffffu) | ((unsigned int)y.bits << 16))
                                    : ((assumed & 0xffff0000u) | (unsigned int)y.bits);
        old = atomicCAS(word, assumed, updated);
    } while (old != assumed);
}
__device__ __forceinline__ void pg_atomic_add(pg_half* p, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    asm volatile("red.global.add.noftz.f16 [%0], %1;" :: "l"(p), "h"(pg_from_float_half(v).bits) : "memory");
#else
    pg_atomic_add_16(p, v);
#endif
}
__device__ __forceinline__ void pg_atomic_add(pg_bf16* p, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.noftz.bf16 [%0], %1;" :: "l"(p), "h"(pg_from_float_bf16(v).bits) : "memory");
#else
    pg_atomic_add_16(p, v);
#endif
}

// Atomic maximum (the target starts at -infinity; NaN wins, as in torch), by compare-and-swap.
__device__ __forceinline__ bool pg_replaces(float old, float v) { return v > old || (v != v && old == old); }
__device__ __forceinline__ bool pg_replaces(double old, double v) { return v > old || (v != v && old == old); }
__device__ __forceinline__ void pg_atomic_max(float* p, float v) {
    int* word = (int*)p;
    int old = *word;
    while (pg_replaces(__int_as_float(old), v)) {
        const int seen = atomicCAS(word, old, __float_as_int(v));
        if (seen == old) break;
        old = seen;
    }
}
__device__ __forceinline__ void pg_atomic_max(double* p, double v) {
    unsigned long long* word = (unsigned long long*)p;
    unsigned long long old = *word;
    while (pg_replaces(__longlong_as_double((long long)old), v)) {
        const unsigned long long seen = atomicCAS(word, old, (unsigned long long)__double_as_longlong(v));
        if (seen == old) break;
        old = seen;
    }
}

// Reductions across the `width` lanes that share a row (width is a power of two <= 32). Every
// lane of the warp must call them: kernels keep control flow uniform across a warp.
template <typename T>
__device__ __forceinline__ T pg_group_sum(T v, int width) {
    for (int offset = width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset, width);
    return v;
}
template <typename T>
__device__ __forceinline__ T pg_group_get(T v, int source_lane, int width) {
    return __shfl_sync(0xffffffffu, v, source_lane, width);
}
__device__ __forceinline__ long long pg_warp_max(long long v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        long long other = __shfl_xor_sync(0xffffffffu, v, offset, 32);
        v = other > v ? other : v;
    }
    return v;
}

// The thread groups of a block that share one destination (a hub) combine their partial
// results: each thread gets the sum (or maximum) over the groups of its lane's value. Every
// thread of the block must call them; the groups are added in order, so results do not vary.
template <typename T>
__device__ __forceinline__ T pg_parts_sum(T v, T* scratch, int width) {
    __syncthreads();  // the scratch's previous use is over
    scratch[threadIdx.x] = v;
    __syncthreads();
    T total = (T)0;
    for (int t = threadIdx.x % width; t < (int)blockDim.x; t += width) total += scratch[t];
    return total;
}
template <typename T>
__device__ __forceinline__ T pg_parts_max(T v, T* scratch, int width) {
    __syncthreads();
    scratch[threadIdx.x] = v;
    __syncthreads();
    T top = scratch[threadIdx.x % width];
    for (int t = threadIdx.x % width + width; t < (int)blockDim.x; t += width) top = scratch[t] > top ? scratch[t] : top;
    return top;
}

// Whether this block is the last of `blocks` to get here, each after storing its partial
// results: the fences make every block's stores visible to the last. Every thread calls it.
__device__ __forceinline__ bool pg_last_block(int* counter, int blocks) {
    __shared__ int last[1];
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last[0] = atomicAdd(counter, 1) == blocks - 1;
    __syncthreads();
    const bool is_last = last[0] != 0;
    __threadfence();
    return is_last;
}

// Elementwise helpers used by generated expressions.
template <typename T> __device__ __forceinline__ T pg_max(T a, T b) { return a > b ? a : b; }
template <typename T> __device__ __forceinline__ T pg_sigmoid(T x) { return (T)1 / ((T)1 + exp(-x)); }
template <typename T> __device__ __forceinline__ T pg_gelu(T x) {
    return (T)0.5 * x * ((T)1 + erf(x * (T)0.7071067811865476));
}
template <typename T> __device__ __forceinline__ T pg_gelu_grad(T x) {
    return (T)0.5 * ((T)1 + erf(x * (T)0.7071067811865476)) + x * exp((T)-0.5 * x * x) * (T)0.3989422804014327;
}
