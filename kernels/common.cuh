// common.cuh: what every fastvae kernel file shares.
//
// - Precision-generic math (vexp, vlog1p, ...) so one template body serves float and double;
//   no fast-math intrinsics, so results stay within a few ulp of the NumPy reference.
// - The tile shape (TILE_W, TILE_H) of the row/column-reducing kernels: a block is TILE_H
//   warps; lane x of every warp owns column (tile * TILE_W + x), so each warp reads one
//   row's 32 consecutive values (coalesced), a row sum is one warp reduction, and a column
//   sum is a reduction over the block's warps followed, when the rows were split into
//   chunks, by sum_partials (dense.cu).  All reductions run in a fixed order: results are
//   deterministic from run to run, which keeps training resumable to the bit.
// - Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind normal_eps.
//
// The tile shape and the Philox constants, like the activation and likelihood codes, are
// not written here: fastvae/backends/codes.py holds them and passes them as -D options
// (codes.cuda_defines(), part of fastvae.backends.cuda.compile_options()), so that Python
// and CUDA cannot disagree.  A compile without them stops at the #error below.
//
// Kernels are exported as extern "C" <name>_f32 / <name>_f64 so that NVRTC, nvcc and the
// launchers in fastvae/backends/cuda/ all see plain, unmangled names.
#pragma once

typedef long long i64;
typedef unsigned int u32;
typedef unsigned long long u64;

#if !defined(TILE_W) || !defined(TILE_H)
#error "TILE_W, TILE_H must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#elif TILE_W != 32
#error "TILE_W is the warp size: warp_sum and the full-warp shuffle masks assume 32 lanes"
#endif
#if !defined(PHILOX_M0) || !defined(PHILOX_M1) || !defined(PHILOX_W0) || !defined(PHILOX_W1)
#error "PHILOX_* must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

__device__ __forceinline__ float vexp(float x) { return expf(x); }
__device__ __forceinline__ double vexp(double x) { return exp(x); }
__device__ __forceinline__ float vexpm1(float x) { return expm1f(x); }
__device__ __forceinline__ double vexpm1(double x) { return expm1(x); }
__device__ __forceinline__ float vlog1p(float x) { return log1pf(x); }
__device__ __forceinline__ double vlog1p(double x) { return log1p(x); }
__device__ __forceinline__ float vtanh(float x) { return tanhf(x); }
__device__ __forceinline__ double vtanh(double x) { return tanh(x); }
__device__ __forceinline__ float vsqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double vsqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float vabs(float x) { return fabsf(x); }
__device__ __forceinline__ double vabs(double x) { return fabs(x); }

// Index of this thread in a 1-D grid-stride loop, and the stride.
__device__ __forceinline__ i64 grid_start() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_stride() { return (i64)gridDim.x * blockDim.x; }

// Sum over the 32 lanes of a warp (butterfly: every lane gets the same total).
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = TILE_W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Column sum over the TILE_H warps of a (TILE_W, TILE_H) block; the total is valid in
// warp 0 (threadIdx.y == 0).  Every thread of the block must call it.
template <class T>
__device__ T tile_col_sum(T v) {
    __shared__ T sh[TILE_H][TILE_W + 1];
    sh[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    T s = 0;
    if (threadIdx.y == 0)
        for (int w = 0; w < TILE_H; ++w) s += sh[w][threadIdx.x];
    __syncthreads();  // sh may be reused by the next call
    return s;
}

// Sum over all threads of a 1-D block of up to 1024 threads; valid in thread 0.
template <class T>
__device__ T block_sum(T v) {
    __shared__ T sh[1024 / TILE_W];
    int lane = threadIdx.x % TILE_W, warp = threadIdx.x / TILE_W;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T s = 0;
    if (threadIdx.x == 0)
        for (int w = 0; w < (int)(blockDim.x + TILE_W - 1) / TILE_W; ++w) s += sh[w];
    __syncthreads();
    return s;
}

// ---- bfloat16 bits ---------------------------------------------------------------------
// The bf16 bits of a float32 (its bits v), rounded to nearest-even; NaN stays a quiet NaN of
// the same sign (rounding its payload could carry into the exponent).  bf16.cu's to_bf16,
// and the kernels that write a bf16 product's operand beside their float32 output.
__device__ __forceinline__ unsigned short bf16_bits(u32 v) {
    u32 r = (v + 0x7FFFu + ((v >> 16) & 1u)) >> 16;
    if ((v & 0x7FFFFFFFu) > 0x7F800000u) r = (v >> 16) | 0x0040u;
    return (unsigned short)r;
}
// half[k] <- the bf16 bits of v (a float64 kernel has no bf16 operands: nothing to write)
__device__ __forceinline__ void store_half(unsigned short* half, i64 k, float v) {
    union { float f; u32 u; } c;
    c.f = v;
    half[k] = bf16_bits(c.u);
}
__device__ __forceinline__ void store_half(unsigned short*, i64, double) {}

// ---- Philox4x32-10 -------------------------------------------------------------------
struct u32x4 { u32 v[4]; };

__device__ __forceinline__ u32 mulhi32(u32 a, u32 b) { return (u32)(((u64)a * b) >> 32); }

__device__ __forceinline__ u32x4 philox4x32_10(u32x4 c, u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        u32 hi0 = mulhi32(PHILOX_M0, c.v[0]), lo0 = PHILOX_M0 * c.v[0];
        u32 hi1 = mulhi32(PHILOX_M1, c.v[2]), lo1 = PHILOX_M1 * c.v[2];
        u32x4 n;
        n.v[0] = hi1 ^ c.v[1] ^ k0;
        n.v[1] = lo1;
        n.v[2] = hi0 ^ c.v[3] ^ k1;
        n.v[3] = lo0;
        c = n;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return c;
}
