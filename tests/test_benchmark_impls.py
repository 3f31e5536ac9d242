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


def test_flop_convention():
    assert impls.train_flop("canonical", 1) == 6 * 651_200
    assert impls.layer_sizes("deep") == [(784, 1024), (1024, 1024), (1024, 128), (64, 1024),
                                         (1024, 1024), (1024, 784)]


def test_unknown_implementation():
    with pytest.raises(ValueError, match="unknown implementation 'jax'"):
        impls.build("jax", "tiny")
