"""Block layouts and data rows for the column-block tests, edge values included."""
import numpy as np

from fastvae.core.blocks import ZINB, Bernoulli, Categorical, Gaussian, NegBinomial, Poisson
from fastvae.backends.codes import BLK_ZINB, LOGSCALE_FLOOR
from fastvae.core.columns import Columns


def layout(name):
    """(blocks, n_conditions, missing) of a named layout."""
    return {
        # every block kind, conditions, an exposure, missing cells, per-condition dispersions
        "mixed": ([Gaussian(3, scale="learned"), Categorical([4, 3]),
                   NegBinomial(2, exposure=True, dispersion="condition"),
                   Poisson(2, exposure=True), Bernoulli(2), Gaussian(2, scale=0.5),
                   Gaussian(2, scale="per_column"), NegBinomial(1),
                   ZINB(2, exposure=True, dispersion="condition"), ZINB(1)], 2, True),
        "gaussian": ([Gaussian(5, scale="learned"), Gaussian(2, scale=2.0),
                      Gaussian(3, scale="per_column")], 0, False),
        "bernoulli": ([Bernoulli(6)], 0, False),
        "categorical": ([Categorical([2, 5, 40])], 0, False),
        "poisson": ([Poisson(3), Poisson(2, exposure=True)], 0, False),
        "negbinomial": ([NegBinomial(4, exposure=True)], 0, False),
        "zinb": ([ZINB(5, exposure=True), ZINB(2)], 0, False),
        # wide: several column tiles on the GPU, dispersions per condition (3 groups)
        "wide_nb": ([NegBinomial(40, exposure=True, dispersion="condition"), Gaussian(30)],
                    3, True),
    }[name]


LAYOUTS = ["mixed", "gaussian", "bernoulli", "categorical", "poisson", "negbinomial", "zinb",
           "wide_nb"]


def columns(name):
    blocks, C, missing = layout(name)
    return Columns(blocks, C, missing)


def rows(cl, B, rng, edges=True, moderate=False):
    """Data rows (B, cl.width) for the layout: valid values of every column, and with
    ``edges`` the issue's edge values: counts of 0 and 10^6 (10^3 when ``moderate``, for
    finite differences), exposures of 1e-3 and 1e3, missing cells where the layout allows."""
    x = np.zeros((B, cl.width))
    for b, (j0, j1) in zip(cl.blocks, cl.block_columns):
        n = j1 - j0
        if isinstance(b, Gaussian):
            x[:, j0:j1] = rng.normal(size=(B, n)) * 2
        elif isinstance(b, Bernoulli):
            x[:, j0:j1] = rng.integers(0, 2, (B, n))
            x[::3, j0:j1] = rng.random((len(x[::3]), n))  # probabilities are data too
        elif isinstance(b, Categorical):
            for k, K in enumerate(b.classes):
                x[:, j0 + k] = rng.integers(0, K, B)
        else:
            x[:, j0:j1] = rng.poisson(5.0, (B, n))
            if isinstance(b, ZINB):  # inflated zeros
                x[:, j0:j1][rng.random((B, n)) < 0.4] = 0
            if edges:
                x[0, j0] = 0
                x[-1, j1 - 1] = 1e3 if moderate else 1e6
    D, C = cl.D, cl.C
    if C:
        g = np.arange(B) % C
        x[:, D:D + C] = np.eye(C)[g]
    if cl.E:
        e = np.exp(rng.normal(size=B))
        if edges:
            e[0], e[-1] = 1e-3, 1e3
        x[:, D + C] = e
    if cl.missing and B > 1:
        miss = rng.random((B, D)) < 0.2
        miss[0] = False  # keep the edge cells of row 0 observed
        x[:, :D][miss] = np.nan
    return x


def aux(cl, rng, edges=True):
    """An aux vector: log-scales around 0 (one at the floor), log thetas including
    log(1e-3) and log(1e4)."""
    a = rng.normal(size=cl.n_aux) * 0.5
    a[:len(cl.aux_fixed)] = cl.aux_fixed
    nf, nl = len(cl.aux_fixed), cl.n_logscale
    if edges and nl:
        a[nf] = LOGSCALE_FLOOR
    if edges and cl.n_theta:
        t = a[nf + nl:]
        t[0] = np.log(1e-3)
        t[-1] = np.log(1e4)
    return a


def outputs(cl, R, rng, confident=True):
    """Decoder outputs (R, P) around 0, with one categorical class at +30 (probability near
    1) when ``confident``, and ZINB inflation logits of +-30 (pi near 1 and 0) in rows 0 and
    1 and of +-3 in rows 2 and 3."""
    out = rng.normal(size=(R, cl.P))
    if confident:
        for j in cl.cat_cols:
            out[:, cl.cols[j, 1]] = 30.0
    gates = cl.cols[cl.cols[:, 0] == BLK_ZINB, 1] + 1
    for r, v in zip(range(R), (30.0, -30.0, 3.0, -3.0) if confident else (3.0, -3.0)):
        out[r, gates] = v
    return out


def model_kw(name):
    """The VAE arguments of a layout: likelihood, n_conditions, missing."""
    blocks, C, missing = layout(name)
    return dict(likelihood=blocks, n_conditions=C, missing="mask" if missing else None)


def fit_args(name, n, seed=0, dtype="float64"):
    """(X, {"conditions": ..., "exposure": ...}) of n rows of a layout, no edge values."""
    cl = columns(name)
    X, cond, expo = cl.split(rows(cl, n, np.random.default_rng(seed), edges=False).astype(dtype))
    kw = {}
    if cl.C:
        kw["conditions"] = cond
    if cl.E:
        kw["exposure"] = expo
    return np.ascontiguousarray(X), kw
