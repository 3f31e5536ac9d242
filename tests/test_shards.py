"""fit's ``shards``: a batch cut into data-parallel shards on the cpu backend's threads.

The bits depend on the shard count, never on the thread count (1 and 2 threads train to the
same bits, whatever the model, objective or batch); a sharded run trains what an unsharded
one does, to the rounding of the gradient sums (float64: relative 1e-9); it resumes to the
bit; a failing shard leaves the step undone; and the BLAS library's own thread count is
given back after every step.
"""
from __future__ import annotations

import numpy as np
import pytest

import blocks_data
import fastvae
from cuda_helpers import emu, emu_library  # noqa: F401  (fixtures)
from fastvae import VAE, NegBinomial
from fastvae.backends import cpu
from fastvae.backends.cpu import blas_threads
from fastvae.training.fit import SettingChangedWarning
from fastvae.training.shards import ShardThreadsWarning

# (these tests run shards on fewer threads than shards on purpose: the bits must not
# depend on it; the warning that it is slow has a test of its own)
pytestmark = pytest.mark.filterwarnings(
    "ignore::fastvae.training.shards.ShardThreadsWarning")


@pytest.fixture
def threads():
    """Set the cpu backend's thread count for a test, then restore it."""
    before = cpu.get_num_threads()
    yield cpu.set_num_threads
    cpu.set_num_threads(before)


def binary(n, d=24, seed=0):
    return (np.random.default_rng(seed).random((n, d)) < 0.3).astype(np.float64)


# name -> (model kw, fit kw, data rows): a dense model with dynamic binarization and a
# last batch of one row (fewer rows than shards), an importance-weighted one with two
# samples, and a table (every block kind, conditions injected, exposures, missing cells)
CASES = {
    "dense": (dict(input_dim=24, hidden=(12,), latent_dim=3),
              dict(batch_size=20, binarize="dynamic"), 61),
    "iwae": (dict(input_dim=24, hidden=(12, 8), latent_dim=3, n_samples=2,
                  objective="iwae", activation="elu"), dict(batch_size=16), 50),
    "table": (dict(**blocks_data.model_kw("mixed"), hidden=(10,), latent_dim=3,
                   inject_conditions=True), dict(batch_size=24), 70),
}


def train(case, shards, epochs=2, dtype="float64", model=None, **extra):
    mkw, fkw, n = CASES[case]
    if case == "table":
        X, kw = blocks_data.fit_args("mixed", n, dtype=dtype)
    else:
        X, kw = binary(n), {}
    m = model or VAE(**mkw, dtype=dtype, seed=4, backend="cpu")
    h = m.fit(X, epochs=epochs, progress=False, shards=shards, lr=3e-3, **fkw, **kw,
              **extra)
    return m, h


