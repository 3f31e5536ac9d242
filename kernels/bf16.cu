// bf16.cu: operands of the bfloat16 products (precision="bf16"; the products themselves are
// cublasGemmEx with bf16 inputs, float32 outputs and float32 compute: fastvae/backends/cuda/bf16.py).
//
//   to_bf16   dst (n,) bf16 bits (uint16) <- src (n,) float32, rounded to nearest-even
//
// Written on the bits (no cuda_bf16.h) so that the emulator in tests/ compiles it too, and
// so that it is exactly fastvae/backends/reference_bf16.py's rounding: NaN stays a quiet NaN
// of the same sign, finite values past the largest bf16 become infinite.
#include "common.cuh"

extern "C" __global__ void to_bf16_f32(unsigned short* dst, const float* src, long long n) {
    const u32* u = (const u32*)src;
    for (i64 i = grid_start(); i < n; i += grid_stride()) dst[i] = bf16_bits(u[i]);
}
