"""Integer codes shared by every backend's kernels, and the public names they stand for.

Kernels take small integers rather than strings so that Numba and CUDA can branch on them
cheaply; the model turns user-facing names into these codes once, at construction.
"""
ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY_RELU = 2
ACT_TANH = 3
ACT_SIGMOID = 4
ACT_ELU = 5
ACT_SOFTPLUS = 6

#: public activation name -> (code, default alpha); alpha is the leaky slope or ELU scale
ACTIVATIONS = {
    "relu": (ACT_RELU, 0.0),
    "leaky_relu": (ACT_LEAKY_RELU, 0.01),
    "tanh": (ACT_TANH, 0.0),
    "sigmoid": (ACT_SIGMOID, 0.0),
    "elu": (ACT_ELU, 1.0),
    "softplus": (ACT_SOFTPLUS, 0.0),
}

LIK_BERNOULLI = 0
LIK_GAUSSIAN = 1

#: public likelihood name -> code
LIKELIHOODS = {"bernoulli": LIK_BERNOULLI, "gaussian": LIK_GAUSSIAN}


def activation_code(name):
    """Return (code, alpha) for a public activation name, or raise a ValueError listing them."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}"
        ) from None


def likelihood_code(name):
    """Return the code for a public likelihood name, or raise a ValueError listing them."""
    try:
        return LIKELIHOODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown likelihood {name!r}; choose one of: {', '.join(LIKELIHOODS)}"
        ) from None

#: logvar is clamped to this range before exp (sigma from 3e-7 to 2.2e4).  Outside it the
#: sample path's gradient with respect to logvar is zero, and the KL term continues linearly
#: with its slope at the edge, so that the KL still pulls logvar back into the range.
LOGVAR_RANGE = (-30.0, 20.0)

#: learned Gaussian log-scales (obs_scale="learned" | "per_pixel") are softly floored:
#: log sigma = floor + softplus(raw - floor), as in the sigma-VAE (Rybkin et al. 2021), so a
#: constant pixel cannot drive sigma to 0 (sigma >= exp(-6) = 0.0025 in the data's units)
LOGSCALE_FLOOR = -6.0