def losses(h):
    return [r["train_loss"] for r in h]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_bits_do_not_depend_on_the_thread_count(case, dtype, threads):
    out = {}
    for n in (1, 2):
        threads(n)
        m, h = train(case, 2, dtype=dtype)
        out[n] = (m.flat_params.copy(), losses(h))
    np.testing.assert_array_equal(out[1][0], out[2][0])
    assert out[1][1] == out[2][1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_shards_train_what_one_pass_trains_to_the_rounding_of_the_sums(case, threads):
    threads(2)
    one, h1 = train(case, 1)
    for shards in (2, 3):
        m, h = train(case, shards)
        np.testing.assert_allclose(m.flat_params, one.flat_params, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(losses(h), losses(h1), rtol=1e-10)
        # the model's noise moved on one draw per step, as in the unsharded run
        assert m.noise.counter == one.noise.counter == m.train_state.step


@pytest.mark.skipif(cpu.bf16_support() is not None, reason=str(cpu.bf16_support()))
def test_bf16_products_in_shards_do_not_depend_on_the_thread_count(threads):
    """oneDNN's products from two shards at once (a stream and primitives per thread, one
    OpenMP thread each) train to the bits of the shards one after another."""
    out = {}
    for n in (1, 2, 1):
        threads(n)
        mkw, fkw, rows = CASES["table"]
        X, kw = blocks_data.fit_args("mixed", rows, dtype="float32")
        m = VAE(**mkw, seed=4, backend="cpu", precision="bf16")
        # (first a pass outside the shards, on a shard's shape, on this thread: oneDNN's
        # primitives made for it, on every OpenMP thread, are not the shards')
        m.encode(X[:12], conditions=kw["conditions"][:12])
        m.fit(X, epochs=2, progress=False, shards=2, lr=3e-3, **fkw, **kw)
        out.setdefault(n, []).append(m.flat_params.copy())
    np.testing.assert_array_equal(out[1][0], out[2][0])
    np.testing.assert_array_equal(out[1][1], out[2][0])


def test_a_setting_a_callback_changes_reaches_every_shard(threads):
    """The replicas take the model's settings at every step (here beta, lowered after the
    first epoch): the run is the unsharded one's, to the rounding of the sums."""
    def lower_beta(model, record):
        model.beta = 0.25

    threads(2)
    one, _ = train("table", 1, epochs=3, callbacks=[lower_beta])
    two, _ = train("table", 2, epochs=3, callbacks=[lower_beta])
    np.testing.assert_allclose(two.flat_params, one.flat_params, rtol=1e-9, atol=1e-12)


def test_a_sharded_run_resumes_to_the_bit_and_keeps_its_setting(tmp_path, threads):
    threads(2)
    straight, _ = train("table", 2, epochs=3)
    first, _ = train("table", 2, epochs=1)
    path = tmp_path / "m.npz"
    first.save(path)
    loaded = fastvae.load(path)
    assert loaded.train_state.settings["shards"] == 2
    X, kw = blocks_data.fit_args("mixed", CASES["table"][2])
    loaded.fit(X, epochs=2, progress=False, **kw)  # the saved settings, shards included
    np.testing.assert_array_equal(loaded.flat_params, straight.flat_params)


def test_a_failing_shard_leaves_the_step_undone(monkeypatch, threads):
    """An error in any shard's pass (here the second's, on the worker thread) is raised by
    fit, and the step it was in never happened: parameters, noise and position as before."""
    threads(2)
    m, _ = train("dense", 2, epochs=1)
    before = (m.flat_params.copy(), m.noise.counter, m.train_state.step)
    calls = {"n": 0}
    forward = VAE.forward

    def second_shard_fails(self, x, *a, **k):
        if self is not m:
            calls["n"] += 1
            raise MemoryError("injected in a replica's pass")
        return forward(self, x, *a, **k)

    monkeypatch.setattr(VAE, "forward", second_shard_fails)
    with pytest.raises(MemoryError, match="injected in a replica"):
        m.fit(binary(61), epochs=1, progress=False)
    assert calls["n"] == 1
    np.testing.assert_array_equal(m.flat_params, before[0])
    assert (m.noise.counter, m.train_state.step) == before[1:]


def test_ctrl_c_in_a_sharded_step_finishes_it_and_the_run_resumes_to_the_bit(threads,
                                                                          tmp_path):
    """A Ctrl-C during a step's shards (here during shard 0's pass) lets the step finish,
    stops the run with a checkpoint, and the resumed run is the straight one."""
    from conftest import interrupt_at
    threads(2)
    straight, _ = train("table", 2, epochs=2)
    mkw, fkw, n = CASES["table"]
    X, kw = blocks_data.fit_args("mixed", n)
    m = interrupt_at(VAE(**mkw, dtype="float64", seed=4, backend="cpu"), 4)
    path = tmp_path / "m.npz"
    h = m.fit(X, epochs=2, progress=False, shards=2, lr=3e-3, checkpoint=path, **fkw, **kw)
    st = m.train_state  # (3 steps an epoch: the 4th pass is epoch 2's first step)
    assert h.interrupted and (st.epoch, st.epoch_steps, st.step) == (1, 1, 4)
    resumed = fastvae.load(path)
    resumed.fit(X, epochs=1, progress=False, **kw)  # (the rest of the epoch in progress)
    assert resumed.train_state.epoch == 2
    np.testing.assert_array_equal(resumed.flat_params, straight.flat_params)


def test_the_blas_thread_count_is_given_back(threads):
    threads(2)
    counts = [get() for get, _ in blas_threads.controls()]
    seen = []

    def during(model, record):
        seen.append([get() for get, _ in blas_threads.controls()])

    mkw, fkw, n = CASES["dense"]
    VAE(**mkw, backend="cpu").fit(binary(n), epochs=1, progress=False, shards=2,
                                  callbacks=[during], **fkw)
    assert seen == [counts]  # (between steps too: the callback runs after an epoch)
    assert [get() for get, _ in blas_threads.controls()] == counts
    with blas_threads.limited_to_one():
        with blas_threads.limited_to_one():
            assert all(get() == 1 for get, _ in blas_threads.controls())
        assert all(get() == 1 for get, _ in blas_threads.controls())
    assert [get() for get, _ in blas_threads.controls()] == counts


def test_numpys_blas_is_found_on_linux():
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("the BLAS is looked up in /proc/self/maps (Linux)")
    assert blas_threads.controls(), "no BLAS thread-count functions found in this process"


def test_a_replica_shares_the_parameters_and_owns_its_buffers():
    m = VAE(likelihood=[NegBinomial(5, exposure=True)], n_conditions=2, hidden=(6,),
            latent_dim=2, backend="cpu", dtype="float64")
    r = m.replica()
    assert r.flat_params is m.flat_params and r.config() == m.config()
    assert r.flat_grads is not m.flat_grads and r.grads.flat is r.flat_grads
    assert r.noise is not m.noise and r.noise.key == m.noise.key
    assert r.workspaces is not m.workspaces and r.train_state is None
    x = m.compose(np.ones((4, 5)), np.eye(2)[[0, 1, 0, 1]], np.full(4, 10.0))
    gm = m.loss_and_grad(x, np.zeros((4, 2)))[1].flat.copy()
    gr = r.loss_and_grad(x, np.zeros((4, 2)))[1].flat
    np.testing.assert_array_equal(gr, gm)
    assert np.shares_memory(r.parameters()["dec.out.W"], m.flat_params)


@pytest.mark.parametrize("bad,message", [
    (0, "shards must be a positive integer"),
    ("2", "shards must be a positive integer"),
    (True, "shards must be a positive integer"),
])
def test_bad_shard_counts_are_named(bad, message):
    mkw, fkw, n = CASES["dense"]
    m = VAE(**mkw, backend="cpu")
    with pytest.raises(ValueError, match=message):
        m.fit(binary(n), epochs=1, progress=False, shards=bad, **fkw)
    assert m.train_state is None


def test_free_bits_are_refused_with_shards_saved_or_given():
    mkw, fkw, n = CASES["dense"]
    m = VAE(**mkw, free_bits=0.1, backend="cpu")
    with pytest.raises(ValueError, match=r"shards=2 with free_bits=0.1: free bits gate"):
        m.fit(binary(n), epochs=1, progress=False, shards=2, **fkw)
    m.fit(binary(n), epochs=1, progress=False, **fkw)  # shards=1: fine
    assert m.train_state.settings["shards"] == 1
    m2 = VAE(**mkw, backend="cpu")
    m2.fit(binary(n), epochs=1, progress=False, shards=2, **fkw)
    m2.free_bits = 0.1
    with pytest.raises(ValueError, match=r"free bits gate .* \(shards=2 is the saved run's: "
                                         r"pass shards=1 to fit, or --shards 1"):
        m2.fit(binary(n), epochs=1, progress=False)
    assert m2.train_state.epoch == 1
    with pytest.warns(SettingChangedWarning, match="shards 2 -> 1"):
        m2.fit(binary(n), epochs=1, progress=False, shards=1)
    assert m2.train_state.epoch == 2


def test_free_bits_set_during_a_sharded_run_stop_it_before_the_step(threads):
    def set_free_bits(model, record):
        model.free_bits = 0.1

    threads(2)
    m, _ = train("dense", 2, epochs=1)
    before = m.flat_params.copy()
    with pytest.raises(ValueError, match="free_bits=0.1 was set during a run with shards=2"):
        train("dense", 2, epochs=2, model=m, callbacks=[set_free_bits])
    # (the first of the two epochs ran; the step after the callback did not)
    assert m.train_state.epoch == 2 and m.train_state.epoch_steps == 0
    assert not np.array_equal(m.flat_params, before)


def test_shards_are_refused_on_a_gpu_given_or_saved(emu, tmp_path):
    """On the cuda backend (here the emulated device) a whole batch runs at once: shards
    given to fit are refused, and so is a run saved with shards and resumed there."""
    mkw, fkw, n = CASES["dense"]
    g = VAE(**mkw, backend="cuda")
    with pytest.raises(ValueError, match="shards=2 cuts each batch over the cpu backend's "
                                         "threads; a GPU runs the whole batch at once"):
        g.fit(binary(n), epochs=1, progress=False, shards=2, **fkw)
    assert g.train_state is None
    m, _ = train("dense", 2, epochs=1)
    m.save(tmp_path / "m.npz")
    moved = fastvae.load(tmp_path / "m.npz", backend="cuda")
    with pytest.raises(ValueError, match=r"\(shards=2 is the saved run's: pass shards=1"):
        moved.fit(binary(n), epochs=1, progress=False)
    with pytest.warns(SettingChangedWarning, match="shards 2 -> 1"):
        moved.fit(binary(n), epochs=1, progress=False, shards=1)
    assert moved.train_state.epoch == 2


@pytest.mark.filterwarnings("error::fastvae.training.shards.ShardThreadsWarning")
def test_more_shards_than_threads_says_it_is_slow_and_how_to_fix_it(threads):
    threads(1)
    with pytest.warns(ShardThreadsWarning, match=r"shards=2 on 1 thread of the cpu backend.*"
                      r"set_num_threads\(2\)") as got:
        train("dense", 2, epochs=1)
    assert got[0].filename == __file__  # (it points at the caller's fit, not into fastvae)
    threads(2)
    train("dense", 2, epochs=1)  # (a warning would be an error here)
    with pytest.warns(ShardThreadsWarning, match="shards=3 on 2 threads"):
        train("dense", 3, epochs=1)
