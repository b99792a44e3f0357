"""The step kernel: `combine` applies a rule exactly as written, including cx = 0."""

from __future__ import annotations

import pytest
import torch

from dpmsolver.core import Linear, combine


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "rule",
    [Linear(0.7, (0.2, -0.1)), Linear(1.0, (0.5,)), Linear(0.0, (1.0,)), Linear(0.0, (1.5, -0.5))],
    ids=["general", "cx=1", "jump", "jump-2"],
)
def test_combine_is_the_linear_rule(rule: Linear, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x, m0, m1 = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    ms = [m0.to(dtype), m1.to(dtype)]
    out = combine(rule, x.to(dtype), ms)
    expected = rule.cx * x + sum(c * m for c, m in zip(rule.cm, [m0, m1], strict=False))
    assert out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=tol)
    if rule.cx == 0.0:
        # The jump does not depend on x at all (x = inf must not leak in).
        inf = torch.full_like(x, float("inf"))
        assert bool(torch.isfinite(combine(rule, inf.to(dtype), ms)).all())


def test_jump_with_noise_is_reproducible() -> None:
    x = torch.zeros(2, 5)
    m = torch.ones(2, 5)
    rule = Linear(0.0, (2.0,), noise=0.5)
    a = combine(rule, x, [m], torch.Generator().manual_seed(3))
    z = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, 2.0 * m + 0.5 * z, rtol=0, atol=1e-6)
