"""The fit loop: history, exact resume (epoch boundary and mid-epoch), bad data, ELBO."""
import math
import signal

import numpy as np
import pytest

import fastvae
from fastvae import data
from fastvae.io.data import DataError
from fastvae.training.fit import StopTraining

from conftest import interrupt_at


def small_model(**kw):
    kw.setdefault("backend", "cpu")
    return fastvae.VAE(784, hidden=(32,), latent_dim=4, seed=7, **kw)


@pytest.fixture(scope="module")
def shapes():
    return data.load("shapes", shapes_n=700)


def test_fit_history_and_learning(shapes):
    train, test = shapes
    m = small_model()
    h = m.fit(train, epochs=4, batch_size=64, val=test, progress=False)
    assert len(h) == 4 and m.history == list(h) and not h.interrupted
    keys = {"epoch", "train_loss", "train_neg_elbo", "train_recon", "train_kl", "beta",
            "val_neg_elbo", "val_recon", "val_kl", "seconds", "train_seconds",
            "samples_per_s", "steps"}
    assert set(h[0]) == keys
    assert [r["epoch"] for r in h] == [1, 2, 3, 4] and h[0]["steps"] == 10  # ceil(630/64)
    for r in h:
        assert r["train_neg_elbo"] == pytest.approx(r["train_recon"] + r["train_kl"])
        assert r["val_neg_elbo"] == pytest.approx(r["val_recon"] + r["val_kl"])
    # it learns: from ~540 nats (first epoch) to below 400 in 40 steps, steadily
    val = [r["val_neg_elbo"] for r in h]
    assert val[-1] < 400 < 500 < h[0]["train_neg_elbo"] and val == sorted(val, reverse=True)
    assert h[-1]["val_neg_elbo"] == pytest.approx(m.elbo(test).neg_elbo, rel=1e-12)
    # a second fit continues the same optimizer
    step = m.optimizer.step_count
    m.fit(train, epochs=1, batch_size=64, progress=False)
    assert m.optimizer.step_count == step + 10 and len(m.history) == 5


def _straight_vs_resumed(train, test, tmp_path, **fit_kw):
    a = small_model()
    a.fit(train, epochs=2, batch_size=64, val=test, progress=False, **fit_kw)
    b = small_model()
    b.fit(train, epochs=1, batch_size=64, val=test, progress=False,
          checkpoint=tmp_path / "ck.npz", **fit_kw)
    b = fastvae.load(tmp_path / "ck.npz", backend="cpu")
    b.fit(train, epochs=1, batch_size=64, val=test, progress=False, **fit_kw)
    return a, b


