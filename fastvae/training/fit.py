"""The fit loop: epochs of shuffled batches, KL warm-up, validation, progress, checkpoints.

Everything a run adds to the model lives in its :class:`~fastvae.training.state.TrainState`
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
import sys
import time
import warnings

import numpy as np

from ..io.data import DataError
from .batches import Batches
from .interrupt import SigintGuard
from .distributed import DistributedError
from ..core.evaluate import as_dataset, elbo
from ..core.step import StepContext
from .progress import Progress
from .state import TrainState, resolve
from ..core.validate import boolean, nonneg_int


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

    X, val : (N, D) arrays or :class:`~fastvae.io.data.Dataset` (uint8 and memory-mapped data
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
    comm : an mpi4py communicator for data-parallel training (:mod:`fastvae.training.distributed`):
        every rank calls fit with the same model, data and settings (checked before the
        first step); each computes its shard of every global batch, the gradients are
        summed with one Allreduce, and every rank takes the same step: N ranks give what
        one process gives, to the rounding of the sums.  Only rank 0 shows progress and
        writes the checkpoint; every rank returns the same history.  An error on any rank
        raises DistributedError on every rank, naming the rank and the cause; a Ctrl-C on
        any rank stops every rank after the same step (twice: aborts every rank).  On GPUs,
        build each rank's model with ``backend=distributed.rank_backend("cuda",
        distributed.local_rank(comm))`` to give the ranks of a machine its GPUs in turn.
    """
    dist = None
    if comm is not None:
        from .distributed import Distributed
        dist = Distributed(comm, model)
    # A Ctrl-C from here on only sets guard.hit (see SigintGuard); with ranks a rank's
    # own flag is never obeyed alone: the stop is agreed (see _Loop.agree)
    with SigintGuard() as guard:
        try:
            return _fit(model, X, epochs, val, callbacks, progress, checkpoint, stream, dist,
                        guard, dict(batch_size=batch_size, optimizer=optimizer, lr=lr,
                                    weight_decay=weight_decay, clip_norm=clip_norm,
                                    momentum=momentum, kl_warmup=kl_warmup, binarize=binarize,
                                    val_samples=val_samples, shuffle=shuffle,
                                    drop_last=drop_last))
        except KeyboardInterrupt:
            if dist is not None and dist.size > 1:
                # a second Ctrl-C means "abort now": on every rank, or the others would
                # wait for this one in their next collective for ever
                print(f"fastvae: Ctrl-C twice on MPI rank {dist.rank}: aborting every rank",
                      file=sys.stderr, flush=True)
                dist.comm.Abort(130)
            raise


