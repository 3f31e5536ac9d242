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
