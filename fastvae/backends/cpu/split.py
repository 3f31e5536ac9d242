"""The cpu kernels on every core: each serial kernel run on row ranges (or parameter ranges)
by the pool (:mod:`fastvae.backends.cpu.pool`), with the contracts of reference.py.

Two kinds of cut, so that the bits never depend on the thread count:
- a kernel whose every output depends on its own row (or parameter) alone (the activation,
  the noise, Adam, the rounding, the data check's exact counts) is cut into one chunk per
  thread: any cut gives the same bits, and one thread calls the serial kernel itself;
- a kernel that also sums over rows (a bias gradient, the log-scale or dispersion
  gradient) is cut by its shape alone (:func:`~fastvae.backends.cpu.pool.n_chunks`), each
  chunk writes partial sums, and they are added in chunk order.
A kernel of about 65k elements or fewer (everything at batch 128 of the canonical model but
Adam) stays whole on the calling thread; a block kernel's output counts as BLOCK_COST
elements.  The partial-sum buffers (chunks x columns, a few
kB) and the chunks' views are the only allocations here.
"""
from __future__ import annotations

import numpy as np

from ..nbmath import jit
from ..reference_bf16 import check_half
from . import bf16 as _bf16
from . import blocks as _blocks
from . import data as _data
from . import dense as _dense
from . import likelihood as _lik
from . import optim as _optim
from . import reparam as _reparam
from .pool import bounds, get_num_threads, n_chunks, run


@jit
def _sum_chunks(out, parts):
    """out (N,) = parts[0] + parts[1] + ... (K, N), added in that order."""
    K, N = parts.shape
    for j in range(N):
        out[j] = parts[0, j]
    for k in range(1, K):
        for j in range(N):
            out[j] += parts[k, j]


def _rows(R, cols):
    """Row chunks of a kernel that sums over rows: fixed by the shape alone."""
    return bounds(R, n_chunks(R, cols))


def _spread(R, cols):
    """Row (or element) chunks of a kernel whose every output depends on its own row
    alone: any cut gives the same bits, so one chunk per thread (one thread: the serial
    kernel, with nothing allocated)."""
    return bounds(R, min(get_num_threads(), n_chunks(R, cols)))


def bias_act_fwd(y, b, act, alpha, half=None):
    """y (B, N) <- act(y + b), in place; b (N,); half: y's bf16 bits too (contract:
    reference.bias_act_fwd)."""
    check_half("bias_act_fwd", half, y)
    parts = _spread(*y.shape)
    kernel = _dense.bias_act_fwd if half is None else _dense.bias_act_fwd_bf16
    extra = (lambda lo, hi: ()) if half is None else (lambda lo, hi: (half[lo:hi],))
    if len(parts) == 1:
        kernel(y, b, act, alpha, *extra(0, y.shape[0]))
        return
    run(kernel, [(y[lo:hi], b, act, alpha, *extra(lo, hi)) for lo, hi in parts])


def act_bias_bwd(da, db, dy, y, act, alpha, half=None):
    """da (B, N) = dy * act'(.), db (N,) = sum_rows da; half: da's bf16 bits too (contract:
    reference.act_bias_bwd)."""
    check_half("act_bias_bwd", half, da)
    parts = _rows(*y.shape)
    kernel = _dense.act_bias_bwd if half is None else _dense.act_bias_bwd_bf16
    extra = (lambda lo, hi: ()) if half is None else (lambda lo, hi: (half[lo:hi],))
    if len(parts) == 1:
        kernel(da, db, dy, y, act, alpha, *extra(0, y.shape[0]))
        return
    pdb = np.empty((len(parts), db.shape[0]), db.dtype)
    run(kernel, [(da[lo:hi], pdb[c], dy[lo:hi], y[lo:hi], act, alpha, *extra(lo, hi))
                 for c, (lo, hi) in enumerate(parts)])
    _sum_chunks(db, pdb)


