// cuda_emu.h: runs fastvae's CUDA C kernels on the CPU, for tests on machines without a GPU.
//
// Every CUDA thread of a block is a fiber (ucontext) with its own stack; blocks run one
// after another.  __syncthreads and the warp shuffles are barriers at which a fiber yields
// to the scheduler until every live thread of its block (or warp) has arrived, so kernels
// run with CUDA's semantics for the features fastvae uses: static __shared__ memory,
// block barriers, __shfl_xor_sync, atomicAdd.  A deadlock (a barrier some threads never
// reach) aborts with a message instead of hanging.  Kernels are launched through
// emu_launch with a cuLaunchKernel-style argument array.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <algorithm>
#include <vector>

using std::max;
using std::min;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct uint3 { unsigned x, y, z; };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

// CUDA's rounded float intrinsics: one IEEE operation each (the emulator compiles with
// -ffp-contract=off, so g++ fuses none of them into an FMA)
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __ll2float_rn(long long a) { return (float)a; }
inline float __int2float_rn(int a) { return (float)a; }
inline int __float_as_int(float a) { int i; memcpy(&i, &a, 4); return i; }
inline float __int_as_float(int i) { float a; memcpy(&a, &i, 4); return a; }

static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

namespace emu {

const size_t kStack = 64 * 1024;

struct Fiber {
    ucontext_t ctx;
    bool done;
};

static ucontext_t sched_ctx;
static std::vector<Fiber> fibers;
static std::vector<char> stacks;
static int current;
static int alive;
static void (*thunk)(void**);
static void** thunk_args;
static unsigned block_arrived, block_gen;
static unsigned warp_arrived[32], warp_gen[32], warp_alive[32];
static uint64_t slots[1024];  // shuffle exchange, one per thread
static bool progress;

static void set_index(int t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

static void yield() { swapcontext(&fibers[current].ctx, &sched_ctx); set_index(current); }

static void entry() {
    thunk(thunk_args);
    fibers[current].done = true;
    // return to the scheduler through uc_link
}

static void release_if_complete() {
    if (block_arrived > 0 && block_arrived == (unsigned)alive) { block_arrived = 0; ++block_gen; progress = true; }
    for (int w = 0; w < 32; ++w)
        if (warp_arrived[w] > 0 && warp_arrived[w] == warp_alive[w]) { warp_arrived[w] = 0; ++warp_gen[w]; progress = true; }
}

static void run_block(int n) {
    if (stacks.size() < (size_t)n * kStack) stacks.resize((size_t)n * kStack);
    fibers.assign(n, Fiber());
    alive = n;
    block_arrived = 0;
    for (int w = 0; w < 32; ++w) { warp_arrived[w] = 0; warp_alive[w] = 0; }
    for (int t = 0; t < n; ++t) {
        warp_alive[t / 32]++;
        getcontext(&fibers[t].ctx);
        fibers[t].ctx.uc_stack.ss_sp = &stacks[(size_t)t * kStack];
        fibers[t].ctx.uc_stack.ss_size = kStack;
        fibers[t].ctx.uc_link = &sched_ctx;
        fibers[t].done = false;
        makecontext(&fibers[t].ctx, entry, 0);
    }
    while (alive > 0) {
        progress = false;
        for (int t = 0; t < n; ++t) {
            if (fibers[t].done) continue;
            current = t;
            set_index(t);
            swapcontext(&sched_ctx, &fibers[t].ctx);
            if (fibers[t].done) {
                --alive;
                --warp_alive[t / 32];
                progress = true;
                release_if_complete();
            }
        }
        if (!progress && alive > 0) {
            fprintf(stderr, "cuda_emu: deadlock in block (%u, %u): %d threads wait at a barrier "
                            "that the others never reach\n", blockIdx.x, blockIdx.y, alive);
            abort();
        }
    }
}

}  // namespace emu

inline void __syncthreads() {
    unsigned gen = emu::block_gen;
    emu::progress = true;
    if (++emu::block_arrived == (unsigned)emu::alive) { emu::block_arrived = 0; ++emu::block_gen; }
    while (emu::block_gen == gen) emu::yield();
}

inline void emu_warp_barrier() {
    int w = emu::current / 32;
    unsigned gen = emu::warp_gen[w];
    emu::progress = true;
    if (++emu::warp_arrived[w] == emu::warp_alive[w]) { emu::warp_arrived[w] = 0; ++emu::warp_gen[w]; }
    while (emu::warp_gen[w] == gen) emu::yield();
}

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    int t = emu::current;
    memcpy(&emu::slots[t], &v, sizeof(T));
    emu_warp_barrier();
    int src = (t & ~31) | ((t & 31) ^ lane_mask);
    T r;
    memcpy(&r, &emu::slots[src], sizeof(T));
    emu_warp_barrier();  // nobody overwrites a slot before every lane has read it
    return r;
}

inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    unsigned long long old = *p;
    *p += v;
    return old;
}

extern "C" int emu_launch(void (*fn)(void**), unsigned gx, unsigned gy, unsigned gz,
                          unsigned bx, unsigned by, unsigned bz, void** args) {
    unsigned n = bx * by * bz;
    if (n == 0 || n > 1024 || n % 32 != 0) return 1;  // fastvae launches whole warps only
    gridDim.x = gx; gridDim.y = gy; gridDim.z = gz;
    blockDim.x = bx; blockDim.y = by; blockDim.z = bz;
    emu::thunk = fn;
    emu::thunk_args = args;
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
                emu::run_block((int)n);
            }
    return 0;
}
