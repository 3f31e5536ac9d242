"""Numba kernels: the sampling step and its KL, the importance weights, and the counter-based
noise (kernels/reparam.cu)."""
from __future__ import annotations

import math

import numpy as np

from ..codes import PHILOX_M, PHILOX_W, noise_f32
from numba import njit

from ..nbmath import FASTMATH, jit, vexp, vexpm1

_M0, _M1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
_W0, _W1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
_MASK = np.uint64(0xFFFFFFFF)


@jit
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


@jit
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
        # then one branch-free pass over the Z dimensions.  Both loops run on 1-D row
        # views: indexed as dhead[i, k] and dhead[i, Z + k], LLVM did not vectorise the
        # second loop (8x slower at B=500, Z=128)
        dm = dhead[i, :Z]
        dl = dhead[i, Z:]
        for k in range(Z):
            dm[k] = zero
            dl[k] = zero
        for s_ in range(L):
            g_ = dz[s_ * B + i]
            e_ = eps[s_ * B + i]
            for k in range(Z):
                dm[k] += g_[k]
                dl[k] += g_[k] * e_[k]
        mu_ = mu[i]
        sg = sigma[i]
        hr = head[i, Z:]
        for k in range(Z):
            w = w_all if (no_floor | (kl_dim[k] > fb)) else zero  # "|": no branch
            raw = hr[k]
            lv = min(max(raw, lo), hi)
            # the clamp cuts the sample path, not the KL's pull (reference.reparam_kl_bwd)
            sample = half * sg[k] * dl[k]
            dm[k] = dm[k] + w * mu_[k]
            dl[k] = (sample if raw == lv else zero) + w * half * vexpm1(lv)
        # the bias gradient in a loop of its own: with it inside, LLVM gave up vectorising
        # the loop above (too many possibly-aliasing arrays) and it ran 2.5x slower
        dr = dhead[i]
        for k in range(2 * Z):
            dhb[k] += dr[k]


@jit
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


@jit
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


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, nogil=True, inline="always")
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


@njit(error_model="numpy", cache=True, nogil=True, inline="always")
def _philox_row(W, q0, c2, c3, k0, k1):
    """W (4, nq) <- the Philox words of quads q0 .. q0 + nq - 1 of the counter (c2, c3):
    the integer work of both noise kernels (inlined into each, so each keeps its own
    flags; philox itself is inlined too: called, this loop did not vectorise)."""
    for i in range(W.shape[1]):
        q = np.uint64(q0 + i)
        a0, a1, a2, a3 = philox4x32_10(q & _MASK, q >> np.uint64(32), c2, c3, k0, k1)
        W[0, i] = a0
        W[1, i] = a1
        W[2, i] = a2
        W[3, i] = a3


@jit
def normal_eps(eps, key, row0, first):
    """eps (L, B, Z) <- counter-based standard normal noise (contract: reference.normal_eps;
    Philox4x32-10 and Box-Muller in float64, rounded to eps's dtype)."""
    L, B, Z = eps.shape
    n = L * Z
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    two_pi = 6.283185307179586
    inv32 = 2.3283064365386963e-10
    # per row, three loops: the Philox blocks (integer work that vectorises: 3% of the
    # time), the Box-Muller pairs (float64 log, sqrt, cos, sin: the rest), then the copy
    # into (l, d) order; 18% faster than one loop doing all three (the same bits)
    q0 = first // 4
    nq = (first + n + 3) // 4 - q0
    W = np.empty((4, nq), dtype=np.uint64)
    zz = np.empty(4 * nq)
    off = first - 4 * q0
    for b in range(B):
        cnt = np.uint64(row0 + b)
        c2, c3 = cnt & _MASK, cnt >> np.uint64(32)
        _philox_row(W, q0, c2, c3, k0, k1)
        for i in range(nq):
            rad0 = math.sqrt(-2.0 * math.log((np.float64(W[0, i]) + 1.0) * inv32))
            ang0 = two_pi * np.float64(W[1, i]) * inv32
            rad1 = math.sqrt(-2.0 * math.log((np.float64(W[2, i]) + 1.0) * inv32))
            ang1 = two_pi * np.float64(W[3, i]) * inv32
            zz[4 * i] = rad0 * math.cos(ang0)
            zz[4 * i + 1] = rad0 * math.sin(ang0)
            zz[4 * i + 2] = rad1 * math.cos(ang1)
            zz[4 * i + 3] = rad1 * math.sin(ang1)
        for l_ in range(L):
            for d in range(Z):
                eps[l_, b, d] = zz[off + l_ * Z + d]