def _assert_same_run(a, b):
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    np.testing.assert_array_equal(a.optimizer.m, b.optimizer.m)
    np.testing.assert_array_equal(a.optimizer.v, b.optimizer.v)
    assert a.optimizer.step_count == b.optimizer.step_count
    assert a.noise.counter == b.noise.counter
    drop = ("seconds", "train_seconds", "samples_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)


def test_resume_is_exact(shapes, tmp_path):
    a, b = _straight_vs_resumed(*shapes, tmp_path)
    _assert_same_run(a, b)


def test_resume_is_exact_with_warmup_and_dynamic_binarization(shapes, tmp_path):
    a, b = _straight_vs_resumed(*shapes, tmp_path, kl_warmup=1.5, binarize="dynamic")
    _assert_same_run(a, b)
    assert a.history[0]["beta"] < 1.0 and a.beta == 1.0  # ramping, and restored after


@pytest.mark.parametrize("k", [4, 13])
def test_ctrl_c_saves_and_resume_mid_epoch_is_exact(shapes, tmp_path, k):
    train, test = shapes
    a = small_model()
    a.fit(train, epochs=2, batch_size=64, val=test, progress=False, binarize="dynamic")
    b = interrupt_at(small_model(), k)
    ck = tmp_path / "ck.npz"
    # the handler fit found (a shell's background job starts with SIGINT ignored)
    handler = signal.getsignal(signal.SIGINT)
    h = b.fit(train, epochs=2, batch_size=64, val=test, progress=False,
              checkpoint=ck, binarize="dynamic")
    assert h.interrupted and b.optimizer.step_count == k  # the step in flight completed
    assert signal.getsignal(signal.SIGINT) is handler
    c = fastvae.load(ck, backend="cpu")
    np.testing.assert_array_equal(c.flat_params, b.flat_params)
    assert c.train_state.epoch_steps == k % 10 and c.train_state.row == 64 * (k % 10)
    c.fit(train, epochs=2 - c.train_state.epoch, val=test, progress=False)  # settings saved
    _assert_same_run(a, c)


def test_bad_data_fails_before_training(shapes):
    train, _ = shapes
    m = small_model()
    before = m.flat_params.copy()
    x = train.to_array()
    x[100, 5] = np.nan
    with pytest.raises(DataError, match="training data: 1 NaN"):
        m.fit(x, epochs=1, progress=False)
    with pytest.raises(DataError, match="validation data: rows have 10 values"):
        m.fit(train, epochs=1, val=np.zeros((5, 10), np.float32), progress=False)
    with pytest.raises(DataError, match="fewer than one batch of 128"):
        m.fit(train.to_array()[:100], epochs=1, progress=False)
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        m.fit(2 * train.to_array(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="binarize"):
        m.fit(train, binarize="static", progress=False)
    np.testing.assert_array_equal(m.flat_params, before)
    assert m.optimizer is None


def test_nonfinite_loss_stops_with_a_clear_error(shapes):
    m = small_model()
    m.parameters()["dec.out.W"][0, :] = np.nan
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 1"):
        m.fit(shapes[0], epochs=1, progress=False)


def test_callbacks_and_stop(shapes):
    seen = []

    def cb(model, rec):
        seen.append(rec["epoch"])
        if rec["epoch"] == 2:
            raise StopTraining

    m = small_model()
    m.fit(shapes[0], epochs=5, batch_size=64, callbacks=[cb], progress=False)
    assert seen == [1, 2] and len(m.history) == 2


def test_progress_lines(shapes):
    import io

    s = io.StringIO()
    small_model().fit(shapes[0], epochs=2, batch_size=64, val=shapes[1], stream=s)
    lines = s.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch   2  train -elbo")
    assert "val -elbo" in lines[0] and "samples/s" in lines[0]  # no bar: not a terminal


def test_short_epochs_do_not_flood_the_progress_lines(shapes, monkeypatch):
    """Epochs closer together than LINE_EVERY_S write no line but the first, the last and
    one that stops the run (a policy of 950 tiny epochs wrote 950 lines)."""
    import io

    from fastvae.training import loop
    monkeypatch.setattr(loop, "LINE_EVERY_S", 1e9)
    s = io.StringIO()
    small_model().fit(shapes[0], epochs=6, batch_size=256, stream=s)
    lines = s.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["1", "6"], lines
    s = io.StringIO()
    stop = fastvae.EarlyStopping(patience=1, min_delta=1e9)  # (stops at the 2nd validation)
    small_model().fit(shapes[0], epochs=6, batch_size=256, val=shapes[1],
                      early_stopping=stop, stream=s)
    lines = s.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines[:2]] == ["1", "2"] and "early stopping" in lines[2]


    def fails(model, rec):  # (a run that ends in an error: its last epoch's line first)
        if rec["epoch"] == 4:
            raise RuntimeError("stop here")

    s = io.StringIO()
    with pytest.raises(RuntimeError, match="stop here"):
        small_model().fit(shapes[0], epochs=6, batch_size=256, callbacks=[fails], stream=s)
    assert [ln.split()[1] for ln in s.getvalue().splitlines()] == ["1", "4"]


def test_elbo_batching_and_noise_independence():
    m = fastvae.VAE(20, hidden=(8,), latent_dim=3, dtype="float64", backend="numpy", seed=1)
    x = np.random.default_rng(0).random((53, 20))
    counter = m.noise.counter
    whole = m.elbo(x, batch_size=1000)
    assert m.noise.counter == counter  # the training noise stream is untouched
    assert m.elbo(x, batch_size=7).neg_elbo == pytest.approx(whole.neg_elbo, rel=1e-12)
    assert m.elbo(x, batch_size=7, seed=1).neg_elbo != whole.neg_elbo
    assert whole.elbo == -whole.neg_elbo and whole.n == 53
    # many samples: the estimate converges (its spread shrinks like 1/sqrt(L))
    e = [m.elbo(x, n_samples=64, seed=s).neg_elbo for s in range(4)]
    e1 = [m.elbo(x, n_samples=1, seed=s).neg_elbo for s in range(4)]
    assert np.std(e) < np.std(e1)
    assert math.isfinite(whole.recon) and whole.kl >= 0


def test_memory_mapped_npy_trains_like_the_array(shapes, tmp_path):
    x = shapes[0].to_array()
    np.save(tmp_path / "x.npy", x)
    mm, _ = data.load(tmp_path / "x.npy")
    assert isinstance(mm.x, np.memmap)
    a, b = small_model(), small_model()
    a.fit(x, epochs=1, batch_size=64, progress=False)
    b.fit(mm, epochs=1, batch_size=64, progress=False)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


def test_progress_bar_on_a_terminal():
    import io

    from fastvae.training.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    p = Progress(s)
    p.start("epoch 1", total=4, batch=100)
    for i in range(1, 5):
        p.update(i, "loss 1.00")
    p.finish("epoch   1 done")
    text = s.getvalue()
    assert "epoch 1 [" in text and "4/4" in text and "samples/s" in text and "ETA" in text
    assert text.endswith("\r\x1b[Kepoch   1 done\n")  # the bar is cleared, the line stays


def test_identical_runs_give_the_same_bits_wherever_the_buffers_land():
    """Buffers start on 64-byte boundaries: OpenBLAS's path through a transposed operand
    depends on where the operand starts, and buffers wherever the allocator put them made
    identical fits in one process differ in their last bits (1 run in 8 here, before)."""
    from fastvae.backends.aligned import ALIGN_BYTES
    X = np.random.default_rng(0).normal(size=(240, 2))
    X = (X - X.mean(0)) / X.std(0)

    def run():
        m = fastvae.VAE(2, hidden=(16,), latent_dim=1, likelihood="gaussian",
                        dtype="float64", backend="cpu")
        m.fit(X, epochs=3, batch_size=32, progress=False)
        return m
    first = run()
    junk = []
    for size in (1, 3, 5, 7, 9, 11, 13, 15, 1001, 333):
        junk.append(np.empty(size))  # moves the allocator's next blocks around
        m = run()
        np.testing.assert_array_equal(m.flat_params, first.flat_params)
    ws = m.workspaces.get(32, 1, True)
    for a in (m.flat_params, m.flat_grads, ws.h[0], ws.head, ws.dhead, ws.out, ws.dout):
        assert a.ctypes.data % ALIGN_BYTES == 0
