"""Model adapter: a user's network plus guidance, seen by the solvers as eps_pred or x0_pred.

Every parameterisation is an affine function of x_t and the network output, with
x_t = alpha_t x0 + sigma_t eps:
    noise:  eps = out
    x0:     x0 = out
    v:      v = alpha_t eps - sigma_t x0           (Salimans & Ho, 2022)
    score:  score = grad log p_t(x_t) = -eps / sigma_t
    flow:   velocity v = eps - x0 (flow matching / rectified flow, d x_t / d sigma_t when
            alpha_t = 1 - sigma_t)
Classifier-free guidance mixes two outputs linearly, so it is applied to the raw outputs
(one network call on the doubled batch [uncond, cond]); classifier guidance adds
-scale * sigma_t * grad log p(c | x_t) to eps (Dhariwal & Nichol, 2021).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from ..checks import check_choice, check_float, check_shape
from .schedules import Level, NoiseSchedule

__all__ = [
    "ClassifierFree",
    "ClassifierGuidance",
    "Denoiser",
    "DiffusionModel",
    "DynamicThresholding",
    "ModelOutputError",
    "Prediction",
    "Target",
    "check_model",
    "corrected_x0",
    "to_data",
    "to_noise",
]

Prediction = Literal["noise", "x0", "v", "score", "flow"]
Target = Literal["noise", "data"]
PREDICTIONS: tuple[str, ...] = ("noise", "x0", "v", "score", "flow")

Scalar = float | Tensor


def _check_conversion(out: Tensor, x: Tensor, alpha: Scalar, sigma: Scalar) -> None:
    """The arguments of `to_noise` / `to_data`: tensors of one shape, and alpha, sigma as
    numbers or tensors (host checks of types and shapes only)."""
    if not isinstance(out, Tensor) or not isinstance(x, Tensor) or out.shape != x.shape:
        shapes = [tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for v in (out, x)]
        raise ValueError(
            f"out and x must be tensors of one shape (a network output and its input); got "
            f"{shapes[0]} and {shapes[1]}"
        )
    for name, v in (("alpha", alpha), ("sigma", sigma)):
        if isinstance(v, bool) or not isinstance(v, Tensor | numbers.Real):
            raise TypeError(f"{name} must be a number or a tensor; got {type(v).__name__} {v!r}")


def to_noise(out: Tensor, x: Tensor, alpha: Scalar, sigma: Scalar, prediction: str) -> Tensor:
    """eps_pred from a network output of kind `prediction` at (alpha_t, sigma_t)."""
    _check_conversion(out, x, alpha, sigma)
    if prediction == "noise":
        return out
    if prediction == "x0":
        if isinstance(alpha, float) and isinstance(sigma, float):
            return torch.add(x, out, alpha=-alpha).mul_(1.0 / sigma)  # two passes, not three
        return (x - alpha * out) / sigma
    if prediction == "v":
        # eps = (sigma x + alpha v) / (alpha^2 + sigma^2); the denominator is 1 for VP.
        return (sigma * x + alpha * out) / (alpha * alpha + sigma * sigma)
    if prediction == "score":
        return -sigma * out
    if prediction == "flow":
        # x + alpha v = (alpha + sigma) eps for v = eps - x0.
        return (x + alpha * out) / (alpha + sigma)
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def to_data(out: Tensor, x: Tensor, alpha: Scalar, sigma: Scalar, prediction: str) -> Tensor:
    """x0_pred from a network output of kind `prediction` at (alpha_t, sigma_t)."""
    _check_conversion(out, x, alpha, sigma)
    if prediction == "noise":
        if isinstance(alpha, float) and isinstance(sigma, float):
            return torch.add(x, out, alpha=-sigma).mul_(1.0 / alpha)  # two passes, not three
        return (x - sigma * out) / alpha
    if prediction == "x0":
        return out
    if prediction == "v":
        return (alpha * x - sigma * out) / (alpha * alpha + sigma * sigma)
    if prediction == "score":
        return (x + (sigma * sigma) * out) / alpha
    if prediction == "flow":
        return (x - sigma * out) / (alpha + sigma)
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


class DiffusionModel(Protocol):
    """What the solvers call: the model's noise or data prediction at one noise level.

    A model may also say what its time is called in error messages (`time_name`, default
    "t"; the k-diffusion face's models call it "sigma").
    """

    schedule: NoiseSchedule

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor: ...


def check_model(model: object, name: str = "model") -> DiffusionModel:
    """`model` if it is a DiffusionModel (callable, with a NoiseSchedule as `.schedule`),
    else a TypeError that says how to make one from a network."""
    schedule = getattr(model, "schedule", None)
    if not callable(model) or not isinstance(schedule, NoiseSchedule):
        what = type(model).__name__
        if callable(model) and schedule is None:
            what += " without a .schedule"
        raise TypeError(
            f"{name} must be a DiffusionModel: a dpmsolver.Denoiser around your network "
            "(Denoiser(net, schedule, prediction=...)) or an object with a NoiseSchedule as "
            f".schedule, called as {name}(x, level, target); got {what}"
        )
    ends = [getattr(schedule, end, None) for end in ("t_min", "t_max")]
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in ends) or not (
        ends[0] < ends[1]  # type: ignore[operator]
    ):
        raise TypeError(
            f"{name}.schedule ({type(schedule).__name__}) must set its time range as finite "
            f"numbers t_min < t_max; got t_min={ends[0]!r}, t_max={ends[1]!r}"
        )
    return model  # type: ignore[return-value]


def _guidance_scale(owner: str, scale: Any) -> float | Tensor:
    """A guidance scale, checked: a finite real number, or a 1-D floating tensor of finite
    per-sample scales (one read of the tensor, here, not in the sampling loop)."""
    if isinstance(scale, Tensor):
        if scale.device.type == "meta":
            raise ValueError(f"{owner} scale is a meta tensor (a shape without data)")
        if scale.dim() == 0:
            return _guidance_scale(owner, float(scale))
        if scale.dim() != 1 or not scale.is_floating_point() or scale.device.type == "meta":
            raise TypeError(
                f"{owner} scale must be a number or a 1-D floating tensor of per-sample scales "
                f"of shape (batch,); got a {scale.dtype} tensor of shape {tuple(scale.shape)}"
                + (" on the meta device" if scale.device.type == "meta" else "")
            )
        if not bool(torch.isfinite(scale).all()):
            raise ValueError(f"{owner} scale must be finite; got {scale.tolist()}")
        return scale
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(
            f"{owner} scale must be a number (or a tensor of per-sample scales); got "
            f"{type(scale).__name__} {scale!r}"
        )
    if not math.isfinite(scale):
        raise ValueError(f"{owner} scale must be a finite number; got {scale!r}")
    return float(scale)


def _is_one(scale: float | Tensor) -> bool:
    """Whether a (checked) guidance scale is 1 for every sample."""
    if isinstance(scale, Tensor):
        return bool((scale == 1).all())
    return scale == 1.0


def _per_sample_scale(scale: float | Tensor, x: Tensor) -> float | Tensor:
    """A per-sample scale as a (batch, 1, ..., 1) tensor in x's dtype and device."""
    if not isinstance(scale, Tensor):
        return scale
    batch = x.shape[0]
    if scale.shape[0] not in (1, batch):
        raise ValueError(
            f"the guidance scale has {scale.shape[0]} per-sample values but x has batch "
            f"{batch}: give one scale per sample (or a number for all)"
        )
    return scale.to(x.device, x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class ClassifierFree:
    """Classifier-free guidance: out = out_uncond + scale * (out_cond - out_uncond).

    The network is called as net(x, t_input, cond, **model_kwargs) once on the doubled batch.
    With scale == 1 it is called once on `cond` alone (uncond may then be None; a scale
    other than 1 without uncond is a ValueError). A tensor cond or uncond has x's batch,
    or a batch of 1 that is used for every sample. `scale` is a finite number, or a 1-D
    tensor of per-sample scales (batch,).
    """

    scale: float | Tensor
    cond: Any
    uncond: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _guidance_scale("ClassifierFree", self.scale))


@dataclass(frozen=True)
class ClassifierGuidance:
    """Classifier guidance: eps <- eps - scale * sigma_t * grad_x log p(cond | x_t).

    `classifier(x, t_input, cond, **classifier_kwargs)` returns log-probabilities (B,) whose
    gradient with respect to x is taken with autograd (another shape is an error). A tensor
    cond has x's batch B, or a batch of 1 that is used for every sample. `scale` is a finite
    number, or a 1-D tensor of per-sample scales (B,).
    """

    classifier: Callable[..., Tensor]
    scale: float | Tensor
    cond: Any
    classifier_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _guidance_scale("ClassifierGuidance", self.scale))


