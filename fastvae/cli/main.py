"""The ``fastvae`` command: train, sample, reconstruct, eval, score, impute, export, bench,
info.

    fastvae train                         # built-in shapes, writes runs/shapes28-1/
    fastvae train --data /usr/share/datasets/fashion-mnist --epochs 10
    fastvae sample runs/shapes28-1/model.npz -n 64
    fastvae eval runs/shapes28-1/model.npz
    fastvae export runs/shapes28-1/model.npz --onnx encoder.onnx --part encoder
    fastvae train --data diamonds.csv     # a table: a TabularVAE, writes runs/diamonds-1/
    fastvae sample runs/diamonds-1/model.npz -n 1000 --csv synthetic.csv
    fastvae score runs/diamonds-1/model.npz new.csv --csv scores.csv
    fastvae impute runs/diamonds-1/model.npz gappy.csv --csv filled.csv

Errors in the user's input (paths, data, options) print one line naming the problem and
exit with status 2; Ctrl-C during training saves a checkpoint and exits with status 130.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from .common import RUN_FILE, UsageError, binarized, checkpoint_args, load_data, positive, seed
from .table_commands import add_impute_parser, add_score_parser
from .train import add_parser as add_train_parser


def build_parser():
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="fastvae", description="Variational autoencoders with hand-written, fused "
        "forward and backward passes (NumPy reference, Numba CPU, CUDA).",
        epilog="Run 'fastvae <command> --help' for the options of each command.")
    p.add_argument("--version", action="version", version=f"fastvae {__version__}")
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.required = True

    add_train_parser(sub)

    s = sub.add_parser("sample", help="draw images (or a table's rows) from a trained "
                       "model's prior", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    checkpoint_args(s)
    s.add_argument("-n", type=positive(int), default=64, help="number of samples")
    s.add_argument("--out", default=argparse.SUPPRESS, help="PNG file to write (default: "
                   "samples.png); for a table model a .csv, .tsv or .parquet file")
    s.add_argument("--npy", default=None, help="also save the (n, D) pixel array here")
    s.add_argument("--seed", type=seed, default=0, help="seed of the latent draws")
    s.add_argument("--csv", default=None, metavar="PATH",
                   help="a table model: write the rows as CSV here ('-': standard output; "
                   "without --csv, --parquet or --out: CSV on stdout too)")
    s.add_argument("--parquet", default=None, metavar="PATH",
                   help="a table model: write the rows as Parquet here")
    s.add_argument("--condition", action="append", default=None, metavar="COL=VALUE",
                   help="a table model: fix a condition column's value (repeatable; the "
                   "others are drawn from their training joint, given these)")
    s.add_argument("--mean", action="store_true",
                   help="a table model: each cell's mean (most probable category) instead "
                   "of a draw")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("reconstruct", help="inputs beside their reconstructions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    checkpoint_args(c)
    c.add_argument("--data", default=None,
                   help="data to reconstruct (default: the data the model was trained on; "
                   "its test split when it has one)")
    c.add_argument("-n", type=positive(int), default=16, help="number of inputs")
    c.add_argument("--out", default="reconstructions.png", help="PNG file to write")
    c.set_defaults(func=cmd_reconstruct)

    e = sub.add_parser("eval", help="negative ELBO of a dataset under a trained model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    checkpoint_args(e)
    e.add_argument("--data", default=None,
                   help="data to evaluate (default: the data the model was trained on; for "
                   "a table model, its held-out test split); a table model prints each "
                   "column's log-likelihood too")
    e.add_argument("--split", choices=("test", "train"), default="test",
                   help="which part of the data (the held-out part is 'test')")
    e.add_argument("--n-samples", type=positive(int), default=1,
                   help="draws of z per datapoint for the ELBO (averaging more draws lowers "
                   "the estimate's variance; it does not tighten the bound: --iwae does)")
    e.add_argument("--iwae", type=positive(int), default=None, metavar="K",
                   help="also estimate log p(x) with the importance-weighted bound, K samples "
                   "per datapoint (papers use 5000), with its standard error")
    e.add_argument("--seed", type=seed, default=0, help="seed of the estimates' noise")
    e.add_argument("--batch-size", type=positive(int), default=1000,
                   help="rows per pass (bounds the memory used)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)

    add_score_parser(sub)
    add_impute_parser(sub)

    # defaults are written into the help: ArgumentDefaultsHelpFormatter would print
    # "(default: None)" for the required --onnx, and fastvae.io.export (NumPy) must not be
    # imported here, before 'bench' sets the BLAS thread count
    x = sub.add_parser("export", help="write a trained model as an ONNX graph",
                       description="Write the encoder, the decoder or the whole model (noise "
                       "as an input) as an ONNX graph; see fastvae.io.export for the names. "
                       "Needs the onnx package: pip install 'fastvae[onnx]'.")
    # no --backend: export only reads the parameters, on the numpy backend (no Numba, no GPU)
    x.add_argument("model", help="a checkpoint written by 'fastvae train' (model.npz)")
    x.add_argument("--onnx", required=True, metavar="PATH", help="the ONNX file to write")
    x.add_argument("--part", choices=("encoder", "decoder", "vae"), default="vae",
                   help="encoder: x -> mu, logvar; decoder: z -> x_hat; vae: x, eps -> "
                   "x_hat, mu, logvar, z (default: vae)")
    x.add_argument("--opset", type=positive(int), default=None,
                   help="the ONNX opset to write, from 13 to the newest the installed onnx "
                   "knows (default: 17, fastvae.io.export.DEFAULT_OPSET)")
    x.set_defaults(func=cmd_export)

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
    b.add_argument("--threads", type=positive(int), default=os.cpu_count(),
                   help="threads for BLAS and PyTorch alike (the Numba kernels are serial)")
    b.add_argument("--out", default="fastvae-bench", help="directory for the report files")
    b.add_argument("--name", default=None,
                   help="file stem of the report (default: bench-quick or bench-full)")
    b.set_defaults(func=cmd_bench)

    st = sub.add_parser("selftest", help="check the cuda backend on this GPU and print a "
                        "report to paste into an issue",
                        description="Run the GPU checks that ship with fastvae (every kernel "
                        "and a training step against the reference, 200 steps against the "
                        "cpu backend, exact resume, cross-device checkpoints) and, with "
                        "PyTorch, a short speed comparison; print one report.  Without a GPU "
                        "it says why the GPU part was skipped and checks the cpu backend.")
    st.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    st.add_argument("--json", action="store_true", help="print only the JSON report")
    st.set_defaults(func=cmd_selftest)

    i = sub.add_parser("info", help="versions, backends, threads and GPU")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "bench":  # before NumPy loads BLAS, which reads these once
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    from ..backends import BackendUnavailable
    from ..io.dataset import DataError
    from ..io.checkpoint import CheckpointError
    try:
        return args.func(args) or 0
    except (UsageError, DataError, CheckpointError, FileNotFoundError, BackendUnavailable,
            MemoryError, _table_error()) as e:
        from .table import cli_words  # (a table's fixes in the command line's words)
        print(f"fastvae {args.command}: error: {cli_words(str(e))}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"fastvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # (before training started: a run in training saves and
        print(f"fastvae {args.command}: interrupted", file=sys.stderr)  # says so itself)
        return 130


def _table_error():
    """fastvae.tabular's TableError once a table was read (a table's bad input: exit 2); no
    import here, so that pandas is loaded only when a table is involved."""
    mod = sys.modules.get("fastvae.tabular.schema")
    return mod.TableError if mod is not None else UsageError


# ----------------------------------------------------------------------- commands
def _model_and_data(args, need_data=True, model=None):
    from .. import load
    if model is None:
        model = load(args.model, backend=args.backend)
    if "tabular" in model.metadata and args.command == "reconstruct":
        raise UsageError(f"{args.model} is a table model: 'fastvae reconstruct' draws "
                         "images (for tables use fastvae.tabular.TabularVAE.reconstruct)")
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
    train, test = load_data(source, opts, opts.get("seed", 0))
    ds = train if getattr(args, "split", "test") == "train" else test
    if ds.dim != model.input_dim:
        raise UsageError(f"{source}: rows have {ds.dim} values, the model expects "
                         f"{model.input_dim}")
    ds.check(model.likelihood)  # as given, before a binarization hides a NaN or a 3.0
    return model, binarized(ds, model.metadata.get("binarize", "none"), opts.get("seed", 0) + 1)


def cmd_sample(args):
    import numpy as np

    from .. import viz
    model, _ = _model_and_data(args, need_data=False)
    if "tabular" in model.metadata:
        from .table_commands import sample
        return sample(args, model)
    for opt, v in (("--csv", args.csv), ("--parquet", args.parquet),
                   ("--condition", args.condition), ("--mean", args.mean)):
        if v:
            raise UsageError(f"{opt} is for a table model; {args.model} is a model of arrays")
    args.out = getattr(args, "out", "samples.png")
    z = np.random.default_rng(args.seed).standard_normal((args.n, model.latent_dim))
    x = viz.decoded_pixels(model, z)
    if args.npy:
        np.save(args.npy, x)
    shape = model.metadata.get("image_shape")
    if shape:
        grid = viz.image_grid(x, shape, int(np.ceil(np.sqrt(args.n))))
        viz.show_grid(grid, args.out, f"{args.n} samples from the prior")
        print(f"wrote {args.out}" + (f" and {args.npy}" if args.npy else ""))
    elif args.npy:
        print(f"wrote {args.npy} (the data are not images: no picture)")
    else:
        raise UsageError("the model's data are not images; use --npy to save the samples")
    return 0


def cmd_reconstruct(args):
    from .. import viz
    model, ds = _model_and_data(args)
    if ds.image_shape is None:
        raise UsageError(f"{ds.name}: the data are not images; nothing to draw")
    viz.plot_reconstructions(model, ds, args.out, n=args.n)
    print(f"wrote {args.out}")
    return 0


def _finite_or_none(v):
    """v with every non-finite float (in dicts and lists too) replaced by None."""
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_eval(args):
    model, _ = _model_and_data(args, need_data=False)
    if "tabular" in model.metadata:
        from .table_commands import evaluate
        return evaluate(args, model)
    model, ds = _model_and_data(args, model=model)
    t0 = time.perf_counter()
    ev = model.elbo(ds, n_samples=args.n_samples, batch_size=args.batch_size, seed=args.seed)
    secs = time.perf_counter() - t0
    diag = model.diagnostics(ds, batch_size=args.batch_size)
    ll = None
    if args.iwae:
        t1 = time.perf_counter()
        ll = model.log_likelihood(ds, k=args.iwae, seed=args.seed)
        ll_secs = time.perf_counter() - t1
    if args.json:
        out = {**ev, "data": ds.name, "seconds": secs,
               "active_units": diag.active_units, "kl_per_dim": diag.kl_per_dim.tolist(),
               "mean_sigma": diag.mean_sigma.tolist()}
        if ll is not None:
            out.update(nll=ll.nll, nll_stderr=ll.stderr, iwae_k=ll.k, nll_seconds=ll_secs)
        # a non-finite number (one row's standard error, a diverged model) is null, as
        # strict JSON wants
        print(json.dumps(_finite_or_none(out), allow_nan=False))
        return 0
    print(f"{ds.name}: negative ELBO {ev.neg_elbo:.3f} nats per datapoint "
          f"(reconstruction {ev.recon:.3f}, KL {ev.kl:.3f}); {ev.n} rows, "
          f"{ev.n_samples} sample(s) each, {secs:.2f} s")
    if ll is not None:
        print(f"{ds.name}: negative log-likelihood {ll.nll:.3f} +- {ll.stderr:.3f} nats per "
              f"datapoint (importance-weighted bound, k={ll.k}), {ll_secs:.2f} s")
    kl = " ".join(f"{v:.2f}" for v in diag.kl_per_dim[diag.order])
    print(f"active units {diag.active_units} of {model.latent_dim} (Cov_x E_q[z] > "
          f"{diag.threshold}); KL per dimension, largest first: {kl}")
    return 0


def cmd_export(args):
    from .. import load
    from ..io.export import DEFAULT_OPSET, export_onnx
    model = load(args.model, backend="numpy")
    try:
        path = export_onnx(model, args.onnx, part=args.part, opset=args.opset)
    except ValueError as e:  # an opset out of range, a feature with no ONNX form
        raise UsageError(str(e)) from None
    print(f"wrote {path} ({args.part}, opset {args.opset or DEFAULT_OPSET}, "
          f"{model.dtype.name}, inputs/outputs: {_EXPORT_IO[args.part]})")
    return 0


_EXPORT_IO = {"encoder": "x -> mu, logvar", "decoder": "z -> x_hat",
              "vae": "x, eps -> x_hat, mu, logvar, z"}


def cmd_bench(args):
    import sys as _sys

    if "numpy" in _sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        print("note: NumPy was loaded before --threads could take effect", file=sys.stderr)
    from ..benchmark import impls, suite
    from ..benchmark.machine import describe
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


def cmd_selftest(args):
    from .. import selftest
    return selftest.main((["--no-speed"] if args.no_speed else [])
                         + (["--json"] if args.json else []))


def cmd_info(args):
    import platform

    import numpy as np

    from .. import __version__
    from ..backends import cuda_status, resolve
    lines = [f"fastvae {__version__}", f"python {platform.python_version()} "
             f"({platform.machine()}, {os.cpu_count()} CPUs)", f"numpy {np.__version__}"]
    try:
        import numba
        from ..backends import cpu
        bf16 = cpu.bf16_support()  # (loading oneDNN may change the default thread count)
        lines.append(f"numba {numba.__version__}; cpu kernels on {cpu.get_num_threads()} "
                     "thread(s)")
        from ..backends.cpu import blas_threads
        blas = blas_threads.controls()
        lines.append("BLAS threads: " + (
            f"{', '.join(str(get()) for get, _ in blas)}; fit's shards run each product on "
            "one" if blas else "not settable here (OpenBLAS, MKL or BLIS not found): "
            "fit's shards leave the BLAS library's threads alone"))
        lines.append("precision='bf16' on the cpu backend: " + (
            f"yes (oneDNN: {cpu.onednn.library().path})" if bf16 is None else f"no ({bf16})"))
        waits = cpu.onednn.openmp_waits()
        if waits is not None:
            lines.append(f"oneDNN's OpenMP threads between products: {waits[0]} ({waits[1]})")
    except ImportError:
        lines.append("numba: not installed (the cpu backend needs it)")
    except ValueError as e:  # (a bad FASTVAE_NUM_THREADS: said, not a traceback)
        lines.append(f"cpu backend: {e}")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "FASTVAE_BACKEND",
                "FASTVAE_NUM_THREADS"):
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
