"""TabularVAE without epochs: the training policy (fastvae.tabular.policy) and the collapse
note (issue 28).  Small models on a few hundred rows: the policy's own numbers are scaled
down here (monkeypatched) so that each run takes a fraction of a second."""
import warnings

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import fastvae.tabular as tabular  # noqa: E402
from fastvae.tabular import CollapseWarning, TabularVAE, policy  # noqa: E402


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(policy, "MIN_STEPS", 60)
    monkeypatch.setattr(policy, "MAX_STEPS", 600)
    monkeypatch.setattr(policy, "EVAL_STEPS", 10)
    monkeypatch.setattr(policy, "PATIENCE", 4)
    monkeypatch.setattr(policy, "PATIENCE_STEPS", 25)
    monkeypatch.setattr(policy, "AVERAGED_MAX_STEPS", 400)


def tiny(**kw):
    kw.setdefault("hidden", (16,))
    kw.setdefault("latent_dim", 3)
    kw.setdefault("backend", "cpu")
    return TabularVAE(**kw)


def correlated(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return pd.DataFrame({"x": x, "y": 2 * x + 0.2 * rng.standard_normal(n),
                         "c": np.where(x + 0.3 * rng.standard_normal(n) > 0, "hi", "lo")})


def fit(tv, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        return tv.fit(df, progress=False, **kw)


def params(tv):
    return np.asarray(tv.model.flat_params).copy()


def test_the_policy_stops_within_its_bounds_and_keeps_the_best_weights():
    tv = fit(tiny(), correlated())
    st = tv.model.train_state
    es = st.stopper
    assert es.stopped and policy.MIN_STEPS <= st.step <= policy.MAX_STEPS + 20
    assert st.settings["batch_size"] == policy.batch_size(len(correlated()) - 40)
    np.testing.assert_array_equal(params(tv), es.best_params)
    vals = [r["val_neg_elbo"] for r in tv.history if "val_neg_elbo" in r]
    assert es.best == min(vals)
    # its validation rows are its own share of the table: 10% of 400, seeded
    train, val = policy.split(400, 0)
    assert len(val) == 40 and not set(train) & set(val)


def test_the_policy_is_deterministic_for_a_seed():
    a, b = fit(tiny(seed=3), correlated()), fit(tiny(seed=3), correlated())
    assert a.model.train_state.step == b.model.train_state.step
    np.testing.assert_array_equal(params(a), params(b))
    pd.testing.assert_frame_equal(a.sample(100, seed=1), b.sample(100, seed=1))


@pytest.mark.parametrize("averaged", [False, True])
def test_the_policy_resumes_exactly_from_a_checkpoint(tmp_path, monkeypatch, averaged):
    if averaged:  # (correlated() has 400 rows: a large table's policy, with its average)
        monkeypatch.setattr(policy, "LARGE_TABLE", 300)
    df = correlated()
    straight = fit(tiny(seed=1), df)
    # the same run cut short by its deadline after a few epochs, saved, loaded, continued
    calls = {"n": 0}

    def stop_early(model, rec):
        calls["n"] += 1
        if calls["n"] == 5:
            from fastvae import StopTraining
            raise StopTraining
    cut = fit(tiny(seed=1), df, callbacks=[stop_early])
    assert not cut.model.train_state.stopper.stopped
    back = tabular.load(cut.save(tmp_path / "m.npz"))
    fit(back, df)  # epochs=None: the saved rule goes on
    assert back.model.train_state.step == straight.model.train_state.step
    assert back.model.train_state.stopper.stopped == straight.model.train_state.stopper.stopped
    np.testing.assert_array_equal(params(back), params(straight))
    st = straight.model.train_state
    assert (st.average is not None) == averaged
    if averaged:  # (the raw weights too)
        np.testing.assert_array_equal(back.model.train_state.average.other, st.average.other)
    before = params(back)
    fit(back, df)  # the policy has ended: nothing more
    np.testing.assert_array_equal(params(back), before)


@pytest.mark.parametrize("reload", [False, True])
def test_a_run_cut_after_its_last_step_gets_its_sampler_when_continued(tmp_path, monkeypatch,
                                                                        reload):
    """Ctrl-C between the last step and the end of fit (the latent density and the
    calibration follow training) leaves a stopped policy: continuing the fit, in memory or
    from the saved model, fits them for those weights, and the samples are the straight
    run's."""
    import fastvae.tabular.calibrate as cal
    df = correlated()
    straight = fit(tiny(seed=3), df)
    real = cal.calibrate

    def cut(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cal, "calibrate", cut)
    tv = tiny(seed=3)
    with pytest.raises(KeyboardInterrupt):
        fit(tv, df)
    monkeypatch.setattr(cal, "calibrate", real)
    assert tv.model.train_state.stopper.stopped and tv.after_step_ is None
    if reload:
        tv = tabular.load(tv.save(tmp_path / "m.npz"))
        assert tv.after_step_ is None
    fit(tv, df)
    assert tv.after_step_ == straight.after_step_ == straight.model.train_state.step
    assert tv.calibration_ is not None and tv.latent_ is not None
    np.testing.assert_array_equal(params(tv), params(straight))
    pd.testing.assert_frame_equal(tv.sample(100, seed=1), straight.sample(100, seed=1))
    calls = []
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: calls.append(1))
    fit(tv, df)  # the policy has ended and its sampler is fit: nothing more
    assert not calls


def test_a_build_fit_of_no_epochs_leaves_the_batch_size_to_the_policy():
    """A fit of 0 epochs (the command line's check of every setting) sees every row; the
    policy then picks its batch size from the rows it trains on, as a fit from scratch."""
    df = correlated(960)
    a = fit(tiny(seed=2), df)
    b = tiny(seed=2)
    fit(b, df, epochs=0)
    fit(b, df)
    n = len(df) - policy.val_rows(len(df))
    assert b.model.train_state.settings["batch_size"] == policy.batch_size(n) == \
        a.model.train_state.settings["batch_size"]
    np.testing.assert_array_equal(params(a), params(b))


def test_explicit_epochs_mean_exactly_that():
    df = correlated()
    tv = fit(tiny(), df, epochs=3, batch_size=50)
    st = tv.model.train_state
    assert st.epoch == 3 and st.step == 3 * 8 and st.stopper is None
    fit(tv, df, epochs=2)
    assert tv.model.train_state.epoch == 5


def test_a_small_table_trains_a_fixed_number_of_steps():
    df = correlated(60)
    tv = fit(tiny(), df)
    st = tv.model.train_state
    assert st.stopper is None and st.step >= policy.MIN_STEPS
    assert policy.val_rows(60) == 0


def test_max_seconds_stops_the_policy_with_the_best_weights(monkeypatch):
    monkeypatch.setattr(policy, "MAX_STEPS", 10**6)
    monkeypatch.setattr(policy, "PATIENCE", 10**6)
    tv = fit(tiny(), correlated(), max_seconds=0.5)
    es = tv.model.train_state.stopper
    assert es.stopped == "max_seconds (0.5) reached"
    np.testing.assert_array_equal(params(tv), es.best_params)


@pytest.mark.parametrize("n", [1, 50, 99, 100, 1000, 10**5, 10**7])
def test_the_rules_are_in_their_bounds(n):
    b = policy.batch_size(n)
    assert 1 <= b <= min(n, policy.MAX_BATCH) and (b >= policy.MIN_BATCH or b == n)
    v = policy.val_rows(n)
    assert v == 0 if n < policy.MIN_VAL_TABLE else policy.MIN_VAL_ROWS <= v <= policy.MAX_VAL_ROWS


# ------------------------------------------------------------------ the collapse note
def independent(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.standard_normal(n), "b": rng.exponential(size=n),
                         "c": rng.choice(["p", "q", "r"], n)})


