"""``fastvae train --data table.csv``: a :class:`fastvae.tabular.TabularVAE` run.

A table (.csv, .tsv, .parquet, .pq, told by the extension) is read with pandas; a seeded
shuffle holds out ``--val-fraction`` of its rows (10%) as the test split, which gives the
validation ELBO of every epoch and the test negative ELBO printed at the end
(:func:`split`, which ``fastvae eval`` calls again to find the same rows).  The run
directory holds what an image run's does: ``model.npz`` (the checkpoint, written after every
epoch, with the table's schema in its metadata), ``run.json`` (the table's path and options;
``"table": true``), ``history.json``, and the pictures of :mod:`fastvae.tabular.plots`
(marginals.png, correlations.png, loss.png).

Without ``--epochs`` the model trains by the policy of :mod:`fastvae.tabular.policy`: it
validates on its own share of the training rows (never the test split, whose ELBO stays
unbiased) and stops when that loss stops improving; ``--resume`` continues a policy in
progress.  With ``--epochs N`` it trains exactly N epochs in all (``--resume`` until the run
has N).  Every check of the table (its columns, its cells, its conditions) runs on the whole
file before the split, and an error names the file's line.  Data-parallel training (mpiexec)
is not supported for tables.
"""
from __future__ import annotations

import json
import os
import sys
import warnings

from .common import (FIT_OPTIONS, MODEL_FILE, RUN_FILE, UsageError, make_run_dir,
                     next_run_dir, set_threads, write_pictures)

#: a table run's defaults where they differ from an image run's (epochs None: the policy)
DEFAULTS = {"epochs": None, "hidden": None, "latent": None, "lr": 1e-3, "seed": 0,
            "val_fraction": 0.1}
#: command-line option -> TabularVAE (fastvae.VAE) keyword
MODEL_OPTIONS = {"activation": "activation", "activation_alpha": "activation_alpha",
                 "n_samples": "n_samples", "beta": "beta", "free_bits": "free_bits",
                 "dtype": "dtype", "objective": "objective",
                 "decoder_hidden": "decoder_hidden", "precision": "precision",
                 "encode_conditions": "encode_conditions",
                 "inject_conditions": "inject_conditions"}
#: model options given as switches: their flag, and the setting without it
FLAGS = {"encode_conditions": "--decoder-conditions-only",
         "inject_conditions": "--inject-conditions"}
FLAG_DEFAULTS = {"encode_conditions": True, "inject_conditions": False}
IMAGE_ONLY = ("image_size", "n_images", "binarize", "likelihood", "obs_scale")
#: the options that fix a table run's data and model (run.json), checked on --resume
FIXED = ("data", "conditions", "columns", "val_fraction", "seed", "hidden", "latent",
         "missing", *MODEL_OPTIONS)


def add_arguments(parser):
    """The table options of ``fastvae train``."""
    g = parser.add_argument_group(
        "tables (--data a .csv, .tsv, .parquet or .pq file: a TabularVAE; defaults --epochs "
        "by the training policy, --hidden and --latent by the row count, --batch-size from the "
        "rows)")
    g.add_argument("--condition", action="append", default=None, metavar="COL",
                   help="a condition column (repeatable): observed, given to the encoder "
                   "and the decoder; 'fastvae sample --condition COL=VALUE' fixes it")
    g.add_argument("--decoder-conditions-only", dest="encode_conditions",
                   action="store_const", const=False, default=None,
                   help="the encoder does not read the conditions (scVI's default): the "
                   "codes must explain each row without them, which keeps a batch effect "
                   "out of them")
    g.add_argument("--inject-conditions", action="store_const", const=True, default=None,
                   help="every decoder layer reads the conditions, the output layer's "
                   "included (a learned shift of each column per condition)")
    g.add_argument("--column", action="append", default=None, metavar="COL=TYPE",
                   help="a column's type instead of the inferred one (repeatable): numeric, "
                   "categorical, count (negative binomial), poisson, zinb (zero-inflated counts), "
                   "datetime (dates written "
                   "as text), id (new identifiers of the same shape) or ignore (drawn on "
                   "its own from its training values)")
    g.add_argument("--missing", action="store_const", const=True, default=None,
                   help="build the missing-cell mask even if the training rows have no gap, "
                   "so that the model can score and impute tables with gaps (and score "
                   "unseen categories as missing cells: fastvae score --unknown missing)")


def wanted(args):
    """Whether ``fastvae train`` trains a table: --data names one, or --resume continues a
    table run.  --condition and --column without a table are a usage error."""
    from ..tabular.tableio import is_table_path
    if args.data is not None:
        table = is_table_path(args.data)
    elif args.resume and args.out is not None:
        table = bool(_read_run(args.out, quiet=True).get("table"))
    else:
        table = False
    if not table and (args.condition or args.column or args.encode_conditions is not None
                      or args.inject_conditions is not None or args.missing is not None):
        raise UsageError("--condition, --column, --decoder-conditions-only, "
                         "--inject-conditions and --missing are for tables (--data a .csv, "
                         ".tsv, .parquet or .pq file)")
    return table


