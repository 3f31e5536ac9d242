"""Embedding a trained encoder: cold start and encode latency, side by side.

One network, the canonical model's encoder (784-400-20, ReLU, float32), four ways:

- ``fastvae-numpy``: ``fastvae.load(path, backend="numpy")`` (no Numba, the light path);
- ``fastvae-cpu``: ``fastvae.load(path, backend="cpu")`` (Numba kernels, from a warm and
  from a cold Numba cache);
- ``onnxruntime``: the encoder exported with ``model.export_onnx(part="encoder")``;
- ``torch``: PyTorch eager with the same weights, loaded from a ``state_dict`` file.

Cold start: a fresh process imports the library, loads the file and encodes one row; the
cases take turns for ``--rounds`` rounds, medians.  Latency: ``encode`` of 1 row and of 256
rows (NumPy in, mu and logvar out as NumPy arrays, logvar clamped on every side), timed
with the project's alternating blocks (:func:`fastvae.benchmark.measure.time_turns`),
medians.  Same thread count for BLAS, onnxruntime and PyTorch.

    python benchmarks/bench_embed.py                  # writes benchmarks/results/embed_<n>core.*
    python benchmarks/bench_embed.py --rounds 2 --out /tmp/r
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

LOGVAR_RANGE = (-30.0, 20.0)  # fastvae.backends.codes.LOGVAR_RANGE, without importing fastvae early

# One cold start: argv = case, file, input_dim, latent_dim, threads.  Times inside the
# process: import (library + NumPy), load (the file), encode (the first row).
_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
case, path = sys.argv[1], sys.argv[2]
D, Z, threads = (int(a) for a in sys.argv[3:6])
import numpy as np
x = np.full((1, D), 0.5, np.float32)
if case.startswith("fastvae"):
    import fastvae
    t1 = time.perf_counter()
    m = fastvae.load(path, backend=case.split("-")[1])
    t2 = time.perf_counter()
    mu, logvar = m.encode(x)
elif case == "onnxruntime":
    import onnxruntime as ort
    t1 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    t2 = time.perf_counter()
    mu, logvar = s.run(None, {"x": x})
else:
    import torch
    torch.set_num_threads(threads)
    t1 = time.perf_counter()
    sd = torch.load(path)
    n = len(sd) // 2
    layers = []
    for i in range(n):
        W = sd[f"{2 * i}.weight"]
        layers.append(torch.nn.Linear(W.shape[1], W.shape[0]))
        if i < n - 1:
            layers.append(torch.nn.ReLU())
    enc = torch.nn.Sequential(*layers)
    enc.load_state_dict(sd)
    t2 = time.perf_counter()
    with torch.inference_mode():
        h = enc(torch.from_numpy(x))
        mu, logvar = h[:, :Z].numpy(), h[:, Z:].clamp(-30.0, 20.0).numpy()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "encode_s": t3 - t2,
                  "total_s": t3 - t0, "numba_loaded": "numba" in sys.modules,
                  "mu0": float(mu[0, 0])}))
"""


def torch_encoder(model):
    """A torch.nn.Sequential with the encoder's weights (Linear, ReLU, ..., the head)."""
    import numpy as np
    import torch
    p = model.parameters()
    mats = [(p[f"enc.{i}.W"], p[f"enc.{i}.b"]) for i in range(len(model.enc_hidden))]
    mats.append((p["enc.head.W"], p["enc.head.b"]))
    layers = []
    for i, (W, b) in enumerate(mats):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.array(W).T))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        layers += [lin] + ([torch.nn.ReLU()] if i < len(mats) - 1 else [])
    return torch.nn.Sequential(*layers).eval()


def cold_start(case, path, D, Z, threads, cache_dir=None):
    """One fresh process (see _COLD); returns its times plus wall_s (interpreter start too)."""
    from fastvae.benchmark.measure import fresh_process
    env = dict(os.environ)
    env.pop("FASTVAE_BACKEND", None)
    return fresh_process(_COLD, [case, path, D, Z, threads], env, cache_dir,
                         f"cold start of {case}")


def cold_starts(files, D, Z, threads, rounds, log):
    """{case: {metric: median, "runs": [...]}}; the cases take turns round by round."""
    warm = tempfile.mkdtemp(prefix="numba-warm-")
    cold_start("fastvae-cpu", files["fastvae"], D, Z, threads, warm)  # fills the warm cache
    cases = {"fastvae-numpy": (files["fastvae"], None, "fastvae-numpy"),
             "fastvae-cpu (warm Numba cache)": (files["fastvae"], warm, "fastvae-cpu"),
             "fastvae-cpu (cold Numba cache)": (files["fastvae"], "fresh", "fastvae-cpu"),
             "onnxruntime": (files["onnx"], None, "onnxruntime"),
             "torch": (files["torch"], None, "torch")}
    runs = {k: [] for k in cases}
    for r in range(rounds):
        for name, (path, cache, case) in cases.items():
            if cache == "fresh":
                with tempfile.TemporaryDirectory(prefix="numba-cold-") as d:
                    runs[name].append(cold_start(case, path, D, Z, threads, d))
            else:
                runs[name].append(cold_start(case, path, D, Z, threads, cache))
        log(f"cold start round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]['wall_s']:.2f} s" for k, v in runs.items()))
    out = {}
    for name, rs in runs.items():
        out[name] = {m: statistics.median(x[m] for x in rs)
                     for m in ("import_s", "load_s", "encode_s", "total_s", "wall_s")}
        out[name]["numba_loaded"] = any(x["numba_loaded"] for x in rs)
        out[name]["runs"] = rs
    return out


