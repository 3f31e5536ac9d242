"""One full training step, fastvae (cpu backend) against PyTorch eager, side by side.

The canonical workload is PyTorch's example VAE: 784-400-20-400-784, ReLU, Bernoulli
likelihood, Adam lr 1e-3.  Both sides start from the same weights (copied from fastvae into
PyTorch), see the same batch, and run with the same thread count.  They take turns: each
round times a block of fastvae steps, then a block of PyTorch steps, so that whatever else
the machine does falls on both alike.  Medians per step are reported, with the ratio.

    python benchmarks/bench_step.py                      # batch 32, 128, 512, 2048
    python benchmarks/bench_step.py --batch 128 --rounds 30 --json out.json

Cold start (a fresh process: import, build the model, first training step) is measured with
the Numba cache cold (an empty cache directory) and warm (the same directory again).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from fastvae.benchmark.impls import build, make_batches, train_flop
from fastvae.benchmark.machine import describe, save
from fastvae.benchmark.measure import time_turns

FLOP_PER_ROW = train_flop("canonical", 1)  # forward + backward, per datapoint


def cycling(step, batches):
    """A no-argument step that feeds ``batches`` in turn."""
    state = {"i": 0}

    def run():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        return step(x)

    return run


def bench_batch(B, rounds, threads, compile_=False, block_steps=None):
    names = ["fastvae-cpu", "torch-eager"] + (["torch-compile"] if compile_ else [])
    batches = make_batches(784, B)  # the same 8 batches, in turn, for every implementation
    fns = {n: cycling(build(n, "canonical").train_step, batches) for n in names}
    timed = time_turns(fns, rounds=rounds, target_s=0.25, calls=block_steps)
    med = {k: t for k, (t, _) in timed.items()}
    per_block = {k: c for k, (_, c) in timed.items()}
    row = {"batch": B, "threads": threads, "steps_per_block": per_block, "rounds": rounds,
           "median_ms": {k: 1e3 * v for k, v in med.items()},
           "gflops": {k: FLOP_PER_ROW * B / v / 1e9 for k, v in med.items()},
           "speedup_vs_torch_eager": {k: med["torch-eager"] / v for k, v in med.items()}}
    return row


COLD_START = r"""
import time
t0 = time.perf_counter()
import numpy as np
import fastvae
t1 = time.perf_counter()
m = fastvae.VAE(784, backend="cpu")
opt = fastvae.Adam(m)
x = np.random.default_rng(0).random((128, 784)).astype(np.float32)
m.train_step(x, opt)
t2 = time.perf_counter()
print(t1 - t0, t2 - t0)
"""


def cold_start():
    """Seconds for a fresh process: (import, import + model + first step), Numba cache cold
    then warm.  NUMBA_CACHE_DIR points at a new directory so 'cold' really is."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        for label in ("cold", "warm"):
            r = subprocess.run([sys.executable, "-c", COLD_START], env=env, capture_output=True,
                               text=True, check=True)
            imp, total = map(float, r.stdout.split())
            out[label] = {"import_s": imp, "first_step_total_s": total}
    return out


def markdown(rows, cold, machine):
    impls = list(rows[0]["median_ms"])
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores; threads {rows[0]['threads']}; "
             f"numpy {machine['numpy']}, numba {machine['numba']}, torch {machine.get('torch')}; "
             f"{machine['date']}", "",
             "| batch | " + " | ".join(f"{k} ms" for k in impls) + " | " +
             " | ".join(f"{k} / eager" for k in impls if k != "torch-eager") +
             " | fastvae GFLOP/s |",
             "|---:|" + "---:|" * (2 * len(impls))]
    for r in rows:
        lines.append(f"| {r['batch']} | " + " | ".join(f"{r['median_ms'][k]:.2f}" for k in impls)
                     + " | " + " | ".join(f"**{r['speedup_vs_torch_eager'][k]:.2f}x**"
                                          for k in impls if k != "torch-eager")
                     + f" | {r['gflops']['fastvae-cpu']:.0f} |")
    if cold:
        lines += ["", "Cold start (fresh process: import, model, first training step at batch 128):",
                  "", "| Numba cache | import s | import + first step s |", "|---|---:|---:|"]
        for k, v in cold.items():
            lines.append(f"| {k} | {v['import_s']:.2f} | {v['first_step_total_s']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512, 2048])
    ap.add_argument("--rounds", type=int, default=15, help="alternating timing rounds")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for PyTorch (BLAS uses its default: all cores)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--block-steps", type=int, default=None,
                    help="steps per timed block (default: about 0.25 s worth)")
    ap.add_argument("--no-cold-start", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write a markdown table here")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    rows = []
    for B in a.batch:
        r = bench_batch(B, a.rounds, a.threads, a.compile, a.block_steps)
        rows.append(r)
        print(f"batch {B:5d}: " + "  ".join(f"{k} {v:.3f} ms" for k, v in r["median_ms"].items())
              + "  speedup " + "  ".join(f"{k} {v:.2f}x" for k, v in r["speedup_vs_torch_eager"].items()
                                         if k != "torch-eager"), flush=True)
    cold = None if a.no_cold_start else cold_start()
    machine = describe()
    md = markdown(rows, cold, machine)
    print()
    print(md)
    save({"machine": machine, "workload": "784-400-20-400-784 relu bernoulli adam 1e-3",
          "rows": rows, "cold_start": cold}, md, a.json, a.markdown)


if __name__ == "__main__":
    main()
