"""Noise: the starting noise x_T, and the SDE solvers' noise samplers.

start      x_T ~ N(0, sigma_T^2 I): one generator per batch (`start_noise`) or per
           sample (`start_states`), and the sample shape a model gives
brownian   the noise samplers users pass to the SDE solvers: `PerSampleNoise` and
           `BrownianTreeNoiseSampler`
"""

from .brownian import BrownianTreeNoiseSampler, PerSampleNoise
from .start import sample_shape, start_noise, start_states

__all__ = [
    "BrownianTreeNoiseSampler",
    "PerSampleNoise",
    "sample_shape",
    "start_noise",
    "start_states",
]
