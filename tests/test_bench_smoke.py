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


def test_torch_copy_has_identical_weights_and_loss():
    """The PyTorch side of the benchmark starts from fastvae's weights: same loss on the same
    batch and noise-free path (eps = 0), to float32 precision."""
    import numpy as np
    import torch

    import fastvae
    model = fastvae.VAE(784, backend="cpu", seed=5)
    tmodel = bench_step.torch_vae_from(model)
    x = (np.random.default_rng(0).random((16, 784)) < 0.3).astype(np.float32)
    ours = model.forward(x, eps=np.zeros((16, 20), np.float32)).loss
    with torch.no_grad():
        xt = torch.from_numpy(x)
        h = torch.relu(tmodel.fc1(xt))
        mu, logvar = tmodel.fc21(h), tmodel.fc22(h)
        logits = tmodel.fc4(torch.relu(tmodel.fc3(mu)))
        rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, xt, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        theirs = ((rec + kl) / 16).item()
    assert ours == pytest.approx(theirs, rel=1e-5)
