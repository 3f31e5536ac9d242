"""One rank of a data-parallel test run: ``mpiexec -n N python mpi_worker.py SPEC.json``.

SPEC: {"out": dir, "backend", "dtype", "fit": {fit's settings}, "epochs", "rows", "val_rows",
"layout": a block layout of tests/blocks_data.py (its table instead of the default data),
"model": {VAE arguments}, "checkpoint": path or null, "resume": path or null,
"fail": {"rank", "step", "kind": "raise" | "nan" | "sigint" | "sigint2" | "update"} or null
(at that forward call of that rank: raise, a NaN input, a Ctrl-C, or two; "update": a
MemoryError in that optimizer update), "stop": {"rank", "epoch"} or null (a callback
raising StopTraining after that epoch, on that rank only), "of_rank": {rank: {"rows": n,
"fit": {...}, "model": {...}, "data": ...}} (what differs on that rank), "data": "shift" (the
last row halved) | {"nan_row": i} (a NaN in row i) | {"changed_row": i} (one value of row i
changed); "of_rank": {r: {"data_dtype": ...}} holds that rank's data in another dtype;
"emu_dir": dir (run the cuda backend on the emulated GPU built there, tests/cuda_emu.py), and faults on one rank: "sync_error":
{"rank", "call"} (that stream synchronize raises, as CuPy reports a kernel's fault),
"warnings_error": rank (warnings are errors there), "stream_fail": rank (progress on a
stream whose writes fail), "exit": {"rank", "epoch"} (a callback calls sys.exit),
"extra_forward": rank (one forward pass before fit), "sigint_prepare": rank (Ctrl-C while
fit checks its data)}.  "eval": true estimates the ELBO and log-likelihood of the validation
rows with comm after fit; of_rank's "eval": {"rows": n, "width": w, "elbo": {...},
"log_likelihood": {...}} changes that rank's estimate data or arguments (their errors are
reported as elbo_error / log_likelihood_error); of_rank's "backend" that rank's backend.
Every rank writes OUT/rank<r>.npz (its parameters) and OUT/rank<r>.json (history or error).
"""
import json
import os
import signal
import sys
import traceback
import warnings

import numpy as np
from mpi4py import MPI

import fastvae


def data(rows, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((rows, 30)) * rng.random(30)).astype(np.float64)


