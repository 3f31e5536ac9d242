"""The implementations a benchmark compares, built to do identical work.

Every implementation of a model starts from the same weights (fastvae's, copied into
PyTorch), uses Adam with the same settings and sees the same batches.  Each exposes the
same three calls: ``train_step(x)``, ``encode(x)`` and ``decode(z)`` on NumPy inputs.
"""
from __future__ import annotations

import numpy as np

#: model name -> (input_dim, hidden widths, latent_dim)
MODELS = {
    "canonical": (784, (400,), 20),        # PyTorch's example VAE
    "deep": (784, (1024, 1024), 64),       # two wide hidden layers each side
    "tiny": (64, (32,), 2),
}
FASTVAE = ("fastvae-numpy", "fastvae-cpu", "fastvae-cuda")
TORCH = ("torch-eager", "torch-compile")
ALL = FASTVAE + TORCH


def layer_sizes(model):
    """[(in, out)] of every matrix product of the model named ``model`` (forward order)."""
    D, hidden, Z = MODELS[model]
    enc = [D, *hidden]
    dec = [Z, *hidden[::-1], D]
    return ([(a, b) for a, b in zip(enc, enc[1:])] + [(enc[-1], 2 * Z)]
            + [(a, b) for a, b in zip(dec, dec[1:])])


def train_flop(model, batch):
    """FLOP of one training step by the usual convention for dense layers: 6 per weight per
    row, 2 for the forward product and 2 for each of the backward products (the input's
    gradient and the weight's); biases and elementwise work are not counted.  The canonical
    model has 784*400 + 400*40 + 20*400 + 400*784 = 651,200 weights in its products, so a
    step of B rows is 6 * B * 651,200 FLOP."""
    return 6 * batch * sum(a * b for a, b in layer_sizes(model))


def make_batches(D, batch, n=8, seed=0, dtype=np.float32):
    """n distinct (batch, D) binary images with structured per-pixel rates."""
    rng = np.random.default_rng(seed)
    rates = rng.random(D) ** 2
    return [(rng.random((batch, D)) < rates).astype(dtype) for _ in range(n)]


class FastvaeImpl:
    def __init__(self, backend, model, seed=0):
        import fastvae

        D, hidden, Z = MODELS[model]
        self.name = f"fastvae-{backend}"
        self.model = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend=backend, seed=seed)
        self.opt = fastvae.Adam(self.model, lr=1e-3)

    def train_step(self, x):
        return self.model.train_step(x, self.opt)

    def encode(self, x):
        return self.model.encode(x)

    def decode(self, z):
        return self.model.decode(z)

    def sync(self):
        pass


def torch_vae(model):
    """A PyTorch module holding a copy of a fastvae ``model``'s weights, with the same
    layout (the head is one Linear with mu's columns first, then logvar's)."""
    import torch

    p = {k: torch.tensor(np.array(v)) for k, v in model.parameters().items()}
    Z = model.latent_dim
    F = torch.nn.functional
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "leaky_relu": lambda a: F.leaky_relu(a, model.act_alpha),
           "elu": lambda a: F.elu(a, model.act_alpha), "softplus": F.softplus}[model.activation]

    def linear(W, b):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(W.T)
            lin.bias.copy_(b)
        return lin

    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.ModuleList(
                [linear(p[f"enc.{i}.W"], p[f"enc.{i}.b"]) for i in range(len(model.enc_hidden))])
            self.head = linear(p["enc.head.W"], p["enc.head.b"])
            self.dec = torch.nn.ModuleList(
                [linear(p[f"dec.{j}.W"], p[f"dec.{j}.b"]) for j in range(len(model.dec_hidden))])
            self.out = linear(p["dec.out.W"], p["dec.out.b"])

        def encode(self, x):
            h = x
            for lin in self.enc:
                h = act(lin(h))
            head = self.head(h)
            return head[:, :Z], head[:, Z:]

        def decode_logits(self, z):
            g = z
            for lin in self.dec:
                g = act(lin(g))
            return self.out(g)

        def forward(self, x):
            mu, logvar = self.encode(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return self.decode_logits(z), mu, logvar

    return VAE()


def torch_train_step(tmodel, lr=1e-3):
    """A step function x (NumPy) -> loss tensor: negative ELBO averaged over the batch (the
    same objective as fastvae), backward, Adam."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(tmodel.parameters(), lr=lr)

    def step(x):
        xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        opt.zero_grad(set_to_none=True)
        logits, mu, logvar = tmodel(xt)
        rec = F.binary_cross_entropy_with_logits(logits, xt, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (rec + kl) / x.shape[0]
        loss.backward()
        opt.step()
        return loss

    return step


class TorchImpl:
    def __init__(self, compiled, model, seed=0):
        import torch

        self.name = "torch-compile" if compiled else "torch-eager"
        D, hidden, Z = MODELS[model]
        import fastvae  # the weights come from a fastvae model with the same seed

        ref = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend="numpy", seed=seed)
        self.module = torch_vae(ref)
        step = torch_train_step(self.module)
        enc = lambda x: self.module.encode(x)  # noqa: E731
        dec = lambda z: torch.sigmoid(self.module.decode_logits(z))  # noqa: E731
        if compiled:
            # every implementation compiles its own closures; the default limit of 8
            # recompilations per code object would silently fall back to eager after a
            # few models and batch sizes in one process
            import torch._dynamo as dynamo  # the documented home of the recompile limits

            cfg = dynamo.config
            for attr in ("recompile_limit", "cache_size_limit"):
                if hasattr(cfg, attr):
                    setattr(cfg, attr, max(getattr(cfg, attr), 256))
            if hasattr(cfg, "accumulated_recompile_limit"):
                cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4096)
            # compile in this process: Inductor's pool of compile workers otherwise keeps
            # starting up in the background and steals the cores from the next timings
            # (measured: PyTorch eager 6.8 ms instead of 4.1 at batch 128, quick run)
            import torch._inductor.config as inductor_cfg
            inductor_cfg.compile_threads = 1
            step, enc, dec = torch.compile(step), torch.compile(enc), torch.compile(dec)
        self._step, self._enc, self._dec = step, enc, dec
        self._torch = torch

    def train_step(self, x):
        return self._step(x)

    def encode(self, x):
        with self._torch.no_grad():
            return self._enc(self._torch.from_numpy(x))

    def decode(self, z):
        with self._torch.no_grad():
            return self._dec(self._torch.from_numpy(z))

    def sync(self):
        pass


def available(name):
    """None when implementation ``name`` can run here, else the reason it cannot."""
    if name == "fastvae-cuda":
        from ..backends import cuda_status
        return cuda_status()
    if name.startswith("torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            return "PyTorch is not installed (pip install 'fastvae[bench]')"
    return None


def build(name, model, seed=0):
    """The implementation ``name`` (see ALL) of the model named ``model``."""
    if name in FASTVAE:
        return FastvaeImpl(name.split("-", 1)[1], model, seed)
    if name in TORCH:
        return TorchImpl(name == "torch-compile", model, seed)
    raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(ALL)}")
