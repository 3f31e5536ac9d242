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
from .batches import Batches
from .distributed import DistributedError
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
        drop_last=None, stream=None, comm=None):
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
    comm : an mpi4py communicator for data-parallel training (:mod:`fastvae.distributed`):
        every rank calls fit with the same data and settings; each computes its shard of
        every global batch, the gradients are summed with one Allreduce, and every rank
        takes the same step.  Only rank 0 shows progress and writes the checkpoint; every
        rank returns the same history.  An error on any rank stops every rank.
    """
    dist = None
    if comm is not None:
        from .distributed import Distributed
        dist = Distributed(comm, model)
    # everything is checked before anything changes: a bad argument or bad data leaves the
    # model and its training state as they were (with ranks: on every rank, each told why)
    failure = None
    try:
        epochs = nonneg_int(epochs, "epochs")
        given = {k: v for k, v in dict(
            batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
            clip_norm=clip_norm, momentum=momentum, kl_warmup=kl_warmup, binarize=binarize,
            val_samples=val_samples, shuffle=shuffle, drop_last=drop_last).items()
            if v is not None}
        settings, make_optimizer, changes = resolve(model.train_state, model, dict(given))
        callbacks = _check_callbacks(callbacks)
        progress = boolean(progress, "progress")
        if dist is not None and dist.rank != 0:  # one rank speaks and writes
            progress, checkpoint = False, None
        if checkpoint is not None:
            _check_checkpoint_path(checkpoint)
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ValueError(f"stream must be a writable text stream (with .write), got "
                             f"{stream!r}")
        train = _checked(as_dataset(X, "training data"), model, dist)
        valset = None if val is None else _checked(as_dataset(val, "validation data"), model,
                                                   dist)
    except Exception as e:  # noqa: BLE001
        if dist is None:
            raise
        failure = e
    if dist is not None:
        dist.check_same_start(failure, lambda: (model, settings, given, epochs, train, valset))
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
    if changes and (dist is None or dist.rank == 0):
        _report(out, "fit: settings changed from the saved run (applied): " + "; ".join(changes))
    if epochs == 0:
        return History(st.history)
    st.n_rows = N
    drop_last = settings["drop_last"]
    steps = N // B if drop_last else -(-N // B)  # steps of a whole epoch
    warm_steps = settings["kl_warmup"] * steps
    bk = model._bk
    batches = Batches(model, train, B, settings["binarize"], st.binarize_rng,
                      None if dist is None else dist.shard)
    reduce_kl = None if dist is None else dist.kl_dim_reducer
    # On a GPU the epoch's running sums (loss, recon, kl) stay where the model computes and
    # nothing in the loop waits for them (see _sync_sums for when they are read: the sums
    # so far, base, plus what acc gathered since).  On the host each step's loss is already
    # read, checked, and added here.
    acc = bk.xp.zeros(3, dtype=np.float64) if bk.DEVICE else None
    base = [list(st.sums[:3])]
    if acc is not None and dist is None:
        # one process: the device's sums continue from the saved ones, so that a resumed
        # epoch adds in the order of an uninterrupted one (its loss is the same to the bit);
        # with ranks each rank's acc holds its own rows only, and base the agreed sums
        acc[...] = bk.asarray(np.array(base[0], dtype=np.float64))
        base[0] = [0.0, 0.0, 0.0]
    checked = st.epoch_steps  # the last step whose loss is known to be finite
    # opt.step_count - st.step is fixed while the position keeps up with the optimizer; a
    # second Ctrl-C between the two is caught up with in the finally clause below
    lag = opt.step_count - st.step
    pending = None

    def sync(check=True):  # the device's sums into the state (every rank at once)
        _sync_sums(bk, acc, base[0], st, opt, checked, check, dist)

    def loss_note():  # the progress bar's loss, read only when the bar redraws
        if bk.DEVICE and dist is None:  # (with ranks: the last sums all ranks agreed on)
            sync()
        return f"loss {st.sums[0] / max(1, st.sums[3]):.2f}"

    guard = _SigintGuard(out)
    # with ranks, a Ctrl-C seen by one rank stops them all after the same step: the loop
    # obeys only the stop every rank agreed on (agree's flag), never a rank's own
    agreed = [False]

    def stopping():
        return guard.hit if dist is None else agreed[0]

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
                    if stopping():
                        break
                    start, stop = st.row, min(N, st.row + B)
                    lo, hi = (start, stop) if dist is None else dist.shard(start, stop)
                    n = stop - start
                    if warm_steps > 0:
                        model.kl_scale = _kl_scale(st.step + 1, warm_steps)
                    failure, sums = None, (0.0, 0.0, 0.0, hi - lo)
                    if dist is not None:
                        dist.begin_step(model.free_bits)
                    try:
                        sums = _local_step(model, batches, lo, hi, start, stop, acc,
                                           reduce_kl, st, opt)
                    except DistributedError:
                        raise  # another rank failed, and every rank knows it already
                    except Exception as e:  # noqa: BLE001  (on one rank: tell them all)
                        if dist is None:
                            raise
                        failure = f"{type(e).__name__}: {e}"
                    if dist is not None:
                        agreed[0], sums = dist.agree(failure, guard.hit, sums)
                        dist.allreduce_(model.flat_grads)
                    pending = (stop, n)
                    opt.step()  # the gradient buffer backward (and the Allreduce) filled
                    _advance(st, stop, n)
                    pending = None
                    if acc is None:
                        st.sums[0] += sums[0]
                        st.sums[1] += sums[1]
                        st.sums[2] += sums[2]
                    elif st.epoch_steps - checked >= DEVICE_CHECK_EVERY:
                        sync()
                        checked = st.epoch_steps
                    out.update(-(-st.row // B), loss_note)
                if acc is not None:
                    sync()
                st.seconds += time.perf_counter() - t0
                if stopping():
                    break
                beta = model.beta * (_kl_scale(st.step, warm_steps) if warm_steps > 0 else 1.0)
                rec = _end_epoch(model, st, valset, settings["val_samples"], beta, dist)
                if acc is not None:
                    acc[...] = 0
                    base[0] = [0.0, 0.0, 0.0]
                st.order_rng = order_after
                out.finish(_summary(rec))
                stop, failure = False, None
                try:
                    for cb in callbacks:
                        try:
                            cb(model, rec)
                        except StopTraining:
                            stop = True
                    if checkpoint is not None:
                        model.save(checkpoint)
                except Exception as e:  # noqa: BLE001  (on one rank: tell them all)
                    if dist is None:
                        raise
                    failure = f"{type(e).__name__}: {e}"
                if dist is not None:  # a callback's stop or a Ctrl-C on one rank: on all
                    # (the loss sums' slot carries the callbacks' stop here)
                    agreed[0], s = dist.agree(failure, guard.hit, (float(stop), 0.0, 0.0, 0))
                    stop = s[0] > 0
                if stop:
                    break
            else:
                finished = True
    finally:
        model.kl_scale = 1.0
        if pending is not None and opt.step_count - st.step == lag + 1:
            _advance(st, *pending)  # the optimizer stepped; keep the position with it
        if acc is not None and dist is None:  # (with ranks: a collective; done at each stop)
            try:
                sync(check=False)
            except Exception:  # noqa: BLE001  (the error in flight is the one to report)
                pass
    history = History(st.history)
    if stopping() and not finished:  # an epoch was cut short (or never started)
        history.interrupted = True
        where = f"epoch {st.epoch + 1}, step {st.epoch_steps} of {steps}"
        if checkpoint is not None:
            model.save(checkpoint)
            out.note(f"interrupted at {where}; checkpoint written to {checkpoint}")
        else:
            out.note(f"interrupted at {where} (no checkpoint path given: the state is in "
                     "the model object)")
    return history


def _local_step(model, batches, lo, hi, start, stop, acc, reduce_kl, st, opt):
    """This process's part of one step: forward and backward on rows [lo, hi) of the global
    batch [start, stop) (all of it without ranks), gradients of the global batch's mean loss
    left in the model's buffer.  Returns the rows' [loss, recon, kl] sums and their count
    (on a GPU the sums stay on the device, in acc: zeros here)."""
    m = hi - lo
    if m == 0:  # more ranks than rows in this batch: take part with a zero gradient
        batches.skip(start, stop)
        model._noise_counter += 1  # every rank draws one step of noise per step
        if reduce_kl is not None and model.free_bits > 0:
            reduce_kl(stop - start)(model._bk.xp.zeros(model.latent_dim, dtype=model.dtype), 0)
        model.flat_grads.fill(0)
        return 0.0, 0.0, 0.0, 0
    xb = batches.get(lo, hi, start, stop)
    cache = model.forward(xb, validate=False, _acc=None if acc is None else (acc, float(m)),
                          _row0=lo - start, _batch=stop - start,
                          _reduce_kl=None if reduce_kl is None else reduce_kl(stop - start))
    sums = (0.0, 0.0, 0.0, m)
    if acc is None:
        loss, recon, kl = cache._read()
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the loss is {loss} at epoch {st.epoch + 1}, step {st.epoch_steps + 1}; "
                f"parameters are unchanged by this step (try a smaller lr, now {opt.lr})")
        sums = (m * loss, m * recon, m * kl, m)
    model.backward(cache)
    return sums


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


def _sync_sums(bk, acc, base, st, opt, since, check=True, dist=None):
    """The state's sums = base + the device's running sums (summed over the ranks); raise
    if they stopped being finite (on a GPU the loss is not read every step, so say where
    it happened)."""
    vals = bk.to_numpy(acc).astype(np.float64)
    if dist is not None:
        vals = dist.sum(vals)
    vals = [b + float(v) for b, v in zip(base, vals)]
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


def _checked(ds, model, dist=None):
    """ds, its width and values checked (with ranks: each scans its share of the rows)."""
    if ds.dim != model.input_dim:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.input_dim}")
    return ds.check(model.likelihood, None if dist is None else dist.shard(0, len(ds)))


def _end_epoch(model, st, valset, val_samples, beta, dist=None):
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
        ev = elbo(model, valset, n_samples=val_samples, validate=False,  # checked by fit
                  _dist=dist)
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
