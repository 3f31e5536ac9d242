"""Measurements: alternating timings, the machine's matrix-product limit, cold start and
peak memory (the last two in fresh processes)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def time_block(fn, n, sync=None):
    """Seconds per call of ``fn`` over n calls in a row (then ``sync``, a GPU's wait)."""
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if sync is not None:
        sync()  # a GPU block ends when its queued work has finished, not when it was queued
    return (time.perf_counter() - t) / n


def time_turns(fns, rounds=7, target_s=0.1, warmup=3, pause_s=0.3, calls=None, syncs=None,
               enters=None):
    """Median seconds per call of each no-argument callable in ``fns`` (name -> fn).

    The callables take turns: every round times one block of each, so load from the rest
    of the machine falls on all of them alike.  The block length is calibrated per
    callable to about ``target_s`` seconds (or fixed at ``calls``).  Before each block the process sleeps
    ``pause_s``: BLAS and OpenMP worker threads spin for a while after their last call,
    and without the pause the spinning threads of one library slow the next block of the
    other (measured: PyTorch eager at batch 2048 took 121 ms per step in one-step blocks
    right after fastvae, 43 ms in 0.5 s blocks).
    ``syncs`` (name -> callable) waits for a GPU implementation's queued work: after the
    warm-up, and inside the timing at the end of every block.
    ``enters`` (name -> callable) sets up before each of that callable's blocks (the
    warm-up and calibration included), outside the timing: a thread count of its own.
    Returns {name: (median_s, calls_per_block)}.
    """
    syncs, enters = syncs or {}, enters or {}
    blocks = {}
    for k, fn in fns.items():
        if k in enters:
            enters[k]()
        for _ in range(warmup):
            fn()
        if k in syncs:
            syncs[k]()
        if calls:
            blocks[k] = int(calls)
        else:
            t = time_block(fn, 1, syncs.get(k))
            blocks[k] = max(1, min(1000, int(target_s / max(t, 1e-7))))
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            if k in enters:
                enters[k]()
            time.sleep(pause_s)
            times[k].append(time_block(fn, blocks[k], syncs.get(k)))
    return {k: (statistics.median(v), blocks[k]) for k, v in times.items()}


class RemoteStep:
    """One implementation's training step in a process of its own (``python -m
    fastvae.benchmark.remote``), driven over a pipe: only one process runs at a time, so
    the implementations still take turns, but no library's thread pool (OpenBLAS's,
    oneDNN's OpenMP, PyTorch's, XLA's) shares a process with another's.  Measured on a
    2-core Xeon with AMX: fastvae's bf16 step at batch 128 took 2.2-2.4 ms alone in a
    process and 3.4 ms taking turns in one process with the float32 and sharded steps and
    the peers."""

    def __init__(self, name, model, batch, torch_threads=None):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastvae.benchmark.remote", name, model, str(batch),
             str(int(torch_threads or 0))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._ask("ready")

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"the benchmark process of {self.name} ended (exit "
                               f"{self.proc.wait()}); its error is above")
        return out.strip()

    def calibrate(self, target_s, calls=None):
        """Warm up, then the block length: ``calls``, or about ``target_s`` seconds."""
        return int(self._ask(f"calibrate {target_s} {int(calls or 0)}"))

    def block(self, n):
        """Seconds per call over a block of n calls (a GPU's queued work included)."""
        return float(self._ask(f"block {int(n)}"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def time_turns_remote(steps, rounds=7, target_s=0.1, pause_s=0.3, calls=None):
    """:func:`time_turns` for :class:`RemoteStep` s (name -> step): each round times one
    block of each, one process at a time.  Returns {name: (median_s, calls_per_block)}."""
    blocks = {k: r.calibrate(target_s, calls) for k, r in steps.items()}
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, r in steps.items():
            time.sleep(pause_s)
            times[k].append(r.block(blocks[k]))
    return {k: (statistics.median(v), blocks[k]) for k, v in times.items()}


def gemm_peak(n=2048, repeats=5):
    """The machine's float32 matrix-product throughput through NumPy's BLAS, in GFLOP/s
    (best of ``repeats`` n x n x n products): the ceiling for the training-step rows."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = min(time_block(lambda: np.matmul(a, b, out=out), 1) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def bf16_gemm_peak(n=2048, repeats=5):
    """bfloat16 matrix-product throughput (float32 accumulation) through PyTorch, the path
    its bf16 autocast takes, in GFLOP/s; None without PyTorch.  On a CPU without AMX or
    AVX512_BF16 this is an emulation, often slower than float32."""
    try:
        import torch
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    # BLAS threads left spinning by a product just before (gemm_peak's) starve PyTorch's
    # OpenMP threads: measured 4.2 GFLOP/s right after it, 420 after a pause
    time.sleep(0.3)

    def rate(k, reps):
        a = torch.rand((k, k), generator=g).to(torch.bfloat16)
        b = torch.rand((k, k), generator=g).to(torch.bfloat16)
        torch.matmul(a, b)
        best = min(time_block(lambda: torch.matmul(a, b), 1) for _ in range(reps))
        return 2 * k ** 3 / best / 1e9

    # a small product first: emulated bf16 (no bf16 units) runs below 1 GFLOP/s, where the
    # full size would take minutes; it tells the two apart well enough
    small = rate(256, 2)
    return rate(n, repeats) if small > 10 else small


def fastvae_bf16_peak(n=2048, repeats=5):
    """bfloat16 matrix-product throughput (float32 sums) through fastvae's own path on the
    cpu backend (oneDNN, precision="bf16"), in GFLOP/s; None where it cannot run."""
    from ..backends import cpu
    if cpu.bf16_support() is not None:
        return None
    rng = np.random.default_rng(0)
    a = np.empty((n, n), np.uint16)
    b = np.empty((n, n), np.uint16)
    cpu.to_bf16(a, rng.random((n, n), dtype=np.float32))
    cpu.to_bf16(b, rng.random((n, n), dtype=np.float32))
    out = np.empty((n, n), np.float32)
    time.sleep(0.3)  # (see bf16_gemm_peak)
    cpu.matmul_bf16(out, a, b)
    best = min(time_block(lambda: cpu.matmul_bf16(out, a, b), 1) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def bf16_emulated(bf16_gflops, f32_gflops):
    """Whether bfloat16 products run far below float32 ones (no bf16 units: PyTorch then
    emulates them, hundreds of times slower), from the two measured rates."""
    return bf16_gflops is not None and bf16_gflops < 0.25 * f32_gflops


def bandwidth(mb=256, repeats=5):
    """Memory bandwidth in GB/s of c = a + b over arrays of ``mb`` MB each (two reads and a
    write per element: what Adam's passes over the flat buffers are made of)."""
    n = mb * 2 ** 20 // 4
    a, b, c = (np.ones(n, dtype=np.float32) for _ in range(3))
    np.add(a, b, out=c)
    best = min(time_block(lambda: np.add(a, b, out=c), 1) for _ in range(repeats))
    return 3 * 4 * n / best / 1e9


def step_limit_ms(flop, n_params, gflops, gbs):
    """The machine's limit for a training step: its matrix products at ``gflops`` plus
    Adam's bytes at ``gbs`` (it reads the parameters, gradients and two moments and writes
    the parameters and moments: 7 float32 values per parameter)."""
    return 1e3 * (flop / (gflops * 1e9) + 7 * 4 * n_params / (gbs * 1e9))


_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
impl, model = sys.argv[1], sys.argv[2]
import numpy as np
if impl.startswith("fastvae"):
    import fastvae
    from fastvae.benchmark.impls import MODELS
    D, hidden, Z = MODELS[model]
    t1 = time.perf_counter()
    kind = impl.split("-", 1)[1]  # a backend, or bf16 (the cpu backend's mixed precision)
    kw = {"backend": "cpu", "precision": "bf16"} if kind == "bf16" else {"backend": kind}
    m = fastvae.VAE(D, hidden=hidden, latent_dim=Z, **kw)
    m.encode(np.zeros((1, D), np.float32))
else:
    import torch
    from fastvae.benchmark.impls import MODELS
    D, hidden, Z = MODELS[model]
    t1 = time.perf_counter()
    layers = []
    for a, b in zip((D, *hidden), hidden):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    enc = torch.nn.Sequential(*layers, torch.nn.Linear(hidden[-1], 2 * Z))
    with torch.no_grad():
        enc(torch.zeros(1, D))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "total_s": t2 - t0}))
