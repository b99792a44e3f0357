"""Built-in models: data distributions with exact denoisers (the digits mixture, and its
class-conditional version for guidance), and a small trained network."""

from .conditional import (
    UNCONDITIONAL,
    ClassConditionalMixture,
    ConditionalNet,
    load_digits_classes,
)
from .digits_net import DigitsNet, load_digits_net
from .exact import ExactModel
from .gmm import GaussianMixture, load_digits_gmm
from .registry import MODELS, load
from .schedules import ddpm_linear_schedule
from .tuned import TUNED_NFE, tuned_grid, tuned_solver

__all__ = [
    "MODELS",
    "TUNED_NFE",
    "UNCONDITIONAL",
    "ClassConditionalMixture",
    "ConditionalNet",
    "DigitsNet",
    "ExactModel",
    "GaussianMixture",
    "ddpm_linear_schedule",
    "load",
    "load_digits_classes",
    "load_digits_gmm",
    "load_digits_net",
    "tuned_grid",
    "tuned_solver",
]
