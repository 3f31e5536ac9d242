"""The bf16 matrix-product libraries side by side on a training step's own products.

Why: a bf16 step's products run on oneDNN (the ``onednn-cpu-gomp`` wheel, oneDNN 3.2), and
PyTorch's bf16 matmul is faster on some shapes.  This measures, on the products of one
training step (forward ``h @ W``, input gradient ``d @ W^T``, weight gradient ``h^T @ d``),
each candidate the issue names:

- ``onednn``: fastvae's calls (plain row-major operands, any strides, float32 out);
- ``onednn-blocked``: the same library with the weight in the layout oneDNN picks
  (``format_tag::any``), reordered once outside the timing (a weight's layout could be
  kept once per step, like its bf16 shadow); weight operands only;
- ``mkl``: MKL's ``cblas_gemm_bf16bf16f32`` (float32 out), when ``libmkl_rt`` is found
  (``pip install mkl``, about 1 GB; ``--mkl PATH``);
- ``torch``: PyTorch's bf16 ``torch.mm`` (bf16 out: half the bytes written, and the
  rounding of the result that autocast makes), when torch is installed;
- ``numpy-f32``: NumPy's float32 product (OpenBLAS here), the path bf16 replaces;
- ``onednn-f32`` and ``torch-f32``: oneDNN's and PyTorch's float32 products, the
  alternatives to OpenBLAS for a float32 step (issue 31: PyTorch's float32 products are
  faster than OpenBLAS's on the deep model).

Each library runs in its own process (an OpenMP or BLAS pool left spinning by one library
slows the next), the processes take turns for ``--rounds`` rounds, and each product's time
is the median over rounds of a median of repetitions.

    python benchmarks/bench_gemm.py                          # canonical 512 and 2048, deep 512
    python benchmarks/bench_gemm.py --json out.json --markdown out.md
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

LIBRARIES = ("numpy-f32", "onednn-f32", "torch-f32", "onednn", "onednn-blocked", "mkl",
             "torch")
#: (model name, layer widths from the input, batch)
MODELS = (("canonical", (784, 400, 20), 512), ("canonical", (784, 400, 20), 2048),
          ("deep", (784, 1024, 1024, 64), 512))
#: --tiny (a smoke test's): one small batch
TINY = (("canonical", (784, 400, 20), 8),)


def products(widths, batch):
    """The products of a training step of a VAE with these encoder widths (the decoder
    mirrors them; the encoder's head writes mean and log-variance), as
    (name, M, K, N, trans_a, trans_b, weight_operand): out (M, N) sums K terms."""
    enc = [(widths[i], widths[i + 1] * (2 if i == len(widths) - 2 else 1))
           for i in range(len(widths) - 1)]
    rev = widths[::-1]
    dec = [(rev[i], rev[i + 1]) for i in range(len(rev) - 1)]
    out = []
    for side, layers in (("enc", enc), ("dec", dec)):
        for j, (n_in, n_out) in enumerate(layers):
            out.append((f"{side}{j} fwd", batch, n_in, n_out, False, False, True))
            out.append((f"{side}{j} dW", n_in, batch, n_out, True, False, False))
            if not (side == "enc" and j == 0):  # the data take no gradient
                out.append((f"{side}{j} dX", batch, n_out, n_in, False, True, True))
    return out


# ---------------------------------------------------------------- one library, one process

def _bench(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _operands(M, K, N, ta, tb, rng):
    """float32 a, b stored as the step stores them: a (K, M) when trans_a, b (N, K) when
    trans_b."""
    import numpy as np
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    return a, b


def _bits(x):
    import numpy as np
    from fastvae.backends.cpu.bf16 import to_bf16
    out = np.empty(x.shape, np.uint16)
    to_bf16(out, np.ascontiguousarray(x))
    return out


def _runner(lib, mkl_path):
    """A function (M, K, N, ta, tb, weight, a, b) -> a zero-argument call that runs the
    product once, or None where the library cannot run it."""
    import numpy as np
    if lib == "numpy-f32":
        def make(M, K, N, ta, tb, weight, a, b):
            out = np.empty((M, N), np.float32)
            A, B = (a.T if ta else a), (b.T if tb else b)
            return lambda: np.matmul(A, B, out=out)
        return make
    if lib in ("onednn", "onednn-blocked", "onednn-f32"):
        from fastvae.backends.cpu import onednn
        try:
            L = onednn.library()
        except RuntimeError:  # not installed: a missing column, said under the table
            return None
        if lib == "onednn-f32":
            def make(M, K, N, ta, tb, weight, a, b):
                out = np.empty((M, N), np.float32)
                A, B = (a.T if ta else a), (b.T if tb else b)
                return lambda: L.matmul(out, A, B)
            return make
        if onednn.support() is not None:  # no bf16 units: oneDNN has no bf16 matmul here
            return None
        if lib == "onednn":
            def make(M, K, N, ta, tb, weight, a, b):
                out = np.empty((M, N), np.float32)
                A, B = _bits(a), _bits(b)
                A, B = (A.T if ta else A), (B.T if tb else B)
                return lambda: L.matmul(out, A, B)
            return make
        return _blocked(L)
    if lib == "mkl":
        path = mkl_path or _find_mkl()
        if path is None:
            return None
        # MKL on GNU OpenMP (the libgomp oneDNN uses), loaded first: MKL's own Intel
        # OpenMP layer is not found from outside MKL's environment
        os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
        ctypes.CDLL("libgomp.so.1", mode=ctypes.RTLD_GLOBAL)
        mkl = ctypes.CDLL(path)
        f = mkl.cblas_gemm_bf16bf16f32
        f.restype = None
        f.argtypes = ([ctypes.c_int] * 3 + [ctypes.c_int64] * 3
                      + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64])
        row, no, yes = 101, 111, 112  # CblasRowMajor, CblasNoTrans, CblasTrans

        def make(M, K, N, ta, tb, weight, a, b):
            out = np.empty((M, N), np.float32)
            A, B = _bits(a), _bits(b)
            args = (row, yes if ta else no, yes if tb else no, M, N, K, 1.0, A.ctypes.data,
                    A.shape[1], B.ctypes.data, B.shape[1], 0.0, out.ctypes.data, N)
            keep = (A, B, out)  # (args holds their addresses, not the arrays)
            return lambda: (f(*args), keep)
        return make
    if lib in ("torch", "torch-f32"):
        try:
            import torch
        except ImportError:
            return None
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
        dt = torch.bfloat16 if lib == "torch" else torch.float32

        def make(M, K, N, ta, tb, weight, a, b):
            A = torch.from_numpy(a).to(dt)
            B = torch.from_numpy(b).to(dt)
            A, B = (A.t() if ta else A), (B.t() if tb else B)
            return lambda: torch.mm(A, B)
        return make
    raise ValueError(f"unknown library {lib!r}")


def _blocked(L):
    """oneDNN with the weight operand in the layout the primitive picks (reordered once)."""
    import numpy as np
    from fastvae.backends.cpu import onednn as od
    lib, vp = L.lib, ctypes.c_void_p
    lib.dnnl_primitive_desc_query_md.restype = vp
    lib.dnnl_primitive_desc_query_md.argtypes = [vp, ctypes.c_int, ctypes.c_int]
    lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
    lib.dnnl_memory_desc_get_size.argtypes = [vp]
    any_tag, query_weights, arg_from, arg_to = 1, 131, 1, 17

    def make(M, K, N, ta, tb, weight, a, b):
        if not weight:
            return None
        A = _bits(a)
        A = A.T if ta else A
        B = _bits(b)
        B = B.T if tb else B
        a_md = L.desc((M, K), tuple(s // 2 for s in A.strides), od.BF16)
        any_md = vp()
        L.check(lib.dnnl_memory_desc_create_with_tag(ctypes.byref(any_md), 2,
                                                      od.Dims(K, N), od.BF16, any_tag), "md")
        o_md = L.desc((M, N), (N, 1), od.F32)
        attr, pd, prim = vp(), vp(), vp()
        lib.dnnl_primitive_attr_create(ctypes.byref(attr))
        L.check(lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), L.engine, a_md,
                                                       any_md, None, o_md, attr), "matmul pd")
        L.check(lib.dnnl_primitive_create(ctypes.byref(prim), pd), "matmul")
        w_md = vp(lib.dnnl_primitive_desc_query_md(pd, query_weights, 0))
        packed = np.empty(lib.dnnl_memory_desc_get_size(w_md), np.uint8)
        stream, _ = L.thread_state()
        # the one reorder: plain (strided) -> the primitive's layout
        plain = L.desc((K, N), tuple(s // 2 for s in B.strides), od.BF16)
        rpd, rprim, m_src, m_dst = vp(), vp(), vp(), vp()
        L.check(lib.dnnl_reorder_primitive_desc_create(ctypes.byref(rpd), plain, L.engine,
                                                        w_md, L.engine, None), "reorder pd")
        lib.dnnl_primitive_create(ctypes.byref(rprim), rpd)
        lib.dnnl_memory_create(ctypes.byref(m_src), plain, L.engine, vp(B.ctypes.data))
        lib.dnnl_memory_create(ctypes.byref(m_dst), w_md, L.engine, vp(packed.ctypes.data))
        rargs = (od.Arg * 2)(od.Arg(arg_from, m_src), od.Arg(arg_to, m_dst))
        L.check(lib.dnnl_primitive_execute(rprim, stream, 2, rargs), "reorder")
        lib.dnnl_stream_wait(stream)
        out = np.empty((M, N), np.float32)
        mems = []
        for md, ptr in ((a_md, A.ctypes.data), (w_md, packed.ctypes.data),
                        (o_md, out.ctypes.data)):
            m = vp()
            L.check(lib.dnnl_memory_create(ctypes.byref(m), md, L.engine, vp(ptr)), "mem")
            mems.append(m)
        args = (od.Arg * 3)(od.Arg(od.ARG_SRC, mems[0]), od.Arg(od.ARG_WEIGHTS, mems[1]),
                             od.Arg(od.ARG_DST, mems[2]))
        keep = (A, B, packed, out)  # the pointers above point into these

        def call():
            lib.dnnl_primitive_execute(prim, stream, 3, args)
            lib.dnnl_stream_wait(stream)
        call.keep = keep
        return call
    return make


def _find_mkl():
    for p in dict.fromkeys((sys.prefix, sys.base_prefix)):
        cand = os.path.join(p, "lib", "libmkl_rt.so.2")
        for c in (cand, cand[:-1] + "3", cand[:-2]):
            if os.path.exists(c):
                return c
    return None


def worker(lib, mkl_path, reps, models=MODELS):
    """Time every product of ``models`` on ``lib``; prints one JSON line."""
    import numpy as np
    make = _runner(lib, mkl_path)
    res = {}
    if make is None:
        print(json.dumps({"lib": lib, "missing": True}))
        return
    for name, widths, batch in models:
        for p in products(widths, batch):
            pname, M, K, N, ta, tb, weight = p
            a, b = _operands(M, K, N, ta, tb, np.random.default_rng(0))
            call = make(M, K, N, ta, tb, weight, a, b)
            key = f"{name}|{batch}|{pname}|{M}x{K}x{N}"
            res[key] = None if call is None else _bench(call, reps)
    print(json.dumps({"lib": lib, "times": res}))


# ---------------------------------------------------------------- the rounds and the tables

def run(rounds=3, reps=20, threads=None, mkl_path=None, quiet=False, tiny=False):
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
    times = {lib: [] for lib in LIBRARIES}
    missing = set()
    for r in range(rounds):
        for lib in LIBRARIES:
            if lib in missing:
                continue
            cmd = [sys.executable, __file__, "--worker", lib, "--reps", str(reps)]
            if mkl_path:
                cmd += ["--mkl", mkl_path]
            if tiny:
                cmd += ["--tiny"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{lib} worker failed (exit {proc.returncode}):\n"
                                   f"{proc.stderr[-2000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            if out.get("missing"):
                missing.add(lib)
                continue
            times[lib].append(out["times"])
            if not quiet:
                print(f"round {r + 1}: {lib} done", flush=True)
    libs = [lib for lib in LIBRARIES if lib not in missing]
    keys = list(times[libs[0]][0])
    med = {lib: {k: (None if times[lib][0][k] is None else
                     statistics.median(t[k] for t in times[lib])) for k in keys} for lib in libs}
    from fastvae.benchmark.machine import describe
    from fastvae.backends.cpu import onednn
    info = describe()
    try:
        info["onednn"] = "%d.%d.%d" % onednn.library().version()
    except Exception:  # noqa: BLE001  (the table says what ran; a missing library is a row)
        info["onednn"] = None
    info["bf16_units"] = sorted(onednn.cpu_bf16_flags() or ()) or None
    return {"machine": info, "threads": threads, "rounds": rounds, "reps": reps,
            "libraries": libs, "missing": sorted(missing), "seconds": med}


def markdown(res):
    libs = res["libraries"]
    m = res["machine"]
    why = "" if m.get("bf16_units") else (" (this CPU has no bf16 units: oneDNN runs no bf16 "
                                          "product on it)")
    lines = [f"Machine: {m['cpu']} ({', '.join(m.get('cpu_flags') or [])}), {m['cores']} cores; "
             f"threads {res['threads'] or 'default'}; oneDNN {m.get('onednn')}, "
             f"torch {m.get('torch')}; {m['date']}.  Medians of {res['rounds']} rounds (each "
             f"library in its own process, taking turns) of medians of {res['reps']} calls.  "
             f"Not run: {', '.join(res['missing']) or 'none'}{why}.", ""]
    lines.append("GFLOP/s per product (dW: the weight gradient h^T d, dX: the input gradient "
                 "d W^T; torch writes bf16, the others float32; the -f32 columns multiply "
                 "float32 operands, the others bf16):")
    lines.append("")
    lines.append("| model | batch | product | M x K x N | " + " | ".join(libs) + " |")
    lines.append("|---|---:|---|---|" + "---:|" * len(libs))
    totals = {}
    for k in res["seconds"][libs[0]]:
        model, batch, pname, shape = k.split("|")
        M, K, N = (int(v) for v in shape.split("x"))
        cells = []
        for lib in libs:
            t = res["seconds"][lib][k]
            cells.append("n/a" if t is None else f"{2 * M * K * N / t / 1e9:.0f}")
            if t is not None:
                totals.setdefault((model, batch, lib), 0.0)
                totals[model, batch, lib] += t
        lines.append(f"| {model} | {batch} | {pname} | {shape} | " + " | ".join(cells) + " |")
    lines += ["", "The step's products, ms in all (onednn-blocked: n/a, it runs weight operands "
              "only):", "", "| model | batch | " + " | ".join(libs) + " |",
              "|---|---:|" + "---:|" * len(libs)]
    seen = []
    for k in res["seconds"][libs[0]]:
        model, batch = k.split("|")[:2]
        if (model, batch) in seen:
            continue
        seen.append((model, batch))
        cells = []
        for lib in libs:
            full = all(res["seconds"][lib][kk] is not None for kk in res["seconds"][lib]
                       if kk.startswith(f"{model}|{batch}|"))
            cells.append(f"{1e3 * totals[model, batch, lib]:.2f}" if full else "n/a")
        lines.append(f"| {model} | {batch} | " + " | ".join(cells) + " |")
    if "onednn-blocked" in libs:
        lines += ["", "The products that read a weight (forward and input gradient), ms in all: "
                  "oneDNN's plain layout against the layout it picks:", "",
                  "| model | batch | onednn | onednn-blocked |", "|---|---:|---:|---:|"]
        for model, batch in seen:
            ks = [k for k, t in res["seconds"]["onednn-blocked"].items()
                  if t is not None and k.startswith(f"{model}|{batch}|")]
            plain = sum(res["seconds"]["onednn"][k] for k in ks)
            blocked = sum(res["seconds"]["onednn-blocked"][k] for k in ks)
            lines.append(f"| {model} | {batch} | {1e3 * plain:.2f} | {1e3 * blocked:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/OpenBLAS/MKL threads (default: the libraries' own)")
    ap.add_argument("--mkl", default=None, help="path to libmkl_rt.so (default: this env's)")
    ap.add_argument("--tiny", action="store_true", help="one batch of 8 rows (a smoke test)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--markdown", help="write a markdown table here")
    a = ap.parse_args(argv)
    for flag in ("rounds", "reps"):
        if getattr(a, flag) < 1:
            ap.error(f"--{flag} must be 1 or more, got {getattr(a, flag)}")
    if a.threads is not None and a.threads < 1:
        ap.error(f"--threads must be 1 or more, got {a.threads}")
    if a.worker:
        worker(a.worker, a.mkl, a.reps, TINY if a.tiny else MODELS)
        return
    res = run(a.rounds, a.reps, a.threads, a.mkl, tiny=a.tiny)
    md = markdown(res)
    print(md)
    from fastvae.benchmark.machine import save
    save(res, md, a.json, a.markdown)


if __name__ == "__main__":
    main()