@dataclass(frozen=True)
class DynamicThresholding:
    """Dynamic thresholding of x0_pred (Imagen, Saharia et al. 2022).

    Per sample, s = max(quantile(|x0|, ratio), max_val); x0 <- clip(x0, -s, s) / s. With
    `ceiling`, s = clamp(quantile(|x0|, ratio), max_val, ceiling) (the ceiling wins where the
    two cross): diffusers' rule is max_val = 1, ceiling = sample_max_value.
    """

    ratio: float = 0.995
    max_val: float = 1.0
    ceiling: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_float("ratio", self.ratio))
        object.__setattr__(self, "max_val", check_float("max_val", self.max_val))
        if self.ceiling is not None:
            object.__setattr__(self, "ceiling", check_float("ceiling", self.ceiling))
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {self.ratio!r}")
        if not self.max_val > 0:
            raise ValueError(f"max_val must be > 0, got {self.max_val!r}")
        if self.ceiling is not None and not self.ceiling > 0:
            raise ValueError(f"ceiling must be > 0 or None, got {self.ceiling!r}")

    def __call__(self, x0: Tensor, t: object = None) -> Tensor:
        if x0.shape[0] == 0:
            return x0.clone()  # no sample to threshold
        flat = x0.abs().reshape(x0.shape[0], -1)
        # quantile needs float32/64; half inputs are measured in float32.
        s = torch.quantile(
            flat if flat.dtype in (torch.float32, torch.float64) else flat.float(),
            self.ratio,
            dim=1,
        ).to(x0.dtype)
        s = torch.clamp(s, min=self.max_val, max=self.ceiling)
        s = s.reshape((-1,) + (1,) * (x0.dim() - 1))
        return torch.clamp(x0, -s, s) / s


