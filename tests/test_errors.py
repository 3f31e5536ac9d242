"""Bad input gets a clear error that names the problem, before any kernel runs."""
import json
import math
import re

import numpy as np
import pytest

import fastvae
from fastvae import Bernoulli
from fastvae.training.snapshot import snapshot

from conftest import interrupt_at, make_data, make_model


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


# ------------------------------------------------- every argument: refused, named, harmless
# Each table row is one bad value for one argument.  The check is the same everywhere: a
# ValueError (unless said otherwise) whose message names the argument and the value the
# user passed, so that the mistake can be found from the message alone.  None is in a fit
# table only where it is not the documented "keep the saved value".

SMALL = dict(input_dim=7, hidden=(5,), latent_dim=3, backend="numpy")


def small(**kw):
    """The small numpy-backend model of these tables (no compilation), kw overriding."""
    return fastvae.VAE(**{**SMALL, **kw})


def rows(n=40):
    """n rows of valid data for ``small()`` (in [0, 1], so Bernoulli-ready)."""
    return np.random.default_rng(0).random((n, 7)).astype("float32")


def names(arg, value):
    """A message naming ``arg`` and then ``value`` as the user wrote it (its repr), both as
    whole tokens: 'hidden' does not match inside 'decoder_hidden', nor -1 inside -1.5."""
    return (rf"(?<![\w.]){re.escape(arg)}(?!\w).*"
            rf"(?<![\w.\-]){re.escape(repr(value))}(?![\w.])")


def case(kw, match, exc=ValueError, id=None):
    return pytest.param(kw, match, exc,
                        id=id or ",".join(f"{k}={v!r}" for k, v in kw.items()))


NOT_POSITIVE_INT = [0, -1, 1.5, True, "3", None]
NOT_NONNEG_REAL = [-0.5, math.nan, math.inf, -math.inf, "1", True]
NOT_POSITIVE_REAL = [0, -1.0, math.nan, math.inf, "0.1", True]
NOT_BOOL = [1, 0, "yes", None]

VAE_BAD = [
    *[case({k: v}, names(k, v)) for k in ("input_dim", "latent_dim", "n_samples")
      for v in NOT_POSITIVE_INT],
    *[case({"hidden": h}, names("hidden", v))
      for h, v in [((4, 0), 0), ((4, -1), -1), ((4, 2.5), 2.5), ((True,), True), (0, 0),
                   (-3, -3), ("abc", "abc"), (None, None), (1.5, 1.5)]],
    *[case({"decoder_hidden": h}, names("decoder_hidden", v))
      for h, v in [((4, 0), 0), ((4, -1), -1), ((True,), True), (0, 0), ("abc", "abc"),
                   (1.5, 1.5)]],
    *[case({k: v}, names(k, v)) for k in ("beta", "free_bits")
      for v in [*NOT_NONNEG_REAL, None]],
    *[case(dict(activation=a, activation_alpha=v), names("activation_alpha", v))
      for a in ("leaky_relu", "elu") for v in [0, -0.5, math.nan, math.inf, "0.1", True]],
    *[case(dict(activation=a, activation_alpha=v),
           rf"activation={a!r} has none.*" + names("activation_alpha", v))
      for a in ("relu", "tanh", "sigmoid", "softplus") for v in [0.1, 0.0, 1]],
    *[case(dict(likelihood="gaussian", obs_scale=v), names("obs_scale", v))
      for v in [0, -1.0, math.nan, math.inf, "fixed", True, None]],
    *[case(dict(obs_scale=v), names("obs_scale", v) + ".*needs likelihood='gaussian'")
      for v in ["learned", "per_pixel"]],
    # a number of the Bernoulli likelihood's would be silently unused
    *[case(dict(obs_scale=v), r"obs_scale applies to likelihood='gaussian' only.*"
           + names("obs_scale", v)) for v in [0.5, 2, np.float32(0.3)]],
    *[case({"seed": v}, names("seed", v)) for v in [-1, 1.5, "x", True, None]],
    *[case({"dtype": v}, names("dtype", v))
      for v in ["float16", "int32", np.int32, None, "bogus"]],
    *[case({"activation": v}, rf"activation {re.escape(repr(v))}; choose one of: relu, "
                              r"leaky_relu, tanh, sigmoid, elu, softplus$")
      for v in ["gelu", "", None, 3]],
    *[case({"likelihood": v}, rf"likelihood {re.escape(repr(v))}; choose one of: bernoulli, "
                              r"gaussian$")
      for v in ["poisson", ""]],
    # not a name: a list of column blocks is the other thing it can be
    *[case({"likelihood": v}, r"likelihood must be 'bernoulli', 'gaussian' or a non-empty "
                              rf"list of blocks .*got {re.escape(repr(v))}$")
      for v in [None, 3, []]],
    case({"likelihood": [Bernoulli(2), 3]}, r"a likelihood block must be one of Gaussian, "
                                            r"Bernoulli, Categorical, Poisson, NegBinomial, ZINB.*got 3"),
    *[case({"backend": v}, rf"backend {re.escape(repr(v))} \(backend=\); choose one of: "
                           r"numpy, cpu, cuda, auto \(cuda:N for GPU N\)$")
      for v in ["gpu", "", 3]],
]


