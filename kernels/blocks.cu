// blocks.cu: the column-block models (contracts: fastvae/backends/reference_blocks.py).
//
//   blocks_fwd(_bwd), blocks_bwd (blocks_cells_impl); a ZINB column's two outputs are
//                     [a, inflation logit] (reference_blocks.py: a zero's two ways)
//                     out (R, P) decoder outputs (bias added in place unless ADD_BIAS is
//                     false), x (B, W) data rows -> rowpart (n_tiles, R) partial row losses
//                     over column tiles, and with GRAD dout (R, P) = w_r d loss / d out and
//                     dcell (R, D) = w_r d loss / d aux per cell (0 where a cell has no aux
//                     entry or is missing), w_r = scale (* row_scale[r] when given).
//                     Launch: grid (ceil(D / TILE_W), n_chunks), block (TILE_W, TILE_H):
//                     lane = data column, warps walk the rows of a chunk.  The launcher sums
//                     dout's and dcell's columns with act_bias_bwd's kernel (identity).
//   blocks_aux_sum    daux (A,) = the aux gradient of each entry: the column sums dcol of
//                     the columns that use it, or for an entry that depends on the
//                     condition group, its column's cells over the rows of that group (in
//                     row order).  One thread per entry.
//   encoder_input     xin (B, Dn): value / log1p / observed mask of x's columns src.
//   embed_fwd/bwd     the categorical codes' rows of the encoder's first W: h += rows;
//                     dWc = dh scattered into them (one thread per (column, unit): the
//                     categorical columns' row blocks are disjoint, so no two threads add
//                     into one place, and each adds its rows in row order).
//   decoder_input     zin (R, Z + C) = [z | conditions of x[r % B]].
//
// The tables cols (D, 6) [kind, first output, outputs, aux index, aux stride, adds the
// exposure] and meta (3,)
// [exposure column or -1, first condition column, condition groups or 0] are those of
// fastvae/core/columns.py.  A NaN cell is missing.  Cell math is in double whatever T is,
// as in the cpu backend: lgamma and digamma differences below are written out (the same
// formulas as fastvae/backends/special.py; CUDA has no digamma).
#include "common.cuh"

#if !defined(BLK_GAUSSIAN) || !defined(BLK_BERNOULLI) || !defined(BLK_CATEGORICAL) \
    || !defined(BLK_POISSON) || !defined(BLK_NEGBIN) || !defined(BLK_ZINB)
#error "BLK_* must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif
#if !defined(ENC_VALUE) || !defined(ENC_LOG1P) || !defined(ENC_MASK)
#error "ENC_* must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

#ifndef GRAD_FLUSH
#error "GRAD_FLUSH must be passed by fastvae.backends.codes (cuda_defines(), in cuda.compile_options())"
#endif

#define SPECIAL_SHIFT 10.0

// a decoder-output gradient below GRAD_FLUSH in magnitude is written as 0 (codes.py: no
// denormal reaches the products)
template <class T>
__device__ __forceinline__ T flushed(T g) {
    return fabs((double)g) >= GRAD_FLUSH ? g : T(0);
}

__device__ double lgamma_series(double z) {
    double r = 1.0 / z, r2 = r * r;
    return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680
                                                                     - r2 * (1.0 / 1188)))));
}

__device__ double digamma_series(double z) {
    double r2 = 1.0 / (z * z);
    return -r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 * (
        1.0 / 240 - r2 * (1.0 / 132 - r2 * (691.0 / 32760 - r2 * (1.0 / 12)))))));
}

// log Gamma(z), z > 0
__device__ double lgamma_fv(double z) {
    double prod = 1.0;
    while (z < SPECIAL_SHIFT) {
        prod *= z;
        z += 1.0;
    }
    return (z - 0.5) * log(z) - z + 0.91893853320467274178 + lgamma_series(z) - log(prod);
}

// lgamma(x + t) - lgamma(t), x >= 0, t > 0
__device__ double lgamma_diff(double x, double t) {
    if (x == 0.0) return 0.0;
    double acc = 0.0;
    while (t < SPECIAL_SHIFT) {
        acc -= log1p(x / t);
        t += 1.0;
    }
    double u = x + t;
    return acc + (t - 0.5) * log1p(x / t) + x * log(u) - x
           + (lgamma_series(u) - lgamma_series(t));
}

// digamma(x + t) - digamma(t), x >= 0, t > 0
__device__ double digamma_diff(double x, double t) {
    if (x == 0.0) return 0.0;
    double acc = 0.0;
    while (t < SPECIAL_SHIFT) {
        acc += x / (t * (x + t));
        t += 1.0;
    }
    double u = x + t;
    return acc + log1p(x / t) + 0.5 * x / (t * u) + (digamma_series(u) - digamma_series(t));
}

