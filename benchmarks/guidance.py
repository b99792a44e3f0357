"""Guided sampling on the exact class-conditional digits model: CFG, CFG + dynamic
thresholding and CFG++ with DPM-Solver++ at few steps.

The model (`dpmsolver.models.conditional.load_digits_classes`) is a Gaussian mixture per digit
class fitted to scikit-learn's 8x8 digits, so its conditional and unconditional denoisers,
its classifier log p(c | x_0) and its likelihood log p(x_0) are exact. It runs as
`Denoiser(ConditionalNet(model, schedule), schedule, prediction="x0",
guidance=ClassifierFree(scale, cond=labels, uncond=-1 labels))` on DDPM's discrete linear
schedule (1000 steps, t in [1e-3, 1]; the net maps the time input n = 1000 t - 1 back to
(alpha_t, sigma_t) exactly), in float64, on time-uniform grids (the default of
`dpmsolver.sample`, and the authors' advice for guided sampling; `--skip-type` changes it).
Every other option is `sample`'s default: the final steps are taken at lower order below 15
steps only (lower_order_final_below=15), so at 15 and 20 steps the last, long step of the
time-uniform grid (lambda 1.4 -> 4.6 at 15 steps) is taken at full order.

Samplers: DPM-Solver++ multistep of order 2 (2M) and 3 (3M) with
  CFG     plain classifier-free guidance;
  CFG+DT  the same with dynamic thresholding of x0_pred (ratio 0.995, max_val 1.0: the
          pixels lie in [-1, 1], so a prediction inside that range is left as it is);
  CFG++   `sample(..., cfg_pp=True)` (2M only): renoising with the unconditional
          prediction. The same scale is a much stronger guidance under CFG++, and CFG++ has
          no small-step limit: each step adds sigma_t alpha_s / sigma_s (g - u) to the plain
          update, which does not shrink with the step, so its guidance grows with the step
          count. A second table runs it on its own scale range (0.2 .. 1, as in the paper).
Metrics over N samples from one seed, requested classes cycling through 0..9:
  acc     accuracy of the exact Bayes classifier argmax_c log p(c | x_0) at the result;
  ll      mean log p(x_0) of the results under the exact full mixture (nats per image);
  ll-ref  ll minus the same variant's 500-step ll. Positive at few steps: the final
          low-order steps leave the results too smooth (they lack the fine noise of the
          near-constant directions, where the model's variance is small), and a smooth
          image has a higher density than a typical one; higher is not better here;
  rms     RMS distance (over all pixels of all samples) to the same guidance variant's
          500-step 2M result from the same noise (solver error; 2M and 3M share the ODE);
  /CFG    rms relative to plain CFG 2M at the same scale and steps.
Baseline rows: exact samples of p(x_0 | c) (the truth at scale 1) and the scale-1 ODE.

    python benchmarks/guidance.py            # full table (1-2 min on 2 idle CPU cores)
    python benchmarks/guidance.py --quick    # seconds, for CI
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import dpmsolver as dpm
from dpmsolver.models import ddpm_linear_schedule
from dpmsolver.models.conditional import (
    ClassConditionalMixture,
    ConditionalNet,
    load_digits_classes,
)

THRESHOLD_RATIO = 0.995
THRESHOLD_MAX_VAL = 1.0  # the data's pixel range is [-1, 1]
SKIP_TYPE = "time_uniform"  # set from --skip-type
HIGH_SCALE = 7.5  # the recommendation looks at scales >= this ...
FEW_STEPS = 10  # ... and step counts <= this


@dataclass(frozen=True)
class Setting:
    """One sampler: a guidance variant and a multistep order."""

    variant: str  # "CFG", "CFG+DT" or "CFG++"
    order: int

    @property
    def name(self) -> str:
        return f"{self.variant} {self.order}M"


@dataclass(frozen=True)
class Row:
    setting: Setting
    scale: float
    steps: int
    acc: float
    ll: float
    ll_gap: float
    rms: float


def run(
    net: ConditionalNet, labels: Tensor, x_T: Tensor, setting: Setting, scale: float, steps: int
) -> Tensor:
    """One guided DPM-Solver++ run from x_T on a SKIP_TYPE grid."""
    correction = (
        dpm.DynamicThresholding(ratio=THRESHOLD_RATIO, max_val=THRESHOLD_MAX_VAL)
        if setting.variant == "CFG+DT"
        else None
    )
    model = net.denoiser(labels, scale, x0_correction=correction)
    extra: dict[str, Any] = {"cfg_pp": True} if setting.variant == "CFG++" else {}
    return dpm.sample(model, x_T, steps=steps, order=setting.order, skip_type=SKIP_TYPE, **extra)


def quality(model: ClassConditionalMixture, x0: Tensor, labels: Tensor) -> tuple[float, float]:
    """(accuracy of argmax_c log p(c | x0) for the requested labels, mean log p(x0))."""
    acc = float((model.classify(x0) == labels).double().mean())
    return acc, float(model.log_prob(x0).mean())


def rms(a: Tensor, b: Tensor) -> float:
    """Root mean square of a - b over all entries."""
    return float((a - b).pow(2).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="samples (default 1024)")
    parser.add_argument("--scales", default="3,7.5,12", help="guidance scales")
    parser.add_argument("--steps", default="5,10,15,20", help="step counts")
    parser.add_argument("--reference-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-type", default="time_uniform", help="time grid (sample's)")
    parser.add_argument(
        "--cfg-pp-scales", default="0.2,0.4,0.6,0.8,1", help="CFG++ on its own scale range"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run (CI)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.scales, args.steps, args.reference_steps = 40, "7.5", "5,10", 40
        args.cfg_pp_scales = "0.6"
    global SKIP_TYPE
    SKIP_TYPE = args.skip_type
    scales = [float(s) for s in args.scales.split(",")]
    step_counts = [int(s) for s in args.steps.split(",")]
    start = time.perf_counter()

    model = load_digits_classes()
    schedule = ddpm_linear_schedule()
    net = ConditionalNet(model, schedule)
    labels = torch.arange(args.n) % model.num_classes
    gen = torch.Generator().manual_seed(args.seed)
    x_T = schedule.sigma(schedule.t_max).item() * torch.randn(
        args.n, *model.sample_shape, dtype=torch.float64, generator=gen
    )
    variants = ["CFG", "CFG+DT", "CFG++"]
    settings = [Setting(v, 2) for v in variants] + [Setting(v, 3) for v in ("CFG", "CFG+DT")]
    baseline = Setting("CFG", 2)

    print(
        "Guided DPM-Solver++ on the exact class-conditional digits model "
        f"({model.num_classes} classes x 2 components, rank 12)\n"
        f"DDPM linear schedule, {SKIP_TYPE} grid, float64, sample()'s defaults otherwise "
        "(lower-order final steps below 15 steps)\n"
        f"N={args.n} samples, seed {args.seed}, requested classes 0..9 cycling; rms against "
        f"the {args.reference_steps}-step 2M result of the same guidance variant and scale\n"
        f"CFG+DT: DynamicThresholding(ratio={THRESHOLD_RATIO}, max_val={THRESHOLD_MAX_VAL}); "
        + "CFG++: sample(..., cfg_pp=True) (no small-step limit: its rms is not a solver "
        "error, see the reference check)"
    )
    print(
        "acc: exact classifier argmax log p(c | x0) = requested class; ll: mean log p(x0) "
        "(nats); ll-ref: ll minus the reference's ll"
    )

    # Baselines: the truth at scale 1 (exact samples of p(x0 | c)), and its ODE.
    print("\nBaseline (scale 1 is the true conditional model)")
    print(f"{'':44} {'acc':>7} {'ll':>8}")
    exact = model.sample(labels, generator=torch.Generator().manual_seed(args.seed + 1))
    acc, ll = quality(model, exact, labels)
    print(f"{'exact samples of p(x0 | c)':44} {acc:7.4f} {ll:8.2f}")
    (end,) = schedule.levels([schedule.t_min])
    eps = torch.randn(exact.shape, dtype=torch.float64, generator=gen)
    acc, ll = quality(model, end.alpha * exact + end.sigma * eps, labels)
    print(f"{'the same noised to t_end (sigma = 0.01)':44} {acc:7.4f} {ll:8.2f}")
    for steps in sorted({step_counts[-1], args.reference_steps}):
        acc, ll = quality(model, run(net, labels, x_T, baseline, 1.0, steps), labels)
        print(f"{f'ODE at scale 1, CFG 2M, {steps} steps':44} {acc:7.4f} {ll:8.2f}")

    references: dict[tuple[str, float], Tensor] = {}
    ref_quality: dict[tuple[str, float], tuple[float, float]] = {}
    rows: list[Row] = []
    for scale in scales:
        for variant in variants:
            ref = run(net, labels, x_T, Setting(variant, 2), scale, args.reference_steps)
            references[variant, scale] = ref
            ref_quality[variant, scale] = quality(model, ref, labels)
        for setting in settings:
            ref = references[setting.variant, scale]
            ref_ll = ref_quality[setting.variant, scale][1]
            for steps in step_counts:
                x0 = run(net, labels, x_T, setting, scale, steps)
                acc, ll = quality(model, x0, labels)
                rows.append(Row(setting, scale, steps, acc, ll, ll - ref_ll, rms(x0, ref)))
    plain = {(r.scale, r.steps): r.rms for r in rows if r.setting == baseline}
    by_cell = {(r.setting, r.scale, r.steps): r.rms for r in rows}

    for scale in scales:
        print(f"\nGuidance scale {scale:g}")
        refs = ", ".join(
            f"{v} acc {ref_quality[v, scale][0]:.4f} ll {ref_quality[v, scale][1]:.2f}"
            for v in variants
        )
        print(f"{args.reference_steps}-step references: {refs}")
        print(
            f"{'sampler':12} {'steps':>5} {'acc':>7} {'ll':>8} {'ll-ref':>8} {'rms':>9} {'/CFG':>6}"
        )
        for r in rows:
            if r.scale == scale:
                ratio = r.rms / plain[r.scale, r.steps]
                print(
                    f"{r.setting.name:12} {r.steps:5d} {r.acc:7.4f} {r.ll:8.2f} "
                    f"{r.ll_gap:8.2f} {r.rms:9.2e} {ratio:6.2f}"
                )

    pp_scales = [float(v) for v in args.cfg_pp_scales.split(",")]
    print("\nCFG++ 2M on its own scale range: acc / ll per step count")
    print(f"{'scale':>6} " + " ".join(f"{f'{n} steps':>16}" for n in step_counts))
    for scale in pp_scales:
        pp_cells = []
        for steps in step_counts:
            acc, ll = quality(
                model, run(net, labels, x_T, Setting("CFG++", 2), scale, steps), labels
            )
            pp_cells.append(f"{acc:7.4f} {ll:8.2f}")
        print(f"{scale:6g} " + " ".join(pp_cells))

    # Are the references converged results? Per variant at the highest scale: the distance
    # from the half-step-count run (a limit exists if it is small next to the sweep's own
    # distances) and, for the 3M rows scored against 2M references, the same for 3M.
    check_scale, half = scales[-1], max(args.reference_steps // 2, 1)
    print(
        f"\nReference check at scale {check_scale:g} (drift = RMS({half}, {args.reference_steps}"
        f" steps) / RMS({max(step_counts)}, {args.reference_steps} steps); a sampler with a "
        "small-step limit has drift << 1)"
    )
    drift: dict[str, float] = {}
    for variant in variants:
        ref = references[variant, check_scale]
        halfway = rms(run(net, labels, x_T, Setting(variant, 2), check_scale, half), ref)
        drift[variant] = halfway / by_cell[Setting(variant, 2), check_scale, max(step_counts)]
        line = f"  {variant:7} RMS({half}, {args.reference_steps}) = {halfway:.1e}"
        line += f"  drift {drift[variant]:.3f}"
        if variant != "CFG++":
            half3 = run(net, labels, x_T, Setting(variant, 3), check_scale, half)
            line += f"  RMS(3M at {half}, 2M at {args.reference_steps}) = {rms(half3, ref):.1e}"
        print(line)

    # Recommendation, from the numbers above: in the cells with high guidance and few steps,
    # among the samplers whose mean accuracy is within 1 point of the best there and whose
    # guidance variant has a small-step limit (drift < 0.1 in the reference check), the one
    # with the smallest geometric-mean rms ratio to plain CFG 2M (the least solver error);
    # ll is reported, not ranked: a few-step ll above the converged one means results that
    # are too smooth (see the module docstring), not better ones.
    high = min(HIGH_SCALE, max(scales))
    few = max(FEW_STEPS, min(step_counts))
    cells = [r for r in rows if r.scale >= high and r.steps <= few]
    print(
        f"\nRecommendation (scales >= {high:g}, steps <= {few}): per sampler the geometric "
        "mean of rms / CFG 2M, and the means of acc, ll and ll-ref"
    )
    summary: dict[Setting, tuple[float, float, float, float]] = {}
    for setting in settings:
        mine = [r for r in cells if r.setting == setting]
        log_ratio = sum(math.log(r.rms / plain[r.scale, r.steps]) for r in mine) / len(mine)
        summary[setting] = (
            math.exp(log_ratio),
            sum(r.acc for r in mine) / len(mine),
            sum(r.ll for r in mine) / len(mine),
            sum(r.ll_gap for r in mine) / len(mine),
        )
        ratio, acc, ll, gap = summary[setting]
        print(
            f"  {setting.name:12} rms ratio {ratio:5.2f}  acc {acc:.4f}  ll {ll:7.2f}  "
            f"ll-ref {gap:7.2f}"
        )
    best_acc = max(v[1] for v in summary.values())
    converging = {k for k in settings if drift[k.variant] < 0.1}
    accurate = {k for k, v in summary.items() if v[1] >= best_acc - 0.01}
    eligible = [k for k in settings if k in converging and k in accurate]
    if not eligible:
        print("   (no sampler passes both checks, e.g. in a quick run: ranking all of them)")
        eligible = list(settings)
    pick = min(eligible, key=lambda k: summary[k][0])
    ratio, acc, ll, gap = summary[pick]
    print(
        f"=> at high guidance with few steps use {pick.name}: the smallest distance to its "
        f"own converged result ({ratio:.2f}x plain CFG 2M's) at accuracy {acc:.4f} "
        f"(best {best_acc:.4f}); mean ll {ll:.2f}."
    )
    if pick != baseline and ratio > 0.9:
        print(
            f"   Its margin over plain CFG 2M is under 10% ({ratio:.2f}x): the two are about "
            "equal here."
        )
    low_acc = [k.name for k in settings if k not in accurate and k not in eligible]
    if low_acc:
        print(f"   Left out for accuracy more than 1 point below the best: {', '.join(low_acc)}.")
    drifting = [k.name for k in settings if k not in converging and k not in eligible]
    if drifting:
        print(f"   Left out for having no small-step limit (drift >= 0.1): {', '.join(drifting)}.")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
