// reparam.cu: the sampling step with its analytic KL, forward and backward, and the noise.
//
// Shapes: B rows, Z latent dims, L samples per row, R = L * B; sample l of row i is row
// l * B + i of eps and z.  head (B, 2Z) = [mu | raw logvar] before the bias.
//
//   reparam_kl_fwd   head, hb, eps -> mu, logvar (clamped), sigma, z; KL per row (partial
//                    over latent tiles) and per dimension (partial over row chunks)
//   reparam_kl_bwd   dz, saved eps/mu/sigma/raw logvar -> dhead, dhb partial sums
//   normal_eps       eps (L, B, Z) <- N(0, 1), counter-based (Philox4x32-10, Box-Muller
//                    in double, or in float with polynomials for float eps):
//                    element first + l*Z + d of the stream of counter row0 + b
//   iwae_fwd         loss rows, z, eps, logvar -> log weights, normalised weights, IWAE
//                    loss per datapoint (one thread per datapoint; logsumexp in double)
//   reparam_iw_bwd   dz, eps, z, sigma, raw logvar, weights -> dhead, dhb partial sums
//                    under IWAE or DReG (launch shape of reparam_kl_bwd)
//
// Launch shape of the first two: grid (ceil(Z / TILE_W), n_chunks), block (TILE_W, TILE_H);
// rows [c * rows_per_chunk, +rows_per_chunk) go to chunk c.  With one latent tile klpart is
// kl itself; with one chunk the column partials are the outputs (and col_scale finishes
// them); otherwise sum_partials (dense.cu) completes them.
#include "common.cuh"

#if !defined(NOISE_LOG0) || !defined(NOISE_LOG1) || !defined(NOISE_LOG2) || !defined(NOISE_LOG3) || \
    !defined(NOISE_LOG4) || !defined(NOISE_SIN0) || !defined(NOISE_SIN1) || !defined(NOISE_SIN2) || \
    !defined(NOISE_SIN3) || !defined(NOISE_COS0) || !defined(NOISE_COS1) || !defined(NOISE_COS2) || \
    !defined(NOISE_COS3) || !defined(NOISE_LN2) || !defined(NOISE_PIO2) || !defined(NOISE_SQRT1_2) || \
    !defined(NOISE_SQRT2)
#error "NOISE_* must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

template <class T>
__device__ void reparam_kl_fwd_impl(T* mu, T* logvar, T* sigma, T* z, T* klpart, T* kldpart,
                                    T* head, const T* hb, const T* eps, int B, int Z, int L,
                                    int rows_per_chunk, T lv_min, T lv_max, T col_scale) {
    int k = blockIdx.x * TILE_W + threadIdx.x;
    bool valid = k < Z;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(B, r0 + rows_per_chunk);
    T col = 0;
    // the trip count depends on threadIdx.y only, so every lane of a warp takes part in
    // each warp_sum
    for (int i = r0 + threadIdx.y; i < r1; i += TILE_H) {
        T t = 0;
        if (valid) {
            i64 h = (i64)i * 2 * Z + k;
            T m = head[h] + hb[k];
            T raw = head[h + Z] + hb[Z + k];
            head[h] = m;
            head[h + Z] = raw;  // kept unclamped: the clamp's gradient needs it
            T lv = raw < lv_min ? lv_min : (raw > lv_max ? lv_max : raw);
            T s = vexp(T(0.5) * lv);
            i64 o = (i64)i * Z + k;
            mu[o] = m;
            logvar[o] = lv;
            sigma[o] = s;
            for (int l = 0; l < L; ++l) {
                i64 q = ((i64)l * B + i) * Z + k;
                z[q] = m + s * eps[q];
            }
            // both terms >= 0, so nothing cancels near collapse; past the clamp the KL goes
            // on linearly with its slope at the edge (reference.reparam_kl_fwd)
            T em1 = vexpm1(lv);
            t = T(0.5) * (m * m + (em1 - lv)) + T(0.5) * em1 * (raw - lv);
            col += t;
        }
        T row = warp_sum(t);
        if (threadIdx.x == 0) klpart[(i64)blockIdx.x * B + i] = row;
    }
    T s = tile_col_sum(col);
    if (threadIdx.y == 0 && valid) kldpart[(i64)blockIdx.y * Z + k] = col_scale * s;
}

