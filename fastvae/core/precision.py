"""The model's matrix products, in the model's dtype or (``precision="bf16"``) mixed: bf16
operands, float32 sums.

Mixed precision here means what it means in PyTorch's autocast and on tensor cores: every
GEMM of forward and backward (the layer products, the input gradients dA W^T and the weight
gradients A^T dZ) reads its two operands rounded to bfloat16 and accumulates in float32.
Nothing else changes: the parameters (the *master weights*), the optimizer and its
moments, every elementwise kernel, the loss and the checkpoints stay float32, so a bf16 run
saves, resumes and loads exactly like a float32 one.

Each operand is rounded once, into a bf16 copy (*shadow*) that every product reading it
shares: a weight's shadow serves its forward product and the input gradient of backward,
an activation's serves its forward product and the weight gradient.  A shadow is named by
a key (weights "W:<parameter name>", activations and gradients by their place in the pass,
see :class:`~fastvae.core.model.Engine`) and made on its first use after the buffer it copies
was last written: the encoder's and the decoder's passes make their own keys stale when
they start (new data, new weights), backward its gradients' keys.  The hidden layers'
outputs, their gradients and the likelihood's gradient are rounded by the kernels that write
them (the kernels' ``half`` output, :meth:`Products.shadow`): a 16-row block's output is
still in the nearest caches when its bits are taken, where a pass of its own read it back
from memory.  Measured on a 2-core Xeon with AMX, bf16 canonical model, ms per step
(medians of 4 runs): batch 512 4.35 against 4.60 in one pass, 4.45 against 4.59 in 2
shards; batch 2048 in 2 shards 11.34 against 11.57 (in one pass within the noise).

``precision="bf16"`` means *bf16 where it pays*: a product takes the bf16 path when it has
at least ``min_macs`` multiply-adds and sums over at least ``min_k`` terms (the model's
``bf16_rule``, default :data:`BF16_RULE`); smaller ones read their float32 operands and run
in float32, and an operand that only such products read is never rounded.  The rule reads
shapes alone, so a run makes the same choices on any machine, and it is saved with the
model.  ``bf16_rule=(0, 0)`` puts every product on bf16 operands (autocast's numerics).
Measured on a 2-core Xeon with AMX (oneDNN 2023.2), per product inside the canonical
model's step: at batch 32 the bf16 path lost on the latent-sized products (32x400x20: 21
against 8 us) and on the weight gradients, which sum over the batch's 32 rows (784x32x400:
130 against 116 us), and won on the others (32x784x400: 63 against 195 us); at batch 512
every product of 4M multiply-adds or more won, but one (512x40x400, 112 against 94 us).
"""
from __future__ import annotations

import numpy as np

from ..backends.aligned import aligned_empty

PRECISIONS = ("full", "bf16")
#: (min_macs, min_k): a product runs on bf16 operands when M*N*K >= min_macs and K >= min_k
BF16_RULE = (1 << 22, 64)


def bf16_rule_config(rule, precision):
    """The checked (min_macs, min_k) of a bf16 model (the default rule for None), or None
    for a full-precision one."""
    if precision != "bf16":
        return None
    if rule is None:
        return BF16_RULE
    try:
        macs, k = (int(v) for v in rule)
        if any(int(v) != v for v in rule):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"bf16_rule must be (min_macs, min_k), two integers >= 0, got "
                         f"{rule!r}") from None
    if macs < 0 or k < 0:
        raise ValueError(f"bf16_rule must be (min_macs, min_k), two integers >= 0, got "
                         f"{rule!r}")
    return (macs, k)


def precision_config(precision, dtype, kernels):
    """The checked precision name; bf16 needs float32 and a backend that runs bf16 products
    here (else the error says what is missing: never a silent fallback)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'full' (products in the model's dtype) or 'bf16' "
                         f"(bfloat16 operands, float32 sums), got {precision!r}")
    if precision == "bf16":
        if np.dtype(dtype) != np.float32:
            raise ValueError(f"precision='bf16' needs dtype='float32' (its master weights and "
                             f"sums are float32), got dtype={np.dtype(dtype).name!r}")
        problem = kernels.bf16_support()
        if problem is not None:
            raise RuntimeError(problem)
    return precision


class Products:
    """out = op(a) @ op(b) for the model's passes; a and b come with their keys."""

    def __init__(self, kernels, params, precision, rule=None):
        self.kernels, self.params = kernels, params
        self.bf16 = precision == "bf16"
        self.rule = bf16_rule_config(rule, precision)
        self._weights = {}      # parameter name -> bf16 shadow
        self._fresh = set()     # the parameter names whose shadow is current
        #: the activations' and gradients' shadows written by the kernels that write them
        #: (:meth:`shadow`); False: each made by a rounding pass of its own (the same bits)
        self.fuse = True

    def pays(self, M, N, K):
        """Whether a product out (M, N) summing K terms takes the bf16 path."""
        return self.bf16 and M * N * K >= self.rule[0] and K >= self.rule[1]

    def __call__(self, ws, out, a, ka, b, kb, trans_a=False, trans_b=False):
        """out (M, N) = op(a) @ op(b); ka, kb name the operands (see the module docstring)."""
        if not self.bf16:
            self.kernels.matmul(out, a, b, trans_a, trans_b)
            return
        if not self.pays(out.shape[0], out.shape[1], a.shape[0] if trans_a else a.shape[1]):
            self.kernels.matmul_f32_beside_bf16(out, a, b, trans_a, trans_b)
            return
        self.kernels.matmul_bf16(out, self._bits(ws, ka, a), self._bits(ws, kb, b),
                                 trans_a, trans_b)

    def stale(self, ws, prefix, weights=None):
        """The shadows of ``ws`` whose keys start with ``prefix`` (and of the parameters whose
        names start with ``weights``) no longer match their buffers."""
        if not self.bf16:
            return
        ws.half_fresh = {k for k in ws.half_fresh if not k.startswith(prefix)}
        if weights is not None:
            self._fresh = {k for k in self._fresh if not k.startswith(weights)}

    def shadow(self, ws, key, a, consumers):
        """The bf16 shadow of operand ``a`` (key ``key``) for the kernel about to write ``a``
        to fill beside it (the operand rounded where it is written, not in a pass of its
        own), or None: when no product in ``consumers`` ((M, N, K) shapes: the products that
        will read it) takes the bf16 path, or when fusion is off.  The shadow counts as
        current from here: the caller's kernel writes it before any product reads it."""
        if not (self.bf16 and self.fuse) or not any(self.pays(*c) for c in consumers):
            return None
        buf = ws.half.get(key)
        if buf is None or buf.shape != a.shape:
            buf = ws.half[key] = aligned_empty(self.kernels.xp, a.shape, np.uint16)
        ws.half_fresh.add(key)
        return buf

    def _bits(self, ws, key, a):
        if key.startswith("W:"):
            # a weight, or its first rows (a block model's dense inputs, z's rows of [z | c])
            return self._weight(key[2:])[:a.shape[0]]
        buf = ws.half.get(key)
        if key not in ws.half_fresh:
            if buf is None or buf.shape != a.shape:
                buf = ws.half[key] = aligned_empty(self.kernels.xp, a.shape, np.uint16)
            self.kernels.to_bf16(buf, a)
            ws.half_fresh.add(key)
        return buf

    def _weight(self, name):
        buf = self._weights.get(name)
        if name not in self._fresh:
            W = self.params[name]
            if buf is None:
                buf = self._weights[name] = aligned_empty(self.kernels.xp, W.shape, np.uint16)
            self.kernels.to_bf16(buf, W)
            self._fresh.add(name)
        return buf
