"""What only the cuda backend has: no host synchronisation in a step (host reads and
launches counted), the loss and gradient norm read lazily from the device, the input check
and clipping deferred on the device, batches gathered on the device (every data path
resumes exactly), cross-device checkpoints, two GPUs, the out-of-memory message, the
launch-signature checks, and the GPU benchmark script.

The contracts every backend shares (kernels against the reference, finite differences,
torch parity, a step against the reference, resume, pickling, noise) run on the cuda
backend too, from the shared suite: test_kernels.py, test_gradcheck.py,
test_torch_parity.py, test_backend_contract.py, test_train_state.py, test_training.py.

Runs on the emulated device everywhere and on the GPU where there is one (``-m gpu``).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastvae
from fastvae.backends import cuda as C

from conftest import make_data
from tolerances import assert_close
from cuda_helpers import dev, emu, emu_library, host  # noqa: F401  (fixtures)

def test_a_training_step_never_waits_for_the_device(emu, monkeypatch):
    model = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda")
    opt = fastvae.Adam(model)
    x = emu.xp.asarray(make_data(model, B=16).astype(np.float32))
    model.train_step(x, opt)  # first step: workspace allocation
    emu.xp.reads[0] = 0
    emu.xp.launches.clear()
    emu.fake_cublas.gemms = 0
    cache = model.forward(x, validate=False)
    opt.step(model.backward(cache))
    assert emu.xp.reads[0] == 0  # nothing came back to the host ...
    assert emu.fake_cublas.gemms == 11  # 4 products forward, 7 backward
    assert len(emu.xp.launches) == 10  # noise, 2 bias_act, reparam fwd/bwd, likelihood (+ its row finish), stats, 2 act_bias_bwd, adam
    assert np.isfinite(cache.loss) and emu.xp.reads[0] == 1  # ... until the loss is read


def test_the_loss_is_read_lazily_and_a_stale_read_is_refused(emu):
    model = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda")
    x = make_data(model, B=8).astype(np.float32)
    first = model.forward(x)
    second = model.forward(x)
    assert np.isfinite(second.loss)
    with pytest.raises(RuntimeError, match="read cache.loss .* before the next forward pass"):
        first.loss


def test_noise_is_drawn_on_the_device(emu):
    """(Reproducible and the reference's: test_backend_contract.py, on every backend.)"""
    a = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda", seed=5)
    emu.xp.launches.clear()
    a.forward(make_data(a, B=8).astype(np.float32))
    assert "normal_eps_f32" in emu.xp.launches


def test_fit_gathers_batches_on_the_device_and_resumes_exactly(emu, tmp_path):
    rng = np.random.default_rng(3)
    X = (rng.random((300, 30)) * 255).astype(np.uint8)
    kw = dict(batch_size=64, progress=False, kl_warmup=1)

    def fresh():
        return fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda", seed=2)

    straight = fresh()
    hist = straight.fit(fastvae.Dataset(X), epochs=2, **kw)
    assert "gather_rows_f32_u8" in emu.xp.launches
    assert all(np.isfinite(h["train_loss"]) for h in hist)
    half = fresh()
    half.fit(fastvae.Dataset(X), epochs=1, checkpoint=tmp_path / "c.npz", **kw)
    resumed = fastvae.load(tmp_path / "c.npz", backend="cuda")
    resumed.fit(fastvae.Dataset(X), epochs=1, **kw)
    np.testing.assert_array_equal(host(resumed.flat_params), host(straight.flat_params))
    assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]


