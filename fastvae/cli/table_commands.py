"""The commands that read a table model: ``sample`` (rows to CSV or Parquet, with fixed
conditions), ``eval`` (the test negative ELBO and each column's log-likelihood), ``score``
(per-row anomaly scores) and ``impute`` (missing cells filled).  ``fastvae.cli.main``
hands a checkpoint whose metadata holds a table's schema to these; pandas is imported only
here."""
from __future__ import annotations

import json
import os
import sys
import warnings

from .common import UsageError, checkpoint_args, positive, seed


def _write(df, path, fmt=None):
    """Write DataFrame ``df`` (index=False) as ``fmt`` ("csv" or "parquet"), or by
    ``path``'s extension: .parquet/.pq Parquet, .tsv tab-separated, anything else CSV."""
    from ..tabular import write_table
    return write_table(df, path, fmt)


def _condition_value(col, text):
    """``text`` read as a value of condition Column ``col``: one of its categories (matched
    by str(), then ignoring case), or a number (a time condition: the text)."""
    if col.kind == "categorical":
        cats = col.categories
        for match in (lambda c: str(c) == text, lambda c: str(c).lower() == text.lower()):
            hit = [c for c in cats if match(c)]
            if len(hit) == 1:
                return hit[0]
        shown = ", ".join(map(str, cats[:20])) + (", ..." if len(cats) > 20 else "")
        raise UsageError(f"--condition {col.name}={text}: {text!r} is not one of the "
                         f"column's {len(cats)} categories ({shown})")
    if col.is_time:  # (date text, a datetime, a date or a duration: the text, read as one)
        return text
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"--condition {col.name}={text}: expected a number") from None
    return int(v) if col.source == "int" and v == int(v) else v


def sample(args, model):
    """``fastvae sample`` for a table model: n rows to --csv/--parquet/--out, or CSV on
    stdout, written chunk by chunk as they are drawn (constant memory)."""
    from ..tabular import from_model
    tv = from_model(model)
    conds = {c.name: c for c in tv.schema.conditions}
    fixed = {}
    for spec in args.condition or ():
        # (a condition's name may hold "=": the longest name the spec starts with)
        name = max((c for c in conds if spec.startswith(f"{c}=")), key=len, default=None)
        name, eq, text = (name, "=", spec[len(name) + 1:]) if name else spec.partition("=")
        if not eq or not name:
            raise UsageError(f"--condition {spec!r}: expected COL=VALUE")
        if name not in conds:
            raise UsageError(f"--condition {spec!r}: {name!r} is not a condition column of "
                             f"this model (its conditions: {list(conds) or 'none'})")
        if name in fixed:
            raise UsageError(f"--condition {spec!r}: {name!r} is given twice")
        fixed[name] = _condition_value(conds[name], text)
    # (conditions not fixed are drawn from their training joint given these, chunk by chunk:
    # one value per column, so memory does not grow with -n)
    given = fixed or None
    out = getattr(args, "out", None)
    if getattr(args, "npy", None):
        raise UsageError(f"--npy {args.npy}: a table model's samples are rows of typed "
                         f"columns; write them with --csv PATH or --parquet PATH")
    if out and os.path.splitext(out)[1].lower() in (".png", ".jpg", ".svg", ".pdf"):
        raise UsageError(f"--out {out}: a table model's samples are rows, not a "
                         "picture; write them with --csv PATH or --parquet PATH")
    from ..tabular.tableio import TableWriter
    stdout = args.csv == "-"  # (standard output, as the usual "-" means)
    targets = [(p, fmt) for p, fmt in ((None if stdout else args.csv, "csv"),
                                       (args.parquet, "parquet"), (out, None)) if p]
    writers = [TableWriter(p, fmt) for p, fmt in targets]  # (a bad path, before any work)
    chunks = tv.iter_sample(args.n, conditions=given, seed=args.seed, mean=args.mean)
    rows = 0
    try:
        with warnings.catch_warnings(record=True) as caught:  # (one line each, below)
            warnings.simplefilter("always")
            for k, chunk in enumerate(chunks):  # written as drawn: memory stays flat in -n
                rows += len(chunk)
                if stdout or not writers:  # CSV on stdout, for a pipe
                    chunk.to_csv(sys.stdout, index=False, header=k == 0)
                for w in writers:
                    w.write(chunk)
    except BaseException:  # (an error or a Ctrl-C: no half-written file, an old one kept)
        for w in writers:
            w.abort()
        raise
    for w in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {w}", file=sys.stderr)
    for w in writers:
        w.close()
    if not writers:
        return 0
    print(f"wrote {' and '.join(p for p, _ in targets)} ({rows} rows, {len(tv.schema.order)} "
          "columns" + (f"; {', '.join(f'{k}={v}' for k, v in fixed.items())}" if fixed
                       else "") + ")", file=sys.stderr)
    return 0


