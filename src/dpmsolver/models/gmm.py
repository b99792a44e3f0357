"""Gaussian mixture data distributions with a closed-form denoiser at every noise level.

Notation (used throughout this module):

* ``K`` components in ``D`` dimensions; component ``k`` is ``N(mu_k, S_k)`` with
  ``S_k = U_k diag(e_k - c_k) U_k^T + c_k I``.
* ``U_k`` is ``(D, r)`` with orthonormal columns (``r`` may be 0), ``e_k`` ``(r,)`` are the
  full variances along those columns and ``c_k > 0`` the variance of every other direction.
* ``w_k = exp(log_w_k)`` are the mixture weights.
* The noised variable is ``x_t = alpha x_0 + sigma eps`` with ``eps ~ N(0, I)``; per
  component it is ``N(alpha mu_k, M_k)`` with ``M_k = alpha^2 S_k + sigma^2 I``, whose
  eigenvalues are ``v0 = alpha^2 c_k + sigma^2`` (off the basis) and
  ``v_j = alpha^2 e_kj + sigma^2`` (along column ``j`` of ``U_k``).
"""

from __future__ import annotations

import io
import math
import os
from importlib import resources
from typing import IO, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["GaussianMixture", "load_digits_gmm"]

ArrayLike = np.ndarray | Tensor

# Float32 storage (the shipped npz) perturbs orthonormality by ~1e-7; anything far beyond
# that is a caller error rather than rounding.
_ORTHO_TOL = 1e-4

_LOG_2PI = math.log(2.0 * math.pi)


