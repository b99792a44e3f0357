"""The step kernel: apply one update rule to tensors, and call the model with its checks.

`combine` is the only place where a rule's float64 coefficients meet the caller's tensors;
`Evaluator` is the only place where the loops call the model. Neither reads anything back
from the device: the finiteness check is accumulated on the device and read once, by
`Evaluator.raise_if_nonfinite`, after the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .coefficients import Form, Linear
from .model import DiffusionModel, ModelOutputError, Target
from .schedules import Level

__all__ = [
    "Evaluator",
    "ModelOutputError",
    "combine",
    "finite_flag",
    "like_x",
    "tensor_version",
]


def finite_flag(out: Tensor) -> Tensor:
    """A 0-d tensor that is finite iff `out` is (up to float32 overflow of the sum).

    One read-only reduction: NaN and Inf survive a sum, and it reads `out` once, where
    isfinite(out).all() writes a mask and reads it again.
    Half-precision sums accumulate in float32 so 65504 is no limit.
    """
    if out.dtype in (torch.float16, torch.bfloat16):
        return out.sum(dtype=torch.float32)
    return out.sum()


class Evaluator:
    """Calls the model for the loops: eps_pred or x0_pred (`form`) at one level, checked
    for type and shape at once and, with `check_finite`, for NaN/Inf after the run."""

    def __init__(self, model: DiffusionModel, form: Form, check_finite: bool) -> None:
        self.model = model
        self.target: Target = form
        self.check_finite = check_finite
        # Errors name the time in the caller's units: a model may say what its time is
        # called (the k-diffusion face's is the noise level, "sigma").
        self.time_name: str = getattr(model, "time_name", "t")
        self._finite: list[Tensor] = []
        # (step, time, what): what was checked, "model" for the model's outputs.
        self._where: list[tuple[int, float, str]] = []

    def when(self, step: int, t: float) -> str:
        """'step 3 (t=0.5)', the time named as the model names it."""
        return f"step {step} ({self.time_name}={t:.6g})"

    def __call__(self, x: Tensor, level: Level, step: int, target: Target | None = None) -> Tensor:
        version = tensor_version(x)
        try:
            out = self.model(x, level, target or self.target)
        except ModelOutputError as error:
            raise ModelOutputError(f"step {step}: {error}") from None
        self._check_unchanged(x, version, level, step)
        return self._checked(out, x, level, step)

    def _check_unchanged(self, x: Tensor, version: int | None, level: Level, step: int) -> None:
        """Raise if the model changed its input in place: the solver still needs x (it is
        the state the step starts from), so the run would go on from a changed state."""
        if version is not None and x._version != version:
            raise ModelOutputError(
                f"the model changed its input x in place at {self.when(step, level.t)}; the "
                "solver needs x after the call (compute on a copy, e.g. x = x.clone(), or "
                "use out-of-place operations)"
            )

    def pair(self, x: Tensor, level: Level, step: int) -> tuple[Tensor, Tensor]:
        """(guided, unconditional) x0_pred from one call of the model's `predict_pair`
        (CFG++), each checked as a model output."""
        version = tensor_version(x)
        try:
            found = self.model.predict_pair(x, level)  # type: ignore[attr-defined]
        except ModelOutputError as error:
            raise ModelOutputError(f"step {step}: {error}") from None
        self._check_unchanged(x, version, level, step)
        if not isinstance(found, tuple) or len(found) != 2:
            raise ModelOutputError(
                f"predict_pair returned {type(found).__name__} at {self.when(step, level.t)}; "
                "expected a (guided, unconditional) pair of tensors"
            )
        return self._checked(found[0], x, level, step), self._checked(found[1], x, level, step)

    def _checked(self, out: object, x: Tensor, level: Level, step: int) -> Tensor:
        when = self.when(step, level.t)
        if not isinstance(out, Tensor):
            raise ModelOutputError(
                f"model returned {type(out).__name__} at {when}; expected a tensor"
            )
        if out.shape != x.shape:
            raise ModelOutputError(
                f"model output at {when} has shape {tuple(out.shape)}, expected the input's "
                f"shape {tuple(x.shape)}"
            )
        if out.device != x.device:
            raise ModelOutputError(
                f"model output at {when} is on {out.device}; its input is on {x.device}"
            )
        if out.dtype != x.dtype:
            if not out.is_floating_point():
                raise ModelOutputError(
                    f"model output at {when} has dtype {out.dtype}, expected a floating dtype"
                )
            out = out.to(x.dtype)
        if self.check_finite:
            self._finite.append(finite_flag(out))
            self._where.append((step, level.t, "model"))
        return out

    def note_input(self, x: Tensor) -> None:
        """Check the starting x too (read with the model outputs' flags at the end), so a
        NaN in the input is reported as the input's, not the model's."""
        if self.check_finite:
            self._finite.append(finite_flag(x))
            self._where.append((-1, math.nan, "input"))

    def note_noise(self, z: Tensor, step: int, t: float) -> None:
        """Check a noise draw the caller's noise_sampler gave (read with the rest at the
        end), so that its NaN is reported as the noise's, not the model's."""
        self.note(z, step, t, "noise_sampler")

    def note(self, value: Tensor, step: int, t: float, source: str) -> None:
        """Check what a caller's function (`source`) returned for NaN/Inf with the model's
        outputs (read once, at the end), so that its NaN is reported as its own."""
        if self.check_finite:
            self._finite.append(finite_flag(value))
            self._where.append((step, t, source))

    @property
    def checks(self) -> int:
        """How many values wait for the finiteness check at the end (one per model call,
        and one per noted input, noise draw or correction)."""
        return len(self._finite)

    def raise_if_nonfinite(self) -> None:
        """The one read-back of the run: report the first non-finite value checked."""
        if not self._finite:
            return
        ok = torch.isfinite(torch.stack(self._finite)).cpu()
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            step, t, what = self._where[i]
            if what == "input":
                raise ValueError("x (the starting sample) contains NaN or Inf")
            if what == "noise_sampler":
                raise ValueError(
                    f"noise_sampler returned NaN or Inf at {self.when(step, t)}; it must give "
                    "standard normal noise"
                )
            if what != "model":
                raise ValueError(f"{what} returned NaN or Inf at {self.when(step, t)}")
            raise ModelOutputError(
                f"model returned NaN or Inf at {self.when(step, t)}; check the network and "
                "its inputs (dtype, conditioning)"
            )


def tensor_version(x: Tensor) -> int | None:
    """x's version counter, which every in-place operation on it increments: read on the
    host, so checking it costs no device sync. None where there is none to read: in a
    compiled loop (which cannot guard on it) and for inference-mode tensors (which do not
    track it); the check is then skipped."""
    if torch.compiler.is_compiling() or x.is_inference():
        return None
    return x._version


def combine(
    rule: Linear,
    x: Tensor,
    ms: Sequence[Tensor],
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """x_new = cx * (x + sum_j (cm[j]/cx) m[j] (+ (noise/cx) z)), in x's dtype.

    Uses the first len(rule.cm) outputs of `ms` (newest first for multistep rules). Passes
    over memory: 1 + len(rule.cm) (+1 for noise): one allocating axpy, in-place axpys,
    and the exact linear part cx applied last. Scaling last is the exponential integrator's
    own structure (x/alpha or x/sigma moves by the increment, then the linear part maps it
    exactly), and keeps float32 at or below the reference's float32 error on every golden
    case; scaling first, or summing in float32 in the order written, does not. z is drawn
    in float32 on the generator's device, so a seed gives the same noise on any device;
    `noise` gives z instead (the diffusers face's variance_noise).
    A rule with cx = 0 (the jump to sigma = 0 in the data form, x_0 = x0_pred) does not
    depend on x: its sum starts from the first output instead, and is not scaled.
    """
    cx = rule.cx
    scale = cx if cx != 0.0 else 1.0  # the factor taken out of the sum, applied last
    if cx != 0.0:
        out = torch.add(x, ms[0], alpha=rule.cm[0] / scale)
    else:
        out = torch.mul(ms[0], rule.cm[0]).to(x.dtype)
    for c, m in zip(rule.cm[1:], ms[1 : len(rule.cm)], strict=True):
        out.add_(m, alpha=c / scale)
    if rule.noise:
        if noise is None:
            device = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
        out.add_(noise.to(out.device, out.dtype), alpha=rule.noise / scale)
    if scale != 1.0:
        out.mul_(scale)
    return out


def like_x(
    name: str, out: object, x: Tensor, step: int, t: float | None = None, exact: bool = False
) -> Tensor:
    """`out`, a caller's function's result, if it is a tensor of x's shape (and, `exact`,
    of x's dtype and device too); else ValueError naming the function, the step (and time)
    and what it returned. Reads shapes only, so the compiled loop traces it."""
    when = f"step {step}" if t is None else f"step {step} (t={t:.6g})"
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{name} returned {got} at {when}; expected a tensor of x's shape {tuple(x.shape)}"
        )
    if out.device.type == "meta":
        raise ValueError(f"{name} returned a meta tensor (a shape without data) at {when}")
    if exact and (out.dtype != x.dtype or out.device != x.device):
        raise ValueError(
            f"{name} returned a {out.dtype} tensor on {out.device} at {when}; expected x's "
            f"dtype and device ({x.dtype} on {x.device})"
        )
    return out