"""


def cold_start(impl, model="canonical", cache_dir=None):
    """A fresh process: import, build the model, first encode of one row.  For fastvae,
    ``cache_dir`` is the Numba cache directory (empty: a cold cache).  Returns a dict
    with import_s, total_s (inside the process) and wall_s (including interpreter start)."""
    env = dict(os.environ)
    return fresh_process(_COLD, [impl, model], env, cache_dir, f"cold start of {impl}")


def fresh_process(code, args, env, cache_dir, what):
    """Run ``python -c code *args`` in a fresh process (``cache_dir``: its Numba cache
    directory, or None) whose last output line is a JSON dict; returns that dict plus
    wall_s, the time including interpreter start."""
    if cache_dir is not None:
        env = {**env, "NUMBA_CACHE_DIR": cache_dir}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=600)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{what} failed:\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def cold_starts(impls, model="canonical"):
    """{impl: {...}} with fastvae measured twice: Numba cache cold, then warm."""
    out = {}
    for impl in impls:
        if impl.startswith("fastvae") and impl != "fastvae-numpy":
            with tempfile.TemporaryDirectory() as d:
                out[f"{impl} (cold cache)"] = cold_start(impl, model, d)
                out[f"{impl} (warm cache)"] = cold_start(impl, model, d)
        else:
            out[impl] = cold_start(impl, model)
    return out


_MEM = r"""
import json, resource, sys, tracemalloc
import numpy as np
impl, model, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from fastvae.benchmark.impls import build, make_batches, MODELS
D = MODELS[model][0]
batches = make_batches(D, batch)
m = build(impl, model)
for i in range(10):
    m.train_step(batches[i % 8])
