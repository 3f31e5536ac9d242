"""What the ``fastvae`` commands share: argument types, the error that means bad input, the
files of a run, and the data of a run loaded back from its options."""
from __future__ import annotations

import argparse
import os

RUN_FILE = "run.json"     # the data and model options of a run, read back by --resume
MODEL_FILE = "model.npz"
#: the training options that go to fit by name, for image and table runs alike
FIT_OPTIONS = ("batch_size", "optimizer", "lr", "weight_decay", "clip_norm", "momentum",
               "kl_warmup", "val_samples", "shards", "average")

BACKENDS = ("auto", "cpu", "numpy", "cuda")
BACKEND_HELP = ("cpu (Numba), numpy (the reference), cuda (CuPy, NVIDIA GPU) or auto "
                "(cuda when available, else cpu)")


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def ints(text):
    """'400,200' -> (400, 200); positive integers."""
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def positive(kind):
    """An argument type: ``kind`` (int or float) > 0, finite."""
    what = "an integer" if kind is int else "a finite number"

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not 0 < v < float("inf"):
            raise argparse.ArgumentTypeError(f"must be {what} > 0, got {text}")
        return v
    return parse


def seed(text):
    """An argument type: a seed, an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return v


def nonneg(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def checkpoint_args(p):
    """The arguments every command that reads a trained model shares."""
    p.add_argument("model", help="a checkpoint written by 'fastvae train' (model.npz)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)


def make_run_dir(out):
    """Create the run directory ``out`` (and its parents), or a UsageError naming it."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        why = "a file of that name exists" if os.path.exists(out) and not os.path.isdir(out) \
            else (e.strerror or str(e)).lower()
        raise UsageError(f"--out {out}: cannot make the run directory ({why})") from None


def next_run_dir(name):
    """runs/<name>-<n> for the first n that does not exist yet."""
    base = os.path.join("runs", name)
    n = 1
    while os.path.exists(f"{base}-{n}"):
        n += 1
    return f"{base}-{n}"


def load_data(source, opts, seed):
    """(train, test) for a run's data options; test is held out when the data has none."""
    import numpy as np

    from ..io import data

    train, test = data.load(source, shapes_n=opts.get("n_images", 20000),
                            shapes_size=opts.get("image_size", 28), seed=seed)
    if test is None:
        frac = opts.get("val_fraction", 0.1)
        if not 0 < frac < 1:
            raise UsageError(f"--val-fraction must lie in (0, 1), got {frac}")
        perm = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, int(round(frac * len(train))))
        test = train.subset(np.sort(perm[:n_val]), f"{train.name}-val")
        train = train.subset(np.sort(perm[n_val:]), f"{train.name}-train")
    return train, test


def binarized(ds, mode, seed):
    """Static binarization (one seeded Bernoulli draw, kept) of a Dataset; the evaluation
    data of a dynamically binarized run is binarized statically too."""
    import numpy as np

    from ..io.dataset import Dataset, binarize
    if mode == "none":
        return ds
    x = binarize(ds.to_array(), np.random.default_rng(seed)).astype(np.uint8)
    return Dataset(x, ds.image_shape, ds.labels, ds.label_names, ds.factors, ds.name, 1.0)


def write_pictures(write, out, quiet):
    """Run ``write()`` (which imports matplotlib and returns the paths it wrote) and say
    what it wrote; without matplotlib, say why there are no pictures.  Returns the paths."""
    import sys
    try:
        paths = write()
    except ImportError as e:
        print(f"pictures skipped: {e}", file=sys.stderr)
        return []
    if not quiet:
        print("pictures: " + ", ".join(os.path.basename(p) for p in paths), file=sys.stderr)
    return paths


def set_threads(args, model, fit_kw, ranks=1):
    """The cpu backend's threads for this run: --threads, else $FASTVAE_NUM_THREADS, else
    (one process alone: MPI ranks share the machine's cores) the run's shard count
    (--shards, or the resumed run's), since shards on one thread run one after another;
    MPI ranks take one each (they share the machine's cores; a bf16 model would otherwise
    take every core in every rank).  No bit depends on the count."""
    from ..backends.cpu import pool
    if args.threads is not None:
        pool.set_num_threads(args.threads)
        return
    if os.environ.get(pool.ENV_VAR):  # (empty: unset, as the pool reads it)
        return
    st = model.train_state
    shards = fit_kw.get("shards") or (st.settings["shards"] if st is not None else 1)
    if ranks > 1:
        pool.set_num_threads(1)
    elif shards > 1:
        pool.set_num_threads(shards)
