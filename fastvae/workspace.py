"""Activation workspaces: every buffer one training step touches, allocated once per shape.

A workspace belongs to one (batch rows B, latent samples L) pair.  Forward writes into it,
backward reads from it and writes gradients into it, so a steady-state step allocates no
arrays.  The ``generation`` counter lets a :class:`~fastvae.model.Cache` notice that a later
forward pass has overwritten the buffers it points to.
"""
from __future__ import annotations

from collections import OrderedDict


class Workspace:
    """Buffers for one (B, L).  R = L*B decoder rows, Z latent size, D data size.

    Forward:  h[i] (B, n_i) encoder activations; head (B, 2Z) = [mu | raw logvar];
              mu, logvar, sigma (B, Z); eps, z (R, Z); kl (B,); kl_dim (Z,);
              g[j] (R, m_j) decoder activations; out (R, D) logits or means;
              dout (R, D) loss gradient (written by the fused likelihood kernel);
              loss_rows (R,); stats (3,) float64 [loss, recon mean, kl mean].
    Backward: dg[j] (R, m_j); dz (R, Z); dhead (B, 2Z); dh[i] (B, n_i); scratch.
    """

    def __init__(self, xp, dtype, B, L, enc_hidden, latent, dec_hidden, D):
        R = L * B
        e = lambda *shape: xp.empty(shape, dtype=dtype)  # noqa: E731
        self.B, self.L, self.R = B, L, R
        self.h = [e(B, n) for n in enc_hidden]
        self.head = e(B, 2 * latent)
        self.mu, self.logvar, self.sigma = e(B, latent), e(B, latent), e(B, latent)
        self.eps, self.z = e(R, latent), e(R, latent)
        self.kl, self.kl_dim = e(B), e(latent)
        self.recon = e(B)  # per-datapoint reconstruction term, mean over the L samples
        self.g = [e(R, m) for m in dec_hidden]
        self.out, self.dout, self.loss_rows = e(R, D), e(R, D), e(R)
        # [loss, recon mean, kl mean] in float64, written on the device by loss_stats
        self.stats = xp.zeros(3, dtype="float64")
        self.dg = [e(R, m) for m in dec_hidden]
        self.dz = e(R, latent)
        self.dhead = e(B, 2 * latent)
        self.dh = [e(B, n) for n in enc_hidden]
        # the product dA @ W^T lands here before the activation derivative is applied:
        # writing da over its own input (in place) defeats LLVM's vectoriser (overlap
        # check fails) and cost 2.5x in act_bias_bwd
        self._scratch = e(max([R * m for m in dec_hidden] + [B * n for n in enc_hidden] + [1]))
        self.generation = 0

    def scratch(self, rows, cols):
        """A (rows, cols) view of the shared scratch buffer."""
        return self._scratch[: rows * cols].reshape(rows, cols)


class WorkspacePool:
    """Keeps the workspaces of the few most recent shapes (an epoch's last, smaller batch
    must not evict the main one, and a sweep over many sizes must not hoard memory)."""

    def __init__(self, factory, keep=4):
        self._factory = factory
        self._keep = keep
        self._pool = OrderedDict()

    def get(self, B, L):
        key = (B, L)
        ws = self._pool.get(key)
        if ws is None:
            ws = self._factory(B, L)
            self._pool[key] = ws
            while len(self._pool) > self._keep:
                self._pool.popitem(last=False)
        else:
            self._pool.move_to_end(key)
        return ws

    def clear(self):
        self._pool.clear()
