"""Data-parallel training on one machine: 1 process x T threads against T processes x 1 thread.

The canonical model (784-400-20-400-784, ReLU, Bernoulli, Adam, float32, the cpu backend)
trains one epoch of random binary rows at a global batch of 128, 512 and 2048, as

- ``1x<T>``: one process, BLAS with T threads (``fit`` without ``comm``);
- ``<T>x1``: ``mpiexec -n T``, BLAS with one thread per process (``fit(comm=...)``).

Every run trains a first epoch (Numba compile, buffers) and times the second (fit's
``train_seconds``, the loop alone).  Inside the data-parallel runs two parts of each step
are timed on rank 0: the step's small reduction (``Distributed.agree``: flags, loss sums;
it waits for the slowest rank, so it holds the ranks' imbalance) and then the Allreduce of
the flat gradient (``Distributed.allreduce_``: the ranks arrive together, so it is the cost
of moving and summing the gradient).  The two modes take turns for ``--rounds`` rounds;
medians.  The bytes reduced per step are the parameter count x 4.

    python benchmarks/bench_distributed.py            # writes benchmarks/results/distributed_<n>core.*
    python benchmarks/bench_distributed.py --batches 128 --rounds 1 --out /tmp/r
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)


def worker(batch, rows, out_path):
    """One run (in a process started by :func:`run_once`); rank 0 writes the result."""
    import numpy as np

    import fastvae
    from fastvae.training import distributed as D
    from fastvae.benchmark.impls import MODELS

    comm = D.world() if D.detected_size() > 1 else None
    spent = {"agree": 0.0, "allreduce": 0.0, "calls": 0}

    def timed(name, f):
        def run(self, *a, **k):
            t = time.perf_counter()
            r = f(self, *a, **k)
            spent[name] += time.perf_counter() - t
            spent["calls"] += name == "allreduce"
            return r
        return run
    D.Distributed.agree = timed("agree", D.Distributed.agree)
    D.Distributed.allreduce_ = timed("allreduce", D.Distributed.allreduce_)

    dim, hidden, latent = MODELS["canonical"]
    x = (np.random.default_rng(0).random((rows, dim)) < 0.3).astype(np.float32)
    model = fastvae.VAE(dim, hidden=hidden, latent_dim=latent, backend="cpu", seed=0)
    model.fit(x, epochs=1, batch_size=batch, progress=False, comm=comm)  # compile, allocate
    spent.update(agree=0.0, allreduce=0.0, calls=0)
    h = model.fit(x, epochs=1, progress=False, comm=comm)
    steps = h[-1]["steps"]
    if comm is None or comm.Get_rank() == 0:
        res = {"batch": batch, "steps": steps, "step_s": h[-1]["train_seconds"] / steps,
               "parameters": int(model.n_parameters),
               "ranks": 1 if comm is None else comm.Get_size()}
        if comm is not None:
            res.update(agree_s=spent["agree"] / steps, allreduce_s=spent["allreduce"] / steps,
                       allreduce_calls=spent["calls"])
        with open(out_path, "w") as f:
            json.dump(res, f)


def run_once(mode, threads, batch, rows, tmp):
    """One process x threads, or threads processes x 1 thread: the worker's result."""
    per_proc = threads if mode == "single" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(per_proc),
           "OPENBLAS_NUM_THREADS": str(per_proc), "MKL_NUM_THREADS": str(per_proc),
           "NUMBA_NUM_THREADS": str(per_proc)}
    out = os.path.join(tmp, f"{mode}-{batch}.json")
    cmd = [sys.executable, HERE, "--worker", str(batch), str(rows), out]
    if mode == "mpi":
        cmd = [mpiexec(), "-n", str(threads), *cmd]
    else:  # a launcher's variables would make the worker look for MPI
        for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
            env.pop(var, None)
    subprocess.run(cmd, env=env, check=True, timeout=1800)
    with open(out) as f:
        return json.load(f)


def mpiexec():
    import shutil
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which("mpiexec", path=path)
    if found is None:
        raise SystemExit("mpiexec not found: pip install 'fastvae[mpi]'")
    return found


def ring_allreduce_s(nbytes, ranks, gbit_s, latency_s=5e-6):
    """The textbook ring Allreduce time: 2(N-1) steps, each moving nbytes/N over a link of
    ``gbit_s`` with ``latency_s`` per message (bandwidth-bound for these sizes)."""
    if ranks < 2:
        return 0.0
    return 2 * (ranks - 1) * (latency_s + nbytes / ranks / (gbit_s * 1e9 / 8))


