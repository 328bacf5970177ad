// tinyseg's host emulation of the CUDA execution model.
//
// A kernels/*.cu file is compiled by g++ with this header forced in front of it
// (-include emulation.h), so the very same source that NVRTC compiles for the GPU runs on
// the CPU. What is emulated:
//
//   grid, blocks, threads   blocks run one after another; the threads of a block are
//                           coroutines (ucontext) on one OS thread, each with its own
//                           stack (its "registers"), started in threadIdx order;
//   threadIdx, blockIdx,    plain globals, set by the scheduler before it resumes a
//   blockDim, gridDim       thread (only one emulated thread runs at any moment);
//   __shared__              `static` storage: one copy, seen by every thread of the
//                           block (blocks never overlap). Dynamic shared memory
//                           (`extern __shared__ T name[];`) is a buffer of the launch's
//                           shared_mem bytes (the Python loader rewrites that one
//                           declaration, see tinyseg/cuda/emulation.py);
//   __syncthreads()         the thread yields to the scheduler, which resumes the block
//                           only when every live thread has reached a barrier;
//   __syncwarp(), warp      the same, with the 32 lanes of a warp: __shfl_*_sync
//   shuffles                exchange values through a per-lane slot between two warp
//                           barriers;
//   atomics                 read-modify-write without interruption (one emulated thread
//                           runs at a time, so every operation is atomic).
//
// What is not: timing, warps executing in lock-step (a race that the hardware would
// expose runs here in one fixed order and may look correct), memory spaces (every
// pointer is a host pointer), out-of-bounds checks (the guard-band tests look for
// those), and the texture/cooperative-group APIs (tinyseg's kernels do not use them).
// A barrier reached by some threads of a block while the others have finished is
// accepted (as on Volta and later, where exited threads no longer count); a block whose
// live threads wait at different kinds of barrier is a deadlock and fails the launch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cfloat>
#include <climits>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define TINYSEG_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// CUDA's device math is overloaded for float and double; bring the C++ overloads to the
// global namespace so that exp(T) stays in T, as on the GPU.
using std::max;
using std::min;
using std::abs;
using std::exp;
using std::log;
using std::log1p;
using std::sqrt;
using std::fabs;
using std::fmax;
using std::fmin;
using std::floor;
using std::ceil;
using std::pow;
using std::tanh;
using std::isnan;
using std::isinf;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return std::min(std::max(x, 0.0f), 1.0f); }
template <typename T> inline T __ldg(const T* p) { return *p; }
inline void __threadfence() {}
inline void __threadfence_block() {}

