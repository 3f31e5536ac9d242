"""The ``fastvae`` command: train, sample, reconstruct, eval, info.

    fastvae train                         # built-in shapes, writes runs/shapes28-1/
    fastvae train --data /usr/share/datasets/fashion-mnist --epochs 10
    fastvae sample runs/shapes28-1/model.npz -n 64
    fastvae eval runs/shapes28-1/model.npz

Errors in the user's input (paths, data, options) print one line naming the problem and
exit with status 2; Ctrl-C during training saves a checkpoint and exits with status 130.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

RUN_FILE = "run.json"     # the training options of a run, read back by --resume
MODEL_FILE = "model.npz"


BACKENDS = ("auto", "cpu", "numpy", "cuda")
BACKEND_HELP = ("cpu (Numba), numpy (the reference), cuda (CuPy, NVIDIA GPU) or auto "
                "(cuda when available, else cpu)")


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


# ------------------------------------------------------------------------- parsing
def _ints(text):
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _pos(kind):
    def parse(text):
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v
    return parse


def _nonneg(text):
    v = float(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def _checkpoint_args(p):
    """The arguments every command that reads a trained model shares."""
    p.add_argument("model", help="a checkpoint written by 'fastvae train' (model.npz)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)


def build_parser():
    from . import __version__
    from .codes import ACTIVATIONS

    p = argparse.ArgumentParser(
        prog="fastvae", description="Variational autoencoders with hand-written, fused "
        "forward and backward passes (NumPy reference, Numba CPU, CUDA).",
        epilog="Run 'fastvae <command> --help' for the options of each command.")
    p.add_argument("--version", action="version", version=f"fastvae {__version__}")
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.required = True

    t = sub.add_parser("train", help="train a VAE and write the model and pictures",
                       description="Train a VAE; writes OUT/model.npz (a checkpoint after "
                       "every epoch), OUT/history.json, OUT/run.json and pictures (PNG).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = t.add_argument_group("data")
    d.add_argument("--data", default="shapes",
                   help="'shapes' (built-in, no download), 'fashion-mnist' (Debian's "
                   "dataset-fashion-mnist package), a directory of MNIST-style IDX files, "
                   "an IDX file, a .npy file (memory-mapped) or a .npz file")
    d.add_argument("--image-size", type=int, default=28,
                   help="side of the built-in shapes images (28 or 64, ...)")
    d.add_argument("--n-images", type=_pos(int), default=20000,
                   help="number of built-in shapes images (10%% are held out as test)")
    d.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training data held out for validation when the data "
                   "has no test split")
    d.add_argument("--binarize", choices=("none", "static", "dynamic"), default="none",
                   help="Bernoulli draws of the pixels: once (static) or every batch (dynamic)")
    m = t.add_argument_group("model")
    m.add_argument("--hidden", type=_ints, default=(400,),
                   help="encoder hidden widths, comma-separated (the decoder mirrors them)")
    m.add_argument("--latent", type=_pos(int), default=20, help="latent dimensions")
    m.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu",
                   help="activation of every hidden layer")
    m.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli",
                   help="p(x|z): bernoulli for pixels in [0, 1], gaussian (unit variance) "
                   "for real values")
    m.add_argument("--n-samples", type=_pos(int), default=1,
                   help="latent samples per datapoint in each step")
    m.add_argument("--beta", type=_nonneg, default=1.0, help="weight of the KL term")
    m.add_argument("--free-bits", type=_nonneg, default=0.0,
                   help="per-dimension KL floor in nats")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point precision of parameters and activations")
    o = t.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=10,
                   help="epochs in all (with --resume: the total to reach)")
    o.add_argument("--batch-size", type=_pos(int), default=128, help="rows per step")
    o.add_argument("--lr", type=_pos(float), default=1e-3, help="learning rate")
    o.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                   help="adam (as torch.optim.Adam), adamw (decoupled weight decay 0.01) "
                   "or sgd")
    o.add_argument("--kl-warmup", type=_nonneg, default=0.0,
                   help="epochs over which beta ramps up from 0")
    r = t.add_argument_group("run")
    r.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    r.add_argument("--seed", type=int, default=0,
                   help="seeds the data, the initial weights and the noise: same seed, "
                   "same run")
    r.add_argument("--out", default=None,
                   help="output directory (default: runs/<data>-<n>, the next free n)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (its saved options "
                   "are used; --epochs sets the total to reach)")
    r.add_argument("--no-pictures", action="store_true", help="do not write PNG pictures")
    r.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="draw images from a trained model's prior",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoint_args(s)
    s.add_argument("-n", type=_pos(int), default=64, help="number of samples")
    s.add_argument("--out", default="samples.png", help="PNG file to write")
    s.add_argument("--npy", default=None, help="also save the (n, D) pixel array here")
    s.add_argument("--seed", type=int, default=0, help="seed of the latent draws")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("reconstruct", help="inputs beside their reconstructions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoint_args(c)
    c.add_argument("--data", default=None,
                   help="data to reconstruct (default: the data the model was trained on; "
                   "its test split when it has one)")
    c.add_argument("-n", type=_pos(int), default=16, help="number of inputs")
    c.add_argument("--out", default="reconstructions.png", help="PNG file to write")
    c.set_defaults(func=cmd_reconstruct)

    e = sub.add_parser("eval", help="negative ELBO of a dataset under a trained model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoint_args(e)
    e.add_argument("--data", default=None,
                   help="data to evaluate (default: the data the model was trained on)")
    e.add_argument("--split", choices=("test", "train"), default="test",
                   help="which part of the data (the held-out part is 'test')")
    e.add_argument("--n-samples", type=_pos(int), default=1,
                   help="draws of z per datapoint (the estimate averages them)")
    e.add_argument("--batch-size", type=_pos(int), default=1000,
                   help="rows per pass (bounds the memory used)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="benchmark against PyTorch and write a report",
                       description="Run the benchmark suite (training step, inference, "
                       "latency, epoch, cold start, memory) for fastvae and PyTorch side by "
                       "side; print a markdown table and write JSON, markdown and a PNG plot.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--quick", action="store_true",
                   help="a short run (under two minutes on two cores)")
    b.add_argument("--impl", action="append", default=None,
                   help="an implementation to include (repeatable): fastvae-numpy, "
                   "fastvae-cpu, fastvae-cuda, torch-eager, torch-compile; default: all "
                   "that can run here")
    b.add_argument("--threads", type=_pos(int), default=os.cpu_count(),
                   help="threads for BLAS and PyTorch alike (the Numba kernels are serial)")
    b.add_argument("--out", default="fastvae-bench", help="directory for the report files")
    b.add_argument("--name", default=None,
                   help="file stem of the report (default: bench-quick or bench-full)")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="versions, backends, threads and GPU")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "bench":  # before NumPy loads BLAS, which reads these once
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    from .backend import BackendUnavailable
    from .data import DataError
    from .io import CheckpointError
    try:
        return args.func(args) or 0
    except (UsageError, DataError, CheckpointError, FileNotFoundError, BackendUnavailable,
            MemoryError) as e:
        print(f"fastvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"fastvae {args.command}: error: {e}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------- commands
def _load_data(source, opts, seed):
    """(train, test) for a run's data options; test is held out when the data has none."""
    import numpy as np

    from . import data

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


