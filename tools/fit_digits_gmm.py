"""Fit the shipped digits GMM (``src/dpmsolver/models/digits_gmm.npz``).

Run once by a developer (needs the fit extra, scikit-learn)::

    PYTHONPATH=src python tools/fit_digits_gmm.py [--png /tmp/digits_gmm_samples.png]

Steps: load ``sklearn.datasets.load_digits`` (1797 images, 8x8, pixels 0..16, bundled with
scikit-learn), scale pixels to [-1, 1] via ``x / 8 - 1``, fit a full-covariance
``sklearn.mixture.GaussianMixture`` with ``K`` components, then compress each covariance
``S = V diag(lam) V^T`` (eigenvalues descending) to low-rank-plus-isotropic form:
``U = V[:, :r]``, ``c = max(mean(lam[r:]), floor)``, ``e = max(lam[:r], c)``. The result
is saved in float32 (``GaussianMixture.to_npz(..., precision="float32")``) with
``sample_shape = (1, 8, 8)``. Deterministic: EM is initialised with ``random_state=0`` and
sampling for the preview uses a seeded generator (only BLAS rounding can differ by machine).
Trade-offs: K=16, r=12 gives clearly recognisable samples in ~45 KB; an isotropic ``c`` must
cover the near-constant border pixels too, which is why the low-rank model's likelihood is well
below the full-covariance fit's and samples show faint background noise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from dpmsolver.extras import needs_extra
from dpmsolver.models.gmm import GaussianMixture
from dpmsolver.tools.png import image_grid, write_png

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/dpmsolver/models/digits_gmm.npz"


def load_pixels() -> np.ndarray:
    """Digits as float64 ``(1797, 64)`` in [-1, 1]."""
    with needs_extra("fit", "tools/fit_digits_gmm.py"):
        from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float64) / 8.0 - 1.0


def fit(
    data: np.ndarray, components: int, rank: int, floor: float, reg_covar: float
) -> tuple[GaussianMixture, float]:
    """Fit and compress; returns the model and sklearn's mean train log-likelihood."""
    with needs_extra("fit", "tools/fit_digits_gmm.py"):
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

    sk = SkGaussianMixture(
        n_components=components,
        covariance_type="full",
        random_state=0,
        reg_covar=reg_covar,
        max_iter=500,
        n_init=1,
    ).fit(data)
    if not sk.converged_:
        print("warning: EM did not converge")
    lam, vec = np.linalg.eigh(sk.covariances_)  # ascending per component
    lam, vec = lam[:, ::-1], vec[:, :, ::-1]
    floor_var = np.maximum(lam[:, rank:].mean(axis=1), floor)
    basis_var = np.maximum(lam[:, :rank], floor_var[:, None])
    model = GaussianMixture(
        means=sk.means_,
        log_weights=np.log(sk.weights_),
        floor_var=floor_var,
        basis=np.ascontiguousarray(vec[:, :, :rank]),
        basis_var=basis_var,
        sample_shape=(1, 8, 8),
    )
    return model, float(sk.score(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--components", type=int, default=16, help="K, mixture components")
    parser.add_argument("--rank", type=int, default=12, help="r, kept eigenvectors")
    parser.add_argument("--floor", type=float, default=4e-3, help="minimum isotropic variance c")
    parser.add_argument("--reg-covar", type=float, default=1e-3, help="sklearn reg_covar")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz")
    parser.add_argument("--png", type=Path, default=None, help="optional 64-sample grid PNG")
    args = parser.parse_args()

    data = load_pixels()
    model, sk_ll = fit(data, args.components, args.rank, args.floor, args.reg_covar)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.to_npz(args.out, precision="float32")
    loaded = GaussianMixture.from_npz(args.out)
    x = torch.from_numpy(data).reshape(-1, 1, 8, 8)
    ll = float(loaded.log_prob(x).mean())
    print(f"K={args.components} r={args.rank} floor={args.floor:g} reg_covar={args.reg_covar:g}")
    print(
        f"mean train log-likelihood (nats/image): full-cov sklearn {sk_ll:.2f}, "
        f"shipped low-rank {ll:.2f}"
    )
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    if args.png is not None:
        samples = loaded.sample(64, generator=torch.Generator().manual_seed(0))
        write_png(args.png, image_grid(samples, nrow=8, padding=1, scale=4))
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
