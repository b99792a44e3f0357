"""Built-in models: data distributions with exact denoisers (the digits mixture, and its
class-conditional version for guidance), and small trained networks (noise prediction on
DDPM's schedule, velocity prediction on rectified flow)."""

from .conditional import (
    UNCONDITIONAL,
    ClassConditionalMixture,
    ConditionalNet,
    load_digits_classes,
)
from .digits_net import DigitsNet, load_digits_flow, load_digits_net
from .exact import ExactModel
from .gmm import GaussianMixture, load_digits_gmm
from .registry import FLOW_MODELS, MODELS, load
from .schedules import ddpm_linear_schedule, rectified_flow_schedule
from .tuned import TUNED_NFE, tuned_grid, tuned_solver

__all__ = [
    "FLOW_MODELS",
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
    "load_digits_flow",
    "load_digits_gmm",
    "load_digits_net",
    "rectified_flow_schedule",
    "tuned_grid",
    "tuned_solver",
]
