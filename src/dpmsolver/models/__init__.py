"""Built-in models: data distributions with exact (closed-form) denoisers."""

from dpmsolver.models.exact import ExactModel, ddpm_linear_schedule, load
from dpmsolver.models.gmm import GaussianMixture, load_digits_gmm

__all__ = ["ExactModel", "GaussianMixture", "ddpm_linear_schedule", "load", "load_digits_gmm"]
