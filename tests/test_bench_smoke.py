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
    out, md = tmp_path / "r.json", tmp_path / "sub" / "r.md"
    bench_step.main(["--batch", "8", "--deep-batch", "4", "--rounds", "1", "--block-steps",
                     "2", "--no-cold-start", "--json", str(out), "--markdown", str(md)])
    assert "| 8 |" in md.read_text() and md.read_text().endswith("\n")  # folder made
    data = json.loads(out.read_text())
    small, deep = data["rows"]
    assert (small["model"], small["batch"], deep["model"], deep["batch"]) == (
        "canonical", 8, "deep", 4)
    peers = {"torch-eager", "torch-bf16"} | ({"jax-jit"} if bench_step.peers(False)[-1:] ==
                                             ["jax-jit"] else set())
    from fastvae.benchmark.impls import available
    ours = {"fastvae-cpu"} | ({"fastvae-bf16"} if available("fastvae-bf16") is None else set())
    assert set(small["median_ms"]) == ours | peers
    if "fastvae-bf16" in ours:  # mixed precision against float32 and PyTorch's autocast
        assert small["bf16_vs_float32"] == pytest.approx(
            small["median_ms"]["fastvae-cpu"] / small["median_ms"]["fastvae-bf16"])
        assert "bf16 vs fastvae float32" in md.read_text()
    assert all(v > 0 for v in small["median_ms"].values())
    assert small["speedup_vs_torch_eager"]["torch-eager"] == pytest.approx(1.0)
    assert small["fastest_peer"] in peers and small["vs_fastest_peer"] == pytest.approx(
        small["median_ms"][small["fastest_peer"]] / small["median_ms"]["fastvae-cpu"])
    assert 0 < small["limit_fraction"]["fastvae-cpu"] and small["limit_ms"] > 0
    assert data["limits"]["gemm_gflops"] > 0 and data["limits"]["bandwidth_gbs"] > 0
    assert data["machine"]["cores"] >= 1
    assert "| 8 |" in capsys.readouterr().out


def test_bench_distributed_smoke(tmp_path, capsys):
    """One round at one small batch, 1 process x 2 threads against mpiexec -n 2."""
    pytest.importorskip("mpi4py")
    import bench_distributed
    assert bench_distributed.main(["--batches", "32", "--rows", "256", "--rounds", "1",
                                   "--threads", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / f"distributed_{os.cpu_count()}core.json").read_text())
    (row,) = data["results"]
    assert row["single_step_s"] > 0 and row["mpi_step_s"] > 0 and row["allreduce_s"] > 0
    assert row["runs"]["mpi"][0]["ranks"] == 2 and row["runs"]["single"][0]["ranks"] == 1
    assert row["runs"]["mpi"][0]["allreduce_calls"] == 256 // 32  # one per step
    assert data["bytes_per_step"] == 4 * data["parameters"]
    assert "| 32 |" in capsys.readouterr().out


def test_bench_iwae_smoke(tmp_path, capsys):
    """Every objective trains two short epochs on both sides and is evaluated."""
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install -y "
                    "dataset-fashion-mnist)")
    import bench_iwae
    out = tmp_path / "i.json"
    bench_iwae.main(["--epochs", "2", "--steps", "2", "--nll-rows", "4", "--k", "8",
                     "--json", str(out)])
    res = json.loads(out.read_text())
    assert [(r["objective"], r["K"]) for r in res["rows"]] == bench_iwae.CONFIGS
    for r in res["rows"]:
        for side in ("fastvae", "torch"):
            assert r[side]["median_epoch_s"] > 0 and 0 < r[side]["nll"] < 2000
    assert "| iwae-dreg | 50 |" in capsys.readouterr().out


def test_bench_bf16_smoke(tmp_path, capsys):
    """Two seeds, two short epochs, float32 and bf16 side by side (on the numpy backend's
    exact emulation where the CPU has no bf16 units)."""
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install -y "
                    "dataset-fashion-mnist)")
    from fastvae.backends import cpu
    import bench_bf16
    out = tmp_path / "b.json"
    backend = "cpu" if cpu.bf16_support() is None else "numpy"
    bench_bf16.main(["--epochs", "2", "--steps", "3", "--seeds", "0", "1", "--backend",
                     backend, "--json", str(out)])
    res = json.loads(out.read_text())
    assert [r["seed"] for r in res["runs"]] == [0, 1]
    for r in res["runs"]:
        assert 100 < r["test_bf16"] < 800 and 100 < r["test_full"] < 800
        assert r["test_bf16"] != r["test_full"]  # the products differ
        assert r["epoch_s_bf16"] > 0
    assert res["mean_diff"] == pytest.approx(res["mean_bf16"] - res["mean_full"])
    assert "| 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("likelihood", ["nb", "zinb"])