def likelihood_fwd(loss_rows, out, b, x, logscale, kind):
    """Reconstruction loss per row (contract: reference.likelihood_fwd)."""
    parts = _spread(*out.shape)
    if len(parts) == 1 or out.shape[0] != x.shape[0]:  # (L > 1: rows cycle over x)
        _lik.likelihood_fwd(loss_rows, out, b, x, logscale, kind)
        return
    run(_lik.likelihood_fwd, [(loss_rows[lo:hi], out[lo:hi], b, x[lo:hi], logscale, kind)
                              for lo, hi in parts])


def likelihood_fwd_bwd(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                       learn_scale, grad_scale, half=None):
    """The loss per row and its gradient in one pass; half: dout's bf16 bits too (contract:
    reference)."""
    check_half("likelihood_fwd_bwd", half, dout)
    parts = _rows(*out.shape)
    kernel = _lik.likelihood_fwd_bwd if half is None else _lik.likelihood_fwd_bwd_bf16
    extra = (lambda lo, hi: ()) if half is None else (lambda lo, hi: (half[lo:hi],))
    if len(parts) == 1 or out.shape[0] != x.shape[0]:
        kernel(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind, learn_scale,
               grad_scale, *extra(0, out.shape[0]))
        return
    K = len(parts)
    pdb = np.empty((K, db.shape[0]), db.dtype)
    pls = np.zeros((K, dlogscale.shape[0]), dlogscale.dtype)
    run(kernel,
        [(dout[lo:hi], loss_rows[lo:hi], pdb[c], pls[c], out[lo:hi], b, x[lo:hi], logscale,
          kind, learn_scale, grad_scale, *extra(lo, hi)) for c, (lo, hi) in enumerate(parts)])
    _sum_chunks(db, pdb)
    if learn_scale:
        _sum_chunks(dlogscale, pls)


#: a block kernel's decoder output costs about this many elementwise kernels' elements (an
#: exp and a log1p per cell, a softmax per categorical column: 7-9 ns per output measured,
#: against about 1 ns), so its chunks are cut for R x P x BLOCK_COST elements: wa_churn's
#: 512 x 121 outputs ran on one thread in 0.41 ms before
BLOCK_COST = 8


def blocks_fwd(loss_rows, out, b, x, aux, cols, meta):
    """A block model's loss per row (contract: reference_blocks.blocks_fwd)."""
    parts = _spread(out.shape[0], out.shape[1] * BLOCK_COST)
    if len(parts) == 1 or out.shape[0] != x.shape[0]:
        _blocks.blocks_fwd(loss_rows, out, b, x, aux, cols, meta)
        return
    tables = _blocks.blocks_tables(aux, cols, meta)  # (once, not once per chunk)
    run(_blocks.blocks_fwd_with, [(loss_rows[lo:hi], out[lo:hi], b, x[lo:hi], aux, cols, meta,
                                   tables) for lo, hi in parts])


def blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale):
    """A block model's loss per row and its gradient (contract: reference_blocks)."""
    parts = _rows(out.shape[0], out.shape[1] * BLOCK_COST)
    if len(parts) == 1 or out.shape[0] != x.shape[0]:
        _blocks.blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta,
                               grad_scale)
        return
    K = len(parts)
    pdb = np.empty((K, db.shape[0]), db.dtype)
    pda = np.empty((K, daux.shape[0]), daux.dtype)
    tables = _blocks.blocks_tables(aux, cols, meta)  # (once, not once per chunk)
    run(_blocks.blocks_fwd_bwd_with,
        [(dout[lo:hi], loss_rows[lo:hi], pdb[c], pda[c], out[lo:hi], b, x[lo:hi], aux, cols,
          meta, grad_scale, tables) for c, (lo, hi) in enumerate(parts)])
    _sum_chunks(db, pdb)
    _sum_chunks(daux, pda)


