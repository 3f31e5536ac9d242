"""The training state: everything a training run adds to a model, in one object.

A model is the engine (configuration, parameters, passes); a run adds an optimizer with its
moments, the settings ``fit`` was given, the generators that order and binarize the data,
the position inside the current epoch and the history.  They all live in one
:class:`TrainState` (``model.train_state``).  ``fit`` reads and advances it; a checkpoint
saves it whole, so loading a checkpoint and calling ``fit`` with no settings continues
exactly as the uninterrupted run would have.  A setting given explicitly to a later ``fit``
that differs from the saved one is applied and reported (see :func:`resolve`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .optim import OPTIMIZERS, Optimizer, make_optimizer
from ..core.validate import boolean, choice, positive_int, real

#: fit's loop settings and their defaults (a first fit uses these for what it is not given)
DEFAULTS = {"batch_size": 128, "kl_warmup": 0.0, "binarize": "none", "val_samples": 1,
            "shuffle": True, "drop_last": False, "shards": 1, "average": 0.0}
#: the optimizer settings fit accepts by name (the optimizer keeps them)
OPTIMIZER_SETTINGS = ("optimizer", "lr", "weight_decay", "clip_norm", "momentum")
DEFAULT_LR = 1e-3


class TrainState:
    """Everything a training run adds to a model.

    settings      fit's loop settings: batch_size, kl_warmup (epochs), binarize ("none" |
                  "dynamic"), val_samples, shuffle, drop_last, shards, average (the
                  weights' moving average's decay; 0: none).
    optimizer     the :class:`~fastvae.training.optim.Optimizer`: its settings (lr, weight decay,
                  clipping, betas or momentum), moments and step count.
    epoch         epochs completed.
    row, epoch_steps
                  rows and steps done in the current epoch (0 at an epoch boundary).
    n_rows        the number of rows the current epoch runs over.
    step          training steps taken in all (the KL warm-up counts them).
    seconds, sums training seconds, and [loss, recon, kl] summed over rows with the row
                  count, of the current epoch so far.
    order_rng     the data-order generator's state at the start of the current epoch (the
                  epoch's permutation is drawn again from it on resume); epoch_shuffle,
                  whether that epoch's order is shuffled (a change of ``shuffle`` applies
                  from the next epoch).
    binarize_rng  the dynamic-binarization generator (a NumPy Generator).
    history       one dict per completed epoch.
    stopper       the run's :class:`~fastvae.training.stopping.EarlyStopping` (its rule and
                  state: best loss, best weights), or None.
    average       the weights' moving average (:class:`~fastvae.training.average.WeightAverage`:
                  the vector the model does not hold), or None when ``average`` is 0.
    """

    def __init__(self, model):
        order, binar = default_generator_states(model.seed)
        self.settings = dict(DEFAULTS)
        self.optimizer = None
        self.epoch = self.row = self.epoch_steps = self.step = 0
        self.n_rows = None
        self.seconds = 0.0
        self.sums = [0.0, 0.0, 0.0, 0]
        self.order_rng = order
        self.binarize_rng = np.random.Generator(np.random.PCG64())
        self.binarize_rng.bit_generator.state = binar
        self.epoch_shuffle = self.settings["shuffle"]  # how the current epoch's order was made
        self.settings_saved = True  # False for a version 1 checkpoint, which kept none
        self.history = []
        self.stopper = None
        self.average = None

    def __repr__(self):
        opt = self.optimizer
        o = "no optimizer" if opt is None else f"{opt.name} lr {opt.lr:g}, step {opt.step_count}"
        where = f"epoch {self.epoch} done" + (f", {self.row} of {self.n_rows} rows into the "
                                               f"next" if self.row else "")
        return f"TrainState({where}; {o}; batch_size {self.settings['batch_size']})"

    # --------------------------------------------------------------- epochs
    def epoch_order(self, n, shuffle):
        """The current epoch's order of the n rows: drawn from the generator state saved
        at the epoch's start, so a resumed epoch sees the same order.  Returns
        (order (n,) int64, the generator state after the draw)."""
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = self.order_rng
        order = gen.permutation(n) if shuffle else np.arange(n)
        return order, gen.bit_generator.state

    def restart_epoch(self):
        """Forget the position inside the current epoch (it will start over)."""
        self.row = self.epoch_steps = 0
        self.seconds = 0.0
        self.sums = [0.0, 0.0, 0.0, 0]

    # ----------------------------------------------------------- checkpoint
    def to_checkpoint(self):
        """(meta, arrays): JSON-able metadata and the optimizer's host arrays."""
        opt = self.optimizer
        arrays, opt_meta = {}, None
        if opt is not None:
            st = opt.state_dict()
            opt_meta = {"config": opt.config(), "step_count": st.pop("step_count")}
            arrays = {f"opt.{k}": v for k, v in st.items()}
        if self.stopper is not None:
            smeta, sarrays = self.stopper.to_checkpoint()
            arrays.update({f"stop.{k}": v for k, v in sarrays.items()})
        ameta = None
        if self.average is not None:
            ameta, aarrays = self.average.to_checkpoint()
            arrays.update({f"avg.{k}": v for k, v in aarrays.items()})
        meta = {"settings": dict(self.settings), "optimizer": opt_meta, "epoch": self.epoch,
                "row": self.row, "epoch_steps": self.epoch_steps, "n_rows": self.n_rows,
                "step": self.step, "seconds": self.seconds, "sums": list(self.sums),
                "order_rng": self.order_rng, "epoch_shuffle": self.epoch_shuffle,
                "binarize_rng": self.binarize_rng.bit_generator.state,
                "history": list(self.history),
                "stopper": None if self.stopper is None else smeta, "average": ameta}
        return meta, arrays

    @classmethod
    def from_checkpoint(cls, model, meta, arrays):
        """The state :meth:`to_checkpoint` described, bound to ``model``."""
        st = cls(model)
        st.settings_saved = meta["settings"] is not None
        st.settings = {**DEFAULTS, **(meta["settings"] or {})}
        st.epoch_shuffle = bool(meta.get("epoch_shuffle", st.settings["shuffle"]))
        for k in ("epoch", "row", "epoch_steps", "step"):
            setattr(st, k, int(meta[k]))
        st.n_rows = None if meta["n_rows"] is None else int(meta["n_rows"])
        st.seconds = float(meta["seconds"])
        st.sums = [float(v) for v in meta["sums"][:3]] + [int(meta["sums"][3])]
        if meta["order_rng"] is not None:  # (None: a version 1 file's run, from its seed)
            np.random.PCG64().state = meta["order_rng"]  # (refused here if damaged)
            st.order_rng = meta["order_rng"]
        if meta["binarize_rng"] is not None:
            st.binarize_rng.bit_generator.state = meta["binarize_rng"]
        st.history = list(meta["history"])
        if meta.get("stopper"):
            from .stopping import EarlyStopping
            st.stopper = EarlyStopping.from_checkpoint(
                meta["stopper"], {k[5:]: v for k, v in arrays.items() if k.startswith("stop.")})
        if meta.get("average"):
            from .average import WeightAverage
            st.average = WeightAverage.from_checkpoint(
                model, meta["average"], {k[4:]: v for k, v in arrays.items()
                                         if k.startswith("avg.")})
        if meta.get("optimizer"):
            conf = dict(meta["optimizer"]["config"])
            opt = make_optimizer(conf.pop("name"), model, **conf)
            state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
            state["step_count"] = meta["optimizer"]["step_count"]
            opt.load_state_dict(state)
            st.optimizer = opt
        return st


