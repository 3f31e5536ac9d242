"""How long a table model trains when it is not told: the training policy, and the check
that the codes learned something.

``TabularVAE().fit(table)`` with no ``epochs``:

1. **Validation rows.**  ``val_rows(n)`` of the n training rows (a seeded draw, never the
   command line's test split) are held out; the model trains on the rest and the policy
   watches their negative ELBO.  Tables of fewer than :data:`MIN_VAL_TABLE` rows hold
   none out and train :data:`MIN_STEPS` steps.
2. **Batch size** from the row count (:func:`batch_size`): small tables take small
   batches, so that they get enough optimizer steps per epoch.
3. **Length.**  Validation every :data:`EVAL_STEPS` steps or so (a whole number of
   epochs); the run stops when the held-out loss has not improved by more than
   :data:`REL_DELTA` of itself for :data:`PATIENCE` validations, after at least
   :data:`MIN_STEPS` and at most :data:`MAX_STEPS` steps (a plateau no better than
   independent columns' stops it only after :data:`COLLAPSE_STEPS`), and the best weights
   are kept
   (:class:`~fastvae.training.stopping.EarlyStopping`).
4. **Weight average.**  From :data:`LARGE_TABLE` rows on, the run keeps a moving average
   of the weights (:data:`AVERAGE_DECAY`, fit's ``average``): validation reads it, the
   best weights and the model fit leaves are its, and its smooth validation curve is read
   with a patience of :data:`PATIENCE_STEPS` steps, up to :data:`AVERAGED_MAX_STEPS`.

The rules count steps, not seconds: a seed gives the same run wherever the arithmetic is
the same (the same CPU kind, BLAS library and BLAS thread count: the products' last bits
move the stopping point, e.g. wa_churn stopped after 6,250 steps with OpenBLAS on 2
threads and after 5,400 on 1; Numba's first compile in a fresh install rounds a few
reassociated sums one ulp apart from the cached code later runs load); ``max_seconds`` is
the one stop that depends on the machine's speed, off unless asked for.

The numbers were chosen by measuring on a suite of real tables
(``benchmarks/bench_tables.py``); they are not tuned to any one of them.

After a fit, :func:`collapse_note` says (one line) when the codes carry next to nothing: a
held-out KL below :data:`COLLAPSED_KL` nats per row, or a held-out loss no better than a
model of independent columns (each column's own training distribution).
"""
from __future__ import annotations

import math

import numpy as np

#: share of the training rows the policy validates on, and its bounds (rows)
VAL_SHARE = 0.1
MIN_VAL_ROWS, MAX_VAL_ROWS = 20, 5000
#: tables smaller than this are not split (every row trains)
MIN_VAL_TABLE = 100
#: steps between validations (rounded to whole epochs), validations without improvement;
#: an improvement counts when it is more than REL_DELTA of the loss (wa_churn's loss still
#: fell 0.1 nats per 1,000 steps after 6,000 steps, where its samples had long stopped
#: getting better)
EVAL_STEPS, PATIENCE, REL_DELTA = 50, 10, 0.002
#: the fewest and the most optimizer steps.  The fewest: a small table's held-out loss can
#: rest on a plateau for 10 validations before the columns' relations are learnt (openintro
#: births14, 1,000 rows, seeds 0 and 2 stopped at 1,215 and 1,665 steps with fage-mage
#: 0.01, real 0.69; from 3,000 steps, 0.41 and 0.28); the suite's tables train longer
MIN_STEPS, MAX_STEPS = 3000, 20000
#: while the held-out loss is no better than independent columns' (by COLLAPSED_GAIN), a
#: plateau stops the run only from this step on: a collapsed model's loss creeps down too
#: slowly for REL_DELTA (openintro births14, 800 rows: stopped at 1,008 steps at 20.07
#: nats against the independent columns' 19.95, every correlation lost (fage-mage -0.02,
#: real 0.70); trained to 3,000 it reached 19.70 and 0.34)
COLLAPSE_STEPS = 3000
#: plateaus that halve the learning rate before one ends the run
DECAYS = 0
#: batch size bounds: n / BATCH_DIVISOR rows, a power of two within these.  The cap is
#: 256: from a few hundred rows on a step costs about its products, so a row costs the
#: same in batches of 256 as of 512, and twice the updates reached the same held-out loss
#: sooner (1 seed each, 2-core Xeon: wa_churn 8.5 -> 4.9 s, diamonds 20.9 -> 15.4 s,
#: modeldata Chicago 15.0 -> 7.8 s, ggplot2 txhousing 6.5 -> 4.1 s, ISLR Default
#: 3.1 -> 1.9 s, accuracy within 0.007 either way; gss_wages and flights, whose steps
#: are mostly products, were no faster).  At 128 the per-step overhead returns (wa_churn's
#: accuracy fell 0.967 -> 0.959) and larger tables reached the step cap
MIN_BATCH, MAX_BATCH, BATCH_DIVISOR = 32, 256, 10
#: the collapse note's thresholds: KL per row (nats) and the gain over independent
#: columns (nats per row) below which the codes are said to carry next to nothing
COLLAPSED_KL, COLLAPSED_GAIN = 0.05, 0.05