// The head's bias gradient of this block's rows, column k: the tile's column sums of the mu
// and logvar halves into dhbpart's row blockIdx.y (n_chunks, 2Z).  Every thread calls it.
template <class T>
__device__ void head_bias_partials(T* dhbpart, T acc_mu, T acc_lv, int Z, int k, bool valid) {
    T sm = tile_col_sum(acc_mu);
    T sl = tile_col_sum(acc_lv);
    if (threadIdx.y == 0 && valid) {
        dhbpart[(i64)blockIdx.y * 2 * Z + k] = sm;
        dhbpart[(i64)blockIdx.y * 2 * Z + Z + k] = sl;
    }
}

// kl_weight = beta / B; a dimension whose batch-mean KL (kl_dim) is not above free_bits
// (when free_bits > 0) gets no KL gradient.  Outside [lv_min, lv_max] the sample path's
// logvar gradient is zero and the KL's is its slope at the edge.  dhbpart (n_chunks, 2Z).
template <class T>
__device__ void reparam_kl_bwd_impl(T* dhead, T* dhbpart, const T* dz, const T* eps,
                                    const T* mu, const T* sigma, const T* head, const T* kl_dim,
                                    int B, int Z, int L, int rows_per_chunk, T kl_weight,
                                    T free_bits, T lv_min, T lv_max) {
    int k = blockIdx.x * TILE_W + threadIdx.x;
    bool valid = k < Z;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(B, r0 + rows_per_chunk);
    T acc_mu = 0, acc_lv = 0;
    if (valid) {
        T w = (free_bits <= T(0) || kl_dim[k] > free_bits) ? kl_weight : T(0);
        for (int i = r0 + threadIdx.y; i < r1; i += TILE_H) {
            T gm = 0, ge = 0;
            for (int l = 0; l < L; ++l) {
                i64 q = ((i64)l * B + i) * Z + k;
                gm += dz[q];
                ge += dz[q] * eps[q];
            }
            i64 o = (i64)i * Z + k;
            T dmu = gm + w * mu[o];
            i64 h = (i64)i * 2 * Z + k;
            T raw = head[h + Z];
            // the clamp cuts the sample path, not the KL's pull back into the range
            bool inside = raw >= lv_min && raw <= lv_max;
            T lv = raw < lv_min ? lv_min : (raw > lv_max ? lv_max : raw);
            T dlv = (inside ? T(0.5) * sigma[o] * ge : T(0)) + w * T(0.5) * vexpm1(lv);
            dhead[h] = dmu;
            dhead[h + Z] = dlv;
            acc_mu += dmu;
            acc_lv += dlv;
        }
    }
    head_bias_partials(dhbpart, acc_mu, acc_lv, Z, k, valid);
}

// The Box-Muller pair of two Philox words (reference.normal_eps): in double for double
// noise, rounded at the end; in float for float noise, as reference.box_muller_f32 does it,
// every operation a rounded intrinsic (__fmul_rn, ...) so that no multiply and add fuse
// into an FMA (what -fmad=false would do for the whole file): the same bits as the CPU.
__device__ __forceinline__ void box_muller(u32 w1, u32 w2, double* a, double* b) {
    const double two_pi = 6.283185307179586, inv32 = 2.3283064365386963e-10;
    double rad = sqrt(-2.0 * log(((double)w1 + 1.0) * inv32));
    double ang = two_pi * (double)w2 * inv32;
    *a = rad * cos(ang);
    *b = rad * sin(ang);
}

