"""How much more a tuned solver could gain from more linear freedom, on the built-in models.

`optimize_solver` tunes a grid and a few linear coefficients per step. This script asks
whether more of the same could reach the target that `benchmarks/low_budget.py` checks
(at most 0.5x the best untuned error at 4-10 calls). For each budget it takes the tuned
solver and its 64-pilot reference, as `low_budget.py` does, and fits three extensions on
the same tuning pilots:
- all outputs: the end state replaced by the least-squares best combination of x_T and
  every model output of the run. This is the best end state that any linear multistep
  rule can reach from the same evaluations. It is fitted in closed form and needs no model
  call.
- per coordinate: the same fit with its own weights for each coordinate of the sample (a
  far larger family, with 1 + nfe weights per coordinate).
- shifted evaluations: each model call is made at lambda + delta_k instead of at its
  grid point, with the nfe shifts delta_k fitted by Levenberg-Marquardt on the end-point
  error (finite differences, one full run per shift).
Each is scored on 1024 held-out noises against a 3000-call reference, as in
`low_budget.py`. It prints the errors, the ratios to the best
untuned setting, and the target 0.5x. A second table splits the held-out error of the tuned
solver and of the best untuned setting: the share of the squared error that the worst 1%
of noises carry, and the RMS error over the other 99% (each setting's own worst 1% left
out), with the ratio of the two.

    python benchmarks/coefficient_ceiling.py                  # both models, 1 thread
    python benchmarks/coefficient_ceiling.py --models digits-net --budgets 4,6
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch
from low_budget import HELD_OUT
from torch import Tensor

from dpmsolver import DiffusionModel, Level, TunedSolver, pilot_reference, sample
from dpmsolver.models import load
from dpmsolver.noise import start_noise
from dpmsolver.tools.measure import reference, rms
from dpmsolver.tools.presets import SOLVERS
from dpmsolver.tuning import budget

# The models whose tuned solvers this study extends (any built-in model with --models).
MODELS = ("digits-exact", "digits-net")


class Recorded:
    """The model with every call's output kept in `outputs` (in call order, reset with
    `outputs.clear()`), each call k made at lambda + shifts[k] (clamped to the schedule's
    range) instead of at the level the solver asks for."""

    def __init__(self, model: DiffusionModel, lam_range: tuple[float, float]) -> None:
        self.model = model
        self.schedule = model.schedule
        self.lam_range = lam_range
        self.shifts: list[float] = []
        self.outputs: list[Tensor] = []

    def __call__(self, x: Tensor, level: Level, target: Any) -> Tensor:
        k = len(self.outputs)
        shift = self.shifts[k] if k < len(self.shifts) else 0.0
        if shift != 0.0:
            lam = min(max(level.lambda_ + shift, self.lam_range[0]), self.lam_range[1])
            t = self.schedule.inverse_lambda(torch.tensor(lam, dtype=torch.float64))
            level = self.schedule.levels(t.reshape(1))[0]
        out = self.model(x, level, target)
        self.outputs.append(out)
        return out


def run(
    rec: Recorded, x: Tensor, solver: TunedSolver, shifts: list[float] | None = None
) -> tuple[Tensor, Tensor]:
    """The end state and the features (x_T, then every model output), stacked last, with
    the model calls at lambda + `shifts` (none by default)."""
    rec.shifts = shifts or []
    rec.outputs.clear()
    end = sample(rec, x, solver=solver)
    return end, torch.stack([x, *rec.outputs], dim=-1).double()


def fit_shared(features: Tensor, residual: Tensor) -> Tensor:
    """Weights w (one per feature) minimising |features @ w - residual|^2."""
    a = features.reshape(-1, features.shape[-1])
    return torch.linalg.lstsq(a, residual.reshape(-1, 1).double()).solution[:, 0]


def fit_per_coordinate(features: Tensor, residual: Tensor, ridge: float = 1e-2) -> Tensor:
    """Weights per coordinate (coordinates x features), ridge-regularised: with 48 pilots
    and 1 + nfe features per coordinate the plain fit would interpolate."""
    f = features.reshape(features.shape[0], -1, features.shape[-1])
    y = residual.reshape(residual.shape[0], -1).double()
    ata = torch.einsum("ndk,ndl->dkl", f, f)
    aty = torch.einsum("ndk,nd->dk", f, y)
    scale = ata.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None]
    eye = torch.eye(f.shape[-1], dtype=torch.float64)
    return torch.linalg.solve(ata + ridge * scale * eye, aty[..., None])[..., 0]


def apply_per_coordinate(features: Tensor, w: Tensor, like: Tensor) -> Tensor:
    f = features.reshape(features.shape[0], -1, features.shape[-1])
    return torch.einsum("ndk,dk->nd", f, w).reshape(like.shape).to(like.dtype)


def tail(x: Tensor, ref: Tensor) -> tuple[float, float]:
    """(share of the summed squared error in the worst 1% of samples, RMS error over the
    other 99%)."""
    per = (x - ref).double().pow(2).reshape(x.shape[0], -1).mean(1).sort().values
    worst = max(1, round(0.01 * per.numel()))
    kept = per[: per.numel() - worst]
    return float(per[-worst:].sum() / per.sum()), float(kept.mean().sqrt())


def fit_shifts(
    rec: Recorded, x: Tensor, target: Tensor, solver: TunedSolver, iterations: int
) -> list[float]:
    """Per-call lambda shifts minimising the end-point error on (x, target)."""
    k, eps, mu = solver.nfe, 1e-3, 1e-3
    v = torch.zeros(k, dtype=torch.float64)

    def residual(vec: Tensor) -> Tensor:
        return (run(rec, x, solver, vec.tolist())[0] - target).reshape(-1).double()

    r = residual(v)
    for _ in range(iterations):
        jac = torch.stack([(residual(v + eps * torch.eye(k)[q]) - r) / eps for q in range(k)], 1)
        jtj, g = jac.T @ jac, jac.T @ r
        d = torch.diag(jtj).clamp_min(1e-12)
        for _ in range(6):
            step = torch.linalg.solve(jtj + mu * torch.diag(d), -g)
            r2 = residual(v + step)
            if bool(torch.isfinite(r2).all()) and float(r2.pow(2).sum()) < float(r.pow(2).sum()):
                v, r, mu = v + step, r2, max(mu / 3.0, 1e-9)
                break
            mu *= 4.0
        else:
            break
    return v.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", default="4,5,6,8,10")
    parser.add_argument("--settings", default=",".join(budget.BUDGET_SEARCH))
    parser.add_argument("--reference-nfe", type=int, default=3000)
    parser.add_argument("--pilots", type=int, default=64)
    parser.add_argument("--n", type=int, default=None, help="held-out noises")
    parser.add_argument("--iterations", type=int, default=5, help="shift-fit iterations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    for name in args.models.split(","):
        start = time.perf_counter()
        model = load(name)
        n = args.n or HELD_OUT
        result = budget.budget(
            model,
            budgets,
            n=n,
            pilots=args.pilots,
            settings=args.settings.split(","),
            reference_nfe=args.reference_nfe,
            grid_only=False,
        )
        # The same pilots and held-out noises as budget.budget: seeds 0 and 1.
        pilots = pilot_reference(model, pilots=args.pilots, seed=0)
        test_x = start_noise(model, n, 1)
        test_ref = reference(model, test_x, args.reference_nfe)
        lam = model.schedule.lambda_(torch.tensor(pilots.times, dtype=torch.float64))
        rec = Recorded(model, (float(lam.min()), float(lam.max())))
        lines, tails = [], []
        for row in result.rows:
            solver = result.solvers[row.nfe]
            x = pilots.x_start[: solver.pilots]
            target = pilots.end[: solver.pilots]
            end, feats = run(rec, x, solver)
            t_end, t_feats = run(rec, test_x, solver)
            w = fit_shared(feats, target - end)
            shared = (
                rms(end + (feats @ w).to(end.dtype), target),
                rms(t_end + (t_feats @ w).to(t_end.dtype), test_ref),
            )
            wc = fit_per_coordinate(feats, target - end)
            coord = (
                rms(end + apply_per_coordinate(feats, wc, end), target),
                rms(t_end + apply_per_coordinate(t_feats, wc, t_end), test_ref),
            )
            shifts = fit_shifts(rec, x, target, solver, args.iterations)
            shift = (
                rms(run(rec, x, solver, shifts)[0], target),
                rms(run(rec, test_x, solver, shifts)[0], test_ref),
            )
            base = row.baseline_error
            tuned = (rms(end, target), rms(t_end, test_ref))
            cells = [tuned, shared, coord, shift]
            lines.append(
                f"{row.nfe:4d}  {row.setting:16s}{base:10.2e}"
                + "".join(f"{p:10.2e}{t:10.2e}{t / base:7.2f}" for p, t in cells)
            )
            setting, grid = row.baseline.split(", ")
            opts = SOLVERS[setting].options
            steps = opts.steps_for_calls(row.nfe)
            untuned = sample(
                model, test_x, opts, timesteps=budget.untuned_grid(model.schedule, grid, steps)
            )
            (s_t, r_t), (s_u, r_u) = tail(t_end, test_ref), tail(untuned, test_ref)
            tails.append(
                f"{row.nfe:4d}{s_t:10.2f}{r_t:10.2e}{s_u:10.2f}{r_u:10.2e}{r_t / r_u:8.2f}"
            )
            if not all(math.isfinite(t) for _, t in cells):
                raise SystemExit(f"{name}: a non-finite error at {row.nfe} calls")
        print(f"== {name} ({time.perf_counter() - start:.0f} s)")
        print(
            "Tuned solver and three extensions: RMS error on the tuning pilots, on the "
            "held-out noises, and held-out / best untuned"
        )
        head = "".join(
            f"{c:>27s}" for c in ("tuned", "all outputs", "per coordinate", "shifted evals")
        )
        print(f"{'NFE':>4s}  {'family':16s}{'untuned':>10s}{head}")
        print(f"{'':32s}" + "    pilots  held-out     /" * 4)
        print("\n".join(lines))
        print("target at 4-10 calls: held-out / best untuned <= 0.50")
        print("Held-out error without the worst 1% of noises: tuned solver, best untuned")
        print(
            f"{'NFE':>4s}{'share':>10s}{'rms 99%':>10s}{'share':>10s}{'rms 99%':>10s}{'ratio':>8s}"
        )
        print("\n".join(tails))


if __name__ == "__main__":
    main()