#: tables of this many rows or more get the larger model, and a weight average
LARGE_TABLE = 10_000
#: the weight average's decay (about the last 1,000 steps; fit's ``average``), from
#: LARGE_TABLE rows on.  Measured on the suite (seed 0, the same run judged with its raw
#: and its averaged weights): gss_wages' averaged weights after 5,000 steps were as
#: accurate as its raw ones after 8,000 (0.950 and 0.949), and after 8,000 as its raw ones
#: after 12,000 (0.953 and 0.953); wa_churn (7,043 rows) gained 0.003-0.006 too, but its
#: DCR share rose by 0.02-0.03 (penguins: by up to 0.07): on small tables the average
#: fits the training rows more closely than the holdout, so they keep the raw weights
AVERAGE_DECAY = 0.999
#: an averaged run's patience: PATIENCE_STEPS steps of validations (at least MIN_PATIENCE,
#: at most PATIENCE): the raw weights' noisy curve needed 10 validations, which on a long
#: epoch were 1,740 steps of waiting (gss_wages); and its step cap.  A smooth curve goes
#: on falling slowly for long (diamonds by 1% per 1,000 steps at 20,000): the cap is
#: where the time is better spent elsewhere (gss_wages 0.953 at 12,000 steps, 0.9565 at
#: 20,000 in 2.2x the time)
PATIENCE_STEPS, MIN_PATIENCE, AVERAGED_MAX_STEPS = 500, 2, 12_000


def model_size(n):
    """(hidden widths, latent size) for a table of n rows: (64, 64) and 16 below
    LARGE_TABLE rows, where the step's cost is mostly its fixed overhead and a larger model
    scored no better; (128, 128) and 32 from there (gss_wages: 0.916 against 0.909)."""
    return ((64, 64), 16) if n < LARGE_TABLE else ((128, 128), 32)


def val_rows(n):
    """How many of n training rows the policy holds out (0 for a small table)."""
    if n < MIN_VAL_TABLE:
        return 0
    return int(min(MAX_VAL_ROWS, max(MIN_VAL_ROWS, round(VAL_SHARE * n))))


def split(n, seed):
    """(train, validation) positions of n rows: a seeded draw of val_rows(n), both sorted."""
    k = val_rows(n)
    order = np.random.default_rng(np.random.SeedSequence((int(seed), 0x5011C7))).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def batch_size(n):
    """The batch size for n training rows: n / BATCH_DIVISOR as a power of two, within
    [MIN_BATCH, MAX_BATCH], and never above n."""
    b = 2 ** int(round(math.log2(max(1.0, n / BATCH_DIVISOR))))
    return int(max(1, min(n, max(MIN_BATCH, min(MAX_BATCH, b)))))


def average(n):
    """The weight average's decay for a table of n rows (0: none; see AVERAGE_DECAY)."""
    return AVERAGE_DECAY if n >= LARGE_TABLE else 0.0


