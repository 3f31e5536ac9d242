"""fastvae against scvi-tools' SCVI on the same count matrix, side by side in one run (issue
20): seconds per epoch, held-out reconstruction log-likelihood, and batch correction.

The data: benchmarks/nb_counts.py's 20,000 cells x 2,000 negative-binomial genes with two
batches and five clusters; 90% train, 10% held out (a seeded split).  Both models: 1x128
hidden, latent 10, batch 128, Adam as SCVI sets it (lr 1e-3, eps 0.01, weight decay 1e-6),
the batch as a condition of the decoder, the observed library size (each cell's total count)
as the exposure, a dispersion per gene, the same number of epochs, 2 threads, and no KL
warm-up (``--kl-warmup``: SCVI's default warms up over 400 epochs, its default run length;
over a run of 60 epochs that leaves the KL weight at 0.15 and the batch in the codes:
SCVI's batch accuracy was 0.97 after 20 epochs with it, 0.53 without).
Neither encoder reads the batch (SCVI's default encode_covariates=False; fastvae's
encode_conditions=False).  fastvae's decoder reads the batch in its output layer too
(inject_conditions=True: a learned log-fold change per batch and gene; SCVI injects the
batch into its decoder's hidden layers, and its output layer reads none).  By default
fastvae then trains on to twice the epochs in the same run (``--more-epochs``), which shows
what its speed buys: its codes mix the batches further and its likelihood improves, at a
training time still below SCVI's.  Differences that remain, each SCVI's default: SCVI's decoder
gives the genes' shares of the library through a softmax (fastvae's gives log-means with the
library as an exposure), its layers have batch normalization and dropout 0.1 (fastvae has
neither), and it loads its minibatches through a PyTorch DataLoader.

Reported: training seconds per epoch (the fit's wall time over its epochs), the held-out
reconstruction log-likelihood per cell (E_q log p(x|z), one draw of z, summed over genes:
SCVI's get_reconstruction_error, fastvae's score_samples(per_column=True) columns summed),
and from the held-out cells' posterior means two classifiers' 5-fold accuracy (a logistic
regression, and 15 nearest neighbours, what batch-mixing scores use) at predicting the
batch (chance 0.5: lower is better corrected) and the cluster (higher is better kept).

With ``--likelihood zinb`` both sides model zero-inflated counts (fastvae's ZINB block,
SCVI's ``gene_likelihood="zinb"``, each with a learned dropout logit per cell and gene) on
the same matrix with planted dropout: each count set to 0 with probability ``--dropout``
(0.3), the library sizes taken after it.

    pip install -c constraints.txt scvi-tools     # constraints.txt: torch==2.13.0
    python benchmarks/bench_scvi.py --json benchmarks/results/scvi_2core.json \\
        --md benchmarks/results/scvi_2core.md
    python benchmarks/bench_scvi.py --likelihood zinb --json benchmarks/results/scvi_zinb_2core.json \\
        --md benchmarks/results/scvi_zinb_2core.md

``--bf16`` adds fastvae in bf16, trained in a process of its own that never imports
PyTorch (SCVI's PyTorch brings GNU OpenMP first, and oneDNN's threads would spin between
products there: bf16 with 2 shards took 0.65 s/epoch in this process against float32's
0.61), in one pass on ``--threads`` threads (``--bf16-shards``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nb_counts import counts  # noqa: E402

KL_WARMUP = 0  # epochs (SCVI's default n_epochs_kl_warmup is 400; see above)


def split(n, seed=0, test_fraction=0.1):
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(test_fraction * n))
    return np.sort(order[k:]), np.sort(order[:k])


def probe(codes, labels):
    """5-fold accuracies (logistic regression, 15 nearest neighbours) of predicting labels
    from latent codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    return [float(cross_val_score(c, codes, labels, cv=5).mean())
            for c in (LogisticRegression(max_iter=2000), KNeighborsClassifier(15))]