_NF = {k: np.float32(v) for k, v in noise_f32().items()}
_L0, _L1, _L2, _L3, _L4 = (_NF[f"NOISE_LOG{i}"] for i in range(5))
_S0, _S1, _S2, _S3 = (_NF[f"NOISE_SIN{i}"] for i in range(4))
_C0, _C1, _C2, _C3 = (_NF[f"NOISE_COS{i}"] for i in range(4))
_LN2, _PIO2, _SQRT1_2, _SQRT2 = (_NF[k] for k in ("NOISE_LN2", "NOISE_PIO2", "NOISE_SQRT1_2",
                                                   "NOISE_SQRT2"))


# No fastmath here: the float32 noise is the same bits on every backend only when every
# multiply and add rounds on its own (reference.box_muller_f32), and fastmath's "contract"
# would fuse them.  Without it the loops still vectorise: they are plain arithmetic.
@njit(error_model="numpy", cache=True, nogil=True)
def normal_eps_f32(eps, key, row0, first):
    """eps (L, B, Z) float32 <- counter-based standard normal noise (contract:
    reference.normal_eps; Philox4x32-10, then reference.box_muller_f32 in float32)."""
    L, B, Z = eps.shape
    n = L * Z
    k0, k1 = np.uint64(key[0]) & _MASK, np.uint64(key[1]) & _MASK
    one, half, two = np.float32(1.0), np.float32(0.5), np.float32(-2.0)
    q0 = first // 4
    nq = (first + n + 3) // 4 - q0
    W = np.empty((4, nq), dtype=np.uint64)
    u = np.empty(nq, dtype=np.float32)
    ubits = u.view(np.int32)
    mbits = np.empty(nq, dtype=np.int32)
    m_ = mbits.view(np.float32)
    ex = np.empty(nq, dtype=np.float32)
    out = np.empty((4, nq), dtype=np.float32)  # out[2p + s, i]: element 4i + 2p + s
    off = first - 4 * q0
    for b in range(B):
        cnt = np.uint64(row0 + b)
        c2, c3 = cnt & _MASK, cnt >> np.uint64(32)
        _philox_row(W, q0, c2, c3, k0, k1)
        for p in range(2):
            for i in range(nq):
                u[i] = np.float32(np.int64(W[2 * p, i]) + 1)
            for i in range(nq):  # u = m 2^e from its bits, m in [1, 2)
                bits = ubits[i]
                ex[i] = np.float32((bits >> 23) - 159)  # e - 32
                mbits[i] = (bits & 0x7FFFFF) | 0x3F800000
            for i in range(nq):
                m = m_[i]
                e = ex[i]
                if m > _SQRT2:
                    m = m * half
                    e = e + one
                t = (m - one) / (m + one)
                t2 = t * t
                pl = _L3 + t2 * _L4
                pl = _L2 + t2 * pl
                pl = _L1 + t2 * pl
                pl = _L0 + t2 * pl
                r = math.sqrt(two * (t * pl + e * _LN2))
                w2 = np.int64(W[2 * p + 1, i])
                k = w2 >> 30
                x = (np.float32(w2 & 0x3FFFFFFF) * np.float32(2.0 ** -30) - half) * _PIO2
                x2 = x * x
                ps = _S2 + x2 * _S3
                pc = _C2 + x2 * _C3
                ps = _S1 + x2 * ps
                pc = _C1 + x2 * pc
                ps = _S0 + x2 * ps
                pc = _C0 + x2 * pc
                sn = x + x * (x2 * ps)
                cs = one + x2 * pc
                c = (cs - sn) * _SQRT1_2
                s = (cs + sn) * _SQRT1_2
                ca = c if k == 0 else (-s if k == 1 else (-c if k == 2 else s))
                sa = s if k == 0 else (c if k == 1 else (-s if k == 2 else -c))
                out[2 * p, i] = r * ca
                out[2 * p + 1, i] = r * sa
        for l_ in range(L):
            for d in range(Z):
                j = off + l_ * Z + d
                eps[l_, b, d] = out[j & 3, j >> 2]