__device__ __forceinline__ void box_muller(u32 w1, u32 w2, float* a, float* b) {
    int bits = __float_as_int(__ll2float_rn((long long)w1 + 1));  // u = m 2^e, m in [1, 2)
    float e = __int2float_rn((bits >> 23) - 159);                  // e - 32
    float m = __int_as_float((bits & 0x7FFFFF) | 0x3F800000);
    if (m > NOISE_SQRT2) {
        m = __fmul_rn(m, 0.5f);
        e = __fadd_rn(e, 1.0f);
    }
    float t = __fdiv_rn(__fsub_rn(m, 1.0f), __fadd_rn(m, 1.0f));
    float t2 = __fmul_rn(t, t);
    float pl = __fadd_rn(NOISE_LOG3, __fmul_rn(t2, NOISE_LOG4));
    pl = __fadd_rn(NOISE_LOG2, __fmul_rn(t2, pl));
    pl = __fadd_rn(NOISE_LOG1, __fmul_rn(t2, pl));
    pl = __fadd_rn(NOISE_LOG0, __fmul_rn(t2, pl));
    float ln = __fadd_rn(__fmul_rn(t, pl), __fmul_rn(e, NOISE_LN2));
    float r = __fsqrt_rn(__fmul_rn(-2.0f, ln));
    int k = (int)(w2 >> 30);
    float f = __fmul_rn(__int2float_rn((int)(w2 & 0x3FFFFFFFu)), 9.313225746154785e-10f);  // 2^-30
    float x = __fmul_rn(__fsub_rn(f, 0.5f), NOISE_PIO2);
    float x2 = __fmul_rn(x, x);
    float ps = __fadd_rn(NOISE_SIN2, __fmul_rn(x2, NOISE_SIN3));
    float pc = __fadd_rn(NOISE_COS2, __fmul_rn(x2, NOISE_COS3));
    ps = __fadd_rn(NOISE_SIN1, __fmul_rn(x2, ps));
    pc = __fadd_rn(NOISE_COS1, __fmul_rn(x2, pc));
    ps = __fadd_rn(NOISE_SIN0, __fmul_rn(x2, ps));
    pc = __fadd_rn(NOISE_COS0, __fmul_rn(x2, pc));
    float sn = __fadd_rn(x, __fmul_rn(x, __fmul_rn(x2, ps)));
    float cs = __fadd_rn(1.0f, __fmul_rn(x2, pc));
    float c = __fmul_rn(__fsub_rn(cs, sn), NOISE_SQRT1_2);  // cos(pi/4 + x)
    float s = __fmul_rn(__fadd_rn(cs, sn), NOISE_SQRT1_2);  // sin(pi/4 + x)
    float ca = k == 0 ? c : (k == 1 ? -s : (k == 2 ? -c : s));
    float sa = k == 0 ? s : (k == 1 ? c : (k == 2 ? -s : -c));
    *a = __fmul_rn(r, ca);
    *b = __fmul_rn(r, sa);
}

// eps (L, B, Z): eps[l, b, d] is element first + l*Z + d of the stream of counter row0 + b:
// word e % 4 of philox4x32_10((e/4 lo, e/4 hi, c lo, c hi), key), words (0, 1) and (2, 3)
// each a Box-Muller pair (box_muller).  One thread per (row, quad of elements).
template <class T>
__device__ void normal_eps_impl(T* eps, int L, int B, int Z, i64 row0, i64 first, u32 key0,
                                u32 key1) {
    i64 n = (i64)L * Z, q0 = first / 4, nq = (first + n + 3) / 4 - q0;
    for (i64 t = grid_start(); t < (i64)B * nq; t += grid_stride()) {
        i64 b = t / nq, q = q0 + t % nq;
        u64 c = (u64)(row0 + b);
        u32x4 ctr = {{(u32)q, (u32)((u64)q >> 32), (u32)c, (u32)(c >> 32)}};
        u32x4 r = philox4x32_10(ctr, key0, key1);
        for (int p = 0; p < 2; ++p) {
            T pair[2];
            box_muller(r.v[2 * p], r.v[2 * p + 1], &pair[0], &pair[1]);
            for (int s = 0; s < 2; ++s) {
                i64 j = 4 * q + 2 * p + s - first;  // l * Z + d
                if (j >= 0 && j < n) eps[((j / Z) * B + b) * Z + j % Z] = pair[s];
            }
        }
    }
}

