"""Reference data distributions with exact (closed-form) denoisers."""

from dpmsolver.models.gmm import GaussianMixture, load_digits_gmm

__all__ = ["GaussianMixture", "load_digits_gmm"]
