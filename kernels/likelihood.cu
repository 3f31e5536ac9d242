// likelihood.cu: the reconstruction loss and its gradient in one pass, and the step's
// loss statistics, reduced on the device so that nobody waits for them.
//
//   likelihood_fwd_bwd  out (R, D) logits or means (bias added in place), x (B, D) ->
//                       loss per row (partial over column tiles), dout (R, D),
//                       db and dlogscale partial sums over row chunks
//   likelihood_fwd      the same loss per row, and nothing else (evaluation)
//   logscale_fwd/bwd    ls (S,) = floor + softplus(raw - floor), a softly floored learned
//                       log-scale; draw = dls * sigmoid(raw - floor)
//   loss_stats          loss_rows (R,), kl (B,), kl_dim (Z,), obj_rows (B,) or none ->
//                       stats (3,) = [loss, recon mean, kl mean] (float64),
//                       acc (3,) += weight * stats
//   likelihood_bwd      the gradient alone of biased logits/means, each row weighted
//                       (importance-weighted objectives: the weights come after the loss)
//
// Decoder row r reconstructs x[r % B].  Launch shape of likelihood_fwd_bwd: grid
// (ceil(D / TILE_W), n_chunks), block (TILE_W, TILE_H): each warp handles one row of a
// 32-column tile at a time, its row loss is a warp reduction, and column sums are reduced
// over the block's warps into row chunk c's partial row.  The likelihood codes (LIK_*) come
// from fastvae/backends/codes.py as -D options.
#include "common.cuh"

#if !defined(LIK_BERNOULLI) || !defined(LIK_GAUSSIAN)
#error "LIK_* must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

// rowpart (n_tiles, R); dbpart, lspart (n_chunks, D).  logscale (1,) when shared, else
// (D,); lspart is written only when learn_scale.  grad_scale is 1 / (L * B).  With
// GRAD false only rowpart (and the bias added to out) is written: dout, dbpart and lspart
// are not touched and may be null.
template <class T, bool GRAD>
__device__ void likelihood_impl(T* dout, T* rowpart, T* dbpart, T* lspart, T* out,
                                        const T* b, const T* x, const T* logscale, int R,
                                        int B, int D, int rows_per_chunk, int kind,
                                        int learn_scale, int shared_scale, T grad_scale,
                                        unsigned short* half, int fuse) {
    int j = blockIdx.x * TILE_W + threadIdx.x;
    bool valid = j < D;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(R, r0 + rows_per_chunk);
    const T half_log_2pi = T(0.91893853320467274178);
    T ls = 0, iv = 0, bj = 0;
    if (valid) {
        bj = b[j];
        if (kind == LIK_GAUSSIAN) {
            ls = logscale[shared_scale ? 0 : j];
            iv = vexp(T(-2) * ls);
        }
    }
    T col = 0, col_ls = 0;
    for (int r = r0 + threadIdx.y; r < r1; r += TILE_H) {
        T c = 0;
        if (valid) {
            i64 k = (i64)r * D + j;
            T a = out[k] + bj;
            out[k] = a;
            T xv = x[(i64)(r % B) * D + j];
            T g;
            if (kind == LIK_BERNOULLI) {
                // softplus(a) - x a and sigmoid(a) share e = exp(-|a|)
                T e = vexp(-vabs(a));
                c = (a > T(0) ? a : T(0)) + vlog1p(e) - xv * a;
                T inv = T(1) / (T(1) + e);
                g = grad_scale * ((a >= T(0) ? inv : e * inv) - xv);
            } else {
                T d = a - xv;
                T q = d * d * iv;
                c = T(0.5) * q + ls + half_log_2pi;
                g = grad_scale * d * iv;
                col_ls += grad_scale * (T(1) - q);
            }
            if (GRAD) {
                dout[k] = g;
                if (fuse) store_half(half, k, g);  // (dout's bf16 bits, when asked)
                col += g;
            }
        }
        T row = warp_sum(c);
        if (threadIdx.x == 0) rowpart[(i64)blockIdx.x * R + r] = row;
    }
    if (!GRAD) return;  // uniform over the grid: no thread is left waiting at a barrier
    T s = tile_col_sum(col);
    if (threadIdx.y == 0 && valid) dbpart[(i64)blockIdx.y * D + j] = s;
    if (learn_scale) {  // uniform over the block, so the barrier inside is safe
        T sl = tile_col_sum(col_ls);
        if (threadIdx.y == 0 && valid) lspart[(i64)blockIdx.y * D + j] = sl;
    }
}

