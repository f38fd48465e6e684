// CUDA on the CPU, for tests: lets generated .cu source compile with g++ -std=c++20.
// Several blocks run at once, in a shuffled order, each on a team of real threads (one per CUDA
// thread), with a barrier for __syncthreads and one per warp for shuffles; each team has its own
// __shared__ arrays (the runner rewrites their declarations into pg_shared calls); atomics go
// through std::atomic_ref. A thread that returns early drops out of its block's and its warp's
// barriers.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

struct dim3 { unsigned int x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

using std::exp; using std::log; using std::sqrt; using std::tanh; using std::erf; using std::fabs;

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline double __longlong_as_double(long long i) { double f; std::memcpy(&f, &i, 8); return f; }
inline long long __double_as_longlong(double f) { long long i; std::memcpy(&i, &f, 8); return i; }

struct pg_warp_state {
    std::unique_ptr<std::barrier<>> barrier;
    alignas(8) unsigned char slot[32][8];
};
// The threads that run one block at a time, with what a block shares.
struct pg_team {
    std::unique_ptr<std::barrier<>> block_barrier;
    std::vector<pg_warp_state> warps;
    std::function<void()> fresh;
    std::unique_ptr<std::barrier<std::function<void()>>> next_block;
    std::mutex shared_lock;
    std::vector<std::unique_ptr<std::max_align_t[]>> shared;
};
inline thread_local pg_team* pg_current_team;
inline unsigned int pg_launch_seed = 1;

// A block's __shared__ array `id` (one per declaration in the source).
template <typename T> T& pg_shared(int id) {
    pg_team& team = *pg_current_team;
    std::lock_guard<std::mutex> lock(team.shared_lock);
    if ((int)team.shared.size() <= id) team.shared.resize(id + 1);
    if (!team.shared[id])
        team.shared[id].reset(new std::max_align_t[(sizeof(T) + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t)]);
    return *reinterpret_cast<T*>(team.shared[id].get());
}

// A plain, non-atomic add whose read and write lie apart: what a missing atomic does, made
// likely to lose an update. Tests swap it in for an atomic add to show the harness sees races.
template <typename T> void pg_racy_add(T* p, T v) {
    const T old = *p;
    std::this_thread::yield();
    *p = old + v;
}
inline void pg_racy_add(float* p, double v) { pg_racy_add(p, (float)v); }

inline thread_local std::barrier<>* pg_block_barrier;
inline thread_local pg_warp_state* pg_warp;
inline thread_local int pg_lane;

inline void __syncthreads() { pg_block_barrier->arrive_and_wait(); }

template <typename T> T __shfl_sync(unsigned, T v, int source, int width = 32) {
    std::memcpy(pg_warp->slot[pg_lane], &v, sizeof(T));
    pg_warp->barrier->arrive_and_wait();
    T r;
    std::memcpy(&r, pg_warp->slot[(pg_lane & ~(width - 1)) + (source & (width - 1))], sizeof(T));
    pg_warp->barrier->arrive_and_wait();
    return r;
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    return __shfl_sync(0xffffffffu, v, (pg_lane & (width - 1)) ^ mask, width);
}

// cp.async as late as the PTX ISA allows: each copy is made only when a wait_group that covers
// it runs (its source is read then, its zeros written then), so a tile read before its wait gives
// wrong numbers. (Copies landing early, into a stage another warp still reads, are not modelled:
// the barrier at the end of each k step is what the template relies on for that.) Copies of
// misaligned words abort, as they would fault on a GPU.
#define PG_CP_ASYNC_DEFERRED
struct pg_async_copy { void* dst; const void* src; int bytes; };
inline thread_local std::vector<pg_async_copy> pg_async_open;  // issued, not yet committed
inline thread_local std::vector<std::vector<pg_async_copy>> pg_async_groups;  // committed, oldest first
template <int BYTES> void pg_cp_async(void* dst, const void* src, bool valid) {
    if ((reinterpret_cast<std::uintptr_t>(dst) | (valid ? reinterpret_cast<std::uintptr_t>(src) : 0)) % BYTES)
        std::abort();
    pg_async_open.push_back({dst, valid ? src : nullptr, BYTES});
}
inline void pg_cp_async_commit() {
    pg_async_groups.push_back(std::move(pg_async_open));
    pg_async_open.clear();
}
template <int N> void pg_cp_async_wait() {
    while ((int)pg_async_groups.size() > N) {
        for (const pg_async_copy& c : pg_async_groups.front()) {
            if (c.src) std::memcpy(c.dst, c.src, c.bytes);
            else std::memset(c.dst, 0, c.bytes);
        }
        pg_async_groups.erase(pg_async_groups.begin());
    }
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline unsigned int atomicCAS(unsigned int* p, unsigned int expected, unsigned int desired) {
    std::atomic_ref<unsigned int>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
inline int atomicCAS(int* p, int expected, int desired) {
    std::atomic_ref<int>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long expected, unsigned long long desired) {
    std::atomic_ref<unsigned long long>(*p).compare_exchange_strong(expected, desired);
    return expected;
}

// IEEE half conversions in software (round to nearest even).
inline float pg_half_bits_to_float(uint16_t h) {
    unsigned int sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu, bits;
    if (exponent == 0) {
        if (mantissa == 0) bits = sign;
        else {
            exponent = 127 - 15 + 1;
            while (!(mantissa & 0x400u)) { mantissa <<= 1; --exponent; }
            bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
        }
    } else if (exponent == 31) bits = sign | 0x7f800000u | (mantissa << 13);
    else bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    return __int_as_float((int)bits);
}
inline uint16_t pg_float_to_half_bits(float f) {
    unsigned int u = (unsigned int)__float_as_int(f), sign = (u >> 16) & 0x8000u;
    unsigned int abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // overflow to infinity
    if (abs < 0x38800000u) {  // subnormal half
        float scaled = __int_as_float((int)abs) * 16777216.0f;  // * 2^24
        return (uint16_t)(sign | (unsigned int)std::nearbyint(scaled));
    }
    unsigned int rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return (uint16_t)(sign | ((rounded - (112u << 23)) >> 13));
}

// Runs `body` as a grid of blocks; returns after the last block. PG_TEAMS blocks run at once,
// each on its own team of threads, in a shuffled order: a missing atomic between blocks shows.
#ifndef PG_TEAMS
#define PG_TEAMS 3
#endif
inline void pg_launch(dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned int threads = block.x * block.y * block.z, warps = (threads + 31) / 32;
    blockDim = block;
    gridDim = grid;
    std::vector<dim3> order;
    for (unsigned int z = 0; z < grid.z; ++z)
        for (unsigned int y = 0; y < grid.y; ++y)
            for (unsigned int x = 0; x < grid.x; ++x) order.push_back({x, y, z});
    std::shuffle(order.begin(), order.end(), std::mt19937(pg_launch_seed++));
    const unsigned int teams = (unsigned int)std::min<size_t>(PG_TEAMS, order.size());
    std::vector<std::unique_ptr<pg_team>> team;
    for (unsigned int k = 0; k < teams; ++k) {
        team.push_back(std::make_unique<pg_team>());
        pg_team* tm = team.back().get();
        tm->warps = std::vector<pg_warp_state>(warps);
        tm->fresh = [tm, threads, warps]() noexcept {  // new barriers per block: early returns drop out of one
            tm->block_barrier = std::make_unique<std::barrier<>>(threads);
            for (unsigned int w = 0; w < warps; ++w)
                tm->warps[w].barrier = std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w));
        };
        tm->fresh();
        tm->next_block = std::make_unique<std::barrier<std::function<void()>>>(threads, tm->fresh);
    }
    std::vector<std::thread> pool;
    for (unsigned int k = 0; k < teams; ++k) {
        for (unsigned int t = 0; t < threads; ++t) {
            pool.emplace_back([&, k, t] {
                pg_team* tm = team[k].get();
                pg_current_team = tm;
                threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                pg_lane = (int)(t % 32);
                for (size_t i = k; i < order.size(); i += teams) {
                    blockIdx = order[i];
                    pg_block_barrier = tm->block_barrier.get();
                    pg_warp = &tm->warps[t / 32];
                    pg_async_open.clear();  // a block's copies never land in the next one's tiles
                    pg_async_groups.clear();
                    body();
                    pg_block_barrier->arrive_and_drop();
                    pg_warp->barrier->arrive_and_drop();
                    tm->next_block->arrive_and_wait();
                }
            });
        }
    }
    for (auto& th : pool) th.join();
}