def main(spec_path):
    spec = json.load(open(spec_path))
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if spec.get("emu_dir"):
        emulate_gpu(spec, rank)
    if spec.get("warnings_error") == rank:
        warnings.simplefilter("error")
    if spec.get("sigint_prepare") == rank:
        from fastvae.training import fit as fit_module
        checked = fit_module._checked

        def interrupted(*a, **k):
            if fit_module._checked is interrupted:  # (once: a second Ctrl-C aborts)
                fit_module._checked = checked
                os.kill(os.getpid(), signal.SIGINT)
            return checked(*a, **k)
        fit_module._checked = interrupted
    mine = spec.get("of_rank", {}).get(str(rank), {})
    X = data(mine.get("rows", spec["rows"])).astype(mine.get("data_dtype", spec["dtype"]))
    change = mine.get("data", spec.get("data"))
    if change == "shift":
        X[-1] *= 0.5
    elif change is not None and "changed_row" in change:
        X[change["changed_row"], 3] += 0.25
    elif change is not None:
        X[change["nan_row"], 3] = np.nan
    V = data(spec.get("val_rows", 40), seed=1).astype(spec["dtype"])
    table, val_table = {}, {}
    if spec.get("layout"):  # a block model: a table with conditions, exposures, missing cells
        import blocks_data
        X, table = blocks_data.fit_args(spec["layout"], mine.get("rows", spec["rows"]),
                                        dtype=spec["dtype"])
        V, val_table = blocks_data.fit_args(spec["layout"], spec.get("val_rows", 40), seed=1,
                                            dtype=spec["dtype"])
        spec["model"] = {**spec["model"], **blocks_data.model_kw(spec["layout"])}
    if spec.get("resume"):
        model = fastvae.load(spec["resume"], backend=spec["backend"])
    else:
        model = fastvae.VAE(None if table or spec.get("layout") else 30,
                            backend=mine.get("backend", spec["backend"]),
                            dtype=spec["dtype"],
                            **{**spec["model"], **mine.get("model", {})})
    fail = spec.get("fail")
    if fail and fail["rank"] == rank and fail["kind"] == "update":
        from fastvae.training import optim
        step, updates = optim.Optimizer.step, [0]

        def failing_update(self, *a, **k):
            updates[0] += 1
            if updates[0] == fail["step"]:
                raise MemoryError("injected failure in the update")
            return step(self, *a, **k)
        optim.Optimizer.step = failing_update
    elif fail and fail["rank"] == rank:
        forward, calls = model.forward, [0]

        def failing(x, *a, **k):
            calls[0] += 1
            if calls[0] == fail["step"]:
                if fail["kind"] == "raise":
                    raise RuntimeError("injected failure")
                if fail["kind"] == "sigint":
                    os.kill(os.getpid(), signal.SIGINT)
                elif fail["kind"] == "sigint2":  # Ctrl-C twice: abort now
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)
                else:  # (a new array of the model's device: x * NaN)
                    y = model.kernels.xp.empty(x.shape, dtype=x.dtype)
                    y[...] = np.nan
                    x = y
            return forward(x, *a, **k)
        model.forward = failing
    callbacks = []
    stop = spec.get("stop")
    if stop and stop["rank"] == rank:
        def stop_after(model, rec):
            if rec["epoch"] == stop["epoch"]:
                raise fastvae.StopTraining
        callbacks.append(stop_after)
    exit_ = spec.get("exit")
    if exit_ and exit_["rank"] == rank:
        def leave(model, rec):
            if rec["epoch"] == exit_["epoch"]:
                sys.exit(3)
        callbacks.append(leave)
    kw = {}
    if spec.get("stream_fail") == rank:
        kw = dict(progress=True, stream=FailingStream())
    if spec.get("extra_forward") == rank:
        model.forward(X[:5])
    out = {"rank": rank}
    try:
        h = model.fit(X, epochs=spec["epochs"], callbacks=callbacks,
                      val=(V, *val_table.values()) if val_table else V, **table,
                      **{"progress": False, **kw},
                      checkpoint=spec.get("checkpoint"), comm=comm,
                      **{**spec["fit"], **mine.get("fit", {})})
        out.update(history=[{k: v for k, v in r.items() if "seconds" not in k
                             and k != "samples_per_s"} for r in h],
                   interrupted=h.interrupted)
    except Exception as e:  # noqa: BLE001  (reported to the test)
        out.update(error=f"{type(e).__name__}: {e}", where=traceback.format_exc())
    if spec.get("eval") and "error" not in out:  # the estimates, sharded over the ranks
        ev_kw = mine.get("eval", {})
        W = data(ev_kw["rows"], seed=1).astype(spec["dtype"]) if "rows" in ev_kw else V
        W = W[:, :ev_kw.get("width", W.shape[1])]
        try:
            ev = model.elbo(W, **{"n_samples": 3, "batch_size": 7, **ev_kw.get("elbo", {})},
                            comm=comm)
            out.update(elbo=[ev.recon, ev.kl])
        except Exception as e:  # noqa: BLE001
            out.update(elbo_error=f"{type(e).__name__}: {e}")
        try:
            ll = model.log_likelihood(W, **{"k": 20, "batch_size": 6,
                                            **ev_kw.get("log_likelihood", {})}, comm=comm)
            out.update(log_likelihood=ll.per_row.tolist())
        except Exception as e:  # noqa: BLE001
            out.update(log_likelihood_error=f"{type(e).__name__}: {e}")
    # each report appears whole or not at all: an abort of the job (which the tests cause on
    # purpose) may kill this rank in the middle of writing it
    base = f"{spec['out']}/rank{rank}"
    with open(base + ".npz.part", "wb") as f:
        np.savez(f, params=model.kernels.to_numpy(model.flat_params))
    os.replace(base + ".npz.part", base + ".npz")
    with open(base + ".json.part", "w") as f:
        json.dump(out, f)
    os.replace(base + ".json.part", base + ".json")
    return 1 if "error" in out else 0


class FailingStream:
    """A progress stream whose writes fail (a closed pipe)."""

    def isatty(self):
        return False

    def write(self, text):
        raise BrokenPipeError("[Errno 32] Broken pipe")

    def flush(self):
        pass


def emulate_gpu(spec, rank):
    """The cuda backend on the emulated GPU (the library the test built in emu_dir)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cuda_emu
    import fastvae.backends
    from fastvae.backends import cuda as C
    lib, sigs = cuda_emu.build_library(out_dir=spec["emu_dir"])
    fastvae.backends.cuda_status = lambda raise_if_missing=False: None
    C.use_device(cuda_emu.emulated_device(lib, sigs))
    err = spec.get("sync_error")
    if err and err["rank"] == rank:
        calls = [0]

        def synchronize(self):
            calls[0] += 1
            if calls[0] == err["call"]:
                raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was "
                                   "encountered")
        cuda_emu._Stream.synchronize = synchronize


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