def encoder_input(xin, x, src, mode):
    """A block model's dense encoder inputs (contract: reference_blocks.encoder_input)."""
    parts = _spread(*xin.shape)
    if len(parts) == 1:
        _blocks.encoder_input(xin, x, src, mode)
        return
    run(_blocks.encoder_input, [(xin[lo:hi], x[lo:hi], src, mode) for lo, hi in parts])


def normal_eps(eps, key, row0, first):
    """eps (L, B, Z) <- counter-based normal noise (contract: reference.normal_eps): each
    row's noise is keyed by its place in the batch, so row ranges draw the same bits."""
    L, B, Z = eps.shape
    f32 = eps.dtype == np.float32
    kernel = _reparam.normal_eps_f32 if f32 else _reparam.normal_eps
    # (a float64 draw costs about 16 simple elements, a float32 one about 4)
    parts = _spread(B, L * Z * (4 if f32 else 16))
    if len(parts) == 1:
        kernel(eps, key, row0, first)
        return
    run(kernel, [(eps[:, lo:hi], key, row0 + lo, first) for lo, hi in parts])


def _chunk_views(*bufs):
    """[(chunk of each buffer)] over parameter ranges of flat buffers, one per thread."""
    return [tuple(b[lo:hi] for b in bufs) for lo, hi in _spread(bufs[0].shape[0], 4)]


def adam_step(p, m, v, g, lr, beta1, beta2, eps, weight_decay, decoupled, step, grad_scale):
    """One Adam / AdamW update over flat buffers, in place (contract: reference.adam_step)."""
    if len(_spread(p.shape[0], 4)) == 1:  # (an update reads and writes four arrays)
        _optim.adam_step(p, m, v, g, lr, beta1, beta2, eps, weight_decay, decoupled, step,
                         grad_scale)
        return
    run(_optim.adam_step, [c + (lr, beta1, beta2, eps, weight_decay, decoupled, step,
                                grad_scale) for c in _chunk_views(p, m, v, g)])


def sgd_step(p, buf, g, lr, momentum, nesterov, weight_decay, step, grad_scale):
    """One SGD update over flat buffers (contract: reference.sgd_step)."""
    if len(_spread(p.shape[0], 4)) == 1:
        _optim.sgd_step(p, buf, g, lr, momentum, nesterov, weight_decay, step, grad_scale)
        return
    run(_optim.sgd_step, [c + (lr, momentum, nesterov, weight_decay, step, grad_scale)
                          for c in _chunk_views(p, buf, g)])


def average_step(avg, p, weight):
    """One step of the weights' moving average (contract: reference.average_step)."""
    if len(_spread(avg.shape[0], 4)) == 1:
        _optim.average_step(avg, p, weight)
        return
    run(_optim.average_step, [c + (weight,) for c in _chunk_views(avg, p)])


def check_data(x, lo, hi):
    """(non-finite entries, finite entries outside [lo, hi]) of x (contract: reference)."""
    parts = _spread(*x.shape)  # (counts: exact in any order)
    if len(parts) == 1:
        return _data.check_data(x, lo, hi)
    counts = [None] * len(parts)

    def one(c, a, b):
        counts[c] = _data.check_data(x[a:b], lo, hi)

    run(one, [(c, a, b) for c, (a, b) in enumerate(parts)])
    return sum(n for n, _ in counts), sum(n for _, n in counts)


def to_bf16(dst, src):
    """dst (uint16) <- src (float32) rounded to bfloat16 (contract: reference_bf16.to_bf16)."""
    d, s = dst.reshape(-1), src.reshape(-1)
    n = s.shape[0]
    # (memory-bound: a quarter of the work per element)
    parts = bounds(n, min(get_num_threads(), n_chunks(n // 4)))
    if len(parts) == 1:
        _bf16.to_bf16(d, s)
        return
    run(_bf16.to_bf16, [(d[lo:hi], s[lo:hi]) for lo, hi in parts])
