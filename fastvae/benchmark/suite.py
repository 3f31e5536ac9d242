"""The benchmark suite behind ``fastvae bench``: workloads, targets and the report.

Workloads (each compares implementations on identical work, taking turns):
training step, inference (encode + decode of a batch), single-row encode latency, one
epoch over a fixed dataset, cold start (fresh processes), and peak memory of a training run.
Every training-step row also reports its GFLOP/s against the machine's own float32
matrix-product throughput, measured in the same run.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import impls as I
from . import measure
from .machine import save


def plan(quick):
    """What to run: a dict of workload -> list of (model, batch), and which
    implementations (torch.compile is slow to compile: quick mode compiles one row)."""
    if quick:
        return {"train": [("canonical", b) for b in (32, 128, 512, 2048)]
                + [("deep", 128), ("deep", 512), ("tiny", 128)],
                "infer": [("canonical", 128)], "latency": [("canonical", 1)],
                "epoch": [("canonical", 128)], "rounds": 5, "epoch_rows": 8192,
                "compile": {("train", "canonical", 128), ("infer", "canonical", 128),
                            ("latency", "canonical", 1)},
                "numpy_max_batch": 128, "memory_steps": 200}
    return {"train": [("canonical", b) for b in (32, 128, 512, 1024, 2048, 4096)]
            + [("deep", b) for b in (32, 128, 512, 2048)]
            + [("tiny", b) for b in (32, 128, 1024, 4096)],
            "infer": [(m, b) for m in I.MODELS for b in (128, 1024)],
            "latency": [(m, 1) for m in I.MODELS],
            "epoch": [("canonical", 128), ("deep", 128), ("tiny", 128)],
            "rounds": 11, "epoch_rows": 16384, "compile": None, "numpy_max_batch": 512,
            "memory_steps": 500}


#: the one row PyTorch's bf16 autocast runs where the CPU has no bfloat16 units (its bf16
#: products are then emulated, hundreds of times slower than float32)
BF16_EMULATED_ROW = ("train", "canonical", 32)


def _impls_for(kind, model, batch, p, names):
    out = []
    for n in names:
        if (n == "torch-bf16" and p.get("bf16_emulated")
                and (kind, model, batch) != BF16_EMULATED_ROW):
            continue
        if n == "torch-compile" and p["compile"] is not None and (kind, model, batch) not in p["compile"]:
            continue
        if n == "fastvae-numpy" and batch > p["numpy_max_batch"]:
            continue
        out.append(n)
    return out


def _epoch_fn(impl, x, batch, rng):
    """One epoch over x in shuffled batches, PyTorch-style for torch, ``fit`` for fastvae."""
    if isinstance(impl, I.FastvaeImpl):
        return lambda: impl.model.fit(x, epochs=1, batch_size=batch, progress=False)

    def run():
        perm = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            impl.train_step(x[np.sort(perm[s:s + batch])])
    return run


def run(quick=True, names=None, log=print):
    """Run the suite; returns the result dict (see :func:`markdown` for its reading)."""
    p = plan(quick)
    names = [n for n in (names or I.ALL) if I.available(n) is None]
    log(f"implementations: {', '.join(names)}")
    res = {"quick": quick, "implementations": names, "rows": [], "machine": None}
    t0 = time.perf_counter()
    res["gemm_peak_gflops"] = measure.gemm_peak()
    res["bf16_gemm_peak_gflops"] = measure.bf16_gemm_peak()
    res["bandwidth_gbs"] = measure.bandwidth()
    log(f"machine limit: float32 matrix products at {res['gemm_peak_gflops']:.0f} GFLOP/s, "
        f"memory at {res['bandwidth_gbs']:.0f} GB/s")
    bf16 = res["bf16_gemm_peak_gflops"]
    p["bf16_emulated"] = measure.bf16_emulated(bf16, res["gemm_peak_gflops"])
    if p["bf16_emulated"] and "torch-bf16" in names:
        log(f"bfloat16 products run at {bf16:.1f} GFLOP/s here (no bf16 units): torch-bf16 "
            f"runs only the {BF16_EMULATED_ROW[1]} model's training step at batch "
            f"{BF16_EMULATED_ROW[2]}")
    for kind in ("train", "infer", "latency", "epoch"):
        for model, batch in p[kind]:
            D, _, Z = I.MODELS[model]
            here = _impls_for(kind, model, batch, p, names)
            built = {n: I.build(n, model) for n in here}
            xs = I.make_batches(D, batch)
            zs = [np.random.default_rng(i).standard_normal((batch, Z)).astype(np.float32)
                  for i in range(8)]
            fns = {}
            if kind == "epoch":
                data = np.vstack(I.make_batches(D, p["epoch_rows"] // 8, seed=1))
            for n, impl in built.items():
                it = iter(range(10 ** 9))
                if kind == "train":
                    fns[n] = (lambda impl=impl, it=it: impl.train_step(xs[next(it) % 8]))
                elif kind == "infer":
                    fns[n] = (lambda impl=impl, it=it: (impl.encode(xs[next(it) % 8]),
                                                        impl.decode(zs[next(it) % 8])))
                elif kind == "latency":
                    fns[n] = (lambda impl=impl, it=it: impl.encode(xs[next(it) % 8]))
                else:
                    fns[n] = _epoch_fn(impl, data, batch, np.random.default_rng(0))
            timed = measure.time_turns(fns, rounds=p["rounds"] if kind != "epoch" else 3,
                                       target_s=0.1 if kind != "epoch" else 0.0,
                                       warmup=3 if kind != "epoch" else 1,
                                       syncs={n: impl.sync for n, impl in built.items()})
            row = {"workload": kind, "model": model, "batch": batch,
                   "median_ms": {n: 1e3 * t for n, (t, _) in timed.items()},
                   "calls_per_block": {n: c for n, (_, c) in timed.items()}}
            if kind == "epoch":
                row["rows"] = p["epoch_rows"]
            if kind == "train":
                flop = I.train_flop(model, batch)
                row["gflops"] = {n: flop / (ms * 1e-3) / 1e9 for n, ms in row["median_ms"].items()}
                row["peak_fraction"] = {n: g / res["gemm_peak_gflops"] for n, g in row["gflops"].items()}
                limit = measure.step_limit_ms(flop, I.n_params(model), res["gemm_peak_gflops"],
                                              res["bandwidth_gbs"])
                row["limit_fraction"] = {n: limit / ms for n, ms in row["median_ms"].items()}
            peers = {n: ms for n, ms in row["median_ms"].items() if n in I.PEERS}
            if peers:
                best = min(peers, key=peers.get)
                row["fastest_peer"] = best
                row["vs_fastest_peer"] = {n: peers[best] / ms for n, ms in row["median_ms"].items()
                                          if n.startswith("fastvae")}
            eager = row["median_ms"].get("torch-eager")
            if eager:
                row["speedup_vs_torch_eager"] = {n: eager / ms for n, ms in row["median_ms"].items()}
            res["rows"].append(row)
            log(_row_line(row))
    # (torch-compile and torch-bf16 start as torch-eager does; JAX's start is not measured)
    cold = [n for n in names if n not in ("torch-compile", "torch-bf16", "jax-jit")]
    res["cold_start"] = measure.cold_starts(cold)
    log("cold start: " + ", ".join(f"{k} {v['total_s']:.2f}s" for k, v in res["cold_start"].items()))
    res["memory"] = {n: measure.peak_memory(n, steps=p["memory_steps"])
                     for n in names if n in ("fastvae-cpu", "fastvae-cuda", "torch-eager")}
    log("peak memory: " + ", ".join(f"{k} {v['peak_rss_mb']:.0f} MB" for k, v in res["memory"].items()))
    res["targets"] = targets(res)
    res["seconds"] = time.perf_counter() - t0
    return res


def _row_line(row):
    parts = [f"{n} {ms:.3f} ms" for n, ms in row["median_ms"].items()]
    return f"{row['workload']:8s} {row['model']:9s} B={row['batch']:<5d} " + ", ".join(parts)


def _find(res, kind, model, batch):
    return next((r for r in res["rows"] if (r["workload"], r["model"], r["batch"]) ==
                 (kind, model, batch)), None)


def targets(res):
    """The issue's CPU targets, each with its measured value and met / MISSED."""
    out = []
    r = _find(res, "train", "canonical", 128)
    if r and "torch-eager" in r["median_ms"] and "fastvae-cpu" in r["median_ms"]:
        s = r["speedup_vs_torch_eager"]["fastvae-cpu"]
        out.append(("fastvae cpu >= 1.5x PyTorch eager, canonical step, batch 128 (aim 2x)",
                    f"{s:.2f}x", s >= 1.5))
        if "torch-compile" in r["median_ms"]:
            c = r["median_ms"]["torch-compile"] / r["median_ms"]["fastvae-cpu"]
            out.append(("fastvae cpu >= 1.0x torch.compile, canonical step, batch 128",
                        f"{c:.2f}x", c >= 1.0))
    trains = [r for r in res["rows"] if r["workload"] == "train" and "torch-eager" in r["median_ms"]
              and "fastvae-cpu" in r["median_ms"]]
    if trains:
        worst = min(trains, key=lambda r: r["speedup_vs_torch_eager"]["fastvae-cpu"])
        s = worst["speedup_vs_torch_eager"]["fastvae-cpu"]
        out.append(("fastvae cpu no slower than PyTorch eager at any training-step row",
                    f"slowest: {s:.2f}x ({worst['model']}, batch {worst['batch']})", s >= 1.0))
    mem = res.get("memory", {})
    if "fastvae-cpu" in mem and "torch-eager" in mem:
        a, b = mem["fastvae-cpu"]["peak_rss_mb"], mem["torch-eager"]["peak_rss_mb"]
        out.append(("peak memory of a training run no more than PyTorch's",
                    f"{a:.0f} MB vs {b:.0f} MB", a <= b))
        nb = mem["fastvae-cpu"]["steady_state_peak_bytes"]
        smallest = 128 * I.MODELS["canonical"][2] * 4  # the smallest activation array
        out.append(("a steady-state fastvae step allocates no arrays (peak bytes allocated "
                    f"during the steps below the smallest activation, {smallest} bytes)",
                    f"{nb} bytes", nb < smallest))
        fb = mem["fastvae-cpu"].get("fit_steady_state_peak_bytes")
        if fb is not None:
            out.append(("a steady-state fit step allocates no arrays, data path included "
                        f"(uint8 data, dynamic binarization; below {smallest} bytes)",
                        f"{fb} bytes", fb < smallest))
    return [{"target": t, "measured": m, "met": bool(ok)} for t, m, ok in out]


