"""The training state: exact resume of every setting, changed settings applied and reported,
gradients that only backward writes, pickling, and noise that evaluation never consumes."""
import copy
import math
import pickle
import warnings

import numpy as np
import pytest

import fastvae
from fastvae.training.fit import SettingChangedWarning

from conftest import BACKEND_PARAMS, host, interrupt_at

#: optimizer settings x loop settings, none of them the defaults
RUNS = {
    "sgd-momentum": dict(optimizer="sgd", lr=0.02, momentum=0.9, batch_size=32,
                         kl_warmup=1.5, binarize="dynamic"),
    "adam": dict(optimizer="adam", lr=3e-3, weight_decay=1e-4, clip_norm=5.0, batch_size=48,
                 kl_warmup=0.5, binarize="dynamic", val_samples=2),
    "adamw": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, batch_size=40, kl_warmup=1,
                  binarize="dynamic", drop_last=True, average=0.98),
}


def _data(n=200, D=30, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, D)) < rng.random(D)).astype(np.float32) * 0.9 + 0.05


def _model(backend, **kw):
    return fastvae.VAE(30, hidden=(16,), latent_dim=4, backend=backend, seed=5, **kw)


def _same_run(a, b):
    """The same run, bit for bit: one backend on one machine makes the same calls."""
    np.testing.assert_array_equal(host(a.flat_params), host(b.flat_params))
    ma, aa = a.train_state.to_checkpoint()
    mb, ab = b.train_state.to_checkpoint()
    assert set(aa) == set(ab)
    for k in aa:
        np.testing.assert_array_equal(aa[k], ab[k], err_msg=k)
    drop = ("seconds", "train_seconds", "samples_per_s")
    for m in (ma, mb):
        m["seconds"] = 0.0
        m["history"] = [{k: v for k, v in r.items() if k not in drop} for r in m["history"]]
    assert ma == mb
    assert a.noise.counter == b.noise.counter


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("run", list(RUNS))
def test_resume_from_a_checkpoint_needs_no_settings(backend, run, tmp_path):
    """3 epochs straight == 1 epoch, save, load, fit(X, epochs=2) with no settings repeated:
    bit for bit, with non-default optimizer, lr, batch size, warm-up and binarization."""
    X, V = _data(), _data(60, seed=1)
    straight = _model(backend)
    straight.fit(X, epochs=3, val=V, progress=False, **RUNS[run])
    first = _model(backend)
    first.fit(X, epochs=1, val=V, progress=False, checkpoint=tmp_path / "c.npz", **RUNS[run])
    resumed = fastvae.load(tmp_path / "c.npz", backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing changed: nothing to report
        resumed.fit(X, epochs=2, val=V, progress=False)
    _same_run(straight, resumed)
    assert resumed.optimizer.name == RUNS[run]["optimizer"]
    assert resumed.optimizer.lr == RUNS[run]["lr"]
    assert resumed.train_state.settings["batch_size"] == RUNS[run]["batch_size"]
    # the warm-up was in effect: beta at the end of epoch 1 is 1 / kl_warmup (at most 1)
    assert straight.history[0]["beta"] == pytest.approx(min(1.0, 1 / RUNS[run]["kl_warmup"]))


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("k", [3, 9])
def test_resume_after_ctrl_c_mid_epoch(backend, run, k, tmp_path):
    """Interrupted inside an epoch (step k), saved, loaded, continued with no settings:
    identical to the run that was never interrupted."""
    X = _data()
    straight = _model(backend)
    straight.fit(X, epochs=2, progress=False, **RUNS[run])
    b = interrupt_at(_model(backend), k)
    h = b.fit(X, epochs=2, progress=False, checkpoint=tmp_path / "c.npz", **RUNS[run])
    assert h.interrupted and b.train_state.step == k
    c = fastvae.load(tmp_path / "c.npz", backend=backend)
    assert c.train_state.row > 0 or c.train_state.epoch > 0
    c.fit(X, epochs=2 - c.train_state.epoch, progress=False)
    _same_run(straight, c)


def test_a_second_fit_in_memory_keeps_the_settings():
    X = _data()
    a, b = _model("cpu"), _model("cpu")
    a.fit(X, epochs=2, progress=False, **RUNS["sgd-momentum"])
    b.fit(X, epochs=1, progress=False, **RUNS["sgd-momentum"])
    b.fit(X, epochs=1, progress=False)
    _same_run(a, b)


def test_a_changed_setting_is_applied_and_reported(tmp_path):
    X = _data()
    m = _model("cpu")
    m.fit(X, epochs=1, progress=False, optimizer="sgd", lr=0.02, momentum=0.9, batch_size=32)
    m.save(tmp_path / "c.npz")
    r = fastvae.load(tmp_path / "c.npz", backend="cpu")
    with pytest.warns(SettingChangedWarning, match=r"lr 0\.02 -> 0\.01; .*batch_size 32 -> 50"
                      r"|batch_size 32 -> 50.*lr 0\.02 -> 0\.01") as w:
        r.fit(X, epochs=1, progress=False, lr=0.01, batch_size=50)
    assert len(w) == 1  # one line for all changes
    assert r.optimizer.lr == 0.01 and r.optimizer.name == "sgd" and r.optimizer.momentum == 0.9
    assert r.train_state.settings["batch_size"] == 50 and r.history[-1]["steps"] == 4
    # the same value again is no change; on a progress stream the report is one line there
    import io
    s = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.fit(X, epochs=1, lr=0.01, stream=s)
        r.fit(X, epochs=1, optimizer="adam", stream=s)
    lines = s.getvalue().splitlines()
    notes = [ln for ln in lines if ln.startswith("fit: settings changed")]
    assert notes == ["fit: settings changed from the saved run (applied): "
                     "optimizer 'sgd' -> 'adam' (new moments)"]
    assert r.optimizer.name == "adam" and r.optimizer.lr == 0.01  # lr carried over


def test_batch_size_changed_mid_epoch_continues_from_the_same_row(tmp_path):
    X = _data()
    m = interrupt_at(_model("cpu"), 3)
    m.fit(X, epochs=1, progress=False, batch_size=32)
    assert m.train_state.row == 96
    m.forward = fastvae.VAE.forward.__get__(m)  # stop interrupting
    with pytest.warns(SettingChangedWarning, match="batch_size 32 -> 52"):
        h = m.fit(X, epochs=1, progress=False, batch_size=52)
    # 96 rows were done; 104 remain in two steps of 52
    assert h[-1]["steps"] == 3 + 2 and m.train_state.step == 5 and m.train_state.row == 0


def test_other_data_mid_epoch_restarts_the_epoch_and_says_so():
    m = interrupt_at(_model("cpu"), 2)
    m.fit(_data(), epochs=1, progress=False, batch_size=32)
    m.forward = fastvae.VAE.forward.__get__(m)
    with pytest.warns(SettingChangedWarning, match="the data has 150 rows where the epoch in "
                      "progress had 200: epoch 1 restarts"):
        m.fit(_data(150), epochs=1, progress=False)
    assert m.history[-1]["steps"] == 5 and m.train_state.epoch == 1


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_backward_then_other_passes_then_step_equals_the_plain_step(backend):
    """Only backward writes gradients: a forward on another batch and an ELBO between
    backward and the optimizer step change nothing."""
    for cfg in (dict(), dict(likelihood="gaussian", obs_scale="per_pixel"),
                dict(likelihood="gaussian", obs_scale="learned", n_samples=2)):
        X = _data().astype(np.float64)  # (other dtypes: test_backend_contract.py)
        a, b = _model(backend, dtype="float64", **cfg), _model(backend, dtype="float64", **cfg)
        oa, ob = fastvae.Adam(a, lr=1e-2), fastvae.Adam(b, lr=1e-2)
        eps = np.random.default_rng(3).standard_normal((a.n_samples, 32, 4))
        ga = a.backward(a.forward(X[:32], eps))
        gb = b.backward(b.forward(X[:32], eps))
        before = host(b.flat_grads).copy()
        b.forward(X[32:64])                # a training forward of the same shape, other data
        b.forward(X[:8])                   # ... and of another shape
        b.forward(X[64:100], grad=False)   # a loss-only forward
        b.elbo(X)
        b.encode(X[:5]), b.decode(np.zeros((3, 4))), b.sample(4, seed=1)
        b.sample(3, seed=0, mean=False)
        np.testing.assert_array_equal(host(b.flat_grads), before)
        oa.step(ga)
        ob.step(gb)
        np.testing.assert_array_equal(host(a.flat_params), host(b.flat_params))


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_evaluating_between_steps_never_changes_the_training_run(backend):
    """Loss-only forwards (no eps, no rng), ELBO, log-likelihood, encode and sample between
    training steps: the run's later steps draw the same noise and land on the same
    parameters as without them."""
    X = _data()
    a, b = _model(backend), _model(backend)
    oa, ob = fastvae.Adam(a), fastvae.Adam(b)
    for i in range(4):
        xb = X[32 * i:32 * i + 32]
        a.train_step(xb, oa)
        b.train_step(xb, ob)
        b.forward(X[:20], grad=False)
        b.forward(X[:20], grad=False, objective="iwae", n_samples=3)
        b.elbo(X[:40]), b.log_likelihood(X[:8], k=4), b.encode(X[:3], sample=True)
        b.sample(2, seed=i)
    assert b.noise.counter == a.noise.counter == 4
    np.testing.assert_array_equal(host(a.flat_params), host(b.flat_params))
    # the loss-only stream moves on: two passes draw different noise
    assert float(b.forward(X[:20], grad=False).loss) != float(b.forward(X[:20], grad=False).loss)


def test_a_loss_only_forward_is_not_a_training_pass():
    m = _model("cpu")
    X = _data()
    eps = np.random.default_rng(0).standard_normal((32, 4))
    train = m.forward(X[:32], eps)
    ev = m.forward(X[:32], eps, grad=False)
    assert not train.stale  # evaluation has its own workspace
    assert ev.loss == pytest.approx(train.loss, rel=1e-5) and ev.grad is False
    with pytest.raises(RuntimeError, match="loss-only forward"):
        m.backward(ev)
    m.backward(train)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_pickle_deepcopy_and_checkpoint_give_the_same_model(backend, tmp_path):
    X = _data()
    m = _model(backend, likelihood="gaussian", obs_scale="learned", activation="leaky_relu",
               activation_alpha=0.2)
    m.fit(X, epochs=1, progress=False, **{**RUNS["adam"], "binarize": "none"})
    m.metadata = {"note": "x"}
    m.save(tmp_path / "m.npz")
    copies = [pickle.loads(pickle.dumps(m)), copy.deepcopy(m),
              fastvae.load(tmp_path / "m.npz", backend=backend)]
    for c in copies:
        assert c.config() == m.config() and c.backend == m.backend and c.metadata == m.metadata
        assert type(c.flat_params) is type(m.flat_params)  # on the device on a GPU
        _same_run(m, c)
    m.fit(X, epochs=1, progress=False)
    for c in copies:  # each continues exactly as the original, independently of it
        c.fit(X, epochs=1, progress=False)
        _same_run(m, c)


def test_pickle_of_an_untrained_model():
    m = _model("numpy")
    c = pickle.loads(pickle.dumps(m))
    assert c.train_state is None and c.optimizer is None and c.history == []
    np.testing.assert_array_equal(c.flat_params, m.flat_params)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_sample_and_encode_draws_leave_training_unchanged(backend):
    X = _data()
    plain, sampled = _model(backend), _model(backend)
    plain.fit(X, epochs=2, progress=False)
    draws = []

    def cb(model, rec):
        draws.append(model.sample(5, seed=11))
        model.sample(3)                 # fresh entropy: still not the training noise
        model.encode(X[:4], sample=True)
        model.encode(X[:4], sample=True, seed=2)

    sampled.fit(X, epochs=2, progress=False, callbacks=[cb])
    _same_run(plain, sampled)
    np.testing.assert_array_equal(host(sampled.sample(5, seed=11)), host(plain.sample(5, seed=11)))
    assert not np.array_equal(host(draws[0]), host(draws[1]))  # the model changed between the epochs


def test_sample_and_encode_conventions():
    m = _model("cpu", dtype="float64")
    a, b = m.sample(6, seed=3), m.sample(6, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 30) and np.all((a > 0) & (a < 1))
    draws = m.sample(4000, seed=1, mean=False)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    # the mean of Bernoulli draws is the mean of the probabilities (same z: same seed)
    probs = m.sample(4000, seed=1)
    assert abs(draws.mean() - probs.mean()) < 0.01
    mu, logvar = m.encode(_data()[:7])
    z1 = m.encode(_data()[:7], sample=True, seed=5)
    z2 = m.encode(_data()[:7], sample=True, seed=5)
    np.testing.assert_array_equal(z1, z2)
    eps = np.random.default_rng(5).standard_normal((7, 4))
    np.testing.assert_allclose(z1, mu + np.exp(0.5 * logvar) * eps, rtol=1e-12)
    g = fastvae.VAE(30, hidden=(8,), latent_dim=2, likelihood="gaussian", obs_scale=0.5,
                    backend="cpu", dtype="float64")
    m_, x_ = g.sample(20000, seed=2), g.sample(20000, seed=2, mean=False)
    assert np.std(x_ - m_) == pytest.approx(0.5, rel=0.02)


def test_fit_epochs_zero_and_the_state_repr():
    m = _model("cpu")
    assert m.fit(_data(), epochs=0, progress=False) == []
    assert "epoch 0 done" in repr(m.train_state) and m.optimizer.step_count == 0


def test_constant_pixel_with_a_learned_scale_stays_finite():
    """A pixel that never changes would drive an unfloored log-scale to -inf (and float32
    to overflow); with the soft floor training stays finite and the scale settles at it."""
    rng = np.random.default_rng(0)
    X = rng.random((256, 30)).astype(np.float32)
    X[:, 0] = 0.25
    m = fastvae.VAE(30, hidden=(16,), latent_dim=4, likelihood="gaussian",
                    obs_scale="per_pixel", backend="cpu")
    h = m.fit(X, epochs=150, batch_size=32, lr=2e-2, progress=False)
    ls = m.obs_logscale()
    assert all(math.isfinite(r["train_loss"]) for r in h)
    assert ls[0] == min(ls) and fastvae.core.model.LOGSCALE_FLOOR <= ls[0] < -5.5


# ------------------------------------------------------------ edges found in review
def _tiny(backend="numpy"):
    return fastvae.VAE(20, hidden=(8,), latent_dim=3, backend=backend, seed=5)


def _bits(n=200):
    return (np.random.default_rng(0).random((n, 20)) > 0.5).astype(np.float32)


def test_warmup_beta_in_history_survives_a_ctrl_c_on_the_epochs_last_step():
    X = _bits()
    a = _tiny()
    a.fit(X, epochs=2, batch_size=50, kl_warmup=3, progress=False)
    b = interrupt_at(_tiny(), 4)  # the 4th step is the last of epoch 1
    b.fit(X, epochs=2, batch_size=50, kl_warmup=3, progress=False)
    assert b.train_state.row == 200 and b.train_state.epoch == 0
    b.forward = fastvae.VAE.forward.__get__(b)
    b.fit(X, epochs=2, progress=False)
    assert [r["beta"] for r in b.history] == [r["beta"] for r in a.history]
    assert a.history[0]["beta"] == pytest.approx(1 / 3)


def test_an_error_mid_epoch_keeps_the_epochs_sums_consistent():
    """A step that fails (here before its forward pass) leaves the position and the loss
    sums of the epoch in step: fit again finishes the epoch with the right averages."""
    X = _bits()
    a = _tiny()
    a.fit(X, epochs=1, batch_size=50, progress=False)
    b = _tiny()
    forward, calls = b.forward, [0]

    def failing(*args, **kw):
        calls[0] += 1
        if calls[0] == 3:
            raise FloatingPointError("injected")
        return forward(*args, **kw)

    b.forward = failing
    with pytest.raises(FloatingPointError, match="injected"):
        b.fit(X, epochs=1, batch_size=50, progress=False)
    b.forward = forward
    b.fit(X, epochs=1, progress=False)
    _same_run(a, b)


def test_nesterov_keeps_its_momentum():
    m = _tiny()
    m.fit(_bits(), batch_size=50, progress=False,
          optimizer=fastvae.SGD(m, lr=0.01, momentum=0.9, nesterov=True))
    before = m.train_state.to_checkpoint()[0]
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0, got momentum=0.0"):
        m.fit(_bits(), momentum=0.0, progress=False)
    assert m.train_state.to_checkpoint()[0] == before


def test_a_user_optimizer_subclass_is_refused_because_it_could_not_be_saved():
    class MyAdam(fastvae.Adam):
        pass

    m = _tiny()
    with pytest.raises(ValueError, match="a MyAdam cannot be saved with the run"):
        m.fit(_bits(), optimizer=MyAdam(m), progress=False)
    assert m.train_state is None


def test_switching_optimizer_reports_every_setting_that_changes():
    m = _tiny()
    m.fit(_bits(), progress=False, weight_decay=1e-3, lr=2e-3, clip_norm=4.0)
    with pytest.warns(SettingChangedWarning, match=r"optimizer 'adam' -> 'adamw' \(new "
                      r"moments\); weight_decay 0\.001 -> 0\.01$"):
        m.fit(_bits(), progress=False, optimizer="adamw")
    assert (m.optimizer.lr, m.optimizer.clip_norm, m.optimizer.weight_decay) == (2e-3, 4.0, 0.01)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("dtype", [">f4", "float16", "<f8", "int64"])
def test_data_of_any_numeric_dtype_trains_like_float32(backend, dtype):
    """Big-endian IDX floats, float16, float64, integer images: the same batches as the
    float32 array (the gather kernels take native types, the rest converts per batch)."""
    X = _bits()
    ref, other = _tiny(backend), _tiny(backend)
    ref.fit(X, epochs=1, batch_size=64, progress=False)
    Y = (X * 255).astype(dtype) if dtype == "int64" else X.astype(dtype)
    other.fit(Y, epochs=1, batch_size=64, progress=False)
    np.testing.assert_array_equal(host(other.flat_params), host(ref.flat_params))


def test_ctrl_c_after_the_last_epoch_is_not_an_interruption():
    import io
    import signal

    def cb(model, rec):
        if rec["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)

    s = io.StringIO()
    h = _tiny().fit(_bits(), epochs=2, batch_size=50, callbacks=[cb], stream=s)
    assert not h.interrupted and len(h) == 2 and "interrupted" not in s.getvalue()
    h = _tiny().fit(_bits(), epochs=3, batch_size=50, callbacks=[cb], stream=io.StringIO())
    assert h.interrupted and len(h) == 2  # epoch 3 never ran: that is an interruption


def test_shuffle_changed_mid_epoch_applies_from_the_next_epoch():
    X = _bits()
    a = _tiny()
    a.fit(X, epochs=1, batch_size=50, progress=False)
    b = interrupt_at(_tiny(), 2)
    b.fit(X, epochs=1, batch_size=50, progress=False)
    b.forward = fastvae.VAE.forward.__get__(b)
    with pytest.warns(SettingChangedWarning, match=r"shuffle True -> False \(from the next "
                      r"epoch: this one keeps its order\)"):
        b.fit(X, epochs=1, progress=False, shuffle=False)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)  # epoch 1 as it began
    c = _tiny()
    c.fit(X, epochs=1, batch_size=50, progress=False)
    b.fit(X, epochs=1, progress=False)
    with pytest.warns(SettingChangedWarning, match=r"shuffle True -> False$"):
        c.fit(X, epochs=1, progress=False, shuffle=False)  # at a boundary: no "next epoch"
    np.testing.assert_array_equal(c.flat_params, b.flat_params)


def _fail_at(model, where, k, exc):
    """Make the k-th training step fail at ``where``: "forward" / "backward" (raise before
    them), "update" (in the optimizer, before the parameters change), "recorded" (in the
    optimizer, after they changed)."""
    calls = [0]
    if where in ("forward", "backward"):
        orig = getattr(model, where)

        def wrapped(*a, **kw):
            if where == "backward" or kw.get("grad", True):
                calls[0] += 1
                if calls[0] == k:
                    raise exc
            return orig(*a, **kw)
        setattr(model, where, wrapped)
        return lambda: delattr(model, where)
    return calls


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("where", ["forward", "backward", "update", "recorded"])
@pytest.mark.parametrize("exc", [FloatingPointError("injected"), KeyboardInterrupt()])
@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_a_step_that_fails_anywhere_happens_whole_or_not_at_all(backend, where, exc,
                                                                  binarize, monkeypatch):
    """An error or an abort (a second Ctrl-C) at any point of a step: before the update,
    the step's draws (noise, binarization) are given back and it did not happen; after
    it, the step is recorded with its loss.  Either way fit again continues exactly as the
    uninterrupted run (parameters, moments, generators, position, history's losses)."""
    X = _bits()
    kw = dict(batch_size=50, binarize=binarize, kl_warmup=1)
    a = _tiny(backend)
    a.fit(X, epochs=2, progress=False, **kw)
    b = _tiny(backend)
    if where in ("forward", "backward"):
        undo = _fail_at(b, where, 3, exc)
    else:
        calls, step = [0], fastvae.training.optim.Optimizer.step

        def failing(self, *args):
            calls[0] += 1
            if calls[0] == 3 and where == "update":
                raise exc
            step(self, *args)
            if calls[0] == 3:
                raise exc
        monkeypatch.setattr(fastvae.training.optim.Optimizer, "step", failing)
        undo = lambda: monkeypatch.undo()  # noqa: E731
    with pytest.raises(type(exc)):
        b.fit(X, epochs=2, progress=False, **kw)
    undo()
    st = b.train_state
    done = 3 if where == "recorded" else 2
    assert (st.step, st.row, b.noise.counter, b.optimizer.step_count) == (done, 50 * done,
                                                                          done, done)
    b.fit(X, epochs=2, progress=False)
    _same_run(a, b)


def test_a_second_ctrl_c_during_the_update_lands_after_its_record(monkeypatch):
    """The guard holds a second Ctrl-C while the optimizer steps and the step is recorded:
    the abort comes right after, with the position and the loss sums in step."""
    import signal
    X = _bits()
    a = _tiny()
    a.fit(X, epochs=1, batch_size=50, progress=False)
    b = _tiny()
    calls, step = [0], fastvae.training.optim.Optimizer.step

    def twice(self, *args):
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # "abort now", inside the update
        step(self, *args)
    monkeypatch.setattr(fastvae.training.optim.Optimizer, "step", twice)
    with pytest.raises(KeyboardInterrupt):
        b.fit(X, epochs=1, batch_size=50, progress=False)
    monkeypatch.undo()
    assert (b.train_state.step, b.train_state.row, b.optimizer.step_count) == (3, 150, 3)
    b.fit(X, epochs=1, progress=False)
    _same_run(a, b)


def test_a_failed_validation_closes_the_same_epoch_again():
    """The epoch is counted only once its validation is done: a validation that fails (or
    is interrupted) leaves the epoch open, and fit again closes it once, not twice."""
    X = _bits()
    a = _tiny()
    a.fit(X, epochs=2, batch_size=50, val=X[:40], progress=False)
    b = _tiny()
    import fastvae.training.loop as T
    elbo, calls = T.elbo, [0]

    def failing(*args, **kw):
        calls[0] += 1
        if calls[0] == 1:
            raise KeyboardInterrupt  # a second Ctrl-C during validation
        return elbo(*args, **kw)
    T.elbo = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            b.fit(X, epochs=2, batch_size=50, val=X[:40], progress=False)
    finally:
        T.elbo = elbo
    assert b.train_state.epoch == 0 and b.train_state.row == 200 and b.history == []
    b.fit(X, epochs=2, val=X[:40], progress=False)
    assert [r["epoch"] for r in b.history] == [1, 2]
    _same_run(a, b)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_two_ctrl_c_inside_a_step_abort_after_it(where):
    """One process holds a second Ctrl-C (and a third) until the step is over: the step is
    done and recorded whole, then the abort; fit again continues as the straight run."""
    import signal
    X = _bits()
    a = _tiny()
    a.fit(X, epochs=1, batch_size=50, binarize="dynamic", progress=False)
    b = _tiny()
    orig, calls = getattr(b, where), [0]

    def pressed(*args, **kw):
        if where == "backward" or kw.get("grad", True):
            calls[0] += 1
            if calls[0] == 3:
                for _ in range(3):
                    signal.raise_signal(signal.SIGINT)
        return orig(*args, **kw)
    setattr(b, where, pressed)
    with pytest.raises(KeyboardInterrupt):
        b.fit(X, epochs=1, batch_size=50, binarize="dynamic", progress=False)
    delattr(b, where)
    assert (b.train_state.step, b.noise.counter, b.optimizer.step_count) == (3, 3, 3)
    b.fit(X, epochs=1, progress=False)
    _same_run(a, b)
    # the guard was left clean: a new fit's first Ctrl-C stops it after a step, as usual
    c = interrupt_at(_tiny(), 2)
    assert c.fit(X, epochs=1, batch_size=50, progress=False).interrupted
