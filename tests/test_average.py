"""fit(average=decay): the weights' moving average is what a run validates, keeps and gives
back, it never changes the steps, and it resumes to the bit (fastvae.training.average).
(Resume after a checkpoint and after Ctrl-C mid-epoch: test_train_state's "adamw" run.)"""
import warnings

import numpy as np
import pytest

import fastvae
from fastvae import EarlyStopping
from fastvae.training.average import AVERAGE, RAW, WeightAverage


def data(n=240, D=20, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, D)) < rng.random(D)).astype(np.float32)


def model(**kw):
    return fastvae.VAE(20, hidden=(16,), latent_dim=3, backend="cpu", seed=2, **kw)


def flat(m):
    return np.asarray(m.flat_params).copy()


def test_the_average_never_changes_the_steps():
    X = data()
    plain, avg = model(), model()
    plain.fit(X, epochs=3, batch_size=40, progress=False)
    avg.fit(X, epochs=3, batch_size=40, average=0.9, progress=False)
    a = avg.train_state.average
    assert a.holds == AVERAGE
    np.testing.assert_array_equal(a.other, flat(plain))  # the raw weights: the same run
    assert not np.array_equal(flat(avg), flat(plain))
    # and the model outside fit is the average: its ELBO is the averaged weights'
    assert avg.elbo(X).neg_elbo != plain.elbo(X).neg_elbo


def test_it_is_the_moving_average_of_the_steps_weights():
    """One step an epoch: the raw weights after each step (a callback of the run without
    an average sees them) averaged by hand equal the averaged run's weights."""
    X = data(64)
    seen = []
    plain = model()
    plain.fit(X, epochs=6, batch_size=64, progress=False,
              callbacks=[lambda m, rec: seen.append(flat(m).astype(np.float64))])
    avg = model()
    avg.fit(X, epochs=6, batch_size=64, average=0.5, progress=False)
    want = flat(model()).astype(np.float64)  # (the start: the untrained weights)
    for t, w in enumerate(seen, start=1):
        want += WeightAverage.weight(0.5, t) * (w - want)
    np.testing.assert_allclose(flat(avg), want, rtol=1e-5, atol=1e-6)
    assert WeightAverage.weight(0.5, 1) == pytest.approx(1 - 2 / 11)  # (warmed up)
    assert WeightAverage.weight(0.5, 100) == pytest.approx(0.5)


def test_early_stopping_keeps_the_best_average():
    """One step an epoch: the best weights early stopping keeps are the hand-made average
    of a run without one at the best epoch, and the raw weights restart from them."""
    X, V = data(64), data(80, seed=1)
    seen = []
    plain = model()
    plain.fit(X, epochs=40, batch_size=64, lr=0.05, progress=False,
              callbacks=[lambda m, rec: seen.append(flat(m).astype(np.float64))])
    m = model()
    rule = EarlyStopping(patience=2, every=1, min_steps=6)
    hist = m.fit(X, epochs=40, batch_size=64, val=V, lr=0.05, average=0.8,
                 early_stopping=rule, progress=False)
    es = m.train_state.stopper
    assert es.stopped and len(hist) < 40
    want = flat(model()).astype(np.float64)
    for t, w in enumerate(seen[:es.best_epoch], start=1):
        want += WeightAverage.weight(0.8, t) * (w - want)
    np.testing.assert_allclose(es.best_params, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(flat(m), es.best_params)
    np.testing.assert_array_equal(m.train_state.average.other, es.best_params)
    # validation read the averaged weights: they give the best validation loss again
    assert m.elbo(V).neg_elbo == pytest.approx(es.best, rel=1e-6)


@pytest.mark.parametrize("restore", [True, False])
def test_a_plateaus_decay_restarts_the_raw_weights_only_from_a_restored_best(restore):
    X, V = data(), data(80, seed=1)
    kw = dict(epochs=4, batch_size=40, val=V, lr=0.05, progress=False)
    rule = dict(patience=1, every=1, min_steps=0, decays=5, restore_best=restore)
    plain, avg = model(), model()
    plain.fit(X, early_stopping=EarlyStopping(**rule), **kw)
    avg.fit(X, early_stopping=EarlyStopping(**rule), average=0.9, **kw)
    decayed = any("lr" in r for r in plain.history)
    assert decayed
    if not restore:  # nothing was put back: the steps are a run without the average
        np.testing.assert_array_equal(avg.train_state.average.other, flat(plain))


def test_save_load_and_continue(tmp_path):
    X = data()
    straight = model()
    straight.fit(X, epochs=4, batch_size=40, average=0.95, progress=False)
    first = model()
    first.fit(X, epochs=2, batch_size=40, average=0.95, progress=False,
              checkpoint=tmp_path / "c.npz")
    again = fastvae.load(tmp_path / "c.npz", backend="cpu")
    assert again.train_state.average.holds == AVERAGE
    np.testing.assert_array_equal(flat(again), flat(first))  # the model file: the average
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.fit(X, epochs=2, progress=False)
    np.testing.assert_array_equal(flat(again), flat(straight))
    np.testing.assert_array_equal(again.train_state.average.other,
                                  straight.train_state.average.other)


def test_switching_it_off_keeps_the_model_it_holds():
    X = data()
    m = model()
    m.fit(X, epochs=2, batch_size=40, average=0.9, progress=False)
    held = flat(m)
    with pytest.warns(UserWarning, match="average 0.9 -> 0.0"):
        m.fit(X, epochs=0, average=0, progress=False)
    assert m.train_state.average is None
    np.testing.assert_array_equal(flat(m), held)


@pytest.mark.parametrize("bad", [1, 1.5, -0.1, True, float("nan"), "0.9"])
def test_bad_decays_are_refused_by_name(bad):
    m = model()
    with pytest.raises(ValueError, match="average"):
        m.fit(data(), epochs=1, batch_size=40, average=bad, progress=False)
    assert m.train_state is None  # nothing changed


def test_hold_exchanges_the_two_vectors():
    m = model()
    a = WeightAverage(m, other=np.zeros(m.flat_params.shape[0]), holds=AVERAGE)
    w = flat(m)
    a.hold(RAW)
    np.testing.assert_array_equal(flat(m), 0)
    np.testing.assert_array_equal(a.other, w)
    a.hold(RAW)  # (already: nothing moves)
    np.testing.assert_array_equal(flat(m), 0)
    with pytest.raises(ValueError, match="holds"):
        WeightAverage(m, holds="both")
    with pytest.raises(ValueError, match="values"):
        WeightAverage(m, other=np.zeros(3))
    a.hold(AVERAGE)
    with pytest.raises(RuntimeError, match="raw"):
        a.update(0.9, 1)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pickle_and_both_precisions_keep_the_average_to_the_bit(backend, dtype):
    import copy
    import pickle
    X = data().astype(dtype)

    def make():
        return fastvae.VAE(20, hidden=(16,), latent_dim=3, backend=backend, seed=2,
                           dtype=dtype)
    straight = make()
    straight.fit(X, epochs=3, batch_size=40, average=0.9, progress=False)
    m = make()
    m.fit(X, epochs=1, batch_size=40, average=0.9, progress=False)
    for c in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert c.train_state.average.holds == AVERAGE
        assert c.train_state.average.other.dtype == np.dtype(dtype)
        c.fit(X, epochs=2, progress=False)
        np.testing.assert_array_equal(flat(c), flat(straight))
        np.testing.assert_array_equal(c.train_state.average.other,
                                      straight.train_state.average.other)