def _net_output(out: Any, x: Tensor, t: float | Tensor) -> Tensor:
    """The network's output, checked: a floating tensor of its input's shape and device
    (ModelOutputError naming the net; the sampler adds the step)."""
    when = f"t={t:.6g}" if isinstance(t, float) else "the given t"
    if not isinstance(out, Tensor):
        raise ModelOutputError(f"net returned {type(out).__name__} at {when}; expected a tensor")
    if not out.is_floating_point():
        raise ModelOutputError(
            f"net returned dtype {out.dtype} at {when}; expected a floating tensor"
        )
    if out.device != x.device:
        raise ModelOutputError(
            f"net returned a tensor on {out.device} at {when}; its input is on {x.device}"
        )
    if out.shape != x.shape:
        raise ModelOutputError(
            f"net returned shape {tuple(out.shape)} at {when}; expected its input's shape "
            f"{tuple(x.shape)}"
        )
    return out


def corrected_x0(name: str, out: object, x0: Tensor, t: float | Tensor) -> Tensor:
    """What an x0 correction (`name`) returned, if it is a tensor of x0_pred's shape,
    dtype and device; else a ValueError naming it (not the model, whose output it took)."""
    if (
        not isinstance(out, Tensor)
        or out.shape != x0.shape
        or out.dtype != x0.dtype
        or out.device != x0.device
    ):
        got = (
            f"a {out.dtype} tensor of shape {tuple(out.shape)} on {out.device}"
            if isinstance(out, Tensor)
            else type(out).__name__
        )
        when = f" at t={t:.6g}" if isinstance(t, float) else ""
        raise ValueError(
            f"{name} returned {got}{when}; expected x0_pred's shape {tuple(x0.shape)}, dtype "
            f"{x0.dtype} and device {x0.device}"
        )
    return out


