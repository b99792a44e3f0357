"""Built-in models: data distributions with exact denoisers, and a small trained network."""

from dpmsolver.models.digits_net import DigitsNet, load_digits_net
from dpmsolver.models.exact import MODELS, ExactModel, ddpm_linear_schedule, load
from dpmsolver.models.gmm import GaussianMixture, load_digits_gmm
from dpmsolver.models.tuned import TUNED_NFE, tuned_grid

__all__ = [
    "MODELS",
    "TUNED_NFE",
    "DigitsNet",
    "ExactModel",
    "GaussianMixture",
    "ddpm_linear_schedule",
    "load",
    "load_digits_gmm",
    "load_digits_net",
    "tuned_grid",
]
