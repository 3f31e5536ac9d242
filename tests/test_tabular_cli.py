"""The fastvae command on tables: train --data table.csv, sample --csv, eval, score, and
bad input (fastvae.cli.table, fastvae.cli.table_commands, fastvae.tabular.plots)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import fastvae  # noqa: E402
import fastvae.tabular  # noqa: E402
from fastvae.cli.main import main  # noqa: E402

SMALL = ["--epochs", "2", "--hidden", "16", "--latent", "4", "--backend", "cpu", "--quiet"]
COLUMNS = ["x", "y", "k", "color", "flag", "group"]


def table(n=400, seed=0):
    """2 numeric columns (y with gaps), an integer, a string category (with gaps), a bool
    and the condition 'group' (y and x depend on it)."""
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b"], n)
    x = rng.normal(size=n) + 2.0 * (g == "b")
    df = pd.DataFrame({"x": x.round(3), "y": (2 * x + rng.normal(size=n) * 0.5).round(3),
                       "k": rng.integers(0, 10, n),
                       "color": rng.choice(["red", "green", "blue"], n, p=[.5, .3, .2]),
                       "flag": rng.random(n) < 0.3, "group": g})
    df.loc[[3, 17, 50], "y"] = np.nan
    df.loc[[5, 60], "color"] = None
    return df


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table().to_csv(tmp_path / "t.csv", index=False)
    return tmp_path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One trained table run (module-wide): (directory, its stdout)."""
    d = tmp_path_factory.mktemp("tabrun")
    table().to_csv(d / "t.csv", index=False)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        import io
        from contextlib import redirect_stdout
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert main(["train", "--data", "t.csv", "--out", "r", "--condition", "group",
                         "--no-pictures", *SMALL]) == 0
    finally:
        os.chdir(cwd)
    return d / "r", buf.getvalue()


def one_error_line(capsys, cmd):
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith(f"fastvae {cmd}: error: ")
    return lines[0]


