"""Each likelihood block as a table column: the one table the tabular front end keeps per
block kind (``Block.name``).  A new block kind gets its entry here, and the schema, the
column checks, the type names of ``types=``/``--column`` and the plots read it from here
(tests/test_tabular.py fails for a block kind without an entry).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from ..core import blocks as B


class ColumnType(NamedTuple):
    """How columns of one block kind appear in a table."""

    #: the schema's name for such a column (Column.kind), and what ``types=`` accepts
    kind: str
    #: its name in the plots' panel titles
    label: str
    #: its cells are counts (integers >= 0): kept as integers, checked as counts
    counts: bool
    #: its marginal panel in marginals.png: "bars" (one per value) or "histogram"
    panel: str
    #: the block of a list of such columns (Column objects, in table order)
    make: Callable


#: Block.name -> how its columns appear in a table; None for a block no column type maps
#: to (Bernoulli: the model's observed heads, one per group of columns with gaps)
BY_BLOCK = {
    "gaussian": ColumnType("numeric", "numeric", False, "histogram",
                           lambda cs: B.Gaussian(len(cs), scale="per_column")),
    "categorical": ColumnType("categorical", "categorical", False, "bars",
                              lambda cs: B.Categorical([c.classes for c in cs])),
    "negbinomial": ColumnType("negbin", "count (NB)", True, "histogram",
                              lambda cs: B.NegBinomial(len(cs))),
    "poisson": ColumnType("poisson", "count (Poisson)", True, "histogram",
                          lambda cs: B.Poisson(len(cs))),
    "zinb": ColumnType("zinb", "count (ZINB)", True, "histogram", lambda cs: B.ZINB(len(cs))),
    "bernoulli": None,
}

#: Column.kind -> its ColumnType, in the model's column order
BY_KIND = {t.kind: t for t in BY_BLOCK.values() if t is not None}
#: the kinds a model reads (its data columns, in this order), and those of counts
MODELED = tuple(BY_KIND)
COUNT_KINDS = tuple(k for k, t in BY_KIND.items() if t.counts)