def _as_float64(value: ArrayLike, name: str) -> Tensor:
    """Convert a numpy array or tensor to a detached float64 CPU tensor."""
    if isinstance(value, Tensor):
        out = value.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(value, np.ndarray | list | tuple):
        out = torch.as_tensor(np.asarray(value, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got non-finite entries")
    return out.clone()


class GaussianMixture:
    """Mixture of low-rank-plus-isotropic Gaussians with exact noisy posteriors.

    Args:
        means: ``mu``, shape ``(K, D)``.
        log_weights: ``log_w``, shape ``(K,)``; normalised internally with logsumexp.
        floor_var: ``c``, shape ``(K,)``, all ``> 0``.
        basis: ``U``, shape ``(K, D, r)`` with orthonormal columns per component, or ``None``
            for ``r = 0``. Columns are re-orthonormalised exactly (QR, signs kept) so that the
            closed-form formulas hold to float64 precision.
        basis_var: ``e``, shape ``(K, r)`` with ``e >= c`` elementwise; required iff ``basis``.
        sample_shape: per-sample shape whose product is ``D``; default ``(D,)``.
    """

    def __init__(
        self,
        means: ArrayLike,
        log_weights: ArrayLike,
        floor_var: ArrayLike,
        basis: ArrayLike | None = None,
        basis_var: ArrayLike | None = None,
        sample_shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        mu = _as_float64(means, "means")
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1, got {tuple(mu.shape)}")
        K, D = mu.shape

        log_w = _as_float64(log_weights, "log_weights")
        if log_w.shape != (K,):
            raise ValueError(f"log_weights must have shape ({K},), got {tuple(log_w.shape)}")
        log_w = log_w - torch.logsumexp(log_w, dim=0)

        c = _as_float64(floor_var, "floor_var")
        if c.shape != (K,):
            raise ValueError(f"floor_var must have shape ({K},), got {tuple(c.shape)}")
        if not bool((c > 0).all()):
            raise ValueError(f"floor_var must be > 0, got min {float(c.min())}")

        if (basis is None) != (basis_var is None):
            raise ValueError("basis and basis_var must be given together (or both None)")
        if basis is None or basis_var is None:
            U = torch.zeros(K, D, 0, dtype=torch.float64)
            e = torch.zeros(K, 0, dtype=torch.float64)
        else:
            U = _as_float64(basis, "basis")
            if U.ndim != 3 or U.shape[:2] != (K, D) or U.shape[2] > D:
                raise ValueError(
                    f"basis must have shape ({K}, {D}, r) with 0 <= r <= {D}, got {tuple(U.shape)}"
                )
            r = U.shape[2]
            e = _as_float64(basis_var, "basis_var")
            if e.shape != (K, r):
                raise ValueError(f"basis_var must have shape ({K}, {r}), got {tuple(e.shape)}")
            if not bool((e >= c[:, None]).all()):
                raise ValueError("basis_var must be >= floor_var of its component everywhere")
            if r > 0:
                gram = U.transpose(1, 2) @ U
                err = float((gram - torch.eye(r, dtype=torch.float64)).abs().max())
                if err > _ORTHO_TOL:
                    raise ValueError(
                        f"basis columns must be orthonormal per component, max |U^T U - I| = "
                        f"{err:.3g} > {_ORTHO_TOL}"
                    )
                Q, R = torch.linalg.qr(U)
                # QR may flip column signs; undo that so column j still pairs with e[:, j].
                sign = torch.sign(torch.diagonal(R, dim1=1, dim2=2))
                U = Q * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None, :]

        if sample_shape is None:
            shape: tuple[int, ...] = (D,)
        else:
            shape = tuple(int(s) for s in sample_shape)
            if any(s < 1 for s in shape) or math.prod(shape) != D:
                raise ValueError(
                    f"sample_shape must be positive ints with product D={D}, got {sample_shape}"
                )

        self._mu = mu
        self._log_w = log_w
        self._c = c
        self._U = U
        self._e = e
        self._sample_shape = shape
        self._device_cache: dict[torch.device, tuple[Tensor, ...]] = {}

    # ------------------------------------------------------------------ properties
    @property
    def num_components(self) -> int:
        """``K``, the number of mixture components."""
        return int(self._mu.shape[0])

    @property
    def dim(self) -> int:
        """``D``, the flattened data dimension."""
        return int(self._mu.shape[1])

    @property
    def rank(self) -> int:
        """``r``, the number of basis columns per component."""
        return int(self._U.shape[2])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Per-sample shape (product ``D``)."""
        return self._sample_shape

    @property
    def means(self) -> Tensor:
        """``mu``, ``(K, D)`` float64."""
        return self._mu.clone()

    @property
    def log_weights(self) -> Tensor:
        """Normalised ``log_w``, ``(K,)`` float64."""
        return self._log_w.clone()

    @property
    def weights(self) -> Tensor:
        """``w = exp(log_w)``, ``(K,)`` float64."""
        return self._log_w.exp()

    @property
    def floor_var(self) -> Tensor:
        """``c``, ``(K,)`` float64."""
        return self._c.clone()

    @property
    def basis(self) -> Tensor:
        """``U``, ``(K, D, r)`` float64 with orthonormal columns."""
        return self._U.clone()

    @property
    def basis_var(self) -> Tensor:
        """``e``, ``(K, r)`` float64."""
        return self._e.clone()

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(K={self.num_components}, D={self.dim}, r={self.rank}, "
            f"sample_shape={self._sample_shape})"
        )

    # ------------------------------------------------------------------ moments
    def component_covariances(self) -> Tensor:
        """Dense ``S_k``, shape ``(K, D, D)`` float64."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        low = torch.einsum("kdr,kr,ker->kde", self._U, self._e - self._c[:, None], self._U)
        return low + self._c[:, None, None] * eye

    def mean(self) -> Tensor:
        """Exact data mean ``sum_k w_k mu_k``, shape ``(D,)``."""
        return self.weights @ self._mu

    def covariance(self) -> Tensor:
        """Exact data covariance ``sum_k w_k (S_k + (mu_k - m)(mu_k - m)^T)``, ``(D, D)``."""
        w = self.weights
        dev = self._mu - self.mean()
        within = torch.einsum("k,kde->de", w, self.component_covariances())
        between = torch.einsum("k,kd,ke->de", w, dev, dev)
        return within + between

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        component: int | Tensor | None = None,
    ) -> Tensor:
        """Draw ``n`` exact samples, shape ``(n, *sample_shape)`` float64 on CPU.

        ``component``: ``None`` (mixture), an int ``k`` (all from component ``k``), or an int
        tensor ``(n,)`` of labels where ``-1`` means "draw the component from the mixture".
        ``generator`` must be a CPU generator.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        K = self.num_components
        if n == 0:
            drawn = torch.zeros(0, dtype=torch.int64)
        else:
            drawn = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        if component is None:
            labels = drawn
        else:
            if isinstance(component, Tensor):
                given = self._check_labels(component, n, "component").cpu()
            elif isinstance(component, int) and not isinstance(component, bool):
                given = torch.full((n,), component, dtype=torch.int64)
            else:
                raise TypeError(
                    f"component must be None, an int or an int tensor, got {component!r}"
                )
            if bool(((given < -1) | (given >= K)).any()):
                raise ValueError(f"component labels must lie in [-1, {K - 1}], got {component}")
            labels = torch.where(given >= 0, given, drawn)

        eps = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        sqrt_c = self._c[labels].sqrt()
        # (sqrt(c) I + U diag(sqrt(e) - sqrt(c)) U^T)^2 = S, so this map gives covariance S.
        U = self._U[labels]
        s = self._e[labels].sqrt() - sqrt_c[:, None]
        proj = torch.einsum("ndr,nd->nr", U, eps)
        x = self._mu[labels] + sqrt_c[:, None] * eps + torch.einsum("ndr,nr->nd", U, s * proj)
        return x.reshape(n, *self._sample_shape)

    # ------------------------------------------------------------------ noisy posteriors
    def _params(self, device: torch.device) -> tuple[Tensor, ...]:
        """Model tensors on ``device`` (float64), cached per device."""
        if device not in self._device_cache:
            self._device_cache[device] = tuple(
                t.to(device) for t in (self._mu, self._log_w, self._c, self._U, self._e)
            )
        return self._device_cache[device]

    def _flatten_x(self, x: Tensor) -> Tensor:
        """Validate ``x`` of shape ``(B, *sample_shape)`` and return float64 ``(B, D)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.ndim < 1 or tuple(x.shape[1:]) != self._sample_shape:
            raise ValueError(f"x must have shape (B, *{self._sample_shape}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    @staticmethod
    def _per_sample(value: float | Tensor, batch: int, device: torch.device, name: str) -> Tensor:
        """Turn a float or a tensor with 1 or ``batch`` elements into float64 ``(batch,)``."""
        if isinstance(value, Tensor):
            t = value.to(device=device, dtype=torch.float64).reshape(-1)
            if t.numel() == 1:
                t = t.expand(batch)
            elif t.numel() != batch:
                raise ValueError(
                    f"{name} must be a scalar or have {batch} elements (one per sample), "
                    f"got shape {tuple(value.shape)}"
                )
            # A tensor's values are checked where reading them is allowed: not inside a
            # compiled sampler loop, which cannot branch on data.
            checked = torch.compiler.is_compiling() or batch == 0
            if not checked and not bool(((t >= 0) & torch.isfinite(t)).all()):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
            return t
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
            return torch.full((batch,), float(value), dtype=torch.float64, device=device)
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(value).__name__}")

    def _check_labels(self, component: Tensor, batch: int, name: str) -> Tensor:
        if not isinstance(component, Tensor) or component.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
        ):
            raise TypeError(f"{name} must be an integer torch.Tensor of labels")
        if component.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(component.shape)}")
        return component.to(torch.int64)

    def _noisy_terms(
        self, x: Tensor, alpha: float | Tensor, sigma: float | Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Shared per-component quantities for ``x`` at level ``(alpha, sigma)``.

        Returns ``(xf, a, s2, y, Uty, v0, v)``: flattened x ``(B, D)``, alpha ``(B,)``,
        sigma^2 ``(B,)``, ``y = x - alpha mu`` ``(B, K, D)``, ``U^T y`` ``(B, K, r)``,
        ``v0`` ``(B, K)`` and ``v`` ``(B, K, r)``.
        """
        xf = self._flatten_x(x)
        B = xf.shape[0]
        a = self._per_sample(alpha, B, xf.device, "alpha")
        s = self._per_sample(sigma, B, xf.device, "sigma")
        if isinstance(alpha, Tensor) or isinstance(sigma, Tensor):
            both_zero = B > 0 and not torch.compiler.is_compiling()
            both_zero = both_zero and not bool((a * a + s * s > 0).all())
        else:
            both_zero = alpha == 0 and sigma == 0
        if both_zero:
            raise ValueError("alpha and sigma must not both be 0 for the same sample")
        mu, _, c, U, e = self._params(xf.device)
        a2, s2 = a * a, s * s
        y = xf[:, None, :] - a[:, None, None] * mu[None]
        Uty = torch.einsum("kdr,bkd->bkr", U, y)
        v0 = a2[:, None] * c[None] + s2[:, None]
        v = a2[:, None, None] * e[None] + s2[:, None, None]
        return xf, a, s2, y, Uty, v0, v

    def _component_log_density(
        self, y: Tensor, Uty: Tensor, v0: Tensor, v: Tensor, a2: Tensor
    ) -> Tensor:
        """``log N(x; alpha mu_k, M_k)``, shape ``(B, K)``."""
        _, _, c, _, e = self._params(y.device)
        # 1/v_j - 1/v0 written as alpha^2 (c - e_j) / (v_j v0) to avoid cancellation.
        corr = a2[:, None, None] * (c[None, :, None] - e[None]) / (v * v0[..., None])
        quad = (y * y).sum(-1) / v0 + (corr * Uty * Uty).sum(-1)
        r = self.rank
        logdet = v.log().sum(-1) + (self.dim - r) * v0.log()
        return -0.5 * (quad + logdet + self.dim * _LOG_2PI)

    def log_prob(
        self, x: Tensor, alpha: float | Tensor = 1.0, sigma: float | Tensor = 0.0
    ) -> Tensor:
        """``log p_t(x)`` of ``x_t = alpha x_0 + sigma eps``, shape ``(B,)`` in x's dtype.

        The defaults give the data log-density. Differentiable w.r.t. ``x``.
        """
        _, a, _, y, Uty, v0, v = self._noisy_terms(x, alpha, sigma)
        log_w = self._params(y.device)[1]
        comp = self._component_log_density(y, Uty, v0, v, a * a)
        return torch.logsumexp(comp + log_w, dim=-1).to(x.dtype)

    def _log_resp(self, a: Tensor, y: Tensor, Uty: Tensor, v0: Tensor, v: Tensor) -> Tensor:
        log_w = self._params(y.device)[1]
        comp = self._component_log_density(y, Uty, v0, v, a * a)
        return torch.log_softmax(comp + log_w, dim=-1)

    def log_responsibilities(
        self, x: Tensor, alpha: float | Tensor, sigma: float | Tensor
    ) -> Tensor:
        """``log p(k | x_t = x)``, shape ``(B, K)`` in x's dtype; differentiable w.r.t. ``x``."""
        _, a, _, y, Uty, v0, v = self._noisy_terms(x, alpha, sigma)
        return self._log_resp(a, y, Uty, v0, v).to(x.dtype)

    def posterior_mean(
        self,
        x: Tensor,
        alpha: float | Tensor,
        sigma: float | Tensor,
        component: Tensor | None = None,
    ) -> Tensor:
        """``E[x_0 | x_t = x]`` (the exact denoiser), same shape/dtype/device as ``x``.

        ``E = sum_k r_k (mu_k + alpha S_k M_k^{-1} y_k)`` with ``r_k`` the responsibilities.
        ``component``: optional int tensor ``(B,)``; label ``k >= 0`` conditions on component
        ``k`` (``r = onehot(k)``), ``-1`` keeps the full mixture. Finite at ``sigma = 0``
        (returns ``x / alpha``) and at ``alpha = 0`` (returns the mixture mean).
        """
        xf, a, s2, y, Uty, v0, v = self._noisy_terms(x, alpha, sigma)
        B, K = y.shape[0], self.num_components
        mu, _, c, U, e = self._params(xf.device)
        # alpha S M^{-1} y = alpha (c/v0) y + alpha U diag(e_j/v_j - c/v0) U^T y, and
        # e_j/v_j - c/v0 = sigma^2 (e_j - c) / (v_j v0): no cancellation, no 1/sigma.
        coef0 = a[:, None] * c[None] / v0
        coef = a[:, None, None] * s2[:, None, None] * (e[None] - c[None, :, None])
        coef = coef / (v * v0[..., None])
        comp_mean = mu[None] + coef0[..., None] * y + torch.einsum("kdr,bkr->bkd", U, coef * Uty)
        log_r = self._log_resp(a, y, Uty, v0, v)
        resp = log_r.exp()
        if component is not None:
            labels = self._check_labels(component, B, "component").to(xf.device)
            if bool(((labels < -1) | (labels >= K)).any()):
                raise ValueError(f"component labels must lie in [-1, {K - 1}], got {component}")
            onehot = torch.nn.functional.one_hot(labels.clamp(min=0), K).to(resp.dtype)
            resp = torch.where((labels >= 0)[:, None], onehot, resp)
        out = torch.einsum("bk,bkd->bd", resp, comp_mean)
        return out.reshape(x.shape).to(x.dtype)

    # ------------------------------------------------------------------ I/O
    def to_npz(
        self,
        path: str | os.PathLike[str] | IO[bytes],
        precision: Literal["float32", "float64"] = "float64",
    ) -> None:
        """Save to a compressed ``.npz`` (``precision`` sets the float storage dtype)."""
        if precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
        dt = np.float32 if precision == "float32" else np.float64
        np.savez_compressed(
            path,
            means=self._mu.numpy().astype(dt),
            log_weights=self._log_w.numpy().astype(dt),
            floor_var=self._c.numpy().astype(dt),
            basis=self._U.numpy().astype(dt),
            basis_var=self._e.numpy().astype(dt),
            sample_shape=np.asarray(self._sample_shape, dtype=np.int64),
        )

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str] | IO[bytes]) -> GaussianMixture:
        """Load a model saved by :meth:`to_npz` (floats are promoted to float64)."""
        with np.load(path, allow_pickle=False) as data:
            missing = {
                "means",
                "log_weights",
                "floor_var",
                "basis",
                "basis_var",
                "sample_shape",
            } - set(data.files)
            if missing:
                raise ValueError(f"path {path!r} is missing arrays {sorted(missing)}")
            return cls(
                means=data["means"].astype(np.float64),
                log_weights=data["log_weights"].astype(np.float64),
                floor_var=data["floor_var"].astype(np.float64),
                basis=data["basis"].astype(np.float64),
                basis_var=data["basis_var"].astype(np.float64),
                sample_shape=tuple(int(s) for s in data["sample_shape"]),
            )


def load_digits_gmm() -> GaussianMixture:
    """Load the shipped GMM fitted to scikit-learn's 8x8 digits (pixels in ``[-1, 1]``).

    ``sample_shape`` is ``(1, 8, 8)``; see ``tools/fit_digits_gmm.py`` for how it was made.
    """
    blob = resources.files("dpmsolver.models").joinpath("digits_gmm.npz").read_bytes()
    return GaussianMixture.from_npz(io.BytesIO(blob))
