"""Numba kernels: the same names, argument order and contracts as ``reference.py``.

Design choices, each measured on the 2-core development machine:

- Matrix products go to NumPy's BLAS (transposes are views passed as flags).
- The kernels here are **serial**.  BLAS already owns both cores; a Numba ``parallel=True``
  region between two GEMMs fought OpenBLAS's spinning threads and turned a 0.36 ms
  GEMM + bias step into 7.8 ms (OpenMP layer), or cost 70-100 us per wake-up with passive
  waiting.  Serial fused loops over cache-resident data cost a few microseconds instead.
- Each kernel is one pass over memory; inner loops run over contiguous columns so LLVM
  vectorises them (AVX-512 here), helped by the fast-math flags in ``nbmath.FASTMATH``.
- Scalars are cast to the array dtype first so float32 kernels stay in float32.
- Kernels never allocate: every output is passed in.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..core.codes import (ACT_ELU, ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU, ACT_SIGMOID,
    ACT_SOFTPLUS, ACT_TANH, LIK_BERNOULLI, LIK_GAUSSIAN, MOMENT_FLUSH, PHILOX_M, PHILOX_W)
from . import reference as _ref
from .nbmath import FASTMATH, exp_nonpos, log1p_unit, vexp, vexpm1

NAME = "cpu"
xp = np
DEVICE = False

asarray = _ref.asarray
to_numpy = _ref.to_numpy
matmul = _ref.matmul  # BLAS through NumPy: the same call is already the fast path

# error_model="numpy": division by zero yields inf/nan instead of raising; the Python
# model's zero check is what stopped LLVM from vectorising every loop with a division.
_jit = njit(fastmath=FASTMATH, error_model="numpy", cache=True, nogil=True)


@_jit
def bias_act_fwd(y, b, act, alpha):
    """y (B, N) <- act(y + b), in place; b (N,)."""
    R, N = y.shape
    zero = y.dtype.type(0.0)
    one = y.dtype.type(1.0)
    two = y.dtype.type(2.0)
    al = y.dtype.type(alpha)
    # One loop per activation so that each inner loop is branch-free and vectorises.
    if act == ACT_IDENTITY:
        for i in range(R):
            for j in range(N):
                y[i, j] += b[j]
    elif act == ACT_RELU:
        for i in range(R):
            for j in range(N):
                y[i, j] = max(y[i, j] + b[j], zero)
    elif act == ACT_LEAKY_RELU:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                y[i, j] = v if v > zero else al * v
    elif act == ACT_TANH:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                # tanh|v| = -m / (2 + m), m = expm1(-2|v|): no cancellation for small v,
                # where (1 - e) / (1 + e) would keep only the absolute precision
                m = vexpm1(-two * abs(v))
                t = -m / (two + m)
                y[i, j] = t if v >= zero else -t
    elif act == ACT_SIGMOID:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                e = exp_nonpos(-abs(v))
                r = one / (one + e)
                y[i, j] = r if v >= zero else e * r
    elif act == ACT_ELU:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                y[i, j] = v if v > zero else al * math.expm1(min(v, zero))
    elif act == ACT_SOFTPLUS:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                y[i, j] = max(v, zero) + log1p_unit(exp_nonpos(-abs(v)))


@_jit
def _act_grad(dy, yv, act, al, zero, one):
    """dy * act'(a), with act'(a) read off the output yv = act(a)."""
    if act == ACT_RELU:
        return dy if yv > zero else zero
    if act == ACT_LEAKY_RELU:
        return dy if yv > zero else al * dy
    if act == ACT_TANH:
        # (1 - y)(1 + y), not 1 - y^2: 1 - y is exact for y near 1, so the product keeps
        # its relative precision where the derivative is small (in every backend)
        return dy * ((one - yv) * (one + yv))
    if act == ACT_SIGMOID:
        return dy * yv * (one - yv)
    if act == ACT_ELU:
        return dy if yv > zero else dy * (yv + al)
    if act == ACT_SOFTPLUS:
        # sigmoid(a) = -expm1(-softplus(a)), as in every backend (1 - exp(-y) would lose
        # the relative precision of small y to cancellation)
        return -dy * vexpm1(-yv)
    return dy


@_jit
def act_bias_bwd(da, db, dy, y, act, alpha):
    """da (B, N) = dy * act'(.) from the saved output y (B, N); db (N,) = sum_rows da.

    ``da`` may be the same array as ``dy``.
    """
    R, N = y.shape
    al = y.dtype.type(alpha)
    zero = y.dtype.type(0.0)
    one = y.dtype.type(1.0)
    for j in range(N):
        db[j] = zero
    # The activation is chosen outside the loops: a branch on ``act`` inside the inner
    # loop kept it scalar (LLVM did not unswitch it), 10x slower for relu.
    if act == ACT_RELU:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_RELU, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_LEAKY_RELU:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_LEAKY_RELU, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_TANH:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_TANH, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_SIGMOID:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_SIGMOID, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_ELU:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_ELU, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_SOFTPLUS:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_SOFTPLUS, al, zero, one)
                da[i, j] = g
                db[j] += g
    else:
        for i in range(R):
            for j in range(N):
                g = dy[i, j]
                da[i, j] = g
                db[j] += g


@_jit
def reparam_kl_fwd(mu, logvar, sigma, z, kl, kl_dim, head, hb, eps, lv_min, lv_max):
    """Sampling step and analytic KL, fused (contract and shapes: reference.reparam_kl_fwd)."""
    B, Z = mu.shape
    L = z.shape[0] // B
    half = mu.dtype.type(0.5)
    lo = mu.dtype.type(lv_min)
    hi = mu.dtype.type(lv_max)
    for k in range(Z):
        kl_dim[k] = 0.0
    for i in range(B):
        acc = mu.dtype.type(0.0)
        # one row's Z dimensions: branch-free arithmetic that vectorises (vexp, vexpm1)
        for k in range(Z):
            m = head[i, k] + hb[k]
            raw = head[i, Z + k] + hb[Z + k]
            head[i, k] = m
            head[i, Z + k] = raw  # kept unclamped: the clamp's gradient needs it
            lv = min(max(raw, lo), hi)
            mu[i, k] = m
            logvar[i, k] = lv
            sigma[i, k] = vexp(half * lv)
            em1 = vexpm1(lv)
            # both terms >= 0: no cancellation near collapse; past the clamp the KL goes
            # on linearly (reference.reparam_kl_fwd)
            t = half * (m * m + (em1 - lv)) + half * em1 * (raw - lv)
            acc += t
            kl_dim[k] += t
        kl[i] = acc
        for s_ in range(L):
            r = s_ * B + i
            for k in range(Z):
                z[r, k] = mu[i, k] + sigma[i, k] * eps[r, k]
    inv_b = mu.dtype.type(1.0 / B)
    for k in range(Z):
        kl_dim[k] *= inv_b


@_jit
def reparam_kl_bwd(dhead, dhb, dz, eps, mu, sigma, head, kl_dim, kl_weight, free_bits,
                   lv_min, lv_max):
    """Sample path plus analytic KL gradient (contract: reference.reparam_kl_bwd)."""
    B, Z = mu.shape
    L = dz.shape[0] // B
    half = mu.dtype.type(0.5)
    zero = mu.dtype.type(0.0)
    w_all = mu.dtype.type(kl_weight)
    lo = mu.dtype.type(lv_min)
    hi = mu.dtype.type(lv_max)
    fb = mu.dtype.type(free_bits)
    no_floor = free_bits <= 0.0
    for k in range(2 * Z):
        dhb[k] = zero
    for i in range(B):
        # first the sums over the L samples, gathered in dhead's row (sum dz | sum dz eps),
        # then one branch-free pass over the Z dimensions: both loops vectorise
        for k in range(2 * Z):
            dhead[i, k] = zero
        for s_ in range(L):
            r = s_ * B + i
            for k in range(Z):
                g = dz[r, k]
                dhead[i, k] += g
                dhead[i, Z + k] += g * eps[r, k]
        for k in range(Z):
            w = w_all if (no_floor | (kl_dim[k] > fb)) else zero  # "|": no branch
            dmu = dhead[i, k] + w * mu[i, k]
            raw = head[i, Z + k]
            lv = min(max(raw, lo), hi)
            # the clamp cuts the sample path, not the KL's pull (reference.reparam_kl_bwd)
            sample = half * sigma[i, k] * dhead[i, Z + k]
            dlv = (sample if raw == lv else zero) + w * half * vexpm1(lv)
            dhead[i, k] = dmu
            dhead[i, Z + k] = dlv
        # the bias gradient in a loop of its own: with it inside, LLVM gave up vectorising
        # the loop above (too many possibly-aliasing arrays) and it ran 2.5x slower
        for k in range(2 * Z):
            dhb[k] += dhead[i, k]


@_jit
def _bernoulli_terms(a, xv, zero, one):
    """(softplus(a) - x a, sigmoid(a)): the two share e = exp(-|a|), one exp per pixel."""
    e = exp_nonpos(-abs(a))
    inv = one / (one + e)
    return max(a, zero) + log1p_unit(e) - xv * a, inv if a >= zero else e * inv


@_jit
def likelihood_fwd(loss_rows, out, b, x, logscale, kind):
    """Reconstruction loss per row only, for evaluation (contract: reference.likelihood_fwd)."""
    R, D = out.shape
    B = x.shape[0]
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    half = out.dtype.type(0.5)
    if kind == LIK_BERNOULLI:
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                a = out[r, j] + b[j]
                out[r, j] = a
                acc += _bernoulli_terms(a, x[xi, j], zero, one)[0]
            loss_rows[r] = acc
    elif kind == LIK_GAUSSIAN:
        shared = logscale.shape[0] == 1
        c = out.dtype.type(0.5 * math.log(2.0 * math.pi))
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                ls = logscale[0] if shared else logscale[j]
                a = out[r, j] + b[j]
                out[r, j] = a
                d = a - x[xi, j]
                acc += half * d * d * math.exp(-2.0 * ls) + ls + c
            loss_rows[r] = acc


@_jit
def likelihood_fwd_bwd(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                       learn_scale, grad_scale):
    """Reconstruction loss per row and its gradient in one pass (contract: reference)."""
    R, D = out.shape
    B = x.shape[0]
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    half = out.dtype.type(0.5)
    gs = out.dtype.type(grad_scale)
    for j in range(D):
        db[j] = zero
    if kind == LIK_BERNOULLI:
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                a = out[r, j] + b[j]
                out[r, j] = a
                xv = x[xi, j]
                loss, p = _bernoulli_terms(a, xv, zero, one)
                acc += loss
                g = gs * (p - xv)
                dout[r, j] = g
                db[j] += g
            loss_rows[r] = acc
    elif kind == LIK_GAUSSIAN:
        shared = logscale.shape[0] == 1
        c = out.dtype.type(0.5 * math.log(2.0 * math.pi))
        if learn_scale:
            for j in range(dlogscale.shape[0]):
                dlogscale[j] = zero
        gl = zero
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                ls = logscale[0] if shared else logscale[j]
                iv = math.exp(-2.0 * ls)
                a = out[r, j] + b[j]
                out[r, j] = a
                d = a - x[xi, j]
                q = d * d * iv
                acc += half * q + ls + c
                g = gs * d * iv
                dout[r, j] = g
                db[j] += g
                if learn_scale:
                    if shared:
                        gl += one - q
                    else:
                        dlogscale[j] += gs * (one - q)
            loss_rows[r] = acc
        if learn_scale and shared:
            dlogscale[0] = gs * gl


@_jit
def logscale_fwd(ls, raw, floor):
    """ls (S,) = floor + softplus(raw - floor), a softly floored log-scale (contract: reference)."""
    f = ls.dtype.type(floor)
    for i in range(ls.shape[0]):
        t = raw[i] - f
        ls[i] = f + max(t, ls.dtype.type(0.0)) + math.log1p(math.exp(-abs(t)))


@_jit
def logscale_bwd(draw, dls, raw, floor):
    """draw (S,) = dls * sigmoid(raw - floor) (contract: reference.logscale_bwd)."""
    f = raw.dtype.type(floor)
    one = raw.dtype.type(1.0)
    for i in range(raw.shape[0]):
        t = raw[i] - f
        e = math.exp(-abs(t))
        draw[i] = dls[i] * (one / (one + e) if t >= 0 else e / (one + e))


@_jit
def scatter_rows(out, dest, X, idx, scale):
    """out[dest[k]] = scale * X[idx[k]] (contract: reference.scatter_rows); reads X in the
    order of idx, allocating nothing."""
    D = out.shape[1]
    sc = out.dtype.type(scale)
    for k in range(idx.shape[0]):
        i, r = idx[k], dest[k]
        for j in range(D):
            out[r, j] = out.dtype.type(X[i, j]) * sc


@_jit
def binarize_rows(x, u):
    """x (B, D) <- (u < x) as 0/1, in place (contract: reference.binarize_rows)."""
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    B, D = x.shape
    for i in range(B):
        for j in range(D):
            x[i, j] = one if u[i, j] < x[i, j] else zero


@_jit
def gather_rows(out, X, idx, scale):
    """out (B, D) = scale * X[idx] in out's dtype; X (N, D) uint8 or float (may be a
    memory-mapped file), idx (B,) int64 (contract: reference.gather_rows).  Allocates
    nothing, unlike NumPy's fancy indexing followed by a cast."""
    B, D = out.shape
    sc = out.dtype.type(scale)
    for r in range(B):
        i = idx[r]
        for j in range(D):
            out[r, j] = out.dtype.type(X[i, j]) * sc


