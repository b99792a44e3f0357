"""Best setting per model-call budget on the built-in models, against DPM-Solver++ 2M/3M.

For each budget (4, 5, 6, 8, 10, 15, 20 model calls) `dpmsolver.bench.budget` runs every
searched solver (DPM-Solver++ 2M/3M with and without the UniC corrector, iPNDM 3/4) on
every standard grid and on a grid tuned by `optimize_time_grid` on 16 tuning noises,
picks the best on those noises, and scores it on 64 held-out noises against a 3000-call
reference. It prints the ratio to the best of DPM-Solver++ 2M/3M on logSNR and
time-uniform grids (chosen on the held-out noises themselves).

    python benchmarks/low_budget.py                    # both models (about 15 min, 1 thread)
    python benchmarks/low_budget.py --budgets 4,5,6,8,10 --models digits-exact \
        --write-grids exact.json                       # the grids to ship
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dpmsolver import bench
from dpmsolver.models import MODELS, TUNED_NFE, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", default="4,5,6,8,10,15,20")
    parser.add_argument("--settings", default=",".join(bench.BUDGET_SEARCH))
    parser.add_argument("--reference-nfe", type=int, default=3000)
    parser.add_argument("--pilots", type=int, default=64, help="tuning noises (default 64)")
    parser.add_argument(
        "--write-grids", type=Path, default=None, help="write the chosen grids to this JSON"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped: dict[str, dict[str, object]] = {}
    for name in args.models.split(","):
        start = time.perf_counter()
        result = bench.budget(
            load(name),
            [int(b) for b in args.budgets.split(",")],
            settings=args.settings.split(","),
            reference_nfe=args.reference_nfe,
            pilots=args.pilots,
        )
        print(f"== {name} ({time.perf_counter() - start:.0f} s)")
        print(result.table())
        shipped[name] = {
            str(r.nfe): dict(
                times=r.times,
                nfe=r.nfe,
                options=r.options,
                pilot_error=r.tuning_error,
                initial_error=r.tuning_error,
                model_calls=r.model_calls,
                seed=0,
                details=dict(
                    setting=r.setting,
                    grid=r.grid,
                    held_out_error=r.rms_error,
                    baseline=r.baseline,
                    baseline_error=r.baseline_error,
                ),
            )
            for r in result.rows
            if r.nfe in TUNED_NFE
        }
    if args.write_grids is not None:
        args.write_grids.write_text(json.dumps(shipped, indent=1) + "\n")
        print(f"wrote {args.write_grids}")


if __name__ == "__main__":
    main()
