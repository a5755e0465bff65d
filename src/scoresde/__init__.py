"""scoresde: score-based generative modelling through SDEs (Song et al., ICLR 2021)."""

from .inverse import solve_inverse
from .likelihood import (
    bits_per_dim,
    discrete_bits_per_dim,
    discrete_log_likelihood,
    log_likelihood,
    uniform_dequantize,
)
from .losses import dsm_loss, get_score_fn
from .sampling import (
    CORRECTORS,
    ODE_METHODS,
    PREDICTORS,
    SDE_METHODS,
    ode_sample,
    pc_sample,
    sde_sample,
    tweedie_denoise,
)
from .sde import SDE, SDES, VESDE, VPSDE, SubVPSDE, make_sde

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "SDES",
    "CORRECTORS",
    "ODE_METHODS",
    "PREDICTORS",
    "SDE_METHODS",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "discrete_bits_per_dim",
    "discrete_log_likelihood",
    "dsm_loss",
    "get_score_fn",
    "log_likelihood",
    "make_sde",
    "ode_sample",
    "pc_sample",
    "solve_inverse",
    "sde_sample",
    "tweedie_denoise",
    "uniform_dequantize",
]
