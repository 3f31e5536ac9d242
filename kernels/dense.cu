// dense.cu: the elementwise work around each matrix product of a hidden layer.
//
//   bias_act_fwd   y (R, N) <- act(y + b)                      one thread per element
//   act_bias_bwd   da (R, N) = dy * act'(y);  db partial sums  (TILE_W, TILE_H) tiles
//   (both: with fuse, half (R, N) <- the output's bf16 bits, a bf16 product's operand
//   rounded where it is written)
//   sum_partials   out (n,) = scale * sum_c part[c, :]         finishes split column sums
//
// The activation codes (ACT_*) come from fastvae/backends/codes.py as -D options (cuda_defines).
// act' is read off the saved output y, so forward
// keeps only y.  R, N are rows and columns; i64 indexes keep R * N > 2^31 safe.
#include "common.cuh"

#if !defined(ACT_IDENTITY) || !defined(ACT_RELU) || !defined(ACT_LEAKY_RELU) || \
    !defined(ACT_TANH) || !defined(ACT_SIGMOID) || !defined(ACT_ELU) || !defined(ACT_SOFTPLUS)
#error "ACT_* must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

template <class T>
__device__ __forceinline__ T act_fwd(T v, int act, T alpha) {
    switch (act) {
    case ACT_RELU: return v < T(0) ? T(0) : v;  // written so that NaN propagates
    case ACT_LEAKY_RELU: return v > T(0) ? v : alpha * v;
    case ACT_TANH: return vtanh(v);
    case ACT_SIGMOID: {
        T e = vexp(-vabs(v));  // never overflows
        T r = T(1) / (T(1) + e);
        return v >= T(0) ? r : e * r;
    }
    case ACT_ELU: return v > T(0) ? v : alpha * vexpm1(v < T(0) ? v : T(0));
    case ACT_SOFTPLUS: return (v > T(0) ? v : T(0)) + vlog1p(vexp(-vabs(v)));
    default: return v;
    }
}

// dy * act'(a), with act'(a) written as a function of y = act(a)
template <class T>
__device__ __forceinline__ T act_bwd(T dy, T y, int act, T alpha) {
    switch (act) {
    case ACT_RELU: return y > T(0) ? dy : T(0);
    case ACT_LEAKY_RELU: return y > T(0) ? dy : alpha * dy;
    case ACT_TANH: return dy * ((T(1) - y) * (T(1) + y));  // 1 - y exact near 1: no cancellation
    case ACT_SIGMOID: return dy * y * (T(1) - y);
    case ACT_ELU: return y > T(0) ? dy : dy * (y + alpha);
    case ACT_SOFTPLUS: return -dy * vexpm1(-y);  // sigmoid(a) = 1 - exp(-softplus(a))
    default: return dy;
    }
}

template <class T>
__device__ void bias_act_fwd_impl(T* y, const T* b, i64 R, int N, int act, T alpha,
                                  unsigned short* half, int fuse) {
    i64 n = R * N;
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        T v = act_fwd(y[i] + b[i % N], act, alpha);
        y[i] = v;
        if (fuse) store_half(half, i, v);
    }
}

// grid (ceil(N / TILE_W), n_chunks), block (TILE_W, TILE_H).  Block (t, c) covers columns
// [t * TILE_W, +TILE_W) of rows [c * rows_per_chunk, +rows_per_chunk) and writes its column
// sums to dbpart[c, :] (dbpart is db itself when n_chunks == 1).  da may alias dy.
template <class T>
__device__ void act_bias_bwd_impl(T* da, T* dbpart, const T* dy, const T* y, int R, int N,
                                  int rows_per_chunk, int act, T alpha, unsigned short* half,
                                  int fuse) {
    int j = blockIdx.x * TILE_W + threadIdx.x;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(R, r0 + rows_per_chunk);
    T acc = 0;
    if (j < N) {
        for (int r = r0 + threadIdx.y; r < r1; r += TILE_H) {
            i64 k = (i64)r * N + j;
            T g = act_bwd(dy[k], y[k], act, alpha);
            da[k] = g;
            if (fuse) store_half(half, k, g);
            acc += g;
        }
    }
    T s = tile_col_sum(acc);
    if (threadIdx.y == 0 && j < N) dbpart[(i64)blockIdx.y * N + j] = s;
}

// out[i] = scale * sum_{c < n_parts} part[c * n + i], in order c = 0, 1, ...; 1-D grid over i
template <class T>
__device__ void sum_partials_impl(T* out, const T* part, int n_parts, int n, T scale) {
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        T s = 0;
        for (int c = 0; c < n_parts; ++c) s += part[(i64)c * n + i];
        out[i] = scale * s;
    }
}

extern "C" __global__ void bias_act_fwd_f32(float* y, const float* b, long long R, int N, int act, float alpha, unsigned short* half, int fuse) {
    bias_act_fwd_impl(y, b, R, N, act, alpha, half, fuse);
}
extern "C" __global__ void bias_act_fwd_f64(double* y, const double* b, long long R, int N, int act, double alpha, unsigned short* half, int fuse) {
    bias_act_fwd_impl(y, b, R, N, act, alpha, half, fuse);
}
extern "C" __global__ void act_bias_bwd_f32(float* da, float* dbpart, const float* dy, const float* y, int R, int N, int rows_per_chunk, int act, float alpha, unsigned short* half, int fuse) {
    act_bias_bwd_impl(da, dbpart, dy, y, R, N, rows_per_chunk, act, alpha, half, fuse);
}
extern "C" __global__ void act_bias_bwd_f64(double* da, double* dbpart, const double* dy, const double* y, int R, int N, int rows_per_chunk, int act, double alpha, unsigned short* half, int fuse) {
    act_bias_bwd_impl(da, dbpart, dy, y, R, N, rows_per_chunk, act, alpha, half, fuse);
}
extern "C" __global__ void sum_partials_f32(float* out, const float* part, int n_parts, int n, float scale) {
    sum_partials_impl(out, part, n_parts, n, scale);
}
extern "C" __global__ void sum_partials_f64(double* out, const double* part, int n_parts, int n, double scale) {
    sum_partials_impl(out, part, n_parts, n, scale);
}
