"""A class-conditional Gaussian mixture: exact conditional denoiser, classifier and likelihood.

The data distribution is p(x_0) = sum_c p(c) p(x_0 | c), where every class density
p(x_0 | c) is a `GaussianMixture` (low-rank-plus-isotropic components) and p(c) a class prior.
Because each p(x_0 | c) is a Gaussian mixture, so is p(x_0) (its components are all the
classes' components, weighted p(c) w_{k|c}), and every quantity below is closed-form at every
noise level x_t = alpha x_0 + sigma eps, eps ~ N(0, I):

* the conditional denoiser E[x_0 | x_t, c] (class c's mixture's posterior mean),
* the unconditional denoiser E[x_0 | x_t] = sum_c p(c | x_t) E[x_0 | x_t, c] (label -1),
* the noisy classifier log p(c | x_t) = log p(c) + log p_t(x_t | c) - log p_t(x_t), and
* the (noisy) data log-density log p_t(x_t), log p(x_0) at alpha = 1, sigma = 0.

Nothing is approximated (float64 throughout); the only errors are float64 rounding.
`ConditionalNet` wraps the model as a network net(x, t_input, cond) with x0 output, for
`dpmsolver.Denoiser(..., prediction="x0", guidance=ClassifierFree(...))`, so that guided
samplers can be measured against exact quantities. `load_digits_classes()` loads the model
fitted to scikit-learn's 8x8 digits by `tools/fit_digits_classes.py`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from importlib import resources
from typing import IO, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..core import (
    ClassifierFree,
    Denoiser,
    DiscreteVPSchedule,
    FlowSchedule,
    NoiseSchedule,
)
from .gmm import GaussianMixture

__all__ = [
    "UNCONDITIONAL",
    "ClassConditionalMixture",
    "ConditionalNet",
    "load_digits_classes",
]

UNCONDITIONAL = -1
"""The class label that means "no class": the whole mixture p(x_0) = sum_c p(c) p(x_0 | c)."""

ArrayLike = np.ndarray | Tensor

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_CLASS_ARRAYS = ("means", "log_weights", "floor_var", "basis", "basis_var")
_LOG_2PI = math.log(2.0 * math.pi)


def _levels(value: float | Tensor, batch: int, device: torch.device, name: str) -> Tensor:
    """A noise level (alpha or sigma) as float64 ``(batch,)`` on ``device``: a float, or a
    tensor with 1 or ``batch`` elements; all finite and >= 0."""
    if isinstance(value, Tensor):
        t = value.detach().to(device=device, dtype=torch.float64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise ValueError(
                f"{name} must be a float or a tensor with 1 or {batch} elements (one per "
                f"sample), got shape {tuple(value.shape)}"
            )
    elif isinstance(value, int | float) and not isinstance(value, bool):
        t = torch.full((batch,), float(value), dtype=torch.float64, device=device)
    else:
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(value).__name__}")
    if batch > 0 and not bool(((t >= 0) & torch.isfinite(t)).all()):
        bad = t[~((t >= 0) & torch.isfinite(t))]
        raise ValueError(f"{name} must be finite and >= 0, got {bad[:4].tolist()}")
    return t


class _Params(NamedTuple):
    """The full mixture's parameters in the layout the batched formulas use (float64).

    ``K`` components, ``D`` dims, rank ``r``; ``U_rows[k r + j] = U_k[:, j]``.
    """

    mu: Tensor  # (K, D)
    mu_sq: Tensor  # (K,) |mu_k|^2
    log_w: Tensor  # (K,) log p(c) + log w_{k|c}
    c: Tensor  # (K,)
    e: Tensor  # (K, r)
    U_rows: Tensor  # (K r, D)
    Utmu: Tensor  # (K, r) U_k^T mu_k
    label_mask: Tensor  # (C + 1, K): row 0 all 0 (unconditional), row c + 1 0 on class c, -inf off


class ClassConditionalMixture:
    """p(x_0) = sum_c p(c) p(x_0 | c) with one `GaussianMixture` per class; all exact.

    Args:
        classes: the class densities p(x_0 | c), c = 0..C-1 (C >= 1); they must share the
            data dimension, the sample shape and the basis rank r.
        log_prior: log p(c), shape ``(C,)`` (array, tensor or sequence of floats), finite;
            normalised internally with logsumexp.

    Labels are integer tensors ``(B,)`` with values in [-1, C-1]; -1 (`UNCONDITIONAL`) means
    the whole mixture. All results are computed in float64 and returned in x's dtype.
    """

    def __init__(
        self, classes: Sequence[GaussianMixture], log_prior: ArrayLike | Sequence[float]
    ) -> None:
        classes = tuple(classes)
        if len(classes) < 1:
            raise ValueError("classes must hold at least one GaussianMixture, got none")
        for c, m in enumerate(classes):
            if not isinstance(m, GaussianMixture):
                raise TypeError(f"classes[{c}] must be a GaussianMixture, got {type(m).__name__}")
        first = classes[0]
        for c, m in enumerate(classes[1:], start=1):
            if (m.dim, m.sample_shape, m.rank) != (first.dim, first.sample_shape, first.rank):
                raise ValueError(
                    f"classes[{c}] has dim={m.dim}, sample_shape={m.sample_shape}, "
                    f"rank={m.rank}; classes[0] has dim={first.dim}, "
                    f"sample_shape={first.sample_shape}, rank={first.rank}: all classes must "
                    "match"
                )
        if isinstance(log_prior, Tensor):
            lp = log_prior.detach().to(device="cpu", dtype=torch.float64).clone()
        elif isinstance(log_prior, np.ndarray | list | tuple):
            lp = torch.as_tensor(np.asarray(log_prior, dtype=np.float64))
        else:
            raise TypeError(
                "log_prior must be a numpy array, a torch tensor or a sequence of floats, got "
                f"{type(log_prior).__name__}"
            )
        if lp.shape != (len(classes),):
            raise ValueError(
                f"log_prior must have shape ({len(classes)},) (one entry per class), got "
                f"{tuple(lp.shape)}"
            )
        if not bool(torch.isfinite(lp).all()):
            raise ValueError(f"log_prior must be finite, got {lp.tolist()}")
        self._classes = classes
        self._log_prior = lp - torch.logsumexp(lp, dim=0)

        # The full mixture p(x_0): every class's components, weighted p(c) w_{k|c}.
        self._component_class = torch.cat(
            [torch.full((m.num_components,), c, dtype=torch.int64) for c, m in enumerate(classes)]
        )
        self._full = GaussianMixture(
            means=torch.cat([m.means for m in classes]),
            log_weights=torch.cat(
                [self._log_prior[c] + m.log_weights for c, m in enumerate(classes)]
            ),
            floor_var=torch.cat([m.floor_var for m in classes]),
            basis=torch.cat([m.basis for m in classes]),
            basis_var=torch.cat([m.basis_var for m in classes]),
            sample_shape=first.sample_shape,
        )
        full = self._full
        K, D, r = full.num_components, full.dim, full.rank
        mu, U = full.means, full.basis
        member = self._component_class[None, :] == torch.arange(len(classes))[:, None]
        class_mask = torch.where(member, 0.0, -math.inf).to(torch.float64)
        self._cpu_params = _Params(
            mu=mu,
            mu_sq=(mu * mu).sum(-1),
            log_w=full.log_weights,
            c=full.floor_var,
            e=full.basis_var,
            U_rows=U.permute(0, 2, 1).reshape(K * r, D).contiguous(),
            Utmu=torch.einsum("kdr,kd->kr", U, mu),
            label_mask=torch.cat([torch.zeros(1, K, dtype=torch.float64), class_mask]),
        )
        self._device_params: dict[torch.device, _Params] = {}

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """``C``, the number of classes."""
        return len(self._classes)

    @property
    def dim(self) -> int:
        """``D``, the flattened data dimension."""
        return self._full.dim

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Per-sample shape (product ``D``)."""
        return self._full.sample_shape

    @property
    def classes(self) -> tuple[GaussianMixture, ...]:
        """The class densities p(x_0 | c), c = 0..C-1."""
        return self._classes

    @property
    def log_prior(self) -> Tensor:
        """Normalised log p(c), ``(C,)`` float64."""
        return self._log_prior.clone()

    @property
    def prior(self) -> Tensor:
        """p(c), ``(C,)`` float64."""
        return self._log_prior.exp()

    @property
    def full_mixture(self) -> GaussianMixture:
        """p(x_0) = sum_c p(c) p(x_0 | c) as one `GaussianMixture` (all classes' components,
        class c's first); its posterior mean is the exact unconditional denoiser."""
        return self._full

    @property
    def component_class(self) -> Tensor:
        """The class of each component of `full_mixture`, ``(K,)`` int64."""
        return self._component_class.clone()

    def __repr__(self) -> str:
        sizes = [m.num_components for m in self._classes]
        return (
            f"ClassConditionalMixture(C={self.num_classes}, components per class={sizes}, "
            f"D={self.dim}, r={self._full.rank}, sample_shape={self.sample_shape})"
        )

    # ------------------------------------------------------------------ labels
    def _labels(self, labels: Tensor | int, batch: int, name: str = "labels") -> Tensor:
        """Check class labels (an int, or an int tensor of 1 or ``batch`` elements) and
        return int64 CPU ``(batch,)``."""
        if isinstance(labels, int) and not isinstance(labels, bool):
            out = torch.full((batch,), labels, dtype=torch.int64)
        elif isinstance(labels, Tensor) and labels.dtype in _INT_DTYPES:
            out = labels.detach().to(device="cpu", dtype=torch.int64).reshape(-1)
            if out.numel() == 1:
                out = out.expand(batch)
            elif out.numel() != batch:
                raise ValueError(
                    f"{name} must have 1 or {batch} elements (one per sample), got shape "
                    f"{tuple(labels.shape)}"
                )
        else:
            got = f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
            raise TypeError(f"{name} must be an int or an integer torch.Tensor, got {got}")
        if batch > 0 and bool(((out < UNCONDITIONAL) | (out >= self.num_classes)).any()):
            bad = out[(out < UNCONDITIONAL) | (out >= self.num_classes)]
            raise ValueError(
                f"{name} must lie in [{UNCONDITIONAL}, {self.num_classes - 1}] "
                f"({UNCONDITIONAL} = unconditional), got {bad.unique().tolist()}"
            )
        return out

    # ------------------------------------------------------------------ closed form
    def _params(self, device: torch.device) -> _Params:
        if device not in self._device_params:
            self._device_params[device] = _Params(*(t.to(device) for t in self._cpu_params))
        return self._device_params[device]

    def _component_terms(
        self, x: Tensor, alpha: float | Tensor, sigma: float | Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Every component of the full mixture at once, with matrix products only.

        Per component k (notation of `dpmsolver.models.gmm`), x_t is N(alpha mu_k, M_k) with
        M_k = alpha^2 S_k + sigma^2 I, eigenvalues v0 = alpha^2 c_k + sigma^2 off U_k and
        v_j = alpha^2 e_kj + sigma^2 along it. With y = x - alpha mu_k:
        |y|^2 = |x|^2 - 2 alpha x.mu_k + alpha^2 |mu_k|^2 and U^T y = U^T x - alpha U^T mu_k,
        log N = -(|y|^2 / v0 + sum_j alpha^2 (c - e_j) (U^T y)_j^2 / (v_j v0) + sum_j log v_j
        + (D - r) log v0 + D log 2 pi) / 2.

        Returns ``(xf, a, s2, v0, v, Uty, logits)``: x as float64 ``(B, D)``, alpha ``(L,)``,
        sigma^2 ``(L,)``, v0 ``(L, K)``, v ``(L, K, r)``, U^T y ``(B, K, r)`` and
        ``log w_k + log N(x; alpha mu_k, M_k)`` ``(B, K)``, where L = 1 when every sample has
        the same level and L = B otherwise (the level terms broadcast against the batch).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim < 1 or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x must have shape (B, *{self.sample_shape}), got {tuple(x.shape)}")
        B, D = x.shape[0], self.dim
        xf = x.reshape(B, D).to(torch.float64)
        a = _levels(alpha, B, xf.device, "alpha")
        s = _levels(sigma, B, xf.device, "sigma")
        if B > 0 and not bool((a * a + s * s > 0).all()):
            raise ValueError("alpha and sigma must not both be 0 for the same sample")
        if B > 1 and bool((a == a[0]).all()) and bool((s == s[0]).all()):
            # One level for the whole batch (what a sampler passes): the (K, r) terms are
            # then computed once and broadcast.
            a, s = a[:1], s[:1]
        p = self._params(xf.device)
        K, r = p.mu.shape[0], p.e.shape[1]
        a2, s2 = a * a, s * s
        y_sq = (xf * xf).sum(-1)[:, None] - 2.0 * a[:, None] * (xf @ p.mu.T)
        y_sq = (y_sq + a2[:, None] * p.mu_sq[None]).clamp(min=0.0)  # >= 0 up to rounding
        Uty = (xf @ p.U_rows.T).reshape(B, K, r) - a[:, None, None] * p.Utmu[None]
        v0 = a2[:, None] * p.c[None] + s2[:, None]
        v = a2[:, None, None] * p.e[None] + s2[:, None, None]
        # 1/v_j - 1/v0 written as alpha^2 (c - e_j) / (v_j v0) to avoid cancellation.
        corr = a2[:, None, None] * (p.c[None, :, None] - p.e[None]) / (v * v0[..., None])
        quad = y_sq / v0 + (corr * Uty * Uty).sum(-1)
        logdet = v.log().sum(-1) + (D - r) * v0.log()
        logits = p.log_w[None] - 0.5 * (quad + logdet + D * _LOG_2PI)
        return xf, a, s2, v0, v, Uty, logits

    # ------------------------------------------------------------------ densities
    def log_prob(
        self, x: Tensor, alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0
    ) -> Tensor:
        """Exact log p_t(x) of the full mixture at level (alpha, sigma), ``(B,)`` in x's dtype.

        The defaults give the data log-density log p(x_0) (nats per sample).
        """
        logits = self._component_terms(x, alpha, sigma)[-1]
        return torch.logsumexp(logits, dim=-1).to(x.dtype)

    def class_log_likelihood(
        self, x: Tensor, alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0
    ) -> Tensor:
        """Exact log p_t(x | c) for every class, ``(B, C)`` in x's dtype."""
        logits = self._component_terms(x, alpha, sigma)[-1]
        p = self._params(logits.device)
        joint = torch.logsumexp(logits[:, None, :] + p.label_mask[None, 1:], dim=-1)
        return (joint - self._log_prior.to(logits.device)).to(x.dtype)

    def class_log_posterior(
        self, x: Tensor, alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0
    ) -> Tensor:
        """The exact classifier log p(c | x_t = x), ``(B, C)`` in x's dtype.

        Bayes' rule: log p(c | x_t) = log p(c) + log p_t(x | c) - log p_t(x), summed over
        class c's components. The defaults (alpha = 1, sigma = 0) give log p(c | x_0).
        Differentiable with respect to x (for classifier guidance).
        """
        logits = self._component_terms(x, alpha, sigma)[-1]
        p = self._params(logits.device)
        log_r = torch.log_softmax(logits, dim=-1)
        return torch.logsumexp(log_r[:, None, :] + p.label_mask[None, 1:], dim=-1).to(x.dtype)

    def classify(
        self, x: Tensor, alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0
    ) -> Tensor:
        """The Bayes classifier argmax_c p(c | x_t = x), ``(B,)`` int64."""
        return self.class_log_posterior(x, alpha, sigma).argmax(dim=-1)

    # ------------------------------------------------------------------ denoiser
    def posterior_mean(
        self,
        x: Tensor,
        alpha: float | Tensor,
        sigma: float | Tensor,
        labels: Tensor | int = UNCONDITIONAL,
    ) -> Tensor:
        """The exact denoiser E[x_0 | x_t = x, c], same shape, dtype and device as ``x``.

        ``labels``: an int or an int tensor ``(B,)`` (or 1 element for all); label c >= 0
        gives class c's posterior mean, -1 (`UNCONDITIONAL`) the full mixture's,
        E[x_0 | x_t] = sum_c p(c | x_t) E[x_0 | x_t, c]. alpha and sigma: floats or tensors
        with 1 or B elements (per-sample levels). Finite at sigma = 0 (x / alpha) and at
        alpha = 0 (the class or data mean). Differentiable with respect to x.

        Per component, E[x_0 | x_t, k] = mu_k + alpha S_k M_k^{-1} y_k
        = (sigma^2 / v0) mu_k + (alpha c / v0) x + U_k diag(alpha sigma^2 (e_j - c) /
        (v_j v0)) U_k^T y_k (no cancellation, no 1/sigma); the result weighs these by the
        responsibilities p(k | x_t, c) (class c's components only, or all for -1).
        """
        xf, a, s2, v0, v, Uty, logits = self._component_terms(x, alpha, sigma)
        B = xf.shape[0]
        lab = self._labels(labels, B).to(xf.device)
        p = self._params(xf.device)
        w = torch.softmax(logits + p.label_mask[lab + 1], dim=-1)
        coef = a[:, None, None] * s2[:, None, None] * (p.e[None] - p.c[None, :, None])
        coef = coef / (v * v0[..., None])
        out = (w * s2[:, None] / v0) @ p.mu
        out = out + (w * a[:, None] * p.c[None] / v0).sum(-1, keepdim=True) * xf
        out = out + (w[..., None] * (coef * Uty)).reshape(B, -1) @ p.U_rows
        return out.reshape(x.shape).to(x.dtype)

    # ------------------------------------------------------------------ sampling
    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` class labels drawn from the prior p(c), ``(n,)`` int64."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if n == 0:
            return torch.zeros(0, dtype=torch.int64)
        return torch.multinomial(self.prior, n, replacement=True, generator=generator)

    def sample(
        self, labels: Tensor | int, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact samples x_0 ~ p(x_0 | c) per label (-1: from p(x_0)), float64 on the CPU.

        ``labels``: an int tensor ``(n,)``, or an int together with ``n``. Returns
        ``(n, *sample_shape)``; ``generator`` must be a CPU generator.
        """
        if isinstance(labels, Tensor):
            if n is not None and labels.numel() != n:
                raise ValueError(f"n={n!r} does not match labels with {labels.numel()} elements")
            n = labels.numel()
        elif n is None:
            raise ValueError("n (the number of samples) is needed when labels is an int")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        lab = self._labels(labels, n)
        out = torch.empty(n, *self.sample_shape, dtype=torch.float64)
        for c in lab.unique().tolist():
            rows = (lab == c).nonzero().reshape(-1)
            model = self._full if c == UNCONDITIONAL else self._classes[c]
            out[rows] = model.sample(rows.numel(), generator=generator)
        return out

    # ------------------------------------------------------------------ I/O
    def to_npz(
        self,
        path: str | os.PathLike[str] | IO[bytes],
        precision: Literal["float32", "float64"] = "float64",
    ) -> None:
        """Save to a compressed ``.npz`` (``precision`` sets the float storage dtype).

        Arrays: ``log_prior (C,)``, ``sample_shape``, and per class c the `GaussianMixture`
        arrays under ``class{c}_means``, ``class{c}_log_weights``, ``class{c}_floor_var``,
        ``class{c}_basis`` and ``class{c}_basis_var``.
        """
        if precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
        dt = np.float32 if precision == "float32" else np.float64
        arrays: dict[str, np.ndarray] = {
            "log_prior": self._log_prior.numpy().astype(dt),
            "sample_shape": np.asarray(self.sample_shape, dtype=np.int64),
        }
        for c, m in enumerate(self._classes):
            values = (m.means, m.log_weights, m.floor_var, m.basis, m.basis_var)
            for key, value in zip(_CLASS_ARRAYS, values, strict=True):
                arrays[f"class{c}_{key}"] = value.numpy().astype(dt)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str] | IO[bytes]) -> ClassConditionalMixture:
        """Load a model saved by :meth:`to_npz` (floats are promoted to float64)."""
        with np.load(path, allow_pickle=False) as data:
            missing = {"log_prior", "sample_shape"} - set(data.files)
            if missing:
                raise ValueError(f"path {path!r} is missing arrays {sorted(missing)}")
            log_prior = data["log_prior"].astype(np.float64)
            shape = tuple(int(s) for s in data["sample_shape"])
            classes = []
            for c in range(log_prior.shape[0]):
                keys = [f"class{c}_{key}" for key in _CLASS_ARRAYS]
                absent = [k for k in keys if k not in data.files]
                if absent:
                    raise ValueError(f"path {path!r} is missing arrays {absent}")
                means, log_w, floor_var, basis, basis_var = (
                    data[k].astype(np.float64) for k in keys
                )
                classes.append(
                    GaussianMixture(means, log_w, floor_var, basis, basis_var, sample_shape=shape)
                )
        return cls(classes, log_prior)


def load_digits_classes() -> ClassConditionalMixture:
    """Load the shipped class-conditional model of scikit-learn's 8x8 digits.

    Ten classes (the digits 0-9) with prior = the class frequencies of the 1797 images;
    pixels in [-1, 1], ``sample_shape`` ``(1, 8, 8)``. See ``tools/fit_digits_classes.py``
    for how it was fitted (2 components of rank 12 per class, stored in float32).
    """
    blob = resources.files("dpmsolver.models").joinpath("digits_classes.npz").read_bytes()
    return ClassConditionalMixture.from_npz(io.BytesIO(blob))


# ---------------------------------------------------------------------- as a network
def _level_map(schedule: NoiseSchedule) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """t_input = schedule.model_time(t) -> (alpha_t, sigma_t), float64, for the schedules
    whose model time can be inverted in closed form."""
    if isinstance(schedule, DiscreteVPSchedule):
        # model_time(t) = time_input_scale * (t - 1/N): affine, inverted exactly.
        scale, offset = schedule.time_input_scale, 1.0 / schedule.total_n

        def discrete(t_input: Tensor) -> tuple[Tensor, Tensor]:
            t = t_input / scale + offset
            return schedule.alpha(t), schedule.sigma(t)

        return discrete
    if isinstance(schedule, FlowSchedule):
        # model_time(t) = time_scale * sigma_t and alpha_t = 1 - sigma_t.
        time_scale = schedule.time_scale

        def flow(t_input: Tensor) -> tuple[Tensor, Tensor]:
            sigma = t_input / time_scale
            return 1.0 - sigma, sigma

        return flow
    probe = torch.linspace(schedule.t_min, schedule.t_max, 257, dtype=torch.float64)
    model_t = schedule.model_time(probe).to(torch.float64).reshape(-1)
    if model_t.shape != probe.shape or not torch.allclose(model_t, probe, rtol=1e-12, atol=0):
        raise ValueError(
            f"schedule {type(schedule).__name__} has a model_time that is not the identity; "
            "ConditionalNet maps the network's time input back to (alpha_t, sigma_t) only for "
            "schedules with model_time(t) = t (VPSchedule.linear/cosine, VESchedule, "
            "EDMSchedule, CustomSchedule without model_time), DiscreteVPSchedule and "
            "FlowSchedule"
        )

    def identity(t_input: Tensor) -> tuple[Tensor, Tensor]:
        return schedule.alpha(t_input), schedule.sigma(t_input)

    return identity


class ConditionalNet:
    """The exact conditional denoiser as a network: net(x, t_input, cond) = E[x_0 | x_t, cond].

    For `dpmsolver.Denoiser(net, schedule, prediction="x0", guidance=ClassifierFree(scale,
    cond=labels, uncond=torch.full_like(labels, -1)))` (or `denoiser(labels, scale)`), which
    calls it once per step on the doubled batch [uncond; cond]. ``t_input`` ``(B,)`` (or one
    element) holds ``schedule.model_time(t)``; it is mapped back to (alpha_t, sigma_t) in
    float64: t = t_input for schedules whose model time is t itself (VPSchedule.linear /
    cosine, VE / EDM), t = t_input / time_input_scale + 1/N for a `DiscreteVPSchedule`, and
    sigma_t = t_input / time_scale, alpha_t = 1 - sigma_t for a `FlowSchedule`. The round
    trip is exact up to float64 rounding when sampling in float64; in float32 the Denoiser
    passes float32 times, so the level carries float32 rounding (relative ~6e-8).
    ``cond`` is an int tensor of class labels (-1: unconditional) or None (unconditional).
    `calls` counts the evaluations (one per network call, whatever the batch).
    """

    def __init__(self, model: ClassConditionalMixture, schedule: NoiseSchedule) -> None:
        if not isinstance(model, ClassConditionalMixture):
            raise TypeError(f"model must be a ClassConditionalMixture, got {type(model).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.model = model
        self.schedule = schedule
        self._level_map = _level_map(schedule)
        self.calls = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (the model's)."""
        return self.model.sample_shape

    def levels(self, t_input: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) as float64 CPU tensors for the network time input ``t_input``."""
        if not isinstance(t_input, Tensor):
            raise TypeError(f"t_input must be a torch.Tensor, got {type(t_input).__name__}")
        return self._level_map(t_input.detach().to(device="cpu", dtype=torch.float64).reshape(-1))

    def __call__(self, x: Tensor, t_input: Tensor, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        alpha, sigma = self.levels(t_input)
        labels = UNCONDITIONAL if cond is None else cond
        return self.model.posterior_mean(x, alpha, sigma, labels)

    def classifier(self, x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        """The exact noisy classifier log p(cond | x_t), ``(B,)``, differentiable in x; for
        `dpmsolver.ClassifierGuidance(net.classifier, scale, cond)` (labels >= 0)."""
        alpha, sigma = self.levels(t_input)
        lab = self.model._labels(cond, x.shape[0], "cond")
        if bool((lab < 0).any()):
            raise ValueError("cond must hold class labels >= 0 for the classifier, got -1")
        log_post = self.model.class_log_posterior(x, alpha, sigma)
        return log_post.gather(1, lab.to(log_post.device)[:, None]).reshape(-1)

    def denoiser(
        self,
        labels: Tensor,
        scale: float = 1.0,
        x0_correction: Callable[[Tensor, float], Tensor] | None = None,
    ) -> Denoiser:
        """`Denoiser(self, schedule, prediction="x0", guidance=ClassifierFree(scale,
        cond=labels, uncond=-1 labels), x0_correction=...)` with the model's sample shape."""
        if not isinstance(labels, Tensor) or labels.dtype not in _INT_DTYPES:
            raise TypeError("labels must be an integer torch.Tensor of class labels")
        return Denoiser(
            self,
            self.schedule,
            prediction="x0",
            guidance=ClassifierFree(
                scale=float(scale), cond=labels, uncond=torch.full_like(labels, UNCONDITIONAL)
            ),
            x0_correction=x0_correction,
            sample_shape=self.sample_shape,
        )
