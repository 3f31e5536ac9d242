"""Launchers of kernels/reparam.cu: the sampling step with its KL, the importance weights,
and the counter-based noise."""
from __future__ import annotations

import numpy as np

from ..cuda_device import BLOCK_1D, grid_1d, kernel_name, tile_plan
from .launch import device, finish, partials, scalar


def reparam_kl_fwd(mu, logvar, sigma, z, kl, kl_dim, head, hb, eps, lv_min, lv_max):
    """Sampling step and analytic KL, fused (contract and shapes: reference.reparam_kl_fwd)."""
    dev = device()
    B, Z = mu.shape
    L = z.shape[0] // B
    T = mu.dtype
    grid, block, per, n_chunks = tile_plan(B, Z, dev.sm_count)
    n_tiles = grid[0]
    klpart, kldpart = partials(T, n_tiles * B if n_tiles > 1 else 0,
                                n_chunks * Z if n_chunks > 1 else 0)
    klpart = kl if n_tiles == 1 else klpart
    kldpart = kl_dim if n_chunks == 1 else kldpart
    dev.launch(kernel_name("reparam_kl_fwd", T), grid, block,
               (mu, logvar, sigma, z, klpart, kldpart, head, hb, eps, np.int32(B),
                np.int32(Z), np.int32(L), np.int32(per), scalar(T, lv_min), scalar(T, lv_max),
                scalar(T, 1.0 / B if n_chunks == 1 else 1.0)))
    if n_tiles > 1:
        finish(dev, kl, klpart, n_tiles, B, 1.0)
    if n_chunks > 1:
        finish(dev, kl_dim, kldpart, n_chunks, Z, 1.0 / B)


def reparam_kl_bwd(dhead, dhb, dz, eps, mu, sigma, head, kl_dim, kl_weight, free_bits,
                   lv_min, lv_max):
    """Sample path plus analytic KL gradient (contract: reference.reparam_kl_bwd)."""
    dev = device()
    B, Z = mu.shape
    L = dz.shape[0] // B
    T = mu.dtype
    grid, block, per, n_chunks = tile_plan(B, Z, dev.sm_count)
    part = dhb if n_chunks == 1 else partials(T, n_chunks * 2 * Z)[0]
    dev.launch(kernel_name("reparam_kl_bwd", T), grid, block,
               (dhead, part, dz, eps, mu, sigma, head, kl_dim, np.int32(B), np.int32(Z),
                np.int32(L), np.int32(per), scalar(T, kl_weight), scalar(T, free_bits),
                scalar(T, lv_min), scalar(T, lv_max)))
    if n_chunks > 1:
        finish(dev, dhb, part, n_chunks, 2 * Z, 1.0)


def iwae_fwd(logw, wnorm, loss_b, loss_rows, z, eps, logvar):
    """Importance weights and the IWAE loss per datapoint (contract: reference.iwae_fwd)."""
    dev = device()
    B, Z = logvar.shape
    dev.launch(kernel_name("iwae_fwd", logw.dtype), (grid_1d(B, dev.sm_count),), (BLOCK_1D,),
               (logw, wnorm, loss_b, loss_rows, z, eps, logvar, np.int32(B), np.int32(Z),
                np.int32(loss_rows.shape[0] // B)))


def reparam_iw_bwd(dhead, dhb, dz, eps, z, sigma, head, wnorm, inv_b, dreg, lv_min, lv_max):
    """Head gradient under IWAE or DReG (contract: reference.reparam_iw_bwd)."""
    dev = device()
    B, Z = sigma.shape
    T = sigma.dtype
    grid, block, per, n_chunks = tile_plan(B, Z, dev.sm_count)
    part = dhb if n_chunks == 1 else partials(T, n_chunks * 2 * Z)[0]
    dev.launch(kernel_name("reparam_iw_bwd", T), grid, block,
               (dhead, part, dz, eps, z, sigma, head, wnorm, np.int32(B), np.int32(Z),
                np.int32(dz.shape[0] // B), np.int32(per), scalar(T, inv_b), np.int32(bool(dreg)),
                scalar(T, lv_min), scalar(T, lv_max)))
    if n_chunks > 1:
        finish(dev, dhb, part, n_chunks, 2 * Z, 1.0)


def normal_eps(eps, key, row0, first):
    """eps (L, B, Z) <- counter-based standard normal noise (contract: reference.normal_eps)."""
    dev = device()
    L, B, Z = eps.shape
    n = L * Z
    nq = (int(first) + n + 3) // 4 - int(first) // 4
    dev.launch(kernel_name("normal_eps", eps.dtype), (grid_1d(B * nq, dev.sm_count),),
               (BLOCK_1D,), (eps, np.int32(L), np.int32(B), np.int32(Z), np.int64(row0),
                             np.int64(first), np.uint32(key[0]), np.uint32(key[1])))
