"""fit(early_stopping=EarlyStopping(...)): the run stops when the validation loss stops
improving, keeps the best weights, and resumes from a checkpoint to the same stop and the
same bits (fastvae.training.stopping)."""
import numpy as np
import pytest

import fastvae
from fastvae import EarlyStopping


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.random((600, 20)) < 0.3).astype(np.float32)
    return X[:500], X[500:]


def model(seed=1):
    return fastvae.VAE(20, hidden=(32,), latent_dim=4, backend="cpu", seed=seed)


def rule(**kw):
    kw.setdefault("patience", 3)
    kw.setdefault("every", 2)
    kw.setdefault("min_steps", 10)
    return EarlyStopping(**kw)


def flat(m):
    return np.asarray(m.flat_params).copy()


def test_it_stops_and_keeps_the_best_weights():
    X, V = data()
    m = model()
    # a learning rate that overfits quickly, so that the validation loss turns
    hist = m.fit(X, epochs=400, batch_size=50, val=V, lr=0.02, early_stopping=rule(),
                 progress=False)
    st = m.train_state
    es = st.stopper
    assert es.stopped and "has not improved for 3 validations" in es.stopped
    assert st.epoch < 400 and hist[-1]["stopped"] == es.stopped
    vals = {r["epoch"]: r["val_neg_elbo"] for r in hist if "val_neg_elbo" in r}
    assert set(vals) == {e for e in range(2, st.epoch + 1, 2)}  # every 2 epochs
    assert es.best == min(vals.values()) and vals[es.best_epoch] == es.best
    assert st.epoch - es.best_epoch == 2 * 3  # three validations without improvement
    np.testing.assert_array_equal(flat(m), es.best_params)
    # the weights are the best epoch's: the validation ELBO is the best one again
    assert m.elbo(V).neg_elbo == pytest.approx(es.best, rel=1e-6)


def test_max_steps_and_min_steps():
    X, V = data()
    m = model()
    m.fit(X, epochs=1000, batch_size=50, val=V, early_stopping=rule(max_steps=60,
                                                                    patience=1000),
          progress=False)
    assert m.train_state.step == 60 and "max_steps (60)" in m.train_state.stopper.stopped
    m2 = model()
    m2.fit(X, epochs=1000, batch_size=50, val=V, lr=0.05,
           early_stopping=rule(patience=1, min_steps=200), progress=False)
    assert m2.train_state.step >= 200


def test_the_same_seed_gives_the_same_run():
    X, V = data()
    a, b = model(), model()
    for m in (a, b):
        m.fit(X, epochs=300, batch_size=50, val=V, lr=0.02, early_stopping=rule(),
              progress=False)
    assert a.train_state.epoch == b.train_state.epoch
    np.testing.assert_array_equal(flat(a), flat(b))


@pytest.mark.parametrize("cut", [1, 5, 7])
def test_a_checkpoint_resumes_to_the_same_stop_and_bits(tmp_path, cut):
    X, V = data()
    straight = model()
    straight.fit(X, epochs=300, batch_size=50, val=V, lr=0.02, early_stopping=rule(),
                 progress=False)
    assert straight.train_state.epoch > cut  # (the cut falls inside the run)
    m = model()
    m.fit(X, epochs=cut, batch_size=50, val=V, lr=0.02, early_stopping=rule(),
          progress=False)
    m.save(tmp_path / "m.npz")
    back = fastvae.load(tmp_path / "m.npz")
    assert back.train_state.stopper.best_epoch == m.train_state.stopper.best_epoch
    back.fit(X, epochs=300 - cut, val=V, progress=False)  # the saved rule goes on
    assert back.train_state.epoch == straight.train_state.epoch
    assert back.train_state.stopper.stopped == straight.train_state.stopper.stopped
    np.testing.assert_array_equal(flat(back), flat(straight))


def test_a_stopped_rule_does_not_act_again_and_can_be_dropped():
    X, V = data()
    m = model()
    m.fit(X, epochs=300, batch_size=50, val=V, lr=0.02, early_stopping=rule(), progress=False)
    done = m.train_state.epoch
    m.fit(X, epochs=3, val=V, progress=False)  # three more epochs, as asked
    assert m.train_state.epoch == done + 3
    m.fit(X, epochs=2, val=V, early_stopping=False, progress=False)
    assert m.train_state.stopper is None and m.train_state.epoch == done + 5


def test_bad_rules_are_refused_before_anything_changes():
    X, V = data()
    m = model()
    with pytest.raises(ValueError, match="watches the validation loss: pass val="):
        m.fit(X, epochs=2, early_stopping=rule(), progress=False)
    with pytest.raises(ValueError, match="early_stopping must be an EarlyStopping"):
        m.fit(X, epochs=2, val=V, early_stopping="yes", progress=False)
    with pytest.raises(ValueError, match="below min_steps"):
        EarlyStopping(min_steps=10, max_steps=5)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    assert m.train_state is None


def test_plateaus_halve_the_learning_rate_before_one_stops_the_run(tmp_path):
    X, V = data()
    m = model()
    m.fit(X, epochs=600, batch_size=50, val=V, lr=0.02,
          early_stopping=rule(decays=2, factor=0.5), progress=False)
    es = m.train_state.stopper
    assert es.stopped and es.decayed == 2
    assert m.train_state.optimizer.lr == pytest.approx(0.02 * 0.25)
    lrs = [r["lr"] for r in m.history if "lr" in r]
    assert lrs == pytest.approx([0.01, 0.005])
    np.testing.assert_array_equal(flat(m), es.best_params)
    # the decays are part of the saved state
    cut = model()
    cut.fit(X, epochs=12, batch_size=50, val=V, lr=0.02,
            early_stopping=rule(decays=2, factor=0.5), progress=False)
    back = fastvae.load(cut.save(tmp_path / "c.npz"))
    back.fit(X, epochs=600 - 12, val=V, progress=False)
    assert back.train_state.step == m.train_state.step
    np.testing.assert_array_equal(flat(back), flat(m))


class _Model:
    """What EarlyStopping.update reads of a model: its flat parameters on a backend."""
    def __init__(self):
        from fastvae.backends import reference
        self.kernels, self.flat_params = reference, np.zeros(3)


def test_a_plateau_above_the_floor_stops_only_from_floor_steps():
    """A collapsed model's loss creeps down above the baseline it has not beaten: patience
    alone does not stop it before floor_steps; once under the floor, patience does."""
    es = EarlyStopping(patience=2, min_steps=10, floor=1.0, floor_steps=100)
    m = _Model()
    stops = [es.update(m, {"epoch": k, "val_neg_elbo": 5.0}, step=10 * k) for k in range(1, 12)]
    assert next(k for k, why in enumerate(stops, 1) if why) == 10  # step 100, not step 30
    es = EarlyStopping(patience=2, min_steps=10, floor=1.0, floor_steps=100)
    losses = [5.0, 0.9, 0.9, 0.9, 0.9]
    stops = [es.update(m, {"epoch": k, "val_neg_elbo": v}, step=10 * k)
             for k, v in enumerate(losses, 1)]
    assert next(k for k, why in enumerate(stops, 1) if why) == 4
    back = EarlyStopping.from_checkpoint(*es.to_checkpoint())
    assert (back.floor, back.floor_steps) == (1.0, 100)
    with pytest.raises(ValueError, match="floor must be a finite number"):
        EarlyStopping(floor=float("nan"))
