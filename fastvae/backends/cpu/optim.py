"""Numba kernels: the gradient's norm and clipping scale, Adam and SGD over the flat buffer,
and the weights' moving average (kernels/optim.cu)."""
from __future__ import annotations

import math

import numpy as np

from ..codes import MOMENT_FLUSH
from ..nbmath import jit
from ..reference import clip_scale_of


@jit
def sq_norm(g):
    """Sum of squares of the flat vector g, accumulated in float64."""
    acc = 0.0
    for i in range(g.shape[0]):
        v = np.float64(g[i])
        acc += v * v
    return acc


def clip_scale(scale, norm, g, clip_norm):
    """norm[0] <- |g|, scale[0] <- min(1, clip_norm / (|g| + 1e-6)), or NaN and norm[1] += 1
    when |g| is not finite (contract: reference.clip_scale): the Numba squared norm, then
    the reference's few scalar operations."""
    clip_scale_of(scale, norm, sq_norm(g), clip_norm)


@jit
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
        mi = mi if abs(mi) >= tiny else zero  # see MOMENT_FLUSH in backends/codes.py
        vi = vi if vi >= tiny else zero
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + e)


@jit
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


@jit
def average_step(avg, p, weight):
    """avg (P,) += weight * (p - avg), in place (contract: reference.average_step)."""
    w = avg.dtype.type(weight)
    for i in range(avg.shape[0]):
        avg[i] += w * (p[i] - avg[i])
