"""The fit loop: epochs of shuffled batches, KL warm-up, validation, progress, checkpoints.

Training state that must survive a save and a load lives on the model, so that a run can be
stopped anywhere (between two steps) and resumed to the bit:

- ``model.optimizer``: the optimizer and its moments;
- ``model.rng``: the generator of the noise eps;
- ``model._train_state``: epochs done, position in the current epoch, the state of the
  data-order generator at the start of the current epoch (the permutation is redrawn from
  it on resume), the dynamic-binarization generator, and the running sums of the epoch;
- ``model.history``: one dict per completed epoch.

Ctrl-C during ``fit`` finishes the current step, writes the checkpoint (when one was given)
and returns the history with ``history.interrupted = True``; a second Ctrl-C aborts at once.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time

import numpy as np

from .data import Dataset, DataError
from .data import binarize as _binarize
from .optim import Optimizer, make_optimizer
from .progress import Progress
from .validate import positive_int


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` after the current epoch."""


class History(list):
    """One dict per epoch (keys: epoch, train_loss, train_neg_elbo, train_recon, train_kl,
    beta, val_neg_elbo, val_recon, val_kl, seconds, train_seconds, samples_per_s, steps).
    Losses are in nats per datapoint.  ``interrupted`` is True when Ctrl-C ended the run."""

    interrupted = False

    def last(self, key):
        return self[-1][key] if self else None


class ElboResult(dict):
    """Dataset-level ELBO estimate: ``elbo`` (the bound, <= log p(x)), ``neg_elbo`` (nats
    per datapoint), ``recon`` and ``kl`` (its two terms), ``n`` datapoints, ``n_samples``."""

    __getattr__ = dict.__getitem__


def as_dataset(X, name="data"):
    """A :class:`Dataset` for X (an array is wrapped, a Dataset passes through)."""
    return X if isinstance(X, Dataset) else Dataset(X, name=name)


def elbo(model, X, n_samples=1, batch_size=1000, seed=0, validate=True):
    """Estimate the ELBO of every datapoint of X and average, ``batch_size`` rows at a time
    (memory stays bounded whatever the size of X).

    X : (N, D) array or Dataset.  The estimate samples z ~ q(z|x) (``n_samples`` draws per
    datapoint, averaged); the draws come from a generator seeded by (model.seed, seed), so
    the same parameters give the same number and the training noise is not disturbed.
    validate=False skips the per-batch NaN/range scan (for data already checked).
    Returns an :class:`ElboResult`.
    """
    ds = as_dataset(X)
    if ds.dim != model.input_dim:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.input_dim}")
    L = positive_int(n_samples, "n_samples")
    bs = positive_int(batch_size, "batch_size")
    rng = np.random.default_rng(np.random.SeedSequence((model.seed, 0x5EED, int(seed))))
    buf = np.empty((min(bs, len(ds)), ds.dim), dtype=model.dtype)
    acc = model._bk.asarray(np.zeros(3))  # sums stay where the model computes until the end
    for s in range(0, len(ds), bs):
        idx = np.arange(s, min(len(ds), s + bs))
        xb = ds.batch(idx, out=buf[: idx.size])
        model.forward(xb, n_samples=L, rng=rng, validate=validate, _acc=(acc, float(idx.size)))
    n = len(ds)
    _, recon, kl = (float(v) / n for v in model._bk.to_numpy(acc))
    return ElboResult(elbo=-(recon + kl), neg_elbo=recon + kl, recon=recon, kl=kl, n=n,
                      n_samples=L)


