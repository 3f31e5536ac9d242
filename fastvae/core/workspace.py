"""Activation workspaces: every buffer one pass touches, allocated once per shape.

A workspace belongs to one (batch rows B, latent samples L, kind) triple.  A *training*
workspace holds what forward saves for backward and what backward writes; an *evaluation*
workspace holds only the forward buffers, and serves the loss-only forward, ``encode``,
``decode`` and the estimators built on them.  Evaluation never touches a training workspace,
so a validation pass between ``forward`` and ``backward`` leaves the training step intact.

The ``generation`` counter lets a :class:`~fastvae.core.cache.Cache` notice that a later pass has
overwritten the buffers it points to.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..backends.aligned import aligned_empty


class Workspace:
    """Buffers for one (B, L).  R = L*B decoder rows, Z latent size, D data size, S the size of
    the Gaussian log-scale (1 when shared or fixed, D per pixel).

    Forward:  h[i] (B, n_i) encoder activations; head (B, 2Z) = [mu | raw logvar];
              mu, logvar, sigma (B, Z); eps, z (R, Z); kl (B,); kl_dim (Z,); recon (B,);
              g[j] (R, m_j) decoder activations; out (R, D) logits or means;
              ls (S,) the effective (softly floored) learned log-scale;
              loss_rows (R,); stats (3,) float64 [loss, recon mean, kl mean];
              logw, wnorm (R,), loss_b (B,) for the importance-weighted objectives.
    Training only, written by the fused likelihood kernel in forward and held until backward:
              dout (R, D) the loss gradient; dout_b (D,) its column sums (the output bias
              gradient); dls (S,) the gradient with respect to ls.
    Backward: dg[j] (R, m_j); dz (R, Z); dhead (B, 2Z); dh[i] (B, n_i); scratch.
    Block models (fastvae.core.columns): D is the decoder's outputs P and S the aux vector;
              xin (B, Dn) the encoder's dense input columns (n_dense); zin (R, Z + C) the
              decoder's input [z | conditions] (n_cond = C > 0; its gradient is never
              needed: the conditions are observed, and dz reads W's first Z rows);
              gin[j] (R, m_j + C) the input [g_j | conditions] of the decoder product after
              hidden layer j (n_inject = C: inject_conditions).

    Out of memory (``where``: "host" or "GPU"), the MemoryError says how much the
    activations need and suggests a smaller batch.
    """

    def __init__(self, xp, dtype, B, L, enc_hidden, latent, dec_hidden, D, S=1, train=True,
                 where="host", n_dense=0, n_cond=0, n_inject=0):
        try:
            self._allocate(xp, dtype, B, L, enc_hidden, latent, dec_hidden, D, S, train)
            e = lambda *shape: aligned_empty(xp, shape, dtype)  # noqa: E731
            # block models: the encoder's dense input columns, and [z | conditions]
            self.xin = e(B, n_dense) if n_dense else None
            self.zin = e(L * B, latent + n_cond) if n_cond else None
            # inject_conditions: each later decoder product's input [g_j | conditions]
            self.gin = [e(L * B, m + n_inject) for m in dec_hidden] if n_inject else None
        except MemoryError as exc:  # CuPy's OutOfMemoryError is a MemoryError too
            per_row = (2 * sum(enc_hidden) + 3 * L * (sum(dec_hidden) + D) + 10 * L * latent
                       + L * (latent + n_cond) * bool(n_cond)
                       + L * sum(m + n_inject for m in dec_hidden) * bool(n_inject))
            need = per_row * B * np.dtype(dtype).itemsize / 2 ** 20
            hint = f"; try batch_size={max(1, B // 2)} or smaller" if B > 1 else ""
            raise MemoryError(
                f"out of {where} memory for the activations of batch size {B} with "
                f"n_samples={L} (about {need:,.0f} MiB){hint}") from exc

    def _allocate(self, xp, dtype, B, L, enc_hidden, latent, dec_hidden, D, S, train):
        R = L * B
        e = lambda *shape: aligned_empty(xp, shape, dtype)  # noqa: E731
        self.B, self.L, self.R, self.train = B, L, R, train
        self.h = [e(B, n) for n in enc_hidden]
        self.head = e(B, 2 * latent)
        self.mu, self.logvar, self.sigma = e(B, latent), e(B, latent), e(B, latent)
        self.eps, self.z = e(R, latent), e(R, latent)
        self.kl, self.kl_dim = e(B), e(latent)
        self.recon = e(B)  # per-datapoint reconstruction term, mean over the L samples
        self.g = [e(R, m) for m in dec_hidden]
        self.out, self.loss_rows = e(R, D), e(R)
        self.ls = e(S)
        # the importance-weighted objectives: log weights and normalised weights per sample
        # row, the loss per datapoint (no_rows: the ELBO's empty stand-in)
        self.logw, self.wnorm, self.loss_b, self.no_rows = e(R), e(R), e(B), e(0)
        self.objective = "elbo"  # of the last forward pass (backward follows it)
        self.batch = B  # the batch the gradients are the mean over (more rows when sharded)
        # on a GPU the input check of a pass is counted here, on the device, and read with
        # the pass's loss (checking is True while those counts are the pass's)
        self.bad = xp.zeros(2, dtype="uint64")
        self.checking = False
        # [loss, recon mean, kl mean] in float64, written on the device by loss_stats
        self.stats = xp.zeros(3, dtype="float64")
        self.generation = 0
        # precision='bf16': the operands' bf16 shadows by key, and the keys whose shadow is
        # current (fastvae.core.precision.Products)
        self.half, self.half_fresh = {}, set()
        if not train:
            return
        self.dout, self.dout_b, self.dls = e(R, D), e(D), e(S)
        self.dg = [e(R, m) for m in dec_hidden]
        self.dz = e(R, latent)
        self.dhead = e(B, 2 * latent)
        self.dh = [e(B, n) for n in enc_hidden]
        # the product dA @ W^T lands here before the activation derivative is applied:
        # writing da over its own input (in place) defeats LLVM's vectoriser (overlap
        # check fails) and cost 2.5x in act_bias_bwd
        self._scratch = e(max([R * m for m in dec_hidden] + [B * n for n in enc_hidden] + [1]))

    def scratch(self, rows, cols):
        """A (rows, cols) view of the shared scratch buffer."""
        return self._scratch[: rows * cols].reshape(rows, cols)


class WorkspacePool:
    """Keeps the workspaces of the few most recent shapes (an epoch's last, smaller batch
    must not evict the main one, validation must not evict training, and a sweep over many
    sizes must not hoard memory)."""

    def __init__(self, factory, keep=6):
        self._factory = factory
        self._keep = keep
        self._pool = OrderedDict()

    def get(self, B, L, train=True):
        key = (B, L, bool(train))
        ws = self._pool.get(key)
        if ws is None:
            ws = self._factory(B, L, bool(train))
            self._pool[key] = ws
            while len(self._pool) > self._keep:
                self._pool.popitem(last=False)
        else:
            self._pool.move_to_end(key)
        return ws

    def values(self):
        """The workspaces kept now."""
        return list(self._pool.values())

    def discard(self, B, L, train=True):
        """Forget the workspace of this shape (its memory goes when nothing else holds it)."""
        self._pool.pop((B, L, bool(train)), None)

    def clear(self):
        """Forget every workspace."""
        self._pool.clear()

    def __contains__(self, key):
        """Whether the workspace of (B, L, train) is kept."""
        return key in self._pool

    def __len__(self):
        return len(self._pool)
