"""One full training step, fastvae (cpu backend) against its peers, side by side: PyTorch
eager, PyTorch under bfloat16 autocast, torch.compile (--compile) and JAX jit (when jax and
optax are installed: pip install jax optax).

The canonical workload is PyTorch's example VAE: 784-400-20-400-784, ReLU, Bernoulli
likelihood, Adam lr 1e-3; the second is the deep model 784-1024-1024-64 at batch 512.  Every
side starts from the same weights (fastvae's), sees the same batches, and runs with the same
thread count.  They take turns: each round times a block of each, so that whatever else the
machine does falls on all alike.  Medians per step are reported, with fastvae against the
fastest peer and against the machine's limit for the step (the products at the measured
float32 GEMM rate plus Adam's bytes at the measured bandwidth).  Each implementation runs in
a process of its own (:class:`fastvae.benchmark.measure.RemoteStep`), one at a time: in one
process, the thread pools of the libraries that took the previous turns slowed the next
(fastvae's bf16 step at batch 128: 3.41 ms in one process, 2.18 in its own).

    python benchmarks/bench_step.py --compile            # batch 32, 128, 512, 2048 + deep 512
    python benchmarks/bench_step.py --batch 128 --rounds 30 --json out.json
    python benchmarks/bench_step.py --compile --shards 2  # also fastvae cut into 2 shards
    python benchmarks/bench_step.py --in-process          # every implementation in this one

Cold start (a fresh process: import, build the model, first training step) is measured with
the Numba cache cold (an empty cache directory) and warm (the same directory again).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from fastvae.benchmark.impls import (MODELS, available, build, make_batches, n_params, sharded,
                                     train_flop)
from fastvae.benchmark.machine import describe, save
from fastvae.benchmark.measure import (RemoteStep, bandwidth, bf16_emulated, bf16_gemm_peak,
                                       fastvae_bf16_peak, gemm_peak, step_limit_ms, time_turns,
                                       time_turns_remote)


def cycling(step, batches):
    """A no-argument step that feeds ``batches`` in turn."""
    state = {"i": 0}

    def run():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        return step(x)

    return run


def peers(compile_):
    """The peers that can run here: PyTorch eager and bf16 autocast, torch.compile when
    asked, JAX jit when installed."""
    names = ["torch-eager", "torch-bf16"] + (["torch-compile"] if compile_ else []) + ["jax-jit"]
    return [n for n in names if available(n) is None]


def bench_batch(B, rounds, threads, names, limits, model="canonical", block_steps=None,
                shards=None, isolate=False):
    """One row: every implementation's median step at batch B.  ``shards``: also fastvae
    (float32 and bf16) with each batch cut into that many shards on as many threads.
    ``isolate``: each implementation in a process of its own (taking turns as before)."""
    D = MODELS[model][0]
    ours = ["fastvae-cpu"] + (["fastvae-bf16"] if available("fastvae-bf16") is None else [])
    if shards:
        ours += [sharded(n, shards) for n in ours]
    if isolate:
        remote = {}
        try:
            for n in ours + names:
                remote[n] = RemoteStep(n, model, B, threads)
            timed = time_turns_remote(remote, rounds=rounds, target_s=0.25,
                                      calls=block_steps)
        finally:
            for r in remote.values():
                r.close()
    else:
        batches = make_batches(D, B)  # the same 8 batches, in turn, for every implementation
        built = {n: build(n, model) for n in ours + names}
        fns = {n: cycling(impl.train_step, batches) for n, impl in built.items()}
        timed = time_turns(fns, rounds=rounds, target_s=0.25, calls=block_steps,
                           syncs={n: impl.sync for n, impl in built.items()},
                           enters={n: impl.enter for n, impl in built.items()
                                   if hasattr(impl, "enter")})
    med = {k: t for k, (t, _) in timed.items()}
    flop = train_flop(model, B)
    limit_ms = step_limit_ms(flop, n_params(model), limits["gemm_gflops"],
                             limits["bandwidth_gbs"])
    # fastvae float32 against the float32 peers; its bf16 against PyTorch's bf16 autocast
    peer_ms = {k: 1e3 * v for k, v in med.items()
               if not k.startswith("fastvae") and k != "torch-bf16"}
    fastest = min(peer_ms, key=peer_ms.get) if peer_ms else None
    sh = {}
    if shards:  # the sharded steps against the same peers as the one-pass ones
        fs, bs = sharded("fastvae-cpu", shards), sharded("fastvae-bf16", shards)
        sh = {"shards": shards,
              "shards_vs_fastest_peer": None if fastest is None else
              peer_ms[fastest] / (1e3 * med[fs]),
              "shards_bf16_vs_torch_bf16": med["torch-bf16"] / med[bs]
              if bs in med and "torch-bf16" in med else None,
              "shards_bf16_vs_float32": med[fs] / med[bs] if bs in med else None}
    row = {"model": model, "batch": B, "threads": threads, "rounds": rounds, **sh,
           "isolated": bool(isolate),
           "steps_per_block": {k: c for k, (_, c) in timed.items()},
           "median_ms": {k: 1e3 * v for k, v in med.items()},
           "gflops": {k: flop / v / 1e9 for k, v in med.items()},
           "limit_ms": limit_ms,
           "limit_fraction": {k: limit_ms / (1e3 * v) for k, v in med.items()},
           # the bf16 step's limit: its products at the measured bf16 rate (fastvae's path)
           "bf16_limit_ms": None if not limits.get("fastvae_bf16_gflops") else step_limit_ms(
               flop, n_params(model), limits["fastvae_bf16_gflops"], limits["bandwidth_gbs"]),
           "bf16_vs_float32": med["fastvae-cpu"] / med["fastvae-bf16"]
           if "fastvae-bf16" in med else None,
           "bf16_vs_torch_bf16": med["torch-bf16"] / med["fastvae-bf16"]
           if "fastvae-bf16" in med and "torch-bf16" in med else None,
           "fastest_peer": fastest,
           "vs_fastest_peer": None if fastest is None else peer_ms[fastest] / (1e3 * med["fastvae-cpu"]),
           "speedup_vs_torch_eager": {k: med["torch-eager"] / v for k, v in med.items()}
           if "torch-eager" in med else {}}
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


def markdown(rows, cold, machine, limits):
    impls = list(rows[0]["median_ms"])
    has_bf16 = "fastvae-bf16" in impls
    n_sh = rows[0].get("shards")
    bf16 = limits.get("bf16_gflops")
    flags = machine.get("cpu_flags")
    cpu = machine["cpu"] + (f" ({', '.join(flags) or 'no AVX2'})" if flags is not None else "")
    lines = [f"Machine: {cpu}, {machine['cores']} cores; threads {rows[0]['threads']}; "
             f"numpy {machine['numpy']}, numba {machine['numba']}, torch {machine.get('torch')}, "
             f"jax {machine.get('jax')}; {machine['date']}"
             + ("; each implementation in a process of its own, taking turns"
                if rows[0].get("isolated") else "") + ".  Measured limits: float32 GEMM "
             f"{limits['gemm_gflops']:.0f} GFLOP/s, bfloat16 GEMM (PyTorch) "
             + (f"{bf16:.1f} GFLOP/s" if bf16 else "n/a")
             + (f", bfloat16 GEMM (fastvae: oneDNN) {limits['fastvae_bf16_gflops']:.0f} GFLOP/s"
                if limits.get("fastvae_bf16_gflops") else "")
             + f", memory {limits['bandwidth_gbs']:.0f} GB/s.", "",
             "| model | batch | " + " | ".join(f"{k} ms" for k in impls)
             + " | fastest float32 peer | fastvae vs fastest float32 peer | fastvae share of the "
             "step limit |"
             + (" bf16 vs fastvae float32 | bf16 vs torch-bf16 | bf16 share of its limit |"
                if has_bf16 else "")
             + (f" {n_sh} shards: float32 vs fastest float32 peer |" if n_sh else "")
             + (f" {n_sh} shards: bf16 vs torch-bf16 | {n_sh} shards: bf16 vs float32 |"
                if n_sh and has_bf16 else ""),
             "|---|---:|" + "---:|" * len(impls) + "---|---:|---:|"
             + ("---:|---:|---:|" if has_bf16 else "") + ("---:|" if n_sh else "")
             + ("---:|---:|" if n_sh and has_bf16 else "")]
    for r in rows:
        ms = [f"{r['median_ms'][k]:.2f}" if k in r["median_ms"] else "–" for k in impls]
        vs = "–" if r["vs_fastest_peer"] is None else f"**{r['vs_fastest_peer']:.2f}x**"
        line = (f"| {r['model']} | {r['batch']} | " + " | ".join(ms)
                + f" | {r['fastest_peer']} | {vs} | {r['limit_fraction']['fastvae-cpu']:.0%} |")
        if has_bf16:
            tb = r["bf16_vs_torch_bf16"]
            lim = r["bf16_limit_ms"]
            line += (f" {r['bf16_vs_float32']:.2f}x | " + ("–" if tb is None else f"{tb:.2f}x")
                     + " | " + ("–" if not lim else
                                f"{lim / r['median_ms']['fastvae-bf16']:.0%}") + " |")
        if n_sh:
            v = r["shards_vs_fastest_peer"]
            line += " " + ("–" if v is None else f"**{v:.2f}x**") + " |"
            if has_bf16:
                tb = r["shards_bf16_vs_torch_bf16"]
                line += (" " + ("–" if tb is None else f"**{tb:.2f}x**")
                         + f" | {r['shards_bf16_vs_float32']:.2f}x |")
        lines.append(line)
    if cold:
        lines += ["", "Cold start (fresh process: import, model, first training step at batch 128):",
                  "", "| Numba cache | import s | import + first step s |", "|---|---:|---:|"]
        for k, v in cold.items():
            lines.append(f"| {k} | {v['import_s']:.2f} | {v['first_step_total_s']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512, 2048])
    ap.add_argument("--deep-batch", type=int, nargs="*", default=[512],
                    help="batches of the deep model (784-1024-1024-64)")
    ap.add_argument("--rounds", type=int, default=15, help="alternating timing rounds")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for PyTorch (BLAS uses its default: all cores)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--block-steps", type=int, default=None,
                    help="steps per timed block (default: about 0.25 s worth)")
    ap.add_argument("--shards", type=int, default=None,
                    help="also time fastvae with each batch cut into this many shards, one "
                         "thread of the cpu backend each (fit's shards)")
    ap.add_argument("--in-process", action="store_true",
                    help="every implementation in this process (the default runs each in a "
                         "process of its own, taking turns: no two libraries' thread pools "
                         "in one process)")
    ap.add_argument("--no-cold-start", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write a markdown table here")
    a = ap.parse_args(argv)
    if a.shards is not None and a.shards < 1:
        ap.error(f"--shards must be 1 or more (1: no shards), got {a.shards}")
    if a.rounds < 1:
        ap.error(f"--rounds must be 1 or more, got {a.rounds}")
    import torch

    torch.set_num_threads(a.threads)
    limits = {"gemm_gflops": gemm_peak(), "bf16_gflops": bf16_gemm_peak(),
              "fastvae_bf16_gflops": fastvae_bf16_peak(), "bandwidth_gbs": bandwidth()}
    print("limits: " + ", ".join(f"{k} {v:.1f}" for k, v in limits.items() if v), flush=True)
    names = peers(a.compile)
    # without bfloat16 units PyTorch emulates bf16 products hundreds of times slower than
    # float32: its autocast is then timed at the smallest batch only, and said so
    slow_bf16 = bf16_emulated(limits["bf16_gflops"], limits["gemm_gflops"])
    work = [("canonical", B) for B in a.batch] + [("deep", B) for B in a.deep_batch]
    rows = []
    for model, B in work:
        here = [n for n in names if not (n == "torch-bf16" and slow_bf16 and
                                         (model, B) != ("canonical", min(a.batch)))]
        r = bench_batch(B, a.rounds, a.threads, here, limits, model, a.block_steps,
                        a.shards if a.shards and a.shards > 1 else None, not a.in_process)
        rows.append(r)
        print(f"{model} batch {B:5d}: " + "  ".join(f"{k} {v:.3f} ms" for k, v in
                                                  r["median_ms"].items())
              + f"  vs fastest peer ({r['fastest_peer']}) {r['vs_fastest_peer']:.2f}x", flush=True)
    cold = None if a.no_cold_start else cold_start()
    machine = describe()
    md = markdown(rows, cold, machine, limits)
    if slow_bf16 and "torch-bf16" in names:
        md += (f"\n\nPyTorch's bf16 autocast ran at batch {min(a.batch)} only: this CPU has no "
               f"bfloat16 units (no AVX512_BF16, no AMX), so PyTorch emulates bf16 products "
               f"({limits['bf16_gflops']:.1f} GFLOP/s against {limits['gemm_gflops']:.0f} for "
               f"float32).")
    print()
    print(md)
    save({"machine": machine, "limits": limits, "bf16_emulated": slow_bf16,
          "workload": "784-400-20-400-784 and 784-1024-1024-64, relu bernoulli adam 1e-3",
          "rows": rows, "cold_start": cold}, md, a.json, a.markdown)


if __name__ == "__main__":
    main()