@pytest.mark.parametrize("data_kind", ["device", "memmap", "dynamic"])
def test_fit_resumes_with_its_saved_settings_on_every_data_path(emu, tmp_path, data_kind):
    """Non-default settings, 1 epoch + Ctrl-C inside epoch 2, load, fit with no settings:
    identical to the uninterrupted run, whether batches are gathered on the device or
    staged from the host (memory-mapped data, dynamic binarization)."""
    from conftest import interrupt_at
    from fastvae import data
    rng = np.random.default_rng(3)
    X = (rng.random((300, 30)) * 255).astype(np.uint8)
    if data_kind == "memmap":
        np.save(tmp_path / "x.npy", X)
        X, _ = data.load(tmp_path / "x.npy")
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.8, batch_size=48, kl_warmup=1.5,
              clip_norm=20.0, binarize="dynamic" if data_kind == "dynamic" else "none")

    def fresh():
        return fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda", seed=2)

    straight = fresh()
    straight.fit(X, epochs=2, progress=False, **kw)
    staged = "gather_rows_f32_u8" not in emu.xp.launches
    assert staged == (data_kind != "device")
    half = interrupt_at(fresh(), 9)
    assert half.fit(X, epochs=2, progress=False, checkpoint=tmp_path / "c.npz", **kw).interrupted
    resumed = fastvae.load(tmp_path / "c.npz", backend="cuda")
    assert resumed.train_state.epoch == 1 and resumed.train_state.row == 2 * 48
    resumed.fit(X, epochs=1, progress=False)
    np.testing.assert_array_equal(host(resumed.flat_params), host(straight.flat_params))
    np.testing.assert_array_equal(host(resumed.optimizer.buf), host(straight.optimizer.buf))
    assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]


def test_fit_on_device_and_on_cpu_see_the_same_data(emu):
    """The device path (whole set on the device, gathered per batch) yields exactly the
    batches of the host path, in the same order."""
    rng = np.random.default_rng(4)
    X = rng.random((130, 30)).astype(np.float32)
    seen = {}
    for backend in ("cpu", "cuda"):
        model = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend=backend, seed=9)
        batches = []
        orig = model.forward

        def spy(xb, *a, _orig=orig, _b=batches, **k):
            _b.append(host(xb).copy())
            return _orig(xb, *a, **k)

        model.forward = spy
        model.fit(X, epochs=1, batch_size=50, progress=False)
        seen[backend] = batches
    assert [b.shape for b in seen["cpu"]] == [(50, 30), (50, 30), (30, 30)]
    for a, b in zip(seen["cpu"], seen["cuda"]):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_cross_devices(emu, tmp_path):
    gpu = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda", seed=6)
    gpu.fit(make_data(gpu, B=128).astype(np.float32), epochs=1, batch_size=32, progress=False)
    gpu.save(tmp_path / "g.npz")
    cpu = fastvae.load(tmp_path / "g.npz", backend="cpu")
    np.testing.assert_array_equal(cpu.flat_params, host(gpu.flat_params))
    np.testing.assert_array_equal(cpu.optimizer.m, host(gpu.optimizer.m))
    cpu.save(tmp_path / "c.npz")
    back = fastvae.load(tmp_path / "c.npz", backend="cuda")
    np.testing.assert_array_equal(host(back.flat_params), cpu.flat_params)
    assert back.noise.counter == gpu.noise.counter == 4
    z = np.zeros((3, 4), np.float32)
    assert_close(back.decode(z), cpu.decode(z))  # two backends: a few ulp apart


def test_out_of_memory_names_the_batch_size(emu, monkeypatch):
    model = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda")

    def no_memory(*a, **k):
        raise MemoryError("Out of memory allocating 123 bytes")

    monkeypatch.setattr("fastvae.core.workspace.Workspace._allocate", no_memory)
    with pytest.raises(MemoryError, match=r"batch size 512 .* try batch_size=256 or smaller"):
        model.forward(np.zeros((512, 30), np.float32))


def test_numpy_inputs_are_accepted_and_live_on_the_device(dev):
    model = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda")
    x = make_data(model, B=8).astype(np.float32)
    cache = model.forward(x)
    assert isinstance(cache.x, dev.xp.ndarray)
    np.testing.assert_array_equal(host(cache.x), x)
    mu, logvar = model.encode(x)
    assert isinstance(mu, dev.xp.ndarray) and mu.shape == logvar.shape == (8, 4)
    assert model.sample(5).shape == (5, 30)