def fit(model, X, epochs=1, batch_size=128, optimizer="adam", lr=1e-3, val=None,
        kl_warmup=0, shuffle=True, callbacks=(), progress=True, checkpoint=None,
        binarize="none", val_samples=1, drop_last=False, stream=None):
    """Train ``model`` on X for ``epochs`` more epochs; returns the :class:`History` of
    every epoch so far (``model.history``).

    X, val : (N, D) arrays or :class:`~fastvae.data.Dataset` (uint8 and memory-mapped data
        is converted one batch at a time).  Both are scanned for NaN/inf and range before
        the first step.
    optimizer : "adam" | "adamw" | "sgd" or an Optimizer.  A name reuses ``model.optimizer``
        when it is of that kind (its moments continue; ``lr`` is updated), else builds one.
    kl_warmup : epochs over which beta ramps linearly from 0 to ``model.beta`` (counted
        from the model's first training step).
    binarize : "none" | "dynamic" (fresh Bernoulli draws of every batch, for the
        Bernoulli likelihood).
    callbacks : callables ``cb(model, record)`` run after each epoch; raise
        :class:`StopTraining` to stop.
    progress : True (a bar on a terminal and one line per epoch), False (silent).
    checkpoint : a path written atomically after every epoch and when Ctrl-C stops the run.
    """
    epochs = int(epochs)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    B = positive_int(batch_size, "batch_size")
    if binarize not in ("none", "dynamic"):
        raise ValueError(f"binarize must be 'none' or 'dynamic' (static: binarize the data "
                         f"once before fit), got {binarize!r}")
    if binarize == "dynamic" and model.likelihood != "bernoulli":
        raise ValueError("binarize='dynamic' needs likelihood='bernoulli'")
    if not (math.isfinite(kl_warmup) and kl_warmup >= 0):
        raise ValueError(f"kl_warmup must be a number of epochs >= 0, got {kl_warmup!r}")
    train = _checked(as_dataset(X, "training data"), model)
    valset = None if val is None else _checked(as_dataset(val, "validation data"), model)
    if len(train) < B:
        raise DataError(f"{train.name}: {len(train)} rows is fewer than one batch of "
                        f"{B}; use a smaller batch_size")
    opt = _optimizer(model, optimizer, lr)
    st = model._train_state or _new_state(model)
    model._train_state = st
    steps = len(train) // B if drop_last else -(-len(train) // B)
    warm_steps = kl_warmup * steps
    out = Progress(stream or sys.stderr, enabled=bool(progress))
    history = History(model.history)
    bk = model._bk
    shuffle_rng = np.random.Generator(np.random.PCG64())
    bin_rng = np.random.Generator(np.random.PCG64())
    bin_rng.bit_generator.state = st["binarize_rng"]
    batches = _Batches(model, train, B, binarize, bin_rng)
    # running sums of the epoch (loss, recon, kl) where the model computes: on a GPU
    # nothing in the loop waits for them (see _sync_sums for when they are read)
    acc = bk.asarray(np.array(st["sums"][:3], dtype=np.float64))
    checked = st["batch"]  # the last step whose loss is known to be finite

    def loss_note():  # the progress bar's loss, read only when the bar redraws
        _sync_sums(bk, acc, st, opt, checked)
        return f"loss {st['sums'][0] / max(1, st['sums'][3]):.2f}"

    guard = _SigintGuard(out)
    try:
        with guard:
            for _ in range(epochs):
                shuffle_rng.bit_generator.state = st["order_rng"]
                order = shuffle_rng.permutation(len(train)) if shuffle else np.arange(len(train))
                batches.start_epoch(order)
                t0 = time.perf_counter()
                out.start(f"epoch {st['epoch'] + 1}", steps, B, done=st["batch"])
                checked = st["batch"]
                while st["batch"] < steps:
                    if guard.hit:
                        break
                    start, stop = st["batch"] * B, min(len(train), (st["batch"] + 1) * B)
                    xb = batches.get(order, start, stop)
                    if warm_steps > 0:
                        model.kl_scale = min(1.0, (st["step"] + 1) / warm_steps)
                    n = stop - start
                    cache = model.forward(xb, validate=False, _acc=(acc, float(n)))
                    if not bk.DEVICE and not math.isfinite(cache.loss):
                        raise FloatingPointError(
                            f"the loss is {cache.loss} at epoch {st['epoch'] + 1}, step "
                            f"{st['batch'] + 1}; parameters are unchanged by this step (try a "
                            f"smaller lr, now {opt.lr})")
                    opt.step(model.backward(cache))
                    st["sums"][3] += n
                    st["batch"] += 1
                    st["step"] += 1
                    if bk.DEVICE and st["batch"] - checked >= DEVICE_CHECK_EVERY:
                        _sync_sums(bk, acc, st, opt, checked)
                        checked = st["batch"]
                    out.update(st["batch"], loss_note)
                _sync_sums(bk, acc, st, opt, checked)
                st["seconds"] += time.perf_counter() - t0
                if guard.hit:
                    break
                rec = _end_epoch(model, st, valset, val_samples, steps,
                                 model.beta * model.kl_scale)
                acc[...] = 0
                st["order_rng"] = shuffle_rng.bit_generator.state
                history.append(rec)
                model.history.append(rec)
                out.finish(_summary(rec))
                stop = False
                for cb in callbacks:
                    try:
                        cb(model, rec)
                    except StopTraining:
                        stop = True
                if checkpoint is not None:
                    st["binarize_rng"] = bin_rng.bit_generator.state
                    model.save(checkpoint)
                if stop:
                    break
    finally:
        model.kl_scale = 1.0
        st["binarize_rng"] = bin_rng.bit_generator.state
    if guard.hit:
        history.interrupted = True
        where = f"epoch {st['epoch'] + 1}, step {st['batch']} of {steps}"
        if checkpoint is not None:
            model.save(checkpoint)
            out.note(f"interrupted at {where}; checkpoint written to {checkpoint}")
        else:
            out.note(f"interrupted at {where} (no checkpoint path given: the state is in "
                     "the model object)")
    return history


#: on a GPU the loss is checked for NaN/inf every this many steps (and whenever the
#: progress bar redraws), not every step: reading it would make the host wait each time
DEVICE_CHECK_EVERY = 100


