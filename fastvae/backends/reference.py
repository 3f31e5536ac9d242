"""Plain NumPy kernels: the living definition of every fused step, and the test oracle.

Every kernel here has a twin of the same name and argument order in ``cpu/`` (Numba)
and ``cuda/`` (CuPy and the CUDA C of ``kernels/*.cu``; the host data path's kernels,
:data:`HOST_KERNELS`, have no cuda twin).  :data:`KERNELS`, computed at the end of this
file from its public functions, lists them all, and the tests hold cpu/ and cuda/ to it.
Conventions, after llm.c:

- outputs first, then inputs, then scalars;
- gradients are *written*, never accumulated into;
- shapes use B = batch rows, R = L*B decoder rows (L latent samples per datapoint),
  N = layer width, Z = latent size, D = data dimension.

Clarity wins over speed in this file: temporaries are allowed here and nowhere else.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from . import reference_bf16 as _bf16
from . import reference_blocks as _blocks
from .reference_bf16 import (bf16_support, matmul_bf16, matmul_f32_beside_bf16,  # noqa: F401
                             to_bf16)
from .reference_blocks import (block_cells, blocks_bwd, blocks_fwd, blocks_fwd_bwd,  # noqa: F401
                               decoder_input, embed_bwd, embed_fwd, encoder_input)
from . import codes as _codes
from .codes import (ACT_ELU, ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU, ACT_SIGMOID,
                    ACT_SOFTPLUS, ACT_TANH, LIK_BERNOULLI, LIK_GAUSSIAN, MOMENT_FLUSH, PHILOX_M, PHILOX_W)

NAME = "numpy"
xp = np
DEVICE = False  # arrays live in host memory: reading a scalar costs nothing

LOG_2PI = float(np.log(2.0 * np.pi))

# MOMENT_FLUSH (fastvae.backends.codes): optimizer moments smaller than it are stored as zero


def asarray(a, dtype=None):
    """Bring ``a`` to this backend's array type (NumPy) without copying when possible."""
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    return np.asarray(a)


def matmul(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) = op(a) @ op(b), op = transpose when the flag is set.

    Transposes are views; NumPy passes them to BLAS as transpose flags.
    """
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


def _sigmoid(a):
    """1 / (1 + exp(-a)) without cancellation for large |a| (0.5 (1 + tanh(a/2)) loses every
    digit of sigmoid(-20) to rounding; this form is exact to a few ulp everywhere)."""
    e = np.exp(-np.abs(a))
    r = 1 / (1 + e)
    return np.where(a >= 0, r, e * r)


def _softplus(a):
    """log(1 + exp(a)), stably."""
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def _act(a, act, alpha):
    if act == ACT_IDENTITY:
        return a
    if act == ACT_RELU:
        return np.maximum(a, 0)
    if act == ACT_LEAKY_RELU:
        return np.where(a > 0, a, alpha * a)
    if act == ACT_TANH:
        return np.tanh(a)
    if act == ACT_SIGMOID:
        return _sigmoid(a)
    if act == ACT_ELU:
        return np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0)))
    if act == ACT_SOFTPLUS:
        return _softplus(a)
    raise ValueError(f"unknown activation code {act}")


def _act_grad_from_output(y, act, alpha):
    """act'(a) written as a function of y = act(a): forward keeps only y."""
    if act == ACT_IDENTITY:
        return np.ones_like(y)
    if act == ACT_RELU:
        return (y > 0).astype(y.dtype)
    if act == ACT_LEAKY_RELU:
        return np.where(y > 0, 1, alpha).astype(y.dtype)
    if act == ACT_TANH:
        return (1 - y) * (1 + y)  # not 1 - y^2, which cancels where y -> +-1
    if act == ACT_SIGMOID:
        return y * (1 - y)
    if act == ACT_ELU:
        return np.where(y > 0, 1, y + alpha).astype(y.dtype)
    if act == ACT_SOFTPLUS:
        # sigmoid(a) = 1 - exp(-softplus(a)), written with expm1 in every backend: 1 - exp(-y)
        # loses the relative precision of small y (a << 0) to cancellation
        return -np.expm1(-y)
    raise ValueError(f"unknown activation code {act}")


def _shadow(half, a):
    """half <- a rounded to bf16, when a kernel is given a ``half`` output (checked before
    the kernel writes anything): a bf16 product's operand rounded where it is written, not
    in a pass of its own (the bits of :func:`to_bf16`)."""
    if half is not None:
        _bf16.to_bf16(half, a)