def test_gpu_benchmark_script_runs_end_to_end_on_the_emulated_device(emu):
    """benchmarks/bench_gpu.py (run on a GPU to produce the committed results) with the
    emulated device and PyTorch on the CPU: every path but the GPU itself."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("torch")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.run([8], "cpu", rounds=1, compile_torch=False, log=lambda s: None)
    (row,) = rows
    assert set(row["median_ms"]) == {"fastvae-cuda", "torch-eager"}
    assert all(v > 0 for v in row["median_ms"].values())
    res = {"machine": {"gpu": "emulated"}, "rows": rows, "targets": mod.targets(rows)}
    md = mod.markdown(res)
    assert "| 8 |" in md and "must: >= 5x" not in md  # batch 128 was not measured
    assert "no slower than torch eager" in md


def test_no_step_waits_for_the_device_unless_a_number_is_read(emu):
    """Host reads per step: none for train_step (its loss is read when used), none with
    clipping (the norm stays on the device), none inside fit between its checks."""
    model = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda")
    opt = fastvae.Adam(model, clip_norm=0.5)
    x = emu.xp.asarray(make_data(model, B=16).astype(np.float32))
    model.train_step(x, opt)
    emu.xp.reads[0] = 0
    losses = [model.train_step(x, opt) for _ in range(5)]
    assert emu.xp.reads[0] == 0
    assert isinstance(losses[-1], fastvae.core.cache.DeviceFloat)
    assert np.isfinite(float(losses[-1])) and emu.xp.reads[0] == 2  # stats + input check
    norm = float(opt.last_grad_norm)
    assert norm > 0.5  # clipping was in force
    # fit: the data checked once up front, the sums read every DEVICE_CHECK_EVERY steps
    X = (np.random.default_rng(0).random((64 * 12, 30)) * 255).astype(np.uint8)
    counts = []
    orig = model.forward

    def counting(*a, **k):
        counts.append(emu.xp.reads[0])
        return orig(*a, **k)

    model.forward = counting
    model.fit(X, epochs=1, batch_size=64, progress=False, clip_norm=0.5)
    steady = np.diff(counts[2:])
    assert len(steady) == 9 and steady.max() == 0


def test_the_input_check_and_clipping_on_the_device_are_exact_and_deferred(emu):
    """The values are still checked (read with the loss), clipping gives the CPU's numbers,
    and a non-finite gradient norm leaves the parameters as they were."""
    cpu = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cpu", dtype="float64")
    gpu = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda", dtype="float64")
    oc, og = fastvae.SGD(cpu, lr=0.1, clip_norm=0.3), fastvae.SGD(gpu, lr=0.1, clip_norm=0.3)
    x = make_data(cpu, B=8)
    eps = np.random.default_rng(1).standard_normal((8, 4))
    oc.step(cpu.backward(cpu.forward(x, eps)))
    og.step(gpu.backward(gpu.forward(x, eps)))
    np.testing.assert_allclose(host(gpu.flat_params), cpu.flat_params, rtol=1e-12, atol=1e-14)
    assert float(og.last_grad_norm) == pytest.approx(oc.last_grad_norm, rel=1e-12)
    bad = x.copy()
    bad[2, 3] = np.nan
    loss = gpu.train_step(bad, og)  # the step runs: the GPU did not stop to look
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite value"):
        float(loss)
    before = host(gpu.flat_params).copy()
    g = gpu.backward(gpu.forward(x, eps))
    g.flat[3] = np.inf
    og.step(g)
    assert np.isinf(float(og.last_grad_norm))
    np.testing.assert_array_equal(host(gpu.flat_params), before)


def test_models_on_two_gpus_and_on_one_used_alternately_match_each_alone(emu):
    """State is per GPU (modules, scratch, cuBLAS handles per thread): two models used in
    turn, on GPUs 0 and 1 or both on one, give exactly what each gives alone.  The emulator
    refuses a launch that mixes arrays of two GPUs and a cuBLAS handle of another GPU."""
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0.05, 0.95, (16, 30)).astype(np.float32) for _ in range(8)]

    def run(models):
        opts = [fastvae.Adam(m, lr=1e-2, clip_norm=1.0) for m in models]
        for x in xs:
            for m, o in zip(models, opts):
                m.train_step(x, o)
        return [host(m.flat_params) for m in models]

    def make(backend, seed):
        return fastvae.VAE(30, hidden=(20,), latent_dim=4, backend=backend, seed=seed)

    alone = [run([make(f"cuda:{i}", i)])[0] for i in (0, 1)]
    together = run([make("cuda:0", 0), make("cuda:1", 1)])
    same_gpu = run([make("cuda:1", 0), make("cuda:1", 1)])
    for a, t, s in zip(alone, together, same_gpu):
        np.testing.assert_array_equal(t, a)
        np.testing.assert_array_equal(s, a)
    m = make("cuda:1", 0)
    assert m.device_id == 1 and m.flat_params._device == 1 and emu.xp.cuda.current == 0
    assert {h["device"] for h in emu.fake_cublas.handles.values()} == {0, 1}
    with pytest.raises(fastvae.backends.BackendUnavailable, match="has 2 GPU"):
        make("cuda:2", 0)


def test_a_gradient_norm_read_after_the_next_step_is_refused(emu):
    """On a GPU last_grad_norm reads a buffer the next step overwrites: reading it late is
    an error, never the other step's norm."""
    m = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend="cuda", dtype="float64", seed=1)
    opt = fastvae.SGD(m, lr=0.5, clip_norm=1e9)
    x = np.random.default_rng(0).uniform(0.05, 0.95, (16, 30))
    opt.step(m.backward(m.forward(x)))
    held = opt.last_grad_norm
    opt.step(m.backward(m.forward(x)))
    with pytest.raises(RuntimeError, match="last_grad_norm of step 1 was not read before "
                                           "step 2"):
        float(held)
    assert float(opt.last_grad_norm) > 0