class _Batches:
    """The rows of each training step, gathered where the model computes.

    On a GPU an in-memory training set is copied to the device once (uint8 images stay
    uint8, a quarter of the float32 size) and each batch is gathered and scaled there by
    one kernel, so a step needs no host-to-device copy.  Memory-mapped data, dynamic
    binarization (whose draws come from a host generator, for exact resume) and data too
    large for the GPU use host batches, copied to the device each step.
    """

    def __init__(self, model, ds, B, binarize, bin_rng):
        self.ds, self.binarize, self.bin_rng, self.bk = ds, binarize, bin_rng, model._bk
        self.on_device = False
        usable = (self.bk.DEVICE and binarize == "none" and not isinstance(ds.x, np.memmap)
                  and ds.x.dtype in (np.uint8, np.float32, np.float64))
        if usable:
            try:
                X = ds.x if ds.x.dtype == np.uint8 else np.asarray(ds.x, dtype=model.dtype)
                self.X = self.bk.asarray(np.ascontiguousarray(X))
                self.out = self.bk.xp.empty((B, ds.dim), dtype=model.dtype)
                self.on_device = True
            except MemoryError:
                self.X = None  # does not fit next to the model: host batches instead
        if not self.on_device:
            self.buf = np.empty((B, ds.dim), dtype=model.dtype)

    def start_epoch(self, order):
        if self.on_device:
            self.order = self.bk.asarray(order.astype(np.int64))

    def get(self, order, start, stop):
        """Rows order[start:stop] as a (stop - start, D) batch of the model's dtype."""
        if self.on_device:
            xb = self.out[: stop - start]
            self.bk.gather_rows(xb, self.X, self.order[start:stop], self.ds.scale)
            return xb
        idx = order[start:stop]
        xb = self.ds.batch(idx, out=self.buf[: idx.size])
        if self.binarize == "dynamic":
            _binarize(xb, self.bin_rng, out=xb)
        return xb


def _sync_sums(bk, acc, st, opt, since):
    """Copy the device's running sums into the training state; raise if they stopped
    being finite (on a GPU the loss is not read every step, so say where it happened)."""
    vals = [float(v) for v in bk.to_numpy(acc)]
    if not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(
            f"the loss became non-finite at epoch {st['epoch'] + 1}, between steps {since + 1} "
            f"and {st['batch']}; the model's parameters may no longer be finite: reload the "
            f"last checkpoint and try a smaller lr (now {opt.lr})")
    st["sums"][:3] = vals


def _checked(ds, model):
    if ds.dim != model.input_dim:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.input_dim}")
    return ds.check(model.likelihood)


def _optimizer(model, optimizer, lr):
    if isinstance(optimizer, Optimizer):
        if optimizer.model is not model:
            raise ValueError("the optimizer was built for another model")
        model.optimizer = optimizer
    elif model.optimizer is not None and model.optimizer.name == str(optimizer).lower():
        model.optimizer.lr = float(lr)
    else:
        model.optimizer = make_optimizer(optimizer, model, lr=lr)
    return model.optimizer


def _new_state(model):
    order, binar = np.random.SeedSequence((model.seed, 0xDA7A)).spawn(2)
    return {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0, "sums": [0.0, 0.0, 0.0, 0],
            "order_rng": np.random.PCG64(order).state,
            "binarize_rng": np.random.PCG64(binar).state}


def _end_epoch(model, st, valset, val_samples, steps, beta):
    """Close the epoch: the record of its averages (and validation), state reset."""
    loss, recon, kl, n = st["sums"]
    secs = st["seconds"]
    st["epoch"] += 1
    rec = {"epoch": st["epoch"], "train_loss": loss / n, "train_neg_elbo": (recon + kl) / n,
           "train_recon": recon / n, "train_kl": kl / n, "beta": beta, "steps": steps,
           "train_seconds": secs, "samples_per_s": n / secs if secs > 0 else float("nan")}
    t0 = time.perf_counter()
    if valset is not None:
        ev = elbo(model, valset, n_samples=val_samples, validate=False)  # checked by fit
        rec.update(val_neg_elbo=ev.neg_elbo, val_recon=ev.recon, val_kl=ev.kl)
    rec["seconds"] = secs + time.perf_counter() - t0
    st.update(batch=0, seconds=0.0, sums=[0.0, 0.0, 0.0, 0])
    return rec


def _summary(rec):
    s = (f"epoch {rec['epoch']:3d}  train -elbo {rec['train_neg_elbo']:8.2f} "
         f"(recon {rec['train_recon']:.2f}, kl {rec['train_kl']:.2f})")
    if "val_neg_elbo" in rec:
        s += f"  val -elbo {rec['val_neg_elbo']:8.2f}"
    return s + f"  {rec['seconds']:.1f}s  {rec['samples_per_s']:,.0f} samples/s"


class _SigintGuard:
    """Turns the first Ctrl-C into a flag the loop checks between steps (so a step is never
    cut in half); a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self, out):
        self.hit = False
        self._out = out
        self._old = None

    def _handle(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        self._out.note("Ctrl-C: stopping after this step (press again to abort now)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
