"""Launchers of kernels/optim.cu: the squared norm, clipping by global norm, the Adam and
SGD updates over the flat buffers, and the weights' moving average."""
from __future__ import annotations

import math

import numpy as np

from ..cuda_device import BLOCK_1D, grid_1d, kernel_name
from .launch import device, partials, scalar


def _sq_norm_partials(g):
    """(part, blocks): float64 sums of squares of the flat vector g, one per block, queued."""
    dev = device()
    blocks = grid_1d(g.size, dev.sm_count)
    part = partials(np.float64, blocks)[0]
    dev.launch(kernel_name("sq_norm_partial", g.dtype), (blocks,), (BLOCK_1D,),
               (part, g, np.int64(g.size)))
    return part, blocks


def sq_norm(g):
    """Sum of squares of the flat vector g, accumulated in float64; waits for the GPU."""
    return float(device().to_numpy(_sq_norm_partials(g)[0]).sum())


def _scale_args(T, grad_scale):
    """(scalar, device pointer) of an update's gradient scale: a float (times a constant 1
    on the device), or a device array of one float64 written by clip_scale (times 1)."""
    if isinstance(grad_scale, device().xp.ndarray):
        return scalar(T, 1.0), grad_scale
    return scalar(T, grad_scale), device().unit()


def clip_scale(scale, norm, g, clip_norm):
    """norm[0] (of a (2,) float64) <- |g| and scale (1,) float64 <- min(1, clip_norm /
    (|g| + 1e-6)), or NaN when |g| is not finite (then adam_step and sgd_step leave
    everything as it was, and norm[1] counts one more skipped update), all on the device:
    clipping by global norm without waiting for the GPU (contract: reference.clip_scale)."""
    part, blocks = _sq_norm_partials(g)
    device().launch(kernel_name("clip_scale", np.float64), (1,), (32,),
                    (scale, norm, part, np.int32(blocks), np.float64(clip_norm)))


def adam_step(p, m, v, g, lr, beta1, beta2, eps, weight_decay, decoupled, step, grad_scale):
    """One Adam / AdamW update over flat buffers, in place (contract: reference.adam_step;
    ``grad_scale`` may also be clip_scale's device array)."""
    dev = device()
    T = p.dtype
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    l2 = 0.0 if decoupled else weight_decay
    shrink = 1.0 - lr * weight_decay if decoupled else 1.0
    n = p.size
    dev.launch(kernel_name("adam_step", T), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (p, m, v, g, np.int64(n), scalar(T, lr / bc1), scalar(T, 1.0 / math.sqrt(bc2)),
                scalar(T, beta1), scalar(T, beta2), scalar(T, eps), scalar(T, l2), scalar(T, shrink),
                *_scale_args(T, grad_scale)))


def sgd_step(p, buf, g, lr, momentum, nesterov, weight_decay, step, grad_scale):
    """One SGD update (torch.optim.SGD, dampening 0) over flat buffers (contract: reference;
    ``grad_scale`` may also be clip_scale's device array)."""
    dev = device()
    T = p.dtype
    n = p.size
    dev.launch(kernel_name("sgd_step", T), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (p, buf, g, np.int64(n), scalar(T, lr), scalar(T, momentum), scalar(T, weight_decay),
                np.int32(bool(nesterov)), np.int32(step == 1), *_scale_args(T, grad_scale)))


def average_step(avg, p, weight):
    """avg (P,) += weight * (p - avg), in place (contract: reference.average_step)."""
    dev = device()
    T = avg.dtype
    n = avg.size
    dev.launch(kernel_name("average_step", T), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (avg, p, np.int64(n), scalar(T, weight)))
