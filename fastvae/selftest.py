"""``fastvae selftest``: the checks the first person with an NVIDIA GPU runs, and one report.

Run ``fastvae selftest`` (or ``python -m fastvae.selftest``) and paste its report into an
issue.  It says which GPU, driver, CUDA runtime and CuPy ran, then runs on the cuda backend:

- every kernel against the NumPy reference (both precisions, shapes that are not multiples
  of the tile or the block, several row chunks);
- a training step, loss and every gradient, against the reference (float64 to 1e-10,
  float32 to 2e-4);
- 200 Adam steps against the cpu backend (float32: cuBLAS and OpenBLAS round differently,
  so within 1% of the loss);
- exact resume on the GPU (one epoch, checkpoint, load, one more == two epochs, to the bit)
  and a checkpoint moved GPU -> CPU -> GPU;
- with PyTorch installed, a short speed comparison of the canonical training step.

On a machine without a usable GPU it says why the GPU part was skipped, checks the cpu
backend against the reference instead, and exits 0.  Exit status 1 means a check failed.
These checks are also what the tests run on the emulated GPU (``tests/test_selftest.py``).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

from .version import __version__
from .backends.codes import ACTIVATIONS, LIK_BERNOULLI, LIK_GAUSSIAN, LOGVAR_RANGE


def _tol(dtype):
    return (1e-10, 1e-12) if np.dtype(dtype) == np.float64 else (2e-4, 2e-5)


def _close(got, want, dtype, what, scale=1.0):
    rtol, atol = _tol(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


def check_kernels(backend):
    """Every device kernel against the reference on awkward shapes, both precisions."""
    from .backends import get
    from .backends import reference as R
    bk = get(backend)
    put, host = bk.asarray, bk.to_numpy
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        for B, N in ((1, 45), (37, 45), (300, 70)):
            for name, (code, alpha) in ACTIVATIONS.items():
                y = (rng.standard_normal((B, N)) * 3).astype(dt)
                b = rng.standard_normal(N).astype(dt)
                yd = put(y)
                R.bias_act_fwd(y, b, code, alpha)
                bk.bias_act_fwd(yd, put(b), code, alpha)
                _close(host(yd), y, dt, f"bias_act_fwd {name} {B}x{N}")
                dy = rng.standard_normal((B, N)).astype(dt)
                da, db = np.empty_like(y), np.empty(N, dt)
                R.act_bias_bwd(da, db, dy, y, code, alpha)
                dad, dbd = bk.xp.empty((B, N), dtype=dt), bk.xp.empty(N, dtype=dt)
                bk.act_bias_bwd(dad, dbd, put(dy), put(y), code, alpha)
                _close(host(dad), da, dt, f"act_bias_bwd {name}")
                _close(host(dbd), db, dt, f"act_bias_bwd {name} bias", scale=B)
        for B, Z, L in ((5, 3, 2), (70, 40, 3)):
            head = rng.standard_normal((B, 2 * Z)).astype(dt)
            head[0, Z] = 40.0
            hb = (rng.standard_normal(2 * Z) * 0.1).astype(dt)
            eps = rng.standard_normal((L * B, Z)).astype(dt)
            e = lambda *s: np.empty(s, dt)  # noqa: E731
            ref = [e(B, Z), e(B, Z), e(B, Z), e(L * B, Z), e(B), e(Z)]
            rh = head.copy()
            R.reparam_kl_fwd(*ref, rh, hb, eps, *LOGVAR_RANGE)
            got = [bk.xp.empty(a.shape, dtype=dt) for a in ref]
            hd = put(head)
            bk.reparam_kl_fwd(*got, hd, put(hb), put(eps), *LOGVAR_RANGE)
            for a, r, n in zip(got, ref, ("mu", "logvar", "sigma", "z", "kl", "kl_dim")):
                _close(host(a), r, dt, f"reparam_kl_fwd {n}", scale=max(B, Z))
            dz = (rng.standard_normal((L * B, Z)) * 0.1).astype(dt)
            rd = [e(B, 2 * Z), e(2 * Z)]
            R.reparam_kl_bwd(*rd, dz, eps, ref[0], ref[2], rh, ref[5], 0.5 / B, 0.1,
                             *LOGVAR_RANGE)
            gd = [bk.xp.empty((B, 2 * Z), dtype=dt), bk.xp.empty(2 * Z, dtype=dt)]
            bk.reparam_kl_bwd(*gd, put(dz), put(eps), got[0], got[2], hd, got[5], 0.5 / B, 0.1,
                              *LOGVAR_RANGE)
            _close(host(gd[0]), rd[0], dt, "reparam_kl_bwd", scale=B)
            _close(host(gd[1]), rd[1], dt, "reparam_kl_bwd bias", scale=B)
        for kind, learn, S in ((LIK_BERNOULLI, False, 1), (LIK_GAUSSIAN, True, 1),
                               (LIK_GAUSSIAN, True, 70)):
            R_, B, D = 2 * 150, 150, 70
            out = (rng.standard_normal((R_, D)) * 3).astype(dt)
            b = rng.standard_normal(D).astype(dt)
            x = rng.uniform(0, 1, (B, D)).astype(dt)
            ls = (rng.standard_normal(S) * 0.3).astype(dt)
            r = [np.empty((R_, D), dt), np.empty(R_, dt), np.empty(D, dt), np.empty(S, dt)]
            ro = out.copy()
            R.likelihood_fwd_bwd(*r, ro, b, x, ls, kind, learn, 1.0 / R_)
            g = [bk.xp.empty(a.shape, dtype=dt) for a in r]
            od = put(out)
            bk.likelihood_fwd_bwd(*g, od, put(b), put(x), put(ls), kind, learn, 1.0 / R_)
            for a, w, n in zip(g[:4 if learn else 3], r, ("dout", "loss", "db", "dlogscale")):
                _close(host(a), w, dt, f"likelihood_fwd_bwd {n}", scale=D * 4)
        P = 1001
        p, g = rng.standard_normal(P).astype(dt), rng.standard_normal(P).astype(dt)
        m, v = (rng.standard_normal(P) * 0.01).astype(dt), rng.uniform(0, 1e-3, P).astype(dt)
        dev = [put(a) for a in (p, m, v, g)]
        R.adam_step(p, m, v, g, 1e-3, 0.9, 0.999, 1e-8, 0.01, True, 7, 0.5)
        bk.adam_step(*dev, 1e-3, 0.9, 0.999, 1e-8, 0.01, True, 7, 0.5)
        for a, w, n in zip(dev, (p, m, v), "pmv"):
            _close(host(a), w, dt, f"adam_step {n}")
        noise = np.empty((3, 37, 7), dt)
        R.normal_eps(noise, (3, 4), 2 ** 33 + 1, 5 << 34)
        nd = bk.xp.empty((3, 37, 7), dtype=dt)
        bk.normal_eps(nd, (3, 4), 2 ** 33 + 1, 5 << 34)
        np.testing.assert_allclose(host(nd), noise, rtol=1e-6, atol=1e-6, err_msg="normal_eps")


def check_training_step(backend):
    """A whole step (loss and every gradient) against the reference, several models."""
    import fastvae
    for dt in ("float64", "float32"):
        rtol = _tol(dt)[0]
        for cfg in (dict(), dict(hidden=(9, 6), activation="tanh", n_samples=3, free_bits=0.05),
                    dict(likelihood="gaussian", obs_scale="learned", activation="elu"),
                    dict(objective="iwae-dreg", n_samples=3)):
            args = dict(dict(input_dim=37, latent_dim=5, dtype=dt, seed=4, hidden=(33,)), **cfg)
            ref, dev = fastvae.VAE(backend="numpy", **args), fastvae.VAE(backend=backend, **args)
            x = np.random.default_rng(1).uniform(0.05, 0.95, (40, 37)).astype(dt)
            eps = np.random.default_rng(2).standard_normal((ref.n_samples, 40, 5)).astype(dt)
            cr, cd = ref.forward(x, eps), dev.forward(x, eps)
            np.testing.assert_allclose(cd.loss, cr.loss, rtol=rtol, err_msg=f"loss {cfg}")
            gr, gd = ref.backward(cr), dev.backward(cd)
            for k in gr:
                s = np.abs(gr[k]).max() + 1e-30
                np.testing.assert_allclose(dev.kernels.to_numpy(gd[k]) / s, gr[k] / s, rtol=0,
                                           atol=rtol * 10, err_msg=f"{k} {cfg}")


def check_training_run(backend):
    """200 Adam steps (clipped by global norm: the norm kernels too) against the cpu
    backend; exact resume; checkpoints across devices."""
    import fastvae
    a = fastvae.VAE(64, hidden=(48,), latent_dim=6, seed=1, backend="cpu")
    b = fastvae.VAE(64, hidden=(48,), latent_dim=6, seed=1, backend=backend)
    oa, ob = fastvae.Adam(a, lr=2e-3, clip_norm=2.0), fastvae.Adam(b, lr=2e-3, clip_norm=2.0)
    rng = np.random.default_rng(0)
    rates = rng.uniform(0.05, 0.95, 64)
    diffs, first, clipped = [], None, False
    for i in range(200):
        x = (rng.random((32, 64)) < rates).astype(np.float32)
        eps = rng.standard_normal((32, 6)).astype(np.float32)
        ca, cb = a.forward(x, eps), b.forward(x, eps)
        diffs.append(abs(ca.loss - cb.loss) / ca.loss)
        first = first or cb.loss
        oa.step(a.backward(ca))
        ob.step(b.backward(cb))
        clipped = clipped or oa.last_grad_norm > 2.0
        if i < 20:  # (before float32 rounding has moved the two runs apart)
            assert math.isclose(float(ob.last_grad_norm), oa.last_grad_norm, rel_tol=1e-4), \
                f"step {i + 1}: gradient norm {float(ob.last_grad_norm)} on the device, " \
                f"{oa.last_grad_norm} on the cpu"
    assert clipped, "200 steps: clipping was never in force"
    assert max(diffs) < 0.01, f"200 steps: the losses drifted apart by {max(diffs):.2%}"
    assert cb.loss < first - 2, "200 steps: the device did not learn"
    X = (np.random.default_rng(3).random((300, 30)) * 255).astype(np.uint8)
    kw = dict(batch_size=64, progress=False, kl_warmup=1, optimizer="sgd", lr=0.05,
              momentum=0.5)

    def fresh():
        return fastvae.VAE(30, hidden=(20,), latent_dim=4, backend=backend, seed=2)

    with tempfile.TemporaryDirectory() as d:
        straight = fresh()
        straight.fit(X, epochs=2, **kw)
        half = fresh()
        half.fit(X, epochs=1, checkpoint=f"{d}/c.npz", **kw)
        resumed = fastvae.load(f"{d}/c.npz", backend=backend)
        resumed.fit(X, epochs=1, progress=False)
        np.testing.assert_array_equal(resumed.kernels.to_numpy(resumed.flat_params),
                                      straight.kernels.to_numpy(straight.flat_params),
                                      err_msg="resume on the device is not exact")
        straight.save(f"{d}/g.npz")
        cpu = fastvae.load(f"{d}/g.npz", backend="cpu")
        cpu.save(f"{d}/c2.npz")
        back = fastvae.load(f"{d}/c2.npz", backend=backend)
        np.testing.assert_array_equal(back.kernels.to_numpy(back.flat_params), cpu.flat_params,
                                      err_msg="a checkpoint moved GPU -> CPU -> GPU changed")


def speed(backend, batches=(128, 1024), steps=30):
    """Median ms per canonical training step: fastvae on ``backend`` against PyTorch eager
    (on the GPU when torch sees one), taking turns.  None when PyTorch is missing."""
    try:
        import torch
    except ImportError:
        return None
    from .benchmark.impls import FastvaeImpl, TorchImpl, make_batches
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"torch_device": dev}
    for B in batches:
        fv = FastvaeImpl(backend, "canonical")
        tv = TorchImpl("eager", "canonical")
        tv.module.to(dev)
        xs = make_batches(784, B)
        xd = [fv.model.kernels.asarray(x) for x in xs]
        xt = [torch.from_numpy(x).to(dev) for x in xs]
        sync_f = (lambda: fv.model.kernels.xp.cuda.Device().synchronize()) if fv.model.kernels.DEVICE \
            else (lambda: None)
        sync_t = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        times = {"fastvae": [], "torch": []}
        for r in range(steps):
            for name, fn, data, sync in (("fastvae", fv.train_step, xd, sync_f),
                                         ("torch", tv.train_step, xt, sync_t)):
                sync()
                t = time.perf_counter()
                fn(data[r % 8])
                sync()
                times[name].append(time.perf_counter() - t)
        med = {k: 1e3 * float(np.median(v[steps // 3:])) for k, v in times.items()}
        out[B] = {**med, "speedup": med["torch"] / med["fastvae"]}
    return out


def environment(backend_ok):
    info = {"fastvae": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "machine": platform.machine()}
    if backend_ok:
        from .backends import cuda
        try:  # (a broken install fails here: the report says so, the checks show where)
            xp = cuda.device().xp  # CuPy (or, in the tests, the emulator standing in for it)
            rt = xp.cuda.runtime
            props = rt.getDeviceProperties(xp.cuda.Device().id)
            name = props["name"]
            info.update(gpu=name.decode() if isinstance(name, bytes) else str(name),
                        compute_capability=f"{props.get('major')}.{props.get('minor')}",
                        sm_count=cuda.device().sm_count, driver=rt.driverGetVersion(),
                        runtime=rt.runtimeGetVersion(), cupy=getattr(xp, "__version__", "?"))
        except Exception as e:  # noqa: BLE001  (a report: say what could not be read)
            info["gpu_info_error"] = f"{type(e).__name__}: {e}"
    return info


CHECKS = (("kernels against the reference", check_kernels),
          ("training step against the reference", check_training_step),
          ("200 steps, resume, cross-device checkpoints", check_training_run))


def run(backend="cuda", with_speed=True, log=print):
    """Run the checks on ``backend``; returns the report (a dict)."""
    from .backends import cuda_status
    problem = cuda_status() if backend == "cuda" else None
    report = {"environment": environment(problem is None and backend == "cuda"),
              "backend": backend, "checks": [], "ok": True}
    if problem is not None:
        report["gpu_skipped"] = problem
        log(f"GPU part skipped: {problem}")
        backend = "cpu"  # still check this machine's fast backend against the reference
        report["backend"] = "cpu"
    for title, fn in CHECKS:
        if backend == "cpu" and fn is check_training_run:
            continue  # cpu against cpu proves nothing
        t = time.perf_counter()
        try:
            fn(backend)
            res = {"check": title, "ok": True}
        except Exception as e:  # noqa: BLE001  (a report, not a crash: say what failed)
            res = {"check": title, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                   "where": traceback.format_exc(limit=3)[-1500:]}
            report["ok"] = False
        res["seconds"] = round(time.perf_counter() - t, 2)
        report["checks"].append(res)
        log(f"{'ok  ' if res['ok'] else 'FAIL'} {title} ({res['seconds']} s)"
            + ("" if res["ok"] else f"\n     {res['error']}"))
    if with_speed and backend == "cuda":
        try:
            report["speed"] = speed(backend)
        except Exception as e:  # noqa: BLE001
            report["speed"] = {"error": f"{type(e).__name__}: {e}"}
        log(f"speed (median ms per canonical training step): {report['speed']}")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fastvae selftest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    rep = run(with_speed=not a.no_speed, log=(lambda s: None) if a.json else print)
    if a.json:
        print(json.dumps(rep, indent=1, default=str))
    else:
        print("\n--- paste from here ---")
        print(json.dumps(rep, indent=1, default=str))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
