"""Do the one-likelihood kernels (likelihood.cu and its twins) still pay for themselves
beside the block kernels (blocks.cu), which can run the same models (issue 30)?

The same model two ways on the cpu backend: ``VAE(784, likelihood="bernoulli")`` against
``VAE(likelihood=[Bernoulli(784)])``, and a Gaussian with a learned scale per column both
ways.  Each round times 200 training steps (after 20 warm-up steps) of each side in turn;
the medians over the rounds are reported, with block / dense.

    python benchmarks/bench_dense_vs_blocks.py --json benchmarks/results/dense_vs_blocks.json \\
        --md benchmarks/results/dense_vs_blocks.md
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fastvae
from fastvae.benchmark.machine import describe, save
from fastvae.core.blocks import Bernoulli, Gaussian


def step_ms(model, X, B, n=200, warm=20):
    """Median milliseconds of a training step of ``model`` on batches of B rows of X."""
    opt = fastvae.Adam(model)
    ts = []
    for i in range(n + warm):
        x = X[(i * B) % (len(X) - B):][:B]
        t = time.perf_counter()
        model.train_step(x, opt)
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts[warm:])


def cases(rng):
    Xb = (rng.random((4096, 784)) < 0.3).astype(np.float32)
    Xg = rng.standard_normal((4096, 50)).astype(np.float32)
    return {
        "Bernoulli, 784-400-20, batch 128": (
            lambda: fastvae.VAE(784, hidden=(400,), latent_dim=20, backend="cpu"),
            lambda: fastvae.VAE(likelihood=[Bernoulli(784)], hidden=(400,), latent_dim=20,
                                backend="cpu"), Xb, 128),
        "Gaussian (a learned scale per column), 50-64-64-16, batch 256": (
            lambda: fastvae.VAE(50, hidden=(64, 64), latent_dim=16, likelihood="gaussian",
                                obs_scale="per_pixel", backend="cpu"),
            lambda: fastvae.VAE(likelihood=[Gaussian(50, scale="per_column")],
                                hidden=(64, 64), latent_dim=16, backend="cpu"), Xg, 256)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    rows = {}
    for name, (dense, block, X, B) in cases(np.random.default_rng(0)).items():
        d, b = dense(), block()
        td, tb = [], []
        for _ in range(args.rounds):
            td.append(step_ms(d, X, B))
            tb.append(step_ms(b, X, B))
        rows[name] = {"dense_ms": statistics.median(td), "block_ms": statistics.median(tb)}
        rows[name]["block_over_dense"] = rows[name]["block_ms"] / rows[name]["dense_ms"]
    machine = describe()
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores; {machine['date']}.  "
             f"cpu backend, median ms per training step over {args.rounds} alternating "
             "rounds of 200 steps.", "",
             "| model | one-likelihood kernels | block kernels | block / dense |",
             "|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['dense_ms']:.3f} | {r['block_ms']:.3f} | "
                     f"{r['block_over_dense']:.2f} |")
    md = "\n".join(lines)
    print(md)
    if args.json or args.md:
        save({"machine": machine, "rounds": args.rounds, "rows": rows}, md, args.json,
             args.md)


if __name__ == "__main__":
    main()