namespace ts_emu {

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Thread {
    ucontext_t context;
    std::vector<char> stack;
    State state = State::Ready;
    uint3 index;
};

// One launch at a time (the Python side holds a lock): the scheduler's state is global.
struct Scheduler {
    ucontext_t main_context;
    std::vector<Thread> threads;
    std::vector<unsigned char> dynamic_shared;
    std::vector<unsigned long long> shuffle_slots;   // one 8-byte slot per thread of the block
    int current = -1;
    void (*body)(void*) = nullptr;
    void* body_argument = nullptr;
    char error[256] = {0};
};
inline Scheduler scheduler;
constexpr std::size_t kStackBytes = 64 * 1024;

inline unsigned char* dynamic_shared_memory() { return scheduler.dynamic_shared.data(); }

inline void yield_as(State state) {
    Thread& me = scheduler.threads[scheduler.current];
    me.state = state;
    swapcontext(&me.context, &scheduler.main_context);
}

inline void thread_entry() {
    scheduler.body(scheduler.body_argument);
    scheduler.threads[scheduler.current].state = State::Done;
    // returning switches to uc_link, the scheduler
}

inline int lane_of(int t) { return t % 32; }

// Runs one block: resumes every ready thread in threadIdx order until each has finished
// or waits at a barrier, then releases the barrier every live thread agrees on.
inline bool run_block(unsigned int nthreads) {
    Scheduler& s = scheduler;
    for (unsigned int t = 0; t < nthreads; ++t) {
        Thread& th = s.threads[t];
        th.state = State::Ready;
        getcontext(&th.context);
        th.context.uc_stack.ss_sp = th.stack.data();
        th.context.uc_stack.ss_size = th.stack.size();
        th.context.uc_link = &s.main_context;
        makecontext(&th.context, thread_entry, 0);
    }
    for (;;) {
        for (unsigned int t = 0; t < nthreads; ++t) {
            Thread& th = s.threads[t];
            if (th.state != State::Ready) continue;
            s.current = int(t);
            threadIdx = th.index;
            swapcontext(&s.main_context, &th.context);
        }
        // Every thread is done or waiting. Warps whose live lanes all wait at a warp
        // barrier go first; then a block barrier, if every live thread waits there.
        bool released = false, any_live = false, all_at_block = true;
        for (unsigned int w = 0; w < (nthreads + 31) / 32; ++w) {
            bool live = false, all_at_warp = true;
            for (unsigned int t = 32 * w; t < std::min(nthreads, 32 * w + 32); ++t) {
                State st = s.threads[t].state;
                if (st == State::Done) continue;
                live = true;
                if (st != State::AtWarpBarrier) all_at_warp = false;
            }
            if (live && all_at_warp) {
                for (unsigned int t = 32 * w; t < std::min(nthreads, 32 * w + 32); ++t)
                    if (s.threads[t].state == State::AtWarpBarrier) s.threads[t].state = State::Ready;
                released = true;
            }
        }
        if (released) continue;
        for (unsigned int t = 0; t < nthreads; ++t) {
            State st = s.threads[t].state;
            if (st == State::Done) continue;
            any_live = true;
            if (st != State::AtBlockBarrier) all_at_block = false;
        }
        if (!any_live) return true;
        if (!all_at_block) {
            std::snprintf(s.error, sizeof s.error,
                          "deadlock in block (%u,%u,%u): its live threads wait at different barriers "
                          "(__syncthreads in divergent code?)", blockIdx.x, blockIdx.y, blockIdx.z);
            return false;
        }
        for (unsigned int t = 0; t < nthreads; ++t)
            if (s.threads[t].state == State::AtBlockBarrier) s.threads[t].state = State::Ready;
    }
}

// Launch: runs body(argument) as every thread of every block. Returns 0, or 1 with
// scheduler.error set.
inline int run_grid(const unsigned int* grid, const unsigned int* block, std::size_t shared_bytes,
                    void (*body)(void*), void* argument) {
    Scheduler& s = scheduler;
    s.error[0] = 0;
    unsigned int nthreads = block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > 1024) {
        std::snprintf(s.error, sizeof s.error, "block of %u threads: CUDA allows 1 to 1024", nthreads);
        return 1;
    }
    if (s.threads.size() < nthreads) s.threads.resize(nthreads);
    for (unsigned int t = 0; t < nthreads; ++t) {
        Thread& th = s.threads[t];
        if (th.stack.size() < kStackBytes) th.stack.resize(kStackBytes);
        th.index = {t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
    }
    s.dynamic_shared.assign(std::max<std::size_t>(shared_bytes, 16), 0);
    s.shuffle_slots.assign(nthreads, 0);
    s.body = body;
    s.body_argument = argument;
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    for (unsigned int bz = 0; bz < grid[2]; ++bz)
        for (unsigned int by = 0; by < grid[1]; ++by)
            for (unsigned int bx = 0; bx < grid[0]; ++bx) {
                blockIdx = {bx, by, bz};
                if (!run_block(nthreads)) return 1;
            }
    return 0;
}

inline int linear_thread_index() {
    return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

template <typename T>
inline T shuffle(T value, int source_lane_offset_or_mask, int mode) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    Scheduler& s = scheduler;
    int me = linear_thread_index();
    int lane = lane_of(me), warp_base = me - lane;
    std::memcpy(&s.shuffle_slots[me], &value, sizeof(T));
    yield_as(State::AtWarpBarrier);
    int source;
    if (mode == 0) source = lane + source_lane_offset_or_mask;        // down
    else if (mode == 1) source = lane - source_lane_offset_or_mask;   // up
    else if (mode == 2) source = lane ^ source_lane_offset_or_mask;   // xor
    else source = source_lane_offset_or_mask;                         // indexed
    T result = value;
    int n = int(blockDim.x * blockDim.y * blockDim.z);
    if (source >= 0 && source < 32 && warp_base + source < n &&
        s.threads[warp_base + source].state != State::Done)
        std::memcpy(&result, &s.shuffle_slots[warp_base + source], sizeof(T));
    yield_as(State::AtWarpBarrier);   // nobody overwrites a slot before every lane has read
    return result;
}

// The kernel's arguments arrive as CUDA's kernelParams do: an array of pointers to each
// argument's value. Unpacked against the kernel's own parameter types.
template <typename... Args>
struct Call {
    void (*kernel)(Args...);
    void** args;
};

template <typename... Args, std::size_t... I>
inline void invoke(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>>*>(args[I])...);
}