// One block (1-D, a multiple of 32 threads); sums in double whatever T is.
// kl_obj = sum_k max(kl_dim[k], free_bits) when free_bits > 0, else the kl mean;
// loss = recon + kl_coef * kl_obj.  weight 0 leaves acc alone (0 * NaN would not).
template <class T>
__device__ void loss_stats_impl(double* stats, double* acc, const T* loss_rows, const T* kl,
                                const T* kl_dim, const T* obj_rows, int R, int B, int Z,
                                int n_obj, double free_bits, double kl_coef, double weight) {
    double sr = 0, sk = 0, sf = 0, so = 0;
    for (int i = threadIdx.x; i < R; i += blockDim.x) sr += (double)loss_rows[i];
    for (int i = threadIdx.x; i < n_obj; i += blockDim.x) so += (double)obj_rows[i];
    for (int i = threadIdx.x; i < B; i += blockDim.x) sk += (double)kl[i];
    for (int i = threadIdx.x; i < Z; i += blockDim.x) {
        double v = (double)kl_dim[i];
        sf += v > free_bits ? v : free_bits;
    }
    sr = block_sum(sr);
    sk = block_sum(sk);
    sf = block_sum(sf);
    so = block_sum(so);
    if (threadIdx.x == 0) {
        double recon = sr / R, klm = sk / B;
        double loss = n_obj > 0 ? so / n_obj : recon + kl_coef * (free_bits > 0 ? sf : klm);
        stats[0] = loss;
        stats[1] = recon;
        stats[2] = klm;
        if (weight != 0) {
            acc[0] += weight * loss;
            acc[1] += weight * recon;
            acc[2] += weight * klm;
        }
    }
}

// dout = scale * row_scale[r] * d loss_r / d out for out with its bias already added; the
// column sums go to dbpart (n_chunks, D), the log-scale gradient to lspart like
// likelihood_impl.  Launch shape as likelihood_fwd_bwd.
template <class T>
__device__ void likelihood_bwd_impl(T* dout, T* dbpart, T* lspart, const T* out, const T* x,
                                    const T* logscale, const T* row_scale, int R, int B,
                                    int D, int rows_per_chunk, int kind, int learn_scale,
                                    int shared_scale, T scale) {
    int j = blockIdx.x * TILE_W + threadIdx.x;
    bool valid = j < D;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(R, r0 + rows_per_chunk);
    T iv = 0;
    if (valid && kind == LIK_GAUSSIAN) iv = vexp(T(-2) * logscale[shared_scale ? 0 : j]);
    T col = 0, col_ls = 0;
    for (int r = r0 + threadIdx.y; r < r1; r += TILE_H) {
        if (!valid) continue;
        i64 k = (i64)r * D + j;
        T a = out[k], xv = x[(i64)(r % B) * D + j], w = scale * row_scale[r], g;
        if (kind == LIK_BERNOULLI) {
            T e = vexp(-vabs(a));
            T inv = T(1) / (T(1) + e);
            g = w * ((a >= T(0) ? inv : e * inv) - xv);
        } else {
            T d = a - xv;
            g = w * d * iv;
            col_ls += w * (T(1) - d * d * iv);
        }
        dout[k] = g;
        col += g;
    }
    T s = tile_col_sum(col);
    if (threadIdx.y == 0 && valid) dbpart[(i64)blockIdx.y * D + j] = s;
    if (learn_scale) {  // uniform over the block, so the barrier inside is safe
        T sl = tile_col_sum(col_ls);
        if (threadIdx.y == 0 && valid) lspart[(i64)blockIdx.y * D + j] = sl;
    }
}

// one thread per entry of ls (S = 1 or D): a handful of values, once per step
template <class T>
__device__ void logscale_fwd_impl(T* ls, const T* raw, int S, T ls_floor) {
    for (i64 i = grid_start(); i < S; i += grid_stride()) {
        T t = raw[i] - ls_floor;
        ls[i] = ls_floor + (t > T(0) ? t : T(0)) + vlog1p(vexp(-vabs(t)));
    }
}

template <class T>
__device__ void logscale_bwd_impl(T* draw, const T* dls, const T* raw, int S, T ls_floor) {
    for (i64 i = grid_start(); i < S; i += grid_stride()) {
        T t = raw[i] - ls_floor;
        T e = vexp(-vabs(t));
        draw[i] = dls[i] * (t >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e));
    }
}