__device__ __forceinline__ double softplus_d(double a) {
    return (a > 0.0 ? a : 0.0) + log1p(exp(-fabs(a)));
}

__device__ __forceinline__ double sigmoid_d(double a) {
    double e = exp(-fabs(a));
    double r = 1.0 / (1.0 + e);
    return a >= 0.0 ? r : e * r;
}

// the condition group of data row xi: the index of its largest condition (first on ties)
template <class T>
__device__ int row_group(const T* x, int xi, int W, int g0, int ng) {
    if (ng <= 0) return 0;
    const T* c = x + (i64)xi * W + g0;
    int g = 0;
    T best = c[0];
    for (int k = 1; k < ng; ++k)
        if (c[k] > best) {
            best = c[k];
            g = k;
        }
    return g;
}

template <class T, bool GRAD, bool ADD_BIAS>
__device__ void blocks_cells_impl(T* dout, T* rowpart, T* dcell, T* out, const T* b,
                                  const T* x, const T* aux, const int* cols, const int* meta,
                                  const T* row_scale, int R, int B, int W, int D, int P,
                                  int rows_per_chunk, double scale) {
    int j = blockIdx.x * TILE_W + threadIdx.x;
    bool valid = j < D;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(R, r0 + rows_per_chunk);
    int kind = 0, off = 0, width = 0, ab = -1, stride = 0, exposed = 0;
    if (valid) {
        exposed = cols[j * 6 + 5];
        kind = cols[j * 6];
        off = cols[j * 6 + 1];
        width = cols[j * 6 + 2];
        ab = cols[j * 6 + 3];
        stride = cols[j * 6 + 4];
    }
    int expo = meta[0], g0 = meta[1], ng = meta[2];
    for (int r = r0 + threadIdx.y; r < r1; r += TILE_H) {
        double t = 0.0;
        if (valid) {
            int xi = r % B;
            T* o_row = out + (i64)r * P + off;
            if (ADD_BIAS)
                for (int k = 0; k < width; ++k) o_row[k] += b[off + k];
            double w = scale * (row_scale ? (double)row_scale[r] : 1.0);
            double xv = (double)x[(i64)xi * W + j];
            double da = 0.0, dx = 0.0;
            if (xv != xv) {  // missing: no loss, no gradient
                if (GRAD) {
                    for (int k = 0; k < width; ++k) dout[(i64)r * P + off + k] = T(0);
                    dcell[(i64)r * D + j] = T(0);
                }
            } else if (kind == BLK_CATEGORICAL) {
                double m = (double)o_row[0];
                for (int k = 1; k < width; ++k) m = fmax(m, (double)o_row[k]);
                double se = 0.0;
                for (int k = 0; k < width; ++k) se += exp((double)o_row[k] - m);
                int code = (int)xv;
                t = m + log(se) - (double)o_row[code];
                if (GRAD) {
                    for (int k = 0; k < width; ++k) {
                        double p = exp((double)o_row[k] - m) / se;
                        dout[(i64)r * P + off + k] = flushed(T(w * (p - (k == code ? 1.0 : 0.0))));
                    }
                    dcell[(i64)r * D + j] = T(0);
                }
            } else {
                double a = (double)o_row[0];
                double o = expo >= 0 && exposed ? log((double)x[(i64)xi * W + expo]) : 0.0;
                if (kind == BLK_GAUSSIAN) {
                    double s = (double)aux[ab];
                    double iv = exp(-2.0 * s), d = a - xv, q = d * d * iv;
                    t = 0.5 * q + s + 0.91893853320467274178;
                    da = d * iv;
                    dx = 1.0 - q;
                } else if (kind == BLK_BERNOULLI) {
                    t = softplus_d(a) - xv * a;
                    da = sigmoid_d(a) - xv;
                } else if (kind == BLK_POISSON) {
                    double eta = a + o, mu = exp(eta);
                    t = mu - xv * eta + lgamma_fv(xv + 1.0);
                    da = mu - xv;
                } else if (kind == BLK_NEGBIN || kind == BLK_ZINB) {
                    int g = row_group(x, xi, W, g0, ng);
                    double rr = (double)aux[ab + g * stride];
                    double th = exp(rr), d = a + o - rr;
                    double sp = softplus_d(d), sm = softplus_d(-d);
                    double s = sigmoid_d(d), sn = sigmoid_d(-d);
                    t = -lgamma_diff(xv, th) + lgamma_fv(xv + 1.0) + th * sp + xv * sm;
                    da = th * s - xv * sn;
                    if (GRAD) dx = -(th * digamma_diff(xv, th) - th * sp + th * s - xv * sn);
                    if (kind == BLK_ZINB) {  // the inflation logit; a zero's two ways
                        double gz = (double)o_row[1], dz = sigmoid_d(gz);
                        if (xv == 0.0) {
                            double u = gz + th * sp, w0 = sigmoid_d(-u);
                            t = th * sp - softplus_d(u);
                            da *= w0;
                            dx *= w0;
                            dz -= sigmoid_d(u);
                        }
                        t += softplus_d(gz);
                        if (GRAD) dout[(i64)r * P + off + 1] = flushed(T(w * dz));
                    }
                }
                if (GRAD) {
                    dout[(i64)r * P + off] = flushed(T(w * da));
                    dcell[(i64)r * D + j] = T(w * dx);
                }
            }
        }
        T row = warp_sum(T(t));
        if (rowpart && threadIdx.x == 0) rowpart[(i64)blockIdx.x * R + r] = row;
    }
}