def test_bench_scvi_smoke(tmp_path, capsys, likelihood):
    """fastvae's side of the SCVI comparison (scvi-tools is a benchmark peer, never a test
    dependency): one run trained to 1 and then 2 epochs, a row per stop with its training
    seconds, likelihood and probe accuracies, and the markdown table."""
    pytest.importorskip("sklearn")
    import bench_scvi
    out, md = tmp_path / "s.json", tmp_path / "s.md"
    bench_scvi.main(["--no-scvi", "--cells", "300", "--epochs", "1", "--more-epochs", "1",
                     "--likelihood", likelihood, "--json", str(out), "--md", str(md)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["impl"], r["epochs"]) for r in rows] == [("fastvae", 1), ("fastvae", 2)]
    assert 0 < rows[0]["train_s"] <= rows[1]["train_s"]
    for r in rows:
        assert r["heldout_recon_ll"] < 0 and len(r["batch_acc"]) == len(r["cluster_acc"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["batch_acc"] + r["cluster_acc"])
    assert "inject_conditions=True" in md.read_text()
    assert f"{likelihood.upper()} likelihood, planted dropout {0.3 if likelihood == 'zinb' else 0:g}" \
        in md.read_text()
    assert "| fastvae | 2 |" in capsys.readouterr().out


def test_bench_scvi_runs_bf16_in_a_process_of_its_own(tmp_path):
    """--bf16's rows come from a worker process that never imports PyTorch, so oneDNN's
    OpenMP threads sleep between products there (they spin where PyTorch's OpenMP was
    loaded first, as in pytest's process)."""
    pytest.importorskip("sklearn")
    from fastvae.backends import cpu
    if cpu.bf16_support() is not None:
        pytest.skip(cpu.bf16_support())
    import bench_scvi
    out = tmp_path / "b.json"
    bench_scvi.main(["--no-scvi", "--bf16", "--cells", "300", "--epochs", "1",
                     "--more-epochs", "0", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    bf = [r for r in rows if r["impl"] == "fastvae (bf16)"]
    assert [(r["epochs"], r["process"], r["shards"]) for r in bf] == [(1, "own", 1)]
    assert bf[0]["openmp"] == "sleeps"
    assert bf[0]["heldout_recon_ll"] < 0


def test_bench_gemm_smoke(tmp_path, capsys):
    """The bf16 product libraries, one tiny round: every library that is here ran every
    product it can (a blocked weight layout only where the operand is a weight), and the
    step's product list is the one a training step makes."""
    import bench_gemm
    prods = bench_gemm.products((784, 400, 20), 8)
    # 2 layers a side: forward and weight gradient each, an input gradient but the data's
    assert len(prods) == 4 * 3 - 1 and ("enc0 dX" not in {p[0] for p in prods})
    assert sum(M * K * N for _, M, K, N, *_ in prods) == 8 * (
        3 * (784 * 400 + 400 * 40 + 20 * 400 + 400 * 784) - 784 * 400)
    out, md = tmp_path / "g.json", tmp_path / "g.md"
    bench_gemm.main(["--tiny", "--rounds", "1", "--reps", "1", "--json", str(out),
                     "--markdown", str(md)])
    data = json.loads(out.read_text())
    assert "numpy-f32" in data["libraries"] and "torch" in data["libraries"]
    from fastvae.backends.cpu import onednn
    try:
        onednn.library()
        here = True
    except RuntimeError:
        here = False
    assert ("onednn-f32" in data["libraries"]) == here
    # (oneDNN's bf16 products need a CPU with bf16 units: AVX512_BF16 or AMX)
    bf16 = here and onednn.support() is None
    assert ("onednn" in data["libraries"]) == ("onednn-blocked" in data["libraries"]) == bf16
    assert set(data["libraries"]) | set(data["missing"]) == set(bench_gemm.LIBRARIES)
    for lib in data["libraries"]:
        times = data["seconds"][lib]
        assert len(times) == len(prods)
        weight = {k for k in times if k.split("|")[2].split()[1] in ("fwd", "dX")}
        ran = {k for k, t in times.items() if t is not None}
        assert all(times[k] > 0 for k in ran)
        assert ran == (weight if lib == "onednn-blocked" else set(times))
    assert "| canonical | 8 |" in md.read_text() and "| canonical | 8 |" in capsys.readouterr().out


@pytest.mark.parametrize("isolate", [False, True])
def test_bench_step_shards_smoke(tmp_path, isolate):
    """--shards adds fastvae cut into shards (float32, and bf16 where it runs), each block
    on its own thread count, with its ratios against the same peers; each implementation
    runs in a process of its own unless --in-process."""
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    bench_step.main(["--batch", "8", "--deep-batch", "--rounds", "1", "--block-steps", "2",
                     "--no-cold-start", "--shards", "2", "--json", str(out), "--markdown",
                     str(md)] + ([] if isolate else ["--in-process"]))
    (row,) = json.loads(out.read_text())["rows"]
    assert row["isolated"] is isolate
    assert ("a process of its own" in md.read_text()) is isolate
    ms = row["median_ms"]
    assert row["shards"] == 2 and ms["fastvae-cpu-2shards"] > 0
    assert row["shards_vs_fastest_peer"] == pytest.approx(
        ms[row["fastest_peer"]] / ms["fastvae-cpu-2shards"])
    if "fastvae-bf16" in ms:
        assert row["shards_bf16_vs_torch_bf16"] == pytest.approx(
            ms["torch-bf16"] / ms["fastvae-bf16-2shards"])


def test_sharded_impl_is_the_same_step():
    """The benchmark's sharded step is fit's: the same loss and weights as one pass over the
    batch (to float32 rounding), and the thread count it ran on is given back to the
    others' blocks."""
    import numpy as np
    from fastvae.backends import cpu
    from fastvae.benchmark.impls import build, make_batches
    x = make_batches(64, 16, n=1)[0]
    one, two = build("fastvae-cpu", "tiny"), build("fastvae-cpu-2shards", "tiny")
    before = cpu.get_num_threads()
    try:
        for _ in range(3):
            one.enter()
            a = one.train_step(x)
            assert cpu.get_num_threads() == before
            two.enter()
            b = two.train_step(x)
            assert cpu.get_num_threads() == 2
            assert b == pytest.approx(a, rel=1e-5)
        np.testing.assert_allclose(two.model.flat_params, one.model.flat_params, rtol=1e-4,
                                   atol=1e-6)
    finally:
        cpu.set_num_threads(before)
