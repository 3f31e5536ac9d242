"""Optimizers over the model's flat parameter buffer: one fused kernel call per step.

Semantics follow ``torch.optim`` (Adam, AdamW, SGD with dampening 0) so that training runs
compare step for step with PyTorch.  Optional clipping by global gradient norm scales the
gradient inside the same kernel (the norm itself is one extra reduction pass).
"""
from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from ..core.cache import DeviceFloat
from ..core.validate import boolean, real


class Optimizer:
    """Base class: holds the model, the step count and the hyperparameters.

    Subclasses declare their hyperparameters with defaults in ``__init__``'s signature and
    validate them in :meth:`checked`, which needs no model: ``fit`` uses it to check a
    configuration before anything changes.
    """

    def __init__(self, model, **hyper):
        if not (hasattr(model, "flat_params") and hasattr(model, "kernels")):
            raise TypeError(f"an optimizer needs the fastvae.VAE it updates, got {model!r}")
        self.model = model
        for k, v in self.checked(**hyper).items():
            setattr(self, k, v)
        self.step_count = 0
        self.last_grad_norm = None  # set when clipping is on

    @classmethod
    def defaults(cls):
        """{hyperparameter: default} from the constructor's signature."""
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "model")}

    @classmethod
    def checked(cls, lr, weight_decay, clip_norm, **rest):
        """The hyperparameters, validated and normalised (ValueError naming the bad one)."""
        if isinstance(clip_norm, numbers.Real) and not isinstance(clip_norm, bool) \
                and clip_norm == math.inf:
            clip_norm = None  # as in fit: an infinite norm never clips
        return {"lr": real(lr, "lr", above=0),
                "weight_decay": real(weight_decay, "weight_decay", at_least=0),
                "clip_norm": None if clip_norm is None else real(clip_norm, "clip_norm",
                                                                 above=0),
                **cls._checked_rest(**rest)}

    @classmethod
    def _checked_rest(cls):
        return {}

    def _flat_grads(self, grads):
        """The flat gradient buffer for ``grads`` (the model's, or packed from a mapping)."""
        m = self.model
        if grads is None or getattr(grads, "flat", None) is m.flat_grads:
            return m.flat_grads
        names = set(m.parameters())
        if set(grads) != names:
            missing, extra = names - set(grads), set(grads) - names
            raise ValueError(f"grads do not match the model's parameters (missing: "
                             f"{sorted(missing)}, unexpected: {sorted(extra)})")
        target = m.grads
        for k, v in grads.items():
            if tuple(v.shape) != tuple(target[k].shape):
                raise ValueError(f"grads[{k!r}] has shape {tuple(v.shape)}, expected "
                                 f"{tuple(target[k].shape)}")
            target[k][...] = v
        return m.flat_grads

    def _grad_scale(self, g):
        if self.clip_norm is None:
            return 1.0
        bk = self.model.kernels
        if bk.DEVICE:
            # the norm and the scale stay on the device: nothing waits.  A non-finite norm
            # makes the scale NaN, and the update kernel then changes nothing.
            if getattr(self, "_clip_bufs", None) is None:  # (made on the model's GPU: step)
                # norm: [this step's norm, how many updates a non-finite norm skipped]
                self._clip_bufs = (bk.xp.ones(1, dtype="float64"), bk.xp.zeros(2, dtype="float64"))
                self._skipped_seen = 0
            scale, norm = self._clip_bufs
            bk.clip_scale(scale, norm, g, self.clip_norm)
            step = self.step_count + 1

            def read():  # the buffer is the next step's too: a late read would lie
                if self.step_count != step:
                    raise RuntimeError(
                        f"last_grad_norm of step {step} was not read before step "
                        f"{self.step_count} overwrote it on the GPU; read it (float(...)) "
                        "before the next step")
                return bk.to_numpy(norm)[0]
            self.last_grad_norm = DeviceFloat(read)
            return scale
        if getattr(self, "_host_clip_bufs", None) is None:
            self._host_clip_bufs = (np.ones(1), np.zeros(2))  # as _clip_bufs, in host memory
        scale, norm = self._host_clip_bufs
        bk.clip_scale(scale, norm, g, self.clip_norm)
        self.last_grad_norm = float(norm[0])
        if not math.isfinite(self.last_grad_norm):
            raise FloatingPointError(f"gradient norm is {self.last_grad_norm} at step "
                                     f"{self.step_count + 1}; parameters left unchanged")
        return float(scale[0])

    def skipped_updates(self):
        """On a GPU with clipping: how many updates a non-finite gradient norm skipped since
        the last call (reads the device; 0 elsewhere, where such a step raises at once)."""
        bufs = getattr(self, "_clip_bufs", None)
        if bufs is None:
            return 0
        total = int(self.model.kernels.to_numpy(bufs[1])[1])
        new, self._skipped_seen = total - self._skipped_seen, total
        return new

    def step(self, grads=None):
        """Apply one update from ``grads`` (what ``model.backward`` returned; None means the
        model's current gradient buffer)."""
        with self.model.on_device():
            g = self._flat_grads(grads)
            scale = self._grad_scale(g)
            self.step_count += 1
            self._update(g, scale)

    def config(self):
        """{'name': ..., hyperparameters...}: what :func:`make_optimizer` rebuilds it from."""
        return {"name": self.name, **{k: getattr(self, k) for k in self.defaults()}}

    def state_dict(self):
        """Host copies of the optimizer's state (for checkpoints)."""
        bk = self.model.kernels
        st = {"step_count": self.step_count}
        for k, v in self._buffers().items():
            st[k] = bk.to_numpy(v).copy()
        return st

    def load_state_dict(self, st):
        self.step_count = int(st["step_count"])
        with self.model.on_device():
            for k, v in self._buffers().items():
                v[...] = self.model.kernels.asarray(st[k])


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam.

    ``opt = Adam(model, lr=1e-3)``; ``opt.step(grads)``.
    """

    decoupled = False
    name = "adam"

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 clip_norm=None):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm)
        xp, shape, dt = model.kernels.xp, model.flat_params.shape, model.dtype
        with model.on_device():
            self.m = xp.zeros(shape, dtype=dt)
            self.v = xp.zeros(shape, dtype=dt)

    @classmethod
    def _checked_rest(cls, betas, eps):
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from None
        return {"betas": tuple(real(b, f"betas ({betas!r})", at_least=0, below=1)
                               for b in (b1, b2)),
                "eps": real(eps, "eps", above=0)}

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def _update(self, g, scale):
        m = self.model
        m.kernels.adam_step(m.flat_params, self.m, self.v, g, self.lr, self.betas[0],
                        self.betas[1], self.eps, self.weight_decay, self.decoupled,
                        self.step_count, scale)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): decoupled weight decay p *= 1 - lr*wd, as torch.optim.AdamW."""

    decoupled = True
    name = "adamw"

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 clip_norm=None):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm)


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD."""

    name = "sgd"

    def __init__(self, model, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0,
                 clip_norm=None):
        super().__init__(model, lr=lr, momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, clip_norm=clip_norm)
        with model.on_device():
            self.buf = model.kernels.xp.zeros(model.flat_params.shape, dtype=model.dtype)

    @classmethod
    def _checked_rest(cls, momentum, nesterov):
        momentum = real(momentum, "momentum", at_least=0, below=1)
        nesterov = boolean(nesterov, "nesterov")
        if nesterov and momentum == 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={momentum!r}")
        return {"momentum": momentum, "nesterov": nesterov}

    def _buffers(self):
        return {"buf": self.buf}

    def _update(self, g, scale):
        m = self.model
        m.kernels.sgd_step(m.flat_params, self.buf, g, self.lr, self.momentum, self.nesterov,
                       self.weight_decay, self.step_count, scale)


OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD}


def make_optimizer(name, model, **kw):
    """Build an optimizer by name ('adam' | 'adamw' | 'sgd'); extra keywords are its
    hyperparameters (``lr``, ``betas``, ``momentum``, ...)."""
    kw.pop("name", None)
    try:
        cls = OPTIMIZERS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}") from None
    return cls(model, **kw)
