"""``fastvae.model``: where the VAE lived before the package was grouped by job (it is
:mod:`fastvae.vae` now, over the engine of :mod:`fastvae.core.model`).  Pickles made then
name ``fastvae.model.VAE``, so this name stays and they load; new code writes
``fastvae.VAE`` and ``fastvae.load``."""
from .vae import VAE, load  # noqa: F401