// One thread per datapoint i: log w of its K rows (l * B + i), then the logsumexp with the
// maximum subtracted, in double.
template <class T>
__device__ void iwae_fwd_impl(T* logw, T* wnorm, T* loss_b, const T* loss_rows, const T* z,
                              const T* eps, const T* logvar, int B, int Z, int K) {
    for (i64 i = grid_start(); i < B; i += grid_stride()) {
        T slv = 0;
        for (int k = 0; k < Z; ++k) slv += logvar[i * Z + k];
        double m = 0;  // the largest log weight, set by the first sample (no inf constant:
                       // NVRTC has no math.h)
        for (int l = 0; l < K; ++l) {
            i64 r = (i64)l * B + i;
            T acc = T(0.5) * slv - loss_rows[r];
            for (int k = 0; k < Z; ++k) {
                T e = eps[r * Z + k], zz = z[r * Z + k];
                acc += T(0.5) * (e * e - zz * zz);
            }
            logw[r] = acc;
            m = (l == 0 || (double)acc > m) ? (double)acc : m;
        }
        double tot = 0;
        for (int l = 0; l < K; ++l) tot += exp((double)logw[(i64)l * B + i] - m);
        double lse = m + log(tot);
        for (int l = 0; l < K; ++l) {
            i64 r = (i64)l * B + i;
            wnorm[r] = (T)exp((double)logw[r] - lse);
        }
        loss_b[i] = (T)(-(lse - log((double)K)));
    }
}

// reference.reparam_iw_bwd, tiled like reparam_kl_bwd; dhbpart (n_chunks, 2Z).
template <class T>
__device__ void reparam_iw_bwd_impl(T* dhead, T* dhbpart, const T* dz, const T* eps,
                                    const T* z, const T* sigma, const T* head,
                                    const T* wnorm, int B, int Z, int K, int rows_per_chunk,
                                    T inv_b, int dreg, T lv_min, T lv_max) {
    int k = blockIdx.x * TILE_W + threadIdx.x;
    bool valid = k < Z;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(B, r0 + rows_per_chunk);
    T acc_mu = 0, acc_lv = 0;
    if (valid) {
        for (int i = r0 + threadIdx.y; i < r1; i += TILE_H) {
            T sg = sigma[(i64)i * Z + k], dmu = 0, dlv = 0;
            for (int l = 0; l < K; ++l) {
                i64 r = (i64)l * B + i, q = r * Z + k;
                T w = wnorm[r], e = eps[q];
                if (dreg) {
                    T ww = w * w * inv_b;
                    dmu += w * dz[q] + ww * (z[q] - e / sg);
                    dlv += w * dz[q] * e * T(0.5) * sg + ww * T(0.5) * (z[q] * e * sg - e * e);
                } else {
                    T g = dz[q] + w * z[q] * inv_b;
                    dmu += g;
                    dlv += g * e * T(0.5) * sg;
                }
            }
            if (!dreg) dlv -= T(0.5) * inv_b;  // log q's own logvar / 2
            i64 h = (i64)i * 2 * Z + k;
            T raw = head[h + Z];
            if (raw < lv_min || raw > lv_max) dlv = T(0);
            dhead[h] = dmu;
            dhead[h + Z] = dlv;
            acc_mu += dmu;
            acc_lv += dlv;
        }
    }
    head_bias_partials(dhbpart, acc_mu, acc_lv, Z, k, valid);
}

