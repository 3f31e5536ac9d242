"""Pictures: grid layout, which pictures apply, and that drawing leaves the model alone."""
import numpy as np
import pytest

import fastvae
from fastvae import data
from fastvae import viz


def test_image_grid_layout():
    imgs = np.arange(5 * 6, dtype=np.float32).reshape(5, 6) / 30
    g = viz.image_grid(imgs, (2, 3), ncols=2, pad=1, fill=-1)
    assert g.shape == (3 * 3 + 1, 2 * 4 + 1)
    np.testing.assert_array_equal(g[1:3, 1:4], imgs[0].reshape(2, 3))
    np.testing.assert_array_equal(g[4:6, 5:8], imgs[3].reshape(2, 3))
    np.testing.assert_array_equal(g[7:9, 5:8], -1)  # the empty sixth tile
    assert (g[0] == -1).all() and (g[:, 4] == -1).all()


def test_diagnostics_kl_per_dim_matches_the_formula():
    m = fastvae.VAE(16, hidden=(8,), latent_dim=3, dtype="float64", backend="numpy")
    ds = data.Dataset(np.random.default_rng(0).random((30, 16)))
    mu, lv = m.encode(ds.x)
    want = np.mean(0.5 * (mu ** 2 + np.exp(lv) - 1 - lv), axis=0)
    d = m.diagnostics(ds, batch_size=7)
    np.testing.assert_allclose(d.kl_per_dim, want, rtol=1e-12)
    # the per-dimension terms add up to the KL of the loss
    cache = m.forward(ds.x)
    assert d.kl_per_dim.sum() == pytest.approx(cache.kl_mean, rel=1e-12)
    np.testing.assert_allclose(d.activity, mu.var(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(d.mean_sigma, np.exp(0.5 * lv).mean(0), rtol=1e-12)
    assert d.active_units == int((mu.var(axis=0, ddof=1) > 0.01).sum())
    assert list(d.order) == list(np.argsort(-want))


def test_write_all(tmp_path):
    pytest.importorskip("matplotlib")
    train, test = data.load("shapes", shapes_n=300)
    m = fastvae.VAE(784, hidden=(16,), latent_dim=2, backend="cpu")
    m.fit(train, epochs=1, batch_size=64, val=test, progress=False)
    counter = m.noise.counter
    paths = viz.write_all(m, test, tmp_path / "pics", m.history)
    assert [p.rsplit("/", 1)[1] for p in map(str, paths)] == [
        "samples.png", "reconstructions.png", "interpolation.png", "traversal.png",
        "latent.png", "loss.png"]
    assert m.noise.counter == counter
    # not images: only the latent scatter
    flat = data.Dataset(np.random.default_rng(0).random((40, 7)).astype(np.float32))
    m7 = fastvae.VAE(7, hidden=(4,), latent_dim=3, backend="numpy")
    paths = viz.write_all(m7, flat, tmp_path / "flat")
    assert [p.rsplit("/", 1)[1] for p in map(str, paths)] == ["latent.png"]
    with pytest.raises(ValueError, match="history is empty"):
        viz.plot_history([], tmp_path / "x.png")