# ----------------------------------------------------------------------------- train
def test_a_zero_inflated_count_column_from_the_command_line(workdir):
    pytest.importorskip("matplotlib")
    assert main(["train", "--data", "t.csv", "--column", "k=zinb", *SMALL]) == 0
    tv = fastvae.tabular.load(workdir / "runs" / "t-1" / "model.npz")
    assert {c.name: c.kind for c in tv.schema.data}["k"] == "zinb"
    assert "zinb" in [b.name for b in tv.model_.columns.blocks]
    assert (workdir / "runs" / "t-1" / "marginals.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", str(workdir / "runs" / "t-1" / "model.npz"), "-n", "20",
                 "--csv", "s.csv"]) == 0
    s = pd.read_csv(workdir / "s.csv")
    assert pd.api.types.is_integer_dtype(s["k"]) and (s["k"] >= 0).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_train_on_a_table_writes_the_run(workdir, capsys, fmt):
    pytest.importorskip("matplotlib")
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
        table().to_parquet(workdir / "t.parquet", index=False)
    data = f"t.{fmt}"
    assert main(["train", "--data", data, "--condition", "group", "--column", "k=count",
                 *SMALL]) == 0
    run = workdir / "runs" / "t-1"  # runs/<file stem>-<n>
    files = set(os.listdir(run))
    assert {"model.npz", "run.json", "history.json", "marginals.png", "correlations.png",
            "loss.png"} <= files
    for f in files:
        if f.endswith(".png"):
            assert (run / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tv = fastvae.tabular.load(run / "model.npz")
    kinds = {c.name: c.kind for c in tv.schema.data}
    assert kinds == {"x": "numeric", "y": "numeric", "k": "negbin", "color": "categorical",
                     "flag": "categorical"}
    assert [c.name for c in tv.schema.conditions] == ["group"]
    assert tv.model.missing == "mask"  # y and color have gaps
    assert len(tv.history) == 2 and len(json.load(open(run / "history.json"))) == 2
    opts = json.load(open(run / "run.json"))
    assert opts["table"] is True and opts["data"] == str(workdir / data)
    assert opts["conditions"] == ["group"] and opts["columns"] == {"k": "count"}
    assert opts["hidden"] == [16] and opts["latent"] == 4 and opts["epochs"] == 2
    # 10% held out: the printed test ELBO is the saved model's on those rows, which
    # are the run's validation rows
    from fastvae.cli.table import run_table
    out = capsys.readouterr().out
    test, _ = run_table(str(run / "model.npz"), "test")
    assert len(test) == 40
    assert f"test negative ELBO {tv.elbo(test).neg_elbo:.2f} nats" in out
    assert f"test negative ELBO {tv.history[-1]['val_neg_elbo']:.2f} nats" in out
    assert "on 40 rows" in out and "3 pictures" in out


def test_options_reach_the_model_and_pictures_need_matplotlib(workdir, capsys, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # as if matplotlib were not installed
    assert main(["train", "--data", "t.csv", "--out", "o", "--activation", "tanh", "--lr",
                 "0.01", "--batch-size", "100", "--optimizer", "sgd", "--momentum", "0.5",
                 "--shards", "3", *SMALL]) == 0
    assert "pictures skipped: pictures need matplotlib" in capsys.readouterr().err
    assert not any(f.endswith(".png") for f in os.listdir("o"))
    m = fastvae.tabular.load("o/model.npz").model
    assert m.config()["activation"] == "tanh" and m.train_state.settings["batch_size"] == 100
    assert m.train_state.settings["shards"] == 3
    assert m.optimizer.name == "sgd" and m.optimizer.lr == 0.01 and m.optimizer.momentum == 0.5
    assert m.history[-1]["steps"] == 4  # 360 training rows in batches of 100


def test_table_defaults_and_the_held_out_split():
    from fastvae.cli.table import split
    df = table()
    train, test = split(df, 0)
    assert len(test) == 40 and len(train) == 360
    assert sorted(train.index.tolist() + test.index.tolist()) == list(range(400))
    t2, s2 = split(df, 0)
    assert s2.index.equals(test.index)  # the same seed, the same rows
    assert not split(df, 1)[1].index.equals(test.index)
    # a category that the training rows never show moves to them
    df.loc[test.index[0], "color"] = "violet"
    train, test = split(df, 0)
    assert len(test) == 39 and "violet" in set(train["color"])


def test_interrupted_table_run_loads_and_resumes_to_the_straight_run(workdir, monkeypatch,
                                                                     capsys):
    args = ["--data", "t.csv", "--condition", "group", "--batch-size", "60", "--no-pictures",
            *SMALL]
    assert main(["train", "--out", "a", *args]) == 0
    calls, forward = [0], fastvae.VAE.forward

    def interrupting(self, *a, **k):
        if k.get("grad", True):
            calls[0] += 1
            if calls[0] == 9:  # 6 steps per epoch: inside epoch 2
                signal.raise_signal(signal.SIGINT)
        return forward(self, *a, **k)

    monkeypatch.setattr(fastvae.VAE, "forward", interrupting)
    assert main(["train", "--out", "b", *args]) == 130
    monkeypatch.setattr(fastvae.VAE, "forward", forward)
    assert "continue with: fastvae train --out b --resume" in capsys.readouterr().err
    tv = fastvae.tabular.load("b/model.npz")  # the mid-run checkpoint holds the schema
    assert tv.model.train_state.epoch == 1 and [c.name for c in tv.schema.conditions] == \
        ["group"]
    # the data and the model cannot change on --resume
    assert main(["train", "--out", "b", "--resume", "--condition", "flag", "--quiet"]) == 2
    assert "cannot change on --resume: --condition ['flag']" in one_error_line(capsys,
                                                                                 "train")
    assert main(["train", "--out", "b", "--resume", "--quiet", "--no-pictures"]) == 0
    a, b = fastvae.tabular.load("a/model.npz"), fastvae.tabular.load("b/model.npz")
    np.testing.assert_array_equal(a.model.flat_params, b.model.flat_params)
    assert [r["val_neg_elbo"] for r in a.history] == [r["val_neg_elbo"] for r in b.history]
    # a run killed in epoch 2 (no Ctrl-C handling, no save at the end): the checkpoint
    # that fit's loop wrote after epoch 1 has the schema, and --resume finishes the run
    class Killed(Exception):
        pass

    def killed(self, *a, **k):
        if k.get("grad", True):
            calls[0] += 1
            if calls[0] == 9:
                raise Killed
        return forward(self, *a, **k)

    calls[0] = 0
    monkeypatch.setattr(fastvae.VAE, "forward", killed)
    with pytest.raises(Killed):
        main(["train", "--out", "c", *args])
    monkeypatch.setattr(fastvae.VAE, "forward", forward)
    tv = fastvae.tabular.load("c/model.npz")
    assert tv.model.train_state.epoch == 1 and tv.schema.data[0].name == "x"
    assert main(["train", "--out", "c", "--resume", "--quiet", "--no-pictures"]) == 0
    c = fastvae.tabular.load("c/model.npz")
    np.testing.assert_array_equal(a.model.flat_params, c.model.flat_params)
    # --epochs beyond the run's total continues it
    assert main(["train", "--out", "b", "--resume", "--epochs", "3", "--quiet",
                 "--no-pictures"]) == 0
    assert len(fastvae.tabular.load("b/model.npz").history) == 3
    assert json.load(open("b/run.json"))["epochs"] == 3



@pytest.fixture
def ctrl_c():
    """SIGINT raising KeyboardInterrupt, as in a terminal's foreground, for this test: a
    shell starts a background job with SIGINT ignored (CI run as `bash .ci/run &` made these
    tests fail), and Python then keeps it ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _sigint_default():
    """(for a child process, before exec) SIGINT back to its default, whatever this process
    inherited: Python in the child then turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_run_cut_after_its_last_step_gets_its_sampler_on_resume(workdir, monkeypatch,
                                                                    capsys, ctrl_c):
    """Ctrl-C after the policy's last step, while the latent density and the calibration
    are fit: the run says how to continue, and --resume fits them for the saved weights
    (training nothing more); the samples are the straight run's."""
    import fastvae.tabular.calibrate as cal
    from fastvae.tabular import policy
    monkeypatch.setattr(policy, "MIN_STEPS", 30)
    monkeypatch.setattr(policy, "MAX_STEPS", 300)
    monkeypatch.setattr(policy, "EVAL_STEPS", 10)
    monkeypatch.setattr(policy, "PATIENCE", 3)
    args = ["--data", "t.csv", "--hidden", "16", "--latent", "4", "--backend", "cpu",
            "--no-pictures", "--quiet"]
    assert main(["train", "--out", "a", *args]) == 0
    real = cal.calibrate

    def cut(*a, **k):
        signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(cal, "calibrate", cut)
    assert main(["train", "--out", "b", *args]) == 130
    assert "continue with: fastvae train --out b --resume" in capsys.readouterr().err
    assert fastvae.tabular.load("b/model.npz").calibration_ is None
    monkeypatch.setattr(cal, "calibrate", real)
    assert main(["train", "--out", "b", "--resume", "--no-pictures", "--quiet"]) == 0
    a, b = fastvae.tabular.load("a/model.npz"), fastvae.tabular.load("b/model.npz")
    assert b.calibration_ is not None and b.model.train_state.step == a.model.train_state.step
    pd.testing.assert_frame_equal(a.sample(50, seed=1), b.sample(50, seed=1))


def test_conditions_in_any_order_and_the_policys_batch(workdir):
    """--condition flags in another order than the file's columns train (the model keeps
    the file's order), and the command line's policy picks the batch size the library's
    does, from the rows the policy trains on."""
    from fastvae.tabular import policy
    df = table(1000)
    df["group2"] = np.where(df["x"] > 0, "p", "q")
    df.to_csv("c.csv", index=False)
    assert main(["train", "--data", "c.csv", "--out", "c", "--condition", "group2",
                 "--condition", "group", *SMALL, "--no-pictures"]) == 0
    tv = fastvae.tabular.load("c/model.npz")
    assert [c.name for c in tv.schema.conditions] == ["group", "group2"]
    assert main(["train", "--data", "c.csv", "--out", "p", "--hidden", "16", "--latent", "4",
                 "--backend", "cpu", "--quiet", "--no-pictures"]) == 0
    st = fastvae.tabular.load("p/model.npz").model.train_state
    n = st.n_rows
    assert st.settings["batch_size"] == policy.batch_size(n), (n, st.settings)


def test_sample_refuses_npy_and_unknown_file_kinds_for_tables(run, capsys):
    d, _ = run
    model = str(d / "model.npz")
    assert main(["sample", model, "-n", "5", "--npy", str(d / "y.npy")]) == 2
    assert "--npy" in one_error_line(capsys, "sample") and not os.path.exists(d / "y.npy")
    assert main(["sample", model, "-n", "5", "--out", str(d / "x.xlsx")]) == 2
    assert ".csv, .tsv or .parquet" in one_error_line(capsys, "sample")
    assert not os.path.exists(d / "x.xlsx")


def test_a_policy_run_resumes_to_the_straight_run(workdir, monkeypatch, capsys):
    """Without --epochs the run follows the training policy; interrupted, --resume
    continues the policy (its state is in the checkpoint) to the straight run's stop and
    weights, and says what it is doing in the policy's words."""
    from fastvae.tabular import policy
    monkeypatch.setattr(policy, "MIN_STEPS", 30)
    monkeypatch.setattr(policy, "MAX_STEPS", 300)
    monkeypatch.setattr(policy, "EVAL_STEPS", 10)
    monkeypatch.setattr(policy, "PATIENCE", 3)
    args = ["--data", "t.csv", "--hidden", "16", "--latent", "4", "--backend", "cpu",
            "--no-pictures"]
    assert main(["train", "--out", "a", "--quiet", *args]) == 0
    run = json.load(open("a/run.json"))
    assert run["epochs"] is None
    a = fastvae.tabular.load("a/model.npz")
    st = a.model.train_state
    assert st.stopper.stopped and st.step >= 30 and a.latent_ is not None
    calls, forward = [0], fastvae.VAE.forward

    def interrupting(self, *x, **k):
        if k.get("grad", True):
            calls[0] += 1
            if calls[0] == 25:
                signal.raise_signal(signal.SIGINT)
        return forward(self, *x, **k)

    monkeypatch.setattr(fastvae.VAE, "forward", interrupting)
    assert main(["train", "--out", "b", "--quiet", *args]) == 130
    monkeypatch.setattr(fastvae.VAE, "forward", forward)
    assert "continue with: fastvae train --out b --resume" in capsys.readouterr().err
    assert main(["train", "--out", "b", "--resume", "--no-pictures"]) == 0
    err = capsys.readouterr().err
    assert "training until its held-out rows stop improving" in err
    assert f"trained {st.epoch} epochs ({st.step} steps)" in err
    b = fastvae.tabular.load("b/model.npz")
    assert b.model.train_state.step == st.step
    np.testing.assert_array_equal(a.model.flat_params, b.model.flat_params)
    pd.testing.assert_frame_equal(a.sample(50, seed=1), b.sample(50, seed=1))


# ---------------------------------------------------------------------------- sample
def test_sample_writes_the_table_with_its_names_and_dtypes(run, tmp_path):
    d, _ = run
    real = table()
    out = tmp_path / "s.csv"
    assert main(["sample", str(d / "model.npz"), "-n", "300", "--csv", str(out),
                 "--seed", "3"]) == 0
    s = pd.read_csv(out)
    assert list(s.columns) == COLUMNS and len(s) == 300
    # the training file's dtypes as this pandas reads them (strings: object under pandas 2,
    # str under pandas 3)
    want = dict(pd.read_csv(d.parent / "t.csv").dtypes.astype(str))
    assert want["x"] == want["y"] == "float64" and want["k"] == "int64"
    assert want["flag"] == "bool" and want["color"] == want["group"] in ("object", "str")
    assert dict(s.dtypes.astype(str)) == want
    # (color and y have gaps in the training file: samples may too)
    assert set(s["color"].dropna()) <= {"red", "green", "blue"} and set(s["group"]) == {"a", "b"}
    assert s["k"].between(0, 9).all()
    assert not s.drop(columns=["y", "color"]).isna().any().any()
    again = tmp_path / "s2.csv"
    assert main(["sample", str(d / "model.npz"), "-n", "300", "--csv", str(again),
                 "--seed", "3"]) == 0
    assert again.read_bytes() == out.read_bytes()  # the seed fixes the rows
    # a fixed condition; Parquet keeps the dtypes too
    pytest.importorskip("pyarrow")
    pq = tmp_path / "s.parquet"
    assert main(["sample", str(d / "model.npz"), "-n", "50", "--parquet", str(pq),
                 "--condition", "group=b"]) == 0
    p = pd.read_parquet(pq)
    assert (p["group"] == "b").all() and list(p.columns) == COLUMNS
    assert p["k"].dtype == real["k"].dtype and p["flag"].dtype == bool


def test_sample_condition_errors_name_the_problem(run, capsys):
    model = str(run[0] / "model.npz")
    assert main(["sample", model, "--condition", "group=c"]) == 2
    assert "'c' is not one of the column's 2 categories (a, b)" in one_error_line(
        capsys, "sample")
    assert main(["sample", model, "--condition", "color=red"]) == 2
    assert "'color' is not a condition column of this model (its conditions: ['group'])" \
        in one_error_line(capsys, "sample")
    assert main(["sample", model, "--condition", "group"]) == 2
    assert "expected COL=VALUE" in one_error_line(capsys, "sample")
    assert main(["sample", model, "--condition", "group=a", "--condition", "group=b"]) == 2
    assert "'group' is given twice" in one_error_line(capsys, "sample")


def test_sample_warnings_are_one_line_each(workdir, capsys):
    """A condition outside its training range is warned of in one line, not as a Python
    warning with the package's file and source line."""
    table().assign(z=lambda d: d.k * 1.5).to_csv("w.csv", index=False)
    assert main(["train", "--data", "w.csv", "--out", "w", "--condition", "group",
                 "--condition", "z", "--no-pictures", *SMALL]) == 0
    capsys.readouterr()
    assert main(["sample", "w/model.npz", "-n", "5", "--condition", "z=99",
                 "--csv", "s.csv"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == ("warning: condition 'z': given value 99 is outside its training range "
                      "[0, 13.5]; the model extrapolates there, and the samples may be poor "
                      "(far out, alike)"), err
    assert err[1].startswith("wrote s.csv (5 rows")


def test_sample_without_a_file_prints_csv_and_out_picks_the_format(run, tmp_path, capsys):
    model = str(run[0] / "model.npz")
    assert main(["sample", model, "-n", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 6
    assert main(["sample", model, "-n", "5", "--out", str(tmp_path / "s.tsv")]) == 0
    assert pd.read_csv(tmp_path / "s.tsv", sep="\t").shape == (5, 6)
    capsys.readouterr()
    assert main(["sample", model, "--out", str(tmp_path / "s.png")]) == 2
    assert "samples are rows, not a picture" in one_error_line(capsys, "sample")
    assert not (tmp_path / "s.png").exists()


def test_sample_of_an_image_model_is_unchanged(workdir, capsys):
    pytest.importorskip("matplotlib")
    m = fastvae.VAE(16, hidden=(4,), latent_dim=2, backend="numpy")
    m.metadata = {"image_shape": [4, 4]}
    m.save("img.npz")
    assert main(["sample", "img.npz", "-n", "4"]) == 0  # --out: samples.png
    assert (workdir / "samples.png").exists() and "wrote samples.png" in \
        capsys.readouterr().out
    assert main(["sample", "img.npz", "--csv", "s.csv"]) == 2
    assert "--csv is for a table model" in one_error_line(capsys, "sample")


# ------------------------------------------------------------------------------ eval
def test_eval_prints_the_test_elbo_and_every_column(run, capsys):
    d, train_out = run
    capsys.readouterr()
    assert main(["eval", str(d / "model.npz")]) == 0
    out = capsys.readouterr().out
    # the held-out 10% again, from run.json: the ELBO that train printed
    printed = train_out.split("test negative ELBO ")[1].split()[0]
    assert f"{float(out.split('negative ELBO ')[1].split()[0]):.2f}" == printed
    assert "(test split, 40 rows)" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    for c in ["x", "y", "k", "color", "flag"]:
        assert c in lines and np.isfinite(float(lines[c][-1])), out
    assert "group" not in lines  # a condition is not modeled
    assert main(["eval", str(d / "model.npz"), "--json", "--data", str(d.parent / "t.csv")]) \
        == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["columns"]) == {"x", "y", "k", "color", "flag"} and res["n"] == 400
    assert res["neg_elbo"] == pytest.approx(res["recon"] + res["kl"])
    assert -sum(res["columns"].values()) == pytest.approx(res["recon"], rel=0.2)


# ----------------------------------------------------------------------------- score
def test_score_writes_one_row_per_input_row(run, tmp_path, capsys):
    model = str(run[0] / "model.npz")
    data = table(100, seed=5)
    data.to_csv(tmp_path / "new.csv", index=False)
    want = fastvae.tabular.load(model).score_samples(data)
    out = tmp_path / "scores.csv"
    assert main(["score", model, str(tmp_path / "new.csv"), "--csv", str(out)]) == 0
    s = pd.read_csv(out)
    assert list(s.columns) == ["row", "score"] and len(s) == 100
    assert (s["row"] == np.arange(100)).all()
    np.testing.assert_allclose(s["score"], want, rtol=1e-12)
    assert main(["score", model, str(tmp_path / "new.csv"), "--csv", str(out),
                 "--per-column", "--k", "4"]) == 0
    s = pd.read_csv(out)
    assert list(s.columns) == ["row", "score", "kl", "column:x", "column:y", "column:k",
                               "column:color", "column:flag", "importance"]
    assert len(s) == 100 and np.isfinite(s.drop(columns="row").to_numpy()).all()
    np.testing.assert_allclose(s.drop(columns=["row", "score"]).sum(axis=1), s["score"],
                               rtol=1e-5, atol=1e-4)  # (the parts add up to the score)
    capsys.readouterr()
    assert main(["score", model, str(tmp_path / "new.csv"), "--per-column"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "the 10 highest scores of 100 rows" in printed[0] and len(printed) == 12
    assert printed[1].split()[:4] == ["row", "score", "most", "unlikely"]
    top = printed[2].split()
    assert int(top[0]) == want.idxmax() and float(top[1]) == pytest.approx(want.max(),
                                                                           abs=1e-3)


def test_score_refuses_an_image_model_and_a_table_without_a_column(run, tmp_path, capsys):
    img = fastvae.VAE(4, hidden=(3,), latent_dim=2, backend="numpy")
    img.save(tmp_path / "img.npz")
    table().head(20).to_csv(tmp_path / "t.csv", index=False)
    assert main(["score", str(tmp_path / "img.npz"), str(tmp_path / "t.csv")]) == 2
    assert "not of a table" in one_error_line(capsys, "score")
    table().head(20).drop(columns=["color"]).to_csv(tmp_path / "nc.csv", index=False)
    assert main(["score", str(run[0] / "model.npz"), str(tmp_path / "nc.csv")]) == 2
    assert "no column(s) ['color']" in one_error_line(capsys, "score")


# ------------------------------------------------------------------------- bad input
def _infinite(p):
    t = table()
    t.loc[7, "x"] = np.inf
    t.to_csv(p / "t.csv", index=False)


def _xlsx(p):
    (p / "t.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")


@pytest.mark.parametrize("extra, prepare, says", [
    (["--column", "k=bogus"], None, "--column 'k=bogus': unknown type 'bogus'"),
    (["--column", "k"], None, "expected COL=TYPE"),
    (["--column", "nope=numeric"], None, "'nope'"),
    (["--condition", "nope"], None, "condition column 'nope' is not in the table"),
    (["--data", "t.xlsx"], _xlsx, "t.xlsx is not a table fastvae reads"),
    ([], _infinite, "column 'x', line 9 of t.csv: inf is not a finite number"),
    (["--batch-size", "1000"], None, "use a --batch-size of at most 360"),
    (["--likelihood", "gaussian"], None, "--likelihood: for image and array data"),
])
def test_bad_table_input_is_one_line_and_writes_nothing(workdir, capsys, extra, prepare,
                                                        says):
    if prepare is not None:
        prepare(workdir)
    data = [] if "--data" in extra else ["--data", "t.csv"]
    assert main(["train", *data, *extra, *SMALL]) == 2
    assert says in one_error_line(capsys, "train")
    assert not (workdir / "runs").exists()


def test_condition_settings_reach_the_model_and_the_run(workdir, capsys):
    """--decoder-conditions-only --inject-conditions: scVI's setting with the conditions in
    every decoder layer, kept in run.json and the checkpoint; without a condition column
    the injection is refused in one line."""
    assert main(["train", "--data", "t.csv", "--out", "r", "--condition", "group",
                 "--decoder-conditions-only", "--inject-conditions", "--no-pictures",
                 *SMALL]) == 0
    m = fastvae.load(workdir / "r" / "model.npz")
    assert m.inject_conditions and not m.encode_conditions
    saved = json.load(open(workdir / "r" / "run.json"))
    assert saved["inject_conditions"] is True and saved["encode_conditions"] is False
    assert main(["train", "--resume", "--out", "r", "--epochs", "3", "--decoder-conditions-only",
                 "--inject-conditions", "--quiet"]) == 0  # (the run's own settings again)
    assert main(["train", "--data", "t.csv", "--out", "r1", "--condition", "group",
                 "--no-pictures", *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r1", "--inject-conditions", "--quiet"]) == 2
    assert "--inject-conditions (the run has not)" in one_error_line(capsys, "train")
    assert main(["train", "--data", "t.csv", "--out", "r2", "--inject-conditions",
                 *SMALL]) == 2
    assert ("--inject-conditions feeds the condition columns to every decoder layer, but "
            "none was given: name one with --condition COL") in one_error_line(capsys, "train")
    assert main(["train", "--data", "t.csv", "--out", "r2", "--decoder-conditions-only",
                 *SMALL]) == 2
    assert ("--decoder-conditions-only keeps the condition columns out of the encoder, but "
            "none was given: name one with --condition COL") in one_error_line(capsys, "train")
    assert not (workdir / "r2").exists()


def test_condition_without_a_table_and_mpi_are_refused(workdir, capsys, monkeypatch):
    assert main(["train", "--condition", "group", *SMALL]) == 2
    assert "--condition, --column, --decoder-conditions-only" in one_error_line(capsys, "train")
    assert main(["train", "--inject-conditions", *SMALL]) == 2
    assert "are for tables" in one_error_line(capsys, "train")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["train", "--data", "t.csv", *SMALL]) == 2
    assert "not supported for tables" in one_error_line(capsys, "train")


def test_help_mentions_the_table_options(capsys):
    for cmd in ("train", "score", "sample"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--condition COL" in text and "--column COL=TYPE" in text
    assert "fastvae score" in text and "--per-column" in text and "--parquet" in text


def test_help_and_image_training_do_not_import_pandas(tmp_path):
    code = ("import sys\nfrom fastvae.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"assert main(['train', '--n-images', '100', '--epochs', '1', '--hidden', '8', "
            f"'--latent', '2', '--batch-size', '30', '--backend', 'numpy', '--quiet', "
            f"'--no-pictures', '--out', {str(tmp_path / 'r')!r}]) == 0\n"
            "assert 'pandas' not in sys.modules, 'pandas was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


def test_csv_dash_is_standard_output(run, capsys, tmp_path, monkeypatch):
    """``--csv -`` writes CSV to standard output (sample and score), never a file named
    '-'."""
    import io
    d, _ = run
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(d / "model.npz"), "-n", "7", "--csv", "-", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    s = pd.read_csv(io.StringIO(out))
    assert len(s) == 7 and set(COLUMNS) <= set(s.columns)
    assert main(["score", str(d / "model.npz"), str(d.parent / "t.csv"), "--csv", "-"]) == 0
    scores = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(scores.columns) == ["row", "score"] and len(scores) == 400
    assert not (tmp_path / "-").exists()


# ----------------------------------------------------------------------------- sweep 6
def test_out_that_is_a_file_is_one_line(workdir, capsys):
    for out in ("t.csv", "t.csv/x"):
        assert main(["train", "--data", "t.csv", "--out", out, *SMALL]) == 2
        assert "cannot make the run directory" in one_error_line(capsys, "train")


def test_a_condition_typed_ignore_and_names_with_equals_signs(workdir, capsys):
    assert main(["train", "--data", "t.csv", "--out", "r", "--condition", "group",
                 "--column", "group=ignore", *SMALL]) == 2
    assert "'group' is a condition and typed 'ignore'" in one_error_line(capsys, "train")
    df = table().rename(columns={"color": "color=hue", "group": "g=1"})
    df.to_csv("eq.csv", index=False)
    assert main(["train", "--data", "eq.csv", "--out", "req", "--condition", "g=1",
                 "--column", "color=hue=categorical", "--no-pictures", *SMALL]) == 0
    assert main(["sample", "req/model.npz", "-n", "5", "--condition", "g=1=b",
                 "--csv", "s.csv"]) == 0
    assert (pd.read_csv("s.csv")["g=1"] == "b").all()


def test_a_date_text_condition_from_the_command_line(workdir, capsys):
    df = table()
    df["day"] = pd.Series(pd.date_range("2020-01-01", periods=len(df))).dt.strftime(
        "%Y-%m-%d")
    df.to_csv("d.csv", index=False)
    assert main(["train", "--data", "d.csv", "--out", "rd", "--condition", "day",
                 "--no-pictures", *SMALL]) == 0
    capsys.readouterr()
    assert main(["sample", "rd/model.npz", "-n", "4", "--condition", "day=2020-03-01",
                 "--csv", "s.csv"]) == 0
    assert (pd.read_csv("s.csv").day == "2020-03-01").all()


def test_a_sample_cut_short_leaves_no_half_written_file(run, tmp_path, ctrl_c):
    """Ctrl-C in the middle of `fastvae sample -n huge --csv keep.csv`: keep.csv keeps its
    old rows, and no part file is left beside it."""
    import time
    keep = tmp_path / "keep.csv"
    keep.write_text("old\n1\n")
    cmd = [sys.executable, "-m", "fastvae", "sample", str(run[0] / "model.npz"), "-n",
           "50000000", "--csv", str(keep)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_sigint_default)
    time.sleep(1)
    while p.poll() is None and not any(f.name.startswith(".keep.csv.part")
                                       for f in tmp_path.iterdir()):
        time.sleep(0.2)  # (until it writes)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "interrupted" in err
    assert keep.read_text() == "old\n1\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["keep.csv"]


def test_score_s_unknown_category_message_names_the_flag(run, tmp_path, capsys):
    df = table()
    df.loc[5, "color"] = "mauve"
    df.to_csv(tmp_path / "u.csv", index=False)
    assert main(["score", str(run[0] / "model.npz"), str(tmp_path / "u.csv")]) == 2
    assert "pass --unknown missing" in one_error_line(capsys, "score")


def test_impute_fills_the_gaps_and_keeps_the_rest(run, tmp_path, capsys):
    model = str(run[0] / "model.npz")
    df = table(80, seed=3)
    df.to_csv(tmp_path / "g.csv", index=False)
    assert main(["impute", model, str(tmp_path / "g.csv"), "--csv",
                 str(tmp_path / "f.csv")]) == 0
    assert capsys.readouterr().err.strip() == f"wrote {tmp_path / 'f.csv'} (80 rows)"
    out = pd.read_csv(tmp_path / "f.csv")
    assert list(out.columns) == COLUMNS and not out.isna().any().any()
    seen = df.notna()
    for c in ("x", "y", "k"):  # observed cells as they were
        np.testing.assert_allclose(out[c][seen[c]], df[c][seen[c]])
    assert (out["color"][seen["color"]] == df["color"][seen["color"]]).all()
    assert set(out["color"]) <= {"red", "green", "blue"}
    # --seed draws (the same draw for the same seed); stdout without --csv
    assert main(["impute", model, str(tmp_path / "g.csv"), "--seed", "1"]) == 0
    a = capsys.readouterr().out
    assert main(["impute", model, str(tmp_path / "g.csv"), "--seed", "1", "--csv", "-"]) == 0
    assert capsys.readouterr().out == a and a.splitlines()[0] == ",".join(COLUMNS)


def test_impute_errors_are_one_line(run, workdir, capsys):
    model = str(run[0] / "model.npz")
    assert main(["impute", model, "nothere.csv"]) == 2
    assert "nothere.csv" in one_error_line(capsys, "impute")
    table().dropna().to_csv("full.csv", index=False)
    assert main(["train", "--data", "full.csv", "--out", "f", "--no-pictures", *SMALL]) == 0
    capsys.readouterr()
    assert main(["impute", "f/model.npz", "full.csv"]) == 0  # (nothing to fill)
    capsys.readouterr()
    table().to_csv("g.csv", index=False)  # (gaps in y and color)
    assert main(["impute", "f/model.npz", "g.csv"]) == 2
    assert "trained without the missing-cell mask" in one_error_line(capsys, "impute")
