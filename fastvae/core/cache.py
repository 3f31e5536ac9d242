"""What a forward pass hands to backward: the :class:`Cache`, and the gradients backward
returns (:class:`Grads`)."""
from __future__ import annotations


class Cache:
    """What one forward pass saved for backward; returned by :meth:`VAE.forward`.

    The arrays live in the model's workspace and are overwritten by the next forward pass
    on a batch of the same shape and kind (training or loss-only): copy what you want to
    keep.  ``backward`` refuses a stale cache, and one from a loss-only forward
    (``grad=False``).  Shapes (B batch rows, L samples, Z latent, D data):

    x (B, D); mu, logvar, sigma (B, Z) [logvar clamped]; eps, z (L, B, Z);
    out (L, B, D) decoder logits (Bernoulli) or means (Gaussian);
    recon (B,) -log p(x|z) averaged over the L samples; kl (B,) KL(q(z|x) || p(z));
    loss: the training objective (beta, free bits applied; or the IWAE bound, for the
    importance-weighted objectives), a float; objective: which one;
    neg_elbo: the plain negative ELBO (recon + kl) averaged over the batch, a float;
    recon_mean, kl_mean: its two terms, floats; grad: whether backward may use it;
    values(): (loss, recon_mean, kl_mean) at once; workspace: the
    :class:`~fastvae.core.workspace.Workspace` holding every buffer of the pass (for the
    estimates, which read its per-row buffers).

    On the cuda backend the four numbers stay on the GPU until one of them is first read
    (reading waits for the step to finish); read them before the next forward pass of the
    same shape.  On the CPU backends they are read at once.
    """

    __slots__ = ("x", "mu", "logvar", "sigma", "eps", "z", "out", "recon", "kl", "grad",
                 "objective",
                 "workspace", "_stats", "_values", "_generation", "_bk")

    def __init__(self, ws, x, recon, bk):
        L, B = ws.L, ws.B
        self.x = x
        self.mu, self.logvar, self.sigma = ws.mu, ws.logvar, ws.sigma
        self.eps = ws.eps.reshape(L, B, -1)
        self.z = ws.z.reshape(L, B, -1)
        self.out = ws.out.reshape(L, B, -1)
        self.recon, self.kl, self.grad = recon, ws.kl, ws.train
        self.objective = ws.objective
        self._stats, self._values, self._bk = ws.stats, None, bk
        self.workspace, self._generation = ws, ws.generation

    @property
    def stale(self):
        """True once a later forward pass has overwritten this cache's buffers."""
        return self.workspace.generation != self._generation

    def values(self):
        """(loss, recon_mean, kl_mean) as Python floats, fetched once; on a GPU the input
        check of the pass is read with them (and a bad input raises here)."""
        if self._values is None:
            if self.stale:
                raise RuntimeError(
                    "this cache's loss was overwritten by a later forward pass before it was "
                    "read; read cache.loss (or recon_mean, kl_mean) before the next forward "
                    "pass of the same batch shape")
            if self.workspace.checking:
                from .validate import raise_bad_data
                raise_bad_data(*(int(v) for v in self._bk.to_numpy(self.workspace.bad)))
            loss, recon, kl = self._bk.to_numpy(self._stats).tolist()
            self._values = (loss, recon, kl)
        return self._values

    @property
    def loss(self):
        return self.values()[0]

    @property
    def recon_mean(self):
        return self.values()[1]

    @property
    def kl_mean(self):
        return self.values()[2]

    @property
    def neg_elbo(self):
        v = self.values()
        return v[1] + v[2]


class Grads(dict):
    """Gradient tensors by parameter name (views into ``flat``, overwritten by the next
    backward pass).  ``flat`` is the whole gradient buffer, laid out like the parameters."""

    def __init__(self, named, flat):
        super().__init__(named)
        self.flat = flat


class DeviceFloat:
    """A number still on the device: read (once) the first time it is used as a number.

    ``float(v)``, formatting, comparisons and arithmetic read it; until then nothing waits
    for the GPU.  What :meth:`fastvae.VAE.train_step` returns on the cuda backend, and an
    optimizer's ``last_grad_norm`` there."""

    __slots__ = ("_fetch", "_value")

    def __init__(self, fetch):
        self._fetch, self._value = fetch, None

    def __float__(self):
        if self._value is None:
            self._value = float(self._fetch())
        return self._value

    def __repr__(self):
        return repr(float(self))

    def __format__(self, spec):
        return format(float(self), spec)

    def __bool__(self):
        return bool(float(self))

    def __hash__(self):
        return hash(float(self))

    def __index__(self):
        raise TypeError("a DeviceFloat is not an integer")


def _binary(op):
    def method(self, other):
        return op(float(self), float(other))
    return method


def _reflected(op):
    def method(self, other):
        return op(float(other), float(self))
    return method


import operator as _op  # noqa: E402

for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "lt", "le", "eq",
              "ne", "gt", "ge"):
    setattr(DeviceFloat, f"__{_name}__", _binary(getattr(_op, _name)))
for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"):
    setattr(DeviceFloat, f"__r{_name}__", _reflected(getattr(_op, _name)))
DeviceFloat.__neg__ = lambda self: -float(self)
DeviceFloat.__abs__ = lambda self: abs(float(self))
DeviceFloat.__round__ = lambda self, n=None: round(float(self), n)
