"""How one forward pass sits inside a larger step: what ``fit``, data-parallel training and
the estimates tell :meth:`fastvae.VAE.forward` beyond the batch itself."""
from __future__ import annotations


class StepContext:
    """The context of one forward pass (every field optional).

    acc : (3,) float64 array on the model's device, or None: running sums, ``acc += weight *
        [loss, recon, kl]`` (means over this pass's rows), kept on the device so that a GPU
        step never waits for its loss (fit's epoch sums, the ELBO estimate).
    weight : float, the weight of this pass in ``acc`` (its row count).
    row0 : int, the first row's place in the global batch: a row's training noise is keyed
        by it, so a shard of a data-parallel step draws what one process would.
    batch : int or None, the rows of the global batch: gradients are of its mean loss (None:
        this pass's rows).
    reduce_kl : callable ``reduce_kl(kl_dim, rows)`` or None: replaces this shard's
        per-dimension batch-mean KL (Z,) by the global batch's, in place, before free bits
        gate it (data-parallel training).
    """

    __slots__ = ("acc", "weight", "row0", "batch", "reduce_kl")

    def __init__(self, acc=None, weight=0.0, row0=0, batch=None, reduce_kl=None):
        self.acc, self.weight, self.row0 = acc, float(weight), int(row0)
        self.batch, self.reduce_kl = batch, reduce_kl


#: the context of a plain forward pass: nothing around it
ALONE = StepContext()