@pytest.mark.parametrize("kw,match,exc", VAE_BAD)
def test_vae_argument_refused(kw, match, exc):
    """Every constructor argument is checked, and the message says which one and what value
    (a config file typo must be findable from the message alone)."""
    with pytest.raises(exc, match=match):
        small(**kw)


@pytest.mark.parametrize("kw,check", [
    (dict(hidden=()), lambda m: m.enc_hidden == () and m.dec_hidden == ()),
    (dict(hidden=4), lambda m: m.enc_hidden == (4,)),
    (dict(hidden=[6, 4]), lambda m: m.dec_hidden == (4, 6)),  # None mirrors the encoder
    (dict(hidden=(6, 4), decoder_hidden=()), lambda m: m.dec_hidden == ()),
    (dict(decoder_hidden=3), lambda m: m.dec_hidden == (3,)),
    (dict(beta=0, free_bits=0), lambda m: m.beta == 0 and m.free_bits == 0),
    (dict(activation="leaky_relu", activation_alpha=0.2), lambda m: m.act_alpha == 0.2),
    (dict(activation="elu", activation_alpha=1e-3), lambda m: m.act_alpha == 1e-3),
    (dict(likelihood="gaussian", obs_scale="learned"), lambda m: m.learn_scale),
    (dict(likelihood="gaussian", obs_scale="per_pixel"), lambda m: m.logscale_size == 7),
    (dict(likelihood="gaussian", obs_scale=0.5), lambda m: not m.learn_scale),
    (dict(obs_scale=1), lambda m: m.obs_scale == 1.0),  # the default, as an int: fine
    # NumPy numbers are stored as plain floats: the model's config stays JSON
    (dict(likelihood="gaussian", obs_scale=np.float32(0.5)),
     lambda m: type(m.obs_scale) is float and json.dumps(m.config())),
    (dict(seed=0, dtype=np.float64), lambda m: m.dtype == np.float64),
    (dict(input_dim=np.int64(7), latent_dim=np.int32(2)), lambda m: m.latent_dim == 2),
])
def test_vae_edge_values_accepted(kw, check):
    """The edges of each range are allowed: the refusals above are not over-eager."""
    assert check(small(**kw))


X40 = rows()


class Lazy:
    """A table value built when the test runs (an object that needs a model, or data)."""

    def __init__(self, make, label):
        self.make, self.label = make, label

    def __repr__(self):
        return self.label


def _with_nan():
    x = rows()
    x[3, 2] = np.nan
    return x


OTHER_MODEL_ADAM = Lazy(lambda: fastvae.Adam(small()), "Adam(another model)")
X_NAN = Lazy(_with_nan, "X with a NaN")