def test_a_plateau_no_better_than_independent_columns_trains_on_to_collapse_steps(
        monkeypatch):
    """The policy's floor is the held-out rows' loss under independent columns: a table
    whose loss never beats it trains COLLAPSE_STEPS; a related table beats it."""
    monkeypatch.setattr(policy, "COLLAPSE_STEPS", 400)
    flat = fit(tiny(seed=1), independent())
    st = flat.model.train_state
    assert st.stopper.floor is not None and st.stopper.best > st.stopper.floor
    assert st.step >= 400
    related = fit(tiny(seed=1), correlated())
    st = related.model.train_state
    assert st.stopper.best <= st.stopper.floor


def test_the_collapse_note_fires_on_independent_columns_and_not_on_related_ones():
    with pytest.warns(CollapseWarning, match="the codes carry|no better than independent"):
        tiny().fit(independent(), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        tiny().fit(correlated(), progress=False)


def test_the_independent_columns_baseline():
    df = independent(2000)
    tv = fit(tiny(), df, epochs=1)
    X = tv.schema.encode(df)
    # a standard normal cell per numeric column (the quantile map), the categories' entropy
    p = df["c"].value_counts(normalize=True).to_numpy()
    want = 2 * (0.5 + 0.5 * np.log(2 * np.pi)) - (p * np.log(p)).sum()
    assert policy.independent_loss(tv.schema, X) == pytest.approx(want, abs=0.02)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "x", True])