@_jit
def check_data(x, lo, hi):
    """Return (number of non-finite entries, number of finite entries outside [lo, hi])."""
    B, D = x.shape
    # Fast pass, vectorised: v * 0 is NaN exactly for NaN and +-inf, so ``poison`` stays 0
    # for clean data, and comparisons count the rest.  Only dirty data pays for the exact
    # (branchy) count below.  (A min/max reduction did not vectorise: 5x slower.)
    poison = x.dtype.type(0.0)
    l = x.dtype.type(lo)
    h = x.dtype.type(hi)
    n_rough = 0
    for i in range(B):
        for j in range(D):
            v = x[i, j]
            poison += v * 0
            n_rough += (v < l) | (v > h)
    if poison == 0 and n_rough == 0:
        return 0, 0
    n_bad = 0
    n_out = 0
    for i in range(B):
        for j in range(D):
            v = x[i, j]
            if not math.isfinite(v):
                n_bad += 1
            elif v < lo or v > hi:
                n_out += 1
    return n_bad, n_out


@_jit
def sq_norm(g):
    """Sum of squares of the flat vector g, accumulated in float64."""
    acc = 0.0
    for i in range(g.shape[0]):
        v = np.float64(g[i])
        acc += v * v
    return acc


def clip_scale(scale, norm, g, clip_norm):
    """norm[0] <- |g|, scale[0] <- min(1, clip_norm / (|g| + 1e-6)), or NaN and norm[1] += 1
    when |g| is not finite (contract: reference.clip_scale).  A few scalar operations after
    sq_norm: plain Python."""
    nrm = math.sqrt(sq_norm(g))
    norm[0] = nrm
    if math.isfinite(nrm):
        scale[0] = min(1.0, clip_norm / (nrm + 1e-6))
    else:
        scale[0] = math.nan
        norm[1] += 1


