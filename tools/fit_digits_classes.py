"""Fit the shipped class-conditional digits model (``src/dpmsolver/models/digits_classes.npz``).

Run once by a developer (needs the fit extra, scikit-learn)::

    PYTHONPATH=src python tools/fit_digits_classes.py [--png /tmp/digits_classes.png]

Steps: load ``sklearn.datasets.load_digits`` (1797 images, 8x8, pixels 0..16, labels 0..9,
bundled with scikit-learn) and scale pixels to [-1, 1] via ``x / 8 - 1`` (as
``tools/fit_digits_gmm.py`` does). For each digit c, fit a full-covariance
``sklearn.mixture.GaussianMixture`` with ``K`` components (default 2) to the images of class
c only, then compress each covariance ``S = V diag(lam) V^T`` (eigenvalues descending) to
low-rank-plus-isotropic form: ``U = V[:, :r]``, ``c = max(mean(lam[r:]), floor)``,
``e = max(lam[:r], c)``. The class prior is the class frequency (count / 1797). The result is
a ``ClassConditionalMixture`` saved in float32 with ``sample_shape = (1, 8, 8)``.
Deterministic: EM starts from ``random_state=0`` (only BLAS rounding can differ by machine).

Printed checks: the mean train log-likelihood of the full mixture (the shipped one, after the
float32 round trip), the exact Bayes classifier's accuracy log p(c | x_0) on the training
images and on samples drawn from the model itself, and the file size.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from fit_digits_gmm import fit as fit_mixture  # the tool beside this one (run from tools/)

from dpmsolver.extras import needs_extra
from dpmsolver.models.conditional import ClassConditionalMixture
from dpmsolver.models.gmm import GaussianMixture
from dpmsolver.tools.png import image_grid, write_png

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/dpmsolver/models/digits_classes.npz"


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Digits as float64 ``(1797, 64)`` in [-1, 1] and their labels ``(1797,)`` int64."""
    with needs_extra("fit", "tools/fit_digits_classes.py"):
        from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float64) / 8.0 - 1.0, digits.target.astype(np.int64)


def fit_class(
    data: np.ndarray, components: int, rank: int, floor: float, reg_covar: float
) -> GaussianMixture:
    """One class's images fitted and compressed as `tools/fit_digits_gmm.py` fits the
    unconditional mixture (sklearn's EM, then low-rank-plus-isotropic covariances)."""
    return fit_mixture(data, components, rank, floor, reg_covar)[0]


def fit(
    data: np.ndarray,
    labels: np.ndarray,
    components: int,
    rank: int,
    floor: float,
    reg_covar: float,
) -> ClassConditionalMixture:
    """One mixture per digit; prior = class frequencies."""
    classes = [fit_class(data[labels == c], components, rank, floor, reg_covar) for c in range(10)]
    counts = np.bincount(labels, minlength=10).astype(np.float64)
    return ClassConditionalMixture(classes, np.log(counts / counts.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--components", type=int, default=2, help="K, components per class")
    parser.add_argument("--rank", type=int, default=12, help="r, kept eigenvectors")
    parser.add_argument("--floor", type=float, default=4e-3, help="minimum isotropic variance c")
    parser.add_argument("--reg-covar", type=float, default=1e-3, help="sklearn reg_covar")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz")
    parser.add_argument("--png", type=Path, default=None, help="optional 10x10 sample grid PNG")
    args = parser.parse_args()

    data, labels = load_digits_data()
    model = fit(data, labels, args.components, args.rank, args.floor, args.reg_covar)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.to_npz(args.out, precision="float32")
    loaded = ClassConditionalMixture.from_npz(args.out)

    x = torch.from_numpy(data).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(labels)
    ll = float(loaded.log_prob(x).mean())
    train_acc = float((loaded.classify(x) == y).double().mean())
    gen = torch.Generator().manual_seed(0)
    requested = torch.arange(10).repeat(200)
    samples = loaded.sample(requested, generator=gen)
    sample_acc = float((loaded.classify(samples) == requested).double().mean())
    print(
        f"classes=10 K={args.components} r={args.rank} floor={args.floor:g} "
        f"reg_covar={args.reg_covar:g}"
    )
    print(f"mean train log-likelihood of the full mixture (nats/image): {ll:.2f}")
    print(f"exact classifier accuracy: train images {train_acc:.4f}, own samples {sample_acc:.4f}")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    if args.png is not None:
        grid = loaded.sample(torch.arange(10).repeat_interleave(10), generator=gen)
        write_png(args.png, image_grid(grid, nrow=10, padding=1, scale=4))
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