def parse_columns(specs):
    """['price=numeric', ...] -> {'price': 'numeric'}; a bad spec is a UsageError."""
    from ..tabular.schema import TYPES
    out = {}
    for spec in specs or ():
        name, eq, kind = spec.rpartition("=")  # (no type holds "=", a name may)
        name, kind = name.strip(), kind.strip().lower()
        if not eq or not name or not kind:
            raise UsageError(f"--column {spec!r}: expected COL=TYPE, e.g. --column "
                             f"carat=numeric")
        if kind not in TYPES:
            raise UsageError(f"--column {spec!r}: unknown type {kind!r}; choose from "
                             f"{', '.join(sorted(set(TYPES)))}")
        out[name] = kind
    return out


def split(df, seed, frac=0.1, types=None, schema=None):
    """(train, test) DataFrames of table ``df``: a shuffle seeded by ``seed`` holds out
    round(frac * rows) rows (at least one) as the test split.  A held-out row with a
    category its column's training rows never show (a rare value) moves back to the training
    rows: the model could not read it.  Only modelled categorical columns count (of
    ``schema``, the whole table's, inferred here when not given): identifiers, ignored and
    numeric columns do not.  Both keep the table's order and index.  ``fastvae train`` and
    ``fastvae eval`` call this with a run's options and get the same rows."""
    import numpy as np

    if not 0 < frac < 1:
        raise UsageError(f"--val-fraction must lie in (0, 1), got {frac}")
    if schema is None:
        from ..tabular import infer
        schema = infer(df, types, (), salt=b"")
    n = len(df)
    test = np.zeros(n, dtype=bool)
    if n > 1:
        test[np.random.default_rng(seed).permutation(n)[:max(1, int(round(frac * n)))]] = True
    for c in schema.columns:
        if c.kind != "categorical":
            continue
        s = df[c.name]
        seen = s[~test].dropna().unique()
        test &= ~(s.notna().to_numpy() & ~s.isin(seen).to_numpy())
    if n > 1 and not test.any():
        cats = [c.name for c in schema.columns if c.kind == "categorical"]
        raise UsageError(f"no row is left for the test split: every held-out row has a "
                         f"category that the training rows lack (in {cats}); a larger "
                         f"--val-fraction, or --column COL=ignore for a column of rare values")
    return df[~test], df[test]