@_jit
def adam_step(p, m, v, g, lr, beta1, beta2, eps, weight_decay, decoupled, step, grad_scale):
    """One Adam / AdamW update over flat buffers, in place (contract: reference.adam_step)."""
    T = p.dtype.type
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    step_size = T(lr / bc1)
    inv_sqrt_bc2 = T(1.0 / math.sqrt(bc2))
    b1 = T(beta1)
    b2 = T(beta2)
    c1 = T(1.0 - beta1)
    c2 = T(1.0 - beta2)
    e = T(eps)
    gs = T(grad_scale)
    wd = T(weight_decay)
    shrink = T(1.0 - lr * weight_decay)
    l2 = (not decoupled) and weight_decay != 0.0
    tiny = T(MOMENT_FLUSH)
    zero = T(0.0)
    for i in range(p.shape[0]):
        gi = g[i] * gs
        pi = p[i]
        if decoupled:
            pi *= shrink
        elif l2:
            gi += wd * pi
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        mi = mi if abs(mi) >= tiny else zero  # see MOMENT_FLUSH in core/codes.py
        vi = vi if vi >= tiny else zero
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + e)


@_jit
def sgd_step(p, buf, g, lr, momentum, nesterov, weight_decay, step, grad_scale):
    """One SGD update (torch.optim.SGD, dampening 0) over flat buffers (contract: reference)."""
    T = p.dtype.type
    lr_ = T(lr)
    mom = T(momentum)
    wd = T(weight_decay)
    gs = T(grad_scale)
    tiny = T(MOMENT_FLUSH)
    zero = T(0.0)
    for i in range(p.shape[0]):
        gi = g[i] * gs + wd * p[i]
        if momentum != 0.0:
            bi = gi if step == 1 else mom * buf[i] + gi
            bi = bi if abs(bi) >= tiny else zero
            buf[i] = bi
            gi = gi + mom * bi if nesterov else bi
        p[i] -= lr_ * gi