def test_fit_refuses_a_bad_batch_size(bad):
    """A batch size that is not a positive integer is refused by name, before any work
    (0 used to mean "the default", and 2.5 surfaced as an error about epochs)."""
    df = pd.DataFrame({"a": np.arange(200.0), "b": np.arange(200) % 3})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TabularVAE().fit(df, batch_size=bad, progress=False)


# ------------------------------------------------------------------ the weight average
def test_a_large_table_trains_with_the_weight_average_by_default(monkeypatch):
    assert policy.average(policy.LARGE_TABLE - 1) == 0
    assert policy.average(policy.LARGE_TABLE) == policy.AVERAGE_DECAY
    monkeypatch.setattr(policy, "LARGE_TABLE", 300)  # correlated() has 400 rows
    tv = fit(tiny(seed=2), correlated())
    st = tv.model.train_state
    assert st.settings["average"] == policy.AVERAGE_DECAY and st.average.holds == "average"
    assert st.stopper.stopped and st.stopper.max_steps == policy.AVERAGED_MAX_STEPS
    steps = -(-st.n_rows // st.settings["batch_size"])
    assert st.stopper.patience == max(policy.MIN_PATIENCE, min(policy.PATIENCE, -(
        -policy.PATIENCE_STEPS // (st.stopper.every * steps))))
    np.testing.assert_array_equal(params(tv), st.stopper.best_params)  # the best average
    small = fit(tiny(seed=2), correlated(250))
    assert small.model.train_state.stopper.max_steps == policy.MAX_STEPS
    assert small.model.train_state.settings["average"] == 0
    assert small.model.train_state.average is None
    # explicit settings win: epochs= keeps the table's average, average=0 drops it
    assert fit(tiny(), correlated(), epochs=2).model.train_state.settings["average"] > 0
    assert fit(tiny(), correlated(), average=0).model.train_state.average is None


@pytest.mark.parametrize("steps", [5, 49, 50, 120, 174, 1050])
def test_an_averaged_plan_waits_patience_steps(steps):
    batch = 256
    rule, epochs = policy.plan(steps * batch, batch, averaged=True)
    waited = rule.patience * rule.every * steps  # steps between the last best and a stop
    assert policy.MIN_PATIENCE <= rule.patience <= policy.PATIENCE
    assert waited >= policy.PATIENCE_STEPS or rule.patience == policy.PATIENCE
    assert rule.patience == policy.MIN_PATIENCE or \
        (rule.patience - 1) * rule.every * steps < policy.PATIENCE_STEPS
    assert rule.max_steps == policy.AVERAGED_MAX_STEPS and epochs * steps >= rule.max_steps
    raw, _ = policy.plan(steps * batch, batch)
    assert raw.patience == policy.PATIENCE and raw.max_steps == policy.MAX_STEPS