FIT_BAD = [
    *[case({"epochs": v}, names("epochs", v)) for v in [-1, 1.5, True, "2", None]],
    *[case({k: v}, names(k, v)) for k in ("batch_size", "val_samples")
      for v in [0, -1, 1.5, True, "8"]],
    *[case({"lr": v}, names("lr", v)) for v in NOT_POSITIVE_REAL],
    *[case({"weight_decay": v}, names("weight_decay", v)) for v in NOT_NONNEG_REAL],
    *[case({"clip_norm": v}, names("clip_norm", v))
      for v in [0, -1.0, math.nan, -math.inf, "1", True]],
    *[case(dict(optimizer="sgd", momentum=v), names("momentum", v))
      for v in [-0.1, 1.0, 1.5, math.nan, "0.9", True]],
    *[case(dict(optimizer=o, momentum=0.9), rf"momentum applies to optimizer='sgd' only, "
                                           rf"not '{o or 'adam'}'")
      for o in [None, "adam", "adamw"]],
    *[case({"kl_warmup": v}, names("kl_warmup", v)) for v in NOT_NONNEG_REAL],
    *[case({"binarize": v}, r"(?=.*'none', 'dynamic')" + names("binarize", v))
      for v in ["static", "", True, 1]],
    *[case({k: v}, names(k, v)) for k in ("shuffle", "drop_last") for v in NOT_BOOL[:3]],
    *[case({"progress": v}, names("progress", v)) for v in NOT_BOOL],
    *[case({"optimizer": v}, r"(?=.*'adam', 'adamw', 'sgd')" + names("optimizer", v))
      for v in ["rmsprop", "", 3]],
    case({"optimizer": fastvae.Adam}, r"optimizer must be one of .* or an Optimizer; got "
                                      r"<class 'fastvae.training.optim.Adam'>", id="optimizer=Adam-class"),
    case({"optimizer": OTHER_MODEL_ADAM}, r"optimizer was built for another model"),
    case({"callbacks": 3}, names("callbacks", 3)),
    case({"callbacks": None}, names("callbacks", None)),
    case({"callbacks": [print, 3]}, names("callbacks", 3), id="callbacks=[print,3]"),
    case({"callbacks": "abc"}, names("callbacks", "abc")),
    case({"checkpoint": "TMP/missing/c.npz"},
         names("checkpoint", "TMP/missing/c.npz") + ".*does not exist", exc=FileNotFoundError),
    case({"checkpoint": "TMP"}, names("checkpoint", "TMP"), id="checkpoint=<a directory>"),
    case({"checkpoint": ""}, names("checkpoint", "")),
    case({"checkpoint": 3}, names("checkpoint", 3)),
    *[case(dict(progress=True, stream=v), names("stream", v)) for v in [3, "out.txt"]],
    # the data: DataError is a ValueError; the message names the argument as "training data"
    # or "validation data" and says what is wrong with it
    case({"X": X40[:, :6]}, r"training data: rows have 6 values, the model expects 7",
         id="X=6 columns"),
    case({"X": X40[:, 0]}, r"training data: .*got shape \(40,\)", id="X=1-D"),
    case({"X": X40[:0]}, r"training data: empty", id="X=empty"),
    case({"X": X_NAN}, r"training data: 1 NaN or infinite", id="X=NaN"),
    case({"X": X40 * 2}, r"training data: values lie in \[.*\], but the Bernoulli",
         id="X=out of [0, 1]"),
    case({"X": X40[:5]}, r"training data: 5 rows is fewer than one batch of 8; use a smaller "
                         r"batch_size", id="X=fewer rows than batch_size"),
    case({"val": X40[:, :6]}, r"validation data: rows have 6 values, the model expects 7",
         id="val=6 columns"),
    case({"val": X_NAN}, r"validation data: 1 NaN or infinite", id="val=NaN"),
]