def plan(n, batch, baseline=None, averaged=False):
    """The :class:`~fastvae.training.stopping.EarlyStopping` rule and the epoch cap for
    n rows trained in batches of ``batch``: (rule or None, epochs).  ``baseline``: the
    held-out rows' loss under independent columns (:func:`independent_loss`), the floor a
    plateau must be under to stop the run before COLLAPSE_STEPS.  ``averaged``: the run
    keeps a weight average (:func:`average`), whose smooth validation curve is read with
    a patience of PATIENCE_STEPS steps, and which stops at AVERAGED_MAX_STEPS."""
    from ..training.stopping import EarlyStopping
    steps = -(-n // batch)  # per epoch
    every = max(1, int(round(EVAL_STEPS / steps)))
    patience, most = PATIENCE, MAX_STEPS
    if averaged:
        patience = max(MIN_PATIENCE, min(PATIENCE, -(-PATIENCE_STEPS // (every * steps))))
        most = AVERAGED_MAX_STEPS
    epochs = -(-most // steps)
    floor = None if baseline is None else float(baseline) - COLLAPSED_GAIN
    return (EarlyStopping(patience=patience, every=every, min_steps=MIN_STEPS,
                          max_steps=most, decays=DECAYS, rel_delta=REL_DELTA,
                          floor=floor, floor_steps=min(COLLAPSE_STEPS, most)), epochs)


def fixed_epochs(n, batch):
    """Epochs of MIN_STEPS steps, for a table too small to validate on."""
    return max(1, -(-MIN_STEPS // -(-n // batch)))


def independent_loss(schema, X):
    """The negative log-likelihood per row (nats) of rows X (N, D) (the model's values)
    under independent columns, each with its training distribution: a numeric column's
    mapped values are standard normal (the quantile map's purpose; a standardized column
    is too), a categorical column's codes have their training frequencies, a count column
    is Poisson at its mean, an observed head is Bernoulli at the column's gap share.
    Missing cells count 0, as in the model."""
    N = X.shape[0]
    total = np.zeros(N)
    for j, c in enumerate(schema.data):
        v = X[:, j]
        ok = ~np.isnan(v)
        if c.kind == "numeric":
            cell = 0.5 * v[ok] ** 2 + 0.5 * math.log(2 * math.pi)
        elif c.kind == "categorical":
            p = np.asarray(c.freq["p"], dtype=np.float64)
            if c.others:
                p = np.append(p, sum(c.freq["others_p"]))
            if c.rare:
                p = np.append(p, max(1e-12, 1.0 - p.sum()))
            p = p / p.sum()
            cell = -np.log(np.maximum(p[v[ok].astype(np.int64)], 1e-12))
        else:  # counts: Poisson at the mean of these rows (a generous baseline)
            mu = max(float(v[ok].mean()) if ok.any() else 1.0, 1e-9)
            from math import lgamma
            cell = mu - v[ok] * math.log(mu) + np.array([lgamma(x + 1) for x in v[ok]])
        total[ok] += cell
    for k in range(len(schema.heads)):
        v = X[:, len(schema.data) + k]
        ok = ~np.isnan(v)
        p = float(np.clip(np.nanmean(v), 1e-6, 1 - 1e-6))
        total[ok] += -(v[ok] * math.log(p) + (1 - v[ok]) * math.log(1 - p))
    return float(total.mean())


def collapse_note(kl, neg_elbo, baseline):
    """One line when the codes carry next to nothing (None otherwise): ``kl`` and
    ``neg_elbo`` the held-out KL and negative ELBO per row, ``baseline`` the independent
    columns' loss (:func:`independent_loss`)."""
    gain = baseline - neg_elbo
    if kl >= COLLAPSED_KL and gain >= COLLAPSED_GAIN:
        return None
    why = (f"the codes carry {kl:.3f} nats per row" if kl < COLLAPSED_KL else
           f"the held-out loss ({neg_elbo:.3f} nats per row) is no better than independent "
           f"columns' ({baseline:.3f})")
    return (f"{why}: samples will have each column's own distribution but little of how "
            f"the columns go together.  If the columns are related, train longer (epochs=, "
            f"or fit again to continue), or lower beta (TabularVAE(beta=0.5))")


__all__ = ["model_size", "average", "val_rows", "split", "batch_size", "plan", "fixed_epochs", "independent_loss",
           "collapse_note"]