@_jit
def loss_stats(stats, acc, loss_rows, kl, kl_dim, free_bits, kl_coef, weight, obj_rows):
    """The step's loss statistics in float64 (contract: reference.loss_stats)."""
    sr = 0.0
    for i in range(loss_rows.shape[0]):
        sr += np.float64(loss_rows[i])
    sk = 0.0
    for i in range(kl.shape[0]):
        sk += np.float64(kl[i])
    recon = sr / loss_rows.shape[0]
    klm = sk / kl.shape[0]
    obj = klm
    if free_bits > 0:
        obj = 0.0
        for k in range(kl_dim.shape[0]):
            obj += max(np.float64(kl_dim[k]), free_bits)
    if obj_rows.shape[0] > 0:
        so = 0.0
        for i in range(obj_rows.shape[0]):
            so += np.float64(obj_rows[i])
        stats[0] = so / obj_rows.shape[0]
    else:
        stats[0] = recon + kl_coef * obj
    stats[1] = recon
    stats[2] = klm
    if weight != 0:
        for t in range(3):
            acc[t] += weight * stats[t]


# ------------------------------------------------------------ importance weighting
@_jit
def likelihood_bwd(dout, db, dlogscale, out, x, logscale, kind, learn_scale, row_scale,
                   scale):
    """Row-weighted loss gradient of biased logits/means (contract: reference.likelihood_bwd)."""
    R, D = out.shape
    B = x.shape[0]
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    for j in range(D):
        db[j] = zero
    if kind == LIK_BERNOULLI:
        for r in range(R):
            xi = r % B
            w = out.dtype.type(scale * row_scale[r])
            for j in range(D):
                g = w * (_bernoulli_terms(out[r, j], x[xi, j], zero, one)[1] - x[xi, j])
                dout[r, j] = g
                db[j] += g
    elif kind == LIK_GAUSSIAN:
        shared = logscale.shape[0] == 1
        if learn_scale:
            for j in range(dlogscale.shape[0]):
                dlogscale[j] = zero
        for r in range(R):
            xi = r % B
            w = out.dtype.type(scale * row_scale[r])
            for j in range(D):
                iv = math.exp(-2.0 * (logscale[0] if shared else logscale[j]))
                d = out[r, j] - x[xi, j]
                g = w * d * iv
                dout[r, j] = g
                db[j] += g
                if learn_scale:
                    dlogscale[0 if shared else j] += w * (one - d * d * iv)