extern "C" __global__ void reparam_kl_fwd_f32(float* mu, float* logvar, float* sigma, float* z, float* klpart, float* kldpart, float* head, const float* hb, const float* eps, int B, int Z, int L, int rows_per_chunk, float lv_min, float lv_max, float col_scale) {
    reparam_kl_fwd_impl(mu, logvar, sigma, z, klpart, kldpart, head, hb, eps, B, Z, L, rows_per_chunk, lv_min, lv_max, col_scale);
}
extern "C" __global__ void reparam_kl_fwd_f64(double* mu, double* logvar, double* sigma, double* z, double* klpart, double* kldpart, double* head, const double* hb, const double* eps, int B, int Z, int L, int rows_per_chunk, double lv_min, double lv_max, double col_scale) {
    reparam_kl_fwd_impl(mu, logvar, sigma, z, klpart, kldpart, head, hb, eps, B, Z, L, rows_per_chunk, lv_min, lv_max, col_scale);
}
extern "C" __global__ void reparam_kl_bwd_f32(float* dhead, float* dhbpart, const float* dz, const float* eps, const float* mu, const float* sigma, const float* head, const float* kl_dim, int B, int Z, int L, int rows_per_chunk, float kl_weight, float free_bits, float lv_min, float lv_max) {
    reparam_kl_bwd_impl(dhead, dhbpart, dz, eps, mu, sigma, head, kl_dim, B, Z, L, rows_per_chunk, kl_weight, free_bits, lv_min, lv_max);
}
extern "C" __global__ void reparam_kl_bwd_f64(double* dhead, double* dhbpart, const double* dz, const double* eps, const double* mu, const double* sigma, const double* head, const double* kl_dim, int B, int Z, int L, int rows_per_chunk, double kl_weight, double free_bits, double lv_min, double lv_max) {
    reparam_kl_bwd_impl(dhead, dhbpart, dz, eps, mu, sigma, head, kl_dim, B, Z, L, rows_per_chunk, kl_weight, free_bits, lv_min, lv_max);
}
extern "C" __global__ void iwae_fwd_f32(float* logw, float* wnorm, float* loss_b, const float* loss_rows, const float* z, const float* eps, const float* logvar, int B, int Z, int K) {
    iwae_fwd_impl(logw, wnorm, loss_b, loss_rows, z, eps, logvar, B, Z, K);
}
extern "C" __global__ void reparam_iw_bwd_f32(float* dhead, float* dhbpart, const float* dz, const float* eps, const float* z, const float* sigma, const float* head, const float* wnorm, int B, int Z, int K, int rows_per_chunk, float inv_b, int dreg, float lv_min, float lv_max) {
    reparam_iw_bwd_impl(dhead, dhbpart, dz, eps, z, sigma, head, wnorm, B, Z, K, rows_per_chunk, inv_b, dreg, lv_min, lv_max);
}
extern "C" __global__ void iwae_fwd_f64(double* logw, double* wnorm, double* loss_b, const double* loss_rows, const double* z, const double* eps, const double* logvar, int B, int Z, int K) {
    iwae_fwd_impl(logw, wnorm, loss_b, loss_rows, z, eps, logvar, B, Z, K);
}
extern "C" __global__ void reparam_iw_bwd_f64(double* dhead, double* dhbpart, const double* dz, const double* eps, const double* z, const double* sigma, const double* head, const double* wnorm, int B, int Z, int K, int rows_per_chunk, double inv_b, int dreg, double lv_min, double lv_max) {
    reparam_iw_bwd_impl(dhead, dhbpart, dz, eps, z, sigma, head, wnorm, B, Z, K, rows_per_chunk, inv_b, dreg, lv_min, lv_max);
}
extern "C" __global__ void normal_eps_f32(float* eps, int L, int B, int Z, long long row0, long long first, unsigned int key0, unsigned int key1) {
    normal_eps_impl(eps, L, B, Z, row0, first, key0, key1);
}
extern "C" __global__ void normal_eps_f64(double* eps, int L, int B, int Z, long long row0, long long first, unsigned int key0, unsigned int key1) {
    normal_eps_impl(eps, L, B, Z, row0, first, key0, key1);
}
