"""The step benchmark runs end to end (tiny, one round) so it cannot rot.  No timing is
asserted: only that every implementation produced a positive median and a ratio."""
import json
import os
import sys

import pytest

pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_step  # noqa: E402


def test_bench_step_smoke(tmp_path, capsys):
    out = tmp_path / "r.json"
    bench_step.main(["--batch", "8", "--rounds", "1", "--block-steps", "2", "--no-cold-start", "--json", str(out)])
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert set(row["median_ms"]) == {"fastvae-cpu", "torch-eager"}
    assert all(v > 0 for v in row["median_ms"].values())
    assert row["speedup_vs_torch_eager"]["torch-eager"] == pytest.approx(1.0)
    assert data["machine"]["cores"] >= 1
    assert "| 8 |" in capsys.readouterr().out
