// data.cu: batches on the device.
//
//   check_data   counts (2,) += [non-finite entries, finite entries outside [lo, hi]] of x (n,)
//   gather_rows  out (B, D) = scale * X[idx[r], :], converting X's dtype (uint8 images stay
//                uint8 on the device, a quarter of the memory, and are scaled per batch)
//
// gather_rows is exported per (output, input) pair: f32_u8, f32_f32, f64_u8, f64_f64, ...
#include "common.cuh"

template <class T>
__device__ void check_data_impl(u64* counts, const T* x, i64 n, T lo, T hi) {
    u64 bad = 0, out = 0;
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        T v = x[i];
        if (!(v - v == T(0))) bad += 1;  // NaN and +-inf, without relying on isfinite
        else if (v < lo || v > hi) out += 1;
    }
    // integer counts: the order of the atomic additions cannot change the result
    if (bad) atomicAdd(&counts[0], bad);
    if (out) atomicAdd(&counts[1], out);
}

template <class T, class U>
__device__ void gather_rows_impl(T* out, const U* X, const i64* idx, int B, int D, T scale) {
    i64 n = (i64)B * D;
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        i64 r = i / D, j = i - r * D;
        out[i] = scale * (T)X[idx[r] * D + j];
    }
}

extern "C" __global__ void check_data_f32(unsigned long long* counts, const float* x, long long n, float lo, float hi) {
    check_data_impl(counts, x, n, lo, hi);
}
extern "C" __global__ void check_data_f64(unsigned long long* counts, const double* x, long long n, double lo, double hi) {
    check_data_impl(counts, x, n, lo, hi);
}
extern "C" __global__ void gather_rows_f32_u8(float* out, const unsigned char* X, const long long* idx, int B, int D, float scale) {
    gather_rows_impl(out, X, idx, B, D, scale);
}
extern "C" __global__ void gather_rows_f32_f32(float* out, const float* X, const long long* idx, int B, int D, float scale) {
    gather_rows_impl(out, X, idx, B, D, scale);
}
extern "C" __global__ void gather_rows_f32_f64(float* out, const double* X, const long long* idx, int B, int D, float scale) {
    gather_rows_impl(out, X, idx, B, D, scale);
}
extern "C" __global__ void gather_rows_f64_u8(double* out, const unsigned char* X, const long long* idx, int B, int D, double scale) {
    gather_rows_impl(out, X, idx, B, D, scale);
}
extern "C" __global__ void gather_rows_f64_f32(double* out, const float* X, const long long* idx, int B, int D, double scale) {
    gather_rows_impl(out, X, idx, B, D, scale);
}
extern "C" __global__ void gather_rows_f64_f64(double* out, const double* X, const long long* idx, int B, int D, double scale) {
    gather_rows_impl(out, X, idx, B, D, scale);
}
