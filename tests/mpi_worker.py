"""One rank of a data-parallel test run: ``mpiexec -n N python mpi_worker.py SPEC.json``.

SPEC: {"out": dir, "backend", "dtype", "fit": {fit's settings}, "epochs", "rows", "val_rows",
"model": {VAE arguments}, "checkpoint": path or null, "resume": path or null,
"fail": {"rank", "step", "kind": "raise" | "nan" | "sigint"} or null (at that forward call
of that rank: raise, a NaN input, or a Ctrl-C), "stop": {"rank", "epoch"} or null (a callback
raising StopTraining after that epoch, on that rank only), "of_rank": {rank: {"rows": n,
"fit": {...}, "model": {...}, "data": ...}} (what differs on that rank), "data": "shift" (the
last row halved) | {"nan_row": i} (a NaN in row i)}.
Every rank writes OUT/rank<r>.npz (its parameters) and OUT/rank<r>.json (history or error).
"""
import json
import os
import signal
import sys
import traceback

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
    mine = spec.get("of_rank", {}).get(str(rank), {})
    X = data(mine.get("rows", spec["rows"])).astype(spec["dtype"])
    change = mine.get("data", spec.get("data"))
    if change == "shift":
        X[-1] *= 0.5
    elif change is not None:
        X[change["nan_row"], 3] = np.nan
    V = data(spec.get("val_rows", 40), seed=1).astype(spec["dtype"])
    if spec.get("resume"):
        model = fastvae.load(spec["resume"], backend=spec["backend"])
    else:
        model = fastvae.VAE(30, backend=spec["backend"], dtype=spec["dtype"],
                            **{**spec["model"], **mine.get("model", {})})
    fail = spec.get("fail")
    if fail and fail["rank"] == rank:
        forward, calls = model.forward, [0]

        def failing(x, *a, **k):
            calls[0] += 1
            if calls[0] == fail["step"]:
                if fail["kind"] == "raise":
                    raise RuntimeError("injected failure")
                if fail["kind"] == "sigint":
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    x = x * np.nan
            return forward(x, *a, **k)
        model.forward = failing
    callbacks = []
    stop = spec.get("stop")
    if stop and stop["rank"] == rank:
        def stop_after(model, rec):
            if rec["epoch"] == stop["epoch"]:
                raise fastvae.StopTraining
        callbacks.append(stop_after)
    out = {"rank": rank}
    try:
        h = model.fit(X, epochs=spec["epochs"], val=V, progress=False, callbacks=callbacks,
                      checkpoint=spec.get("checkpoint"), comm=comm,
                      **{**spec["fit"], **mine.get("fit", {})})
        out.update(history=[{k: v for k, v in r.items() if "seconds" not in k
                             and k != "samples_per_s"} for r in h],
                   interrupted=h.interrupted)
        if spec.get("eval"):  # the estimates, sharded over the ranks
            ev = model.elbo(V, n_samples=3, batch_size=7, comm=comm)
            ll = model.log_likelihood(V, k=20, batch_size=6, comm=comm)
            out.update(elbo=[ev.recon, ev.kl], log_likelihood=ll.per_row.tolist())
    except Exception as e:  # noqa: BLE001  (reported to the test)
        out.update(error=f"{type(e).__name__}: {e}", where=traceback.format_exc())
    np.savez(f"{spec['out']}/rank{rank}.npz", params=model._bk.to_numpy(model.flat_params))
    with open(f"{spec['out']}/rank{rank}.json", "w") as f:
        json.dump(out, f)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
