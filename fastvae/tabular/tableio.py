"""Tables from files and back: reading CSV, TSV and Parquet with errors that name the file,
writing them whole or chunk by chunk, and naming a row the way its file does.

- :func:`read_table` reads a DataFrame (or passes one through).  A CSV header that names a
  column twice is refused (pandas would rename the second ``x.1``); a file that is not
  UTF-8, is empty, is a directory or is not a table says so in one line.  CSV and TSV
  files may be compressed (``.csv.gz``, ``.bz2``, ``.xz``, ``.zip``, ``.zst``), and a
  ``.csv`` whose header has no comma but a ``;`` or ``|`` is read with that separator (a
  semicolon-separated export would otherwise be one column).
- :func:`row_names` gives ``where(i)``, the name of row i of a frame for messages: "line 7
  of t.csv" for a CSV or TSV file (the header is line 1, one line per row), "row 5 (from
  0) of t.parquet" for Parquet (counted as pandas and score's ``row`` column count), and
  the index label for a DataFrame.
- :class:`TableWriter` writes a table chunk by chunk (CSV, TSV or Parquet), so a sample of
  ten million rows goes to disk in constant memory.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import os
import zipfile

import numpy as np

from .column import TableError, pandas_module, shown

#: what read_table reads, by extension
READERS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".parquet": "parquet",
           ".pq": "parquet"}
OTHER_TABLES = (".xlsx", ".xls", ".xlsm", ".ods", ".feather", ".arrow", ".json", ".jsonl",
                ".h5", ".hdf5", ".sav", ".dta", ".sas7bdat", ".orc", ".avro")
#: compressions a CSV or TSV file may have (pandas reads them by the extension)
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")
#: separators a .csv file is read with when its header has no comma
OTHER_SEPARATORS = (";", "|")


def table_kind(path):
    """"csv", "tsv" or "parquet" by the extension of ``path``; None for anything else."""
    ext, compressed = extensions(path)
    kind = READERS.get(ext)
    return None if compressed and kind == "parquet" else kind


def extensions(path):
    """(the table's extension, the compression's or None), lower case: "t.csv.gz" ->
    (".csv", ".gz")."""
    root, ext = os.path.splitext(os.fspath(path))
    if ext.lower() in COMPRESSIONS:
        return os.path.splitext(root)[1].lower(), ext.lower()
    return ext.lower(), None


def is_table_path(path):
    """Whether ``path`` names a table by its extension: one read_table reads, or one it
    refuses with a line saying how to save it."""
    return table_kind(path) is not None or extensions(path)[0] in OTHER_TABLES


def read_table(data, what="data"):
    """A DataFrame from a DataFrame or a path (.csv, .txt, .tsv, .parquet, .pq)."""
    pd = pandas_module()
    if isinstance(data, pd.DataFrame):
        return data
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"{what} must be a pandas DataFrame or a path to a .csv or .parquet "
                        f"file, got {type(data).__name__}")
    path = os.fspath(data)
    if os.path.isdir(path):
        raise TableError(f"{what}: {path} is a directory; name a .csv, .tsv or .parquet file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: {path} does not exist")
    kind = table_kind(path)
    if kind is None:
        ext = os.path.splitext(path)[1] or "no extension"
        raise TableError(f"{what}: {path} is not a table fastvae reads ({ext}): save it "
                         f"as .csv, .tsv or .parquet")
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as e:
            raise ImportError(f"{what}: reading Parquet needs pyarrow ({e})") from None
        except Exception as e:  # noqa: BLE001  (pyarrow's errors share no base class)
            raise TableError(f"{what}: cannot read {path} as Parquet "
                             f"({type(e).__name__}: {_short(e)})") from None
    sep, header = _check_header(path, "\t" if kind == "tsv" else ",", what)
    try:
        return _blank_labels(_integer_gaps(pd.read_csv(path, sep=sep), path, sep, pd), header)
    except UnicodeDecodeError as e:
        raise TableError(_not_utf8(path, what, e)) from None
    except pd.errors.EmptyDataError:
        raise TableError(f"{what}: {path} is empty (no header line)") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise TableError(f"{what}: cannot read {path} ({_short(e)})") from None


def _integer_gaps(df, path, sep, pd):
    """``df`` read from a CSV file, its columns of integers with gaps as Int64: pandas reads
    them as float64 (NaN has no int64), and "19" came back as "19.0".  A column is one
    when its present cells are whole numbers written without a point or an exponent."""
    cand = [c for c in df.columns if df[c].dtype == np.float64 and df[c].isna().any()
            and df[c].notna().any()]
    cand = [c for c in cand if np.all(np.mod(df[c].dropna().to_numpy(), 1) == 0)
            and np.abs(df[c].dropna().to_numpy()).max() < 2.0 ** 53]
    if not cand:
        return df
    raw = pd.read_csv(path, sep=sep, usecols=cand, dtype=str)
    for c in cand:
        text = raw[c].dropna().str.strip()
        if not text.str.contains(r"[.eE]", regex=True).any():
            df[c] = df[c].astype("Int64")
    return df


def _short(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _not_utf8(path, what, e):
    return (f"{what}: {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
            f"position {e.start}); save it as UTF-8, or read it with pandas "
            f"(pd.read_csv(path, encoding=...)) and pass the DataFrame")


def _open_text(path):
    """The text of a CSV or TSV file, through its compression (None for zstandard, which
    only pandas reads)."""
    kw = {"encoding": "utf-8", "newline": ""}
    comp = extensions(path)[1]
    if comp in (".gz", ".bz2", ".xz"):
        return {".gz": gzip, ".bz2": bz2, ".xz": lzma}[comp].open(path, "rt", **kw)
    if comp == ".zip":
        z = zipfile.ZipFile(path)
        names = [n for n in z.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise TableError(f"{path} holds {len(names)} files; a zipped table holds one")
        return io.TextIOWrapper(z.open(names[0]), **kw)
    if comp is not None:
        return None
    return open(path, **kw)


def _blank_labels(df, header):
    """``df`` with the columns its file's header left blank labelled "" again (pandas
    names them 'Unnamed: 0' and so on, which samples would then write), given the
    header's cells (None: unknown)."""
    if header is None or len(header) != df.shape[1]:
        return df
    blank = [h.strip() == "" and str(c).startswith("Unnamed: ")
             for h, c in zip(header, df.columns)]
    if any(blank):
        df.columns = ["" if b else c for b, c in zip(blank, df.columns)]
    return df


