"""The cpu backend's threads: kernels split over row or parameter ranges give the serial
kernel's results (the same bits, but for column sums, which are added in chunk order), and
never depend on the thread count: 1 and 2 threads train to the same bits."""
from __future__ import annotations

import numpy as np
import pytest

from fastvae import VAE, Adam
from fastvae.backends import cpu as K
from fastvae.backends import reference as R
from fastvae.backends.cpu import dense, likelihood, optim, pool, reparam, split
from fastvae.backends.aligned import aligned_empty
from fastvae.backends.codes import ACT_RELU, ACT_TANH, LIK_BERNOULLI, LIK_GAUSSIAN


@pytest.fixture
def threads():
    """Set the thread count for a test, then restore it."""
    before = K.get_num_threads()
    yield K.set_num_threads
    K.set_num_threads(before)


def test_chunks_depend_on_the_shape_alone():
    assert pool.n_chunks(128, 784) == 1          # the canonical batch 128 is not split
    assert pool.n_chunks(2048, 784) == pool.MAX_CHUNKS
    assert pool.n_chunks(3, 10 ** 6) == 3        # never more chunks than rows
    for n, k in [(10, 3), (7, 7), (100, 8), (5, 1)]:
        b = pool.bounds(n, k)
        assert b[0][0] == 0 and b[-1][1] == n and len(b) == k
        assert all(hi - lo in (n // k, n // k + 1) for lo, hi in b)
        assert all(b[i][1] == b[i + 1][0] for i in range(k - 1))


def test_the_pool_runs_every_task_once_and_raises_a_workers_error(threads):
    import threading
    import time
    threads(2)
    p = pool.pool()
    seen = []

    def slow(i):  # slow enough that the worker takes some of the tasks
        time.sleep(0.002)
        seen.append((i, threading.current_thread() is threading.main_thread()))

    p.run(slow, [(i,) for i in range(50)])
    assert sorted(i for i, _ in seen) == list(range(50))
    assert {on_main for _, on_main in seen} == {True, False}  # both threads worked

    def fails_off_main(i):
        time.sleep(0.002)
        if threading.current_thread() is not threading.main_thread():
            raise ValueError(f"chunk {i} on the worker")

    with pytest.raises(ValueError, match="on the worker"):
        p.run(fails_off_main, [(i,) for i in range(16)])
    seen.clear()
    p.run(slow, [(i,) for i in range(4)])  # still usable, and in step
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3]


def test_an_interrupt_waits_for_the_workers_chunks(threads):
    """A Ctrl-C (here raised in the caller's chunk) returns only after the worker's chunk
    is done, and the pool stays in step for the next job."""
    import threading
    import time
    threads(2)
    p = pool.pool()
    done = []

    def task(i):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.05)  # (the worker has taken a task by now)
            raise KeyboardInterrupt
        time.sleep(0.3)
        done.append(i)

    with pytest.raises(KeyboardInterrupt):
        p.run(task, [(0,), (1,)])
    assert len(done) == 1  # the worker's chunk finished before run returned
    out = []
    p.run(lambda i: (time.sleep(0.01), out.append(i)), [(i,) for i in range(6)])
    assert sorted(out) == list(range(6))