def latencies(model_path, onnx_path, model, threads, rounds, batches=(1, 256)):
    """{batch: {impl: median seconds per encode}} with the four taking turns."""
    import numpy as np
    import onnxruntime as ort
    import torch

    import fastvae
    from fastvae.benchmark.impls import make_batches
    from fastvae.benchmark.measure import time_turns

    torch.set_num_threads(threads)
    m_np = fastvae.load(model_path, backend="numpy")
    m_cpu = fastvae.load(model_path, backend="cpu")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    tenc = torch_encoder(model)
    Z = model.latent_dim
    lo, hi = LOGVAR_RANGE

    def torch_encode(x):
        with torch.inference_mode():
            h = tenc(torch.from_numpy(x))
            return h[:, :Z].numpy(), h[:, Z:].clamp(lo, hi).numpy()

    out = {}
    for B in batches:
        x = make_batches(model.input_dim, 256, n=1)[0][:B].copy()
        fns = {"fastvae-numpy": lambda: m_np.encode(x), "fastvae-cpu": lambda: m_cpu.encode(x),
               "onnxruntime": lambda: sess.run(None, {"x": x}),
               "torch-eager": lambda: torch_encode(x)}
        # the four compute the same numbers (float32, different summation orders)
        ref = m_np.encode(x)
        for name, fn in fns.items():
            for got, want in zip(fn(), ref):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
        res = time_turns(fns, rounds=rounds)
        out[B] = {k: v[0] for k, v in res.items()}
    return out


def markdown(res):
    m, th = res["machine"], res["threads"]
    lines = [f"Encoder of the canonical model ({res['network']}, float32).  Machine: {m['cpu']}, "
             f"{m['cores']} cores; numpy {m['numpy']} ({m.get('numpy_blas')}), numba "
             f"{m['numba']}, onnxruntime {res['onnxruntime']}, torch {m['torch']}; "
             f"{m['date']}.  Threads: {th} for BLAS, onnxruntime and PyTorch (Numba kernels "
             f"serial).  Medians of {res['rounds']} alternating rounds.  One-minute load "
             f"average {res['loadavg_before'][0]:.2f} before the run and "
             f"{res['loadavg_after'][0]:.2f} after it (its own processes included).", "",
             "### Cold start (fresh process: import, load the file, first encode of one row)",
             "", "| case | with interpreter start s | in process s | import s | load s | "
             "first encode s | Numba loaded |", "|---|---:|---:|---:|---:|---:|---|"]
    for k, v in res["cold_start"].items():
        lines.append(f"| {k} | {v['wall_s']:.3f} | {v['total_s']:.3f} | {v['import_s']:.3f} | "
                     f"{v['load_s']:.3f} | {v['encode_s']:.3f} | "
                     f"{'yes' if v['numba_loaded'] else 'no'} |")
    lat = res["latency_s"]
    names = list(next(iter(lat.values())))
    lines += ["", "### Encode latency (mu and logvar), microseconds", "",
              "| batch | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for B, row in lat.items():
        lines.append(f"| {B} | " + " | ".join(f"{row[n] * 1e6:.1f}" for n in names) + " |")
    lines += ["", "Relative to PyTorch eager (> 1: faster than PyTorch):", "",
              "| batch | " + " | ".join(n for n in names if n != "torch-eager") + " |",
              "|---:|" + "---:|" * (len(names) - 1)]
    for B, row in lat.items():
        lines.append(f"| {B} | " + " | ".join(f"{row['torch-eager'] / row[n]:.2f}x"
                                              for n in names if n != "torch-eager") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for BLAS, onnxruntime and PyTorch alike")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--name", default=None, help="file stem (default embed_<cores>core)")
    a = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)  # before NumPy loads BLAS here and in the children

    import onnxruntime
    import torch

    import fastvae
    from fastvae.benchmark.impls import MODELS
    from fastvae.benchmark.machine import describe, save
    from fastvae.io.export import DEFAULT_OPSET

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    D, hidden, Z = MODELS["canonical"]
    t0 = time.perf_counter()
    load0 = os.getloadavg()  # the machine's load before and after: a disturbed run shows
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as d:
        model = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend="numpy", seed=0)
        files = {"fastvae": model.save(os.path.join(d, "model.npz")),
                 "onnx": model.export_onnx(os.path.join(d, "encoder.onnx"), part="encoder"),
                 "torch": os.path.join(d, "encoder.pt")}
        torch.save(torch_encoder(model).state_dict(), files["torch"])
        cold = cold_starts(files, D, Z, a.threads, a.rounds, log)
        lat = latencies(files["fastvae"], files["onnx"], model, a.threads, a.rounds)
    res = {"benchmark": "embedding: cold start and encode latency",
           "network": "-".join(map(str, (D, *hidden, Z))), "rounds": a.rounds,
           "threads": a.threads, "onnxruntime": onnxruntime.__version__,
           "onnx_opset": DEFAULT_OPSET, "cold_start": cold,
           "latency_s": {str(k): v for k, v in lat.items()}, "machine": describe(),
           "loadavg_before": load0, "loadavg_after": os.getloadavg(),
           "seconds": time.perf_counter() - t0}
    md = markdown(res)
    print(md)
    stem = os.path.join(a.out, a.name or f"embed_{os.cpu_count()}core")
    save(res, md, stem + ".json", stem + ".md")
    log(f"{res['seconds']:.0f} s; wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
