"""The catalogue of awkward and bad inputs, on the command line (issue 29): every table
command (train, sample, eval, score) answers a bad input with one line on stderr naming
the file, column, line and value where they exist, and exit status 2; nothing is written.
The library's cases are in test_table_inputs.py."""
import os

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import fastvae.tabular as tabular  # noqa: E402
from fastvae.cli.main import main  # noqa: E402

SMALL = ["--epochs", "2", "--hidden", "16", "--latent", "2", "--backend", "cpu", "--quiet",
         "--no-pictures"]


def table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return pd.DataFrame({"x": x.round(4), "y": (x + rng.standard_normal(n)).round(4),
                         "c": rng.choice(["u", "v", "w"], n),
                         "g": rng.choice(["a", "b"], n)})


def one_line(capsys, cmd):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"fastvae {cmd}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture
def wd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A trained run (module-wide) on table() with condition g: its model path."""
    d = tmp_path_factory.mktemp("run")
    table().to_csv(d / "t.csv", index=False)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert main(["train", "--data", "t.csv", "--out", "r", "--condition", "g", *SMALL]) == 0
    finally:
        os.chdir(cwd)
    return str(d / "r" / "model.npz")


def train_fails(wd, capsys, df_or_write, says, extra=(), name="t.csv"):
    if callable(df_or_write):
        df_or_write(wd / name)
    else:
        df_or_write.to_csv(wd / name, index=False)
    assert main(["train", "--data", name, *extra, *SMALL]) == 2
    line = one_line(capsys, "train")
    assert says in line, line
    assert not (wd / "runs").exists()
    return line


# ------------------------------------------------------------------ train: files
def test_train_refuses_a_header_that_names_a_column_twice(wd, capsys):
    train_fails(wd, capsys, lambda p: p.write_text("x,x,c\n1,2,a\n3,4,b\n5,6,a\n"),
                "t.csv names column(s) ['x'] twice")


def test_train_refuses_text_that_is_not_utf8(wd, capsys):
    train_fails(wd, capsys, lambda p: p.write_bytes("x,c\n1,caf\xe9\n2,b\n".encode("latin-1")),
                "t.csv is not UTF-8 text (byte 0xe9")


def test_train_refuses_an_empty_file_and_a_header_alone(wd, capsys):
    train_fails(wd, capsys, lambda p: p.write_text(""), "t.csv is empty")
    train_fails(wd, capsys, lambda p: p.write_text("x,y\n"), "the table has 0 row(s)",
                name="h.csv")


def test_train_refuses_a_directory_and_a_file_that_is_not_parquet(wd, capsys):
    train_fails(wd, capsys, lambda p: p.mkdir(), "t.csv is a directory")
    train_fails(wd, capsys, lambda p: p.write_text("x,y\n1,2\n"), "as Parquet",
                name="t.parquet")


def test_train_refuses_ragged_rows(wd, capsys):
    train_fails(wd, capsys, lambda p: p.write_text("x,y\n1,2\n3,4,5\n6,7\n"),
                "cannot read")


@pytest.mark.parametrize("name, sep", [("t.csv.gz", ","), ("t.tsv.bz2", "\t"),
                                       ("t.csv.zip", ","), ("semicolons.csv", ";")])
def test_train_reads_compressed_and_semicolon_files_and_score_too(wd, capsys, name, sep):
    table().to_csv(wd / name, index=False, sep=sep)
    assert main(["train", "--data", name, "--out", "r", *SMALL]) == 0
    assert main(["score", "r/model.npz", name, "--csv", "s.csv"]) == 0
    assert len(pd.read_csv("s.csv")) == 200
    assert main(["sample", "r/model.npz", "-n", "5", "--csv", "o.csv"]) == 0
    assert list(pd.read_csv("o.csv").columns) == ["x", "y", "c", "g"]


def test_train_names_the_parquet_column_of_lists(wd, capsys):
    df = table().assign(tags=[["a", "b"]] * 200)
    train_fails(wd, capsys, lambda p: df.to_parquet(p), "column 'tags' holds values of type",
                name="t.parquet")


# ------------------------------------------------------------------ train: cells
def test_train_names_the_line_of_an_infinite_condition(wd, capsys):
    df = table().assign(w=np.linspace(0, 1, 200))
    df.loc[10, "w"] = np.inf
    train_fails(wd, capsys, df, "condition column 'w', line 12 of t.csv: inf is not a finite",
                ["--condition", "w"])


def test_train_names_the_line_of_a_missing_condition(wd, capsys):
    df = table()
    df.loc[4, "g"] = None
    train_fails(wd, capsys, df, "condition column 'g', line 6 of t.csv: a missing value",
                ["--condition", "g"])


def test_train_names_a_typo_in_a_column_of_numbers(wd, capsys):
    df = table()
    df["y"] = df["y"].astype(object)
    df.loc[30, "y"] = "n/a?"
    train_fails(wd, capsys, df, "column 'y', line 32 of t.csv: 'n/a?' is not a number")


def test_train_datetime_type_on_words(wd, capsys):
    train_fails(wd, capsys, table(), "'c' was asked to be datetime, but", ["--column", "c=datetime"])


def test_train_refuses_one_row_and_all_missing_tables(wd, capsys):
    train_fails(wd, capsys, table().head(1), "1 row(s); a model needs at least 2")
    train_fails(wd, capsys, pd.DataFrame({"a": [np.nan] * 5, "b": [np.nan] * 5}),
                "no column is left to model", name="na.csv")


def test_train_with_an_id_column_splits_and_samples_new_ids(wd, capsys):
    df = table().assign(id=[f"K{i:04d}" for i in range(200)])
    df.to_csv(wd / "t.csv", index=False)
    assert main(["train", "--data", "t.csv", "--out", "r", *SMALL]) == 0
    assert main(["sample", "r/model.npz", "-n", "100", "--csv", "s.csv"]) == 0
    s = pd.read_csv(wd / "s.csv")
    from fastvae.cli.table import split
    train, _ = split(pd.read_csv(wd / "t.csv"), 0)
    assert s["id"].str.fullmatch(r"K\d{4}").all() and s["id"].is_unique
    assert not set(s["id"]) & set(train["id"])  # (the test split's the model never saw)


def test_train_datetime_and_id_types_by_hand(wd, capsys):
    df = table().assign(when=pd.date_range("2020-01-01", periods=200, freq="D").strftime(
        "%d/%m/%Y"), num=np.arange(200))
    df.to_csv(wd / "t.csv", index=False)
    assert main(["train", "--data", "t.csv", "--out", "r", "--column", "when=datetime",
                 "--column", "num=id", *SMALL]) == 0
    assert main(["sample", "r/model.npz", "-n", "50", "--csv", "s.csv"]) == 0
    s = pd.read_csv(wd / "s.csv")
    assert pd.to_datetime(s["when"], format="%d/%m/%Y").notna().all()
    assert (s["num"] >= 200).all() and s["num"].is_unique


# ------------------------------------------------------------------ sample
def test_sample_into_a_missing_directory_or_a_directory(model, wd, capsys):
    assert main(["sample", model, "-n", "10", "--csv", "/no/such/dir/out.csv"]) == 2
    assert "cannot write /no/such/dir/out.csv: directory /no/such/dir does not exist" in \
        one_line(capsys, "sample")
    os.mkdir(wd / "d.parquet")
    assert main(["sample", model, "-n", "10", "--parquet", "d.parquet"]) == 2
    assert "d.parquet: it is a directory" in one_line(capsys, "sample")


def test_sample_n_zero_is_a_usage_error(model, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", model, "-n", "0"])
    assert e.value.code == 2 and "must be an integer > 0" in capsys.readouterr().err


def test_sample_in_chunks_is_the_library_sample(model, wd, capsys):
    assert main(["sample", model, "-n", "20000", "--csv", "big.csv", "--seed", "4"]) == 0
    assert main(["sample", model, "-n", "20000", "--parquet", "big.parquet", "--seed",
                 "4"]) == 0
    want = tabular.load(model).sample(20000, seed=4)
    got = pd.read_parquet(wd / "big.parquet")
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert len(pd.read_csv(wd / "big.csv")) == 20000


def test_sample_condition_that_is_not_a_value(model, capsys):
    assert main(["sample", model, "--condition", "g=zz"]) == 2
    assert "'zz' is not one of the column's 2 categories (a, b)" in one_line(capsys, "sample")


# ------------------------------------------------------------------ eval
def test_eval_on_a_table_without_a_column_or_not_utf8(model, wd, capsys):
    table().drop(columns="y").to_csv(wd / "e.csv", index=False)
    assert main(["eval", model, "--data", "e.csv"]) == 2
    assert "no column(s) ['y']" in one_line(capsys, "eval")
    (wd / "l.csv").write_bytes("x,y,c,g\n1,2,caf\xe9,a\n".encode("latin-1"))
    assert main(["eval", model, "--data", "l.csv"]) == 2
    assert "l.csv is not UTF-8 text" in one_line(capsys, "eval")


# ------------------------------------------------------------------ score
def test_score_columns_named_like_ours_stay_apart(wd, capsys):
    df = table().rename(columns={"x": "row", "y": "score", "c": "kl"})
    df.to_csv(wd / "t.csv", index=False)
    assert main(["train", "--data", "t.csv", "--out", "r", *SMALL]) == 0
    assert main(["score", "r/model.npz", "t.csv", "--per-column", "--csv", "s.csv"]) == 0
    s = pd.read_csv(wd / "s.csv")
    assert list(s.columns) == ["row", "score", "kl", "column:row", "column:score",
                               "column:kl", "column:g"]
    assert (s["row"] == np.arange(200)).all()
    np.testing.assert_allclose(s.filter(like="column:").sum(axis=1) + s["kl"], s["score"],
                               rtol=1e-5, atol=1e-4)
    capsys.readouterr()
    assert main(["score", "r/model.npz", "t.csv", "--per-column", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "most unlikely" in out and len(out.strip().splitlines()) == 5


def test_score_unknown_missing_needs_a_model_trained_with_missing(model, wd, capsys):
    table().to_csv(wd / "s.csv", index=False)
    assert main(["score", model, "s.csv", "--unknown", "missing"]) == 2
    assert "train it with --missing" in one_line(capsys, "score")
    table().to_csv(wd / "t.csv", index=False)
    assert main(["train", "--data", "t.csv", "--out", "m", "--missing", *SMALL]) == 0
    capsys.readouterr()
    rows = table(20, seed=3)
    rows.loc[5, "c"] = "zz"
    rows.to_csv(wd / "z.csv", index=False)
    assert main(["score", "m/model.npz", "z.csv", "--unknown", "missing", "--csv",
                 "o.csv"]) == 0
    assert np.isfinite(pd.read_csv(wd / "o.csv")["score"]).all()
    capsys.readouterr()
    assert main(["score", "m/model.npz", "z.csv"]) == 2
    assert "column 'c', line 7 of z.csv: 'zz' is not one of the 3 categories" in \
        one_line(capsys, "score")


def test_score_a_directory_and_into_a_missing_directory(model, wd, capsys):
    os.mkdir(wd / "d.csv")
    assert main(["score", model, "d.csv"]) == 2
    assert "d.csv is a directory" in one_line(capsys, "score")
    table().to_csv(wd / "s.csv", index=False)
    assert main(["score", model, "s.csv", "--csv", "/no/such/dir/o.csv"]) == 2
    assert "cannot write /no/such/dir/o.csv" in one_line(capsys, "score")