def bias_act_fwd(y, b, act, alpha, half=None):
    """y (B, N) <- act(y + b), in place; b (N,).  ``half`` (B, N) uint16 or None: also
    receives the result's bf16 bits (to_bf16(half, y))."""
    _bf16.check_half("bias_act_fwd", half, y)
    y[...] = _act(y + b, act, alpha)
    _shadow(half, y)


def act_bias_bwd(da, db, dy, y, act, alpha, half=None):
    """da (B, N) = dy * act'(.) taken from the saved output y (B, N); db (N,) = sum_rows da.
    ``half`` (B, N) uint16 or None: also receives da's bf16 bits.

    ``da`` may be the same array as ``dy``.
    """
    _bf16.check_half("act_bias_bwd", half, da)
    da[...] = dy * _act_grad_from_output(y, act, alpha)
    db[...] = da.sum(axis=0)
    _shadow(half, da)


def reparam_kl_fwd(mu, logvar, sigma, z, kl, kl_dim, head, hb, eps, lv_min, lv_max):
    """Sampling step and analytic KL, fused.

    head (B, 2Z)  in: encoder head before bias; out: with bias added (mu | raw logvar).
                  The raw logvar is kept because the clamp's gradient needs it.
    hb (2Z,)      head bias.
    eps (L*B, Z)  standard normal noise, sample l of row b at l*B + b.
    mu, logvar, sigma (B, Z) out: logvar clamped to [lv_min, lv_max]; sigma = exp(logvar/2).
    z (L*B, Z)    out: mu + sigma * eps.
    kl (B,)       out: KL(q(z|x) || N(0, I)) per row, in nats.
    kl_dim (Z,)   out: batch mean of the per-dimension KL (what free bits compares).

    The KL of one dimension is 0.5 (mu^2 + (expm1(lv) - lv)): both terms are >= 0, so nothing
    cancels near collapse (mu, lv -> 0), where sigma^2 - 1 - lv would lose every digit in
    float32.  Outside the clamp range the KL continues linearly with its slope at the edge,
    0.5 expm1(lv_edge) (raw - lv_edge): the sample path is cut there, the KL's pull back into
    the range is not.
    """
    B, Z = mu.shape
    head += hb
    raw = head[:, Z:]
    mu[...] = head[:, :Z]
    logvar[...] = np.clip(raw, lv_min, lv_max)
    sigma[...] = np.exp(0.5 * logvar)
    L = z.shape[0] // B
    z[...] = (mu[None] + sigma[None] * eps.reshape(L, B, Z)).reshape(L * B, Z)
    em1 = np.expm1(logvar)
    per_dim = 0.5 * (mu * mu + (em1 - logvar)) + 0.5 * em1 * (raw - logvar)
    kl[...] = per_dim.sum(axis=1)
    kl_dim[...] = per_dim.mean(axis=0)


def reparam_kl_bwd(dhead, dhb, dz, eps, mu, sigma, head, kl_dim, kl_weight, free_bits,
                   lv_min, lv_max):
    """Gradient through the sample (saved eps) plus the analytic KL gradient.

    dz (L*B, Z)    dLoss/dz, already carrying the reconstruction's 1/(L*B) factor.
    kl_weight      beta / B: the KL term's weight in the loss, per row.
    free_bits      per-dimension floor on the batch-mean KL; a dimension whose kl_dim is
                   not above it contributes a constant, so its KL gradient is zero.
    dhead (B, 2Z)  out: [dmu | dlogvar].  The sample path's share of dlogvar is zero where
                   the clamp cut the raw logvar off; the KL's share, 0.5 expm1(lv) at the
                   clamped lv, is not (see reparam_kl_fwd).
    dhb (2Z,)      out: column sums of dhead.
    """
    B, Z = mu.shape
    L = dz.shape[0] // B
    dz3 = dz.reshape(L, B, Z)
    eps3 = eps.reshape(L, B, Z)
    active = (kl_dim > free_bits) if free_bits > 0 else np.ones(Z, bool)
    w = kl_weight * active
    raw = head[:, Z:]
    lv = np.clip(raw, lv_min, lv_max)
    dmu = dz3.sum(axis=0) + w * mu
    sample = (dz3 * eps3).sum(axis=0) * 0.5 * sigma
    dlv = np.where((raw >= lv_min) & (raw <= lv_max), sample, 0) + w * 0.5 * np.expm1(lv)
    dhead[:, :Z] = dmu
    dhead[:, Z:] = dlv
    dhb[...] = dhead.sum(axis=0)