@_jit
def iwae_fwd(logw, wnorm, loss_b, loss_rows, z, eps, logvar):
    """Importance weights and the IWAE loss per datapoint (contract: reference.iwae_fwd)."""
    B, Z = logvar.shape
    K = loss_rows.shape[0] // B
    half = logw.dtype.type(0.5)
    for i in range(B):
        slv = logw.dtype.type(0.0)
        for k in range(Z):
            slv += logvar[i, k]
        m = -np.inf
        for l in range(K):
            r = l * B + i
            acc = half * slv - loss_rows[r]
            for k in range(Z):
                acc += half * (eps[r, k] * eps[r, k] - z[r, k] * z[r, k])
            logw[r] = acc
            m = max(m, acc)
        tot = 0.0  # the sum of exp(log w - max) in float64
        for l in range(K):
            tot += math.exp(np.float64(logw[l * B + i]) - m)
        lse = m + math.log(tot)
        for l in range(K):
            r = l * B + i
            wnorm[r] = math.exp(np.float64(logw[r]) - lse)
        loss_b[i] = -(lse - math.log(K))


@_jit
def reparam_iw_bwd(dhead, dhb, dz, eps, z, sigma, head, wnorm, inv_b, dreg, lv_min, lv_max):
    """Head gradient under IWAE or DReG (contract: reference.reparam_iw_bwd)."""
    B, Z = sigma.shape
    K = dz.shape[0] // B
    half = sigma.dtype.type(0.5)
    zero = sigma.dtype.type(0.0)
    ib = sigma.dtype.type(inv_b)
    lo = sigma.dtype.type(lv_min)
    hi = sigma.dtype.type(lv_max)
    for k in range(2 * Z):
        dhb[k] = zero
    for i in range(B):
        for k in range(2 * Z):
            dhead[i, k] = zero
        for l in range(K):
            r = l * B + i
            w = wnorm[r]
            for k in range(Z):
                sg = sigma[i, k]
                e = eps[r, k]
                if dreg:
                    ww = w * w * ib
                    dhead[i, k] += w * dz[r, k] + ww * (z[r, k] - e / sg)
                    dhead[i, Z + k] += w * dz[r, k] * e * half * sg + ww * half * (
                        z[r, k] * e * sg - e * e)
                else:
                    g = dz[r, k] + w * z[r, k] * ib
                    dhead[i, k] += g
                    dhead[i, Z + k] += g * e * half * sg
        for k in range(Z):
            raw = head[i, Z + k]
            inside = lo <= raw <= hi
            if not dreg:
                dhead[i, Z + k] -= half * ib  # log q's own logvar / 2
            if not inside:
                dhead[i, Z + k] = zero
        for k in range(2 * Z):
            dhb[k] += dhead[i, k]


