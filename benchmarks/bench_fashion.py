"""Quality and epoch time on Fashion-MNIST: fastvae against PyTorch's VAE example.

The canonical model (784-400-20-400-784, ReLU, Bernoulli likelihood on the [0, 1] pixels,
no binarization), Adam lr 1e-3, batch 128, the same initial weights on both sides (copied
from fastvae into PyTorch).  PyTorch is trained exactly as its example does (loss summed
over the batch, a fresh permutation every epoch, z sampled in training and in testing);
fastvae trains through ``model.fit``.  The two take turns epoch by epoch, so the machine's
other load falls on both; each epoch's wall time covers only the training loop (batch
gathering included), and after it both report the test negative ELBO, z sampled, in nats.

    apt-get install dataset-fashion-mnist
    python benchmarks/bench_fashion.py                     # 10 epochs
    python benchmarks/bench_fashion.py --epochs 2 --json out.json --markdown out.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from fastvae.benchmark.impls import torch_vae
from fastvae.benchmark.machine import describe, save


def torch_epoch(tmodel, opt, x, batch, gen):
    """One epoch of PyTorch's example loop over the tensor x; returns the mean loss."""
    import torch
    import torch.nn.functional as F

    tmodel.train()
    total = 0.0
    perm = torch.randperm(x.shape[0], generator=gen)
    for s in range(0, x.shape[0], batch):
        xb = x[perm[s:s + batch]]
        opt.zero_grad(set_to_none=True)
        logits, mu, logvar = tmodel(xb)
        rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = rec + kl
        loss.backward()
        opt.step()
        total += loss.item()
    return total / x.shape[0]


def torch_test(tmodel, x, batch=1000):
    """Test negative ELBO (z sampled, as the example's test loop does), nats/datapoint."""
    import torch
    import torch.nn.functional as F

    tmodel.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            xb = x[s:s + batch]
            logits, mu, logvar = tmodel(xb)
            total += float(F.binary_cross_entropy_with_logits(logits, xb, reduction="sum"))
            total += float(-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()))
    return total / x.shape[0]


def run(epochs=10, threads=None, data="fashion-mnist", seed=0, steps=None, quiet=False):
    """Train both side by side; returns the result dict.  ``steps`` (optional) cuts every
    epoch to that many batches (the shortened version the tests use)."""
    import torch

    import fastvae
    from fastvae import data as fdata

    if threads:
        torch.set_num_threads(threads)
    train, test = fdata.load(data)
    xtr, xte = train.to_array(), test.to_array()
    if steps:
        xtr = xtr[: steps * 128]
    model = fastvae.VAE(784, hidden=(400,), latent_dim=20, backend="cpu", seed=seed)
    tmodel = torch_vae(model)
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    txtr, txte = torch.from_numpy(xtr), torch.from_numpy(xte)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rows = []
    for ep in range(1, epochs + 1):
        t = time.perf_counter()
        h = model.fit(xtr, epochs=1, batch_size=128, progress=False)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        torch_train = torch_epoch(tmodel, topt, txtr, 128, gen)
        t_torch = time.perf_counter() - t
        row = {"epoch": ep, "fastvae_test": model.elbo(xte).neg_elbo,
               "torch_test": torch_test(tmodel, txte),
               "fastvae_train": h[-1]["train_neg_elbo"], "torch_train": torch_train,
               "fastvae_epoch_s": t_fast, "torch_epoch_s": t_torch}
        rows.append(row)
        if not quiet:
            print(f"epoch {ep:2d}  test -ELBO fastvae {row['fastvae_test']:7.2f}  torch "
                  f"{row['torch_test']:7.2f}   epoch s fastvae {t_fast:6.2f}  torch "
                  f"{t_torch:6.2f}", flush=True)
    last = rows[-1]
    return {"benchmark": "fashion-mnist quality", "epochs": epochs, "batch": 128,
            "threads": torch.get_num_threads(), "train_rows": len(xtr), "rows": rows,
            "test_gap_nats": last["fastvae_test"] - last["torch_test"],
            "median_epoch_s": {"fastvae": statistics.median(r["fastvae_epoch_s"] for r in rows),
                               "torch": statistics.median(r["torch_epoch_s"] for r in rows)},
            "machine": describe()}


def markdown(res):
    m = res["machine"]
    med = res["median_epoch_s"]
    lines = [f"Fashion-MNIST, 784-400-20 Bernoulli VAE, Adam 1e-3, batch 128, "
             f"{res['train_rows']} training rows, same initial weights.  Machine: {m['cpu']}, "
             f"{m['cores']} cores; {res['threads']} threads; {m['date']}.", "",
             "| epoch | fastvae test -ELBO | PyTorch test -ELBO | fastvae epoch | PyTorch epoch |",
             "|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['epoch']} | {r['fastvae_test']:.2f} | {r['torch_test']:.2f} | "
                     f"{r['fastvae_epoch_s']:.2f} s | {r['torch_epoch_s']:.2f} s |")
    lines += ["", f"Final gap (fastvae - PyTorch): {res['test_gap_nats']:+.2f} nats.  Median "
              f"epoch: fastvae {med['fastvae']:.2f} s, PyTorch {med['torch']:.2f} s "
              f"({med['torch'] / med['fastvae']:.2f}x)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for PyTorch (BLAS uses its default: all cores)")
    ap.add_argument("--data", default="fashion-mnist", help="'fashion-mnist' or an IDX dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--markdown", help="write a markdown table here")
    a = ap.parse_args(argv)
    res = run(a.epochs, a.threads, a.data, a.seed)
    md = markdown(res)
    print(md)
    save(res, md, a.json, a.markdown)


if __name__ == "__main__":
    main()