def _recon_terms(out, b, x, logscale, kind):
    """Add the bias to out (R, D) in place; return (per-element -log p, r, inv_var), where
    r is x tiled to R rows (Bernoulli) or out - x (Gaussian) and inv_var is exp(-2 logscale)
    (Gaussian) or None.  Decoder row r reconstructs x[r % B]."""
    out += b
    B = x.shape[0]
    xr = np.tile(x, (out.shape[0] // B, 1))
    if kind == LIK_BERNOULLI:
        return _softplus(out) - xr * out, xr, None
    if kind == LIK_GAUSSIAN:
        inv_var = np.exp(-2 * logscale)
        r = out - xr
        return 0.5 * r * r * inv_var + logscale + 0.5 * LOG_2PI, r, inv_var
    raise ValueError(f"unknown likelihood code {kind}")


def likelihood_fwd(loss_rows, out, b, x, logscale, kind):
    """Reconstruction loss per row only (evaluation: no gradient is computed or written).

    out (R, D) in: decoder output before bias; out: with bias (logits or means).
    b (D,) output bias.  x (B, D) data; decoder row r reconstructs x[r % B].
    logscale (1,) or (D,): Gaussian log standard deviation (ignored for Bernoulli).
    loss_rows (R,) out: -log p(x | z) per row in nats.
    """
    terms, _, _ = _recon_terms(out, b, x, logscale, kind)
    loss_rows[...] = terms.sum(axis=1)


def likelihood_fwd_bwd(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                       learn_scale, grad_scale, half=None):
    """Reconstruction loss per row and its gradient, in one pass.

    out, b, x, logscale, loss_rows: as in :func:`likelihood_fwd`.
    dout (R, D)     out: grad_scale * d loss_row / d out.
    db (D,)         out: column sums of dout.
    dlogscale       out, only when learn_scale: grad_scale * d sum(loss_rows) / d logscale,
                    (1,) or (D,) like logscale.
    half (R, D)     uint16 or None: out, dout's bf16 bits (to_bf16(half, dout)).
    """
    _bf16.check_half("likelihood_fwd_bwd", half, dout)
    terms, r, inv_var = _recon_terms(out, b, x, logscale, kind)
    loss_rows[...] = terms.sum(axis=1)
    if kind == LIK_BERNOULLI:
        dout[...] = grad_scale * (_sigmoid(out) - r)  # r is x here
    else:
        dout[...] = grad_scale * r * inv_var
        if learn_scale:
            g = 1 - r * r * inv_var
            dlogscale[...] = grad_scale * (g.sum() if logscale.shape[0] == 1 else g.sum(axis=0))
    db[...] = dout.sum(axis=0)
    _shadow(half, dout)


def likelihood_bwd(dout, db, dlogscale, out, x, logscale, kind, learn_scale, row_scale,
                   scale):
    """The reconstruction loss's gradient alone, each row weighted: for the importance-
    weighted objectives, whose weights are known only once every row's loss is.

    out (R, D)     decoder output with its bias already added (by :func:`likelihood_fwd`).
    row_scale (R,) weight of each row's gradient; scale a scalar factor on all of them.
    dout (R, D)    out: scale * row_scale[r] * d loss_row / d out.
    db (D,)        out: column sums of dout.
    dlogscale      out, only when learn_scale: sum over rows of scale * row_scale[r] *
                   d loss_row / d logscale, (1,) or (D,) like logscale.
    """
    B = x.shape[0]
    xr = np.tile(x, (out.shape[0] // B, 1))
    w = (scale * row_scale)[:, None]
    if kind == LIK_BERNOULLI:
        dout[...] = w * (_sigmoid(out) - xr)
    else:
        inv_var = np.exp(-2 * logscale)
        r = out - xr
        dout[...] = w * r * inv_var
        if learn_scale:
            g = w * (1 - r * r * inv_var)
            dlogscale[...] = g.sum() if logscale.shape[0] == 1 else g.sum(axis=0)
    db[...] = dout.sum(axis=0)


def iwae_fwd(logw, wnorm, loss_b, loss_rows, z, eps, logvar):
    """The importance weights of K = R / B samples per datapoint, and the IWAE loss.

    loss_rows (R,) -log p(x|z) per sample row (row l*B + i is sample l of datapoint i);
    z, eps (R, Z) the samples and their noise; logvar (B, Z) clamped.
    logw (R,)   out: log w = log p(x|z) + log p(z) - log q(z|x)
                     = -loss_row - |z|^2/2 + |eps|^2/2 + sum(logvar)/2 (the 2 pi terms
                     cancel);
    wnorm (R,)  out: the normalised weights softmax over each datapoint's K samples;
    loss_b (B,) out: -(logsumexp_k log w_k - log K), the logsumexp taken with its maximum
                subtracted, so that log weights of -1e4 stay finite.
    """
    B = logvar.shape[0]
    K = loss_rows.shape[0] // B
    logw[...] = (-loss_rows - 0.5 * (z * z).sum(axis=1) + 0.5 * (eps * eps).sum(axis=1)
                 + np.tile(0.5 * logvar.sum(axis=1), K))
    lw = logw.reshape(K, B)
    m = lw.max(axis=0)
    lse = m + np.log(np.exp(lw - m).sum(axis=0))
    wnorm.reshape(K, B)[...] = np.exp(lw - lse)
    loss_b[...] = -(lse - np.log(K))


def reparam_iw_bwd(dhead, dhb, dz, eps, z, sigma, head, wnorm, inv_b, dreg, lv_min, lv_max):
    """The head's gradient under an importance-weighted objective (no analytic KL).

    dz (R, Z)     dLoss/dz through the decoder, each row already weighted by wnorm / B.
    wnorm (R,)    the normalised importance weights; inv_b = 1 / B.
    IWAE (dreg False): the total derivative of -(1/B) sum_i logsumexp_k log w_ik:
        per sample g = dz + wnorm z / B (log p(z) = -|z|^2/2), then dmu = sum_k g,
        dlogvar = sum_k g eps sigma / 2 - 1 / (2B) (log q's own 0.5 logvar; the weights
        sum to 1).
    DReG (dreg True, Tucker et al. 2019): q's parameters held fixed inside log q, and each
        sample weighted by wnorm^2: g = wnorm dz + wnorm^2 (z - eps / sigma) / B,
        dmu = sum_k g, dlogvar = sum_k g eps sigma / 2 (computed as wnorm dz eps sigma/2
        + wnorm^2 (z eps sigma - eps^2) / (2B), without dividing by sigma).
    Outside the logvar clamp every logvar term is zero (log q takes the clamped logvar).
    dhead (B, 2Z), dhb (2Z,) out as in reparam_kl_bwd.
    """
    B, Z = sigma.shape
    K = dz.shape[0] // B
    dz3, e3, z3 = (a.reshape(K, B, Z) for a in (dz, eps, z))
    w = wnorm.reshape(K, B, 1)
    if dreg:
        g = w * dz3 + w * w * inv_b * (z3 - e3 / sigma)
        dlv = (w * dz3 * e3 * 0.5 * sigma + w * w * inv_b * 0.5 * (z3 * e3 * sigma - e3 * e3)).sum(0)
    else:
        g = dz3 + w * z3 * inv_b
        dlv = (g * e3).sum(0) * 0.5 * sigma - 0.5 * inv_b
    raw = head[:, Z:]
    dhead[:, :Z] = g.sum(axis=0)
    dhead[:, Z:] = np.where((raw >= lv_min) & (raw <= lv_max), dlv, 0)
    dhb[...] = dhead.sum(axis=0)


def logscale_fwd(ls, raw, floor):
    """ls = floor + softplus(raw - floor): a learned log-scale with a soft floor (as the
    sigma-VAE does), so a constant pixel cannot drive it to -inf.  ls, raw (S,), S = 1 or D."""
    ls[...] = floor + _softplus(raw - floor)


def logscale_bwd(draw, dls, raw, floor):
    """draw (S,) = dls * d logscale_fwd / d raw = dls * sigmoid(raw - floor)."""
    draw[...] = dls * _sigmoid(raw - floor)


def check_data(x, lo, hi):
    """Return (number of non-finite entries, number outside [lo, hi]) of x (B, D)."""
    finite = np.isfinite(x)
    n_bad = int(x.size - np.count_nonzero(finite))
    n_out = int(np.count_nonzero(finite & ((x < lo) | (x > hi))))
    return n_bad, n_out


def sq_norm(g):
    """Sum of squares of the flat vector g, as a Python float (for clipping by global norm)."""
    g64 = g.astype(np.float64)
    return float(g64 @ g64)


def clip_scale(scale, norm, g, clip_norm):
    """Clipping by global norm: the factor that the update multiplies the gradient by.

    g (P,) the flat gradient.  norm (2,) float64: norm[0] <- |g| (from sq_norm, in float64).
    scale (1,) float64 <- min(1, clip_norm / (|g| + 1e-6)).  When |g| is not finite, scale
    <- NaN and norm[1] += 1 (a count of skipped updates): on a GPU, adam_step and sgd_step
    given a NaN scale leave everything as it was; the host optimizer raises instead.
    """
    clip_scale_of(scale, norm, sq_norm(g), clip_norm)


def clip_scale_of(scale, norm, sq, clip_norm):
    """:func:`clip_scale` given the squared norm ``sq`` (a float): the host backends' shared
    last step."""
    nrm = math.sqrt(sq)
    norm[0] = nrm
    if math.isfinite(nrm):
        scale[0] = min(1.0, clip_norm / (nrm + 1e-6))
    else:
        scale[0] = math.nan
        norm[1] += 1


def adam_step(p, m, v, g, lr, beta1, beta2, eps, weight_decay, decoupled, step, grad_scale):
    """One Adam / AdamW update over the flat buffers p, m, v, g (all (P,)), in place.

    Matches torch.optim.Adam (L2 weight decay added to the gradient) when ``decoupled`` is
    False and torch.optim.AdamW (p *= 1 - lr*wd) when True; ``step`` counts from 1;
    ``grad_scale`` multiplies g first (1.0, or the clipping factor).
    """
    gg = g * grad_scale
    if decoupled:
        p *= 1 - lr * weight_decay
    elif weight_decay:
        gg = gg + weight_decay * p
    m[...] = beta1 * m + (1 - beta1) * gg
    v[...] = beta2 * v + (1 - beta2) * gg * gg
    m[np.abs(m) < MOMENT_FLUSH] = 0
    v[v < MOMENT_FLUSH] = 0
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    p -= (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps)


def sgd_step(p, buf, g, lr, momentum, nesterov, weight_decay, step, grad_scale):
    """One SGD update (torch.optim.SGD semantics, dampening 0) over flat buffers, in place.

    buf (P,) is the momentum buffer; at step 1 it is set to the gradient.
    """
    gg = g * grad_scale
    if weight_decay:
        gg = gg + weight_decay * p
    if momentum:
        if step == 1:
            buf[...] = gg
        else:
            buf[...] = momentum * buf + gg
        buf[np.abs(buf) < MOMENT_FLUSH] = 0
        gg = gg + momentum * buf if nesterov else buf
    p -= lr * gg


def average_step(avg, p, weight):
    """avg (P,) += weight * (p - avg), in place, in avg's precision: one step of an
    exponential moving average of the flat parameters p (P,) (``weight``: 1 - the decay)."""
    T = avg.dtype.type
    d = p - avg
    d *= T(weight)
    avg += d


def loss_stats(stats, acc, loss_rows, kl, kl_dim, free_bits, kl_coef, weight, obj_rows):
    """The step's loss statistics, summed in float64 where they are computed.

    loss_rows (R,), kl (B,), kl_dim (Z,): from the likelihood and reparam_kl_fwd.
    obj_rows (B,) or (0,): the objective per datapoint when it is not the ELBO (the IWAE
        loss of iwae_fwd); empty for the ELBO.
    stats (3,) float64 out: [loss, recon mean, kl mean], where recon mean = sum(loss_rows)/R,
        kl mean = sum(kl)/B and loss = the mean of obj_rows when given, else recon mean +
        kl_coef * kl_obj, kl_obj being sum_k max(kl_dim[k], free_bits) when free_bits > 0,
        else the kl mean.
    acc (3,) float64: += weight * stats, unless weight is 0 (a running sum for fit).
    On a GPU these numbers stay on the device until someone reads them.
    """
    recon = float(np.sum(loss_rows, dtype=np.float64)) / loss_rows.shape[0]
    klm = float(np.sum(kl, dtype=np.float64)) / kl.shape[0]
    obj = (float(np.maximum(kl_dim.astype(np.float64), free_bits).sum()) if free_bits > 0
           else klm)
    if obj_rows.shape[0]:
        stats[0] = float(np.sum(obj_rows, dtype=np.float64)) / obj_rows.shape[0]
    else:
        stats[0] = recon + kl_coef * obj
    stats[1] = recon
    stats[2] = klm
    if weight != 0:
        acc += weight * stats


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 (Salmon et al., SC'11) on uint32 arrays c0..c3 with the key (k0, k1);
    returns the four output words as uint32 arrays.  The constants PHILOX_M, PHILOX_W are
    fastvae.backends.codes'; the answers match Random123's known-answer vectors."""
    c = [np.asarray(v, dtype=np.uint32) for v in (c0, c1, c2, c3)]
    k0, k1 = int(k0) & 0xFFFFFFFF, int(k1) & 0xFFFFFFFF
    for _ in range(10):
        p0 = np.uint64(PHILOX_M[0]) * c[0].astype(np.uint64)
        p1 = np.uint64(PHILOX_M[1]) * c[2].astype(np.uint64)
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), p0.astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), p1.astype(np.uint32)
        c = [hi1 ^ c[1] ^ np.uint32(k0), lo1, hi0 ^ c[3] ^ np.uint32(k1), lo0]
        k0 = (k0 + PHILOX_W[0]) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W[1]) & 0xFFFFFFFF
    return c


def normal_eps(eps, key, row0, first):
    """eps (L, B, Z) <- standard normal noise, counter-based: eps[l, b, d] is element
    first + l*Z + d of the stream of counter row0 + b under ``key`` (two uint32 words).

    Element e of the stream of counter c is word e % 4 of philox4x32_10((e//4 mod 2^32,
    e//4 div 2^32, c mod 2^32, c div 2^32), key); words (0, 1) and (2, 3) each make a
    Box-Muller pair in float64 (u1 = (w + 1) / 2^32 in (0, 1], u2 = w / 2^32), rounded to
    eps's dtype at the end.  So a row's noise depends on its counter (the row's place in the
    global batch, or in the dataset) and its element index alone, never on how rows are
    batched, split over processes or chunked; training puts the step in the high word of
    the element index (first = step * 2^34).  The same on every backend.

    float32 eps take a float32 Box-Muller of the same words instead (:func:`box_muller_f32`):
    polynomial, so that it vectorises, and the same bits on every backend.
    """
    L, B, Z = eps.shape
    first, n = int(first), L * Z
    q0, q1 = first // 4, -(-(first + n) // 4)
    q = np.arange(q0, q1, dtype=np.uint64)
    rows = np.arange(B, dtype=np.uint64) + np.uint64(row0)
    c = [np.broadcast_to(v, (B, q.size)) for v in (q.astype(np.uint32)[None],
                                                   (q >> np.uint64(32)).astype(np.uint32)[None],
                                                   rows.astype(np.uint32)[:, None],
                                                   (rows >> np.uint64(32)).astype(np.uint32)[:, None])]
    w = np.stack(philox4x32_10(*c, key[0], key[1]), axis=2).reshape(B, -1)
    if eps.dtype == np.float32:
        zz = np.stack(box_muller_f32(w[:, 0::2], w[:, 1::2]), axis=2).reshape(B, -1)
        eps[...] = zz[:, first - 4 * q0: first - 4 * q0 + n].reshape(B, L, Z).transpose(1, 0, 2)
        return
    u1 = (w[:, 0::2].astype(np.float64) + 1.0) * 2.0 ** -32
    u2 = w[:, 1::2].astype(np.float64) * 2.0 ** -32
    rad = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    zz = np.stack((rad * np.cos(angle), rad * np.sin(angle)), axis=2).reshape(B, -1)
    eps[...] = zz[:, first - 4 * q0: first - 4 * q0 + n].reshape(B, L, Z).transpose(1, 0, 2)


def box_muller_f32(w1, w2):
    """Two standard normals (float32 arrays) from two uint32 words each (arrays of one
    shape), in float32 with the constants NOISE_* of fastvae.backends.codes, every operation
    an IEEE float32 one in this order (the kernels repeat it: no fused multiply-add):

    - radius: u = float32(w1 + 1), in [1, 2^32] (u / 2^32 is the uniform in (0, 1]), is
      m 2^e with m in [1/sqrt 2, sqrt 2] (from u's bits); t = (m - 1) / (m + 1);
      ln(u / 2^32) = t (L0 + t^2 (L1 + t^2 (... L4))) + (e - 32) ln 2; r = sqrt(-2 ln).
    - angle: the top two bits of w2 pick the quadrant k, the other 30 the place in it:
      f = float32(w2 mod 2^30) 2^-30, x = (f - 1/2) pi/2, and the angle is
      k pi/2 + pi/4 + x, whose cosine and sine are (c - s, c + s) sqrt(1/2) with c, s the
      polynomials for cos x and sin x, then turned by k quarter turns.
    - (r cos, r sin) of the angle.
    """
    f32 = np.float32
    K = {k: f32(v) for k, v in _codes.noise_f32().items()}
    u = (np.asarray(w1, np.int64) + 1).astype(f32)
    bits = u.view(np.int32)
    e = (bits >> 23) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).astype(np.int32).view(f32)
    big = m > K["NOISE_SQRT2"]
    m = np.where(big, m * f32(0.5), m)
    e = np.where(big, e + 1, e)
    t = (m - f32(1)) / (m + f32(1))
    t2 = t * t
    p = K["NOISE_LOG4"]
    for i in (3, 2, 1, 0):
        p = K[f"NOISE_LOG{i}"] + t2 * p
    ln = t * p + (e - 32).astype(f32) * K["NOISE_LN2"]
    r = np.sqrt(f32(-2) * ln)
    w2 = np.asarray(w2, np.int64)
    k = w2 >> 30
    x = ((w2 & 0x3FFFFFFF).astype(f32) * f32(2.0 ** -30) - f32(0.5)) * K["NOISE_PIO2"]
    x2 = x * x
    ps, pc = K["NOISE_SIN3"], K["NOISE_COS3"]
    for i in (2, 1, 0):
        ps = K[f"NOISE_SIN{i}"] + x2 * ps
        pc = K[f"NOISE_COS{i}"] + x2 * pc
    sn = x + x * (x2 * ps)
    cs = f32(1) + x2 * pc
    c = (cs - sn) * K["NOISE_SQRT1_2"]  # cos(pi/4 + x)
    s = (cs + sn) * K["NOISE_SQRT1_2"]  # sin(pi/4 + x)
    cos_a = np.where(k == 0, c, np.where(k == 1, -s, np.where(k == 2, -c, s)))
    sin_a = np.where(k == 0, s, np.where(k == 1, c, np.where(k == 2, -s, -c)))
    return (r * cos_a).astype(f32), (r * sin_a).astype(f32)


def gather_rows(out, X, idx, scale):
    """out (B, D) = scale * X[idx], converted to out's dtype first; X (N, D) uint8 or float,
    idx (B,) integer row numbers (a batch gathered where the data lives)."""
    out[...] = X[idx].astype(out.dtype) * out.dtype.type(scale)


def scatter_rows(out, dest, X, idx, scale):
    """out[dest[k]] = scale * X[idx[k]] for k < B: a gather whose reads go in the order of
    idx (the host data path passes idx sorted, so a memory-mapped file is read in order)."""
    out[dest] = X[idx].astype(out.dtype) * out.dtype.type(scale)


def binarize_rows(x, u):
    """x (B, D) <- 1 where u < x else 0, in place: Bernoulli draws with probabilities x from
    uniform draws u (B, D) in [0, 1) (dynamic binarization)."""
    x[...] = (u < x).astype(x.dtype)


# ------------------------------------------------------------------------ the kernel list
#: the host data path's kernels (batches made in host memory): cpu/ has a twin of each,
#: cuda/ none
HOST_KERNELS = ("scatter_rows", "binarize_rows")
#: the public functions of this module that are not kernels: array helpers, and the
#: generator under normal_eps (cpu/reparam.py has its own; the CUDA one is a device function)
HELPERS = ("asarray", "to_numpy", "philox4x32_10", "box_muller_f32", "clip_scale_of", "block_cells",
           "bf16_support")
#: the modules whose public functions are reference kernels: this one, the column-block
#: models' kernels and the bf16 products (imported above, so that they are reached as reference.<name>)
MODULES = (__name__, _blocks.__name__, _bf16.__name__)
#: every kernel, in the order of this file: each public function defined here or in
#: reference_blocks but the HELPERS.  cpu/ has a twin of each, and cuda/ of each but the
#: HOST_KERNELS, of the same name and parameters (tests/test_cuda_build.py): a kernel added
#: here without its twins fails there.
KERNELS = tuple(name for name, f in list(globals().items())
                if inspect.isfunction(f) and f.__module__ in MODULES
                and not name.startswith("_") and name not in HELPERS)