# --------------------------------------------------------------------------- report
_TITLES = {"train": "Training step (forward, backward, Adam), ms",
           "infer": "Inference: encode + decode of a batch, ms",
           "latency": "Single-row encode latency, ms",
           "epoch": "One epoch over a fixed dataset, ms"}


def markdown(res):
    m = res["machine"] or {}
    names = res["implementations"]
    th = res.get("threads", {})
    lines = [f"Machine: {m.get('cpu')}, {m.get('cores')} cores"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "")
             + f"; numpy {m.get('numpy')} ({m.get('numpy_blas')}), numba {m.get('numba')}, "
             f"torch {m.get('torch')}; {m.get('date')}.  Threads: "
             + ", ".join(f"{k} {v}" for k, v in th.items()) + ".  "
             f"Float32 matrix-product limit: {res['gemm_peak_gflops']:.0f} GFLOP/s"
             + (f"; bfloat16 (PyTorch): {res['bf16_gemm_peak_gflops']:.1f} GFLOP/s"
                if res.get("bf16_gemm_peak_gflops") else "")
             + (f"; memory {res['bandwidth_gbs']:.0f} GB/s" if res.get("bandwidth_gbs") else "")
             + ".", ""]
    for kind in ("train", "infer", "latency", "epoch"):
        rows = [r for r in res["rows"] if r["workload"] == kind]
        if not rows:
            continue
        cols = [n for n in names if any(n in r["median_ms"] for r in rows)]
        lines += [f"### {_TITLES[kind]}", "",
                  "| model | batch | " + " | ".join(cols) + " | "
                  + " | ".join(f"{n} vs eager" for n in cols if n != "torch-eager") + " |",
                  "|---|---:|" + "---:|" * (2 * len(cols) - ("torch-eager" in cols)) ]
        for r in rows:
            ms = [f"{r['median_ms'][n]:.3f}" if n in r["median_ms"] else "–" for n in cols]
            sp = r.get("speedup_vs_torch_eager", {})
            ratio = [f"**{sp[n]:.2f}x**" if n in sp else "–" for n in cols if n != "torch-eager"]
            lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(ms) + " | "
                         + " | ".join(ratio) + " |")
        if any("fastest_peer" in r for r in rows):
            lines += ["", "fastvae against the fastest peer of each row:", "",
                      "| model | batch | fastest peer | " + " | ".join(
                          f"{n} vs fastest peer" for n in cols if n.startswith("fastvae")) + " |",
                      "|---|---:|---|" + "---:|" * sum(n.startswith("fastvae") for n in cols)]
            for r in rows:
                if "fastest_peer" not in r:
                    continue
                v = r["vs_fastest_peer"]
                lines.append(f"| {r['model']} | {r['batch']} | {r['fastest_peer']} | " + " | ".join(
                    f"**{v[n]:.2f}x**" if n in v else "–" for n in cols if n.startswith("fastvae"))
                    + " |")
        if kind == "train":
            lines += ["", "Achieved GFLOP/s (share of the float32 product limit; share of the "
                      "step limit: the products at that limit plus Adam's bytes at the "
                      "measured bandwidth):", "",
                      "| model | batch | " + " | ".join(cols) + " |",
                      "|---|---:|" + "---:|" * len(cols)]
            for r in rows:
                lim = r.get("limit_fraction", {})
                cells = [f"{r['gflops'][n]:.0f} ({r['peak_fraction'][n]:.0%}; "
                         f"{lim.get(n, float('nan')):.0%})"
                         if n in r["gflops"] else "–" for n in cols]
                lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
        lines.append("")
    if res.get("cold_start"):
        lines += _table("Cold start (fresh process: import, build the model, first encode)",
                        ["implementation", "import s", "total s", "with interpreter start s"],
                        [[k, f"{v['import_s']:.2f}", f"{v['total_s']:.2f}", f"{v['wall_s']:.2f}"]
                         for k, v in res["cold_start"].items()])
    if res.get("memory"):
        show = lambda v: "–" if v is None else str(v)  # noqa: E731
        lines += _table("Peak resident memory of a training run (canonical, batch 128)",
                        ["implementation", "peak RSS MB",
                         "bytes allocated during steady-state train_step steps",
                         "during steady-state fit steps"],
                        [[k, f"{v['peak_rss_mb']:.0f}", show(v.get("steady_state_peak_bytes")),
                          show(v.get("fit_steady_state_peak_bytes"))]
                         for k, v in res["memory"].items()])
    if res.get("targets"):
        lines += ["### Targets", "", "| target | measured | |", "|---|---|---|"]
        for t in res["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'met' if t['met'] else '**MISSED**'} |")
        lines.append("")
    return "\n".join(lines)


