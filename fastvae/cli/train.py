"""``fastvae train``: a training run in a directory, started or resumed.

A run directory holds ``model.npz`` (the checkpoint: model and whole training state, written
after every epoch), ``run.json`` (the data and model options and the run's total number of
epochs), ``history.json`` and the pictures.  ``--resume`` continues from the checkpoint with
its saved training settings; a training option given with ``--resume`` that differs from the
saved one is applied and reported; a data or model option cannot change.  A table (--data
a .csv, .tsv, .parquet or .pq file) is trained by :mod:`fastvae.cli.table`.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings

from . import table
from .common import (BACKEND_HELP, BACKENDS, FIT_OPTIONS, MODEL_FILE, RUN_FILE, UsageError,
                     binarized, ints, load_data, make_run_dir, next_run_dir, nonneg, positive,
                     seed, set_threads, write_pictures)

#: the defaults of a new run; on --resume an option not given keeps the run's value
DEFAULTS = {
    # data
    "data": "shapes", "image_size": 28, "n_images": 20000, "val_fraction": 0.1,
    "binarize": "none",
    # model
    "hidden": (400,), "decoder_hidden": None, "latent": 20, "activation": "relu",
    "activation_alpha": None, "likelihood": "bernoulli", "obs_scale": 1.0, "n_samples": 1,
    "beta": 1.0, "free_bits": 0.0, "dtype": "float32", "seed": 0, "objective": "elbo",
    "precision": "full",
    # optimisation (saved in the checkpoint's training state)
    "epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": None,
    "clip_norm": None, "momentum": None, "kl_warmup": 0.0, "val_samples": 1, "shards": 1,
    "average": None,
}
DATA_OPTIONS = ("data", "image_size", "n_images", "val_fraction", "binarize", "seed")
#: command-line option -> VAE constructor argument
MODEL_OPTIONS = {"hidden": "hidden", "decoder_hidden": "decoder_hidden", "latent": "latent_dim",
                 "activation": "activation", "activation_alpha": "activation_alpha",
                 "likelihood": "likelihood", "obs_scale": "obs_scale",
                 "n_samples": "n_samples", "beta": "beta", "free_bits": "free_bits",
                 "dtype": "dtype", "seed": "seed", "objective": "objective",
                 "precision": "precision"}


def _obs_scale(text):
    if text in ("learned", "per_pixel"):
        return text
    return positive(float)(text)


def _flag(dest):
    return "--" + dest.replace("_", "-")


def add_parser(sub):
    """The ``train`` subcommand's parser."""
    from ..backends.codes import ACTIVATIONS

    t = sub.add_parser(
        "train", help="train a VAE and write the model and pictures",
        description="Train a VAE; writes OUT/model.npz (a checkpoint after every epoch, with "
        "the whole training state), OUT/history.json, OUT/run.json and pictures (PNG).  "
        "--resume continues the run in OUT: its saved settings are used; a training option "
        "given with --resume is applied (and reported) if it differs; data and model "
        "options cannot change.  Launched as 'mpiexec -n N fastvae train ...' (pip install "
        "'fastvae[mpi]') it trains data parallel: each of the N processes computes its share "
        "of every batch, and rank 0 prints and writes the run; a run resumes on any number "
        "of processes.")

    def add(group, dest, help, **kw):
        default = DEFAULTS[dest]
        shown = kw.pop("shown", default)
        group.add_argument(_flag(dest), dest=dest, default=None,
                           help=f"{help} (default: {shown})", **kw)

    d = t.add_argument_group("data")
    add(d, "data", "'shapes' (built-in, no download), 'fashion-mnist' (Debian's "
        "dataset-fashion-mnist package), a directory of MNIST-style IDX files, an IDX file, a "
        ".npy file (memory-mapped), a .npz file, or a table (.csv, .tsv, .parquet, .pq: "
        "see 'tables' below)")
    add(d, "image_size", "side of the built-in shapes images (28 or 64, ...)", type=positive(int))
    add(d, "n_images", "number of built-in shapes images (10%% are held out as test)",
        type=positive(int))
    add(d, "val_fraction", "share of the training data held out for validation when the data "
        "has no test split (a table's test split)", type=float)
    add(d, "binarize", "Bernoulli draws of the pixels: once (static) or every batch (dynamic)",
        choices=("none", "static", "dynamic"))
    m = t.add_argument_group("model")
    add(m, "hidden", "encoder hidden widths, comma-separated", type=ints,
        shown="400; for a table 64,64 below 10,000 rows, else 128,128")
    add(m, "decoder_hidden", "decoder hidden widths, comma-separated", type=ints,
        shown="the encoder's, mirrored")
    add(m, "latent", "latent dimensions", type=positive(int),
        shown="20; for a table 16 below 10,000 rows, else 32")
    add(m, "activation", "activation of every hidden layer", choices=tuple(ACTIVATIONS))
    add(m, "activation_alpha", "slope of leaky_relu or scale of elu, > 0", type=positive(float),
        shown="0.01 for leaky_relu, 1.0 for elu")
    add(m, "likelihood", "p(x|z): bernoulli for pixels in [0, 1], gaussian for real values",
        choices=("bernoulli", "gaussian"))
    add(m, "obs_scale", "gaussian only: the observation standard deviation, 'learned' (one "
        "learned scale, the sigma-VAE) or 'per_pixel' (one per pixel)", type=_obs_scale)
    add(m, "objective", "the training objective: the ELBO, the importance-weighted bound "
        "(iwae, with --n-samples importance samples) or iwae with the doubly reparameterised "
        "encoder gradient (iwae-dreg)", choices=("elbo", "iwae", "iwae-dreg"))
    add(m, "n_samples", "latent samples per datapoint in each step (the K of iwae)",
        type=positive(int))
    add(m, "beta", "weight of the KL term", type=nonneg)
    add(m, "free_bits", "per-dimension KL floor in nats", type=nonneg)
    add(m, "dtype", "floating-point precision of parameters and activations",
        choices=("float32", "float64"))
    add(m, "precision", "the matrix products: full (in --dtype) or bf16 (mixed precision: "
        "bfloat16 operands, float32 sums; needs a GPU of compute capability 8.0+ or a CPU "
        "with AVX512_BF16/AMX and pip install 'fastvae[bf16]')", choices=("full", "bf16"))
    o = t.add_argument_group("optimisation (saved in the checkpoint; --resume keeps them)")
    add(o, "epochs", "the run's total number of epochs: a new run trains this many; --resume "
        "trains until the run has this many (so --resume finishes an interrupted run)",
        type=int, shown="10; a table trains until its own held-out share of the training "
        "rows stops improving; with --resume the run's total")
    add(o, "batch_size", "rows per step", type=positive(int),
        shown="128; for a table about rows/10, a power of two from 32 to 256")
    add(o, "optimizer", "adam (as torch.optim.Adam), adamw (decoupled weight decay) or sgd",
        choices=("adam", "adamw", "sgd"))
    add(o, "lr", "learning rate", type=positive(float))
    add(o, "weight_decay", "weight decay", type=nonneg, shown="0; 0.01 for adamw")
    add(o, "clip_norm", "clip the gradient to this global norm", type=positive(float),
        shown="no clipping")
    add(o, "momentum", "sgd momentum, in [0, 1)", type=nonneg, shown="0")
    add(o, "kl_warmup", "epochs over which beta ramps up from 0", type=nonneg)
    add(o, "val_samples", "draws of z per row for the validation ELBO", type=positive(int))
    add(o, "shards", "cut each batch into this many data-parallel shards, one per cpu "
        "thread (with --threads N): faster at small batches; the results depend on the "
        "shard count, not on the threads (cpu backend, no --free-bits)", type=positive(int))
    add(o, "average", "keep a moving average of the weights with this decay, in [0, 1) "
        "(0.999: about the last 1,000 steps, once warmed up): validation, the checkpoint and the model "
        "are the average's, the steps go on from the raw weights", type=nonneg,
        shown="0, none; 0.999 for a table of 10,000 rows or more")
    r = t.add_argument_group("run")
    r.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    add(r, "seed", "seeds the data, the initial weights and the noise: same seed, same run",
        type=seed)
    r.add_argument("--out", default=None,
                   help="output directory (default: runs/<data>-<n>, the next free n; "
                   "runs/<file stem>-<n> for a table)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint, with its saved "
                   "settings, until it has --epochs epochs in all")
    r.add_argument("--threads", type=positive(int), default=None,
                   help="the cpu backend's threads (not saved: the results do not depend on "
                   "them; default: $FASTVAE_NUM_THREADS, else the run's --shards, else 1 "
                   "per MPI rank, else 1, or every core (at most 8) for a bf16 model, whose "
                   "oneDNN threads sleep between products)")
    r.add_argument("--no-pictures", action="store_true", help="do not write PNG pictures")
    r.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    r.add_argument("--no-distributed", action="store_true",
                   help="under mpiexec with more than one process (seen from the launcher's "
                   "variables, PMI_SIZE or OMPI_COMM_WORLD_SIZE), do not train data parallel: "
                   "every process trains alone (give each its own --out); tables always "
                   "need it under mpiexec")
    table.add_arguments(t)
    t.set_defaults(func=cmd_train)
    return t