def _binarized(ds, mode, seed):
    """Static binarization (one seeded Bernoulli draw, kept) of a Dataset; the evaluation
    data of a dynamically binarized run is binarized statically too."""
    import numpy as np

    from .data import Dataset, binarize
    if mode == "none":
        return ds
    x = binarize(ds.to_array(), np.random.default_rng(seed)).astype(np.uint8)
    return Dataset(x, ds.image_shape, ds.labels, ds.label_names, ds.factors, ds.name, 1.0)


def _next_run_dir(name):
    base = os.path.join("runs", name)
    n = 1
    while os.path.exists(f"{base}-{n}"):
        n += 1
    return f"{base}-{n}"


def cmd_train(args):
    from . import VAE, load
    from .data import DataError

    if args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {args.epochs}")
    opts = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out, the directory of the run to continue")
        ckpt = os.path.join(args.out, MODEL_FILE)
        if not os.path.isfile(ckpt):
            raise UsageError(f"--resume: no checkpoint {ckpt} to continue")
        with open(os.path.join(args.out, RUN_FILE)) as f:
            saved = json.load(f)
        for k in ("epochs", "backend", "quiet", "no_pictures"):
            saved[k] = opts[k]
        opts = saved
        model = load(ckpt, backend=args.backend)
        done = model.train_state.epoch if model.train_state else 0
        say = not args.quiet
        if say:
            print(f"resuming {ckpt}: {done} epoch(s) done, training to {args.epochs}",
                  file=sys.stderr)
    out = args.out
    if out is None:
        name = "shapes%d" % args.image_size if args.data == "shapes" else \
            os.path.basename(os.path.normpath(args.data)) or "data"
        out = _next_run_dir(name)
    ckpt = os.path.join(out, MODEL_FILE)
    if not args.resume and os.path.exists(ckpt):
        raise UsageError(f"{ckpt} already exists; continue it with --resume or choose "
                         "another --out (nothing was overwritten)")

    t0 = time.perf_counter()
    train, test = _load_data(opts["data"], opts, opts["seed"])
    if opts["binarize"] == "static":
        train = _binarized(train, "static", opts["seed"])
    test = _binarized(test, opts["binarize"], opts["seed"] + 1)
    if opts["likelihood"] == "bernoulli":
        try:
            train.check("bernoulli")
        except DataError as e:
            raise DataError(f"{e} (pass --likelihood gaussian for real-valued data)") from None
    t_data = time.perf_counter() - t0
    if len(train) < opts["batch_size"]:  # before anything is written to the output directory
        raise UsageError(f"{train.name}: {len(train)} training rows is fewer than one batch; "
                         f"use a --batch-size of at most {len(train)}")
    if not args.resume:
        model = VAE(train.dim, hidden=opts["hidden"], latent_dim=opts["latent"],
                    activation=opts["activation"], likelihood=opts["likelihood"],
                    n_samples=opts["n_samples"], beta=opts["beta"],
                    free_bits=opts["free_bits"], dtype=opts["dtype"], seed=opts["seed"],
                    backend=opts["backend"])
        model.metadata = {"data": opts["data"], "image_shape": train.image_shape,
                          "binarize": opts["binarize"], "label_names": train.label_names}
        os.makedirs(out, exist_ok=True)
        opts["out"] = out
        with open(os.path.join(out, RUN_FILE), "w") as f:
            json.dump(opts, f, indent=1)
    quiet = opts["quiet"]
    if not quiet:
        print(f"data: {train!r} ({t_data:.2f} s), test {len(test)} rows\n"
              f"model: {model!r}\noutput: {out}", file=sys.stderr)
    done = model.train_state.epoch if model.train_state else 0
    history = model.fit(train, epochs=max(0, opts["epochs"] - done),
                        batch_size=opts["batch_size"], optimizer=opts["optimizer"],
                        lr=opts["lr"], val=test, kl_warmup=opts["kl_warmup"],
                        progress=not quiet, checkpoint=ckpt,
                        binarize="dynamic" if opts["binarize"] == "dynamic" else "none")
    if not os.path.exists(ckpt):  # zero epochs asked: still leave a model behind
        model.save(ckpt)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(list(model.history), f, indent=1)
    if history.interrupted:
        print(f"stopped; continue with: fastvae train --out {out} --resume "
              f"--epochs {opts['epochs']}", file=sys.stderr)
        return 130
    written = []
    if not opts["no_pictures"]:
        written = _pictures(model, test, out, quiet)
    ev = model.elbo(test)
    print(f"test negative ELBO {ev.neg_elbo:.2f} nats (recon {ev.recon:.2f}, kl {ev.kl:.2f}) "
          f"on {ev.n} rows; model: {ckpt}" + (f"; {len(written)} pictures in {out}"
                                               if written else ""))
    return 0