def run_fastvae(X, batch, cluster, tr, te, stops, seed, precision="full", shards=2,
                likelihood="nb"):
    """fastvae trained to each epoch count in ``stops`` in turn (one run, continued), a
    row per stop: the training seconds so far, and the held-out scores there.  ``shards``:
    fit's data-parallel shards of a batch (the cpu backend's threads are set by main)."""
    import fastvae
    onehot = np.eye(2, dtype=np.float32)[batch]
    lib = X.sum(1)
    block = {"nb": fastvae.NegBinomial, "zinb": fastvae.ZINB}[likelihood]
    m = fastvae.VAE(likelihood=[block(X.shape[1], exposure=True)], hidden=(128,),
                    latent_dim=10, n_conditions=2, encode_conditions=False,
                    inject_conditions=True, backend="cpu", seed=seed, precision=precision)
    opt = fastvae.Adam(m, lr=1e-3, eps=0.01, weight_decay=1e-6)
    rows, secs, done = [], 0.0, 0
    for stop in stops:
        t0 = time.perf_counter()
        m.fit(X[tr], epochs=stop - done, batch_size=128, optimizer=opt, kl_warmup=KL_WARMUP,
              conditions=onehot[tr], exposure=lib[tr], progress=False, shards=shards)
        secs += time.perf_counter() - t0
        done = stop
        s = m.score_samples(X[te], per_column=True, conditions=onehot[te], exposure=lib[te])
        recon_ll = -float(np.asarray(s.columns, dtype=np.float64).sum(1).mean())
        mu, _ = m.encode(X[te], conditions=onehot[te])
        rows.append({"impl": "fastvae" if precision == "full" else f"fastvae ({precision})",
                     "shards": shards, "epochs": stop, "train_s": secs, "s_per_epoch": secs / stop,
                     "heldout_recon_ll": recon_ll, "batch_acc": probe(mu, batch[te]),
                     "cluster_acc": probe(mu, cluster[te])})
        print(rows[-1], flush=True)
    return rows


def run_scvi(X, batch, cluster, tr, te, epochs, seed, threads, likelihood="nb"):
    import importlib.util
    import anndata
    if importlib.util.find_spec("flax") is None and "optax" not in sys.modules:
        # scvi-tools 1.4.2 imports its JAX training plan when jax and optax are installed
        # but the class it needs only when flax is too (jax + optax alone, bench_step's JAX
        # peer, make `import scvi` fail); it sees no optax this way (this process imports
        # no optax of its own)
        sys.modules["optax"] = None
    import scvi
    scvi.settings.seed = seed
    scvi.settings.num_threads = threads
    scvi.settings.dl_num_workers = 0

    def adata(idx):
        a = anndata.AnnData(X[idx].copy())
        a.obs["batch"] = [f"b{b}" for b in batch[idx]]
        scvi.model.SCVI.setup_anndata(a, batch_key="batch")
        return a
    a_tr, a_te = adata(tr), adata(te)
    m = scvi.model.SCVI(a_tr, n_hidden=128, n_latent=10, n_layers=1, gene_likelihood=likelihood)
    t0 = time.perf_counter()
    m.train(max_epochs=epochs, batch_size=128, train_size=1.0, accelerator="cpu",
            plan_kwargs={"lr": 1e-3, "n_epochs_kl_warmup": KL_WARMUP},
            enable_progress_bar=False)
    secs = time.perf_counter() - t0
    rec = m.get_reconstruction_error(a_te)
    recon_ll = -float(rec["reconstruction_loss"])
    mu = m.get_latent_representation(a_te)
    return {"impl": "scvi-tools SCVI", "epochs": epochs, "train_s": secs,
            "s_per_epoch": secs / epochs, "heldout_recon_ll": recon_ll,
            "batch_acc": probe(mu, batch[te]), "cluster_acc": probe(mu, cluster[te])}


