"""Noise schedules: alpha_t, sigma_t and the half log-SNR lambda_t of a Gaussian diffusion.

A schedule defines q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) for t in [t_min, t_max] and
lambda_t = log(alpha_t / sigma_t), strictly decreasing in t. The solvers only ever need
log alpha_t, sigma_t, lambda_t and the inverse t(lambda); every method here computes them in
float64 (on the device of its input) whatever dtype the caller samples in.

VP schedules (alpha_t^2 + sigma_t^2 = 1) are defined by log alpha_t alone:
sigma_t = sqrt(1 - alpha_t^2), computed as sqrt(-expm1(2 log alpha_t)) to keep digits at small t.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..checks import check_bool, check_float, check_tensor_values

__all__ = [
    "CosineVPSchedule",
    "CustomSchedule",
    "DiscreteVPSchedule",
    "EDMSchedule",
    "FlowSchedule",
    "Level",
    "LinearVPSchedule",
    "NoiseSchedule",
    "VESchedule",
    "VPSchedule",
]

# The reference drops the tail of a discrete table whose lambda falls below this value
# (cosine-beta tables reach lambda ~ -10 at the last index, where alpha_t is ~1e-4 and the
# noise-to-data conversion loses all precision).
CLIPPED_LAMBDA = -5.1


class Level(NamedTuple):
    """One time point with its schedule values, as host float64 numbers.

    model_t is the network's time input `schedule.model_time(t)`, computed with the rest
    when a run is planned so the loop never builds it from a tensor (None: not planned).
    """

    t: float
    alpha: float
    sigma: float
    lambda_: float
    model_t: float | None = None


def _f64(t: Tensor | float) -> Tensor:
    if isinstance(t, Tensor):
        return t.to(torch.float64)
    return torch.tensor(t, dtype=torch.float64)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise linear interpolation through (xp, fp), xp increasing; linear extrapolation
    beyond the ends (the reference extends the outermost segments the same way)."""
    xp = xp.to(x.device)
    fp = fp.to(x.device)
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class NoiseSchedule(ABC):
    """Base class: subclasses give log alpha_t, sigma_t and the inverse of lambda_t.

    Attributes:
        t_min: smallest time the model was trained on (the default end of sampling).
        t_max: largest time (the default start of sampling, x_T ~ N(0, sigma_T^2 I)).
    """

    t_min: float
    t_max: float

    @abstractmethod
    def log_alpha(self, t: Tensor | float) -> Tensor:
        """log alpha_t in float64."""

    @abstractmethod
    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma_t in float64."""

    @abstractmethod
    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        """The time t with lambda_t = lambda_, in float64."""

    def model_time(self, t: Tensor | float) -> Tensor:
        """The time input the network was trained with (default: t itself)."""
        return _f64(t)

    def time_range(self) -> str:
        """The times allowed as t_start / t_end, in words."""
        return f"[{self.t_min:.6g}, {self.t_max:.6g}]"

    def contains(self, t: float) -> bool:
        """Whether t is an allowed start or end time."""
        tol = 1e-12 * max(1.0, abs(self.t_max))
        return self.t_min - tol <= t <= self.t_max + tol

    def alpha(self, t: Tensor | float) -> Tensor:
        """alpha_t in float64."""
        return torch.exp(self.log_alpha(t))

    def lambda_(self, t: Tensor | float) -> Tensor:
        """lambda_t = log alpha_t - log sigma_t in float64."""
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def levels(self, t: Tensor | list[float] | np.ndarray) -> list[Level]:
        """Host float64 values (t, alpha_t, sigma_t, lambda_t, model time) for each time in `t`."""
        tt = torch.as_tensor(t, dtype=torch.float64, device="cpu").reshape(-1)
        cols = zip(
            tt.tolist(),
            self.alpha(tt).tolist(),
            self.sigma(tt).tolist(),
            self.lambda_(tt).tolist(),
            self.model_time(tt).to(torch.float64).reshape(-1).tolist(),
            strict=True,
        )
        return [Level(*c) for c in cols]


class VPSchedule(NoiseSchedule, ABC):
    """Variance-preserving schedules: alpha_t^2 + sigma_t^2 = 1.

    Build one with `VPSchedule.discrete(betas=...)`, `VPSchedule.linear()` or
    `VPSchedule.cosine()`.
    """

    def sigma(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def lambda_(self, t: Tensor | float) -> Tensor:
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    @staticmethod
    def _log_alpha_of_lambda(lambda_: Tensor | float) -> Tensor:
        # alpha^2 = 1 / (1 + e^{-2 lambda}) for VP, written stably for large |lambda|.
        return -0.5 * torch.nn.functional.softplus(-2.0 * _f64(lambda_))

    @staticmethod
    def discrete(
        betas: Tensor | np.ndarray | None = None,
        alphas_cumprod: Tensor | np.ndarray | None = None,
    ) -> DiscreteVPSchedule:
        """A discrete-time DDPM schedule given by `betas` or `alphas_cumprod` (one of them)."""
        return DiscreteVPSchedule(betas=betas, alphas_cumprod=alphas_cumprod)

    @staticmethod
    def linear(beta_0: float = 0.1, beta_1: float = 20.0) -> LinearVPSchedule:
        """The continuous-time linear VP-SDE schedule of score SDE (beta_0 = 0.1, beta_1 = 20)."""
        return LinearVPSchedule(beta_0, beta_1)

    @staticmethod
    def cosine(s: float = 0.008, t_max: float = 0.9946) -> CosineVPSchedule:
        """The continuous-time cosine schedule of improved DDPM, ending at t_max = 0.9946."""
        return CosineVPSchedule(s, t_max)


def _as_f64_vector(name: str, value: Tensor | np.ndarray) -> Tensor:
    if not isinstance(value, Tensor | np.ndarray | list | tuple):
        raise TypeError(f"{name} must be a 1-D tensor or array, got {type(value).__name__}")
    arr = check_tensor_values(name, value)
    if arr.ndim != 1 or arr.numel() < 2:
        raise ValueError(
            f"{name} must be 1-D with at least 2 entries, got shape {tuple(arr.shape)}"
        )
    if not torch.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got non-finite entries")
    return arr


class DiscreteVPSchedule(VPSchedule):
    """Discrete-time VP schedule (DDPM), treated as continuous.

    Step n = 0..N-1 of the table sits at t_n = (n + 1) / N; log alpha_t is interpolated
    piecewise linearly between these points, so t(lambda) is exact. Where lambda at the
    table's tail falls below -5.1 (cosine betas) those entries are dropped, as the reference
    does, and t_max becomes N' / N. The network gets the index-valued time input
    time_input_scale * (t - 1 / N), i.e. n = N t - 1, in [0, N - 1].

    Args:
        betas: the table of betas (give exactly one of `betas` and `alphas_cumprod`), any
            float dtype; used in float64.
        alphas_cumprod: the table of cumulative products of 1 - beta instead of `betas`.
        clip_lambda: drop the tail entries whose lambda is below this (None keeps all).
        respace_after_clip: spread the kept N' entries over [1/N', 1] instead of keeping
            their places (n + 1) / N; the reference does this.
        time_input_scale: defaults to N (the model's own step index). The reference hard-codes
            1000; `dpmsolver.NoiseScheduleVP` reproduces both.
    """

    def __init__(
        self,
        betas: Tensor | np.ndarray | None = None,
        alphas_cumprod: Tensor | np.ndarray | None = None,
        *,
        clip_lambda: float | None = CLIPPED_LAMBDA,
        respace_after_clip: bool = False,
        time_input_scale: float | None = None,
    ) -> None:
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError(
                "give exactly one of betas= or alphas_cumprod= for a discrete schedule"
            )
        if clip_lambda is not None:
            clip_lambda = check_float("clip_lambda", clip_lambda)
        respace_after_clip = check_bool("respace_after_clip", respace_after_clip)
        if time_input_scale is not None:
            time_input_scale = check_float("time_input_scale", time_input_scale, positive=True)
        if betas is not None:
            b = _as_f64_vector("betas", betas)
            if not ((b > 0).all() and (b < 1).all()):
                raise ValueError("betas must lie in (0, 1)")
            log_alphas = 0.5 * torch.cumsum(torch.log1p(-b), 0)
        else:
            a = _as_f64_vector("alphas_cumprod", alphas_cumprod)  # type: ignore[arg-type]
            if not ((a > 0).all() and (a < 1).all()):
                raise ValueError("alphas_cumprod must lie in (0, 1)")
            log_alphas = 0.5 * torch.log(a)
        if not (log_alphas[1:] < log_alphas[:-1]).all():
            raise ValueError("the schedule's alphas_cumprod must be strictly decreasing")
        n_table = log_alphas.numel()
        lambdas = log_alphas - 0.5 * torch.log(-torch.expm1(2.0 * log_alphas))
        if clip_lambda is not None:
            n_drop = int((lambdas < clip_lambda).sum())
            if n_drop > 0:
                log_alphas = log_alphas[:-n_drop]
        n_kept = log_alphas.numel()
        if n_kept < 2:
            raise ValueError(
                f"clip_lambda={clip_lambda!r} keeps {n_kept} of the table's {n_table} entries "
                f"(their lambda lies in [{float(lambdas.min()):.4g}, {float(lambdas.max()):.4g}]); "
                "a schedule needs at least 2"
            )
        self.total_n = n_kept if respace_after_clip else n_table
        self.time_input_scale = (
            float(time_input_scale) if time_input_scale is not None else float(self.total_n)
        )
        self.log_alpha_table = log_alphas
        self.t_table = torch.arange(1, n_kept + 1, dtype=torch.float64) / self.total_n
        self.t_min = 1.0 / self.total_n
        self.t_max = n_kept / self.total_n

    def log_alpha(self, t: Tensor | float) -> Tensor:
        return _interp(_f64(t), self.t_table, self.log_alpha_table)

    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        log_alpha = self._log_alpha_of_lambda(lambda_)
        # log alpha is decreasing in t: flip the table so the abscissae increase.
        return _interp(log_alpha, self.log_alpha_table.flip(0), self.t_table.flip(0))

    def model_time(self, t: Tensor | float) -> Tensor:
        return self.time_input_scale * (_f64(t) - 1.0 / self.total_n)


class _ContinuousVP(VPSchedule, ABC):
    """Continuous-time VP schedules accept any end time in (0, t_max]; t_min is the default."""

    def time_range(self) -> str:
        return f"(0, {self.t_max:.6g}]"

    def contains(self, t: float) -> bool:
        return 0.0 < t <= self.t_max * (1 + 1e-12)


class LinearVPSchedule(_ContinuousVP):
    """Continuous VP-SDE with beta(t) = beta_0 + t (beta_1 - beta_0) on t in [0, 1]:
    log alpha_t = -(beta_1 - beta_0) t^2 / 4 - beta_0 t / 2. The default end time is 1e-3."""

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0) -> None:
        beta_0, beta_1 = check_float("beta_0", beta_0), check_float("beta_1", beta_1)
        if not 0 <= beta_0 < beta_1:
            raise ValueError(f"need 0 <= beta_0 < beta_1, got beta_0={beta_0!r}, beta_1={beta_1!r}")
        self.beta_0 = float(beta_0)
        self.beta_1 = float(beta_1)
        self.t_min = 1e-3
        self.t_max = 1.0

    def log_alpha(self, t: Tensor | float) -> Tensor:
        t = _f64(t)
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        # Solve (b1 - b0) t^2 / 4 + b0 t / 2 + log alpha = 0 for t >= 0, in the form that
        # does not cancel when log alpha is tiny.
        neg_log_alpha = -self._log_alpha_of_lambda(lambda_)
        half_b0 = 0.5 * self.beta_0
        disc = half_b0**2 + (self.beta_1 - self.beta_0) * neg_log_alpha
        return 2.0 * neg_log_alpha / (half_b0 + torch.sqrt(disc))


class CosineVPSchedule(_ContinuousVP):
    """Continuous cosine schedule (improved DDPM): alpha_t = cos((t + s)/(1 + s) pi/2) / alpha_0.

    It ends at t_max = 0.9946 (lambda ~ -4.8) rather than 1, where alpha_t -> 0 and the
    noise-to-data conversion breaks down; the default end time is 1e-3.
    """

    def __init__(self, s: float = 0.008, t_max: float = 0.9946) -> None:
        s, t_max = check_float("s", s), check_float("t_max", t_max)
        if not (0 < s < 1):
            raise ValueError(f"s must lie in (0, 1), got {s!r}")
        if not (0 < t_max < 1):
            raise ValueError(f"t_max must lie in (0, 1), got {t_max!r}")
        self.s = float(s)
        self.log_alpha_0 = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))
        self.t_min = 1e-3
        self.t_max = float(t_max)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        angle = (_f64(t) + self.s) / (1.0 + self.s) * (math.pi / 2.0)
        return torch.log(torch.cos(angle)) - self.log_alpha_0

    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        log_alpha = self._log_alpha_of_lambda(lambda_)
        angle = torch.arccos(torch.exp(log_alpha + self.log_alpha_0))
        return angle * 2.0 * (1.0 + self.s) / math.pi - self.s


class VESchedule(NoiseSchedule):
    """Variance-exploding schedule in k-diffusion / EDM scaling: x_t = x_0 + sigma eps.

    Time is sigma itself: alpha_t = 1, sigma_t = t, lambda_t = -log t, t(lambda) = e^{-lambda}.
    Any sigma > 0 is allowed as a start or end; sigma_min / sigma_max are the defaults. A VP
    model is one of these after x -> x / alpha_t and sigma -> sigma_t / alpha_t.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        sigma_min = check_float("sigma_min", sigma_min)
        sigma_max = check_float("sigma_max", sigma_max)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max; got sigma_min={sigma_min!r}, "
                f"sigma_max={sigma_max!r}"
            )
        self.t_min = float(sigma_min)
        self.t_max = float(sigma_max)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        return torch.zeros_like(_f64(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        return _f64(t)

    def lambda_(self, t: Tensor | float) -> Tensor:
        return -torch.log(_f64(t))

    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        return torch.exp(-_f64(lambda_))

    def time_range(self) -> str:
        return "(0, inf)"

    def contains(self, t: float) -> bool:
        return 0.0 < t < math.inf


class EDMSchedule(VESchedule):
    """EDM (Karras et al. 2022): VE scaling with sigma in [0.002, 80]; time is sigma, and the
    network (an EDM denoiser D(x; sigma), prediction='x0') gets sigma as its time input."""


class FlowSchedule(NoiseSchedule):
    """Flow matching / rectified flow: x_t = (1 - sigma_t) x_0 + sigma_t eps (alpha = 1 - sigma).

    With shift s (SD3-style resolution shift), sigma_t = s t / (1 + (s - 1) t) for the
    sampler's time t in (0, 1); s = 1 gives sigma_t = t. Time grids are spaced in t, so the
    shift moves steps towards high noise. The network gets time_scale * sigma_t (SD3 and
    FLUX-like models: time_scale = 1000). The default start is t_max = 0.999, where
    x_T ~ N(0, I) differs from pure noise by 1e-3. t_max = 1 starts from pure noise
    (alpha = 0, lambda = -inf), as diffusers' flow-matching schedulers do: the data form on
    grids spaced in t can start there (no finite difference in lambda reaches that point,
    so its output enters the first step only); the noise form and grids spaced in lambda
    cannot.
    """

    def __init__(
        self,
        shift: float = 1.0,
        t_min: float = 1e-3,
        t_max: float = 0.999,
        time_scale: float = 1.0,
    ) -> None:
        shift, time_scale = check_float("shift", shift), check_float("time_scale", time_scale)
        t_min, t_max = check_float("t_min", t_min), check_float("t_max", t_max)
        if not shift > 0:
            raise ValueError(f"shift must be a finite number > 0; got {shift!r}")
        if not 0 < t_min < t_max <= 1:
            raise ValueError(f"need 0 < t_min < t_max <= 1; got t_min={t_min!r}, t_max={t_max!r}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be a finite number > 0; got {time_scale!r}")
        self.shift = float(shift)
        self.t_min = float(t_min)
        self.t_max = float(t_max)
        self.time_scale = float(time_scale)

    def sigma(self, t: Tensor | float) -> Tensor:
        t = _f64(t)
        return self.shift * t / (1.0 + (self.shift - 1.0) * t)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        return torch.log1p(-self.sigma(t))

    def lambda_(self, t: Tensor | float) -> Tensor:
        sigma = self.sigma(t)
        return torch.log1p(-sigma) - torch.log(sigma)

    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        sigma = torch.sigmoid(-_f64(lambda_))
        return sigma / (self.shift - (self.shift - 1.0) * sigma)

    def model_time(self, t: Tensor | float) -> Tensor:
        return self.time_scale * self.sigma(t)

    def contains(self, t: float) -> bool:
        return 0.0 < t < 1.0 or t == 1.0 == self.t_max


def _on_tensors(name: str, fn: Callable[..., object], t: Tensor) -> Callable[[Tensor], Tensor]:
    """`fn` as a function of a float64 tensor of times returning one of its shape: `fn`
    itself if it is one, else `fn` applied to each time if it maps one float to a number
    (e.g. math.cos). Checked on the times `t`; anything else is a TypeError/ValueError
    naming `name`."""
    try:
        out = fn(t)
    except (TypeError, ValueError, RuntimeError) as error:
        out = error
    if isinstance(out, Tensor):
        if not out.is_floating_point():
            raise TypeError(f"{name}(t) must return a floating tensor; got {out.dtype}")
        if out.shape != t.shape:
            raise ValueError(
                f"{name}(t) must return a tensor of t's shape {tuple(t.shape)} (one value per "
                f"time); got shape {tuple(out.shape)}"
            )
        return fn  # type: ignore[return-value]
    try:
        one = fn(float(t[0]))
    except Exception:  # not a function of one float either: report the tensor call
        one = None
    if isinstance(one, Tensor) and one.numel() == 1:
        one = float(one)
    if isinstance(one, bool) or not isinstance(one, numbers.Real):
        got = f"raised {out!r}" if isinstance(out, Exception) else f"returned {type(out).__name__}"
        raise TypeError(
            f"{name}(t) must return a floating tensor of t's shape for a float64 tensor of "
            f"times (or a number for one float time); on a tensor it {got}"
        )

    def each(times: Tensor) -> Tensor:
        values = [float(fn(v)) for v in times.reshape(-1).tolist()]  # type: ignore[arg-type]
        return torch.tensor(values, dtype=torch.float64).reshape(times.shape).to(times.device)

    return each


class CustomSchedule(NoiseSchedule):
    """A schedule from two callables alpha(t), sigma(t) on [t_min, t_max], with t(lambda)
    found by bisection. `CustomSchedule.from_table` builds one from sampled values. lambda
    must be strictly decreasing; this is checked on a 4097-point grid.

    The callables take a float64 tensor of times and return one of its shape (torch
    functions such as `torch.cos`); a function of one float (such as `math.cos`) is
    accepted too and applied to each time in turn (slower, but only plans call it).
    """

    _BISECTIONS = 64

    def __init__(
        self,
        alpha: Callable[[Tensor], Tensor],
        sigma: Callable[[Tensor], Tensor],
        t_min: float,
        t_max: float,
        model_time: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not (callable(alpha) and callable(sigma)):
            raise TypeError("alpha and sigma must be callables of a float64 tensor")
        t_min, t_max = check_float("t_min", t_min), check_float("t_max", t_max)
        if not t_min < t_max:
            raise ValueError(f"need t_min < t_max; got {t_min!r}, {t_max!r}")
        if model_time is not None and not callable(model_time):
            raise TypeError(
                f"model_time must be a callable or None; got {type(model_time).__name__}"
            )
        self.t_min, self.t_max = float(t_min), float(t_max)
        t = torch.linspace(self.t_min, self.t_max, 4097, dtype=torch.float64)
        self._alpha = _on_tensors("alpha", alpha, t)
        self._sigma = _on_tensors("sigma", sigma, t)
        self._model_time = None if model_time is None else _on_tensors("model_time", model_time, t)
        a, s = self.alpha(t), self.sigma(t)
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(s).all())):
            bad = float(t[~(torch.isfinite(a) & torch.isfinite(s))][0])
            raise ValueError(f"the schedule returned NaN or Inf at t={bad:.6g}")
        if not (bool((a > 0).all()) and bool((s > 0).all())):
            bad = float(t[~((a > 0) & (s > 0))][0])
            raise ValueError(
                f"alpha(t) and sigma(t) must be > 0 on [t_min, t_max]; not at t={bad:.6g}"
            )
        lam = torch.log(a) - torch.log(s)
        if not bool((lam[1:] < lam[:-1]).all()):
            i = int((lam[1:] >= lam[:-1]).nonzero()[0, 0])
            raise ValueError(
                f"lambda = log(alpha/sigma) must be strictly decreasing in t; it is not near "
                f"t={float(t[i]):.6g}"
            )

    @classmethod
    def from_table(
        cls, t: Tensor | np.ndarray, alpha: Tensor | np.ndarray, sigma: Tensor | np.ndarray
    ) -> CustomSchedule:
        """Interpolate log alpha and log sigma piecewise linearly between sampled times."""
        tt = _as_f64_vector("t", t)
        values = {"alpha": _as_f64_vector("alpha", alpha), "sigma": _as_f64_vector("sigma", sigma)}
        for name, v in values.items():
            if not bool((v > 0).all()):
                i = int((v <= 0).nonzero()[0, 0])
                raise ValueError(f"{name} must be > 0; entry {i} is {float(v[i])!r}")
        la, ls = torch.log(values["alpha"]), torch.log(values["sigma"])
        if not (tt.shape == la.shape == ls.shape):
            raise ValueError("t, alpha and sigma must have the same length")
        if not bool((tt[1:] > tt[:-1]).all()):
            raise ValueError("t must be strictly increasing")
        return cls(
            lambda x: torch.exp(_interp(x, tt, la)),
            lambda x: torch.exp(_interp(x, tt, ls)),
            float(tt[0]),
            float(tt[-1]),
        )

    def alpha(self, t: Tensor | float) -> Tensor:
        return self._alpha(_f64(t)).to(torch.float64)

    def sigma(self, t: Tensor | float) -> Tensor:
        return self._sigma(_f64(t)).to(torch.float64)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        return torch.log(self.alpha(t))

    def model_time(self, t: Tensor | float) -> Tensor:
        return self._model_time(_f64(t)) if self._model_time is not None else _f64(t)

    def inverse_lambda(self, lambda_: Tensor | float) -> Tensor:
        target = _f64(lambda_)
        lo = torch.full_like(target, self.t_min)
        hi = torch.full_like(target, self.t_max)
        for _ in range(self._BISECTIONS):  # lambda decreases in t
            mid = 0.5 * (lo + hi)
            above = self.lambda_(mid) > target
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)
