"""A bf16 product's operand rounded where it is written: the activation (forward and
backward) and the likelihood's gradient write their output's bf16 bits beside it (the
kernels' ``half``), so no rounding pass of its own reads the output again.  The bits are
to_bf16's, every other output is unchanged, and a model's steps are the same to the bit
with the fusion on and off, on every backend."""
from __future__ import annotations

import numpy as np
import pytest

from fastvae import VAE, Adam
from fastvae.backends import cpu as CPU
from fastvae.backends import cuda as C
from fastvae.backends import reference as R
from fastvae.backends.codes import (ACT_ELU, ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU,
                                    ACT_SIGMOID, ACT_SOFTPLUS, ACT_TANH, LIK_BERNOULLI,
                                    LIK_GAUSSIAN)

from cuda_helpers import emu, emu_library  # noqa: F401  (fixtures)

CPU_BF16 = CPU.bf16_support()
ACTS = [ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU, ACT_TANH, ACT_SIGMOID, ACT_ELU, ACT_SOFTPLUS]
WHERE = ["numpy", "cpu", "emulated"]


def backend(where, request):
    """(kernels, xp) of a test's backend."""
    if where == "emulated":
        return C, request.getfixturevalue("emu").xp
    return {"numpy": R, "cpu": CPU}[where], np


def bits(a):
    want = np.empty(a.shape, np.uint16)
    R.to_bf16(want, np.ascontiguousarray(a, dtype=np.float32))
    return want


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("rows", [1, 37, 300])
def test_the_activation_writes_its_bf16_bits_beside_its_output(where, rows, request):
    """bias_act_fwd and act_bias_bwd with ``half``: the outputs of the call without it, to the
    bit, and half = to_bf16 of the output (rows past the kernels' row blocks included)."""
    bk, xp = backend(where, request)
    rng = np.random.default_rng(rows)
    N = 45
    pre = (3 * rng.standard_normal((rows, N))).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    dy = rng.standard_normal((rows, N)).astype(np.float32)
    for act in ACTS:
        y0, y1 = xp.asarray(pre.copy()), xp.asarray(pre.copy())
        half = xp.asarray(np.zeros((rows, N), np.uint16))
        bk.bias_act_fwd(y0, xp.asarray(b), act, 0.1)
        bk.bias_act_fwd(y1, xp.asarray(b), act, 0.1, half=half)
        y = bk.to_numpy(y1)
        np.testing.assert_array_equal(y, bk.to_numpy(y0))
        np.testing.assert_array_equal(bk.to_numpy(half), bits(y))
        out = [(xp.asarray(np.zeros((rows, N), np.float32)), xp.asarray(np.zeros(N, np.float32)))
               for _ in range(2)]
        half = xp.asarray(np.zeros((rows, N), np.uint16))
        bk.act_bias_bwd(*out[0], xp.asarray(dy), y1, act, 0.1)
        bk.act_bias_bwd(*out[1], xp.asarray(dy), y1, act, 0.1, half=half)
        da = bk.to_numpy(out[1][0])
        np.testing.assert_array_equal(da, bk.to_numpy(out[0][0]))
        np.testing.assert_array_equal(bk.to_numpy(out[1][1]), bk.to_numpy(out[0][1]))
        np.testing.assert_array_equal(bk.to_numpy(half), bits(da))


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind,learn", [(LIK_BERNOULLI, False), (LIK_GAUSSIAN, False),
                                        (LIK_GAUSSIAN, True)])
@pytest.mark.parametrize("rows", [5, 300])
def test_the_likelihood_writes_its_gradients_bf16_bits(where, kind, learn, rows, request):
    bk, xp = backend(where, request)
    rng = np.random.default_rng(3)
    D = 29
    out0 = rng.standard_normal((rows, D)).astype(np.float32)
    b = rng.standard_normal(D).astype(np.float32)
    x = (rng.random((rows, D)) < 0.4).astype(np.float32) if kind == LIK_BERNOULLI else \
        rng.standard_normal((rows, D)).astype(np.float32)
    ls = (0.1 * rng.standard_normal(D)).astype(np.float32)
    runs = []
    for with_half in (False, True):
        bufs = dict(dout=np.zeros((rows, D), np.float32), loss=np.zeros(rows, np.float32),
                    db=np.zeros(D, np.float32), dls=np.zeros(D, np.float32),
                    out=out0.copy())
        dev = {k: xp.asarray(v) for k, v in bufs.items()}
        half = xp.asarray(np.zeros((rows, D), np.uint16)) if with_half else None
        bk.likelihood_fwd_bwd(dev["dout"], dev["loss"], dev["db"], dev["dls"], dev["out"],
                              xp.asarray(b), xp.asarray(x), xp.asarray(ls), kind, learn,
                              1.0 / rows, half=half)
        runs.append(({k: bk.to_numpy(v) for k, v in dev.items()},
                     None if half is None else bk.to_numpy(half)))
    (plain, _), (fused, half) = runs
    for k in plain:
        np.testing.assert_array_equal(fused[k], plain[k], err_msg=k)
    np.testing.assert_array_equal(half, bits(fused["dout"]))


ARCHS = [dict(hidden=(48, 40), latent_dim=6),
         dict(hidden=(40,), latent_dim=5, activation="tanh", likelihood="gaussian"),
         dict(hidden=(36, 24), latent_dim=4, n_conditions=3, inject_conditions=True)]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("arch", range(len(ARCHS)))