extern "C" __global__ void likelihood_fwd_bwd_f32(float* dout, float* rowpart, float* dbpart, float* lspart, float* out, const float* b, const float* x, const float* logscale, int R, int B, int D, int rows_per_chunk, int kind, int learn_scale, int shared_scale, float grad_scale, unsigned short* half, int fuse) {
    likelihood_impl<float, true>(dout, rowpart, dbpart, lspart, out, b, x, logscale, R, B, D, rows_per_chunk, kind, learn_scale, shared_scale, grad_scale, half, fuse);
}
extern "C" __global__ void likelihood_fwd_bwd_f64(double* dout, double* rowpart, double* dbpart, double* lspart, double* out, const double* b, const double* x, const double* logscale, int R, int B, int D, int rows_per_chunk, int kind, int learn_scale, int shared_scale, double grad_scale, unsigned short* half, int fuse) {
    likelihood_impl<double, true>(dout, rowpart, dbpart, lspart, out, b, x, logscale, R, B, D, rows_per_chunk, kind, learn_scale, shared_scale, grad_scale, half, fuse);
}
extern "C" __global__ void likelihood_fwd_f32(float* rowpart, float* out, const float* b, const float* x, const float* logscale, int R, int B, int D, int rows_per_chunk, int kind, int shared_scale) {
    likelihood_impl<float, false>(nullptr, rowpart, nullptr, nullptr, out, b, x, logscale, R, B, D, rows_per_chunk, kind, 0, shared_scale, 0.0f, nullptr, 0);
}
extern "C" __global__ void likelihood_fwd_f64(double* rowpart, double* out, const double* b, const double* x, const double* logscale, int R, int B, int D, int rows_per_chunk, int kind, int shared_scale) {
    likelihood_impl<double, false>(nullptr, rowpart, nullptr, nullptr, out, b, x, logscale, R, B, D, rows_per_chunk, kind, 0, shared_scale, 0.0, nullptr, 0);
}
extern "C" __global__ void logscale_fwd_f32(float* ls, const float* raw, int S, float ls_floor) {
    logscale_fwd_impl(ls, raw, S, ls_floor);
}
extern "C" __global__ void logscale_fwd_f64(double* ls, const double* raw, int S, double ls_floor) {
    logscale_fwd_impl(ls, raw, S, ls_floor);
}
extern "C" __global__ void logscale_bwd_f32(float* draw, const float* dls, const float* raw, int S, float ls_floor) {
    logscale_bwd_impl(draw, dls, raw, S, ls_floor);
}
extern "C" __global__ void logscale_bwd_f64(double* draw, const double* dls, const double* raw, int S, double ls_floor) {
    logscale_bwd_impl(draw, dls, raw, S, ls_floor);
}
extern "C" __global__ void loss_stats_f32(double* stats, double* acc, const float* loss_rows, const float* kl, const float* kl_dim, const float* obj_rows, int R, int B, int Z, int n_obj, double free_bits, double kl_coef, double weight) {
    loss_stats_impl(stats, acc, loss_rows, kl, kl_dim, obj_rows, R, B, Z, n_obj, free_bits, kl_coef, weight);
}
extern "C" __global__ void loss_stats_f64(double* stats, double* acc, const double* loss_rows, const double* kl, const double* kl_dim, const double* obj_rows, int R, int B, int Z, int n_obj, double free_bits, double kl_coef, double weight) {
    loss_stats_impl(stats, acc, loss_rows, kl, kl_dim, obj_rows, R, B, Z, n_obj, free_bits, kl_coef, weight);
}
extern "C" __global__ void likelihood_bwd_f32(float* dout, float* dbpart, float* lspart, const float* out, const float* x, const float* logscale, const float* row_scale, int R, int B, int D, int rows_per_chunk, int kind, int learn_scale, int shared_scale, float scale) {
    likelihood_bwd_impl(dout, dbpart, lspart, out, x, logscale, row_scale, R, B, D, rows_per_chunk, kind, learn_scale, shared_scale, scale);
}
extern "C" __global__ void likelihood_bwd_f64(double* dout, double* dbpart, double* lspart, const double* out, const double* x, const double* logscale, const double* row_scale, int R, int B, int D, int rows_per_chunk, int kind, int learn_scale, int shared_scale, double scale) {
    likelihood_bwd_impl(dout, dbpart, lspart, out, x, logscale, row_scale, R, B, D, rows_per_chunk, kind, learn_scale, shared_scale, scale);
}
