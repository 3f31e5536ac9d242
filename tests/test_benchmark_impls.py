"""The benchmark's implementations do identical work: PyTorch copies fastvae's weights and
computes the same loss, for every benchmark model; FLOP counts follow DESIGN.md."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastvae.benchmark import impls  # noqa: E402


@pytest.mark.parametrize("name", list(impls.MODELS))
def test_torch_copy_computes_the_same_loss(name):
    fast = impls.build("fastvae-cpu", name, seed=5)
    tm = impls.build("torch-eager", name, seed=5)
    D, _, Z = impls.MODELS[name]
    x = impls.make_batches(D, 16, n=1)[0]
    ours = fast.model.forward(x, eps=np.zeros((16, Z), np.float32)).loss
    with torch.no_grad():
        xt = torch.from_numpy(x)
        mu, logvar = tm.module.encode(xt)
        logits = tm.module.decode_logits(mu)  # eps = 0: z = mu
        rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, xt, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        theirs = ((rec + kl) / 16).item()
    assert ours == pytest.approx(theirs, rel=1e-5)
    np.testing.assert_allclose(tm.decode(mu.numpy()).numpy(), fast.decode(mu.numpy()),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["canonical", "tiny"])
def test_jax_computes_the_same_loss_and_trains(name):
    """JAX (a benchmark peer, where installed) from fastvae's weights: the same negative ELBO
    at eps = 0, the same encoder and decoder, and its jitted Adam step lowers the loss."""
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    fast = impls.build("fastvae-cpu", name, seed=5)
    jx = impls.build("jax-jit", name, seed=5)
    D, _, Z = impls.MODELS[name]
    x = impls.make_batches(D, 16, n=1)[0]
    eps = np.zeros((16, Z), np.float32)
    assert float(jx.loss(jx.params, x, eps)) == pytest.approx(
        fast.model.forward(x, eps=eps).loss, rel=1e-5)
    mu, logvar = (np.asarray(a) for a in jx.encode(x))
    fmu, flv = fast.encode(x)
    np.testing.assert_allclose(mu, fmu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logvar, flv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jx.decode(mu)), fast.decode(mu), rtol=1e-5, atol=1e-6)
    first = float(jx.loss(jx.params, x, eps))
    for _ in range(20):
        jx.train_step(x)
    jx.sync()
    assert float(jx.loss(jx.params, x, eps)) < first


def test_torch_bf16_autocast_computes_the_same_loss_to_bf16_precision():
    """PyTorch's bf16 peer: the products in bfloat16 (8 bits of mantissa), the loss as the
    float32 one's to about 1%."""
    x = impls.make_batches(784, 32, n=1)[0]
    torch.manual_seed(0)
    f32 = impls.build("torch-eager", "canonical", seed=5).train_step(x).item()
    torch.manual_seed(0)
    bf16 = impls.build("torch-bf16", "canonical", seed=5).train_step(x).item()
    assert bf16 == pytest.approx(f32, rel=2e-2) and bf16 != f32


def test_flop_convention():
    assert impls.train_flop("canonical", 1) == 6 * 651_200
    assert impls.layer_sizes("deep") == [(784, 1024), (1024, 1024), (1024, 128), (64, 1024),
                                         (1024, 1024), (1024, 784)]


def test_unknown_implementation():
    with pytest.raises(ValueError, match="unknown implementation 'jax'"):
        impls.build("jax", "tiny")
    assert impls.n_params("canonical") == 652_824  # fastvae.VAE(784).n_parameters