def _pictures(model, ds, out, quiet):
    try:
        from . import viz
        paths = viz.write_all(model, ds, out, model.history)
    except ImportError as e:
        print(f"pictures skipped: {e}", file=sys.stderr)
        return []
    if not quiet:
        print("pictures: " + ", ".join(os.path.basename(p) for p in paths), file=sys.stderr)
    return paths


def _model_and_data(args, need_data=True):
    from . import load
    model = load(args.model, backend=args.backend)
    if not need_data:
        return model, None
    source = getattr(args, "data", None) or model.metadata.get("data")
    if source is None:
        raise UsageError("the checkpoint does not say which data it was trained on; pass --data")
    opts = {}
    run = os.path.join(os.path.dirname(os.path.abspath(args.model)), RUN_FILE)
    if os.path.isfile(run):
        with open(run) as f:
            opts = json.load(f)
        if getattr(args, "data", None) and args.data != opts.get("data"):
            opts = {}
    train, test = _load_data(source, opts, opts.get("seed", 0))
    ds = train if getattr(args, "split", "test") == "train" else test
    ds = _binarized(ds, model.metadata.get("binarize", "none"), opts.get("seed", 0) + 1)
    if ds.dim != model.input_dim:
        raise UsageError(f"{source}: rows have {ds.dim} values, the model expects "
                         f"{model.input_dim}")
    return model, ds