def default_generator_states(seed):
    """(data-order, binarization) generator states of a run of a model seeded ``seed``."""
    order, binar = np.random.SeedSequence((int(seed), 0xDA7A)).spawn(2)
    return np.random.PCG64(order).state, np.random.PCG64(binar).state


# ------------------------------------------------------------------ settings
def _check(name, v, model):
    """A fit setting, validated (ValueError naming it and the value)."""
    if name == "batch_size":
        return positive_int(v, "batch_size")
    if name == "kl_warmup":
        v = real(v, "kl_warmup (epochs)", at_least=0)
        if v > 0 and model.objective != "elbo":
            raise ValueError(f"kl_warmup={v!r} with objective={model.objective!r}: the warm-up "
                             "ramps the ELBO's KL term, which the importance-weighted bound "
                             "does not have")
        return v
    if name == "binarize":
        v = choice(v, "binarize (static: binarize the data once before fit)",
                   ("none", "dynamic"))
        if v == "dynamic" and model.likelihood != "bernoulli":
            raise ValueError("binarize='dynamic' needs likelihood='bernoulli'")
        return v
    if name == "val_samples":
        return positive_int(v, "val_samples")
    if name in ("shuffle", "drop_last"):
        return boolean(v, name)
    if name == "shards":
        v = positive_int(v, "shards")
        if v > 1 and model.kernels.DEVICE:
            raise ValueError(f"shards={v} cuts each batch over the cpu backend's threads; a "
                             "GPU runs the whole batch at once: use shards=1")
        if v > 1 and model.free_bits > 0:
            raise ValueError(f"shards={v} with free_bits={model.free_bits!r}: free bits gate "
                             "the KL on the whole batch's per-dimension mean, which shards "
                             "on threads do not share; use shards=1 (or MPI ranks)")
        return v
    if name == "lr":
        return real(v, "lr", above=0)
    if name == "weight_decay":
        return real(v, "weight_decay", at_least=0)
    if name == "clip_norm":
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and v == math.inf:
            return None  # no clipping
        return real(v, "clip_norm (math.inf switches clipping off)", above=0)
    if name == "momentum":
        return real(v, "momentum", at_least=0, below=1)
    if name == "average":
        return real(v, "average (the weight average's decay; 0: none)", at_least=0, below=1)
    raise KeyError(name)