class ModelOutputError(ValueError):
    """The model returned a wrong type, shape, dtype or device, or NaN/Inf; says at which
    step and time."""


def per_sample(name: str, cond: Any, batch: int) -> Any:
    """A condition with one entry per sample: a tensor of batch `batch` as it is, one of
    batch 1 expanded to `batch` (one condition for all samples), anything else a ValueError
    naming it. Non-tensor conditions (and 0-d tensors) are passed on unchecked."""
    if not isinstance(cond, Tensor) or cond.dim() == 0 or cond.shape[0] == batch:
        return cond
    if cond.shape[0] == 1:
        return cond.expand(batch, *cond.shape[1:])
    raise ValueError(
        f"{name} has batch {cond.shape[0]} (shape {tuple(cond.shape)}) but x has batch "
        f"{batch}: give one condition per sample of x, or a batch of 1 for all of them"
    )


def time_input_dtype(x: Tensor) -> torch.dtype:
    """Networks take float32 times unless the caller samples in float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class Denoiser:
    """Wrap a network as a DiffusionModel for `dpmsolver.sample`.

    Args:
        net: the network, called as net(x, t_input, **model_kwargs), or with the condition
            as third argument under classifier-free guidance. t_input has shape (batch,) and
            holds `schedule.model_time(t)` (the step index for discrete schedules).
        schedule: the noise schedule the network was trained with.
        prediction: what the network outputs: "noise" (eps), "x0", "v" or "score".
        guidance: None, `ClassifierFree(...)` or `ClassifierGuidance(...)`.
        model_kwargs: extra keyword arguments for every network call.
        x0_correction: optional function (x0_pred, t) -> x0_pred applied to every data
            prediction, e.g. `DynamicThresholding()`; only valid with DPM-Solver++.
        sample_shape: optional shape of one sample (without the batch), for the tools that
            draw starting noise themselves (`bench`, `generate`, the CLI).
    """

    def __init__(
        self,
        net: Callable[..., Tensor],
        schedule: NoiseSchedule,
        prediction: Prediction = "noise",
        guidance: ClassifierFree | ClassifierGuidance | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        x0_correction: Callable[[Tensor, float], Tensor] | None = None,
        sample_shape: Sequence[int] | None = None,
    ) -> None:
        if not callable(net):
            raise TypeError(f"net must be callable, got {type(net).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        check_choice("prediction", prediction, PREDICTIONS)
        if guidance is not None and not isinstance(guidance, ClassifierFree | ClassifierGuidance):
            raise TypeError(
                "guidance must be None, ClassifierFree(...) or ClassifierGuidance(...), "
                f"got {type(guidance).__name__}"
            )
        if isinstance(guidance, ClassifierFree):
            if guidance.cond is None:
                raise ValueError("ClassifierFree guidance needs cond (the condition), got None")
            if guidance.uncond is None and not _is_one(guidance.scale):
                raise ValueError(
                    f"ClassifierFree(scale={guidance.scale!r}) needs uncond (the unconditional "
                    "condition): without it the scale cannot apply; give uncond, or scale=1 "
                    "for the conditional model alone"
                )
            if guidance.uncond is not None and not (
                isinstance(guidance.cond, Tensor) and isinstance(guidance.uncond, Tensor)
            ):
                raise TypeError(
                    "ClassifierFree cond and uncond must be tensors (they are concatenated "
                    f"into one batch); got {type(guidance.cond).__name__} and "
                    f"{type(guidance.uncond).__name__}"
                )
        if isinstance(guidance, ClassifierGuidance):
            if guidance.cond is None:
                raise ValueError("ClassifierGuidance needs cond (the class labels), got None")
            if not callable(guidance.classifier):
                raise TypeError("ClassifierGuidance.classifier must be callable")
        if x0_correction is not None and not callable(x0_correction):
            raise TypeError("x0_correction must be callable or None")
        if model_kwargs is not None and (
            not isinstance(model_kwargs, Mapping)
            or not all(isinstance(k, str) for k in model_kwargs)
        ):
            raise TypeError(
                f"model_kwargs must be a mapping of keyword arguments (str keys); got "
                f"{type(model_kwargs).__name__} {model_kwargs!r:.60}"
            )
        if isinstance(guidance, ClassifierFree | ClassifierGuidance):
            conds = [("cond", guidance.cond)]
            if isinstance(guidance, ClassifierFree):
                conds.append(("uncond", guidance.uncond))
            for which, c in conds:
                if isinstance(c, Tensor) and c.device.type == "meta":
                    raise ValueError(
                        f"{type(guidance).__name__} {which} is a meta tensor (a shape without data)"
                    )
        if isinstance(guidance, ClassifierGuidance) and not isinstance(
            guidance.classifier_kwargs, Mapping
        ):
            raise TypeError(
                "ClassifierGuidance.classifier_kwargs must be a mapping; got "
                f"{type(guidance.classifier_kwargs).__name__}"
            )
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.guidance = guidance
        self.model_kwargs = dict(model_kwargs or {})
        self.x0_correction = x0_correction
        self.sample_shape = (
            check_shape("sample_shape", sample_shape) if sample_shape is not None else None
        )

    def _t_input(
        self, x: Tensor, t: float | Tensor, batch: int, model_t: float | None = None
    ) -> Tensor:
        dtype = time_input_dtype(x)
        if model_t is not None:
            return torch.full((batch,), model_t, dtype=dtype, device=x.device)
        if isinstance(t, Tensor):
            t_in = self.schedule.model_time(t.reshape(-1)).to(dtype=dtype, device=x.device)
            t_in = t_in.expand(x.shape[0]) if t_in.numel() == 1 else t_in
            return torch.cat([t_in] * (batch // x.shape[0]))
        return torch.full(
            (batch,), float(self.schedule.model_time(t)), dtype=dtype, device=x.device
        )

    def raw(self, x: Tensor, t: float | Tensor, model_t: float | None = None) -> Tensor:
        """The (guided) network output at time t, before any change of parameterisation."""
        g = self.guidance
        if isinstance(g, ClassifierFree):
            batch = x.shape[0]
            cond = per_sample("ClassifierFree cond", g.cond, batch)
            if g.uncond is None or (not isinstance(g.scale, Tensor) and g.scale == 1.0):
                out = self.net(x, self._t_input(x, t, batch, model_t), cond, **self.model_kwargs)
                return _net_output(out, x, t)
            out_uncond, out_cond = self._both(x, t, model_t)
            return out_uncond + _per_sample_scale(g.scale, x) * (out_cond - out_uncond)
        out = self.net(x, self._t_input(x, t, x.shape[0], model_t), **self.model_kwargs)
        return _net_output(out, x, t)

    def _both(
        self, x: Tensor, t: float | Tensor, model_t: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """The unconditional and conditional network outputs, from one call on the doubled
        batch [uncond, cond] (classifier-free guidance with uncond)."""
        g = self.guidance
        if not isinstance(g, ClassifierFree) or g.uncond is None:  # internal
            raise TypeError("both outputs need ClassifierFree guidance with uncond")
        batch = x.shape[0]
        x_in = torch.cat([x, x])
        c_in = torch.cat(
            [
                per_sample("ClassifierFree uncond", g.uncond, batch),
                per_sample("ClassifierFree cond", g.cond, batch),
            ]
        )
        out = self.net(x_in, self._t_input(x, t, x_in.shape[0], model_t), c_in, **self.model_kwargs)
        out_uncond, out_cond = _net_output(out, x_in, t).chunk(2)
        return out_uncond, out_cond

    @property
    def gives_pair(self) -> bool:
        """Whether `predict_pair` works: classifier-free guidance with an uncond."""
        return isinstance(self.guidance, ClassifierFree) and self.guidance.uncond is not None

    def predict_pair(self, x: Tensor, level: Level) -> tuple[Tensor, Tensor]:
        """(guided x0_pred, unconditional x0_pred) at one level from one network call on
        the doubled batch (for CFG++). x0_correction, if any, acts on the guided one."""
        g = self.guidance
        if not isinstance(g, ClassifierFree) or g.uncond is None:
            raise TypeError(
                "CFG++ needs both predictions: a Denoiser with ClassifierFree guidance and "
                "an uncond"
            )
        out_uncond, out_cond = self._both(x, level.t, level.model_t)
        guided = out_uncond + _per_sample_scale(g.scale, x) * (out_cond - out_uncond)
        x0 = to_data(guided, x, level.alpha, level.sigma, self.prediction)
        if self.x0_correction is not None:
            x0 = corrected_x0("x0_correction", self.x0_correction(x0, level.t), x0, level.t)
        return x0, to_data(out_uncond, x, level.alpha, level.sigma, self.prediction)

    def classifier_grad(self, x: Tensor, t: float | Tensor, model_t: float | None = None) -> Tensor:
        """grad_x log p(cond | x_t) by autograd (classifier guidance)."""
        g = self.guidance
        if not isinstance(g, ClassifierGuidance):  # internal
            raise TypeError("classifier_grad needs ClassifierGuidance")
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            batch = x.shape[0]
            log_prob = g.classifier(
                x_in,
                self._t_input(x, t, batch, model_t),
                per_sample("ClassifierGuidance cond", g.cond, batch),
                **dict(g.classifier_kwargs),
            )
            if not isinstance(log_prob, Tensor) or tuple(log_prob.shape) != (batch,):
                got = tuple(log_prob.shape) if isinstance(log_prob, Tensor) else type(log_prob)
                raise ValueError(
                    f"ClassifierGuidance.classifier returned {got}; expected the "
                    f"log-probabilities log p(cond | x_t) of shape ({batch},), one per sample "
                    "(pick the cond class from (batch, classes) logits with log_softmax)"
                )
            if not log_prob.requires_grad:
                raise ValueError(
                    "ClassifierGuidance.classifier returned log-probabilities that do not "
                    "depend on x (no gradient to take): compute them from x, with autograd on"
                )
            (grad,) = torch.autograd.grad(log_prob.sum(), x_in, allow_unused=True)
            if grad is None:
                raise ValueError(
                    "ClassifierGuidance.classifier returned log-probabilities that do not "
                    "depend on x (no gradient to take): compute them from x"
                )
            return grad

    def predict(
        self,
        x: Tensor,
        t: float | Tensor,
        alpha: Scalar,
        sigma: Scalar,
        target: Target,
        model_t: float | None = None,
    ) -> Tensor:
        """eps_pred (target 'noise') or x0_pred (target 'data') at time t.

        t, alpha, sigma are host floats, or tensors broadcastable against x (per sample);
        model_t, when given, is the network's time input for a float t (saves rebuilding it).
        """
        out = self.raw(x, t, model_t)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            return out  # the sampler reports the bad output with the step and time
        prediction: str = self.prediction
        if isinstance(self.guidance, ClassifierGuidance):
            eps = to_noise(out, x, alpha, sigma, prediction)
            scale = _per_sample_scale(self.guidance.scale, x)
            out = eps - (scale * sigma) * self.classifier_grad(x, t, model_t)
            prediction = "noise"
        if target == "noise":
            return to_noise(out, x, alpha, sigma, prediction)
        x0 = to_data(out, x, alpha, sigma, prediction)
        if self.x0_correction is not None:
            x0 = corrected_x0("x0_correction", self.x0_correction(x0, t), x0, t)  # type: ignore[arg-type]
        return x0

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        return self.predict(x, level.t, level.alpha, level.sigma, target, level.model_t)