def _row(r):
    return (f"| {r['impl']} | {r['epochs']} | {r['train_s']:.0f} | {r['s_per_epoch']:.2f} | "
            f"{r['heldout_recon_ll']:.1f} | {r['batch_acc'][0]:.3f} / {r['batch_acc'][1]:.3f} | "
            f"{r['cluster_acc'][0]:.3f} / {r['cluster_acc'][1]:.3f} |")


def _data(cells, dropout):
    """The count matrix, its batches and clusters, with ``dropout`` planted (seeded)."""
    X, batch, cluster = counts(cells, 2000, seed=0)
    if dropout:  # planted dropout: each count zeroed with this probability (seeded)
        X[np.random.default_rng(1).random(X.shape) < dropout] = 0
    return X, batch, cluster


def worker(spec):
    """fastvae's rows for ``spec`` (a JSON text: cells, dropout, stops, precision, shards,
    likelihood, threads, kl_warmup), printed as JSON on the last line: run in a process
    that never imports PyTorch (:func:`run_isolated`)."""
    import json
    global KL_WARMUP
    spec = json.loads(spec)
    KL_WARMUP = spec["kl_warmup"]
    warnings.filterwarnings("ignore")
    from fastvae.backends import cpu
    X, batch, cluster = _data(spec["cells"], spec["dropout"])
    tr, te = split(len(X))
    if spec["precision"] == "bf16":
        cpu.onednn.library()  # (loaded first: its OpenMP threads asleep, see onednn.py)
    cpu.set_num_threads(spec["threads"])
    rows = run_fastvae(X, batch, cluster, tr, te, spec["stops"], 0, spec["precision"],
                       spec["shards"], spec["likelihood"])
    waits = cpu.onednn.openmp_waits()
    for row in rows:  # (what oneDNN's threads did between products: "sleeps" or "spins")
        row["openmp"] = None if waits is None else waits[0]
    print(json.dumps(rows), flush=True)


def run_isolated(**spec):
    """:func:`worker`'s rows from a process of its own.  A bf16 run in this benchmark's
    process would load oneDNN after PyTorch's OpenMP, whose threads spin between
    products (fastvae.backends.cpu.onednn); SCVI keeps its process as it is."""
    import json
    import subprocess
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--fastvae-worker",
                        json.dumps(spec)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"the fastvae worker failed:\n{r.stderr[-3000:]}")
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    for row in rows:
        row["process"] = "own"
    return rows


def main(argv=None):
    global KL_WARMUP
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--fastvae-worker":
        worker(argv[1])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=60, help="both sides")
    ap.add_argument("--more-epochs", type=int, default=60,
                    help="fastvae then trains on for this many more epochs (0: no)")
    ap.add_argument("--kl-warmup", type=float, default=KL_WARMUP, help="epochs, both sides")
    ap.add_argument("--threads", type=int, default=2,
                    help="both sides: torch's threads, and fastvae's cpu backend threads")
    ap.add_argument("--shards", type=int, default=None,
                    help="fastvae's data-parallel shards per batch (default: --threads)")
    ap.add_argument("--cells", type=int, default=20_000)
    ap.add_argument("--no-scvi", action="store_true")
    ap.add_argument("--bf16", action="store_true",
                    help="also fastvae with precision='bf16' (a CPU with bf16 units), in a "
                    "process of its own without PyTorch")
    ap.add_argument("--bf16-shards", type=int, default=1,
                    help="the bf16 run's shards (default 1: one pass on every thread, "
                    "oneDNN's threads asleep between products)")
    ap.add_argument("--likelihood", choices=["nb", "zinb"], default="nb",
                    help="both sides: negative binomial, or zero-inflated (with --dropout)")
    ap.add_argument("--dropout", type=float, default=None,
                    help="share of counts set to 0 (default: 0.3 with --likelihood zinb, else 0)")
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    KL_WARMUP = args.kl_warmup
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(args.threads)
    from fastvae.backends import cpu
    shards = args.threads if args.shards is None else args.shards
    before = cpu.get_num_threads()
    cpu.set_num_threads(args.threads)
    try:
        compare(args, shards)
    finally:
        cpu.set_num_threads(before)  # (the smoke test runs this in pytest's process)


