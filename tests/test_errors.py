"""Bad input gets a clear error that names the problem, before any kernel runs."""
import numpy as np
import pytest

import fastvae

from conftest import make_data, make_model


@pytest.fixture(params=["numpy", "cpu"])
def model(request):
    return make_model(backend=request.param, dtype="float32")


def test_wrong_width(model):
    with pytest.raises(ValueError, match=r"x has 6 columns but the model's input_dim is 7"):
        model.forward(np.zeros((4, 6), np.float32))


@pytest.mark.parametrize("shape", [(7,), (2, 7, 1), ()])
def test_wrong_rank(model, shape):
    with pytest.raises(ValueError, match="x must be a 2-D array"):
        model.forward(np.zeros(shape, np.float32))


def test_empty_batch(model):
    with pytest.raises(ValueError, match="no rows"):
        model.forward(np.zeros((0, 7), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(model, bad):
    x = make_data(model)
    x[2, 3] = bad
    with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite"):
        model.forward(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.encode(x)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bernoulli_range(model, bad):
    x = make_data(model)
    x[0, 0] = bad
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*Bernoulli"):
        model.forward(x)


def test_gaussian_accepts_any_finite_values():
    m = make_model(likelihood="gaussian", dtype="float32")
    x = make_data(m) * 10 - 5
    assert np.isfinite(m.forward(x).loss)


@pytest.mark.parametrize("dtype", ["uint8", "int64", "bool"])
def test_integer_dtypes_refused(model, dtype):
    with pytest.raises(TypeError, match=f"floating-point array, got dtype {dtype}"):
        model.forward(np.zeros((3, 7), dtype))


def test_other_float_precision_is_converted(model):
    x = make_data(model).astype(np.float64)
    c = model.forward(x)
    assert c.x.dtype == np.float32


def test_eps_wrong_shape():
    m = make_model(n_samples=2)
    x = make_data(m, B=4)
    with pytest.raises(ValueError, match=r"eps must have shape \(2, 4, 3\) for n_samples=2"):
        m.forward(x, eps=np.zeros((4, 3)))
    m1 = make_model()
    m1.forward(x, eps=np.zeros((4, 3)))  # (B, Z) is fine when n_samples is 1
    with pytest.raises(ValueError, match="NaN"):
        m1.forward(x, eps=np.full((4, 3), np.nan))
    with pytest.raises(TypeError, match="eps must be a floating-point"):
        m1.forward(x, eps=np.zeros((4, 3), int))


@pytest.mark.parametrize("kw,match", [
    (dict(activation="gelu"), r"unknown activation 'gelu'; choose one of: relu, leaky_relu"),
    (dict(likelihood="poisson"), r"unknown likelihood 'poisson'; choose one of: bernoulli"),
    (dict(backend="gpu"), r"unknown backend 'gpu' \(backend=\); choose one of: numpy, cpu"),
    (dict(dtype="float16"), r"dtype must be 'float32' or 'float64'"),
    (dict(Z=0), r"latent_dim must be a positive integer"),
    (dict(hidden=(4, -1)), r"hidden width must be a positive integer"),
    (dict(n_samples=1.5), r"n_samples must be a positive integer"),
    (dict(beta=-1), r"beta must be a finite number >= 0"),
    (dict(free_bits=float("nan")), r"free_bits must be"),
    (dict(obs_scale="learned"), r"obs_scale='learned' needs likelihood='gaussian'"),
    (dict(likelihood="gaussian", obs_scale=0), r"obs_scale must be a positive finite"),
])
def test_bad_configuration(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)


def test_stale_cache_refused():
    m = make_model()
    x = make_data(m)
    c1 = m.forward(x)
    m.forward(x)
    with pytest.raises(RuntimeError, match="stale"):
        m.backward(c1)
    with pytest.raises(TypeError, match="Cache returned by forward"):
        m.backward({"x": x})


def test_optimizer_arguments():
    m = make_model()
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0"):
        fastvae.Adam(m, lr=0)
    with pytest.raises(ValueError, match="betas"):
        fastvae.Adam(m, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        fastvae.SGD(m, nesterov=True)
    with pytest.raises(ValueError, match=r"grads do not match.*missing: \['dec.out.b'\]"):
        g = {k: np.zeros_like(v) for k, v in m.parameters().items() if k != "dec.out.b"}
        fastvae.Adam(m).step(g)


def test_clipping_refuses_non_finite_gradients_without_touching_parameters():
    m = make_model()
    g = {k: np.zeros_like(v) for k, v in m.parameters().items()}
    g["dec.out.b"][0] = np.nan
    before = m.flat_params.copy()
    with pytest.raises(FloatingPointError, match="gradient norm is nan"):
        fastvae.Adam(m, clip_norm=1.0).step(g)
    # the packed gradient was written, but the parameters were not updated
    assert np.array_equal(m.flat_params, before)
