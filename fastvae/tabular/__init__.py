"""Tables in and out: ``TabularVAE`` on pandas DataFrames, CSV and Parquet files.

Needs ``pip install 'fastvae[tabular]'`` (pandas, pyarrow).  See :mod:`fastvae.tabular.model`
for the methods, :mod:`fastvae.tabular.kinds` for how columns are read,
:mod:`fastvae.tabular.policy` for how long a model trains and
:mod:`fastvae.tabular.latent` for where its samples' codes come from.
"""
from .column import RARE, RARE_MIN, TableError
from .kinds import TYPES
from .model import CollapseWarning, TabularVAE, from_model, is_tabular, load
from .schema import Schema, infer
from .tableio import read_table, write_table

__all__ = ["TabularVAE", "load", "from_model", "is_tabular", "read_table", "write_table",
           "Schema", "TableError", "CollapseWarning", "TYPES", "infer", "RARE", "RARE_MIN"]