def compare(args, shards):
    """Both sides, the table, and the files (see the module docstring)."""
    from fastvae.benchmark.machine import describe, save
    dropout = args.dropout if args.dropout is not None else (0.3 if args.likelihood == "zinb"
                                                             else 0.0)
    X, batch, cluster = _data(args.cells, dropout)
    tr, te = split(len(X))
    lik = args.likelihood
    stops = [args.epochs] + ([args.epochs + args.more_epochs] if args.more_epochs else [])
    rows = run_fastvae(X, batch, cluster, tr, te, stops, 0, shards=shards, likelihood=lik)
    first = rows[0]
    scvi = None
    if not args.no_scvi:
        scvi = run_scvi(X, batch, cluster, tr, te, args.epochs, 0, args.threads, lik)
        print(scvi, flush=True)
        # this shared machine's speed drifts over minutes: fastvae's epochs are timed again
        # after SCVI's, and its seconds per epoch are the mean of the two timings
        again = run_fastvae(X, batch, cluster, tr, te, [max(1, args.epochs // 3)], 0,
                            shards=shards, likelihood=lik)[0]
        first["s_per_epoch_before"] = first["s_per_epoch"]
        first["s_per_epoch_after"] = again["s_per_epoch"]
        first["s_per_epoch"] = 0.5 * (first["s_per_epoch"] + again["s_per_epoch"])
        rows.append(scvi)
    if args.bf16:
        rows += run_isolated(cells=args.cells, dropout=dropout, stops=stops, precision="bf16",
                             shards=args.bf16_shards, likelihood=lik, threads=args.threads,
                             kl_warmup=KL_WARMUP)
    machine = describe()
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, {args.threads} threads; "
             f"torch {machine.get('torch')}; {machine['date']}.  {len(tr)} training cells, "
             f"{len(te)} held out, 2,000 genes, {lik.upper()} likelihood, planted dropout "
             f"{dropout:g}, KL warm-up {KL_WARMUP:g} epochs; fastvae "
             f"with inject_conditions=True and {shards} shards per batch on {args.threads} "
             f"threads.  Rows of one run at more epochs continue it.", "",
             "| implementation | epochs | train s | s/epoch | held-out recon. log-lik./cell | "
             "batch accuracy, logistic / 15-NN (chance 0.5) | cluster accuracy, logistic / "
             "15-NN |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [_row(r) for r in rows]
    if scvi is not None:
        f = first
        lines += ["", f"fastvae per epoch: **{scvi['s_per_epoch'] / f['s_per_epoch']:.2f}x** "
                  f"SCVI's speed (fastvae timed before SCVI: {f['s_per_epoch_before']:.2f} "
                  f"s/epoch, after: {f['s_per_epoch_after']:.2f}; the mean is in the table)."]
        bf = next((r for r in rows if r["impl"] == "fastvae (bf16)"), None)
        if bf is not None:
            lines.append(f"fastvae (bf16, {bf['shards']} shard(s), in a process of its own "
                         f"without PyTorch) per epoch: **{scvi['s_per_epoch'] / bf['s_per_epoch']:.2f}x** "
                         f"SCVI's speed (timed after SCVI, in the same run).")
        for r in rows[1:]:
            if r["impl"].startswith("fastvae") and r is not scvi:
                lines.append(f"{r['impl']}, {r['epochs']} epochs: {r['train_s']:.0f} s of "
                             f"training, {r['train_s'] / scvi['train_s']:.2f} of SCVI's "
                             f"{scvi['epochs']} epochs ({scvi['train_s']:.0f} s).")
    md = "\n".join(lines)
    print(md)
    if args.json or args.md:
        save({"machine": machine, "threads": args.threads, "shards": shards, "rows": rows},
             md, args.json, args.md)


if __name__ == "__main__":
    main()