new_bytes = fit_bytes = None
if impl.startswith("fastvae"):
    # the peak of everything Python and NumPy allocate during the steps, temporaries
    # included, above what was live before them
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
for i in range(steps):
    m.train_step(batches[i % 8])
if impl.startswith("fastvae"):
    new_bytes = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the
# benchmark process that forked this one
with open("/proc/self/status") as f:
    hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), None)
if hwm is None:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if impl.startswith("fastvae"):
    # the same through fit, data path included: uint8 images gathered and scaled per batch
    # and binarized afresh each step; measured from step 10 to step 10 + steps of one epoch
    vae = m.model
    X = (np.random.default_rng(1).random((batch * (steps + 20), D)) * 255).astype(np.uint8)
    calls, mark, forward = [0], [], vae.forward
    def measured(*a, **k):
        calls[0] += 1
        if calls[0] == 10:
            tracemalloc.start()
            mark.append(tracemalloc.get_traced_memory()[0])
        elif calls[0] == 10 + steps:
            mark.append(tracemalloc.get_traced_memory()[1] - mark[0])
            tracemalloc.stop()
        return forward(*a, **k)
    vae.forward = measured
    vae.fit(X, epochs=1, batch_size=batch, progress=False, binarize="dynamic")
    fit_bytes = mark[1]
print(json.dumps({"peak_rss_mb": hwm / 1024, "steady_state_peak_bytes": new_bytes,
                  "fit_steady_state_peak_bytes": fit_bytes}))
"""


def peak_memory(impl, model="canonical", batch=128, steps=200):
    """Peak resident memory (MB) of a fresh process that trains ``steps`` steps; for
    fastvae also the peak number of bytes allocated (by Python and NumPy, temporaries
    included) during the steady-state steps, of ``train_step`` and of ``fit`` (uint8 data,
    dynamic binarization): a few hundred bytes of Python objects in all, and no arrays,
    when the workspaces and the data path's buffers do their job."""
    r = subprocess.run([sys.executable, "-c", _MEM, impl, model, str(batch), str(steps)],
                       capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(f"memory run of {impl} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
