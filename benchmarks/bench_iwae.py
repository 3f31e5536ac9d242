"""The importance-weighted objectives on Fashion-MNIST: fastvae against PyTorch autograd.

For each objective (the ELBO with one sample, IWAE with K = 5 and 50, IWAE-DReG with K = 5
and 50) the canonical model (784-400-20-400-784, ReLU, Bernoulli, Adam 1e-3, batch 128) is
trained on dynamically binarised Fashion-MNIST by fastvae (``fit``) and by PyTorch (the same
loss written with autograd; DReG's encoder gradient from the usual surrogate with q's
parameters detached), from the same initial weights, taking turns epoch by epoch.  Then both
are evaluated on the same statically binarised test images: the test NLL (importance-
weighted, k = 5000, with its standard error over the rows), the test ELBO and the active
units; the k = 5000 evaluation is timed on both sides (PyTorch: ``torch.no_grad``, batched
the same way).

    apt-get install dataset-fashion-mnist
    python benchmarks/bench_iwae.py                            # the full table, ~1 hour
    python benchmarks/bench_iwae.py --epochs 1 --steps 20 --nll-rows 50 --k 100   # smoke
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np

from fastvae.benchmark.impls import torch_vae
from fastvae.benchmark.machine import describe, save

CONFIGS = [("elbo", 1), ("iwae", 5), ("iwae", 50), ("iwae-dreg", 5), ("iwae-dreg", 50)]
LOG_2PI = math.log(2 * math.pi)


def _log_w(tmodel, xb, mu, logvar, eps, detach_q=False):
    """log w (K, B) of the samples z = mu + sigma eps, with torch's own densities."""
    import torch
    import torch.nn.functional as F

    K, B, Z = eps.shape
    sigma = torch.exp(0.5 * logvar)
    z = mu[None] + sigma[None] * eps
    logits = tmodel.decode_logits(z.reshape(K * B, Z)).reshape(K, B, -1)
    log_px = -F.binary_cross_entropy_with_logits(logits, xb.expand(K, -1, -1),
                                                  reduction="none").sum(-1)
    log_pz = (-0.5 * z * z).sum(-1) - 0.5 * Z * LOG_2PI
    m, s = (mu.detach(), sigma.detach()) if detach_q else (mu, sigma)
    log_q = (-0.5 * ((z - m[None]) / s[None]) ** 2 - torch.log(s[None])).sum(-1) - 0.5 * Z * LOG_2PI
    return log_px + log_pz - log_q


def torch_step(tmodel, opt, xb, objective, K, gen):
    """One step of the objective, averaged over the batch, with autograd; returns the loss."""
    import torch

    opt.zero_grad(set_to_none=True)
    mu, raw = tmodel.encode(xb)
    logvar = torch.clamp(raw, -30.0, 20.0)
    eps = torch.randn((K,) + mu.shape, generator=gen, dtype=mu.dtype)
    if objective == "elbo":
        import torch.nn.functional as F
        z = mu + torch.exp(0.5 * logvar) * eps[0]
        rec = F.binary_cross_entropy_with_logits(tmodel.decode_logits(z), xb, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + torch.expm1(logvar) - logvar)
        loss = (rec + kl) / xb.shape[0]
        loss.backward()
    else:
        lw = _log_w(tmodel, xb, mu, logvar, eps)
        loss = -(torch.logsumexp(lw, 0) - math.log(K)).mean()
        if objective == "iwae":
            loss.backward()
        else:  # DReG: decoder from the IWAE loss, encoder from the surrogate
            enc = list(tmodel.enc.parameters()) + list(tmodel.head.parameters())
            dec = list(tmodel.dec.parameters()) + list(tmodel.out.parameters())
            gd = torch.autograd.grad(loss, dec, retain_graph=True)
            lw_stop = _log_w(tmodel, xb, mu, logvar, eps, detach_q=True)
            wt = torch.softmax(lw_stop, 0).detach()
            ge = torch.autograd.grad(-(wt ** 2 * lw_stop).sum(0).mean(), enc)
            for p, g in zip(dec + enc, gd + ge):
                p.grad = g
    opt.step()
    return float(loss.detach())


def torch_epoch(tmodel, opt, x, objective, K, gen, batch=128):
    import torch

    perm = torch.randperm(x.shape[0], generator=gen)
    total = 0.0
    for s in range(0, x.shape[0], batch):
        xb = torch.bernoulli(x[perm[s:s + batch]], generator=gen)  # dynamic binarisation
        total += torch_step(tmodel, opt, xb, objective, K, gen) * xb.shape[0]
    return total / x.shape[0]


def torch_nll(tmodel, x, k, gen, rows_per_batch=100, chunk_rows=8192):
    """The importance-weighted estimate of -log p(x) per row: the same chunking as fastvae's
    (rows_per_batch rows, at most chunk_rows decoder rows a pass), under no_grad."""
    import torch

    out = []
    c = max(1, min(k, chunk_rows // rows_per_batch))
    with torch.no_grad():
        for s in range(0, x.shape[0], rows_per_batch):
            xb = x[s:s + rows_per_batch]
            mu, raw = tmodel.encode(xb)
            logvar = torch.clamp(raw, -30.0, 20.0)
            top = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64)
            tot = torch.zeros(xb.shape[0], dtype=torch.float64)
            for j in range(0, k, c):
                eps = torch.randn((min(c, k - j),) + mu.shape, generator=gen, dtype=mu.dtype)
                lw = _log_w(tmodel, xb, mu, logvar, eps).double()
                new = torch.maximum(top, lw.max(0).values)
                tot = tot * torch.exp(top - new) + torch.exp(lw - new).sum(0)
                top = new
            out.append(-(top + torch.log(tot) - math.log(k)))
    return torch.cat(out).numpy()


def torch_elbo_and_active(tmodel, x):
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        mu, raw = tmodel.encode(x)
        logvar = torch.clamp(raw, -30.0, 20.0)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1), dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = F.binary_cross_entropy_with_logits(tmodel.decode_logits(z), x, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + torch.expm1(logvar) - logvar)
        active = int((mu.var(0) > 0.01).sum())
    return float(rec + kl) / x.shape[0], active