template <class T>
__device__ void blocks_aux_sum_impl(T* daux, const T* dcol, const T* dcell, const T* x,
                                    const int* cols, const int* meta, int A, int R, int B,
                                    int W, int D) {
    for (i64 a = grid_start(); a < A; a += grid_stride()) {
        T acc = 0;
        for (int j = 0; j < D; ++j) {
            int ab = cols[j * 6 + 3], stride = cols[j * 6 + 4];
            if (ab < 0) continue;
            if (stride == 0) {
                if (ab == a) acc += dcol[j];
                continue;
            }
            i64 rel = a - ab;
            if (rel < 0 || rel % stride != 0 || rel / stride >= meta[2]) continue;
            int g = (int)(rel / stride);
            for (int r = 0; r < R; ++r)
                if (row_group(x, r % B, W, meta[1], meta[2]) == g) acc += dcell[(i64)r * D + j];
        }
        daux[a] = acc;
    }
}

template <class T>
__device__ void encoder_input_impl(T* xin, const T* x, const int* src, const int* mode, int B,
                                   int W, int Dn) {
    for (i64 e = grid_start(); e < (i64)B * Dn; e += grid_stride()) {
        int i = (int)(e / Dn), k = (int)(e % Dn);
        T v = x[(i64)i * W + src[k]];
        bool nan = v != v;
        T r;
        if (mode[k] == ENC_MASK) r = nan ? T(0) : T(1);
        else if (nan) r = T(0);
        else if (mode[k] == ENC_LOG1P) r = vlog1p(v);
        else r = v;  // ENC_VALUE
        xin[e] = r;
    }
}

template <class T>
__device__ void embed_fwd_impl(T* h, const T* Wc, const T* x, const int* cat_cols,
                               const int* cat_rows, int B, int N, int W, int n_cat) {
    for (i64 e = grid_start(); e < (i64)B * N; e += grid_stride()) {
        int i = (int)(e / N), n = (int)(e % N);
        T acc = h[e];
        for (int c = 0; c < n_cat; ++c) {
            T v = x[(i64)i * W + cat_cols[c]];
            if (v != v) continue;
            acc += Wc[(i64)(cat_rows[c] + (int)v) * N + n];
        }
        h[e] = acc;
    }
}

template <class T>
__device__ void embed_bwd_impl(T* dWc, const T* dh, const T* x, const int* cat_cols,
                               const int* cat_rows, int B, int N, int W, int n_cat,
                               int n_onehot) {
    for (i64 e = grid_start(); e < (i64)n_cat * N; e += grid_stride()) {
        int c = (int)(e / N), n = (int)(e % N);
        int first = cat_rows[c], last = c + 1 < n_cat ? cat_rows[c + 1] : n_onehot;
        for (int k = first; k < last; ++k) dWc[(i64)k * N + n] = T(0);
        for (int i = 0; i < B; ++i) {
            T v = x[(i64)i * W + cat_cols[c]];
            if (v != v) continue;
            dWc[(i64)(first + (int)v) * N + n] += dh[(i64)i * N + n];
        }
    }
}

template <class T>
__device__ void decoder_input_impl(T* zin, const T* z, const T* x, const int* cond_cols, int R,
                                   int B, int Z, int C, int W) {
    int K = Z + C;
    for (i64 e = grid_start(); e < (i64)R * K; e += grid_stride()) {
        int r = (int)(e / K), k = (int)(e % K);
        zin[e] = k < Z ? z[(i64)r * Z + k] : x[(i64)(r % B) * W + cond_cols[k - Z]];
    }
}

