"""Canonical training steps on one GPU: fastvae cuda against PyTorch eager and torch.compile.

    python benchmarks/bench_gpu.py [--batches 128 512 ...] [--out benchmarks/results]

Identical weights (fastvae's, copied into PyTorch), Adam lr 1e-3, the same 8 binary
batches already on the device for every implementation, and the implementations take turns
(measure.time_turns) with a device synchronisation closing every timed block.  fastvae's
step does not read its loss (it stays on the device), and neither does PyTorch's.
Writes bench_gpu_<gpu>.json and .md (with the machine's description) to --out.
Targets (issue 4): at least 5x PyTorch eager at batch 128 and no slower than eager at any
batch size; aim 10x eager and ahead of torch.compile at batch 128.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fastvae.benchmark import impls as I
from fastvae.benchmark import measure
from fastvae.benchmark.machine import describe, save

BATCHES = (128, 512, 2048, 8192, 32768, 65536)


def build(batch, torch_device, compile_torch=True):
    """{name: (step fn, sync fn)} for the canonical model at ``batch``."""
    import torch

    import fastvae

    D, hidden, Z = I.MODELS["canonical"]
    xs = I.make_batches(D, batch)
    model = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend="cuda", seed=0)
    opt = fastvae.Adam(model, lr=1e-3)
    bk = model.kernels
    xs_fast = [bk.asarray(x) for x in xs]
    it = iter(range(10 ** 12))

    def fast_step():
        cache = model.forward(xs_fast[next(it) % 8], validate=False)
        opt.step(model.backward(cache))

    cuda_rt = getattr(bk.device().xp, "cuda", None)  # None on the tests' emulated device
    fns = {"fastvae-cuda": (fast_step, (lambda: cuda_rt.Device().synchronize()) if cuda_rt
                            else (lambda: None))}
    ref = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend="numpy", seed=0)
    xs_torch = [torch.from_numpy(x).to(torch_device) for x in xs]
    sync_torch = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    for name in ("torch-eager", "torch-compile") if compile_torch else ("torch-eager",):
        module = I.torch_vae(ref).to(torch_device)
        step = I.torch_train_step(module)
        if name == "torch-compile":
            step = torch.compile(step)
        tit = iter(range(10 ** 12))
        fns[name] = ((lambda step=step, tit=tit: step(xs_torch[next(tit) % 8])), sync_torch)
    return fns


def run(batches, torch_device, rounds=7, compile_torch=True, log=print):
    rows = []
    for b in batches:
        fns = build(b, torch_device, compile_torch)
        timed = measure.time_turns({k: f for k, (f, _) in fns.items()}, rounds=rounds,
                                   syncs={k: s for k, (_, s) in fns.items()})
        ms = {k: 1e3 * t for k, (t, _) in timed.items()}
        row = {"batch": b, "median_ms": ms,
               "speedup_vs_torch_eager": {k: ms["torch-eager"] / v for k, v in ms.items()},
               "gflops": {k: I.train_flop("canonical", b) / (v * 1e-3) / 1e9 for k, v in ms.items()}}
        rows.append(row)
        log(f"batch {b:6d}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items())
            + f"  ({row['speedup_vs_torch_eager']['fastvae-cuda']:.2f}x eager)")
    return rows


def targets(rows):
    by = {r["batch"]: r for r in rows}
    out = []
    if 128 in by:
        s = by[128]["speedup_vs_torch_eager"]["fastvae-cuda"]
        out.append(("must: >= 5x torch eager at batch 128", s >= 5, f"{s:.2f}x"))
        out.append(("aim: >= 10x torch eager at batch 128", s >= 10, f"{s:.2f}x"))
        if "torch-compile" in by[128]["median_ms"]:
            c = by[128]["median_ms"]["torch-compile"] / by[128]["median_ms"]["fastvae-cuda"]
            out.append(("aim: ahead of torch.compile at batch 128", c > 1, f"{c:.2f}x"))
    worst = min(r["speedup_vs_torch_eager"]["fastvae-cuda"] for r in rows)
    out.append(("must: no slower than torch eager at any batch", worst >= 1, f"worst {worst:.2f}x"))
    return out


def markdown(res):
    names = list(res["rows"][0]["median_ms"])
    lines = [f"# Canonical training step on {res['machine'].get('gpu', 'a GPU')}", "",
             f"Machine: `{json.dumps(res['machine'])}`", "",
             "| batch | " + " | ".join(f"{n} (ms)" for n in names)
             + " | fastvae vs eager | fastvae GFLOP/s |",
             "|---:|" + "---:|" * (len(names) + 2)]
    for r in res["rows"]:
        lines.append(f"| {r['batch']} | " + " | ".join(f"{r['median_ms'][n]:.3f}" for n in names)
                     + f" | {r['speedup_vs_torch_eager']['fastvae-cuda']:.2f}x"
                     + f" | {r['gflops']['fastvae-cuda']:,.0f} |")
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {t} | {'yes' if ok else 'NO'} | {v} |" for t, ok, v in res["targets"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    from fastvae.backends import cuda_status
    import torch

    if cuda_status() or not torch.cuda.is_available():
        sys.exit(f"needs a GPU with CuPy and a CUDA build of PyTorch: "
                 f"{cuda_status() or 'torch.cuda.is_available() is False'}")
    rows = run(a.batches, "cuda", a.rounds, not a.no_compile)
    res = {"machine": describe(), "rows": rows}
    res["targets"] = targets(rows)
    gpu = re.sub(r"[^a-z0-9]+", "_", str(res["machine"].get("gpu", "gpu")).lower()).strip("_")
    md = markdown(res)
    save(res, md, Path(a.out) / f"bench_gpu_{gpu}.json", Path(a.out) / f"bench_gpu_{gpu}.md")
    print(md)


if __name__ == "__main__":
    main()
