"""Launchers of kernels/blocks.cu: the column-block likelihood (loss, gradient, aux
gradients) and the encoder's and decoder's inputs of a block model."""
from __future__ import annotations

import numpy as np

from ..cuda_device import BLOCK_1D, grid_1d, kernel_name, tile_plan
from .dense import colsum
from .launch import device, finish, partials


def _blocks_grad(dev, kernel, args, dout, db, daux, x, cols, meta, R, D, n_rowpart=0):
    """Launch a gradient cell kernel, ``args(dcell, per, rowpart)`` its arguments, then sum
    the columns of dout into db and the cells' aux gradients into daux (contract:
    reference_blocks).  ``rowpart``: n_rowpart entries of the same scratch for the kernel's
    row partials; returned, for the caller to finish."""
    T = dout.dtype
    P = dout.shape[1]
    B, W = x.shape
    grid, block, per, n_cd = tile_plan(R, D, dev.sm_count)
    n_cp = tile_plan(R, P, dev.sm_count)[3]
    dcell, dcol, ppart, dpart, rowpart = partials(
        T, R * D, D, n_cp * P if n_cp > 1 else 0, n_cd * D if n_cd > 1 else 0, n_rowpart)
    dcell = dcell.reshape(R, D)
    dev.launch(kernel, grid, block, args(dcell, per, rowpart))
    colsum(dev, db, dout, ppart)
    A = daux.shape[0]
    if A:
        colsum(dev, dcol, dcell, dpart)
        dev.launch(kernel_name("blocks_aux_sum", T), (grid_1d(A, dev.sm_count),), (BLOCK_1D,),
                   (daux, dcol, dcell, x, cols, meta, np.int32(A), np.int32(R), np.int32(B),
                    np.int32(W), np.int32(D)))
    return rowpart


def blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale):
    """The block likelihood's loss per row and its gradient (contract: reference_blocks)."""
    dev = device()
    R, P = out.shape
    B, W = x.shape
    D = cols.shape[0]
    n_tiles = tile_plan(R, D, dev.sm_count)[0][0]

    def args(dcell, per, rowpart):
        return (dout, loss_rows if n_tiles == 1 else rowpart, dcell, out, b, x, aux, cols,
                meta, np.int32(R), np.int32(B), np.int32(W), np.int32(D), np.int32(P),
                np.int32(per), np.float64(grad_scale))
    rowpart = _blocks_grad(dev, kernel_name("blocks_fwd_bwd", out.dtype), args, dout, db, daux,
                           x, cols, meta, R, D, R * n_tiles if n_tiles > 1 else 0)
    if n_tiles > 1:
        finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)


def blocks_fwd(loss_rows, out, b, x, aux, cols, meta):
    """The block likelihood's loss per row, for evaluation (contract: reference_blocks)."""
    dev = device()
    R, P = out.shape
    B, W = x.shape
    D = cols.shape[0]
    grid, block, per, _ = tile_plan(R, D, dev.sm_count)
    n_tiles = grid[0]
    rowpart = loss_rows if n_tiles == 1 else partials(out.dtype, R * n_tiles)[0]
    dev.launch(kernel_name("blocks_fwd", out.dtype), grid, block,
               (rowpart, out, b, x, aux, cols, meta, np.int32(R), np.int32(B), np.int32(W),
                np.int32(D), np.int32(P), np.int32(per)))
    if n_tiles > 1:
        finish(dev, loss_rows, rowpart, n_tiles, R, 1.0)


def blocks_bwd(dout, db, daux, out, x, aux, cols, meta, row_scale, scale):
    """The block likelihood's gradient, rows weighted (contract: reference_blocks)."""
    dev = device()
    R, P = out.shape
    B, W = x.shape
    D = cols.shape[0]

    def args(dcell, per, _):
        return (dout, dcell, out, x, aux, cols, meta, row_scale, np.int32(R), np.int32(B),
                np.int32(W), np.int32(D), np.int32(P), np.int32(per), np.float64(scale))
    _blocks_grad(dev, kernel_name("blocks_bwd", out.dtype), args, dout, db, daux, x, cols,
                 meta, R, D)


def encoder_input(xin, x, src, mode):
    """xin (B, Dn): the encoder's dense input columns (contract: reference_blocks)."""
    dev = device()
    B, Dn = xin.shape
    dev.launch(kernel_name("encoder_input", xin.dtype), (grid_1d(B * Dn, dev.sm_count),),
               (BLOCK_1D,), (xin, x, src, mode, np.int32(B), np.int32(x.shape[1]),
                             np.int32(Dn)))


def embed_fwd(h, Wc, x, cat_cols, cat_rows):
    """h (B, N) += the rows of Wc the categorical codes pick (contract: reference_blocks)."""
    dev = device()
    B, N = h.shape
    dev.launch(kernel_name("embed_fwd", h.dtype), (grid_1d(B * N, dev.sm_count),),
               (BLOCK_1D,), (h, Wc, x, cat_cols, cat_rows, np.int32(B), np.int32(N),
                             np.int32(x.shape[1]), np.int32(cat_cols.shape[0])))


def embed_bwd(dWc, dh, x, cat_cols, cat_rows):
    """dWc (n_onehot, N) = dh scattered into the codes' rows (contract: reference_blocks)."""
    dev = device()
    B, N = dh.shape
    n_cat = cat_cols.shape[0]
    dev.launch(kernel_name("embed_bwd", dh.dtype), (grid_1d(max(n_cat, 1) * N, dev.sm_count),),
               (BLOCK_1D,), (dWc, dh, x, cat_cols, cat_rows, np.int32(B), np.int32(N),
                             np.int32(x.shape[1]), np.int32(n_cat), np.int32(dWc.shape[0])))


def decoder_input(zin, z, x, cond_cols):
    """zin (R, Z + C) = [z | conditions of x[r % B]] (contract: reference_blocks)."""
    dev = device()
    R, Z = z.shape
    C = cond_cols.shape[0]
    dev.launch(kernel_name("decoder_input", z.dtype), (grid_1d(R * (Z + C), dev.sm_count),),
               (BLOCK_1D,), (zin, z, x, cond_cols, np.int32(R), np.int32(x.shape[0]),
                             np.int32(Z), np.int32(C), np.int32(x.shape[1])))