def _fit(model, X, epochs, val, callbacks, progress, checkpoint, stream, dist, guard, given):
    lead = dist is None or dist.rank == 0  # the one process that speaks and writes
    # everything is checked before anything changes: a bad argument or bad data leaves the
    # model and its training state as they were (with ranks: on every rank, each told why)
    failure = None
    try:
        epochs = nonneg_int(epochs, "epochs")
        given = {k: v for k, v in given.items() if v is not None}
        settings, make_optimizer, changes = resolve(model.train_state, model, dict(given))
        callbacks = _check_callbacks(callbacks)
        progress = boolean(progress, "progress") and lead
        if not lead:
            checkpoint = None
        if checkpoint is not None:
            _check_checkpoint_path(checkpoint)
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ValueError(f"stream must be a writable text stream (with .write), got "
                             f"{stream!r}")
        train = _checked(as_dataset(X, "training data"), model, dist)
        valset = None if val is None else _checked(as_dataset(val, "validation data"), model,
                                                   dist)
        B, N = settings["batch_size"], len(train)
        if N < B:
            raise DataError(f"{train.name}: {N} rows is fewer than one batch of "
                            f"{B}; use a smaller batch_size")
        st = model.train_state
        if st is not None and st.row and settings["shuffle"] != st.settings["shuffle"]:
            changes = [c + " (from the next epoch: this one keeps its order)"
                       if c.startswith("shuffle ") else c for c in changes]
        restart = st is not None and st.row and st.n_rows != N and epochs > 0
        if restart:
            changes.append(f"the data has {N} rows where the epoch in progress had "
                           f"{st.n_rows}: epoch {st.epoch + 1} restarts")
        out = Progress(stream or sys.stderr, enabled=progress)
        guard.out = out
        if changes and lead:  # (a warning that is an error stops every rank, here)
            _report(out, "fit: settings changed from the saved run (applied): "
                    + "; ".join(changes))
    except Exception as e:  # noqa: BLE001
        if dist is None:
            raise
        failure = e
    stopped = False
    if dist is not None:
        dist.check_same_start(failure, lambda: (model, settings, given, epochs, train, valset))
        stopped = dist.agree(None, guard.hit)[0]  # a Ctrl-C during the checks, anywhere

    st = model.train_state
    if st is None:
        st = model.train_state = TrainState(model)
    st.settings, st.settings_saved = settings, True
    st.optimizer = make_optimizer()
    if restart:
        st.restart_epoch()
    if epochs == 0:
        return History(st.history)
    st.n_rows = N
    loop = _Loop(model, st, train, valset, settings, callbacks, checkpoint, out, dist, guard)
    loop.agreed = stopped
    finished = loop.run(epochs)
    history = History(st.history)
    if loop.stopping() and not finished:  # an epoch was cut short (or never started)
        history.interrupted = True
        where = f"epoch {st.epoch + 1}, step {st.epoch_steps} of {loop.steps}"
        if checkpoint is not None:
            model.save(checkpoint)
            out.note(f"interrupted at {where}; checkpoint written to {checkpoint}")
        else:
            out.note(f"interrupted at {where} (no checkpoint path given: the state is in "
                     "the model object)")
    return history


