"""fastvae.sklearn.VAETransformer: scikit-learn's own estimator checks, Pipeline, clone,
GridSearchCV, and the errors that tell a user what to do."""
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from fastvae.sklearn import VAETransformer  # noqa: E402

SMALL = dict(hidden=(16,), epochs=30, batch_size=32)


def curve(n=240, seed=0):
    """Points near a closed curve in 6-D, with columns in very different units (so the
    Bernoulli likelihood needs a scaler): a one-dimensional structure a VAE can learn."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    X = np.stack([np.cos(t), np.sin(t), np.cos(2 * t), np.sin(2 * t), t / 3, np.cos(t) ** 2], 1)
    X += 0.05 * rng.standard_normal(X.shape)
    return X * np.array([1, 10, 100, 0.1, 5, 2]) + np.array([0, -5, 300, 1, 0, 7])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")  # array-API check
@pytest.mark.parametrize("est", [VAETransformer(),
                                 VAETransformer(backend="numpy", dtype="float32", epochs=20)],
                         ids=["default", "numpy-float32"])
def test_check_estimator(est):
    # a float32 model's score_samples of a subset of the rows differs from the whole set's in
    # the 7th digit (BLAS calls of another shape round in another order), where this check
    # wants 1e-7: invariant to float32's precision, which the next test asserts
    expected = ({"check_methods_subset_invariance": "float32: invariant to 1e-5, not 1e-7",
                 "check_methods_sample_order_invariance": "float32: invariant to 1e-5, not 1e-7"}
                if est.dtype == "float32" else None)
    check_estimator(est, expected_failed_checks=expected)  # raises on the first failed check


def test_score_samples_of_a_float32_model_is_invariant_to_the_subset_and_order():
    from tolerances import assert_close
    X = curve()[:50]
    est = VAETransformer(backend="numpy", dtype="float32", epochs=5).fit(X)
    whole = est.score_samples(X)
    perm = np.random.default_rng(0).permutation(50)
    assert_close(est.score_samples(X[perm]), whole[perm], dtype="float32")
    assert_close(est.score_samples(X[10:17]), whole[10:17], dtype="float32")


def test_pipeline_with_a_scaler():
    X = curve()
    pipe = make_pipeline(MinMaxScaler(), VAETransformer(likelihood="bernoulli",
                                                        latent_dim=2, **SMALL))
    Z = pipe.fit_transform(X)
    assert Z.shape == (len(X), 2) and Z.dtype == np.float64 and np.isfinite(Z).all()
    # the pipeline's transform is the scaler's, then the VAE's posterior means
    scaler, vae = pipe[0], pipe[-1]
    np.testing.assert_array_equal(pipe.transform(X), vae.model_.encode(scaler.transform(X))[0])
    back = pipe.inverse_transform(Z)  # through the decoder, then the scaler's inverse
    assert back.shape == X.shape
    np.testing.assert_allclose(back, scaler.inverse_transform(vae.model_.decode(Z)))
    assert list(pipe.get_feature_names_out()) == ["vaetransformer0", "vaetransformer1"]
    assert pipe.get_params()["vaetransformer__latent_dim"] == 2
    # training raised the ELBO above the untrained model's: by 0.07 nats here (-4.23 ->
    # -4.16), as the Bernoulli bound on fractional data cannot pass the targets' own
    # entropy (-2.73) and this tiny run gets little of the way
    untrained = make_pipeline(MinMaxScaler(), clone(vae).set_params(epochs=0)).fit(X)
    assert pipe.score(X) > untrained.score(X) + 0.05


def test_clone_refit_and_pickle_are_reproducible():
    X = StandardScaler().fit_transform(curve())
    est = VAETransformer(latent_dim=1, **SMALL).fit(X)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "model_")
    np.testing.assert_array_equal(twin.fit(X).transform(X), est.transform(X))  # same seed
    other = clone(est).set_params(seed=1).fit(X)
    assert not np.array_equal(other.transform(X), est.transform(X))
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.transform(X), est.transform(X))
    s1, s2 = est.sample(5, seed=3), est.sample(5, seed=3)
    assert s1.shape == (5, X.shape[1]) and np.array_equal(s1, s2)
    assert len(est.history_) == SMALL["epochs"]


def test_grid_search_prefers_the_trained_model():
    """score is an ELBO, higher is better: a grid search must pick training over none."""
    X = StandardScaler().fit_transform(curve())
    grid = GridSearchCV(VAETransformer(backend="numpy", latent_dim=1, hidden=(16,),
                                       batch_size=32),
                        {"epochs": [0, 40]}, cv=2).fit(X)
    assert grid.best_params_ == {"epochs": 40}
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_estimator_.transform(X).shape == (len(X), 1)


def test_bernoulli_data_outside_unit_interval_suggests_a_scaler():
    X = curve()
    est = VAETransformer(likelihood="bernoulli", **SMALL)
    with pytest.raises(ValueError, match=r"needs X in \[0, 1\].*MinMaxScaler.*"
                                         r"likelihood='gaussian'"):
        est.fit(X)
    assert not hasattr(est, "model_")
    est.fit(MinMaxScaler().fit_transform(X))
    with pytest.raises(ValueError, match="MinMaxScaler"):
        est.score(X)  # the ELBO of unscaled data would be meaningless
    est.transform(X)  # encoding is defined for any input, as in fastvae.VAE.encode


def test_hyper_parameters_are_checked_in_fit_not_init():
    X = curve(20)
    est = VAETransformer(latent_dim=0, dtype="int8", lr=-1.0)  # stored as given
    assert est.get_params()["latent_dim"] == 0
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64', got 'int8'"):
        est.fit(X)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer, got 0"):
        est.set_params(dtype="float64").fit(X)
    with pytest.raises(ValueError, match="lr"):
        est.set_params(latent_dim=2, epochs=1).fit(X)


def test_inverse_transform_checks_the_latent_width():
    X = StandardScaler().fit_transform(curve(64))
    est = VAETransformer(latent_dim=2, backend="numpy", epochs=1).fit(X)
    with pytest.raises(ValueError, match="3 features.*latent_dim=2"):
        est.inverse_transform(np.zeros((4, 3)))


@pytest.mark.parametrize("method", ["transform", "score", "inverse_transform", "sample"])
def test_every_method_before_fit_raises_not_fitted(method):
    """Not an AttributeError about model_: the error scikit-learn users catch."""
    from sklearn.exceptions import NotFittedError
    args = {"transform": (curve(5),), "score": (curve(5),),
            "inverse_transform": (np.zeros((3, 2)),), "sample": (3,)}[method]
    with pytest.raises(NotFittedError):
        getattr(VAETransformer(latent_dim=2), method)(*args)


def test_precision_passes_to_the_model_and_errors_at_fit():
    X = np.random.default_rng(0).standard_normal((60, 5))
    est = VAETransformer(epochs=2, dtype="float32", backend="numpy", precision="bf16")
    assert est.get_params()["precision"] == "bf16"
    est.fit(X)
    assert est.model_.precision == "bf16"
    from fastvae.core.precision import BF16_RULE
    assert est.model_._mm.rule == BF16_RULE
    # bf16 where it pays: this model's products are all below the rule, so float32
    full = VAETransformer(epochs=2, dtype="float32", backend="numpy").fit(X)
    np.testing.assert_array_equal(est.transform(X), full.transform(X))
    with pytest.raises(ValueError, match="needs dtype='float32'"):
        VAETransformer(epochs=1, precision="bf16").fit(X)  # (the default dtype is float64)


def test_shards_pass_to_fit_and_train_what_one_pass_trains():
    X = StandardScaler().fit_transform(curve(120))
    one = VAETransformer(**SMALL).fit(X)
    two = VAETransformer(**SMALL, shards=2).fit(X)
    assert two.get_params()["shards"] == 2
    assert two.model_.train_state.settings["shards"] == 2
    np.testing.assert_allclose(two.model_.flat_params, one.model_.flat_params, rtol=1e-9,
                               atol=1e-12)
    with pytest.raises(ValueError, match="shards must be a positive integer"):
        VAETransformer(**SMALL, shards=0).fit(X)


def test_average_passes_to_fit():
    X = np.random.default_rng(3).random((120, 6))
    avg = VAETransformer(**SMALL, average=0.9).fit(X)
    assert avg.get_params()["average"] == 0.9
    st = avg.model_.train_state
    assert st.settings["average"] == 0.9 and st.average.holds == "average"
    plain = VAETransformer(**SMALL).fit(X)
    np.testing.assert_array_equal(st.average.other, plain.model_.flat_params)
    with pytest.raises(ValueError, match="average"):
        VAETransformer(**SMALL, average=1.0).fit(X)
