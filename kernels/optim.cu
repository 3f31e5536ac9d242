// optim.cu: one fused update over the flat parameter buffer per step, and the gradient norm.
//
//   adam_step       p, m, v, g (P,): Adam (L2 decay into the gradient) or AdamW (decoupled)
//   sgd_step        p, buf, g (P,): SGD with optional (Nesterov) momentum, torch semantics
//   average_step    avg, p (P,): avg += weight * (p - avg), the weights' moving average
//   sq_norm_partial part (n_blocks,) float64 = per-block sums of g^2
//   clip_scale      part -> norm[0] = sqrt(sum), scale (1,) = min(1, clip / (norm + 1e-6)),
//                   or NaN when the norm is not finite, then also norm[1] += 1 (a count of
//                   skipped updates that the host reads when it checks); stays on the device
//
// The updates multiply the gradient by grad_scale * scale[0]; a NaN scale[0] (a non-finite
// gradient norm under clipping) skips the update: parameters and moments stay as they
// were, without the host having to look.
//
// Step-dependent scalars (bias corrections, the first-step flag) are computed on the host,
// where the step count lives.  Moments below MOMENT_FLUSH (fastvae/backends/codes.py, passed as
// a -D option) are stored as zero, as in reference.py: a moment that decays into denormals
// is worthless and slow.
#include "common.cuh"

#ifndef MOMENT_FLUSH
#error "MOMENT_FLUSH must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

// Adam: shrink = 1, l2 = weight decay.  AdamW: shrink = 1 - lr * wd, l2 = 0.
template <class T>
__device__ void adam_step_impl(T* p, T* m, T* v, const T* g, i64 n, T step_size,
                               T inv_sqrt_bc2, T beta1, T beta2, T eps, T l2, T shrink,
                               T grad_scale, const double* scale) {
    const T tiny = T(MOMENT_FLUSH);
    if (!(scale[0] == scale[0])) return;  // NaN: a non-finite norm, skip the update
    grad_scale *= (T)scale[0];
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        T pi = p[i] * shrink;
        T gi = g[i] * grad_scale + l2 * pi;
        T mi = beta1 * m[i] + (T(1) - beta1) * gi;
        T vi = beta2 * v[i] + (T(1) - beta2) * gi * gi;
        mi = vabs(mi) >= tiny ? mi : T(0);
        vi = vi >= tiny ? vi : T(0);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (vsqrt(vi) * inv_sqrt_bc2 + eps);
    }
}

template <class T>
__device__ void sgd_step_impl(T* p, T* buf, const T* g, i64 n, T lr, T momentum,
                              T weight_decay, int nesterov, int first, T grad_scale,
                              const double* scale) {
    const T tiny = T(MOMENT_FLUSH);
    if (!(scale[0] == scale[0])) return;  // NaN: a non-finite norm, skip the update
    grad_scale *= (T)scale[0];
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        T gi = g[i] * grad_scale + weight_decay * p[i];
        if (momentum != T(0)) {
            T bi = first ? gi : momentum * buf[i] + gi;
            bi = vabs(bi) >= tiny ? bi : T(0);
            buf[i] = bi;
            gi = nesterov ? gi + momentum * bi : bi;
        }
        p[i] -= lr * gi;
    }
}

template <class T>
__device__ void average_step_impl(T* avg, const T* p, i64 n, T weight) {
    for (i64 i = grid_start(); i < n; i += grid_stride()) avg[i] += weight * (p[i] - avg[i]);
}

template <class T>
__device__ void sq_norm_partial_impl(double* part, const T* g, i64 n) {
    double s = 0;
    for (i64 i = grid_start(); i < n; i += grid_stride()) {
        double v = (double)g[i];
        s += v * v;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// One thread: the partial sums in a fixed order (deterministic), then the norm and scale.
__device__ void clip_scale_impl(double* scale, double* norm, const double* part, int n_parts,
                                double clip) {
    if (grid_start() != 0) return;
    double s = 0;
    for (int i = 0; i < n_parts; ++i) s += part[i];
    double nrm = sqrt(s);
    norm[0] = nrm;
    if (nrm - nrm == 0) {  // finite (NaN and inf fail), without isfinite
        double r = clip / (nrm + 1e-6);
        scale[0] = r < 1 ? r : 1;
    } else {
        scale[0] = nrm - nrm;  // NaN
        norm[1] += 1;
    }
}

extern "C" __global__ void adam_step_f32(float* p, float* m, float* v, const float* g, long long n, float step_size, float inv_sqrt_bc2, float beta1, float beta2, float eps, float l2, float shrink, float grad_scale, const double* scale) {
    adam_step_impl(p, m, v, g, n, step_size, inv_sqrt_bc2, beta1, beta2, eps, l2, shrink, grad_scale, scale);
}
extern "C" __global__ void adam_step_f64(double* p, double* m, double* v, const double* g, long long n, double step_size, double inv_sqrt_bc2, double beta1, double beta2, double eps, double l2, double shrink, double grad_scale, const double* scale) {
    adam_step_impl(p, m, v, g, n, step_size, inv_sqrt_bc2, beta1, beta2, eps, l2, shrink, grad_scale, scale);
}
extern "C" __global__ void sgd_step_f32(float* p, float* buf, const float* g, long long n, float lr, float momentum, float weight_decay, int nesterov, int first, float grad_scale, const double* scale) {
    sgd_step_impl(p, buf, g, n, lr, momentum, weight_decay, nesterov, first, grad_scale, scale);
}
extern "C" __global__ void sgd_step_f64(double* p, double* buf, const double* g, long long n, double lr, double momentum, double weight_decay, int nesterov, int first, double grad_scale, const double* scale) {
    sgd_step_impl(p, buf, g, n, lr, momentum, weight_decay, nesterov, first, grad_scale, scale);
}
extern "C" __global__ void average_step_f32(float* avg, const float* p, long long n, float weight) {
    average_step_impl(avg, p, n, weight);
}
extern "C" __global__ void average_step_f64(double* avg, const double* p, long long n, double weight) {
    average_step_impl(avg, p, n, weight);
}
extern "C" __global__ void clip_scale_f64(double* scale, double* norm, const double* part, int n_parts, double clip) {
    clip_scale_impl(scale, norm, part, n_parts, clip);
}
extern "C" __global__ void clip_scale_f32(double* scale, double* norm, const double* part, int n_parts, double clip) {
    clip_scale_impl(scale, norm, part, n_parts, clip);
}
extern "C" __global__ void sq_norm_partial_f32(double* part, const float* g, long long n) {
    sq_norm_partial_impl(part, g, n);
}
extern "C" __global__ void sq_norm_partial_f64(double* part, const double* g, long long n) {
    sq_norm_partial_impl(part, g, n);
}