def _given(args):
    """The options given on the command line (argparse defaults are None for all of them)."""
    return {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _resume(args, given, lead=True):
    """(opts, model, checkpoint) of the run in --out, with the options given checked."""
    from .. import load

    if args.out is None:
        raise UsageError("--resume needs --out, the directory of the run to continue")
    ckpt = os.path.join(args.out, MODEL_FILE)
    if not os.path.isfile(ckpt):
        raise UsageError(f"--resume: no checkpoint {ckpt} to continue")
    try:
        with open(os.path.join(args.out, RUN_FILE)) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--resume: cannot read {os.path.join(args.out, RUN_FILE)} ({e})") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(ckpt, backend=args.backend)
    st = model.train_state
    if st is not None and not st.settings_saved:
        # a version 1 checkpoint: its run.json kept the fit settings the checkpoint did not
        st.settings.update({k: saved[k] for k in ("batch_size", "kl_warmup", "val_samples")
                            if saved.get(k) is not None})
        st.settings["binarize"] = "dynamic" if saved.get("binarize") == "dynamic" else "none"
        st.settings_saved = True
        caught = [w for w in caught if "did not record fit's settings" not in str(w.message)]
    for w in caught if lead else ():
        print(f"warning: {w.message}", file=sys.stderr)
    config = model.config()
    fixed = []
    for k in DATA_OPTIONS:
        if k in given and _norm(given[k]) != _norm(saved.get(k, DEFAULTS[k])):
            fixed.append(f"{_flag(k)} {given[k]!r} (the run has {saved.get(k, DEFAULTS[k])!r})")
    for k, ck in MODEL_OPTIONS.items():
        if k in given and k not in DATA_OPTIONS and _norm(given[k]) != _norm(config[ck]):
            fixed.append(f"{_flag(k)} {given[k]!r} (the model has {config[ck]!r})")
    if fixed:
        raise UsageError("a run's data and model cannot change on --resume: "
                         + "; ".join(fixed) + "; start a new run with another --out")
    opts = {**DEFAULTS, **saved}
    opts["epochs"] = given.get("epochs", saved.get("epochs", DEFAULTS["epochs"]))
    return opts, model, ckpt


def cmd_train(args):
    """Train (``args`` from :func:`add_parser`).  Launched by mpiexec with more than one rank
    (and no --no-distributed), every rank runs this and trains its share of each batch;
    rank 0 alone prints and writes the run directory."""
    from ..training.distributed import detected_size, world

    if table.wanted(args):  # a .csv, .tsv or .parquet file: a TabularVAE (cli/table.py)
        return table.cmd_train(args, _given(args))
    comm = None
    if detected_size() > 1 and not args.no_distributed:
        comm = world()
        if comm.Get_size() == 1:  # a launcher's variables, but MPI saw one process
            comm = None
    if comm is None:
        prepared = _prepare(args, None)
        _start_run(args, prepared)
        return _run(args, *prepared)
    return _run_distributed(args, comm)


def _run_distributed(args, comm):
    """cmd_train on every rank of ``comm``: an error anywhere reaches every rank (rank 0
    prints it) and no rank is left waiting in a collective; a Ctrl-C before training stops
    every rank with nothing written; an unexpected error (or a second Ctrl-C during
    training) aborts the whole job."""
    from ..io.dataset import DataError
    from ..training.distributed import DistributedError, local_rank, rank_backend
    from ..io.checkpoint import CheckpointError
    from ..training.interrupt import SigintGuard

    rank = comm.Get_rank()
    with SigintGuard() as guard:  # a Ctrl-C now only sets a flag, told to every rank
        local = local_rank(comm)
        if args.out is None and not args.resume:  # rank 0 picks the run directory for all
            args.out = comm.bcast(next_run_dir(_run_name(_given(args))) if rank == 0
                                  else None)
        failure, prepared = None, None
        try:
            # the ranks of a machine take its GPUs in turn
            args.backend = rank_backend(args.backend, local)
            prepared = _prepare(args, comm)
        except Exception as e:  # noqa: BLE001  (every rank must learn of it: no rank waits)
            failure = e
        reports = comm.allgather((None if failure is None else str(failure), guard.hit))
    failed = [(r, m) for r, (m, _) in enumerate(reports) if m is not None]
    if failed:
        if rank != 0:
            return 2  # rank 0 says why
        if failure is not None:
            raise failure
        r, m = failed[0]
        raise UsageError(f"rank {r} of {comm.Get_size()}: {m}")
    if any(hit for _, hit in reports):
        if rank == 0:
            print("interrupted before training started; nothing was written",
                  file=sys.stderr)
        return 130
    try:
        if rank == 0:
            _start_run(args, prepared)
        return _run(args, *prepared)
    except DistributedError as e:  # raised on every rank
        if rank == 0:
            print(f"fastvae train: error: {e}", file=sys.stderr)
        return 1
    except (UsageError, DataError, CheckpointError, FloatingPointError, ValueError):
        if rank == 0:  # fit's own errors reach every rank (the others: DistributedError)
            raise
        return 2
    except BaseException:  # noqa: BLE001  (a bug, or Ctrl-C twice: stop every rank now)
        traceback.print_exc()
        comm.Abort(1)


def _run_name(opts):
    opts = {**DEFAULTS, **opts}
    return ("shapes%d" % opts["image_size"] if opts["data"] == "shapes" else
            os.path.basename(os.path.normpath(opts["data"])) or "data")


def _prepare(args, comm):
    """Everything before training, checked before anything is written: (model, opts,
    out, ckpt, fit_kw, train, test, comm, seconds spent loading the data)."""
    from .. import VAE
    from ..io.dataset import DataError
    from ..training.distributed import shard
    from ..training.state import resolve

    lead = comm is None or comm.Get_rank() == 0
    given = _given(args)
    if given.get("epochs", 0) < 0:
        raise UsageError(f"--epochs must be >= 0, got {given['epochs']}")
    if args.resume:
        opts, model, ckpt = _resume(args, given, lead)
        out = args.out
        done = model.train_state.epoch if model.train_state else 0
        if not args.quiet and lead:
            print(f"resuming {ckpt}: {done} epoch(s) done, training to {opts['epochs']}",
                  file=sys.stderr)
        fit_kw = {k: given[k] for k in FIT_OPTIONS if k in given}
    else:
        opts = {**DEFAULTS, **given}
        out = args.out if args.out is not None else next_run_dir(_run_name(opts))
        ckpt = os.path.join(out, MODEL_FILE)
        if os.path.exists(ckpt):
            raise UsageError(f"{ckpt} already exists; continue it with --resume or choose "
                             "another --out (nothing was overwritten)")
        fit_kw = {k: opts[k] for k in FIT_OPTIONS if opts[k] is not None}
        fit_kw["binarize"] = "dynamic" if opts["binarize"] == "dynamic" else "none"

    t0 = time.perf_counter()
    train, test = load_data(opts["data"], opts, opts["seed"])
    for ds in (train, test):  # as given, before any binarization hides a NaN or a 3.0
        try:  # (with ranks: each scans its share of the rows)
            ds.check(opts["likelihood"], None if comm is None else
                     shard(0, len(ds), comm.Get_rank(), comm.Get_size()))
        except DataError as e:
            if getattr(e, "out_of_range", False):
                raise DataError(f"{e} (pass --likelihood gaussian for real-valued data)") \
                    from None
            raise
    if opts["binarize"] == "static":
        train = binarized(train, "static", opts["seed"])
    test = binarized(test, opts["binarize"], opts["seed"] + 1)
    t_data = time.perf_counter() - t0
    batch = fit_kw.get("batch_size") or (model.train_state.settings["batch_size"]
                                         if args.resume and model.train_state else 128)
    if len(train) < batch:  # before anything is written to the output directory
        raise UsageError(f"{train.name}: {len(train)} training rows is fewer than one batch; "
                         f"use a --batch-size of at most {len(train)}")
    if not args.resume:
        try:
            model = VAE(train.dim, backend=args.backend,
                        **{ck: opts[k] for k, ck in MODEL_OPTIONS.items()})
        except (ValueError, RuntimeError) as e:  # RuntimeError: bf16 cannot run here
            raise UsageError(str(e)) from None
        model.metadata = {"data": opts["data"], "image_shape": train.image_shape,
                          "binarize": opts["binarize"], "label_names": train.label_names}
    try:  # the settings are checked before anything is written
        resolve(model.train_state, model, dict(fit_kw))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return model, opts, out, ckpt, fit_kw, train, test, comm, t_data


def _start_run(args, prepared):
    """The run directory and its run.json, and the run's first lines (rank 0 only)."""
    model, opts, out, _, _, train, test, comm, t_data = prepared
    make_run_dir(out)
    # run.json: what the checkpoint does not hold (the data to load again, the run's
    # total); the training settings live in the checkpoint's training state only, so
    # that the two can never disagree
    keep = (*DATA_OPTIONS, *MODEL_OPTIONS, "epochs")
    with open(os.path.join(out, RUN_FILE), "w") as f:
        json.dump({k: _norm(opts[k]) for k in dict.fromkeys(keep)}, f, indent=1)
    if not args.quiet:
        ranks = "" if comm is None else f"; data parallel on {comm.Get_size()} MPI ranks"
        print(f"data: {train!r} ({t_data:.2f} s), test {len(test)} rows\n"
              f"model: {model!r}{ranks}\noutput: {out}", file=sys.stderr)


def _run(args, model, opts, out, ckpt, fit_kw, train, test, comm, t_data):
    """Train, then (rank 0 only) write the history and pictures and print the test ELBO."""
    from ..training.fit import SettingChangedWarning

    lead = comm is None or comm.Get_rank() == 0
    quiet = args.quiet or not lead
    done = model.train_state.epoch if model.train_state else 0
    set_threads(args, model, fit_kw, 1 if comm is None else comm.Get_size())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SettingChangedWarning)
        history = model.fit(train, epochs=max(0, opts["epochs"] - done), val=test,
                            progress=not quiet, checkpoint=ckpt, comm=comm, **fit_kw)
    if not lead:
        return 130 if history.interrupted else 0
    for w in caught:  # --quiet: the one line fit would have printed
        if issubclass(w.category, SettingChangedWarning):
            print(str(w.message), file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if not os.path.exists(ckpt):  # zero epochs asked: still leave a model behind
        model.save(ckpt)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(list(model.history), f, indent=1)
    if history.interrupted:
        print(f"stopped; continue with: fastvae train --out {out} --resume", file=sys.stderr)
        return 130
    written = []
    if not args.no_pictures:
        written = _pictures(model, test, out, args.quiet)
    ev = model.elbo(test)
    print(f"test negative ELBO {ev.neg_elbo:.2f} nats (recon {ev.recon:.2f}, kl {ev.kl:.2f}) "
          f"on {ev.n} rows; model: {ckpt}" + (f"; {len(written)} pictures in {out}"
                                               if written else ""))
    return 0


def _pictures(model, ds, out, quiet):
    def write():
        from .. import viz
        return viz.write_all(model, ds, out, model.history)
    return write_pictures(write, out, quiet)
