"""A training step of a column-block model, fastvae (cpu backend) against the same model in
PyTorch eager and torch.compile, side by side (issue 19's benchmark).

Two workloads, at the sizes of the tools people use:

- ``tvae``: ctgan's TVAE on ggplot2's diamonds layout: 7 numeric columns (Gaussian, a
  learned scale per column) and 3 categorical ones (5, 7 and 8 classes), 2x128 hidden, latent
  128, batch 500.  The PyTorch model is written as TVAE writes it: one-hot inputs, a softmax
  cross-entropy per categorical column, a Gaussian term per numeric column.
- ``scvi``: scvi-tools' SCVI: 2,000 negative-binomial genes with a library size (the
  exposure) and a 2-level batch condition on encoder and decoder, 1x128 hidden, latent 10,
  batch 128; counts from benchmarks/nb_counts.py.  The PyTorch model reads log1p(counts)
  and the batch one-hot, and scores the counts with scvi-tools' log_nb_positive formula
  (lgamma, logs), a dispersion per gene.

Every side starts from the same weights (fastvae's), sees the same batches, uses Adam at
lr 1e-3 and the same thread count.  They take turns (fastvae.benchmark.measure.time_turns);
medians are reported, with fastvae against the fastest peer and the fraction of the
machine's limit for the step (its products at the measured float32 GEMM rate plus Adam's
bytes at the measured bandwidth; the likelihood's transcendental work is not in that limit).

    python benchmarks/bench_blocks.py --compile --json benchmarks/results/blocks_2core.json
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastvae.benchmark.impls import torch_linear  # noqa: E402
from fastvae.benchmark.machine import describe, save  # noqa: E402
from fastvae.benchmark.measure import bandwidth, gemm_peak, step_limit_ms, time_turns  # noqa: E402

WORKLOADS = {
    "tvae": dict(hidden=(128, 128), latent=128, batch=500),
    "scvi": dict(hidden=(128,), latent=10, batch=128),
}


def make_model(name, seed=0):
    import fastvae
    from fastvae import Categorical, Gaussian, NegBinomial
    w = WORKLOADS[name]
    if name == "tvae":
        lik, C = [Gaussian(7, scale="per_column"), Categorical([5, 7, 8])], 0
    else:
        lik, C = [NegBinomial(2000, exposure=True)], 2
    return fastvae.VAE(likelihood=lik, hidden=w["hidden"], latent_dim=w["latent"],
                       n_conditions=C, backend="cpu", seed=seed)


def make_batches(name, n=8, seed=0):
    """n batches: (X, conditions or None, exposure or None), float32."""
    rng = np.random.default_rng(seed)
    B = WORKLOADS[name]["batch"]
    out = []
    if name == "tvae":
        for _ in range(n):
            X = np.column_stack([rng.normal(size=(B, 7)), rng.integers(0, 5, B),
                                 rng.integers(0, 7, B), rng.integers(0, 8, B)])
            out.append((X.astype(np.float32), None, None))
        return out
    from nb_counts import counts
    X, batch, _ = counts(n * B, 2000, seed=seed)
    for i in range(n):
        c = X[i * B:(i + 1) * B].astype(np.float32)
        out.append((c, np.eye(2, dtype=np.float32)[batch[i * B:(i + 1) * B]], c.sum(1)))
    return out


def flop_and_params(name):
    w = WORKLOADS[name]
    if name == "tvae":
        enc_in, out, C = 7 + 20, 7 + 20, 0
    else:
        enc_in, out, C = 2000 + 2, 2000, 2
    enc = [enc_in, *w["hidden"]]
    dec = [w["latent"] + C, *w["hidden"][::-1], out]
    sizes = [(a, b) for a, b in zip(enc, enc[1:])] + [(enc[-1], 2 * w["latent"])] + \
        [(a, b) for a, b in zip(dec, dec[1:])]
    weights = sum(a * b for a, b in sizes)
    return 6 * w["batch"] * weights, weights + sum(b for _, b in sizes) + (7 if name == "tvae" else 2000)


def torch_model(name, model):
    """The workload in PyTorch, with fastvae ``model``'s weights (for the tvae workload the
    first layer's one-hot rows come after the numeric ones, as fastvae lays them out)."""
    import torch
    import torch.nn.functional as F

    p = {k: torch.tensor(np.array(v)) for k, v in model.parameters().items()}
    Z = model.latent_dim

    linear = torch_linear
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.ModuleList([linear(p[f"enc.{i}.W"], p[f"enc.{i}.b"])
                                            for i in range(len(model.enc_hidden))])
            self.head = linear(p["enc.head.W"], p["enc.head.b"])
            self.dec = torch.nn.ModuleList([linear(p[f"dec.{j}.W"], p[f"dec.{j}.b"])
                                            for j in range(len(model.dec_hidden))])
            self.out = linear(p["dec.out.W"], p["dec.out.b"])
            extra = "dec.logscale" if name == "tvae" else "dec.log_theta"
            self.extra = torch.nn.Parameter(p[extra].clone())

        def forward(self, x_in, cond):
            h = x_in
            for lin in self.enc:
                h = torch.relu(lin(h))
            head = self.head(h)
            mu, logvar = head[:, :Z], head[:, Z:]
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            g = z if cond is None else torch.cat([z, cond], 1)
            for lin in self.dec:
                g = torch.relu(lin(g))
            return self.out(g), mu, logvar

    module = M()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)

    if name == "tvae":
        def step(x_num, onehot, codes, cond, lib):
            opt.zero_grad(set_to_none=True)
            out, mu, logvar = module(torch.cat([x_num, onehot], 1), None)
            ls = -6.0 + F.softplus(module.extra + 6.0)
            rec = (0.5 * (out[:, :7] - x_num) ** 2 * torch.exp(-2 * ls) + ls).sum() \
                + 7 * x_num.shape[0] * 0.5 * np.log(2 * np.pi)
            o = 7
            for k, K in enumerate((5, 7, 8)):
                rec = rec + F.cross_entropy(out[:, o:o + K], codes[:, k], reduction="sum")
                o += K
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (rec + kl) / x_num.shape[0]
            loss.backward()
            opt.step()
            return loss
    else:
        def step(x, onehot, codes, cond, lib):
            opt.zero_grad(set_to_none=True)
            out, mu, logvar = module(torch.cat([torch.log1p(x), cond], 1), cond)
            m = torch.exp(out) * lib[:, None]
            theta = torch.exp(module.extra)
            eps = 1e-8  # scvi-tools' log_nb_positive
            log_theta_mu_eps = torch.log(theta + m + eps)
            ll = (theta * (torch.log(theta + eps) - log_theta_mu_eps)
                  + x * (torch.log(m + eps) - log_theta_mu_eps)
                  + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (-ll.sum() + kl) / x.shape[0]
            loss.backward()
            opt.step()
            return loss
    return step


def torch_inputs(name, batch):
    import torch
    X, cond, lib = batch
    t = torch.from_numpy
    if name == "tvae":
        codes = X[:, 7:].astype(np.int64)
        onehot = np.concatenate([np.eye(K, dtype=np.float32)[codes[:, k]]
                                 for k, K in enumerate((5, 7, 8))], 1)
        return (t(np.ascontiguousarray(X[:, :7])), t(onehot), t(codes), None, None)
    return (t(X), None, None, t(cond), t(lib))


def bench(name, rounds, compile_, threads):
    import fastvae
    import torch

    batches = make_batches(name)
    model = make_model(name)
    opt = fastvae.Adam(model, lr=1e-3)
    rows = [model.compose(X, cond, lib) for X, cond, lib in batches]
    fns = {}
    state = {"i": 0}

    def fv():
        state["i"] += 1
        return model.train_step(rows[state["i"] % len(rows)], opt)
    fns["fastvae-cpu"] = fv
    tin = [torch_inputs(name, b) for b in batches]
    ref = make_model(name)
    modes = ["eager"] + (["compile"] if compile_ else [])
    for mode in modes:
        step = torch_model(name, ref)
        if mode == "compile":
            import torch._inductor.config as inductor_cfg
            inductor_cfg.compile_threads = 1
            step = torch.compile(step)
        counter = {"i": 0}

        def run(step=step, counter=counter):
            counter["i"] += 1
            return step(*tin[counter["i"] % len(tin)])
        fns[f"torch-{mode}"] = run
    timed = time_turns(fns, rounds=rounds, target_s=0.3)
    return {k: 1e3 * t for k, (t, _) in timed.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--compile", action="store_true", help="also torch.compile")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    import torch
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    limits = {"gemm_gflops": gemm_peak(), "bandwidth_gbs": bandwidth()}
    rows = []
    for name in args.workload:
        ms = bench(name, args.rounds, args.compile, threads)
        flop, n_params = flop_and_params(name)
        limit = step_limit_ms(flop, n_params, limits["gemm_gflops"], limits["bandwidth_gbs"])
        peers = {k: v for k, v in ms.items() if k != "fastvae-cpu"}
        fastest = min(peers, key=peers.get)
        rows.append({"workload": name, **WORKLOADS[name], "median_ms": ms,
                     "fastest_peer": fastest, "vs_fastest_peer": peers[fastest] / ms["fastvae-cpu"],
                     "vs_torch_eager": ms["torch-eager"] / ms["fastvae-cpu"],
                     "limit_ms": limit,
                     "limit_fraction": {k: limit / v for k, v in ms.items()}})
        print(rows[-1], flush=True)
    machine = describe()
    res = {"machine": machine, "limits": limits, "threads": threads, "rows": rows}
    impls = list(rows[0]["median_ms"])
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores; threads {threads}; torch "
             f"{machine.get('torch')}; {machine['date']}.  Measured: float32 GEMM "
             f"{limits['gemm_gflops']:.0f} GFLOP/s, memory {limits['bandwidth_gbs']:.0f} GB/s.",
             "", "| workload | batch | " + " | ".join(f"{k} ms" for k in impls)
             + " | fastvae vs fastest peer | vs torch eager | fastvae share of the step limit |",
             "|---|---:|" + "---:|" * len(impls) + "---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['batch']} | "
                     + " | ".join(f"{r['median_ms'][k]:.2f}" for k in impls)
                     + f" | **{r['vs_fastest_peer']:.2f}x** ({r['fastest_peer']}) | "
                     f"{r['vs_torch_eager']:.2f}x | {r['limit_fraction']['fastvae-cpu']:.0%} |")
    md = "\n".join(lines)
    print(md)
    if args.json or args.md:
        save(res, md, args.json, args.md)


if __name__ == "__main__":
    main()