def _fit_args(kw, tmp_path, monkeypatch):
    """The fit call of a FIT_BAD row: small batches, silent, with the row's values (Lazy
    ones built now; 'TMP' stands for the test's temporary directory, here and in the
    row's match).  The working directory moves below tmp_path, so that relative paths
    (checkpoint='') can only touch tmp_path."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    kw = {k: v.make() if isinstance(v, Lazy) else v for k, v in kw.items()}
    if isinstance(kw.get("checkpoint"), str) and kw["checkpoint"].startswith("TMP"):
        kw["checkpoint"] = str(tmp_path) + kw["checkpoint"][3:]
    X = kw.pop("X", X40)
    return X, {"batch_size": 8, "progress": False, **kw}


@pytest.mark.parametrize("kw,match,exc", FIT_BAD)
def test_fit_argument_refused(kw, match, exc, tmp_path, monkeypatch):
    """Every fit argument is checked and the message names it and the value given."""
    m = small()
    X, kw = _fit_args(kw, tmp_path, monkeypatch)
    with pytest.raises(exc, match=match.replace("TMP", re.escape(str(tmp_path)))):
        m.fit(X, **kw)


def test_fit_dynamic_binarize_needs_bernoulli():
    """Dynamic binarization draws 0/1 pixels: meaningless for a Gaussian decoder (and the
    refusal leaves the model as it was)."""
    m = small(likelihood="gaussian")
    with pytest.raises(ValueError, match=r"binarize='dynamic' needs likelihood='bernoulli'"):
        m.fit(X40, binarize="dynamic", batch_size=8, progress=False)
    assert m.train_state is None


def _snapshot(m):
    """Everything a model holds (parameters, noise position, training state with optimizer
    moments and history), as comparable values."""
    meta, arrays = snapshot(m)
    return (json.dumps(meta, sort_keys=True, default=repr),
            {k: np.array(v, copy=True) for k, v in arrays.items()}, m.kl_scale)


def _assert_same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert np.array_equal(a[1][k], b[1][k]), k
    assert a[2] == b[2]


@pytest.mark.parametrize("kw,match,exc", FIT_BAD)
def test_bad_fit_argument_leaves_fresh_model_untouched(kw, match, exc, tmp_path, monkeypatch):
    """Everything is checked before anything changes: a refused fit on a new model leaves
    no training state behind and does not move the parameters or the noise."""
    m = small()
    before = _snapshot(m)
    X, kw = _fit_args(kw, tmp_path, monkeypatch)
    with pytest.raises(Exception):
        m.fit(X, **kw)
    assert m.train_state is None
    _assert_same(_snapshot(m), before)


@pytest.mark.parametrize("kw,match,exc", FIT_BAD)
def test_bad_fit_argument_leaves_trained_model_untouched(kw, match, exc, tmp_path, monkeypatch):
    """A refused fit on a model mid-run keeps its training state object, optimizer and
    moments, settings, position and history exactly, so the run can go on as if the bad
    call never happened."""
    m = interrupt_at(small(), 3)  # Ctrl-C in the third step: the epoch stays in progress
    assert m.fit(X40[:36], batch_size=8, progress=False).interrupted
    del m.forward
    st, opt = m.train_state, m.train_state.optimizer
    assert st.row == 24 and st.n_rows == 36
    before = _snapshot(m)
    X, kw = _fit_args(kw, tmp_path, monkeypatch)
    with pytest.raises(Exception):
        m.fit(X, **kw)
    assert m.train_state is st and st.optimizer is opt
    _assert_same(_snapshot(m), before)


@pytest.mark.parametrize("kw,check", [
    (dict(epochs=0), lambda m: m.train_state.epoch == 0),
    (dict(clip_norm=math.inf), lambda m: m.train_state.optimizer.clip_norm is None),
    (dict(optimizer="sgd", momentum=0.0), lambda m: m.train_state.optimizer.momentum == 0),
    (dict(optimizer="SGD", momentum=0.9), lambda m: m.train_state.optimizer.momentum == 0.9),
    (dict(kl_warmup=0, weight_decay=0), lambda m: m.train_state.settings["kl_warmup"] == 0),
    (dict(binarize="dynamic", shuffle=np.bool_(False), drop_last=True),
     lambda m: m.train_state.settings["drop_last"] is True),
    (dict(callbacks=lambda model, rec: None), lambda m: len(m.train_state.history) == 1),
    (dict(lr=1e-4, val=X40[:4], val_samples=2), lambda m: "val_neg_elbo" in
     m.train_state.history[-1]),
])
def test_fit_edge_values_accepted(kw, check):
    """The edges of each fit range are allowed (epochs=0, clip_norm=math.inf for "off",
    momentum 0 with SGD, an optimizer name in any case, NumPy bools)."""
    m = small()
    m.fit(X40, **{"batch_size": 8, "progress": False, **kw})
    assert check(m)


def test_fit_optimizer_instance_for_this_model_accepted():
    """An optimizer built for this very model is used as given (its own lr, its momentum)."""
    m = small()
    opt = fastvae.SGD(m, lr=0.05, momentum=0.5, nesterov=True)
    m.fit(X40, optimizer=opt, batch_size=8, progress=False)
    assert m.train_state.optimizer is opt and opt.step_count == 5


OPT_BAD = [
    *[case(dict(cls=c, lr=v), names("lr", v)) for c in ("Adam", "AdamW", "SGD")
      for v in NOT_POSITIVE_REAL],
    *[case(dict(cls=c, betas=v), names("betas", v)) for c in ("Adam", "AdamW")
      for v in [(0.9, 1.0), (1.0, 0.999), (-0.1, 0.999), (0.9, math.nan), (0.9, "0.9"),
                (0.9,), (0.9, 0.99, 0.5), 0.9, None, "ab"]],
    *[case(dict(cls=c, eps=v), names("eps", v)) for c in ("Adam", "AdamW")
      for v in NOT_POSITIVE_REAL],
    *[case(dict(cls=c, weight_decay=v), names("weight_decay", v))
      for c in ("Adam", "AdamW", "SGD") for v in NOT_NONNEG_REAL],
    *[case(dict(cls=c, clip_norm=v), names("clip_norm", v)) for c in ("Adam", "SGD")
      for v in [0, -1.0, math.nan, "1"]],
    *[case(dict(cls="SGD", momentum=v), names("momentum", v))
      for v in [-0.1, 1.0, 1.5, math.nan, "0.9", True]],
    *[case(dict(cls="SGD", momentum=0.9, nesterov=v), names("nesterov", v)) for v in NOT_BOOL],
    case(dict(cls="SGD", nesterov=True), r"nesterov=True needs momentum > 0"),
    case(dict(cls="SGD", momentum=0.0, nesterov=True), r"nesterov=True needs momentum > 0"),
]


@pytest.mark.parametrize("kw,match,exc", OPT_BAD)
def test_optimizer_argument_refused(kw, match, exc):
    """Optimizer hyperparameters are checked at construction, naming the argument and
    value (betas are torch's: two numbers in [0, 1))."""
    kw = dict(kw)
    cls = getattr(fastvae, kw.pop("cls"))
    with pytest.raises(exc, match=match):
        cls(small(), **kw)


SAMPLE_BAD = [
    *[case({"n": v}, names("n", v)) for v in NOT_POSITIVE_INT],
    *[case({"seed": v}, names("seed", v)) for v in [-1, 1.5, "x", True]],
    *[case({"mean": v}, names("mean", v)) for v in NOT_BOOL],
]


@pytest.mark.parametrize("kw,match,exc", SAMPLE_BAD)
def test_sample_argument_refused(kw, match, exc):
    """sample(n, seed, mean): n a positive int, seed None / int >= 0 / Generator, mean a
    bool (mean=1 or "yes" is refused rather than guessed at)."""
    kw = {"n": 3, **kw}
    with pytest.raises(exc, match=match):
        small().sample(**kw)


def test_sample_seed_forms_accepted():
    """None, an int and a NumPy Generator all work; the same int gives the same draw."""
    m = small()
    assert m.sample(2, seed=None).shape == (2, 7)
    assert np.array_equal(m.sample(2, seed=5, mean=False), m.sample(2, seed=5, mean=False))
    assert m.sample(np.int64(2), seed=np.random.default_rng(1)).shape == (2, 7)


ENCODE_BAD = [
    *[case(dict(sample=True, seed=v), names("seed", v)) for v in [-1, 1.5, "x", True]],
    # a seed is checked even when sample=False does not use it: the mistake shows at once,
    # not when sampling is switched on later
    *[case(dict(sample=False, seed=v), names("seed", v)) for v in [-1, "x"]],
    *[case(dict(sample=v), names("sample", v)) for v in [1, "yes", None]],
]


@pytest.mark.parametrize("kw,match,exc", ENCODE_BAD)
def test_encode_argument_refused(kw, match, exc):
    """encode(x, sample, seed): sample is a bool like sample()'s mean, seed as for sample."""
    with pytest.raises(exc, match=match):
        small().encode(X40[:4], **kw)


EVAL_BAD = [
    *[case({"seed": v}, names("seed", v)) for v in [-1, 1.5, "1", True, None]],
    case({"seed": Lazy(lambda: np.random.default_rng(0), "Generator")},
         r"seed must be an integer >= 0, got Generator"),
]


@pytest.mark.parametrize("method", ["elbo", "log_likelihood"])
@pytest.mark.parametrize("kw,match,exc", EVAL_BAD)
def test_estimate_seed_refused(method, kw, match, exc):
    """An estimate's seed keys its own noise stream: an int >= 0, nothing else (1.5 or "1"
    would silently give seed 1's estimate)."""
    kw = {k: (v.make() if isinstance(v, Lazy) else v) for k, v in kw.items()}
    with pytest.raises(exc, match=match):
        getattr(small(), method)(X40, **kw)


@pytest.mark.parametrize("kw", [dict(grad=1), dict(grad=None), dict(validate="no"),
                                dict(validate=0)])
def test_forward_flags_are_booleans(kw):
    (k, v), = kw.items()
    with pytest.raises(ValueError, match=names(k, v)):
        small().forward(X40[:4], **kw)


def test_train_step_refuses_another_models_optimizer():
    a, b = small(), small()
    before = b.flat_params.copy()
    with pytest.raises(ValueError, match="opt was built for another model"):
        a.train_step(X40[:8], fastvae.Adam(b))
    np.testing.assert_array_equal(b.flat_params, before)
    with pytest.raises(ValueError, match="opt must be an optimizer built for this model.*"
                                         "'adam'"):
        a.train_step(X40[:8], "adam")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_decode_refuses_non_finite_codes(bad):
    z = np.zeros((3, 3), np.float32)
    z[1, 1] = bad
    with pytest.raises(ValueError, match=r"z has a non-finite value \((nan|inf)\) at row 1, "
                                         r"column 1"):
        small().decode(z)


def test_decode_refuses_codes_that_overflow_the_models_dtype():
    z = np.zeros((2, 3))
    z[0, 2] = 1e300  # finite in float64, inf in the float32 model
    with pytest.raises(ValueError, match=r"z has a non-finite value \(inf\) at row 0, column 2"):
        small().decode(z)


def test_decode_scans_host_codes_before_they_go_to_a_gpu():
    """CuPy's arrays are not NumPy arrays: a host z is scanned before it is moved, or a
    GPU model would take NaN codes (the emulated GPU's arrays are NumPy's, which hid it)."""
    import types

    class DeviceArray:  # stands in for cupy.ndarray: not a numpy.ndarray subclass
        def __init__(self, a):
            self.a = np.ascontiguousarray(a)
            self.dtype, self.shape, self.flags = self.a.dtype, self.a.shape, self.a.flags

    from fastvae.core.validate import check_latent
    xp = types.SimpleNamespace(
        ndarray=DeviceArray, ascontiguousarray=lambda a, dtype=None: a,
        asarray=lambda a, dtype=None: a if isinstance(a, DeviceArray) else DeviceArray(a))
    gpu = types.SimpleNamespace(latent_dim=3, dtype=np.dtype(np.float32),
                                kernels=types.SimpleNamespace(xp=xp))
    z = np.zeros((3, 3), np.float32)
    assert isinstance(check_latent(z, gpu), DeviceArray)
    z[1, 1] = np.nan
    with pytest.raises(ValueError, match="z has a non-finite value"):
        check_latent(z, gpu)
    with pytest.raises(ValueError, match="z has a non-finite value"):
        check_latent(z.tolist(), gpu)
    assert isinstance(check_latent(DeviceArray(z), gpu), DeviceArray)  # on the device: as is