def _check_header(path, sep, what):
    """(the separator to read ``path`` with, the header's cells or None): ``sep``, or for
    a .csv whose header has no comma one of OTHER_SEPARATORS it holds.  Refuses a header
    that names a column twice (pandas would rename it silently)."""
    try:
        f = _open_text(path)
        if f is None:
            return sep, None
        with f:
            line = f.readline()
    except UnicodeDecodeError as e:
        raise TableError(_not_utf8(path, what, e)) from None
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as e:
        raise TableError(f"{what}: cannot read {path} ({_short(e)})") from None
    if sep == "," and "," not in line:
        sep = next((o for o in OTHER_SEPARATORS if o in line), sep)
    try:
        header = next(csv.reader([line], delimiter=sep), None)
    except csv.Error as e:
        raise TableError(f"{what}: cannot read the header of {path} ({e})") from None
    if header is None:
        return sep, None
    seen, dup = set(), []
    for h in header:
        if h in seen and h not in dup:
            dup.append(h)
        seen.add(h)
    if dup:
        raise TableError(f"{what}: {path} names column(s) {dup} twice in its header; every "
                         f"column needs a name of its own")
    return sep, header


def row_names(data, df):
    """where(i): the name of row i (a position) of ``df``, a frame read from ``data`` (a
    path) or ``data`` itself, for messages (see the module docstring)."""
    pd = pandas_module()
    index = df.index
    if isinstance(data, (str, os.PathLike)) and isinstance(index, pd.RangeIndex) or (
            isinstance(data, (str, os.PathLike)) and index.dtype.kind == "i"):
        name = os.path.basename(os.fspath(data))
        if table_kind(data) in ("csv", "tsv"):
            return lambda i: f"line {int(index[i]) + 2} of {name}"
        # (counted from 0, as pandas, pyarrow and score's 'row' column count them)
        return lambda i: f"row {int(index[i])} (from 0) of {name}"
    return lambda i: f"row {shown(index[i])}"


class TableWriter:
    """Writes a table to ``path`` chunk by chunk: ``fmt`` "csv", "tsv" or "parquet" (None:
    by the extension, CSV for anything that is not .tsv, .parquet or .pq).  A failure
    names the file; use as a context manager.

    The chunks go to a hidden file beside ``path`` that :meth:`close` renames to it, so a
    write cut short (an error, a Ctrl-C: :meth:`abort`) leaves no half-written table and
    an older file of that name as it was."""

    def __init__(self, path, fmt=None):
        self.path = os.fspath(path)
        if fmt is None and table_kind(self.path) is None and os.path.splitext(self.path)[1]:
            raise TableError(f"cannot write {self.path}: fastvae writes tables as .csv, "
                             f".tsv or .parquet (its extension says which)")
        self.fmt = fmt or table_kind(self.path) or "csv"
        if self.fmt == "csv" and self.path.lower().endswith(".tsv"):
            self.fmt = "tsv"
        self.rows = 0
        self._pq = None
        self._started = False
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(d):
            raise TableError(f"cannot write {self.path}: directory {d} does not exist")
        if os.path.isdir(self.path):
            raise TableError(f"cannot write {self.path}: it is a directory")
        self._tmp = os.path.join(d, f".{os.path.basename(self.path)}.part{os.getpid()}")

    def write(self, df):
        try:
            if self.fmt == "parquet":
                self._parquet(df)
            else:
                df.to_csv(self._tmp, index=False, sep="\t" if self.fmt == "tsv" else ",",
                          mode="a" if self._started else "w", header=not self._started)
        except OSError as e:
            raise TableError(f"cannot write {self.path} ({e.strerror or e})") from None
        self._started = True
        self.rows += len(df)

    def _parquet(self, df):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"{self.path}: writing Parquet needs pyarrow ({e})") from None
        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self._tmp, table.schema)
        self._pq.write_table(table.cast(self._pq.schema))

    def close(self):
        """Finish the file and put it in place (nothing written: no file)."""
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        if os.path.exists(self._tmp):
            try:
                os.replace(self._tmp, self.path)
            except OSError as e:
                raise TableError(f"cannot write {self.path} ({e.strerror or e})") from None

    def abort(self):
        """Drop what was written (``path`` is left as it was)."""
        if self._pq is not None:
            try:
                self._pq.close()
            except Exception:  # noqa: BLE001  (the file goes anyway)
                pass
            self._pq = None
        try:
            os.remove(self._tmp)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if kind is None:
            self.close()
        else:
            self.abort()


def write_table(df, path, fmt=None):
    """Write DataFrame ``df`` whole (see :class:`TableWriter`); returns the path."""
    with TableWriter(path, fmt) as w:
        w.write(df)
    return os.fspath(path)


__all__ = ["read_table", "row_names", "table_kind", "TableWriter", "write_table",
           "READERS", "OTHER_TABLES"]