def resolve(state, model, given):
    """What a ``fit`` call will train with, without changing anything.

    state: the model's TrainState, or None for a first fit.  given: the settings passed
    explicitly (not None), by name: DEFAULTS' keys and OPTIMIZER_SETTINGS.  Every value is
    validated here, so that a bad argument leaves the model as it was.

    Returns (settings, make_opt, changes): the loop settings; a function returning the
    optimizer to train with (the state's, updated, or a new one); and one line per setting
    given explicitly that differs from the saved one ("lr 0.02 -> 0.01").
    """
    given = dict(given)
    explicit = set(given)
    # (a version 1 checkpoint saved no settings: what is given then is no change)
    saved = dict(DEFAULTS) if state is None else dict(state.settings)
    settings, changes = dict(saved), []
    for k in DEFAULTS:
        if k in given:
            settings[k] = _check(k, given.pop(k), model)
            if state is not None and state.settings_saved and settings[k] != saved[k]:
                changes.append(f"{k} {saved[k]!r} -> {settings[k]!r}")
    if "shards" not in explicit:  # the saved value: the model may now be on a GPU
        try:
            _check("shards", settings["shards"], model)
        except ValueError as e:
            raise ValueError(f"{e} (shards={settings['shards']} is the saved run's: pass "
                             "shards=1 to fit, or --shards 1 on the command line)") from None
    current = None if state is None else state.optimizer
    opt = given.pop("optimizer", None)
    hyper = {k: _check(k, given.pop(k), model) for k in ("lr", "weight_decay", "clip_norm",
                                                          "momentum") if k in given}
    if given:
        raise TypeError(f"fit() got unexpected settings {sorted(given)}")

    if isinstance(opt, Optimizer):
        if opt.model is not model:
            raise ValueError("the optimizer was built for another model")
        if type(opt) not in OPTIMIZERS.values():
            raise ValueError(f"optimizer: a {type(opt).__name__} cannot be saved with the "
                             f"run; use one of {', '.join(c.__name__ for c in OPTIMIZERS.values())}")
        if hyper:
            raise ValueError(f"{', '.join(sorted(hyper))}: set these on the optimizer "
                             f"instance itself when passing one (optimizer={opt.name!r})")
        if current is not None and opt is not current:
            changes.append(f"optimizer replaced by the given {type(opt).__name__} "
                           f"(lr {opt.lr:g}; new moments)")
        return settings, (lambda: opt), changes

    name = current.name if (opt is None and current is not None) else (
        "adam" if opt is None else opt)
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))} or an "
                         f"Optimizer; got {name!r}")
    name = name.lower()
    cls = OPTIMIZERS[name]
    if "momentum" in hyper and name != "sgd":
        raise ValueError(f"momentum applies to optimizer='sgd' only, not {name!r}")
    # the configuration to train with: the current one when the optimizer stays, else the
    # new class's defaults with what the two share carried over (weight decay is not
    # shared: L2 for adam and sgd, decoupled for adamw); then what was given
    old = {} if current is None else {k: v for k, v in current.config().items() if k != "name"}
    keep = current is not None and current.name == name
    if keep:
        base = dict(old)
    else:
        base = {**cls.defaults(), "lr": DEFAULT_LR}
        base.update({k: old[k] for k in ("lr", "clip_norm", "betas", "eps")
                     if k in old and k in base})
    cfg = cls.checked(**{**base, **hyper})
    if current is not None and not keep:
        changes.append(f"optimizer {current.name!r} -> {name!r} (new moments)")
    changes += [f"{k} {old[k]!r} -> {v!r}" for k, v in cfg.items() if k in old and v != old[k]]
    if keep:
        def make():
            for k, v in cfg.items():
                setattr(current, k, v)
            return current
        return settings, make, changes
    return settings, (lambda: cls(model, **cfg)), changes