class _Loop:
    """The epochs of one fit: steps, epoch ends, and (with ranks) their agreements."""

    def __init__(self, model, st, train, valset, settings, callbacks, checkpoint, out, dist,
                 guard):
        self.model, self.st, self.train, self.valset = model, st, train, valset
        self.settings, self.callbacks, self.checkpoint = settings, callbacks, checkpoint
        self.out, self.dist, self.guard = out, dist, guard
        self.opt = st.optimizer
        B, N = settings["batch_size"], len(train)
        self.B, self.N = B, N
        self.steps = N // B if settings["drop_last"] else -(-N // B)  # of a whole epoch
        self.warm_steps = settings["kl_warmup"] * self.steps
        self.batches = Batches(model, train, B, settings["binarize"], st.binarize_rng,
                               None if dist is None else dist.shard)
        self.reduce_kl = None if dist is None else dist.kl_dim_reducer
        bk = self.bk = model.kernels
        # One process on a GPU: the epoch's running sums (loss, recon, kl) stay on the
        # device and nothing in the loop waits for them (see _sync_sums: they are read
        # every DEVICE_CHECK_EVERY steps); they continue from the saved ones, so that a
        # resumed epoch adds in the order of an uninterrupted one.  On the host, and with
        # ranks (whose steps wait for the Allreduce anyway), each step's loss is read,
        # checked and added here, so a non-finite loss stops the step that made it.
        self.acc = None
        if bk.DEVICE and dist is None:
            self.acc = bk.xp.asarray(np.array(st.sums[:3], dtype=np.float64))
            self.acc_mark = bk.xp.empty_like(self.acc)  # the sums before the step in flight
        self.checked = st.epoch_steps  # the last step whose loss is known to be finite
        self.agreed = False  # with ranks: the stop every rank agreed on
        self.deferred = None  # with ranks: rank 0's error in output, told at the next agree

    def stopping(self):
        return self.guard.hit if self.dist is None else self.agreed

    def agree(self, failure, sums):
        """With ranks: the agreement closing a step or an epoch (failures anywhere raise
        DistributedError everywhere; a Ctrl-C anywhere stops everywhere)."""
        if failure is None and self.deferred is not None:
            failure = self.deferred
        self.agreed, sums = self.dist.agree(failure, self.guard.hit, sums)
        return sums

    def side(self, fn, *args):
        """Rank 0's output (progress): with ranks an error in it must not take rank 0 out
        of the next collective; it is told to every rank at the next agreement."""
        if self.dist is None:
            return fn(*args)
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            self.deferred = self.deferred or f"{type(e).__name__}: {e}"

    def sync(self, check=True):  # one process on a GPU: the device's sums into the state
        _sync_sums(self.bk, self.acc, self.st, self.opt, self.checked, check)

    def loss_note(self):  # the progress bar's loss, read only when the bar redraws
        if self.acc is not None:
            self.sync()
        return f"loss {self.st.sums[0] / max(1, self.st.sums[3]):.2f}"

    def run(self, epochs):
        """Train ``epochs`` epochs (or until stopped); True when all of them finished."""
        try:
            for _ in range(epochs):
                self.epoch()
                if self.stopping():
                    return False
                if self.end_epoch():
                    return False
            return True
        finally:
            self.model.kl_scale = 1.0
            if self.acc is not None:
                try:
                    self.sync(check=False)
                except Exception:  # noqa: BLE001  (the error in flight is the one to report)
                    pass

    def epoch(self):
        """The steps of one epoch (the rest of the one in progress), until stopped."""
        st, B, N, out = self.st, self.B, self.N, self.out
        # an epoch in progress keeps the order it started with
        shuffled = st.epoch_shuffle if st.row else self.settings["shuffle"]
        order, self.order_after = st.epoch_order(N, shuffled)
        st.epoch_shuffle = shuffled
        self.batches.start_epoch(order, st.row)
        t0 = time.perf_counter()
        self.side(out.start, f"epoch {st.epoch + 1}", self.steps, B, -(-st.row // B))
        self.checked = st.epoch_steps
        while st.row < N and not (self.settings["drop_last"] and N - st.row < B):
            if self.stopping():
                break
            self.step()
            self.side(out.update, -(-st.row // B), self.loss_note)
        if self.acc is not None:
            self.sync()
        st.seconds += time.perf_counter() - t0

    def step(self):
        model, st, opt, dist = self.model, self.st, self.opt, self.dist
        start, stop = st.row, min(self.N, st.row + self.B)
        lo, hi = (start, stop) if dist is None else dist.shard(start, stop)
        n = stop - start
        if self.warm_steps > 0:
            model.kl_scale = _kl_scale(st.step + 1, self.warm_steps)
        # A step happens whole or not at all: until the optimizer steps, any error (or a
        # second Ctrl-C) gives back what the step drew (its noise, its binarization draws,
        # on a GPU its share of the loss sums), so that the run goes on from this step
        # exactly as if it had never started; the update and its record are one.  One
        # process holds a second Ctrl-C until the step is over, so that neither is ever cut
        # short (with ranks it aborts every rank at once, and a rank waiting in a collective
        # must stay abortable: there only the update and its record are held).
        if dist is None:
            self.guard.hold()
        try:
            self._step(model, st, opt, dist, start, stop, lo, hi, n)
        finally:
            if dist is None:
                self.guard.release()

    def _step(self, model, st, opt, dist, start, stop, lo, hi, n):
        failure, sums = None, (0.0, 0.0, 0.0, hi - lo)
        mark = self.mark()
        try:
            if dist is not None:
                dist.begin_step(model.free_bits)
            try:
                sums = _local_step(model, self.batches, lo, hi, start, stop, self.acc,
                                   self.reduce_kl, st, opt)
                if dist is not None:
                    dist.ready()  # the GPU's errors surface here, inside the agreement
            except DistributedError:
                raise  # another rank failed, and every rank knows it already
            except Exception as e:  # noqa: BLE001  (on one rank: tell them all)
                if dist is None:
                    raise
                failure = f"{type(e).__name__}: {e}"
            if dist is not None:
                sums = self.agree(failure, sums)
                dist.allreduce_(model.flat_grads)
        except BaseException:
            self.rollback(mark)
            raise
        count = opt.step_count
        self.guard.hold()  # a second Ctrl-C now lands after the record
        try:
            opt.step()  # the gradient buffer backward (and the Allreduce) filled
        except BaseException as e:
            if opt.step_count == count:
                self.rollback(mark)
            else:
                self.record(stop, n, sums)
            if dist is not None and dist.size > 1 and not isinstance(e, KeyboardInterrupt):
                # after the agreement: the other ranks cannot be told, and would wait for
                # this one in their next collective for ever
                print(f"fastvae: MPI rank {dist.rank} failed in the optimizer update "
                      f"({type(e).__name__}: {e}): aborting every rank", file=sys.stderr,
                      flush=True)
                dist.comm.Abort(1)
            raise
        else:
            self.record(stop, n, sums)
        finally:
            self.guard.release()
        if dist is not None and self.bk.DEVICE and opt.clip_norm is not None:
            _check_norm(opt, st)  # (every rank reads the same reduced gradient's norm)
        if self.acc is not None and st.epoch_steps - self.checked >= DEVICE_CHECK_EVERY:
            self.sync()
            self.checked = st.epoch_steps

    def mark(self):
        """What a step draws or adds before its update: (noise counter, binarization
        generator state); on a GPU the device's loss sums are copied aside too."""
        if self.acc is not None:
            self.acc_mark[...] = self.acc
        bits = (self.st.binarize_rng.bit_generator.state
                if self.settings["binarize"] == "dynamic" else None)
        return self.model.noise.mark(), bits

    def rollback(self, mark):
        """Give back a step that did not happen (see :meth:`mark`)."""
        self.model.noise.give_back(mark[0])
        if mark[1] is not None:
            self.st.binarize_rng.bit_generator.state = mark[1]
        if self.acc is not None:
            self.acc[...] = self.acc_mark

    def record(self, stop, n, sums):
        """The step is done: the position moves on and its loss sums are added."""
        st = self.st
        _advance(st, stop, n)
        if self.acc is None:
            st.sums[0] += sums[0]
            st.sums[1] += sums[1]
            st.sums[2] += sums[2]

    def end_epoch(self):
        """Validation, the record, callbacks and the checkpoint; True to stop."""
        model, st, warm = self.model, self.st, self.warm_steps
        beta = model.beta * (_kl_scale(st.step, warm) if warm > 0 else 1.0)
        rec = _end_epoch(model, st, self.valset, self.settings["val_samples"], beta,
                         self.dist)
        if self.acc is not None:
            self.acc[...] = 0
        st.order_rng = self.order_after
        self.side(self.out.finish, _summary(rec))
        stop, failure = False, None
        try:
            for cb in self.callbacks:
                try:
                    cb(model, rec)
                except StopTraining:
                    stop = True
            if self.checkpoint is not None:
                model.save(self.checkpoint)
        except BaseException as e:  # noqa: BLE001  (on one rank, even sys.exit: tell all)
            if self.dist is None:
                raise
            failure = f"{type(e).__name__}: {e}"
        if self.dist is not None:  # a callback's stop or a Ctrl-C on one rank: on all
            # (the loss sums' slot carries the callbacks' stop here)
            stop = self.agree(failure, (float(stop), 0.0, 0.0, 0))[0] > 0
        return stop


def _local_step(model, batches, lo, hi, start, stop, acc, reduce_kl, st, opt):
    """This process's part of one step: forward and backward on rows [lo, hi) of the global
    batch [start, stop) (all of it without ranks), gradients of the global batch's mean loss
    left in the model's buffer.  Returns the rows' [loss, recon, kl] sums and their count
    (on a GPU the sums stay on the device, in acc: zeros here)."""
    m = hi - lo
    if m == 0:  # more ranks than rows in this batch: take part with a zero gradient
        batches.skip(start, stop)
        model.noise.skip()  # every rank takes one step of noise per step
        if reduce_kl is not None and model.free_bits > 0:
            reduce_kl(stop - start)(model.kernels.xp.zeros(model.latent_dim, dtype=model.dtype), 0)
        model.flat_grads.fill(0)
        return 0.0, 0.0, 0.0, 0
    xb = batches.get(lo, hi, start, stop)
    step = StepContext(acc=acc, weight=m, row0=lo - start, batch=stop - start,
                       reduce_kl=None if reduce_kl is None else reduce_kl(stop - start))
    cache = model.forward(xb, validate=False, step=step)
    sums = (0.0, 0.0, 0.0, m)
    if acc is None:
        loss, recon, kl = cache.values()
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


def _sync_sums(bk, acc, st, opt, since, check=True):
    """One process on a GPU: the state's sums = the device's running sums; raise if they
    stopped being finite (the loss is not read every step there, so say where it
    happened)."""
    vals = [float(v) for v in bk.to_numpy(acc).astype(np.float64)]
    skipped = opt.skipped_updates() if check and opt.clip_norm is not None else 0
    if skipped:
        raise FloatingPointError(
            f"the gradient norm became non-finite at epoch {st.epoch + 1}, in {skipped} of "
            f"steps {since + 1} to {st.epoch_steps}: those steps left the parameters "
            f"unchanged; try a smaller lr (now {opt.lr})")
    if check and not all(math.isfinite(v) for v in vals):
        raise FloatingPointError(
            f"the loss became non-finite at epoch {st.epoch + 1}, between steps {since + 1} "
            f"and {st.epoch_steps}; the model's parameters may no longer be finite: reload the "
            f"last checkpoint and try a smaller lr (now {opt.lr})")
    st.sums[:3] = vals


def _check_norm(opt, st):
    """Raise when the step just taken on the GPU had a non-finite gradient norm (its
    update kernel then changed nothing)."""
    norm = float(opt.last_grad_norm)
    if not math.isfinite(norm):
        raise FloatingPointError(f"gradient norm is {norm} at step {st.step + 1}; "
                                 "parameters left unchanged")


def _checked(ds, model, dist=None):
    """ds, its width and values checked (with ranks: each scans its share of the rows)."""
    if ds.dim != model.input_dim:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.input_dim}")
    return ds.check(model.likelihood, None if dist is None else dist.shard(0, len(ds)))


def _end_epoch(model, st, valset, val_samples, beta, dist=None):
    """Close the epoch: the record of its averages (and validation), position reset.  The
    state changes only once validation is done: if it fails (or is interrupted), the next
    fit closes the same epoch again."""
    loss, recon, kl, n = st.sums
    secs = st.seconds
    rec = {"epoch": st.epoch + 1, "train_loss": loss / n, "train_neg_elbo": (recon + kl) / n,
           "train_recon": recon / n, "train_kl": kl / n, "beta": beta,
           "steps": st.epoch_steps, "train_seconds": secs,
           "samples_per_s": n / secs if secs > 0 else float("nan")}
    t0 = time.perf_counter()
    if valset is not None:
        ev = elbo(model, valset, n_samples=val_samples, validate=False,  # checked by fit
                  _dist=dist)
        rec.update(val_neg_elbo=ev.neg_elbo, val_recon=ev.recon, val_kl=ev.kl)
    rec["seconds"] = secs + time.perf_counter() - t0
    st.epoch += 1
    st.restart_epoch()
    st.history.append(rec)
    return rec


def _summary(rec):
    s = (f"epoch {rec['epoch']:3d}  train -elbo {rec['train_neg_elbo']:8.2f} "
         f"(recon {rec['train_recon']:.2f}, kl {rec['train_kl']:.2f})")
    if "val_neg_elbo" in rec:
        s += f"  val -elbo {rec['val_neg_elbo']:8.2f}"
    return s + f"  {rec['seconds']:.1f}s  {rec['samples_per_s']:,.0f} samples/s"