def _binarised(x, seed):
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)


def run(epochs=10, steps=None, nll_rows=1000, k=5000, configs=CONFIGS, threads=None, seed=0,
        data="fashion-mnist", quiet=False):
    import torch

    import fastvae
    from fastvae import data as fdata

    if threads:
        torch.set_num_threads(threads)
    train, test = fdata.load(data)
    xtr = train.to_array()
    if steps:
        xtr = xtr[: steps * 128]
    xte = _binarised(test.to_array(), 12345)
    xnll = xte[:nll_rows]
    txtr, txte, txnll = (torch.from_numpy(a) for a in (xtr, xte, xnll))
    results = []
    for objective, K in configs:
        model = fastvae.VAE(784, hidden=(400,), latent_dim=20, backend="cpu", seed=seed,
                            objective=objective, n_samples=K)
        tmodel = torch_vae(model)
        topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        t_f, t_t = [], []
        for ep in range(epochs):
            t = time.perf_counter()
            model.fit(xtr, epochs=1, batch_size=128, binarize="dynamic", progress=False)
            t_f.append(time.perf_counter() - t)
            t = time.perf_counter()
            torch_epoch(tmodel, topt, txtr, objective, K, gen)
            t_t.append(time.perf_counter() - t)
            if not quiet:
                print(f"{objective} K={K} epoch {ep + 1}: fastvae {t_f[-1]:.1f} s, "
                      f"PyTorch {t_t[-1]:.1f} s", flush=True)
        t = time.perf_counter()
        ll = model.log_likelihood(xnll, k=k, seed=seed)
        t_ll_f = time.perf_counter() - t
        t = time.perf_counter()
        tnll = torch_nll(tmodel, txnll, k, torch.Generator().manual_seed(seed))
        t_ll_t = time.perf_counter() - t
        t_elbo, t_active = torch_elbo_and_active(tmodel, txte)
        diff = -ll.per_row - tnll
        row = {"objective": objective, "K": K,
               "fastvae": {"nll": ll.nll, "nll_stderr": ll.stderr,
                           "test_neg_elbo": model.elbo(xte).neg_elbo,
                           "active_units": model.diagnostics(xte).active_units,
                           "median_epoch_s": statistics.median(t_f), "nll_eval_s": t_ll_f},
               "torch": {"nll": float(tnll.mean()),
                         "nll_stderr": float(tnll.std(ddof=1) / math.sqrt(len(tnll))),
                         "test_neg_elbo": t_elbo, "active_units": t_active,
                         "median_epoch_s": statistics.median(t_t), "nll_eval_s": t_ll_t},
               "nll_gap": float(diff.mean()),
               "nll_gap_paired_stderr": float(diff.std(ddof=1) / math.sqrt(len(diff)))}
        results.append(row)
        if not quiet:
            print(json.dumps(row), flush=True)
    return {"benchmark": "fashion-mnist importance-weighted objectives", "epochs": epochs,
            "train_rows": len(xtr), "nll_rows": len(xnll), "k": k,
            "threads": torch.get_num_threads(), "rows": results, "machine": describe()}


def markdown(res):
    m = res["machine"]
    lines = [f"Fashion-MNIST (dynamically binarised; test images binarised once), "
             f"784-400-20 Bernoulli VAE, Adam 1e-3, batch 128, {res['epochs']} epochs over "
             f"{res['train_rows']} rows, the same initial weights on both sides.  Test NLL: "
             f"importance-weighted, k = {res['k']}, first {res['nll_rows']} test images, "
             f"± its standard error over the images.  Machine: {m['cpu']}, {m['cores']} "
             f"cores; {res['threads']} threads; {m['date']}.", "",
             "| objective | K | NLL fastvae | NLL PyTorch | gap (paired s.e.) | -ELBO fastvae "
             "| -ELBO PyTorch | active fastvae | active PyTorch | epoch s fastvae | epoch s "
             "PyTorch | k-eval s fastvae | k-eval s PyTorch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        f, t = r["fastvae"], r["torch"]
        lines.append(
            f"| {r['objective']} | {r['K']} | {f['nll']:.2f} ± {f['nll_stderr']:.2f} | "
            f"{t['nll']:.2f} ± {t['nll_stderr']:.2f} | {r['nll_gap']:+.2f} "
            f"({r['nll_gap_paired_stderr']:.2f}) | {f['test_neg_elbo']:.2f} | "
            f"{t['test_neg_elbo']:.2f} | {f['active_units']} | {t['active_units']} | "
            f"{f['median_epoch_s']:.2f} | {t['median_epoch_s']:.2f} | {f['nll_eval_s']:.1f} | "
            f"{t['nll_eval_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=None, help="cut every epoch to this many batches")
    ap.add_argument("--nll-rows", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args(argv)
    res = run(a.epochs, a.steps, a.nll_rows, a.k, threads=a.threads, seed=a.seed)
    md = markdown(res)
    print(md)
    save(res, md, a.json, a.markdown)


if __name__ == "__main__":
    main()