def test_a_forked_child_makes_its_own_pool(threads):
    import os
    import time
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    threads(2)
    pool.pool().run(lambda i: None, [(0,), (1,)])  # the parent's workers exist
    import warnings
    with warnings.catch_warnings():  # (JAX, if another test imported it, warns of fork)
        warnings.simplefilter("ignore", RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # the child: a job on the pool must not wait for the parent's threads
        try:
            out = []
            pool.run(lambda i: out.append(i), [(i,) for i in range(4)])
            os._exit(0 if sorted(out) == [0, 1, 2, 3] else 3)
        except BaseException:  # noqa: BLE001
            os._exit(4)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in the pool")


def test_thread_count_is_checked(threads, monkeypatch):
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            K.set_num_threads(bad)
    monkeypatch.setenv(pool.ENV_VAR, "zero")
    with pytest.raises(ValueError, match="FASTVAE_NUM_THREADS must be a positive integer"):
        pool._default_threads()
    monkeypatch.setenv(pool.ENV_VAR, "3")
    assert pool._default_threads() == 3


def big(rng, R_, N, dtype=np.float32):
    return rng.standard_normal((R_, N)).astype(dtype)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_split_kernels_match_the_serial_ones_for_every_thread_count(n, threads):
    threads(n)
    rng = np.random.default_rng(0)
    R_, N = 1500, 300  # 450k elements: split into chunks
    assert pool.n_chunks(R_, N) > 1
    y = big(rng, R_, N)
    b = rng.standard_normal(N).astype(np.float32)
    for act in (ACT_RELU, ACT_TANH):
        a1, a2 = y.copy(), y.copy()
        dense.bias_act_fwd(a1, b, act, 0.0)
        K.bias_act_fwd(a2, b, act, 0.0)
        np.testing.assert_array_equal(a2, a1)
        dy = big(rng, R_, N)
        da1, da2, db1, db2 = (np.empty_like(dy), np.empty_like(dy), np.empty(N, np.float32),
                              np.empty(N, np.float32))
        dense.act_bias_bwd(da1, db1, dy, a1, act, 0.0)
        K.act_bias_bwd(da2, db2, dy, a1, act, 0.0)
        np.testing.assert_array_equal(da2, da1)
        np.testing.assert_allclose(db2, db1, rtol=1e-4, atol=1e-4)
    # the likelihoods with their gradient (column sums in chunk order)
    D = 300
    x = (rng.random((R_, D)) < 0.4).astype(np.float32)
    for kind, learn, ls in [(LIK_BERNOULLI, False, np.zeros(1, np.float32)),
                            (LIK_GAUSSIAN, True, np.array([0.3], np.float32)),
                            (LIK_GAUSSIAN, True, rng.standard_normal(D).astype(np.float32))]:
        out = big(rng, R_, D)
        outs, res = [], []
        for fn in (likelihood.likelihood_fwd_bwd, K.likelihood_fwd_bwd):
            o = out.copy()
            dout, rows = np.empty_like(o), np.empty(R_, np.float32)
            db, dls = np.empty(D, np.float32), np.full(ls.shape, 7.0, np.float32)
            fn(dout, rows, db, dls, o, b, x, ls, kind, learn, 1.0 / R_)
            outs.append((o, dout, rows))
            res.append((db, dls))
        for u, v in zip(*outs):
            np.testing.assert_array_equal(v, u)
        for u, v in zip(*res):
            np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-6)
    # noise: the same bits whichever rows a call covers
    key = np.array([12345, 678], np.uint32)
    for dt, serial in ((np.float32, reparam.normal_eps_f32), (np.float64, reparam.normal_eps)):
        eps1, eps2 = np.empty((2, 3000, 20), dt), np.empty((2, 3000, 20), dt)
        serial(eps1, key, 17, 5)
        K.normal_eps(eps2, key, 17, 5)
        np.testing.assert_array_equal(eps2, eps1)
    # Adam over parameter ranges
    P = 600_000
    p, m, v, g = (rng.standard_normal(P).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    args = (1e-3, 0.9, 0.999, 1e-8, 0.0, False, 3, 1.0)
    s1 = [a.copy() for a in (p, m, v)]
    s2 = [a.copy() for a in (p, m, v)]
    optim.adam_step(*s1, g, *args)
    K.adam_step(*s2, g, *args)
    for u, w in zip(s1, s2):
        np.testing.assert_array_equal(w, u)
    # the weight average over parameter ranges
    a1, a2 = m.copy(), m.copy()
    optim.average_step(a1, p, 1e-3)
    K.average_step(a2, p, 1e-3)
    np.testing.assert_array_equal(a2, a1)
    # the data check's counts, and the bf16 rounding
    xb = x.copy()
    xb[5, 3], xb[1400, 2], xb[700, 9] = np.nan, 2.0, -np.inf
    assert K.check_data(xb, 0.0, 1.0) == (2, 1)
    h16, r16 = np.empty(xb.shape, np.uint16), np.empty(xb.shape, np.uint16)
    K.to_bf16(h16, out)
    R.to_bf16(r16, out)
    np.testing.assert_array_equal(h16, r16)


def train(n, precision="full", steps=50, batch=512):
    K.set_num_threads(n)
    rng = np.random.default_rng(1)
    # on 64-byte boundaries, as fit's batch buffers are: BLAS's path through a transposed
    # operand (the first weight gradient reads x^T) depends on where it starts
    X = aligned_empty(np, (batch * 4, 784), np.float32)
    X[...] = rng.random((batch * 4, 784)) < rng.random(784) ** 2
    model = VAE(784, (256,), 16, backend="cpu", seed=2, precision=precision)
    opt = Adam(model, lr=1e-3)
    for s in range(steps):
        model.train_step(X[(s % 4) * batch:(s % 4 + 1) * batch], opt)
    return model.flat_params.copy()


@pytest.mark.parametrize("precision", ["full", pytest.param("bf16", marks=pytest.mark.skipif(
    K.bf16_support() is not None, reason=str(K.bf16_support())))])
def test_one_and_two_threads_train_to_the_same_bits(precision, threads):
    """50 Adam steps at batch 512 (the likelihood, activations, noise, optimizer and data
    check all split): the parameters are bit-identical for 1, 2 and 3 threads."""
    assert pool.n_chunks(512, 784) > 1 and pool.n_chunks(512, 256) > 1
    one = train(1, precision)
    np.testing.assert_array_equal(train(2, precision), one)
    np.testing.assert_array_equal(train(3, precision), one)


def test_fit_with_a_block_model_is_the_same_for_any_thread_count(threads):
    from fastvae.core.blocks import Categorical, Gaussian, NegBinomial
    rng = np.random.default_rng(3)
    N = 1200
    X = np.column_stack([rng.standard_normal((N, 40)), rng.integers(0, 5, N),
                         rng.poisson(3.0, (N, 200))]).astype(np.float32)
    res = []
    for n in (1, 2):
        K.set_num_threads(n)
        m = VAE(likelihood=[Gaussian(40), Categorical(5), NegBinomial(200)], hidden=(64,),
                latent_dim=8, backend="cpu", seed=4)
        m.fit(X, epochs=2, batch_size=600, progress=False)
        res.append(m.flat_params.copy())
    assert pool.n_chunks(600, 40 + 5 + 200) > 1
    np.testing.assert_array_equal(res[1], res[0])


def test_split_module_covers_what_the_backend_exports():
    for name in ("bias_act_fwd", "act_bias_bwd", "likelihood_fwd", "likelihood_fwd_bwd",
                 "blocks_fwd", "blocks_fwd_bwd", "encoder_input", "normal_eps", "adam_step",
                 "sgd_step", "average_step", "check_data", "to_bf16"):
        assert getattr(K, name) is getattr(split, name), name
