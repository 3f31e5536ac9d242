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
#: fastvae's mixed precision (precision="bf16": bf16 operands, float32 sums) on the CPU
FASTVAE_BF16 = ("fastvae-bf16",)
#: PyTorch eager, torch.compile, and eager under bfloat16 autocast (the products in bf16)
TORCH = ("torch-eager", "torch-compile", "torch-bf16")
JAX = ("jax-jit",)
ALL = FASTVAE + FASTVAE_BF16 + TORCH + JAX
#: the implementations fastvae is measured against
PEERS = TORCH + JAX


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


def n_params(model):
    """Parameters of the model named ``model`` (weights and biases of every product)."""
    return sum(a * b + b for a, b in layer_sizes(model))


def make_batches(D, batch, n=8, seed=0, dtype=np.float32):
    """n distinct (batch, D) binary images with structured per-pixel rates."""
    rng = np.random.default_rng(seed)
    rates = rng.random(D) ** 2
    return [(rng.random((batch, D)) < rates).astype(dtype) for _ in range(n)]


class FastvaeImpl:
    """fastvae's step; with ``shards`` > 1 (cpu backend) each batch is cut into that many
    data-parallel shards on as many threads of the cpu backend (fit's ``shards``), and
    :meth:`enter` gives the backend that many threads before each timed block (the others'
    blocks get the thread count this one was built under)."""

    def __init__(self, backend, model, seed=0, precision="full", shards=1):
        import fastvae

        D, hidden, Z = MODELS[model]
        self.name = f"fastvae-{backend}" if precision == "full" else f"fastvae-{precision}"
        self.model = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend=backend, seed=seed,
                                 precision=precision)
        self.opt = fastvae.Adam(self.model, lr=1e-3)
        self.shards, self._shards = int(shards), None
        if self.shards > 1:
            from ..backends import cpu
            from ..training.shards import Shards
            self.name += f"-{self.shards}shards"
            self.threads = self.shards
            before = cpu.get_num_threads()
            cpu.set_num_threads(self.threads)
            try:
                self._shards = Shards(self.model, self.shards)
            finally:
                cpu.set_num_threads(before)
        elif backend == "cpu":
            from ..backends import cpu
            self.threads = cpu.get_num_threads()
        else:
            self.threads = None

    def enter(self):
        """Before a block of steps: the cpu backend's thread count this implementation runs
        with (nothing for the other backends)."""
        if self.threads is not None:
            from ..backends import cpu
            from ..backends.cpu import pool
            cpu.set_num_threads(self.threads)
            pool.pool()  # (its threads start here, not inside the timed block)

    def train_step(self, x):
        if self._shards is None:
            return self.model.train_step(x, self.opt)
        loss = self._shards.step(x, 0, x.shape[0])[0]
        self.opt.step()
        return loss / x.shape[0]

    def encode(self, x):
        return self.model.encode(x)

    def decode(self, z):
        return self.model.decode(z)

    def sync(self):
        pass


def torch_linear(W, b):
    """A torch.nn.Linear computing x @ W + b (fastvae's layout: W is (in, out))."""
    import torch
    lin = torch.nn.Linear(W.shape[0], W.shape[1])
    with torch.no_grad():
        lin.weight.copy_(W.T)
        lin.bias.copy_(b)
    return lin


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

    linear = torch_linear
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