# ------------------------------------------------------------ counter-based noise
_M0, _M1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
_W0, _W1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
_MASK = np.uint64(0xFFFFFFFF)


@_jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on np.uint64 values holding 32-bit words; returns the four output words
    as np.uint64 values (contract: reference.philox4x32_10, which takes uint32 arrays)."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ k0
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ k1
        c0, c1, c2, c3 = n0 & _MASK, p1 & _MASK, n2 & _MASK, p0 & _MASK
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0, c1, c2, c3


@_jit
def normal_eps(eps, key, row0, first):
    """eps (L, B, Z) <- counter-based standard normal noise (contract: reference.normal_eps;
    Philox4x32-10 and Box-Muller in float64, rounded to eps's dtype)."""
    L, B, Z = eps.shape
    n = L * Z
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    two_pi = 6.283185307179586
    inv32 = 2.3283064365386963e-10
    for b in range(B):
        cnt = np.uint64(row0 + b)
        c2, c3 = cnt & _MASK, cnt >> np.uint64(32)
        e = first
        while e < first + n:
            q = np.uint64(e // 4)
            w0, w1, w2, w3 = philox4x32_10(q & _MASK, q >> np.uint64(32), c2, c3, k0, k1)
            base = (e // 4) * 4
            for p in range(2):
                wa, wb = (w0, w1) if p == 0 else (w2, w3)
                rad = math.sqrt(-2.0 * math.log((np.float64(wa) + 1.0) * inv32))
                ang = two_pi * np.float64(wb) * inv32
                for t in range(2):
                    j = base + 2 * p + t - first  # = l * Z + d
                    if 0 <= j < n:
                        eps[j // Z, b, j % Z] = rad * (math.cos(ang) if t == 0 else math.sin(ang))
            e = base + 4
