"""Launchers of kernels/likelihood.cu: the one-likelihood reconstruction loss and its
gradient, the learned log-scales, and the step's loss statistics."""
from __future__ import annotations

import numpy as np

from ..codes import LIK_GAUSSIAN
from ..cuda_device import BLOCK_1D, grid_1d, kernel_name, tile_plan
from .launch import device, finish, half_arg, partials, scalar


def likelihood_fwd_bwd(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                       learn_scale, grad_scale, half=None):
    """Reconstruction loss per row and its gradient in one pass; ``half``: dout's bf16 bits
    too (contract: reference)."""
    dev = device()
    R, D = out.shape
    B = x.shape[0]
    T = out.dtype
    grid, block, per, n_chunks = tile_plan(R, D, dev.sm_count)
    n_tiles = grid[0]
    learn = bool(learn_scale) and kind == LIK_GAUSSIAN
    shared = logscale.shape[0] == 1
    rowpart, dbpart, lspart = partials(
        T, R * n_tiles if n_tiles > 1 else 0, D * n_chunks if n_chunks > 1 else 0,
        D * n_chunks if learn and (n_chunks > 1 or shared) else 0)
    rowpart = loss_rows if n_tiles == 1 else rowpart
    dbpart = db if n_chunks == 1 else dbpart
    if learn and not shared and n_chunks == 1:
        lspart = dlogscale
    dev.launch(kernel_name("likelihood_fwd_bwd", T), grid, block,
               (dout, rowpart, dbpart, lspart if learn else dbpart, out, b, x, logscale,
                np.int32(R), np.int32(B), np.int32(D), np.int32(per), np.int32(kind),
                np.int32(learn), np.int32(shared), scalar(T, grad_scale),
                *half_arg("likelihood_fwd_bwd", half, dout)))
    if n_tiles > 1:
        finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)
    if n_chunks > 1:
        finish(dev, db, dbpart, n_chunks, D, 1.0)
    if learn and shared:  # one log-scale: add every row chunk and every column
        finish(dev, dlogscale, lspart, n_chunks * D, 1, 1.0)
    elif learn and n_chunks > 1:
        finish(dev, dlogscale, lspart, n_chunks, D, 1.0)


def likelihood_fwd(loss_rows, out, b, x, logscale, kind):
    """Reconstruction loss per row only, for evaluation (contract: reference.likelihood_fwd)."""
    dev = device()
    R, D = out.shape
    T = out.dtype
    grid, block, per, _ = tile_plan(R, D, dev.sm_count)
    n_tiles = grid[0]
    rowpart = loss_rows if n_tiles == 1 else partials(T, R * n_tiles)[0]
    dev.launch(kernel_name("likelihood_fwd", T), grid, block,
               (rowpart, out, b, x, logscale, np.int32(R), np.int32(x.shape[0]), np.int32(D),
                np.int32(per), np.int32(kind), np.int32(logscale.shape[0] == 1)))
    if n_tiles > 1:
        finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)


def logscale_fwd(ls, raw, floor):
    """ls (S,) = floor + softplus(raw - floor) (contract: reference.logscale_fwd)."""
    dev = device()
    S = ls.shape[0]
    dev.launch(kernel_name("logscale_fwd", ls.dtype), (grid_1d(S, dev.sm_count),), (BLOCK_1D,),
               (ls, raw, np.int32(S), scalar(ls.dtype, floor)))


def logscale_bwd(draw, dls, raw, floor):
    """draw (S,) = dls * sigmoid(raw - floor) (contract: reference.logscale_bwd)."""
    dev = device()
    S = raw.shape[0]
    dev.launch(kernel_name("logscale_bwd", raw.dtype), (grid_1d(S, dev.sm_count),),
               (BLOCK_1D,), (draw, dls, raw, np.int32(S), scalar(raw.dtype, floor)))


def loss_stats(stats, acc, loss_rows, kl, kl_dim, free_bits, kl_coef, weight, obj_rows):
    """stats (3,) float64 = [loss, recon mean, kl mean]; acc (3,) += weight * stats
    (contract: reference.loss_stats).  Stays on the device: nothing waits."""
    dev = device()
    dev.launch(kernel_name("loss_stats", loss_rows.dtype), (1,), (BLOCK_1D,),
               (stats, acc, loss_rows, kl, kl_dim, obj_rows, np.int32(loss_rows.shape[0]),
                np.int32(kl.shape[0]), np.int32(kl_dim.shape[0]), np.int32(obj_rows.shape[0]),
                np.float64(free_bits), np.float64(kl_coef), np.float64(weight)))


def likelihood_bwd(dout, db, dlogscale, out, x, logscale, kind, learn_scale, row_scale,
                   scale):
    """Row-weighted loss gradient of biased logits/means (contract: reference.likelihood_bwd)."""
    dev = device()
    R, D = out.shape
    T = out.dtype
    grid, block, per, n_chunks = tile_plan(R, D, dev.sm_count)
    learn = bool(learn_scale) and kind == LIK_GAUSSIAN
    shared = logscale.shape[0] == 1
    dbpart, lspart = partials(T, D * n_chunks if n_chunks > 1 else 0,
                               D * n_chunks if learn and (n_chunks > 1 or shared) else 0)
    dbpart = db if n_chunks == 1 else dbpart
    if learn and not shared and n_chunks == 1:
        lspart = dlogscale
    dev.launch(kernel_name("likelihood_bwd", T), grid, block,
               (dout, dbpart, lspart if learn else dbpart, out, x, logscale, row_scale,
                np.int32(R), np.int32(x.shape[0]), np.int32(D), np.int32(per), np.int32(kind),
                np.int32(learn), np.int32(shared), scalar(T, scale)))
    if n_chunks > 1:
        finish(dev, db, dbpart, n_chunks, D, 1.0)
    if learn and shared:
        finish(dev, dlogscale, lspart, n_chunks * D, 1, 1.0)
    elif learn and n_chunks > 1:
        finish(dev, dlogscale, lspart, n_chunks, D, 1.0)
