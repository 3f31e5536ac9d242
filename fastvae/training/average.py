"""The weights' moving average (fit's ``average``): what a run validates, keeps and gives
back, while its steps go on from the raw weights.

An exponential moving average of the parameters over the last ~1 / (1 - decay) steps
(Polyak averaging) smooths out the last steps' noise: on stevedata gss_wages (61,697
rows) the averaged weights after 5,000 steps sampled tables as accurate as the raw ones
after 8,000.  A smooth validation curve is also one an early-stopping rule can read
with little patience.

Two parameter vectors live in the run: the raw weights, which the optimizer steps, and
their average.  ``model.flat_params`` holds the raw ones while steps are taken and the
average everywhere else: at every epoch's end (validation, early stopping's best weights,
callbacks, the checkpoint) and once ``fit`` returns, however it ends.  The other vector
waits in ``other``.  A checkpoint saves both, and which one the model holds, so that a
resumed run continues the raw weights and their average to the bit.

The decay is warmed up as in TensorFlow's ExponentialMovingAverage (num_updates): step t
averages with min(decay, (1 + t) / (10 + t)), so that the first steps, far from where the
run goes, fade fast.
"""
from __future__ import annotations

#: which vector model.flat_params holds
RAW, AVERAGE = "raw", "average"


class WeightAverage:
    """The moving average of ``model``'s parameters, and the vector the model does not
    hold (``other``: the average while training, the raw weights outside)."""

    def __init__(self, model, other=None, holds=RAW):
        self.model = model
        if holds not in (RAW, AVERAGE):
            raise ValueError(f"holds must be {RAW!r} or {AVERAGE!r}, got {holds!r}")
        self.holds = holds
        bk = model.kernels
        with model.on_device():
            # (a new average starts at the weights the model holds)
            self.other = (bk.xp.array(model.flat_params, copy=True) if other is None else
                          bk.asarray(other).astype(model.dtype, copy=True))
            if self.other.shape != model.flat_params.shape:
                raise ValueError(f"the saved weight average has {self.other.shape[0]} "
                                 f"values, the model {model.flat_params.shape[0]}")
            self._tmp = bk.xp.empty_like(self.other)

    @staticmethod
    def weight(decay, step):
        """The share of step ``step``'s weights (counted from 1) in the average."""
        return 1.0 - min(float(decay), (1.0 + step) / (10.0 + step))

    def update(self, decay, step):
        """After optimizer step ``step`` (from 1): the average moves toward the raw
        weights the model holds."""
        if self.holds != RAW:
            raise RuntimeError("the weight average moves only while the model holds the "
                               "raw weights (inside fit's steps)")
        m = self.model
        with m.on_device():
            m.kernels.average_step(self.other, m.flat_params, self.weight(decay, step))

    def hold(self, which):
        """Make ``model.flat_params`` hold ``which`` (RAW or AVERAGE), by exchanging the
        two vectors' values (nothing else changes)."""
        if which == self.holds:
            return
        fp = self.model.flat_params
        with self.model.on_device():
            self._tmp[...] = fp
            fp[...] = self.other
            self.other[...] = self._tmp
        self.holds = which

    # ----------------------------------------------------------- checkpoint
    def to_checkpoint(self):
        """(meta, arrays): which vector the model holds, and a host copy of the other."""
        return {"holds": self.holds}, {"other": self.model.kernels.to_numpy(self.other).copy()}

    @classmethod
    def from_checkpoint(cls, model, meta, arrays):
        return cls(model, other=arrays["other"], holds=meta["holds"])

    def __repr__(self):
        return f"WeightAverage(the model holds the {self.holds} weights)"
