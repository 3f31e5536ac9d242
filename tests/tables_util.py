"""A small TabularVAE fit for tests of the table front end: 32 hidden units, 4 latent
dimensions, the cpu backend, batches of 64 (a test's table trains in a second or two)."""
import warnings

from fastvae.tabular import CollapseWarning, TabularVAE

# (short fits are what these tests want; the note that they learned little is no news)
warnings.filterwarnings("ignore", category=CollapseWarning)


def fitted(df, epochs, **kw):
    """TabularVAE(**kw) with the small defaults above, fit on DataFrame ``df`` for
    ``epochs`` epochs."""
    kw.setdefault("hidden", (32,))
    kw.setdefault("latent_dim", 4)
    kw.setdefault("backend", "cpu")
    return TabularVAE(**kw).fit(df, epochs=epochs, batch_size=64, progress=False)


def saved_and_older(tv, key, path):
    """Check that fitted TabularVAE ``tv``'s ``<key>_`` survives save and load (the same
    samples), and that a checkpoint written before ``key`` was saved loads with none."""
    import pandas as pd

    import fastvae.tabular as tabular
    back = tabular.load(tv.save(path / "m.npz"))
    assert getattr(back, key + "_") == getattr(tv, key + "_")
    pd.testing.assert_frame_equal(back.sample(300, seed=2), tv.sample(300, seed=2))
    back.model_.metadata["tabular"].pop(key)
    assert getattr(tabular.from_model(back.model_), key + "_") == []
