"""Data-parallel training over MPI: N ranks give what one process gives with the same global
batch (float64, to the rounding of the sums: relative 1e-9 after 2 epochs), a fixed N is
bit-reproducible, checkpoints move between numbers of ranks, a failure on one rank stops
every rank with its rank and cause (and never hangs them), and data that differs between
ranks is refused before training.  Runs real MPI processes (``mpiexec`` from the mpich
wheel); skipped, saying why, without mpi4py.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastvae

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")

try:
    import mpi4py  # noqa: F401  (not mpi4py.MPI: that would start MPI in pytest's process)
    MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
except ImportError:
    MPIEXEC = None
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="needs mpi4py and mpiexec "
                                "(pip install 'fastvae[mpi]')")

FIT = dict(batch_size=50, optimizer="adam", lr=3e-3, kl_warmup=1.0, binarize="dynamic",
           val_samples=2)
MODEL = dict(hidden=(16,), latent_dim=4, seed=3, free_bits=0.02)


def run_mpi(n, tmp_path, name, **spec):
    out = tmp_path / name
    out.mkdir()
    spec = {"out": str(out), "backend": "cpu", "dtype": "float64", "fit": FIT,
            "epochs": 2, "rows": 230, "model": MODEL, **spec}
    path = out / "spec.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, WORKER, str(path)],
                       capture_output=True, text=True, timeout=180)
    # (None for a rank that wrote nothing: the job was aborted)
    ranks = [json.loads((out / f"rank{i}.json").read_text())
             if (out / f"rank{i}.json").exists() else None for i in range(n)]
    params = [np.load(out / f"rank{i}.npz")["params"]
              if (out / f"rank{i}.npz").exists() else None for i in range(n)]
    return r, ranks, params


def one_process(epochs=2, model=None, layout=None, **fit_kw):
    import mpi_worker
    if layout:
        import blocks_data
        X, table = blocks_data.fit_args(layout, 230)
        V, vt = blocks_data.fit_args(layout, 40, seed=1)
        m = fastvae.VAE(backend="cpu", dtype="float64", **(model or MODEL),
                        **blocks_data.model_kw(layout))
        h = m.fit(X, epochs=epochs, val=(V, *vt.values()), progress=False, **table,
                  **{**FIT, **fit_kw})
        return m, h
    m = fastvae.VAE(30, backend="cpu", dtype="float64", **(model or MODEL))
    h = m.fit(mpi_worker.data(230), epochs=epochs, val=mpi_worker.data(40, seed=1),
              progress=False, **{**FIT, **fit_kw})
    return m, h


@needs_mpi
@pytest.mark.parametrize("layout,n", [("mixed", 2), ("wide_nb", 3)])
def test_block_models_train_on_n_ranks_as_one_process(layout, n, tmp_path):
    """A table (every block kind, conditions, exposures, missing cells; per-condition
    dispersions) carries its conditions and exposures in its rows through the shards."""
    fit = dict(FIT, binarize="none")
    r, ranks, params = run_mpi(n, tmp_path, layout, fit=fit, layout=layout)
    assert r.returncode == 0, r.stderr + str(ranks)
    m, h = one_process(layout=layout, **fit)
    for p in params:
        np.testing.assert_array_equal(p, params[0])
    np.testing.assert_allclose(params[0], m.flat_params, rtol=1e-9, atol=1e-12)
    for a, b in zip(ranks[0]["history"], h):
        for k in ("train_loss", "val_neg_elbo"):
            assert a[k] == pytest.approx(b[k], rel=1e-9), k


#: (ranks, model, fit): every one 2 epochs of 230 rows, float64, validation each epoch
CONFIGS = {
    # free bits (the gate on the global batch's KL), dynamic binarization, KL warm-up, an
    # uneven last batch (30 rows), 50 rows on 3 ranks (17, 17, 16)
    "free-bits-3": (3, MODEL, FIT),
    "free-bits-2": (2, MODEL, FIT),
    # several samples per row, Gaussian likelihood, 45-row batches (23 + 22 on 2 ranks; the
    # last, 5 rows: 3 + 2), SGD with Nesterov momentum and global-norm clipping
    "gaussian-L3": (2, dict(hidden=(12, 8), latent_dim=3, seed=5, n_samples=3,
                            likelihood="gaussian", activation="tanh"),
                    dict(FIT, batch_size=45, optimizer="sgd", lr=0.02, momentum=0.9,
                         clip_norm=0.5, val_samples=3, binarize="none")),
    # the IWAE bound with K=4, batches of 64 rows (the last 38 dropped), AdamW
    "iwae-K4": (2, dict(hidden=(16,), latent_dim=4, seed=7, n_samples=4, objective="iwae"),
                dict(FIT, batch_size=64, optimizer="adamw", lr=3e-3, drop_last=True,
                     kl_warmup=0)),
    # DReG gradients on 3 ranks, 7 rows a batch: 3 + 2 + 2, and the last batch 6: 2 + 2 + 2
    "dreg-K3": (3, dict(hidden=(10,), latent_dim=2, seed=11, n_samples=3,
                        objective="iwae-dreg", activation="elu"),
                dict(FIT, batch_size=7, lr=1e-3, binarize="none", kl_warmup=0)),
    # each rank's 25 rows cut into 3 shards (9 + 8 + 8), the last batch's 15 into 5 + 5 + 5,
    # with dynamic binarization and KL warm-up (fit's shards: no free bits)
    "shards-3": (2, dict(MODEL, free_bits=0.0), dict(FIT, shards=3)),
    # a weight average (the ranks' parameters: the average; their steps: the raw weights)
    "average-2": (2, MODEL, dict(FIT, average=0.9)),
}


@needs_mpi
@pytest.mark.parametrize("name", list(CONFIGS))
def test_n_ranks_train_as_one_process(name, tmp_path):
    n, model, fit = CONFIGS[name]
    r, ranks, params = run_mpi(n, tmp_path, name, model=model, fit=fit, eval=True)
    assert r.returncode == 0, r.stderr + str(ranks)
    m, h = one_process(model=model, **fit)
    for p in params:  # every rank holds the same parameters ...
        np.testing.assert_array_equal(p, params[0])
    # ... which are the single process's, to the rounding of the summed gradients
    np.testing.assert_allclose(params[0], m.flat_params, rtol=1e-9, atol=1e-12)
    assert len(ranks[0]["history"]) == len(h) == 2
    for a, b in zip(ranks[0]["history"], h):
        for k in ("train_loss", "train_neg_elbo", "val_neg_elbo", "beta", "steps"):
            assert a[k] == pytest.approx(b[k], rel=1e-9), k
    # elbo and log_likelihood with comm: each rank its share of the rows, every rank the
    # whole result, the single process's numbers (the ranks' parameters differ from its
    # by round-off, hence the tolerance)
    import mpi_worker
    V = mpi_worker.data(40, seed=1)
    ev = m.elbo(V, n_samples=3)
    ll = m.log_likelihood(V, k=20)
    for rep in ranks:
        np.testing.assert_allclose(rep["elbo"], [ev.recon, ev.kl], rtol=1e-8)
        np.testing.assert_allclose(rep["log_likelihood"], ll.per_row, rtol=1e-8)
        assert rep["elbo"] == ranks[0]["elbo"]


@needs_mpi
def test_a_fixed_number_of_ranks_is_bit_reproducible(tmp_path):
    _, _, first = run_mpi(2, tmp_path, "a")
    _, _, second = run_mpi(2, tmp_path, "b")
    np.testing.assert_array_equal(first[0], second[0])


@needs_mpi
def test_a_checkpoint_written_by_two_ranks_resumes_on_one_and_on_three(tmp_path):
    ck = str(tmp_path / "ck.npz")
    r, _, _ = run_mpi(2, tmp_path, "first", epochs=1, checkpoint=ck)
    assert r.returncode == 0, r.stderr
    straight, _ = one_process(epochs=2)
    one = fastvae.load(ck, backend="cpu")
    import mpi_worker
    one.fit(mpi_worker.data(230), epochs=1, val=mpi_worker.data(40, seed=1), progress=False)
    np.testing.assert_allclose(one.flat_params, straight.flat_params, rtol=1e-9, atol=1e-12)
    r, _, params = run_mpi(3, tmp_path, "three", epochs=1, resume=ck, fit={})
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(params[0], straight.flat_params, rtol=1e-9, atol=1e-12)


@needs_mpi
def test_a_checkpoint_written_by_one_process_resumes_on_two_ranks(tmp_path):
    ck = str(tmp_path / "one.npz")
    first, _ = one_process(epochs=1)
    first.save(ck)
    straight, _ = one_process(epochs=2)
    r, ranks, params = run_mpi(2, tmp_path, "two", epochs=1, resume=ck, fit={})
    assert r.returncode == 0, r.stderr + str(ranks)
    np.testing.assert_allclose(params[0], straight.flat_params, rtol=1e-9, atol=1e-12)
    assert [h["epoch"] for h in ranks[1]["history"]] == [1, 2]


@needs_mpi
@pytest.mark.parametrize("kind,cause", [("raise", "RuntimeError: injected failure"),
                                        ("nan", "FloatingPointError: the loss is nan")])
def test_a_failure_on_one_rank_stops_every_rank_and_names_it(kind, cause, tmp_path):
    r, ranks, params = run_mpi(3, tmp_path, kind, fail={"rank": 1, "step": 4, "kind": kind})
    assert r.returncode != 0
    for rep in ranks:
        assert "DistributedError" in rep["error"] and f"rank 1: {cause}" in rep["error"]
    for p in params:  # no rank took the failed step: they agree
        np.testing.assert_array_equal(p, params[0])


@needs_mpi
def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """Rank 2 alone gets SIGINT during step 3 of epoch 2 (forward call 9: five training
    steps and one validation pass before it); every rank finishes that step and stops,
    rank 0 writes the checkpoint, and resuming it on one process finishes the run exactly."""
    ck = str(tmp_path / "ck.npz")
    r, ranks, params = run_mpi(3, tmp_path, "sigint", epochs=3, checkpoint=ck,
                               fail={"rank": 2, "step": 9, "kind": "sigint"})
    assert r.returncode == 0, r.stderr + str(ranks)
    for rep, p in zip(ranks, params):
        assert rep["interrupted"] and len(rep["history"]) == 1, rep
        np.testing.assert_array_equal(p, params[0])
    resumed = fastvae.load(ck, backend="cpu")
    assert resumed.train_state.epoch_steps == 3 and resumed.train_state.step == 8
    import mpi_worker
    resumed.fit(mpi_worker.data(230), epochs=2, val=mpi_worker.data(40, seed=1),
                progress=False)
    straight, _ = one_process(epochs=3)
    np.testing.assert_allclose(resumed.flat_params, straight.flat_params, rtol=1e-9,
                               atol=1e-12)


@needs_mpi
def test_ctrl_c_twice_on_one_rank_aborts_every_rank_at_once(tmp_path):
    r, ranks, _ = run_mpi(3, tmp_path, "abort", epochs=50,
                          fail={"rank": 1, "step": 4, "kind": "sigint2"})
    assert r.returncode != 0
    assert "Ctrl-C twice on MPI rank 1: aborting every rank" in r.stderr
    assert ranks == [None, None, None]  # nobody finished (and nobody was left waiting)


@needs_mpi
def test_an_error_in_one_ranks_update_aborts_every_rank(tmp_path):
    """After the agreement nothing can be told to the other ranks: the failing rank says
    why and aborts the job rather than leave them waiting in the next collective."""
    r, ranks, _ = run_mpi(2, tmp_path, "update", fail={"rank": 1, "step": 3, "kind": "update"})
    assert r.returncode != 0
    assert ("MPI rank 1 failed in the optimizer update (MemoryError: injected failure in the "
            "update): aborting every rank") in r.stderr


@needs_mpi
def test_a_callback_stopping_one_rank_stops_them_all(tmp_path):
    r, ranks, params = run_mpi(2, tmp_path, "stop", epochs=3, stop={"rank": 1, "epoch": 1})
    assert r.returncode == 0, r.stderr + str(ranks)
    for rep, p in zip(ranks, params):
        assert len(rep["history"]) == 1 and not rep["interrupted"], rep
        np.testing.assert_array_equal(p, params[0])


@needs_mpi
@pytest.mark.parametrize("differ,message", [
    ({"rows": 200}, "DataError: the MPI ranks differ in the training data (rank 0: 230 rows "
                    "of 30, rank 1: 200 rows of 30)"),
    ({"data": "shift"}, "DataError: the MPI ranks differ in the training data (same shape, "
                        "different values)"),
    ({"fit": {"lr": 1e-3}}, "ValueError: the MPI ranks differ in the settings;"),
    ({"model": {"seed": 4}}, "ValueError: the MPI ranks differ in the model, the parameters;"),
    ({"model": {"beta": 2.0}}, "ValueError: the MPI ranks differ in the model;"),
    # (the backends round differently: the ranks' parameters would drift apart)
    ({"backend": "numpy"}, "ValueError: the MPI ranks differ in the backend;")])
def test_ranks_that_differ_are_refused_before_training(differ, message, tmp_path):
    r, ranks, params = run_mpi(2, tmp_path, "differ", of_rank={"1": differ})
    assert r.returncode != 0
    for rep in ranks:
        assert message in rep["error"], rep["error"]
    for p in params:  # nothing trained
        fresh = fastvae.VAE(30, backend="cpu", dtype="float64", **MODEL)
        if differ.get("model") is None:
            np.testing.assert_array_equal(p, fresh.flat_params)


@needs_mpi
@pytest.mark.parametrize("differ,elbo_msg,ll_msg", [
    ({"width": 20}, "data: rows have 20 values, the model expects 30",
     "data: rows have 20 values, the model expects 30"),
    ({"rows": 30}, "DataError: the MPI ranks differ in the data (rank 0: 40 rows of 30, "
                   "rank 1: 30 rows of 30)", "DataError: the MPI ranks differ in the data"),
    ({"elbo": {"n_samples": 0}, "log_likelihood": {"seed": 1}},
     "n_samples must be a positive integer, got 0",
     "ValueError: the MPI ranks differ in the arguments;"),
])
def test_estimates_with_ranks_refuse_bad_or_differing_input_on_every_rank(differ, elbo_msg,
                                                                          ll_msg, tmp_path):
    """elbo and log_likelihood with comm: a rank whose data or arguments are refused, or
    ranks whose data or arguments differ, raise on every rank (none is left waiting in the
    gather, none returns a number that mixes two inputs)."""
    r, ranks, _ = run_mpi(2, tmp_path, "est", epochs=0, eval=True,
                          of_rank={"1": {"eval": differ}})
    for rep in ranks:
        assert "error" not in rep, rep
        assert elbo_msg in rep["elbo_error"], rep
        assert ll_msg in rep["log_likelihood_error"], rep


@needs_mpi
def test_bad_data_stops_every_rank_before_training(tmp_path):
    """Every rank scans its whole in-memory copy: the NaN in row 100 is found by each of the
    3 ranks, each raises the DataError itself, before any step; nobody waits."""
    r, ranks, params = run_mpi(3, tmp_path, "nan", data={"nan_row": 100})
    assert r.returncode != 0
    for rep in ranks:
        assert rep["error"] == "DataError: training data: 1 NaN or infinite value(s)", rep
    fresh = fastvae.VAE(30, backend="cpu", dtype="float64", **MODEL)
    for p in params:
        np.testing.assert_array_equal(p, fresh.flat_params)


@needs_mpi
def test_a_nan_in_one_ranks_copy_outside_its_share_stops_every_rank_naming_it(tmp_path):
    """Row 30 is NaN on rank 1 only: outside rank 1's share of every scan that splits rows
    (rank 0 holds rows 0..114) and not among the 64 rows sampled across the copies.  Rank
    1's scan of its whole copy finds it: rank 1 raises the DataError, rank 0 a
    DistributedError naming rank 1 and the cause, before any step."""
    r, ranks, params = run_mpi(2, tmp_path, "nan1", fit={**FIT, "shuffle": False,
                                                         "binarize": "none"},
                               of_rank={"1": {"data": {"nan_row": 30}}})
    assert r.returncode != 0
    assert ranks[1]["error"] == "DataError: training data: 1 NaN or infinite value(s)"
    assert ranks[0]["error"] == ("DistributedError: fit refused on rank 1: DataError: "
                                 "training data: 1 NaN or infinite value(s)"), ranks[0]
    fresh = fastvae.VAE(30, backend="cpu", dtype="float64", **MODEL)
    for p in params:
        np.testing.assert_array_equal(p, fresh.flat_params)


@needs_mpi
def test_one_differing_value_in_one_ranks_copy_stops_every_rank(tmp_path):
    """One value of row 30 (not among the 64 rows sampled across the copies) differs on
    rank 1: the checksums of the whole copies differ, and every rank refuses to train."""
    r, ranks, params = run_mpi(2, tmp_path, "changed", of_rank={"1": {"data": {
        "changed_row": 30}}})
    assert r.returncode != 0
    for rep in ranks:
        assert rep["error"] == ("DataError: the MPI ranks differ in the training data (same "
                                "shape, different values); every rank must run the same "
                                "script on the same data, with the same model and "
                                "settings"), rep
    fresh = fastvae.VAE(30, backend="cpu", dtype="float64", **MODEL)
    for p in params:
        np.testing.assert_array_equal(p, fresh.flat_params)


@needs_mpi
def test_ranks_holding_the_data_in_other_dtypes_are_told_so(tmp_path):
    """Rank 1 holds the same values as float32: the copies are compared by their bytes as
    stored, so the ranks refuse, naming how each holds its data."""
    r, ranks, _ = run_mpi(2, tmp_path, "dtype", of_rank={"1": {"data_dtype": "float32"}})
    assert r.returncode != 0
    for rep in ranks:
        assert rep["error"].startswith(
            "DataError: the MPI ranks differ in the training data (rank 0: float64 in memory, "
            "rank 1: float32 in memory: give every rank the same kind of array)"), rep


@needs_mpi
def test_rank_0_failing_in_its_output_stops_every_rank(tmp_path):
    """Only rank 0 writes progress: an error there (a closed pipe: after epoch 1's line)
    is told to every rank at the next agreement instead of leaving rank 0 out of it."""
    r, ranks, params = run_mpi(2, tmp_path, "stream", stream_fail=0)
    assert r.returncode != 0
    for rep in ranks:
        assert rep["error"].startswith("DistributedError: training stopped on every rank: "
                                       "rank 0: BrokenPipeError"), rep
    np.testing.assert_array_equal(params[0], params[1])


@needs_mpi
def test_a_warning_that_is_an_error_on_rank_0_only_refuses_the_fit_on_every_rank(tmp_path):
    """Rank 0 alone reports a changed setting (a SettingChangedWarning without progress);
    where warnings are errors it raises before anything changes, and the others learn."""
    ck = str(tmp_path / "ck.npz")
    one_process(epochs=1)[0].save(ck)
    r, ranks, params = run_mpi(2, tmp_path, "warn", resume=ck, fit={"lr": 1e-2},
                               warnings_error=0)
    assert r.returncode != 0
    assert ranks[0]["error"].startswith("SettingChangedWarning: fit: settings changed"), ranks
    assert ranks[1]["error"].startswith("DistributedError: fit refused on rank 0: "
                                        "SettingChangedWarning"), ranks
    saved = fastvae.load(ck)
    for p in params:
        np.testing.assert_array_equal(p, saved.flat_params)


@needs_mpi
def test_sys_exit_in_a_callback_on_one_rank_stops_every_rank(tmp_path):
    r, ranks, params = run_mpi(2, tmp_path, "exit", exit={"rank": 1, "epoch": 1})
    assert r.returncode != 0
    for rep in ranks:
        assert rep["error"] == ("DistributedError: training stopped on every rank: rank 1: "
                                "SystemExit: 3"), rep
    np.testing.assert_array_equal(params[0], params[1])


@needs_mpi
def test_ranks_that_drew_different_noise_are_refused(tmp_path):
    """A forward pass before fit on rank 1 alone moves its noise counter: the ranks would
    draw different noise for one step, so the fit is refused."""
    r, ranks, _ = run_mpi(2, tmp_path, "noise", extra_forward=1)
    assert r.returncode != 0
    for rep in ranks:
        assert "ValueError: the MPI ranks differ in the training state;" in rep["error"]


@needs_mpi
def test_ctrl_c_while_fit_checks_the_data_stops_every_rank_before_the_first_step(tmp_path):
    ck = str(tmp_path / "ck.npz")
    r, ranks, params = run_mpi(3, tmp_path, "early", sigint_prepare=2, checkpoint=ck)
    assert r.returncode == 0, r.stderr + str(ranks)
    fresh = fastvae.VAE(30, backend="cpu", dtype="float64", **MODEL)
    for rep, p in zip(ranks, params):
        assert rep["interrupted"] and rep["history"] == [], rep
        np.testing.assert_array_equal(p, fresh.flat_params)
    st = fastvae.load(ck).train_state
    assert st.step == 0 and st.row == 0


def emu_spec(emu_library):
    return {"backend": "cuda", "emu_dir": os.path.dirname(emu_library[0])}


@needs_mpi
def test_on_the_emulated_gpu_two_ranks_train_as_one_process(emu_library, tmp_path):
    """The cuda path: gradients staged through (emulated) pinned memory, each step's loss
    read with the step (the Allreduce waits anyway)."""
    r, ranks, params = run_mpi(2, tmp_path, "gpu", **emu_spec(emu_library))
    assert r.returncode == 0, r.stderr + str(ranks)
    m, h = one_process()  # (the cpu backend: the same noise, float64 round-off apart)
    np.testing.assert_array_equal(params[0], params[1])
    np.testing.assert_allclose(params[0], m.flat_params, rtol=1e-9, atol=1e-12)
    for a, b in zip(ranks[0]["history"], h):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)


@needs_mpi
def test_on_the_emulated_gpu_a_nan_loss_on_one_rank_is_named_at_its_step(emu_library,
                                                                          tmp_path):
    r, ranks, params = run_mpi(2, tmp_path, "gpunan", fail={"rank": 1, "step": 3,
                                                            "kind": "nan"},
                               **emu_spec(emu_library))
    assert r.returncode != 0
    for rep in ranks:
        assert "rank 1: FloatingPointError: the loss is nan at epoch 1, step 3;" \
            in rep["error"], rep
    np.testing.assert_array_equal(params[0], params[1])


@needs_mpi
def test_on_the_emulated_gpu_a_kernel_fault_on_one_rank_stops_every_rank(emu_library,
                                                                         tmp_path):
    """CuPy reports a kernel's fault at the next synchronizing call: the step waits for
    its GPU work before the agreement, so the fault is told to every rank there."""
    r, ranks, params = run_mpi(2, tmp_path, "gpufault", sync_error={"rank": 1, "call": 3},
                               **emu_spec(emu_library))
    assert r.returncode != 0
    for rep in ranks:
        assert "rank 1: RuntimeError: cudaErrorIllegalAddress" in rep["error"], rep
    np.testing.assert_array_equal(params[0], params[1])


@pytest.mark.parametrize("backend,local,expected", [
    ("cuda", 0, "cuda:0"), ("cuda", 1, "cuda:1"), ("cuda", 3, "cuda:1"), ("auto", 2, "cuda:0"),
    ("cuda:1", 0, "cuda:1"), ("cpu", 1, "cpu"), ("numpy", 5, "numpy")])
def test_the_ranks_of_a_machine_take_its_gpus_in_turn(backend, local, expected, emu):
    from fastvae.training.distributed import rank_backend
    assert emu.xp.cuda.runtime.getDeviceCount() == 2  # (the emulator has two GPUs)
    assert rank_backend(backend, local) == expected


@needs_mpi
def test_local_rank_counts_the_ranks_on_this_machine():
    code = ("from mpi4py import MPI; from fastvae.training.distributed import local_rank; "
            "c = MPI.COMM_WORLD; pairs = c.gather((c.Get_rank(), local_rank(c))); "
            "print(pairs if c.Get_rank() == 0 else '', end='')")
    p = subprocess.run([MPIEXEC, "-n", "3", sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[(0, 0), (1, 1), (2, 2)]"  # (one machine: local = rank)


@pytest.mark.parametrize("comm", [True, "MPI.COMM_WORLD", 2])
def test_comm_must_be_a_communicator(comm):
    m = fastvae.VAE(30, hidden=(8,), latent_dim=3, backend="cpu")
    before = m.flat_params.copy()
    with pytest.raises(TypeError, match=r"comm must be an mpi4py communicator \(e.g. "
                                        r"MPI.COMM_WORLD\), got"):
        m.fit(np.zeros((64, 30)), comm=comm, progress=False)
    np.testing.assert_array_equal(m.flat_params, before)
    assert m.train_state is None


def test_gradients_staged_through_host_memory_on_the_emulated_gpu(emu):
    """The cuda path without a CUDA-aware MPI: the device buffer goes to a pinned host
    buffer, is reduced there, and comes back (a fake communicator of two equal ranks)."""
    pytest.importorskip("mpi4py")
    from fastvae.training.distributed import Distributed

    class TwoEqualRanks:
        received = []

        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

        def allgather(self, obj):
            return [obj, obj]

        def Allreduce(self, sendbuf, recvbuf, op=None):
            buf = recvbuf
            self.received.append(type(buf).__name__)
            buf *= 2  # the sum of two ranks holding the same values

    model = fastvae.VAE(30, hidden=(8,), latent_dim=3, backend="cuda")
    os.environ["FASTVAE_MPI_CUDA_AWARE"] = "0"
    try:
        d = Distributed(TwoEqualRanks(), model)
    finally:
        del os.environ["FASTVAE_MPI_CUDA_AWARE"]
    g = model.flat_grads
    g[...] = emu.xp.asarray(np.arange(g.size, dtype=np.float32))
    d.allreduce_(g)
    np.testing.assert_array_equal(emu.xp.asnumpy(g), 2 * np.arange(g.size, dtype=np.float32))
    assert TwoEqualRanks.received == ["ndarray"]  # a host array went to MPI, not the device's
    d.cuda_aware = True
    d.allreduce_(g)
    assert TwoEqualRanks.received[-1] == "EmuArray"  # CUDA-aware: the device array itself


from cuda_helpers import emu, emu_library  # noqa: E402,F401  (fixtures)


# ------------------------------------------------------------------------------ the CLI
CLI = ["train", "--n-images", "600", "--hidden", "24", "--latent", "3", "--dtype", "float64",
       "--batch-size", "50", "--backend", "cpu", "--binarize", "dynamic"]


def cli(tmp_path, args, n=None, env=None, **kw):
    cmd = [sys.executable, "-m", "fastvae", *args]
    if n is not None:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kw)


@needs_mpi
def test_cli_under_mpiexec_trains_data_parallel_and_rank_0_alone_writes(tmp_path):
    two = cli(tmp_path, [*CLI, "--epochs", "2", "--out", "two"], n=2)
    out, err = two.communicate(timeout=300)
    assert two.returncode == 0, err
    assert "data parallel on 2 MPI ranks" in err
    assert err.count("epoch   2  train -elbo") == 1 and out.count("test negative ELBO") == 1
    assert sorted(os.listdir(tmp_path)) == ["two"]  # (no rank wrote a run of its own)
    one = cli(tmp_path, [*CLI, "--epochs", "2", "--out", "one", "--quiet"])
    assert one.wait(timeout=300) == 0
    a, b = (fastvae.load(str(tmp_path / d / "model.npz")) for d in ("two", "one"))
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-9, atol=1e-12)
    assert a.history[-1]["val_neg_elbo"] == pytest.approx(b.history[-1]["val_neg_elbo"],
                                                          rel=1e-9)


@needs_mpi
def test_ctrl_c_on_mpiexec_saves_a_checkpoint_from_rank_0_that_resumes_on_one_process(
        tmp_path):
    import signal
    import time
    run = cli(tmp_path, [*CLI, "--epochs", "200", "--out", "c", "--no-pictures"], n=2)
    ck = tmp_path / "c" / "model.npz"
    deadline = time.monotonic() + 120
    while not ck.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)  # mpiexec passes it on to every rank
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert err.count("checkpoint written to c/model.npz") == 1, err
    assert err.count("continue with: fastvae train --out c --resume") == 1
    m = fastvae.load(str(ck))
    st = m.train_state
    assert 1 <= st.epoch < 200 and m.history[-1]["epoch"] == st.epoch
    more = st.epoch + 1
    resumed = cli(tmp_path, ["train", "--out", "c", "--resume", "--epochs", str(more),
                             "--quiet", "--no-pictures"])
    assert resumed.wait(timeout=300) == 0
    assert fastvae.load(str(ck)).train_state.epoch == more


def test_no_distributed_trains_alone_without_importing_mpi(tmp_path):
    args = [*CLI, "--epochs", "1", "--out", "alone", "--no-distributed", "--quiet",
            "--no-pictures"]
    code = ("import sys; from fastvae.cli.main import main; "
            f"rc = main({args!r}); print(rc, 'mpi4py' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0"},
                       timeout=300)
    assert p.stdout.split()[-2:] == ["0", "False"], p.stderr


@pytest.mark.parametrize("env,size", [({}, 1), ({"PMI_SIZE": "4"}, 4),
                                      ({"OMPI_COMM_WORLD_SIZE": "3"}, 3),
                                      ({"PMI_SIZE": ""}, 1)])
def test_the_launchers_process_count_is_read_from_its_variables(env, size, monkeypatch):
    from fastvae.training.distributed import detected_size
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert detected_size() == size
