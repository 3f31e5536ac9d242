"""Early stopping: train until the validation loss stops improving, keep the best weights.

``fit(X, val=V, early_stopping=EarlyStopping(...))``.  Every ``every`` epochs the
validation negative ELBO is measured (the same noise each time, so two epochs compare
without the estimate's own noise between them); the weights of the best one so far are
kept aside.  The run stops at the end of an epoch when

- ``max_steps`` optimizer steps have been taken, or
- at least ``min_steps`` have been taken and the validation loss has not improved by more
  than ``min_delta`` nats plus ``rel_delta`` times its best value for ``patience``
  validations in a row, ``decays`` times over;

then (``restore_best``) the best weights are put back.  With ``decays`` > 0, each of the
first plateaus instead multiplies the optimizer's learning rate by ``factor`` (from the
best weights, when ``restore_best``) and waits ``patience`` validations again: a smaller
step finds what the larger one stepped over, in fewer epochs than a constant rate.

Steps, not seconds: a run is the same for a seed however fast the machine, wherever the
arithmetic is the same (its stopping point moves with the products' last bits: another CPU
kind, BLAS library or BLAS thread count).  The policy's state (best loss, its epoch and
step, the validations since, the best weights) is part of the training state, so a
checkpoint written mid-run resumes to the same stop and the same weights.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.validate import boolean, nonneg_int, positive_int, real


class EarlyStopping:
    """The stopping rule and its state (see the module docstring).

    patience : validations without improvement before stopping [10]; every : epochs
    between validations [1]; min_steps, max_steps : optimizer steps [0, no limit];
    min_delta : nats per row an improvement must exceed [0], plus ``rel_delta`` times the
    best loss's size [0]; restore_best [True];
    decays : plateaus that lower the learning rate before one stops the run [0]; factor :
    what each multiplies it by [0.5]; floor, floor_steps : while the best loss is above
    ``floor`` (a baseline the model has not yet beaten: a plateau of a collapsed model),
    patience stops the run only from step ``floor_steps`` on [None, 0].
    """

    def __init__(self, patience=10, every=1, min_steps=0, max_steps=None, min_delta=0.0,
                 restore_best=True, decays=0, factor=0.5, rel_delta=0.0, floor=None,
                 floor_steps=0):
        self.patience = positive_int(patience, "patience")
        self.every = positive_int(every, "every")
        self.min_steps = nonneg_int(min_steps, "min_steps")
        self.max_steps = None if max_steps is None else positive_int(max_steps, "max_steps")
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError(f"max_steps={max_steps} is below min_steps={min_steps}")
        self.min_delta = real(min_delta, "min_delta", at_least=0)
        self.rel_delta = real(rel_delta, "rel_delta", at_least=0)
        self.restore_best = boolean(restore_best, "restore_best")
        self.decays = nonneg_int(decays, "decays")
        self.factor = real(factor, "factor", above=0, below=1)
        self.floor = None if floor is None else real(floor, "floor")
        self.floor_steps = nonneg_int(floor_steps, "floor_steps")
        self.decayed = 0  # plateaus that lowered the learning rate so far
        self.best = math.inf
        self.best_epoch = self.best_step = None
        self.waited = 0
        self.stopped = None  # why the run stopped, once it has
        self.best_params = None  # host copy of the flat parameters at the best epoch

    def config(self):
        return {k: getattr(self, k) for k in ("patience", "every", "min_steps", "max_steps",
                                              "min_delta", "rel_delta", "restore_best",
                                              "decays", "factor", "floor", "floor_steps")}

    def due(self, epoch):
        """Whether epoch ``epoch`` (counted from 1) is validated."""
        return epoch % self.every == 0

    def update(self, model, rec, step):
        """After epoch ``rec`` (its record, val_neg_elbo in it when validated) at optimizer
        step ``step``: keep the best weights, and return why to stop (None: go on).  On a
        stop the best weights are put back (``restore_best``)."""
        val = rec.get("val_neg_elbo")
        if val is not None:
            margin = self.min_delta + self.rel_delta * abs(self.best)
            if self.best_params is None or val < self.best - margin:
                self.best, self.best_epoch, self.best_step = float(val), rec["epoch"], step
                self.waited = 0
                self.best_params = np.array(model.kernels.to_numpy(model.flat_params),
                                            copy=True)
            else:
                self.waited += 1
            rec["val_best"] = self.best
        why = None
        if self.max_steps is not None and step >= self.max_steps:
            why = f"max_steps ({self.max_steps}) reached"
        elif step >= self.min_steps and self.waited >= self.patience and (
                self.floor is None or self.best <= self.floor or step >= self.floor_steps):
            if self.decayed < self.decays:  # a plateau: a smaller step, from the best
                self.decayed += 1
                self.waited = 0
                if self.restore_best and self.best_params is not None:
                    model.flat_params[...] = model.kernels.asarray(self.best_params)
                opt = model.train_state.optimizer
                opt.lr = opt.lr * self.factor
                rec["lr"] = opt.lr
                return None
            why = (f"the validation loss has not improved for {self.waited} validations "
                   f"(best {self.best:.4f} at epoch {self.best_epoch})")
        if why is not None:
            self.stop(model, why)
            rec["stopped"] = why
        return why

    def stop(self, model, why):
        """End the run: the best weights put back (when kept and asked for)."""
        self.stopped = why
        if self.restore_best and self.best_params is not None:
            model.flat_params[...] = model.kernels.asarray(self.best_params)

    # ----------------------------------------------------------- checkpoint
    def to_checkpoint(self):
        """(meta, arrays) of the rule and its state."""
        meta = {"config": self.config(), "best": None if math.isinf(self.best) else self.best,
                "best_epoch": self.best_epoch, "best_step": self.best_step,
                "waited": self.waited, "stopped": self.stopped, "decayed": self.decayed}
        arrays = {} if self.best_params is None else {"best": self.best_params}
        return meta, arrays

    @classmethod
    def from_checkpoint(cls, meta, arrays):
        es = cls(**meta["config"])
        es.best = math.inf if meta["best"] is None else float(meta["best"])
        es.best_epoch, es.best_step = meta["best_epoch"], meta["best_step"]
        es.waited, es.stopped = int(meta["waited"]), meta["stopped"]
        es.decayed = int(meta.get("decayed", 0))
        es.best_params = arrays.get("best")
        return es

    def __repr__(self):
        state = f"stopped: {self.stopped}" if self.stopped else (
            f"best {self.best:.4f} at epoch {self.best_epoch}, {self.waited} since"
            if self.best_epoch else "not started")
        return f"EarlyStopping(patience={self.patience}, every={self.every}; {state})"


__all__ = ["EarlyStopping"]