def torch_train_step(tmodel, lr=1e-3, bf16=False):
    """A step function x (NumPy) -> loss tensor: negative ELBO averaged over the batch (the
    same objective as fastvae), backward, Adam.  bf16: the forward under
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` (products in bfloat16, as PyTorch's mixed
    precision does them), the loss in float32."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(tmodel.parameters(), lr=lr)

    def step(x):
        xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, mu, logvar = tmodel(xt)
        logits, mu, logvar = logits.float(), mu.float(), logvar.float()
        rec = F.binary_cross_entropy_with_logits(logits, xt, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (rec + kl) / x.shape[0]
        loss.backward()
        opt.step()
        return loss

    return step


class TorchImpl:
    def __init__(self, mode, model, seed=0):
        """mode: "eager", "compile" or "bf16" (eager under bfloat16 autocast)."""
        import torch

        self.name = f"torch-{mode}"
        compiled = mode == "compile"
        D, hidden, Z = MODELS[model]
        import fastvae  # the weights come from a fastvae model with the same seed

        ref = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend="numpy", seed=seed)
        self.module = torch_vae(ref)
        step = torch_train_step(self.module, bf16=mode == "bf16")
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


class JaxImpl:
    """The same model in JAX: ``jax.value_and_grad`` of the same negative ELBO, optax's Adam,
    one ``jax.jit`` step with the parameters and optimizer state donated (updated in place),
    the noise from ``jax.random`` inside the step.  JAX dispatches asynchronously:
    :meth:`sync` waits for the last step (the timing calls it at the end of every block)."""

    def __init__(self, model, seed=0):
        import functools

        import jax
        import jax.numpy as jnp
        import optax

        import fastvae  # the weights come from a fastvae model with the same seed

        self.name = "jax-jit"
        D, hidden, Z = MODELS[model]
        ref = fastvae.VAE(D, hidden=hidden, latent_dim=Z, backend="numpy", seed=seed)
        n_enc, n_dec = len(ref.enc_hidden), len(ref.dec_hidden)

        def encode(p, x):
            h = x
            for i in range(n_enc):
                h = jax.nn.relu(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
            head = h @ p["enc.head.W"] + p["enc.head.b"]
            return head[:, :Z], head[:, Z:]

        def logits(p, z):
            g = z
            for j in range(n_dec):
                g = jax.nn.relu(g @ p[f"dec.{j}.W"] + p[f"dec.{j}.b"])
            return g @ p["dec.out.W"] + p["dec.out.b"]

        def loss(p, x, eps):
            mu, logvar = encode(p, x)
            z = mu + eps * jnp.exp(0.5 * logvar)
            a = logits(p, z)
            rec = jnp.sum(jax.nn.softplus(a) - x * a)  # Bernoulli, from the logits
            kl = -0.5 * jnp.sum(1 + logvar - mu * mu - jnp.exp(logvar))
            return (rec + kl) / x.shape[0]

        opt = optax.adam(1e-3)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(p, state, x, key):
            key, sub = jax.random.split(key)
            eps = jax.random.normal(sub, (x.shape[0], Z), x.dtype)
            value, grads = jax.value_and_grad(loss)(p, x, eps)
            updates, state = opt.update(grads, state, p)
            return optax.apply_updates(p, updates), state, key, value

        self.params = {k: jnp.asarray(np.array(v)) for k, v in ref.parameters().items()}
        self.state = opt.init(self.params)
        self.key = jax.random.PRNGKey(seed)
        self._step = step
        self.loss = jax.jit(loss)  # (params, x, eps) -> the negative ELBO: for the tests
        self._encode = jax.jit(encode)
        self._decode = jax.jit(lambda p, z: jax.nn.sigmoid(logits(p, z)))
        self._last = None

    def train_step(self, x):
        self.params, self.state, self.key, value = self._step(self.params, self.state, x,
                                                              self.key)
        self._last = value
        return value

    def encode(self, x):
        self._last = self._encode(self.params, x)
        return self._last

    def decode(self, z):
        self._last = self._decode(self.params, z)
        return self._last

    def sync(self):
        if self._last is not None:
            import jax
            jax.block_until_ready(self._last)


def available(name):
    """None when implementation ``name`` can run here, else the reason it cannot."""
    name = _unshard(name)[0]
    if name == "fastvae-cuda":
        from ..backends import cuda_status
        return cuda_status()
    if name in FASTVAE_BF16:
        from ..backends import cpu
        return cpu.bf16_support()
    if name.startswith("torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            return "PyTorch is not installed (pip install 'fastvae[bench]')"
    if name in JAX:
        try:
            import jax  # noqa: F401
            import optax  # noqa: F401
        except ImportError:
            return "JAX is not installed (pip install jax optax)"
    return None


def sharded(name, n):
    """The name of fastvae implementation ``name`` (fastvae-cpu or fastvae-bf16) with each
    batch cut into ``n`` shards."""
    if name not in ("fastvae-cpu", "fastvae-bf16"):
        raise ValueError(f"shards run on the cpu backend only (fastvae-cpu, fastvae-bf16), "
                         f"not {name!r}")
    return f"{name}-{int(n)}shards"


def _unshard(name):
    """(base name, shards) of an implementation name."""
    head, _, tail = name.rpartition("-")
    if head in ("fastvae-cpu", "fastvae-bf16") and tail.endswith("shards") \
            and tail[:-6].isdigit() and int(tail[:-6]) > 1:
        return head, int(tail[:-6])
    return name, 1


def build(name, model, seed=0):
    """The implementation ``name`` (see ALL, or :func:`sharded`) of the model named
    ``model``."""
    base, shards = _unshard(name)
    if shards > 1:
        return FastvaeImpl("cpu", model, seed, "full" if base == "fastvae-cpu" else "bf16",
                           shards=shards)
    if name in FASTVAE:
        return FastvaeImpl(name.split("-", 1)[1], model, seed)
    if name in FASTVAE_BF16:
        return FastvaeImpl("cpu", model, seed, precision="bf16")
    if name in TORCH:
        return TorchImpl(name.split("-", 1)[1], model, seed)
    if name in JAX:
        return JaxImpl(model, seed)
    raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(ALL)}")
