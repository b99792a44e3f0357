"""Parity of the official-compatible API with the authors' code (../shared/golden).

float64: every case to 1e-7 with the same model-call count. float32 (the users' default):
no worse than the reference's own float32 result, i.e. within
max(1e-5, 1.1 * float32_vs_float64) of the float64 answer for fixed-step methods, and
max(1e-3, 1.5 * float32_vs_float64) for the adaptive ones, whose accept/reject path depends
on float32 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from problems import GoldenNet, golden, golden_schedule

from dpmsolver import DPM_Solver, model_wrapper

CASES, ARRAYS = golden()
SOLVER_KEYS = (
    "lower_order_final",
    "denoise_to_zero",
    "solver_type",
    "t_start",
    "t_end",
    "return_intermediate",
)


def run_case(case: dict[str, Any], dtype: torch.dtype) -> tuple[Any, int]:
    ns = golden_schedule(case["schedule"], dtype)
    net = GoldenNet(ns, case["model_type"])
    condition = torch.tensor(ARRAYS["condition"])
    kwargs: dict[str, Any] = {}
    if case["guidance"] == "classifier-free":
        kwargs = dict(
            guidance_type="classifier-free",
            condition=condition,
            unconditional_condition=torch.full_like(condition, -1),
            guidance_scale=case.get("guidance_scale", 3.0),
        )
    elif case["guidance"] == "classifier":
        kwargs = dict(
            guidance_type="classifier",
            condition=condition,
            guidance_scale=2.0,
            classifier_fn=net.classifier,
        )
    model_fn = model_wrapper(net, ns, model_type=case["model_type"], **kwargs)
    solver = DPM_Solver(
        model_fn,
        ns,
        algorithm_type=case["algorithm_type"],
        correcting_x0_fn=case.get("correcting_x0_fn"),
    )
    opts = {k: case[k] for k in SOLVER_KEYS if k in case}
    opts.update(
        steps=case["steps"], order=case["order"], skip_type=case["skip_type"], method=case["method"]
    )
    if case.get("call") == "inverse":
        out = solver.inverse(torch.tensor(ARRAYS["x_data"]).to(dtype), **opts)
    else:
        out = solver.sample(torch.tensor(ARRAYS["x_T"]).to(dtype), **opts)
    return out, net.calls


def case_id(case: dict[str, Any]) -> str:
    return (
        f"{case['id']}-{case['schedule']}-{case['algorithm_type']}-{case['method']}"
        f"{case['order']}-{case['skip_type']}"
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_matches_reference(case: dict[str, Any]) -> None:
    out, calls = run_case(case, torch.float64)
    assert calls == case["model_fn_calls_float64"]
    if case.get("return_intermediate"):
        out, inter = out
        ref_inter = ARRAYS[f"inter64_{case['id']}"]
        got = torch.stack(inter).numpy()
        assert got.shape == ref_inter.shape
        np.testing.assert_allclose(got, ref_inter, rtol=0, atol=1e-7)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ARRAYS[f"out64_{case['id']}"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_no_worse_than_reference(case: dict[str, Any]) -> None:
    out, calls = run_case(case, torch.float32)
    if case.get("return_intermediate"):
        out = out[0]
    assert out.dtype == torch.float32
    ref = ARRAYS[f"out64_{case['id']}"]
    err = float(np.abs(out.double().numpy() - ref).max())
    if case["method"] == "adaptive":
        assert err <= max(1e-3, 1.5 * case["float32_vs_float64"])
    else:
        assert calls == case["model_fn_calls"]
        assert err <= max(1e-5, 1.1 * case["float32_vs_float64"])