def _read_run(out, quiet=False):
    path = os.path.join(out, RUN_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        if quiet:
            return {}
        raise UsageError(f"cannot read {path} ({e})") from None


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _options(args, given):
    """The table run's options from the command line: (given, opts) where opts has the
    defaults filled in; ``given``: the options of ``fastvae train`` given (not None)."""
    given = dict(given)
    bad = [k for k in IMAGE_ONLY if k in given]
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        raise UsageError(f"{flags}: for image and array data, not tables (a table's columns "
                         f"get their likelihood from their types: --column COL=TYPE)")
    if given.get("epochs", 0) < 0:
        raise UsageError(f"--epochs must be >= 0, got {given['epochs']}")
    if "data" in given:
        given["data"] = os.path.abspath(given["data"])
    if args.condition is not None:
        given["conditions"] = list(dict.fromkeys(args.condition))
    if args.column is not None:
        given["columns"] = parse_columns(args.column)
    for k in ("encode_conditions", "inject_conditions", "missing"):
        if getattr(args, k, None) is not None:
            given[k] = getattr(args, k)
    opts = {**DEFAULTS, "conditions": [], "columns": {}, **given}
    return given, opts


def _resumed(args, given):
    """(opts, tv, ckpt) of the table run in --out, the options given checked against it."""
    from ..tabular import load
    if args.out is None:
        raise UsageError("--resume needs --out, the directory of the run to continue")
    ckpt = os.path.join(args.out, MODEL_FILE)
    if not os.path.isfile(ckpt):
        raise UsageError(f"--resume: no checkpoint {ckpt} to continue")
    saved = _read_run(args.out)
    if not saved.get("table"):
        raise UsageError(f"--resume: {args.out} is not a table run")
    fixed = [_changed(k, given[k], saved.get(k, FLAG_DEFAULTS.get(k)))
             for k in FIXED if k in given
             and _norm(given[k]) != _norm(saved.get(k, FLAG_DEFAULTS.get(k)))]
    if fixed:
        raise UsageError("a run's data and model cannot change on --resume: "
                         + "; ".join(fixed) + "; start a new run with another --out")
    opts = {**DEFAULTS, **saved}
    opts["epochs"] = given.get("epochs", saved.get("epochs", DEFAULTS["epochs"]))
    try:
        return opts, load(ckpt, backend=args.backend), ckpt
    except (ValueError, RuntimeError) as e:
        raise UsageError(f"--resume: {ckpt}: {e}") from None


def _changed(key, given, saved):
    """How a fixed option given on --resume differs from the run's, in the flags' words."""
    if key in FLAGS:
        return f"{FLAGS[key]} (the run {'has it' if saved != FLAG_DEFAULTS[key] else 'has not'})"
    flag = {"conditions": "condition", "columns": "column"}.get(key, key)  # (repeatable
    return f"--{flag.replace('_', '-')} {given!r} (the run has {saved!r})"  # flags' names)


def cmd_train(args, given):
    """``fastvae train`` on a table (``args`` from :func:`fastvae.cli.train.add_parser`;
    ``given``: the options given on the command line, by name)."""
    import time

    from ..tabular import CollapseWarning, TabularVAE, infer, read_table
    from ..tabular.tableio import row_names
    from ..training.distributed import detected_size
    from ..training.fit import SettingChangedWarning
    from ..tabular import policy as tab_policy

    if detected_size() > 1 and not args.no_distributed:
        raise UsageError(f"data-parallel training (mpiexec, {detected_size()} processes) is "
                         "not supported for tables; run one process (or pass "
                         "--no-distributed: each process trains alone, with its own --out)")
    given, opts = _options(args, given)
    lead = not args.quiet
    if args.resume:
        opts, tv, ckpt = _resumed(args, given)
        out = args.out
        fit_kw = {k: given[k] for k in FIT_OPTIONS if k in given}
    else:
        tv = None
        stem = os.path.splitext(os.path.basename(opts["data"]))[0] or "table"
        out = args.out if args.out is not None else next_run_dir(stem)
        ckpt = os.path.join(out, MODEL_FILE)
        if os.path.exists(ckpt):
            raise UsageError(f"{ckpt} already exists; continue it with --resume or choose "
                             "another --out (nothing was overwritten)")
        fit_kw = {k: opts[k] for k in FIT_OPTIONS if opts.get(k) is not None}
    t0 = time.perf_counter()
    path = opts["data"]
    df = read_table(path, "--data")
    conds = opts["conditions"]
    try:  # every check on the whole table, before the split: an error names the file's line
        schema = infer(df, opts["columns"], conds, where=row_names(path, df), salt=b"")
        schema.encode(df, where=row_names(path, df))
        schema.encode_conditions(df, where=row_names(path, df))
    except ValueError as e:
        msg = cli_words(str(e))
        raise UsageError(msg if os.path.basename(path) in msg else f"{path}: {msg}") from None
    train, test = split(df, opts["seed"], opts["val_fraction"], opts["columns"], schema)
    t_data = time.perf_counter() - t0
    # (the policy trains on the rows it does not hold out for its own validation)
    rows = len(train) - (tab_policy.val_rows(len(train)) if opts["epochs"] is None else 0)
    if fit_kw.get("batch_size", 0) > rows:
        raise UsageError(f"{path}: {rows} training rows is fewer than one batch; use a "
                         f"--batch-size of at most {rows}")
    if tv is None:
        gaps = any(c.gaps for c in schema.columns)
        try:  # everything is checked (a fit of 0 epochs) before anything is written
            tv = TabularVAE(opts["hidden"], opts["latent"], types=opts["columns"],
                            missing=True if (gaps or opts.get("missing")) else None,
                            seed=opts["seed"], backend=args.backend,
                            **{v: opts[k] for k, v in MODEL_OPTIONS.items() if k in opts})
            tv.fit(train, conditions=conds, epochs=0, progress=False, **fit_kw)
        except (ValueError, RuntimeError) as e:  # a TableError, a setting the model refuses
            raise UsageError(cli_words(str(e))) from None
        tv.model.metadata["data"] = path
        opts["missing"] = tv.model.missing is not None
    st = tv.model.train_state
    done = st.epoch if st else 0
    policy = opts["epochs"] is None
    make_run_dir(out)
    keep = ("data", "conditions", "columns", "val_fraction", "seed", "hidden", "latent",
            "epochs", "missing", *MODEL_OPTIONS)
    with open(os.path.join(out, RUN_FILE), "w") as f:
        json.dump({"table": True, **{k: _norm(opts[k]) for k in keep if k in opts}}, f,
                  indent=1)
    if lead:
        goal = ("until its held-out rows stop improving" if policy else
                f"to {opts['epochs']} epochs")
        print(f"data: {path} ({len(df)} rows: {len(train)} train, {len(test)} test; "
              f"{t_data:.2f} s)\nmodel: {tv!r}\n" + (f"resuming {ckpt}: {done} epoch(s) "
              f"done, training {goal}\n" if args.resume else "") + f"output: {out}",
              file=sys.stderr)
    set_threads(args, tv.model, fit_kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SettingChangedWarning)
        warnings.simplefilter("always", CollapseWarning)
        try:
            if policy:
                tv.fit(train, conditions=conds, progress=not args.quiet, checkpoint=ckpt,
                       **fit_kw)
            else:
                tv.fit(train, conditions=conds, epochs=max(0, opts["epochs"] - done),
                       val=test, progress=not args.quiet, checkpoint=ckpt, **fit_kw)
        except (ValueError, RuntimeError) as e:  # a setting refused on --resume
            if isinstance(e, (FloatingPointError, ArithmeticError)):
                raise
            raise UsageError(cli_words(str(e))) from None
        except KeyboardInterrupt:  # (after the last step, before the sampler was fit: the
            tv.interrupted_ = True  # checkpoint holds the weights; --resume fits it)
    for w in caught:  # --quiet: the one line fit would have printed
        if issubclass(w.category, SettingChangedWarning):
            print(str(w.message), file=sys.stderr)
        elif issubclass(w.category, CollapseWarning):
            print(f"note: {cli_words(str(w.message))}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(list(tv.history), f, indent=1)
    st = tv.model.train_state
    if tv.interrupted_ or (
            not policy and st.epoch < opts["epochs"]):  # Ctrl-C: fit wrote the checkpoint
        print(f"stopped; continue with: fastvae train --out {out} --resume", file=sys.stderr)
        return 130
    if policy and lead and st.stopper is not None and st.stopper.stopped:
        print(f"trained {st.epoch} epochs ({st.step} steps): {st.stopper.stopped}",
              file=sys.stderr)
    written = [] if args.no_pictures else _pictures(tv, train, out, args.quiet)
    ev = tv.elbo(test)
    print(f"test negative ELBO {ev.neg_elbo:.2f} nats (recon {ev.recon:.2f}, kl {ev.kl:.2f}) "
          f"on {ev.n} rows; model: {ckpt}" + (f"; {len(written)} pictures in {out}"
                                               if written else ""))
    return 0


def cli_words(message):
    """A fastvae.tabular message in the command line's words: types={'c': 'ignore'} is
    --column c=ignore."""
    import re
    message = re.sub(r"types=\{'([^']*)': '(\w+)'\}", r"--column \1=\2", message)
    for arg, flag in (("inject_conditions=True", "--inject-conditions"),
                      ("encode_conditions=False", "--decoder-conditions-only")):
        message = re.sub(re.escape(arg) + r" ((?:feeds|keeps) the condition columns .*?), "
                         r"but none was given: fit\(df, conditions=COLUMN\)",
                         flag + r" \1, but none was given: name one with --condition COL",
                         message)
    message = message.replace("train it with missing=True", "train it with --missing")
    message = message.replace("pass unknown='missing'", "pass --unknown missing")
    # a fix in pandas' words has its file's words here
    message = re.sub(r"make it one type \(pd\.to_numeric\(df\[[^]]*\], errors='coerce'\) "
                     r"reads the strings as missing\)", "make it one type in the file (a blank "
                     "cell is a missing one)", message)
    message = re.sub(r" \(s\.cat\.rename_categories\(str\)\)", "", message)
    message = re.sub(r"; save it as UTF-8, or read it with pandas \(pd\.read_csv\(path, "
                     r"encoding=\.\.\.\)\) and pass the DataFrame", "; save it as UTF-8",
                     message)
    message = message.replace("TabularVAE(beta=0.5)", "--beta 0.5").replace(
        "(epochs=, or fit again to continue)", "(--epochs, or --resume)")
    return message.replace("types names column", "--column names column")


def _pictures(tv, train, out, quiet):
    def write():
        from ..tabular import plots
        return plots.write_all(tv, train, out)
    return write_pictures(write, out, quiet)


def _whole_schema(df, opts):
    from ..tabular import infer
    return infer(df, opts.get("columns"), opts.get("conditions") or (), salt=b"")


def run_table(model_path, split_name="test"):
    """(DataFrame, description) of a table run's rows: its held-out test split (or its
    training rows), reproduced from the run.json beside ``model_path``."""
    from ..tabular import read_table
    run = os.path.join(os.path.dirname(os.path.abspath(model_path)), RUN_FILE)
    opts = _read_run(os.path.dirname(run), quiet=True)
    if not opts.get("table"):
        raise UsageError(f"no table run's {RUN_FILE} beside {model_path}; pass --data")
    df = read_table(opts["data"], "the run's data")
    train, test = split(df, opts.get("seed", 0), opts.get("val_fraction", 0.1),
                        opts.get("columns"), schema=_whole_schema(df, opts))
    part = test if split_name == "test" else train
    return part, f"{opts['data']} ({split_name} split, {len(part)} rows)"