template <typename... Args>
inline void call_body(void* p) {
    auto* call = static_cast<Call<Args...>*>(p);
    invoke(call->kernel, call->args, std::index_sequence_for<Args...>{});
}

template <typename... Args>
inline int launch(void (*kernel)(Args...), const unsigned int* grid, const unsigned int* block,
                  std::size_t shared_bytes, void** args) {
    Call<Args...> call{kernel, args};
    return run_grid(grid, block, shared_bytes, &call_body<Args...>, &call);
}

// The parameter list, for the Python side to check what it packs: per parameter, its
// size in bytes, and for a pointer the size of what it points to (0 for a value).
template <typename A>
inline void describe_one(long long* out) {
    using T = std::remove_cv_t<std::remove_reference_t<A>>;
    out[0] = (long long)sizeof(T);
    if constexpr (std::is_pointer_v<T>) {
        using P = std::remove_cv_t<std::remove_pointer_t<T>>;
        if constexpr (std::is_void_v<P>) out[1] = -1;
        else out[1] = (long long)sizeof(P);
    } else {
        out[1] = 0;
    }
    out[2] = std::is_floating_point_v<T> ? 1 : 0;
}

template <typename... Args>
inline int describe(void (*)(Args...), long long* out) {
    int i = 0;
    ((describe_one<Args>(out + 3 * i), ++i), ...);
    return int(sizeof...(Args));
}

inline const char* last_error() { return scheduler.error; }

}  // namespace ts_emu

inline void __syncthreads() { ts_emu::yield_as(ts_emu::State::AtBlockBarrier); }
inline void __syncwarp(unsigned int = 0xffffffffu) { ts_emu::yield_as(ts_emu::State::AtWarpBarrier); }
template <typename T> inline T __shfl_down_sync(unsigned int, T v, unsigned int d, int = 32) { return ts_emu::shuffle(v, int(d), 0); }
template <typename T> inline T __shfl_up_sync(unsigned int, T v, unsigned int d, int = 32) { return ts_emu::shuffle(v, int(d), 1); }
template <typename T> inline T __shfl_xor_sync(unsigned int, T v, int m, int = 32) { return ts_emu::shuffle(v, m, 2); }
template <typename T> inline T __shfl_sync(unsigned int, T v, int lane, int = 32) { return ts_emu::shuffle(v, lane, 3); }

// Atomics: one emulated thread runs at a time, so a plain read-modify-write is atomic.
template <typename T> inline T atomicAdd(T* address, T value) { T old = *address; *address = old + value; return old; }
template <typename T> inline T atomicSub(T* address, T value) { T old = *address; *address = old - value; return old; }
template <typename T> inline T atomicMax(T* address, T value) { T old = *address; *address = std::max(old, value); return old; }
template <typename T> inline T atomicMin(T* address, T value) { T old = *address; *address = std::min(old, value); return old; }
template <typename T> inline T atomicExch(T* address, T value) { T old = *address; *address = value; return old; }
template <typename T> inline T atomicCAS(T* address, T compare, T value) {
    T old = *address;
    if (old == compare) *address = value;
    return old;
}