extern "C" __global__ void blocks_fwd_bwd_f32(float* dout, float* rowpart, float* dcell, float* out, const float* b, const float* x, const float* aux, const int* cols, const int* meta, int R, int B, int W, int D, int P, int rows_per_chunk, double scale) {
    blocks_cells_impl<float, true, true>(dout, rowpart, dcell, out, b, x, aux, cols, meta, nullptr, R, B, W, D, P, rows_per_chunk, scale);
}
extern "C" __global__ void blocks_fwd_f32(float* rowpart, float* out, const float* b, const float* x, const float* aux, const int* cols, const int* meta, int R, int B, int W, int D, int P, int rows_per_chunk) {
    blocks_cells_impl<float, false, true>(nullptr, rowpart, nullptr, out, b, x, aux, cols, meta, nullptr, R, B, W, D, P, rows_per_chunk, 1.0);
}
extern "C" __global__ void blocks_bwd_f32(float* dout, float* dcell, float* out, const float* x, const float* aux, const int* cols, const int* meta, const float* row_scale, int R, int B, int W, int D, int P, int rows_per_chunk, double scale) {
    blocks_cells_impl<float, true, false>(dout, nullptr, dcell, out, nullptr, x, aux, cols, meta, row_scale, R, B, W, D, P, rows_per_chunk, scale);
}
extern "C" __global__ void blocks_aux_sum_f32(float* daux, const float* dcol, const float* dcell, const float* x, const int* cols, const int* meta, int A, int R, int B, int W, int D) {
    blocks_aux_sum_impl(daux, dcol, dcell, x, cols, meta, A, R, B, W, D);
}
extern "C" __global__ void encoder_input_f32(float* xin, const float* x, const int* src, const int* mode, int B, int W, int Dn) {
    encoder_input_impl(xin, x, src, mode, B, W, Dn);
}
extern "C" __global__ void embed_fwd_f32(float* h, const float* Wc, const float* x, const int* cat_cols, const int* cat_rows, int B, int N, int W, int n_cat) {
    embed_fwd_impl(h, Wc, x, cat_cols, cat_rows, B, N, W, n_cat);
}
extern "C" __global__ void embed_bwd_f32(float* dWc, const float* dh, const float* x, const int* cat_cols, const int* cat_rows, int B, int N, int W, int n_cat, int n_onehot) {
    embed_bwd_impl(dWc, dh, x, cat_cols, cat_rows, B, N, W, n_cat, n_onehot);
}
extern "C" __global__ void decoder_input_f32(float* zin, const float* z, const float* x, const int* cond_cols, int R, int B, int Z, int C, int W) {
    decoder_input_impl(zin, z, x, cond_cols, R, B, Z, C, W);
}
extern "C" __global__ void blocks_fwd_bwd_f64(double* dout, double* rowpart, double* dcell, double* out, const double* b, const double* x, const double* aux, const int* cols, const int* meta, int R, int B, int W, int D, int P, int rows_per_chunk, double scale) {
    blocks_cells_impl<double, true, true>(dout, rowpart, dcell, out, b, x, aux, cols, meta, nullptr, R, B, W, D, P, rows_per_chunk, scale);
}
extern "C" __global__ void blocks_fwd_f64(double* rowpart, double* out, const double* b, const double* x, const double* aux, const int* cols, const int* meta, int R, int B, int W, int D, int P, int rows_per_chunk) {
    blocks_cells_impl<double, false, true>(nullptr, rowpart, nullptr, out, b, x, aux, cols, meta, nullptr, R, B, W, D, P, rows_per_chunk, 1.0);
}
extern "C" __global__ void blocks_bwd_f64(double* dout, double* dcell, double* out, const double* x, const double* aux, const int* cols, const int* meta, const double* row_scale, int R, int B, int W, int D, int P, int rows_per_chunk, double scale) {
    blocks_cells_impl<double, true, false>(dout, nullptr, dcell, out, nullptr, x, aux, cols, meta, row_scale, R, B, W, D, P, rows_per_chunk, scale);
}
extern "C" __global__ void blocks_aux_sum_f64(double* daux, const double* dcol, const double* dcell, const double* x, const int* cols, const int* meta, int A, int R, int B, int W, int D) {
    blocks_aux_sum_impl(daux, dcol, dcell, x, cols, meta, A, R, B, W, D);
}
extern "C" __global__ void encoder_input_f64(double* xin, const double* x, const int* src, const int* mode, int B, int W, int Dn) {
    encoder_input_impl(xin, x, src, mode, B, W, Dn);
}
extern "C" __global__ void embed_fwd_f64(double* h, const double* Wc, const double* x, const int* cat_cols, const int* cat_rows, int B, int N, int W, int n_cat) {
    embed_fwd_impl(h, Wc, x, cat_cols, cat_rows, B, N, W, n_cat);
}
extern "C" __global__ void embed_bwd_f64(double* dWc, const double* dh, const double* x, const int* cat_cols, const int* cat_rows, int B, int N, int W, int n_cat, int n_onehot) {
    embed_bwd_impl(dWc, dh, x, cat_cols, cat_rows, B, N, W, n_cat, n_onehot);
}
extern "C" __global__ void decoder_input_f64(double* zin, const double* z, const double* x, const int* cond_cols, int R, int B, int Z, int C, int W) {
    decoder_input_impl(zin, z, x, cond_cols, R, B, Z, C, W);
}