def test_a_bf16_models_steps_are_the_same_with_the_fusion_on_and_off(where, arch, request):
    """Three training steps (every product on bf16 operands), with the shadows written by
    the kernels and with a rounding pass each: the same losses and parameters to the bit;
    and with the fusion on, no rounding pass reads an activation or a gradient."""
    if where == "cpu" and CPU_BF16 is not None:
        pytest.skip(CPU_BF16)
    name = "cuda" if where == "emulated" else where
    if where == "emulated":
        request.getfixturevalue("emu")
    rng = np.random.default_rng(arch)
    kw = ARCHS[arch]
    D = 30
    x = rng.random((96, D)).astype(np.float32)
    if kw.get("likelihood") != "gaussian":
        x = (x < 0.4).astype(np.float32)
    if kw.get("n_conditions"):  # (the data rows end with their conditions)
        x = np.hstack([x, np.eye(3, dtype=np.float32)[rng.integers(0, 3, 96)]])
    results = []
    for fuse in (True, False):
        m = VAE(D, seed=1, backend=name, precision="bf16", bf16_rule=(0, 0), **kw)
        m._mm.fuse = fuse
        rounded = []
        real = m.kernels.to_bf16  # (counted here; the backend's own is put back below)
        m.kernels.to_bf16 = lambda dst, src: (rounded.append(src.shape), real(dst, src))[1]
        try:
            opt = Adam(m, lr=3e-3)
            losses = [float(m.train_step(m.kernels.asarray(x[i * 32:(i + 1) * 32]), opt))
                      for i in range(3)]
        finally:
            m.kernels.to_bf16 = real
        results.append((losses, m.kernels.to_numpy(m.flat_params).copy(), rounded))
    (l1, p1, r1), (l0, p0, r0) = results
    assert l1 == l0
    np.testing.assert_array_equal(p1, p0)
    hidden = [(32, h) for h in kw["hidden"]]
    # the hidden layers' outputs and gradients are never rounded by a pass of their own
    # with the fusion on (with injected conditions the decoder's products read [g | c],
    # which still is), and the likelihood's gradient (the data's shape) is once a step less
    # (a model with conditions has column blocks, whose block kernel writes it unfused)
    assert not [s for s in r1 if s in hidden] and [s for s in r0 if s in hidden], r1
    assert r0.count((32, D)) - r1.count((32, D)) == (0 if m.columns is not None else 3)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_cpu_kernels_cut_into_chunks_write_the_same_bits(threads):
    """Outputs large enough for the cpu backend to cut into chunks (on 1 and 2 threads):
    each chunk writes its own rows' bits, the same as one call's."""
    rng = np.random.default_rng(11)
    R_, N = 4000, 45
    pre = rng.standard_normal((R_, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    x = (rng.random((R_, N)) < 0.4).astype(np.float32)
    before = CPU.get_num_threads()
    CPU.set_num_threads(threads)
    try:
        y, half = pre.copy(), np.zeros((R_, N), np.uint16)
        CPU.bias_act_fwd(y, b, ACT_TANH, 0.0, half=half)
        np.testing.assert_array_equal(half, bits(y))
        da, db, half = np.empty_like(y), np.empty(N, np.float32), np.zeros((R_, N), np.uint16)
        CPU.act_bias_bwd(da, db, pre, y, ACT_TANH, 0.0, half=half)
        np.testing.assert_array_equal(half, bits(da))
        dout, half = np.empty_like(pre), np.zeros((R_, N), np.uint16)
        CPU.likelihood_fwd_bwd(dout, np.empty(R_, np.float32), np.empty(N, np.float32),
                               np.zeros(1, np.float32), pre.copy(), b, x,
                               np.zeros(1, np.float32), LIK_BERNOULLI, False, 1.0 / R_,
                               half=half)
        np.testing.assert_array_equal(half, bits(dout))
    finally:
        CPU.set_num_threads(before)


@pytest.mark.parametrize("where", WHERE)
def test_a_wrong_bf16_output_is_refused_before_anything_is_written(where, request):
    """A half of the wrong shape, dtype or layout is an error naming the kernel, on every
    backend (the kernels write it row by row: it would be written out of bounds)."""
    bk, xp = backend(where, request)
    y = xp.asarray(np.ones((6, 4), np.float32))
    b = xp.asarray(np.ones(4, np.float32))  # (a call that ran would write 2s)
    bad = [xp.asarray(np.zeros((6, 5), np.uint16)), xp.asarray(np.zeros((6, 4), np.float32)),
           xp.asarray(np.zeros((4, 6), np.uint16)).T]
    for half in bad:
        with pytest.raises(ValueError, match="bias_act_fwd: half must be"):
            bk.bias_act_fwd(y, b, ACT_RELU, 0.0, half=half)
        np.testing.assert_array_equal(bk.to_numpy(y), 1.0)  # nothing was written
        da = xp.asarray(np.zeros((6, 4), np.float32))
        with pytest.raises(ValueError, match="act_bias_bwd: half must be"):
            bk.act_bias_bwd(da, xp.asarray(np.zeros(4, np.float32)), y, y, ACT_RELU, 0.0,
                            half=half)
        np.testing.assert_array_equal(bk.to_numpy(da), 0.0)
        with pytest.raises(ValueError, match="likelihood_fwd_bwd: half must be"):
            bk.likelihood_fwd_bwd(xp.asarray(np.zeros((6, 4), np.float32)),
                                  xp.asarray(np.zeros(6, np.float32)),
                                  xp.asarray(np.zeros(4, np.float32)),
                                  xp.asarray(np.zeros(1, np.float32)), y, b, y,
                                  xp.asarray(np.zeros(1, np.float32)), LIK_BERNOULLI, False,
                                  1.0, half=half)