def _table(title, header, rows):
    """Lines of a markdown section: a title, a table (first column left-aligned), a blank."""
    return ([f"### {title}", "", "| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
            + ["| " + " | ".join(r) + " |" for r in rows] + [""])


def plot(res, path):
    """Training-step throughput (samples/s) against batch size, canonical model, one line
    per implementation (PNG).  Needs matplotlib."""
    from ..viz import figure
    rows = [r for r in res["rows"] if r["workload"] == "train" and r["model"] == "canonical"]
    fig = figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for n in res["implementations"]:
        pts = [(r["batch"], r["batch"] / (r["median_ms"][n] * 1e-3)) for r in rows
               if n in r["median_ms"]]
        if pts:
            b, s = zip(*pts)
            ax.plot(b, s, "o-", label=n)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples / s")
    m = res["machine"] or {}
    ax.set_title(f"canonical VAE training step — {m.get('cpu')}, {m.get('cores')} cores",
                 fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # (a report without canonical training rows)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write(res, out_dir, stem):
    """Write <stem>.json, <stem>.md and <stem>.png (when matplotlib is there) to out_dir."""
    base = os.path.join(out_dir, stem)
    paths = save(res, markdown(res), base + ".json", base + ".md")
    try:
        paths.append(plot(res, base + ".png"))
    except ImportError:
        pass
    return paths
