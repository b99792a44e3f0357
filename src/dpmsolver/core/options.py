"""The solver options: one frozen, hashable value that every face, tool and preset passes.

`SolverOptions` is the single definition of every option of `dpmsolver.sample`: its type,
default, check (in `__post_init__`, with one clear error naming the option) and meaning
(the class docstring), and what a setting implies (`form`, `model_calls`, `num_steps`,
`steps_for_calls`). The plan cache keys on it. Checks that need the schedule (times inside
its range, the analytic first step's start) are made when a run is planned (`plan`).

Adding an option: a field with its default here, its line in the docstring, its check in
`__post_init__`, and its use where the plan or the loop reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from torch import Tensor

from ..checks import check_bool, check_choice, check_float, check_int
from .coefficients import Multistep3, SolverType, Variant
from .grids import MAX_GRID_STEPS, SKIP_TYPES, SkipType, check_grid, singlestep_orders

__all__ = [
    "ALGORITHMS",
    "CORRECTORS",
    "DPM_ALGORITHMS",
    "MAX_STEPS",
    "METHODS",
    "MULTISTEP3",
    "SOLVER_TYPES",
    "VARIANTS",
    "Algorithm",
    "Corrector",
    "Method",
    "SolverOptions",
]

Algorithm = Literal["dpmsolver++", "dpmsolver", "ipndm", "deis"]
Method = Literal["multistep", "singlestep", "singlestep_fixed", "adaptive"]
Corrector = Literal["off", "all", "low_noise"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
DPM_ALGORITHMS: tuple[str, ...] = ("dpmsolver++", "dpmsolver")  # the faces' algorithm_type
METHODS: tuple[str, ...] = get_args(Method)
CORRECTORS: tuple[str, ...] = get_args(Corrector)
SOLVER_TYPES: tuple[str, ...] = get_args(SolverType)
MULTISTEP3: tuple[str, ...] = get_args(Multistep3)
VARIANTS: tuple[str, ...] = get_args(Variant)

Grid = Sequence[float] | Tensor | None
# The most steps a fixed-step run plans (planning takes ~10 us and ~1 kB per step on the
# host before the first model call); the adaptive method has no such bound.
MAX_STEPS = MAX_GRID_STEPS


@dataclass(frozen=True)
class SolverOptions:
    """How to solve the diffusion ODE: every option of `dpmsolver.sample` and `Sampler`.

    Attributes:
        steps: the number of steps of the fixed-step methods. Multistep takes one model
            call per step (steps - 1 calls with `analytic_first_step`); 'singlestep' mixes
            its orders to take exactly `steps` calls; 'singlestep_fixed' takes steps // order
            steps of `order` calls each (`model_calls()` gives the count).
        order: 1, 2 or 3 (1 is DDIM); 1 to 4 for algorithm='ipndm'.
        method: 'multistep' (Adams-like, 1 call per step: DPM-Solver++(2M)/(3M)),
            'singlestep' (Runge-Kutta-like, orders mixed to use exactly `steps` calls),
            'singlestep_fixed' (steps // order steps of order `order`), or 'adaptive'
            (DPM-Solver-12 / -23 for order 2 / 3, step size from atol/rtol; ignores steps).
        algorithm: 'dpmsolver++' (data form; stable with guidance and thresholding),
            'dpmsolver' (noise form), 'ipndm' (multistep only: Adams-Bashforth steps in
            sigma = sigma_t / alpha_t with fixed equal-step weights, orders 1-4, noise form)
            or 'deis' (multistep only:
            tAB-DEIS as ComfyUI's sample_deis, eps extrapolated by a Lagrange polynomial in
            its time variable and integrated over the step in sigma, orders 1-3, noise
            form; see `deis_update`).
        skip_type: time grid: 'time_uniform', 'logSNR', 'time_quadratic', 'karras',
            'exponential', 'beta' or 'kl_optimal' (see `grids`).
        t_start: the start time; default schedule.t_max. t_start < t_end runs the ODE
            from data to noise (inversion).
        t_end: the end time; default schedule.t_min.
        timesteps: a user-given grid of times (strictly monotone, inside the schedule's
            range) used instead of steps / skip_type / t_start / t_end. Multistep takes one
            step per interval; singlestep methods one step of order `order` per interval,
            with intermediate points uniform in lambda. Kept as a tuple of floats.
        sigmas: the same as `timesteps`, given as noise levels sigma_t / alpha_t (the VE /
            k-diffusion convention), positive and strictly monotone; levels within 1e-4
            (relative) outside the schedule's range are moved onto its ends, so rounded
            published grids (`align_your_steps`) fit.
        lower_order_final: multistep runs with fewer than `lower_order_final_below` steps
            lower the order of their final steps (the last step of a time-uniform grid is
            by far the largest in lambda); this stabilises few-step sampling.
        lower_order_final_below: 15 by default, as the authors' documentation and
            diffusers say; the authors' code uses 10 (`DPM_Solver` keeps 10; see
            docs/benchmarks.md, "Where we differ from the reference").
        denoise_to_zero: finish with x = x0_pred(x, t_end) (one more model call).
        solver_type: 'dpmsolver' or 'taylor' form of the second/third-order corrections.
        atol: the absolute tolerance of the adaptive method.
        rtol: the relative tolerance of the adaptive method.
        multistep3: the third-order multistep rule (method 'multistep', order 3, the
            DPM-Solver algorithms): 'damped' (the authors': the second difference at half
            its Taylor weight; global order 2) or 'exact' (global order 3). Which is more
            accurate where: docs/benchmarks.md.
        eta: noise of the reverse SDE, >= 0: 0 is the ODE (default), 1 the full SDE
            (larger values, as k-diffusion allows, add more noise). With method
            'multistep' (orders 1 to 3): SDE-DPM-Solver++, the exact linear part with the
            noise scaled by eta (k-diffusion's "DPM-Solver++(2M) SDE" at order 2,
            "(3M) SDE" at order 3 with solver_type='taylor', its warm-up step's form);
            algorithm='dpmsolver++' (any eta) or 'dpmsolver' (eta = 1, orders 1-2:
            SDE-DPM-Solver in the noise form). From pure noise (alpha = 0, a flow
            schedule at t = 1) the first SDE step spans an infinite lambda interval and
            keeps nothing of x for any eta > 0, as the exact SDE solution does.
            With 'singlestep' / 'singlestep_fixed' (orders 1-2, 'dpmsolver++',
            solver_type 'dpmsolver'): stochastic DPM-Solver++, each split an ancestral
            step of strength eta, the stage at r = 1/2 in lambda (k-diffusion's
            "DPM-Solver++ SDE"; see `ancestral`). The noise is drawn from the run's
            generator, or from a `noise_sampler` (e.g. a Brownian tree).
        ancestral: singlestep with eta > 0 only: take each step as the deterministic
            DPM-Solver++(2S) step to sigma_down, then add noise sigma_up (k-diffusion's
            "DPM-Solver++(2S) ancestral"), instead of an ancestral split at each stage
            (False, default: "DPM-Solver++ SDE").
        cfg_pp: CFG++ (Chung et al., 2024) for classifier-free guided models: multistep
            DPM-Solver++ whose renoising direction is the unconditional prediction, x_t =
            alpha_t x0_guided + sigma_t eps_uncond at order 1, earlier outputs taken from
            the unconditional model (ComfyUI's dpmpp_2m_cfg_pp at order 2). Needs a model
            that gives both predictions from one call (`Denoiser` with `ClassifierFree`
            and uncond), method 'multistep', algorithm 'dpmsolver++', eta = 0, no
            corrector. A guidance scale acts more strongly under CFG++ (docs/choosing.md,
            "Guided sampling").
        corrector: UniC corrector after each multistep step, at no extra model call (the
            output at the predicted state, which the next step needs anyway, corrects the
            step just taken; the last step is not corrected): 'off' (default), 'all', or
            'low_noise' (only the second half of the steps, for large classifier-free
            guidance: docs/choosing.md). Raises the order by one.
            dpmsolver / dpmsolver++ multistep with eta = 0 only.
        corrector_variant: B(h) of the corrector: 'bh2' (e^h - 1, default; UniPC's choice
            for guided sampling) or 'bh1' (h); they differ in order-1 corrections only.
        analytic_first_step: multistep only: take the first step without a model call,
            with x0_pred = 0 (eps_pred = x_T / sigma_T), so `steps` steps cost steps - 1
            calls. Near pure noise the network's output is that up to
            (alpha_T / sigma_T) * E[x0 | x_T], small for centred data; the call saved buys
            one more step. Needs steps >= 2 and alpha / sigma <= 0.1 at t_start.
        coefficients: tuned update rules (what `dpmsolver.optimize_solver` fits), one tuple
            per step of a given multistep grid (ODE, no CFG++): (d_x, d_0, ..., d_{k-1}) for
            the step's rule of order k, then (d_x, d_0, ..., d_k) for its corrector when
            it has one. The rule x_t = cx x_s + sum_j cm_j m_j becomes
            cx (1 + d_x) x_s + sum_j (cm_j + alpha_t d_j) m_j: d_x scales the exact linear
            part, and d_j adds to the weights of the model outputs in the x / alpha frame,
            so the same numbers give the same run in every parametrisation of the same
            lambdas (VP times, VE sigmas). None (default): the analytic rules.
    """

    steps: int = 20
    order: int = 2
    method: Method = "multistep"
    algorithm: Algorithm = "dpmsolver++"
    skip_type: SkipType = "time_uniform"
    t_start: float | None = None
    t_end: float | None = None
    timesteps: tuple[float, ...] | None = None
    sigmas: tuple[float, ...] | None = None
    lower_order_final: bool = True
    lower_order_final_below: int = 15
    denoise_to_zero: bool = False
    solver_type: SolverType = "dpmsolver"
    atol: float = 0.0078
    rtol: float = 0.05
    multistep3: Multistep3 = "damped"
    eta: float = 0.0
    ancestral: bool = False
    cfg_pp: bool = False
    corrector: Corrector = "off"
    corrector_variant: Variant = "bh2"
    analytic_first_step: bool = False
    coefficients: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        # Each option is checked once, here, in an order that names the first option a
        # caller got wrong; what needs the schedule is checked when the run is planned.
        self._check_choices()
        self._check_noise()
        self._check_cfg_pp()
        self._check_grid()
        self._check_steps_and_flags()
        self._check_tolerances()

    def _check_choices(self) -> None:
        """The closed choices, the order, and the options that belong to one solver."""
        method, algorithm, corrector = self.method, self.algorithm, self.corrector
        check_choice("method", method, METHODS)
        check_choice("algorithm", algorithm, ALGORITHMS)
        check_choice("skip_type", self.skip_type, SKIP_TYPES)
        check_choice("solver_type", self.solver_type, SOLVER_TYPES)
        order = check_int("order", self.order, 1, 4 if algorithm == "ipndm" else 3)
        self._set("order", order)
        self._set(
            "lower_order_final_below",
            check_int("lower_order_final_below", self.lower_order_final_below, 1),
        )
        check_choice("corrector", corrector, CORRECTORS)
        check_choice("corrector_variant", self.corrector_variant, VARIANTS)
        if algorithm in ("ipndm", "deis") and method != "multistep":
            raise ValueError(f"algorithm={algorithm!r} needs method='multistep'; got {method!r}")
        if corrector != "off" and (method != "multistep" or algorithm in ("ipndm", "deis")):
            raise ValueError(
                f"corrector={corrector!r} needs method='multistep' and algorithm 'dpmsolver++' "
                f"or 'dpmsolver'; got method={method!r}, algorithm={algorithm!r}"
            )
        check_choice("multistep3", self.multistep3, MULTISTEP3)
        if self.multistep3 != _DEFAULTS["multistep3"] and (
            method != "multistep" or algorithm in ("ipndm", "deis") or order != 3
        ):
            raise ValueError(
                f"multistep3={self.multistep3!r} is the form of DPM-Solver's third-order "
                f"multistep rule; method={method!r}, algorithm={algorithm!r}, order={order} "
                "has none"
            )
        if self.corrector_variant != _DEFAULTS["corrector_variant"] and corrector == "off":
            raise ValueError(
                f"corrector_variant={self.corrector_variant!r} is B(h) of the UniC corrector, "
                "which is off; give corrector='all' or 'low_noise' with it"
            )

    def _check_noise(self) -> None:
        """eta (the SDE's noise) and the solvers that take it; ancestral."""
        method, algorithm, order = self.method, self.algorithm, self.order
        eta = check_float("eta", self.eta)
        if eta != 0.0:
            if not eta > 0.0:
                raise ValueError(f"eta must be >= 0 (0: the ODE, 1: the full SDE); got {eta}")
            if method == "multistep":
                form_ok = algorithm == "dpmsolver++" or (
                    algorithm == "dpmsolver" and eta == 1.0 and order <= 2
                )
            else:
                form_ok = method != "adaptive" and algorithm == "dpmsolver++" and order <= 2
            if not form_ok:
                raise ValueError(
                    "eta > 0 (SDE-DPM-Solver) needs method='multistep' with algorithm "
                    "'dpmsolver++' (orders 1-3) or 'dpmsolver' (eta=1, orders 1-2), or a "
                    "singlestep method with algorithm 'dpmsolver++' and order 1 or 2; got "
                    f"{algorithm!r}, {method!r}, order {order}, eta {eta}"
                )
            if self.corrector != "off":
                raise ValueError(f"corrector={self.corrector!r} needs eta=0; got eta={eta}")
            if method != "multistep" and self.solver_type != "dpmsolver":
                raise ValueError(
                    "the stochastic singlestep solver (eta > 0) combines its stage in the "
                    f"midpoint form only; got solver_type={self.solver_type!r} (use "
                    "'dpmsolver')"
                )
        self._set("ancestral", check_bool("ancestral", self.ancestral))
        if self.ancestral and (eta == 0.0 or method not in ("singlestep", "singlestep_fixed")):
            raise ValueError(
                "ancestral=True is the ancestral form of the stochastic singlestep solver: it "
                f"needs eta > 0 and a singlestep method; got eta={eta}, method={method!r}"
            )
        self._set("eta", eta)

    def _check_cfg_pp(self) -> None:
        """CFG++ and the one solver it has: multistep DPM-Solver++ (ODE, no corrector)."""
        self._set("cfg_pp", check_bool("cfg_pp", self.cfg_pp))
        if not self.cfg_pp:
            return
        wrong = [
            f"{name}={getattr(self, name)!r}"
            for name, ok in (
                ("method", self.method == "multistep"),
                ("algorithm", self.algorithm == "dpmsolver++"),
                ("eta", self.eta == 0.0),
                ("corrector", self.corrector == "off"),
                ("analytic_first_step", not self.analytic_first_step),
            )
            if not ok
        ]
        if wrong:
            raise ValueError(
                "cfg_pp=True needs method='multistep', algorithm='dpmsolver++', eta=0, "
                f"corrector='off' and no analytic_first_step; got {', '.join(wrong)}"
            )

    def _check_grid(self) -> None:
        """A given grid (timesteps or sigmas), or the grid's step count and ends."""
        if self.sigmas is not None:
            if self.timesteps is not None:
                raise ValueError("give timesteps or sigmas, not both")
            sigmas = check_grid("sigmas", self.sigmas, increasing=True, positive=True)
            self._set("sigmas", tuple(sigmas.tolist()))
        if self.timesteps is not None:
            grid = check_grid("timesteps", self.timesteps, increasing=True)
            self._set("timesteps", tuple(grid.tolist()))
        if not self.has_grid:
            if self.method != "adaptive":
                # Planning costs host time and memory per step before the first call.
                self._set("steps", check_int("steps", self.steps, 1, MAX_STEPS))
            elif self.steps != _DEFAULTS["steps"]:
                raise ValueError(
                    f"steps={self.steps!r} is the step count of the fixed-step methods; "
                    "method='adaptive' chooses its steps from atol and rtol"
                )
            for name in ("t_start", "t_end"):
                value = getattr(self, name)
                if value is not None:
                    self._set(name, check_float(name, value))
            return
        name = "timesteps" if self.timesteps is not None else "sigmas"
        if self.grid_steps > MAX_STEPS:
            raise ValueError(
                f"{name} has {self.grid_steps + 1} entries; at most {MAX_STEPS + 1} ({MAX_STEPS} "
                "steps): planning costs host time and memory per step before the first call"
            )
        if self.method == "adaptive":
            raise ValueError(f"{name} cannot be used with method='adaptive'")
        for end in ("t_start", "t_end"):
            if getattr(self, end) is not None:
                raise ValueError(
                    f"{end}={getattr(self, end)!r} cannot be given with {name}: the grid's "
                    "first and last entries are where the run starts and ends"
                )
        for key in ("steps", "skip_type"):
            if getattr(self, key) != _DEFAULTS[key]:
                raise ValueError(
                    f"{key}={getattr(self, key)!r} cannot be given with {name}: the given "
                    "grid sets the steps and their spacing"
                )

    def _check_steps_and_flags(self) -> None:
        """The booleans, the analytic first step, the steps the order needs, and tuned
        coefficients."""
        for name in ("lower_order_final", "denoise_to_zero", "analytic_first_step"):
            self._set(name, check_bool(name, getattr(self, name)))
        if self.analytic_first_step:
            if self.method != "multistep":
                raise ValueError(
                    f"analytic_first_step needs method='multistep'; got {self.method!r}"
                )
            if self.grid_steps < 2:
                raise ValueError(
                    "analytic_first_step needs steps >= 2 (one model call at least); got "
                    f"{self.grid_steps}"
                )
        if not self.has_grid:  # a given grid is checked against the schedule first (`plan`)
            self.check_steps()
        if self.coefficients is not None:
            self._set("coefficients", self._checked_coefficients())

    def _check_tolerances(self) -> None:
        """The adaptive method's order and tolerances, which no other method takes."""
        if self.method == "adaptive":
            if self.order not in (2, 3):
                raise ValueError(f"adaptive needs order 2 or 3; got order={self.order}")
            self._set("atol", check_float("atol", self.atol, positive=True))
            self._set("rtol", check_float("rtol", self.rtol, positive=True))
            return
        for name in ("atol", "rtol"):
            if getattr(self, name) != _DEFAULTS[name]:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is the tolerance of method='adaptive'; "
                    f"method={self.method!r} steps on a fixed grid and would ignore it"
                )

    def _checked_coefficients(self) -> tuple[tuple[float, ...], ...]:
        """`coefficients` as a tuple of float tuples, one per step of a given multistep ODE
        grid (their lengths are checked against the rules when the run is planned)."""
        wrong = [
            f"{name}={getattr(self, name)!r}"
            for name, ok in (
                ("method", self.method == "multistep"),
                ("eta", self.eta == 0.0),
                ("cfg_pp", not self.cfg_pp),
            )
            if not ok
        ]
        if wrong or not self.has_grid:
            got = ", ".join(wrong) if wrong else "no timesteps or sigmas"
            raise ValueError(
                "coefficients are tuned per step of a given grid: they need timesteps or "
                f"sigmas, method='multistep', eta=0 and cfg_pp=False; got {got}"
            )
        rows = self.coefficients
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise TypeError(
                f"coefficients must be a sequence of per-step sequences of floats; got "
                f"{type(rows).__name__}"
            )
        if len(rows) != self.grid_steps:
            raise ValueError(
                f"coefficients has {len(rows)} rows; the grid has {self.grid_steps} steps "
                "(one row per step)"
            )
        out = []
        for i, row in enumerate(rows):
            if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or not row:
                raise TypeError(
                    f"coefficients[{i}] must be a non-empty sequence of floats; got {row!r}"
                )
            out.append(tuple(check_float(f"coefficients[{i}]", v) for v in row))
        return tuple(out)

    def check_steps(self) -> None:
        """Raise ValueError if there are fewer steps than the order needs (multistep warms
        up over `order` steps; singlestep_fixed takes steps // order steps)."""
        steps, order = self.grid_steps, self.order
        if self.method == "multistep" and steps < order:
            if self.has_grid:
                name = "timesteps" if self.timesteps is not None else "sigmas"
                raise ValueError(
                    f"multistep needs steps >= order; the {name} give {steps} step(s), fewer "
                    f"than order={order}: give more entries or a lower order"
                )
            raise ValueError(f"multistep needs steps >= order; got steps={steps}, order={order}")
        if self.method == "singlestep_fixed" and steps < order and not self.has_grid:
            raise ValueError(
                f"singlestep_fixed needs steps >= order; got steps={steps}, order={order}"
            )

    def _set(self, name: str, value: Any) -> None:
        # A frozen dataclass stores its normalised fields (floats, tuples) this way.
        object.__setattr__(self, name, value)

    @classmethod
    def of(cls, options: SolverOptions | None = None, **changes: Any) -> SolverOptions:
        """`options` (default: all defaults; or a tuned value with a `solver()` method, e.g.
        a `TunedSolver`, for its setting) with `changes` applied; an unknown name is a
        TypeError that lists the options."""
        unknown = sorted(set(changes) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(
                f"unknown solver option {unknown[0]!r}; the options are {', '.join(OPTION_NAMES)}"
            )
        if options is None:
            return cls(**changes)
        if not isinstance(options, SolverOptions) and callable(getattr(options, "solver", None)):
            options = options.solver()  # a tuned value (TunedSolver, TunedGrid): its setting
        if not isinstance(options, SolverOptions):
            raise TypeError(
                f"options must be a SolverOptions or None, got {type(options).__name__}"
            )
        return dataclasses.replace(options, **changes) if changes else options

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults, by name (a canonical, JSON-ready
        record of the setting: grids as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                if f.name == "coefficients":
                    out[f.name] = [list(row) for row in value]
                else:
                    out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # -- what a setting implies -------------------------------------------------------

    @property
    def form(self) -> Literal["noise", "data"]:
        """The prediction the update rules integrate: x0_pred ('data', DPM-Solver++) or
        eps_pred ('noise', DPM-Solver, iPNDM and DEIS)."""
        return "data" if self.algorithm == "dpmsolver++" else "noise"

    @property
    def has_grid(self) -> bool:
        """Whether the grid is given (timesteps or sigmas) rather than asked for."""
        return self.timesteps is not None or self.sigmas is not None

    @property
    def grid_steps(self) -> int:
        """Intervals of the grid: those of a given grid, else `steps`."""
        grid = self.timesteps if self.timesteps is not None else self.sigmas
        return len(grid) - 1 if grid is not None else self.steps

    def lowers_final_order(self, steps: int) -> bool:
        """Whether a multistep run of `steps` steps lowers the order of its final steps."""
        return self.lower_order_final and steps < self.lower_order_final_below

    def num_steps(self) -> int | None:
        """Steps the run takes (callbacks after step 0), None for 'adaptive' (unknown in
        advance)."""
        steps = self.grid_steps
        if self.method == "adaptive":
            return None
        if self.method == "singlestep" and not self.has_grid:
            return len(singlestep_orders(steps, self.order))
        if self.method == "singlestep_fixed" and not self.has_grid:
            return steps // self.order
        return steps

    def model_calls(self) -> int | None:
        """Model calls of a run (None for 'adaptive'): one per multistep step (none for an
        analytic first step), the orders' sum for singlestep, plus denoise_to_zero's."""
        steps = self.grid_steps
        if self.method == "adaptive":
            return None
        if self.method == "multistep":
            calls = steps - 1 if self.analytic_first_step else steps
        elif self.has_grid:
            calls = steps * self.order
        elif self.method == "singlestep":
            calls = steps
        else:
            calls = (steps // self.order) * self.order
        return calls + int(self.denoise_to_zero)

    def steps_for_calls(self, nfe: int) -> int:
        """Multistep steps that cost `nfe` model calls (the analytic first step saves one)."""
        return nfe + 1 if self.analytic_first_step else nfe


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SolverOptions))


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SolverOptions)}