def _table(args, model):
    """(DataFrame, description) of the rows ``eval`` or ``score`` reads."""
    from ..tabular import read_table
    from .table import run_table
    if getattr(args, "data", None):
        df = read_table(args.data, "--data")
        return df, f"{args.data} ({len(df)} rows)"
    return run_table(args.model, getattr(args, "split", "test"))


def evaluate(args, model):
    """``fastvae eval`` for a table model: the negative ELBO of the test split (or --data)
    and each column's log-likelihood per row, as an aligned table or JSON."""
    import math
    import time

    import numpy as np

    from ..tabular import from_model
    tv = from_model(model)
    df, name = _table(args, model)
    src = args.data or df  # (a path: an error names the file's line)
    t0 = time.perf_counter()
    try:
        ev = tv.elbo(src, n_samples=args.n_samples, seed=args.seed)
    except ValueError as e:
        msg = str(e).replace("missing=True", "--missing")
        raise UsageError(msg if args.data and os.path.basename(args.data) in msg else
                         f"{name}: {msg}") from None
    ll = tv.column_log_likelihood(src, seed=args.seed)
    secs = time.perf_counter() - t0
    kinds = {c.name: c.kind for c in tv.schema.columns}
    cols = ll["column"]
    nll = None
    if args.iwae:
        s = tv.score_samples(df, k=args.iwae, seed=args.seed).to_numpy()
        nll = (float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1
               else float("nan"))
    if args.json:
        out = {**ev, "data": name, "seconds": secs,
               "columns": {str(k): float(v) for k, v in cols.items()},
               "kl": float(ev.kl)}
        if nll is not None:
            out.update(nll=nll[0], nll_stderr=nll[1], iwae_k=args.iwae)
        print(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                          for k, v in out.items()}))
        return 0
    print(f"{name}: negative ELBO {ev.neg_elbo:.3f} nats per row (reconstruction "
          f"{ev.recon:.3f}, KL {ev.kl:.3f}); {ev.n_samples} sample(s) each, {secs:.2f} s")
    if nll is not None:
        print(f"{name}: negative log-likelihood {nll[0]:.3f} +- {nll[1]:.3f} nats per row "
              f"(importance-weighted bound, k={args.iwae})")
    w = max([len("column")] + [len(str(c)) for c in cols.index])
    print(f"{'column':<{w}}  {'kind':<11}  log-likelihood (nats per row)")
    for c, v in cols.items():
        print(f"{str(c):<{w}}  {kinds.get(c, ''):<11}  {v:12.4f}")
    print(f"{'(KL)':<{w}}  {'':<11}  {ll[('kl', '')]:12.4f}")
    print("(numeric columns are scored on their mapped scale, categorical ones as the "
          "log-probability of the observed category; a column with gaps adds its observed "
          "head's term; missing cells count 0)")
    return 0


def _table_args(s, verb, written):
    """The model, the table a command reads and its --csv output (``written``: what goes
    there)."""
    checkpoint_args(s)
    s.add_argument("table", help=f"the table to {verb} (.csv, .tsv, .parquet, .pq), with "
                   f"the model's columns")
    s.add_argument("--csv", default=None, metavar="PATH", help=f"write {written}")


def add_score_parser(sub):
    s = sub.add_parser(
        "score", help="per-row anomaly scores of a table under a table model",
        description="Score each row of a table with a model trained by 'fastvae train "
        "--data table.csv': the negative ELBO in nats (higher: less likely), or with --k "
        "the importance-weighted negative log-likelihood.  With --csv, writes one row per "
        "input row: 'row' (its number, from 0), 'score', and with --per-column 'kl' and "
        "'column:<name>' for each column's share (the prefix keeps them apart from any "
        "data column's name); without, prints the 10 highest-scoring rows.")
    _table_args(s, "score", "the scores here (CSV; .parquet/.pq: Parquet; '-': CSV on "
                "standard output)")
    s.add_argument("--per-column", action="store_true",
                   help="add each column's share of the score (which cells made the row "
                   "unlikely) and the KL")
    s.add_argument("--k", type=positive(int), default=None,
                   help="importance samples per row (a tighter, slower score; default: the "
                   "negative ELBO, one sample)")
    s.add_argument("--unknown", choices=("error", "missing"), default=None,
                   help="a category not seen in training: an error, or scored as a missing "
                   "cell (needs a model with the missing-cell mask); default: the model's")
    s.add_argument("--seed", type=seed, default=0,
                   help="seed of the scores' noise (default: 0)")
    s.add_argument("--top", type=positive(int), default=10,
                   help="rows printed without --csv (default: 10)")
    s.set_defaults(func=cmd_score)
    return s


def _table_model(args, what):
    """The TabularVAE of checkpoint ``args.model``; a model of arrays is a UsageError that
    says ``what`` the command does instead."""
    from .. import load
    from ..tabular import from_model, is_tabular
    model = load(args.model, backend=args.backend)
    if not is_tabular(model):
        raise UsageError(f"{args.model} is a model of arrays (images), not of a table: {what}")
    return from_model(model)