def markdown(res):
    m = res["machine"]
    T = res["threads"]
    lines = [f"Canonical model ({res['network']}, float32, cpu backend, Adam), one epoch of "
             f"{res['rows']} random binary rows; step = fit's loop time / steps, median of "
             f"{res['rounds']} alternating rounds.  Machine: {m['cpu']}, {m['cores']} cores; "
             f"{res['mpi']}.", "",
             f"| global batch | 1x{T} step (ms) | {T}x1 step (ms) | {T}x1 vs 1x{T} | "
             "gradient Allreduce (ms) | its share | agree, incl. waiting (ms) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["results"]:
        s, p = r["single_step_s"], r["mpi_step_s"]
        lines.append(f"| {r['batch']} | {s * 1e3:.2f} | {p * 1e3:.2f} | {s / p:.2f}x | "
                     f"{r['allreduce_s'] * 1e3:.3f} | {r['allreduce_s'] / p:.1%} | "
                     f"{r['agree_s'] * 1e3:.3f} |")
    nbytes = res["bytes_per_step"]
    lines += ["", f"Bytes reduced per step: {nbytes:,} ({res['parameters']:,} float32 "
              "parameters).  (> 1 in the ratio column: the processes are faster.)"]
    lines += ["", *scaling_lines(res)]
    return "\n".join(lines) + "\n"


def scaling_lines(res, per_rank=(128, 512, 2048), ranks=(2, 8, 64), links=(10, 100)):
    """Expected scaling over N machines like this one, on paper: per-row compute c from the
    largest measured batch (one process, all threads), the ring Allreduce of the gradient
    over a link of 10 or 100 Gbit/s, no overlap of the two.  Speedup over one machine at
    the same global batch: N b c / (b c + t_allreduce)."""
    big = max(res["results"], key=lambda r: r["batch"])
    c = big["single_step_s"] / big["batch"]
    nbytes = res["bytes_per_step"]
    out = [f"Expected scaling over N machines like this one (a model, not a measurement): "
           f"compute {c * 1e6:.1f} us per row (the measured step at batch {big['batch']}), "
           f"ring Allreduce of {nbytes / 1e6:.2f} MB = 2(N-1) messages of 1/N of it (5 us "
           "latency each), no overlap; speedup over one machine at the same global batch = "
           "N b c / (b c + Allreduce), b the rows per machine.", "",
           "| rows per machine b | compute (ms) | " + " | ".join(
               f"N={n}, {g} Gbit/s: Allreduce ms, speedup" for g in links for n in ranks)
           + " |", "|---:|---:|" + "---:|" * (len(links) * len(ranks))]
    for b in per_rank:
        cells = []
        for g in links:
            for n in ranks:
                t = ring_allreduce_s(nbytes, n, g)
                cells.append(f"{t * 1e3:.2f}, {n * b * c / (b * c + t):.1f}x")
        out.append(f"| {b} | {b * c * 1e3:.1f} | " + " | ".join(cells) + " |")
    return out


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        b, rows, out = sys.argv[2:5]
        return worker(int(b), int(rows), out)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="T: the threads of the single process, the processes of the MPI run")
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 512, 2048])
    ap.add_argument("--rows", type=int, default=40960, help="rows of the timed epoch")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "results"))
    ap.add_argument("--name", default=None, help="file stem (default distributed_<n>core)")
    a = ap.parse_args(argv)
    from fastvae.benchmark.impls import MODELS
    from fastvae.benchmark.machine import describe, save

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0, load0 = time.perf_counter(), os.getloadavg()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        for rnd in range(a.rounds):
            for b in a.batches:
                for mode in (("single", "mpi") if rnd % 2 == 0 else ("mpi", "single")):
                    r = run_once(mode, a.threads, b, a.rows, tmp)
                    runs.setdefault((b, mode), []).append(r)
                    log(f"round {rnd + 1} batch {b} {mode}: step {r['step_s'] * 1e3:.2f} ms"
                        + (f", allreduce {r['allreduce_s'] * 1e3:.3f} ms" if mode == "mpi"
                           else ""))
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    results = []
    for b in a.batches:
        s, p = runs[(b, "single")], runs[(b, "mpi")]
        results.append({"batch": b, "single_step_s": med(s, "step_s"),
                        "mpi_step_s": med(p, "step_s"), "allreduce_s": med(p, "allreduce_s"),
                        "agree_s": med(p, "agree_s"), "runs": {"single": s, "mpi": p}})
    import mpi4py
    mpi4py.rc.initialize = False  # (this process only reads the library's version)
    from mpi4py import MPI
    params = results[0]["runs"]["single"][0]["parameters"]
    dim, hidden, latent = MODELS["canonical"]
    res = {"benchmark": "data parallel: 1 process x T threads vs T processes x 1 thread",
           "network": "-".join(map(str, (dim, *hidden, latent, *hidden[::-1], dim))),
           "threads": a.threads, "rows": a.rows, "rounds": a.rounds, "parameters": params,
           "bytes_per_step": 4 * params,
           "mpi": f"mpi4py {mpi4py.__version__}, "
                  + " ".join(MPI.Get_library_version().splitlines()[0].split()),
           "results": results, "machine": describe(), "loadavg_before": load0,
           "loadavg_after": os.getloadavg(), "seconds": time.perf_counter() - t0}
    md = markdown(res)
    print(md)
    stem = os.path.join(a.out, a.name or f"distributed_{os.cpu_count()}core")
    save(res, md, stem + ".json", stem + ".md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