def cmd_sample(args):
    import numpy as np

    from . import viz
    model, _ = _model_and_data(args, need_data=False)
    z = np.random.default_rng(args.seed).standard_normal((args.n, model.latent_dim))
    x = viz._pixels(model, z)
    if args.npy:
        np.save(args.npy, x)
    shape = model.metadata.get("image_shape")
    if shape:
        grid = viz.image_grid(x, shape, int(np.ceil(np.sqrt(args.n))))
        viz._show(grid, args.out, f"{args.n} samples from the prior")
        print(f"wrote {args.out}" + (f" and {args.npy}" if args.npy else ""))
    elif args.npy:
        print(f"wrote {args.npy} (the data are not images: no picture)")
    else:
        raise UsageError("the model's data are not images; use --npy to save the samples")
    return 0


def cmd_reconstruct(args):
    from . import viz
    model, ds = _model_and_data(args)
    if ds.image_shape is None:
        raise UsageError(f"{ds.name}: the data are not images; nothing to draw")
    viz.plot_reconstructions(model, ds, args.out, n=args.n)
    print(f"wrote {args.out}")
    return 0


def cmd_eval(args):
    model, ds = _model_and_data(args)
    t0 = time.perf_counter()
    ev = model.elbo(ds, n_samples=args.n_samples, batch_size=args.batch_size)
    secs = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**ev, "data": ds.name, "seconds": secs}))
    else:
        print(f"{ds.name}: negative ELBO {ev.neg_elbo:.3f} nats per datapoint "
              f"(reconstruction {ev.recon:.3f}, KL {ev.kl:.3f}); {ev.n} rows, "
              f"{ev.n_samples} sample(s) each, {secs:.2f} s")
    return 0


def cmd_bench(args):
    import sys as _sys

    if "numpy" in _sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        print("note: NumPy was loaded before --threads could take effect", file=sys.stderr)
    from .benchmark import impls, suite
    from .benchmark.machine import describe
    bad = [n for n in (args.impl or []) if n not in impls.ALL]
    if bad:
        raise UsageError(f"unknown implementation(s) {bad}; choose from {', '.join(impls.ALL)}")
    for n in args.impl or []:
        why = impls.available(n)
        if why:
            raise UsageError(f"{n} cannot run here: {why}")
    threads = {"BLAS": args.threads, "Numba kernels": "1 (serial by design)"}
    try:
        import torch
        torch.set_num_threads(args.threads)
        threads["PyTorch"] = torch.get_num_threads()
    except ImportError:
        pass
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log("threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()))
    res = suite.run(quick=args.quick, names=args.impl, log=log)
    res["machine"], res["threads"] = describe(), threads
    paths = suite.write(res, args.out, args.name or ("bench-quick" if args.quick else "bench-full"))
    print(suite.markdown(res))
    log(f"{res['seconds']:.0f} s; wrote " + ", ".join(paths))
    return 0


def cmd_info(args):
    import platform

    import numpy as np

    from . import __version__
    from .backend import cuda_status, resolve
    lines = [f"fastvae {__version__}", f"python {platform.python_version()} "
             f"({platform.machine()}, {os.cpu_count()} CPUs)", f"numpy {np.__version__}"]
    try:
        import numba
        lines.append(f"numba {numba.__version__} (threads: {numba.config.NUMBA_NUM_THREADS})")
    except ImportError:
        lines.append("numba: not installed (the cpu backend needs it)")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "FASTVAE_BACKEND"):
        if os.environ.get(var):
            lines.append(f"{var}={os.environ[var]}")
    problem = cuda_status()
    if problem is None:
        import cupy
        dev = cupy.cuda.runtime.getDeviceProperties(0)
        lines.append(f"cupy {cupy.__version__}; GPU: {dev['name'].decode()}")
    else:
        lines.append(f"cuda backend: unavailable ({problem})")
    try:
        import matplotlib
        lines.append(f"matplotlib {matplotlib.__version__} (pictures)")
    except ImportError:
        lines.append("matplotlib: not installed (pictures need pip install 'fastvae[viz]')")
    lines.append(f"backends: numpy, cpu{', cuda' if problem is None else ''}; "
                 f"'auto' selects {resolve('auto')}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