def _usage(e, path):
    """UsageError of a table model's ValueError ``e`` on file ``path`` (named once)."""
    msg = str(e).replace("missing=True", "--missing")
    return UsageError(msg if os.path.basename(path) in msg else f"{path}: {msg}")


def cmd_score(args):
    import numpy as np

    from ..tabular import read_table
    tv = _table_model(args, "'fastvae score' scores table rows (for arrays use "
                            "fastvae.VAE.score_samples)")
    df = read_table(args.table, "table")
    if args.unknown == "missing" and tv.model.missing is None:
        raise UsageError(f"--unknown missing reads unseen categories as missing cells, but "
                         f"{args.model} was trained without the missing-cell mask; train it "
                         f"with --missing")
    try:  # (the path: an error names the file's line)
        sc = tv.score_samples(args.table, k=args.k, per_column=args.per_column,
                              seed=args.seed, unknown=args.unknown)
    except ValueError as e:
        raise _usage(e, args.table) from None
    import pandas as pd
    cols = {"row": np.arange(len(df)), "score": (sc["score"] if args.per_column
                                                 else sc).to_numpy()}
    if args.per_column:
        cols["kl"] = sc["kl"].to_numpy()
        for name, v in sc["column"].items():
            cols[f"column:{name}"] = v.to_numpy()
        if "importance" in sc:  # (--k: what importance weighting takes off the ELBO)
            cols["importance"] = sc["importance"].to_numpy().ravel()
    frame = pd.DataFrame(cols)
    if args.csv == "-":  # (standard output, as the usual "-" means)
        frame.to_csv(sys.stdout, index=False)
        return 0
    if args.csv:
        _write(frame, args.csv)
        top = int(np.argmax(frame["score"].to_numpy()))
        print(f"wrote {args.csv} ({len(frame)} rows; highest score "
              f"{frame['score'].iloc[top]:.3f} at row {top})", file=sys.stderr)
        return 0
    order = np.argsort(-frame["score"].to_numpy(), kind="stable")[:args.top]
    shown = [frame["row"].iloc[order].rename("row"), frame["score"].iloc[order]]
    if args.per_column:
        shown.append(pd.Series(sc["column"].iloc[order].idxmax(axis=1).to_numpy(),
                               index=shown[0].index, name="most unlikely"))
    rows = df.reset_index(drop=True).iloc[order]
    shown += [pd.Series(rows.iloc[:, j].to_numpy(), index=shown[0].index, name=str(c))
              for j, c in enumerate(rows.columns)]
    table = pd.concat(shown, axis=1)  # (a data column may share a name with ours: kept)
    print(f"{args.table}: the {len(table)} highest scores of {len(df)} rows (nats; "
          f"{'k=' + str(args.k) if args.k else 'negative ELBO'})")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def add_impute_parser(sub):
    s = sub.add_parser(
        "impute", help="fill a table's missing cells with a table model",
        description="Fill the missing cells of a table with a model trained by 'fastvae "
        "train --data table.csv' on a table with gaps: each row is encoded from its "
        "observed cells and its gaps decoded (the most likely value, or with --seed a "
        "draw).  Observed cells are kept as they are; ignored and id columns keep their "
        "gaps.  Writes the whole table, in its columns' order and types.")
    _table_args(s, "fill", "the filled table here (CSV; .tsv: tab-separated; .parquet/.pq: "
                "Parquet; default or '-': CSV on standard output)")
    s.add_argument("--seed", type=seed, default=None,
                   help="draw the filled cells with this seed (default: the most likely "
                   "values, the same on every run)")
    s.set_defaults(func=cmd_impute)
    return s


def cmd_impute(args):
    from ..tabular import read_table
    tv = _table_model(args, "'fastvae impute' fills table cells")
    df = read_table(args.table, "table")  # (a missing or unreadable file, named as given)
    gap = None if tv.model.missing is not None else tv.schema.gap_column(df)
    if gap is not None:  # (a table without gaps in its modelled columns: nothing to fill)
        raise UsageError(f"column {gap!r} of {args.table} has missing cells, and "
                         f"{args.model} was trained without the missing-cell mask (its "
                         f"training table had no gaps); train it with --missing to impute")
    try:  # (the path: an error names the file's line)
        filled = tv.impute(args.table, seed=args.seed)
    except ValueError as e:
        raise _usage(e, args.table) from None
    gaps = int(sum(filled[c].isna().sum() for c in filled.columns))
    if args.csv in (None, "-"):  # (standard output, as the usual "-" means)
        filled.to_csv(sys.stdout, index=False)
        return 0
    _write(filled, args.csv)
    print(f"wrote {args.csv} ({len(filled)} rows"
          + (f"; {gaps} cells of ignored or id columns left empty" if gaps else "")
          + ")", file=sys.stderr)
    return 0