def test_reconstruct_on_the_device(emu):
    """decode of encode's copy: every array the device makes is a device allocation."""
    m = fastvae.VAE(37, hidden=(33,), latent_dim=5, backend="cuda", seed=3)
    x = np.random.default_rng(0).uniform(0, 1, (45, 37)).astype(np.float32)
    c = fastvae.VAE(37, hidden=(33,), latent_dim=5, backend="cpu", seed=3)
    assert_close(m.reconstruct(x), c.reconstruct(x))  # two backends: a few ulp apart


# ------------------------------------------------------- the launch path on the emulator
def test_matmul_refuses_bad_arguments(emu):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="shapes do not agree"):
        C.matmul(np.empty((3, 6), np.float32), a, b)
    with pytest.raises(ValueError, match="C-contiguous"):
        C.matmul(np.empty((3, 5), np.float32), np.ones((4, 3), np.float32).T, b)
    with pytest.raises(TypeError, match="dtypes"):
        C.matmul(np.empty((3, 5), np.float64), a, b)


def test_launches_are_checked_against_the_kernel_signatures(emu):
    y = emu.xp.zeros((2, 3), dtype=np.float32)
    h = emu.xp.zeros((2, 3), dtype=np.uint16)  # (the kernel's optional bf16 output, off)
    with pytest.raises(TypeError, match="expected int32"):
        emu.launch("bias_act_fwd_f32", (1,), (256,), (y, y[0], np.int64(2), np.int64(3),
                                                      np.int32(0), np.float32(0), h,
                                                      np.int32(0)))
    with pytest.raises(TypeError, match="float32 device array"):
        emu.launch("bias_act_fwd_f32", (1,), (256,), (y.astype(np.float64), y[0], np.int64(2),
                                                      np.int32(3), np.int32(0), np.float32(0),
                                                      h, np.int32(0)))
    with pytest.raises(TypeError, match="device array, got ndarray"):  # a host array
        emu.launch("bias_act_fwd_f32", (1,), (256,), (np.zeros((2, 3), np.float32), y[0],
                                                      np.int64(2), np.int32(3), np.int32(0),
                                                      np.float32(0), h, np.int32(0)))
    with pytest.raises(TypeError, match="uint16 device array"):  # the bf16 output's type
        emu.launch("bias_act_fwd_f32", (1,), (256,), (y, y[0], np.int64(2), np.int32(3),
                                                      np.int32(0), np.float32(0), y,
                                                      np.int32(1)))
    with pytest.raises(TypeError, match="6 arguments for 8 parameters"):
        emu.launch("bias_act_fwd_f32", (1,), (256,), (y, y[0], np.int64(2), np.int32(3),
                                                      np.int32(0), np.float32(0)))
    with pytest.raises(KeyError, match="no CUDA kernel"):
        emu.launch("bias_act_fwd_f16", (1,), (256,), ())
