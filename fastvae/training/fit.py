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

import os
import sys
import warnings

from .evaluate import as_dataset
from ..core.validate import boolean, nonneg_int
from ..io.dataset import DataError
from .agreement import agreement
from .average import AVERAGE, WeightAverage
from .interrupt import SigintGuard
from .loop import Loop, StopTraining  # noqa: F401  (StopTraining: fastvae.StopTraining)
from .progress import Progress
from .shards import Shards
from .state import TrainState, resolve


class SettingChangedWarning(UserWarning):
    """A fit setting given explicitly differs from the saved run's; it was applied."""


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
        drop_last=None, shards=None, average=None, early_stopping=None, stream=None,
        comm=None):
    """Train ``model`` on X for ``epochs`` more epochs, from wherever its training state
    stands (an epoch in progress counts as the first of them); returns the :class:`History`
    of every epoch so far (``model.history``).

    X, val : (N, D) arrays or :class:`~fastvae.io.dataset.Dataset` (uint8 and memory-mapped data
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
    drop_last [False]; shards [1]: cut each batch into this many data-parallel shards, each
    a whole forward and backward on one of the cpu backend's threads with its products on
    one BLAS thread, the gradients added in memory (:mod:`fastvae.training.shards`).  Give
    the backend a thread per shard (``fastvae.backends.cpu.set_num_threads(n)`` or
    ``FASTVAE_NUM_THREADS``; with fewer, the shards run one after another, slower than
    one pass, and fit says so in a ``fastvae.ShardThreadsWarning``): on the 2-core
    machine the scVI-sized step at batch 128 ran 1.15-1.3x faster with 2 shards on 2
    threads.  The results depend on the shard count (like a change of MPI ranks: to the
    rounding of the gradient sums), never on the thread count; cpu backend, free_bits=0.
    average [0: none]: keep a moving average of the weights with this decay (0.999: the
    last 1,000 steps or so once warmed up, the last t/9 before step 9,000;
    :mod:`fastvae.training.average`).  The steps go on from the raw weights; validation,
    early stopping's best weights, callbacks, checkpoints and the weights fit leaves are
    the average's.  A run saves both, and resumes both to the bit.  When early stopping
    puts the best average back (a stop, or a plateau's decay), the raw weights restart
    from it too; a later fit with average=0 goes on from the average and drops the raw
    weights.

    early_stopping : an :class:`~fastvae.training.stopping.EarlyStopping` (needs ``val``):
        stop when the validation loss stops improving, within ``epochs``, and keep the best
        weights; its state is saved with the run, so ``fit`` with early_stopping=None (the
        default) continues a rule in progress; False drops it.  A rule that has stopped
        the run stays in the training state (``model.train_state.stopper``) but does not
        act again.
    callbacks : callables ``cb(model, record)`` run after each epoch; raise
        :class:`~fastvae.training.loop.StopTraining` to stop.
    progress : True (a bar on a terminal and a line per epoch, at most one a second:
        loop.LINE_EVERY_S), False (silent).
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
    ag = agreement(comm, model)
    # A Ctrl-C from here on only sets guard.hit (see SigintGuard); with ranks a rank's own
    # flag is never obeyed alone: the stop is agreed (see agreement.Solo.stopping)
    with SigintGuard() as guard:
        try:
            return _fit(model, X, epochs, val, callbacks, progress, checkpoint, stream, ag,
                        guard, early_stopping, dict(batch_size=batch_size, optimizer=optimizer, lr=lr,
                                    weight_decay=weight_decay, clip_norm=clip_norm,
                                    momentum=momentum, kl_warmup=kl_warmup, binarize=binarize,
                                    val_samples=val_samples, shuffle=shuffle,
                                    drop_last=drop_last, shards=shards, average=average))
        except KeyboardInterrupt:
            # a second Ctrl-C means "abort now": on every rank, or the others would wait
            # for this one in their next collective for ever
            ag.abort(130, f"Ctrl-C twice on MPI rank {ag.rank}")
            raise


def _fit(model, X, epochs, val, callbacks, progress, checkpoint, stream, ag, guard, stopping,
         given):
    # everything is checked before anything changes: a bad argument or bad data leaves the
    # model and its training state as they were (with ranks: on every rank, each told why)
    failure = train_fp = val_fp = None
    try:
        epochs = nonneg_int(epochs, "epochs")
        given = {k: v for k, v in given.items() if v is not None}
        settings, make_optimizer, changes = resolve(model.train_state, model, dict(given))
        callbacks = _check_callbacks(callbacks)
        progress = boolean(progress, "progress") and ag.lead  # the lead speaks and writes
        if not ag.lead:
            checkpoint = None
        if checkpoint is not None:
            _check_checkpoint_path(checkpoint)
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ValueError(f"stream must be a writable text stream (with .write), got "
                             f"{stream!r}")
        train, train_fp = _checked(as_dataset(X, "training data"), model, ag)
        valset = None
        if val is not None:
            valset, val_fp = _checked(as_dataset(val, "validation data"), model, ag)
        stopper = _stopper(model.train_state, stopping, valset)
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
        # (the replicas' buffers are allocated here, before anything changes)
        shards = (Shards(model, settings["shards"]) if settings["shards"] > 1 and epochs
                  else None)
        # (a new weight average's buffers too; both start as the weights the model holds)
        saved = model.train_state
        average = (WeightAverage(model, holds=AVERAGE) if settings["average"] > 0 and (
            saved is None or saved.average is None) else None)
        out = Progress(stream or sys.stderr, enabled=progress)
        guard.out = out
        if changes and ag.lead:  # (a warning that is an error stops every rank, here)
            _report(out, "fit: settings changed from the saved run (applied): "
                    + "; ".join(changes))
    except Exception as e:  # noqa: BLE001
        failure = ag.fail(e)
    ag.check_same_start(failure, lambda: (model, settings, given, epochs, train_fp, val_fp))
    ag.agree(None, guard.hit)  # a Ctrl-C during the checks, anywhere

    st = model.train_state
    if st is None:
        st = model.train_state = TrainState(model)
    st.settings, st.settings_saved = settings, True
    st.optimizer = make_optimizer()
    if average is not None:
        st.average = average
    elif settings["average"] == 0:
        st.average = None  # (the model keeps the weights it holds: the average, if any)
    if stopper is not False:
        st.stopper = stopper
    if restart:
        st.restart_epoch()
    if epochs == 0:
        return History(st.history)
    st.n_rows = N
    loop = Loop(model, st, train, valset, settings, callbacks, checkpoint, out, ag, guard,
                shards)
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


def _stopper(st, given, valset):
    """The EarlyStopping this fit runs under (None: none), or False to leave the saved
    one (stopped) as it is; raises when the rule has no validation data."""
    from .stopping import EarlyStopping
    if given is False:
        return None
    if given is None:
        saved = None if st is None else st.stopper
        if saved is None or saved.stopped:
            return False
        given = saved
    elif not isinstance(given, EarlyStopping):
        raise ValueError(f"early_stopping must be an EarlyStopping, False or None, got "
                         f"{given!r}")
    if valset is None:
        raise ValueError("early stopping watches the validation loss: pass val= (rows held "
                         "out of the training data)")
    return given


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



def _checked(ds, model, ag):
    """(ds, what MPI ranks compare of it): its width checked, its values scanned."""
    if ds.dim != model.row_width:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.row_width}")
    return ds, ag.check_data(ds, model.data_rule)
