"""The fit loop: epochs of shuffled batches, KL warm-up, validation, progress, checkpoints.

Everything a run adds to the model lives in its :class:`~fastvae.state.TrainState`
(``model.train_state``): the optimizer and its moments, every fit setting, the generators
that order and binarize the data, the position inside the current epoch and the history.
A run can be stopped anywhere between two steps and resumed to the bit: ``fit`` with no
settings continues with the saved ones.

Ctrl-C during ``fit`` finishes the current step, writes the checkpoint (when one was given)
and returns the history with ``history.interrupted = True``; a second Ctrl-C aborts at once.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np

from .data import DataError
from .evaluate import as_dataset, elbo
from .progress import Progress
from .state import TrainState, resolve
from .validate import boolean, nonneg_int


class SettingChangedWarning(UserWarning):
    """A fit setting given explicitly differs from the saved run's; it was applied."""


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` after the current epoch."""


class History(list):
    """One dict per epoch (keys: epoch, train_loss, train_neg_elbo, train_recon, train_kl,
    beta, val_neg_elbo, val_recon, val_kl, seconds, train_seconds, samples_per_s, steps).
    Losses are in nats per datapoint.  ``interrupted`` is True when Ctrl-C ended the run."""

    interrupted = False

    def last(self, key):
        return self[-1][key] if self else None


def fit(model, X, epochs=1, batch_size=None, optimizer=None, lr=None, val=None,
        kl_warmup=None, shuffle=None, callbacks=(), progress=True, checkpoint=None, *,
        weight_decay=None, clip_norm=None, momentum=None, binarize=None, val_samples=None,
        drop_last=None, stream=None):
    """Train ``model`` on X for ``epochs`` more epochs, from wherever its training state
    stands (an epoch in progress counts as the first of them); returns the :class:`History`
    of every epoch so far (``model.history``).

    X, val : (N, D) arrays or :class:`~fastvae.data.Dataset` (uint8 and memory-mapped data
        is converted one batch at a time).  Both are scanned for NaN/inf and range before
        the first step.

    Settings.  Each is saved in the training state; None (the default) means "the saved
    value", or the default in brackets for a model's first fit.  A value given explicitly
    that differs from the saved one is applied and reported in one line (on the progress
    output, or as a :class:`SettingChangedWarning` when progress is off).

    batch_size [128]; optimizer ["adam"]: "adam" | "adamw" | "sgd" or an Optimizer built
    for this model (another name starts new moments); lr [1e-3]; weight_decay [the
    optimizer's: 0, AdamW 0.01]; clip_norm [off]: clip the gradient's global norm
    (math.inf: off); momentum [0]: SGD only; kl_warmup [0]: epochs over which beta ramps
    linearly from 0 to ``model.beta``, counted from the run's first step; binarize
    ["none"]: "dynamic" draws fresh Bernoulli pixels every batch (Bernoulli likelihood);
    val_samples [1]: draws of z per row for the validation ELBO; shuffle [True];
    drop_last [False].

    callbacks : callables ``cb(model, record)`` run after each epoch; raise
        :class:`StopTraining` to stop.
    progress : True (a bar on a terminal and one line per epoch), False (silent).
    checkpoint : a path (in an existing directory) written atomically after every epoch
        and when Ctrl-C stops the run.
    """
    epochs = nonneg_int(epochs, "epochs")
    given = dict(batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                 clip_norm=clip_norm, momentum=momentum, kl_warmup=kl_warmup,
                 binarize=binarize, val_samples=val_samples, shuffle=shuffle,
                 drop_last=drop_last)
    # everything is checked before anything changes: a bad argument or bad data leaves the
    # model and its training state as they were
    settings, make_optimizer, changes = resolve(model.train_state, model,
                                                {k: v for k, v in given.items() if v is not None})
    callbacks = _check_callbacks(callbacks)
    progress = boolean(progress, "progress")
    if checkpoint is not None:
        _check_checkpoint_path(checkpoint)
    if stream is not None and not callable(getattr(stream, "write", None)):
        raise ValueError(f"stream must be a writable text stream (with .write), got {stream!r}")
    train = _checked(as_dataset(X, "training data"), model)
    valset = None if val is None else _checked(as_dataset(val, "validation data"), model)
    B, N = settings["batch_size"], len(train)
    if N < B:
        raise DataError(f"{train.name}: {N} rows is fewer than one batch of "
                        f"{B}; use a smaller batch_size")

    st = model.train_state
    if st is None:
        st = model.train_state = TrainState(model)
    if st.row and settings["shuffle"] != st.settings["shuffle"]:
        changes = [c + " (from the next epoch: this one keeps its order)"
                   if c.startswith("shuffle ") else c for c in changes]
    st.settings, st.settings_saved = settings, True
    st.optimizer = opt = make_optimizer()
    out = Progress(stream or sys.stderr, enabled=progress)
    if st.row and st.n_rows != N and epochs > 0:
        changes.append(f"the data has {N} rows where the epoch in progress had {st.n_rows}: "
                       f"epoch {st.epoch + 1} restarts")
        st.restart_epoch()
    if changes:
        _report(out, "fit: settings changed from the saved run (applied): " + "; ".join(changes))
    if epochs == 0:
        return History(st.history)
    st.n_rows = N
    drop_last = settings["drop_last"]
    steps = N // B if drop_last else -(-N // B)  # steps of a whole epoch
    warm_steps = settings["kl_warmup"] * steps
    bk = model._bk
    batches = _Batches(model, train, B, settings["binarize"], st.binarize_rng)
    # On a GPU the epoch's running sums (loss, recon, kl) stay where the model computes and
    # nothing in the loop waits for them (see _sync_sums for when they are read).  On the
    # host each step's loss is already read, checked, and added here.
    acc = bk.asarray(np.array(st.sums[:3], dtype=np.float64)) if bk.DEVICE else None
    checked = st.epoch_steps  # the last step whose loss is known to be finite
    # opt.step_count - st.step is fixed while the position keeps up with the optimizer; a
    # second Ctrl-C between the two is caught up with in the finally clause below
    lag = opt.step_count - st.step
    pending = None

    def loss_note():  # the progress bar's loss, read only when the bar redraws
        if bk.DEVICE:
            _sync_sums(bk, acc, st, opt, checked)
        return f"loss {st.sums[0] / max(1, st.sums[3]):.2f}"

    guard = _SigintGuard(out)
    finished = False
    try:
        with guard:
            for _ in range(epochs):
                # an epoch in progress keeps the order it started with
                shuffled = st.epoch_shuffle if st.row else settings["shuffle"]
                order, order_after = st.epoch_order(N, shuffled)
                st.epoch_shuffle = shuffled
                batches.start_epoch(order, st.row)
                t0 = time.perf_counter()
                out.start(f"epoch {st.epoch + 1}", steps, B, done=-(-st.row // B))
                checked = st.epoch_steps
                while st.row < N and not (drop_last and N - st.row < B):
                    if guard.hit:
                        break
                    start, stop = st.row, min(N, st.row + B)
                    xb = batches.get(start, stop)
                    if warm_steps > 0:
                        model.kl_scale = _kl_scale(st.step + 1, warm_steps)
                    n = stop - start
                    cache = model.forward(xb, validate=False,
                                          _acc=None if acc is None else (acc, float(n)))
                    if acc is None:
                        loss, recon, kl = cache._read()
                        if not math.isfinite(loss):
                            raise FloatingPointError(
                                f"the loss is {loss} at epoch {st.epoch + 1}, step "
                                f"{st.epoch_steps + 1}; parameters are unchanged by this step "
                                f"(try a smaller lr, now {opt.lr})")
                    pending = (stop, n)
                    opt.step(model.backward(cache))
                    _advance(st, stop, n)
                    pending = None
                    if acc is None:
                        st.sums[0] += n * loss
                        st.sums[1] += n * recon
                        st.sums[2] += n * kl
                    elif st.epoch_steps - checked >= DEVICE_CHECK_EVERY:
                        _sync_sums(bk, acc, st, opt, checked)
                        checked = st.epoch_steps
                    out.update(-(-st.row // B), loss_note)
                if acc is not None:
                    _sync_sums(bk, acc, st, opt, checked)
                st.seconds += time.perf_counter() - t0
                if guard.hit:
                    break
                beta = model.beta * (_kl_scale(st.step, warm_steps) if warm_steps > 0 else 1.0)
                rec = _end_epoch(model, st, valset, settings["val_samples"], beta)
                if acc is not None:
                    acc[...] = 0
                st.order_rng = order_after
                out.finish(_summary(rec))
                stop = False
                for cb in callbacks:
                    try:
                        cb(model, rec)
                    except StopTraining:
                        stop = True
                if checkpoint is not None:
                    model.save(checkpoint)
                if stop:
                    break
            else:
                finished = True
    finally:
        model.kl_scale = 1.0
        if pending is not None and opt.step_count - st.step == lag + 1:
            _advance(st, *pending)  # the optimizer stepped; keep the position with it
        if acc is not None:
            try:
                _sync_sums(bk, acc, st, opt, checked, check=False)
            except Exception:  # noqa: BLE001  (the error in flight is the one to report)
                pass
    history = History(st.history)
    if guard.hit and not finished:  # an epoch was cut short (or never started)
        history.interrupted = True
        where = f"epoch {st.epoch + 1}, step {st.epoch_steps} of {steps}"
        if checkpoint is not None:
            model.save(checkpoint)
            out.note(f"interrupted at {where}; checkpoint written to {checkpoint}")
        else:
            out.note(f"interrupted at {where} (no checkpoint path given: the state is in "
                     "the model object)")
    return history


def _advance(st, stop, n):
    """Record one step done: the position in the epoch and the step counts."""
    st.row = stop
    st.sums[3] += n
    st.epoch_steps += 1
    st.step += 1


def _kl_scale(step, warm_steps):
    """The KL weight's share at training step ``step`` (counted from 1) of a warm-up over
    ``warm_steps`` steps."""
    return min(1.0, step / warm_steps)


def _report(out, line):
    """One line on the progress output, or a warning when progress is off."""
    if out.enabled:
        out.note(line)
    else:
        warnings.warn(line, SettingChangedWarning, stacklevel=4)


def _check_checkpoint_path(checkpoint):
    """A checkpoint path must be a file name in an existing directory: found out now, not
    after an epoch of training."""
    try:
        path = os.fspath(checkpoint)
    except TypeError:
        raise ValueError(f"checkpoint must be a path (str or os.PathLike), got {checkpoint!r}") from None
    if not isinstance(path, str) or not path or path.endswith(os.sep):
        raise ValueError(f"checkpoint must name a file, got {checkpoint!r}")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint={path!r} is a directory; name a file in it, such as "
                         f"{os.path.join(path, 'model.npz')!r}")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise FileNotFoundError(f"checkpoint={path!r}: directory {d} does not exist")


def _check_callbacks(callbacks):
    if callable(callbacks):
        return [callbacks]
    if isinstance(callbacks, (str, bytes)):
        raise ValueError(f"callbacks must be a list of callables, got {callbacks!r}")
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise ValueError(f"callbacks must be a list of callables, got {callbacks!r}") from None
    for cb in callbacks:
        if not callable(cb):
            raise ValueError(f"callbacks must be callables cb(model, record), got {cb!r}")
    return callbacks


#: on a GPU the loss is checked for NaN/inf every this many steps (and whenever the
#: progress bar redraws), not every step: reading it would make the host wait each time
DEVICE_CHECK_EVERY = 100


class _Batches:
    """The rows of each training step, gathered where the model computes, allocating
    nothing per step.

    On a GPU an in-memory training set is copied to the device once (uint8 images stay
    uint8, a quarter of the float32 size) and each batch is gathered and scaled there by
    one kernel, so a step needs no host-to-device copy.  Memory-mapped data, dynamic
    binarization (whose draws come from a host generator, for exact resume) and data too
    large for the GPU use host batches, gathered into one buffer (and, on a GPU, copied
    into one device buffer).  A memory-mapped file is read in file order within each batch
    (the order is worked out once per epoch), so a file larger than memory streams.
    """

    def __init__(self, model, ds, B, binarize, bin_rng):
        self.ds, self.binarize, self.bin_rng, self.bk = ds, binarize, bin_rng, model._bk
        self.B, self.on_device = B, False
        self.mapped = isinstance(ds.x, np.memmap)
        usable = (self.bk.DEVICE and binarize == "none" and not self.mapped
                  and ds.x.dtype in (np.uint8, np.float32, np.float64))
        if usable:
            try:
                X = ds.x if ds.x.dtype == np.uint8 else np.asarray(ds.x, dtype=model.dtype)
                self.X = self.bk.asarray(np.ascontiguousarray(X))
                self.out = self.bk.xp.empty((B, ds.dim), dtype=model.dtype)
                self.on_device = True
            except MemoryError:
                self.X = None  # does not fit next to the model: host batches instead
        if self.on_device:
            return
        # host batches: the gather kernel of the cpu backend (the numpy backend's own keeps
        # that backend free of Numba)
        if self.bk.NAME == "numpy":
            from .backends import reference as host
        else:
            from .backends import cpu as host
        self.host = host
        self.X = np.asarray(ds.x)  # drops the memmap subclass only: a file stays a file
        # the kernels read native integers and float32/64; other data (big-endian IDX
        # floats, float16) goes through Dataset.batch, which converts with a temporary
        self.kernel_ok = (self.X.dtype.isnative and self.X.dtype.kind in "uif"
                          and self.X.dtype != np.float16)
        self.buf = np.empty((B, ds.dim), dtype=model.dtype)
        self.u = np.empty((B, ds.dim), dtype=model.dtype) if binarize == "dynamic" else None
        if self.mapped:  # per batch: rows in file order, and where each goes in the batch
            self.src, self.dest = np.empty(len(ds), np.int64), np.empty(len(ds), np.int64)
        if self.bk.DEVICE:
            self.staged = self.bk.xp.empty((B, ds.dim), dtype=model.dtype)

    def start_epoch(self, order, first_row):
        """The epoch's row order (N,); batches start at first_row, first_row + B, ..."""
        self.order = order
        if self.on_device:
            self.order_dev = self.bk.asarray(order.astype(np.int64))
        elif self.mapped and self.kernel_ok:
            for s in range(first_row, order.size, self.B):
                seg = order[s:s + self.B]
                where = np.argsort(seg, kind="stable")
                self.src[s:s + seg.size] = seg[where]
                self.dest[s:s + seg.size] = where

    def get(self, start, stop):
        """Rows order[start:stop] as a (stop - start, D) batch of the model's dtype."""
        n = stop - start
        if self.on_device:
            xb = self.out[:n]
            self.bk.gather_rows(xb, self.X, self.order_dev[start:stop], self.ds.scale)
            return xb
        xb = self.buf[:n]
        if not self.kernel_ok:
            self.ds.batch(self.order[start:stop], out=xb)
        elif self.mapped:
            self.host.scatter_rows(xb, self.dest[start:stop], self.X, self.src[start:stop],
                                   self.ds.scale)
        else:
            self.host.gather_rows(xb, self.X, self.order[start:stop], self.ds.scale)
        if self.binarize == "dynamic":
            u = self.u[:n]
            self.bin_rng.random(out=u, dtype=u.dtype)
            self.host.binarize_rows(xb, u)
        if self.bk.DEVICE:
            staged = self.staged[:n]
            self.bk.copy_from_host(staged, xb)
            return staged
        return xb


def _sync_sums(bk, acc, st, opt, since, check=True):
    """Copy the device's running sums into the training state; raise if they stopped
    being finite (on a GPU the loss is not read every step, so say where it happened)."""
    vals = [float(v) for v in bk.to_numpy(acc)]
    if check and opt.clip_norm is not None and opt.last_grad_norm is not None \
            and not math.isfinite(float(opt.last_grad_norm)):
        raise FloatingPointError(
            f"the gradient norm became non-finite at epoch {st.epoch + 1}, between steps "
            f"{since + 1} and {st.epoch_steps}: those steps left the parameters unchanged; "
            f"try a smaller lr (now {opt.lr})")
    if check and not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(
            f"the loss became non-finite at epoch {st.epoch + 1}, between steps {since + 1} "
            f"and {st.epoch_steps}; the model's parameters may no longer be finite: reload the "
            f"last checkpoint and try a smaller lr (now {opt.lr})")
    st.sums[:3] = vals


def _checked(ds, model):
    if ds.dim != model.input_dim:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.input_dim}")
    return ds.check(model.likelihood)


def _end_epoch(model, st, valset, val_samples, beta):
    """Close the epoch: the record of its averages (and validation), position reset."""
    loss, recon, kl, n = st.sums
    secs = st.seconds
    st.epoch += 1
    rec = {"epoch": st.epoch, "train_loss": loss / n, "train_neg_elbo": (recon + kl) / n,
           "train_recon": recon / n, "train_kl": kl / n, "beta": beta,
           "steps": st.epoch_steps, "train_seconds": secs,
           "samples_per_s": n / secs if secs > 0 else float("nan")}
    t0 = time.perf_counter()
    if valset is not None:
        ev = elbo(model, valset, n_samples=val_samples, validate=False)  # checked by fit
        rec.update(val_neg_elbo=ev.neg_elbo, val_recon=ev.recon, val_kl=ev.kl)
    rec["seconds"] = secs + time.perf_counter() - t0
    st.restart_epoch()
    st.history.append(rec)
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
