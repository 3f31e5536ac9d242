"""The benchmark suite cannot rot: the pytest-benchmark modules run once in smoke mode, and
the report of ``fastvae bench`` is built end to end on a tiny plan.  No timing is asserted."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from fastvae.benchmark import suite  # noqa: E402
from fastvae.cli import main  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_benchmark_modules_smoke():
    env = dict(os.environ, FASTVAE_BENCH_SMOKE="1", FASTVAE_BENCH_THREADS="2")
    r = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q",
                        "--benchmark-disable", "-p", "no:cacheprovider"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


TINY = {"train": [("tiny", 16), ("tiny", 64)], "infer": [("tiny", 16)],
        "latency": [("tiny", 1)], "epoch": [("tiny", 16)], "rounds": 1, "epoch_rows": 128,
        "compile": set(), "numpy_max_batch": 16, "memory_steps": 3}


def test_report_end_to_end(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(suite, "plan", lambda quick: dict(TINY))
    assert main(["bench", "--quick", "--threads", "2", "--out", str(tmp_path),
                 "--impl", "fastvae-numpy", "--impl", "fastvae-cpu",
                 "--impl", "torch-eager"]) == 0
    res = json.loads((tmp_path / "bench-quick.json").read_text())
    assert res["machine"]["cores"] == os.cpu_count() and res["threads"]["BLAS"] == 2
    assert res["gemm_peak_gflops"] > 0
    kinds = [(r["workload"], r["model"], r["batch"]) for r in res["rows"]]
    assert kinds == [("train", "tiny", 16), ("train", "tiny", 64), ("infer", "tiny", 16),
                     ("latency", "tiny", 1), ("epoch", "tiny", 16)]
    first = res["rows"][0]
    assert set(first["median_ms"]) == {"fastvae-numpy", "fastvae-cpu", "torch-eager"}
    assert set(res["rows"][1]["median_ms"]) == {"fastvae-cpu", "torch-eager"}  # numpy <= 16
    g = first["gflops"]["fastvae-cpu"]
    assert g == pytest.approx(6 * 16 * (64 * 32 + 32 * 4 + 2 * 32 + 32 * 64)
                              / (first["median_ms"]["fastvae-cpu"] * 1e-3) / 1e9)
    assert first["speedup_vs_torch_eager"]["torch-eager"] == 1.0
    assert {t["target"].split(",")[0] for t in res["targets"]} >= {
        "fastvae cpu no slower than PyTorch eager at any training-step row",
        "peak memory of a training run no more than PyTorch's"}
    md = (tmp_path / "bench-quick.md").read_text()
    for title in ("Training step", "Achieved GFLOP/s", "Inference", "latency", "One epoch",
                  "Cold start", "Peak resident memory", "Targets"):
        assert title in md
    assert md in capsys.readouterr().out
    assert (tmp_path / "bench-quick.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_refuses_unknown_implementation(capsys):
    assert main(["bench", "--impl", "jax"]) == 2
    assert "unknown implementation(s) ['jax']" in capsys.readouterr().err
