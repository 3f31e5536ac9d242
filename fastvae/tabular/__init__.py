"""Tables in and out: ``TabularVAE`` on pandas DataFrames, CSV and Parquet files.

Needs ``pip install 'fastvae[tabular]'`` (pandas, pyarrow).  See :mod:`fastvae.tabular.model`
for the methods and :mod:`fastvae.tabular.schema` for how columns are read.
"""
from .model import TabularVAE, from_model, is_tabular, load, read_table
from .schema import TYPES, Schema, TableError, infer

__all__ = ["TabularVAE", "load", "from_model", "is_tabular", "read_table", "Schema",
           "TableError", "TYPES", "infer"]
