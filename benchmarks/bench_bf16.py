"""precision="bf16" against float32 on Fashion-MNIST: quality over seeds, and epoch time.

The canonical model (784-400-20-400-784, ReLU, Bernoulli on the [0, 1] pixels), Adam lr
1e-3, batch 128, the same seed (initial weights, noise, order) for both precisions.  The
two precisions take turns epoch by epoch, so the machine's other load falls on both.  After
the last epoch each reports the test negative ELBO (z sampled, the same evaluation noise;
evaluated at the model's own precision and, for bf16, also at full precision: the float32
masters are the model).  Quality is "within noise" when the mean difference over seeds is
inside the spread that the seeds themselves give float32.

    apt-get install dataset-fashion-mnist; pip install 'fastvae[bf16]'
    python benchmarks/bench_bf16.py                       # 3 seeds x 10 epochs
    python benchmarks/bench_bf16.py --json out.json --markdown out.md
"""
from __future__ import annotations

import argparse
import statistics
import time

from fastvae.benchmark.machine import describe, save


def run(epochs=10, seeds=(0, 1, 2), data="fashion-mnist", steps=None, backend="cpu",
        quiet=False):
    """Train float32 and bf16 models side by side for each seed; returns the result dict.
    ``steps`` (optional) cuts every epoch to that many batches (for a quick check)."""
    import fastvae
    from fastvae import data as fdata

    train, test = fdata.load(data)
    xtr, xte = train.to_array(), test.to_array()
    if steps:
        xtr = xtr[: steps * 128]
    runs = []
    for seed in seeds:
        models = {p: fastvae.VAE(784, hidden=(400,), latent_dim=20, backend=backend, seed=seed,
                                 precision=p) for p in ("full", "bf16")}
        secs = {p: [] for p in models}
        for ep in range(epochs):
            for p, m in models.items():
                t = time.perf_counter()
                m.fit(xtr, epochs=1, batch_size=128, progress=False)
                secs[p].append(time.perf_counter() - t)
        full, bf16 = models["full"], models["bf16"]
        row = {"seed": seed, "test_full": full.elbo(xte, seed=1).neg_elbo,
               "test_bf16": bf16.elbo(xte, seed=1).neg_elbo,
               "epoch_s_full": statistics.median(secs["full"]),
               "epoch_s_bf16": statistics.median(secs["bf16"])}
        bf16.precision = "full"
        row["test_bf16_read_full"] = bf16.elbo(xte, seed=1).neg_elbo
        runs.append(row)
        if not quiet:
            print(f"seed {seed}: test -ELBO float32 {row['test_full']:.2f}  bf16 "
                  f"{row['test_bf16']:.2f} (at full precision {row['test_bf16_read_full']:.2f});"
                  f"  epoch s {row['epoch_s_full']:.2f} / {row['epoch_s_bf16']:.2f}",
                  flush=True)
    f = [r["test_full"] for r in runs]
    b = [r["test_bf16"] for r in runs]
    d = [y - x for x, y in zip(f, b)]
    sd = statistics.stdev(f) if len(f) > 1 else float("nan")
    return {"benchmark": "bf16 quality", "epochs": epochs, "batch": 128, "backend": backend,
            "train_rows": len(xtr), "runs": runs,
            "mean_full": statistics.mean(f), "mean_bf16": statistics.mean(b),
            "sd_full_over_seeds": sd, "mean_diff": statistics.mean(d),
            "within_noise": abs(statistics.mean(d)) <= sd if len(f) > 1 else None,
            "median_epoch_s": {"full": statistics.median(r["epoch_s_full"] for r in runs),
                               "bf16": statistics.median(r["epoch_s_bf16"] for r in runs)},
            "machine": describe()}


def markdown(res):
    m = res["machine"]
    flags = ", ".join(m.get("cpu_flags") or [])
    med = res["median_epoch_s"]
    lines = [f"Fashion-MNIST, 784-400-20 Bernoulli VAE, Adam 1e-3, batch 128, {res['epochs']} "
             f"epochs, {res['train_rows']} training rows; backend {res['backend']}.  Machine: "
             f"{m['cpu']} ({flags}), {m['cores']} cores; {m['date']}.", "",
             "| seed | float32 test -ELBO | bf16 test -ELBO | bf16 model read at full precision "
             "| float32 epoch s | bf16 epoch s |", "|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        lines.append(f"| {r['seed']} | {r['test_full']:.2f} | {r['test_bf16']:.2f} | "
                     f"{r['test_bf16_read_full']:.2f} | {r['epoch_s_full']:.2f} | "
                     f"{r['epoch_s_bf16']:.2f} |")
    lines += ["", f"Mean test -ELBO: float32 {res['mean_full']:.2f}, bf16 {res['mean_bf16']:.2f} "
              f"(difference {res['mean_diff']:+.2f} nats; float32's spread over seeds, one "
              f"standard deviation: {res['sd_full_over_seeds']:.2f}).  Median epoch: float32 "
              f"{med['full']:.2f} s, bf16 {med['bf16']:.2f} s ({med['full'] / med['bf16']:.2f}x)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an IDX dir")
    ap.add_argument("--steps", type=int, default=None, help="batches per epoch (a quick run)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--markdown", help="write a markdown table here")
    a = ap.parse_args(argv)
    res = run(a.epochs, tuple(a.seeds), a.data, a.steps, a.backend)
    md = markdown(res)
    print(md)
    save(res, md, a.json, a.markdown)


if __name__ == "__main__":
    main()
