"""The loop is cheap, compiles whole and never waits on the device (benchmarks/overhead.py
measures the time; these tests pin what can be checked exactly)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import dpmsolver as dpm
from dpmsolver.tools.memory import peak_live_bytes

SCHEDULE = dpm.VPSchedule.linear()


def conv_net() -> Any:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layers = [torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU()]
        conv = torch.nn.Sequential(*layers, torch.nn.Conv2d(8, 4, 3, padding=1)).double()

    def net(x: Tensor, t: Tensor) -> Tensor:
        return conv(x) * 0.1 + 0.05 * t[:, None, None, None] * x

    return net


MODEL = dpm.Denoiser(conv_net(), SCHEDULE, prediction="noise")
# float64, so that eager and compiled (fused, reassociated) arithmetic agree to 1e-6 at the
# state's scale; in float32 they differ by a few ulps.
X = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Any:
    # Every compiled sampler adds an entry to dynamo's cache for the same code; start
    # each test with an empty one so none meets the recompile limit.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "options",
    [
        dict(order=2),
        dict(order=3),
        dict(order=3, method="singlestep"),
        dict(order=2, algorithm="dpmsolver"),
    ],
    ids=["2M", "3M", "3S", "2M-noise-form"],
)
def test_compiled_loop_matches_eager(options: dict[str, Any]) -> None:
    # fullgraph=True: any graph break (a host read such as .item(), a data-dependent
    # branch) is an error, so passing also proves the loop never syncs on the CPU path.
    sampler = dpm.Sampler(MODEL, steps=6, skip_type="logSNR", **options)
    fast = sampler.compile()
    torch.testing.assert_close(fast(X), sampler(X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["digits-exact", "digits-net"])
def test_builtin_models_compile_with_the_loop(name: str) -> None:
    # The exact mixture validates its noise levels on the host where it may (floats), so
    # nothing in it branches on data inside the compiled loop.
    from dpmsolver.models import load

    sampler = dpm.Sampler(load(name), steps=5)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sampler.compile()(x), sampler(x), rtol=0, atol=1e-5)


def test_compiled_run_names_the_step_of_a_nan() -> None:
    grid = dpm.time_grid(SCHEDULE, "time_uniform", SCHEDULE.t_max, SCHEDULE.t_min, 8).tolist()
    cut = 0.5 * (grid[3] + grid[4])

    def net(x: Tensor, t: Tensor) -> Tensor:
        # NaN once the time input drops below `cut`: from the call at step 4 on.
        return torch.where(t[:, None, None, None] < cut, torch.nan, 0.1 * x)

    sampler = dpm.Sampler(dpm.Denoiser(net, SCHEDULE), steps=8)
    fast = sampler.compile(backend="eager")
    with pytest.raises(dpm.ModelOutputError, match=rf"NaN or Inf at step 4 \(t={grid[4]:.6g}\)"):
        fast(X)


def test_sampler_equals_sample_and_reuses_its_plan() -> None:
    a = dpm.Sampler(MODEL, steps=7, order=3)
    b = dpm.Sampler(MODEL, steps=7, order=3)
    assert a.plan is b.plan  # planned once per schedule and setting
    assert dpm.Sampler(MODEL, steps=8, order=3).plan is not a.plan
    torch.testing.assert_close(a(X), dpm.sample(MODEL, X, steps=7, order=3), rtol=0, atol=0)


@pytest.mark.parametrize(("order", "bound", "afs"), [(2, 4, False), (3, 5, False), (2, 4, True)])
def test_multistep_memory_does_not_grow_with_steps(order: int, bound: int, afs: bool) -> None:
    # Beside its input the loop holds the state, `order` model outputs and the new state;
    # more steps add only the 0-d finiteness flags (a few bytes each).
    x = torch.randn(2, 4, 32, 32)
    model = dpm.Denoiser(lambda x, t: 0.5 * x, SCHEDULE, prediction="x0")
    peaks = [
        peak_live_bytes(
            lambda s=steps: dpm.sample(model, x, steps=s, order=order, analytic_first_step=afs)
        )
        for steps in (10, 60)
    ]
    nbytes = x.numel() * x.element_size()
    assert peaks[0] <= bound * nbytes + 1024
    assert 0 <= peaks[1] - peaks[0] < 1024


@pytest.mark.parametrize("order", [2, 3])
def test_the_diffusers_face_holds_no_output_its_rules_no_longer_need(order: int) -> None:
    """A pipeline's loop through the scheduler: beside its input, the sample, the
    pipeline's eps, its x0, the `order - 1` outputs kept and the next sample (the
    stepper frees an output no rule needs before it makes the next sample)."""
    pytest.importorskip("diffusers")
    from dpmsolver.diffusers import DPMSolverScheduler

    scheduler = DPMSolverScheduler(solver_order=order, lower_order_final=False)
    x = torch.randn(2, 4, 32, 32)

    def loop() -> None:
        scheduler.set_timesteps(12)
        lat = x
        for t in scheduler.timesteps:
            lat = scheduler.step(0.5 * lat, t, lat).prev_sample

    nbytes = x.numel() * x.element_size()
    assert peak_live_bytes(loop) <= (order + 3) * nbytes + 4096


def test_loop_with_a_checking_evaluator_equals_the_checked_call() -> None:
    sampler = dpm.Sampler(MODEL, steps=6, order=3)
    ev = dpm.core.Evaluator(MODEL, "data", True)
    with torch.no_grad():
        out = sampler.loop(X, None, ev)
    assert torch.equal(out, sampler(X))
    assert ev.checks == 6  # one flag per model call, read by raise_if_nonfinite
    ev.raise_if_nonfinite()


def test_peak_live_bytes_counts_what_is_held_at_once() -> None:
    def three_at_once() -> None:
        a = torch.zeros(1000)
        b = torch.zeros(1000)
        c = a + b
        del a, b, c
        torch.zeros(1000)

    assert peak_live_bytes(three_at_once) == 3 * 4000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_loop_never_syncs_and_replays_as_a_graph() -> None:
    x = X.float().cuda()
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).cuda().eval()
    model = dpm.Denoiser(lambda x, t: conv(x) * 0.1, SCHEDULE, prediction="noise")
    sampler = dpm.Sampler(model, steps=6, order=3)
    expected = sampler(x)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            out = sampler.loop(x, None, dpm.core.Evaluator(model, "data", True))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        sampler.loop(static_x)  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = sampler.loop(static_x)
    graph.replay()
    torch.testing.assert_close(static_out, expected, rtol=0, atol=1e-6)
