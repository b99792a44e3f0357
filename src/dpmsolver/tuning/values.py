"""Tuned values: what the tuners found for one model and budget, with its provenance.

Plain values (lists of numbers and the solver options as a JSON record) that every face
can run, saved to and loaded from JSON:
- `TunedGrid` (from `optimize_time_grid`): a time grid for a given solver,
  `sample(model, x, timesteps=g.times, **g.options)`.
- `TunedSolver` (from `optimize_solver`): a grid, a base solver and per-step coefficients,
  `sample(model, x, solver=tuned)`; shipped ones are read by `dpmsolver.models.tuned_solver`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from ..checks import check_float, check_int
from ..core import NoiseSchedule, SolverOptions, check_grid, check_noise_levels

__all__ = ["TunedGrid", "TunedSolver", "check_solver_record"]


_R = TypeVar("_R", bound="_JsonRecord")


class _JsonRecord:
    """to_json / from_json for the dataclasses here: their fields as a JSON object, floats
    written exactly (repr), so a loaded value runs bit-identically."""

    def to_json(self, path: str | Path | None = None) -> str:
        """The value and its provenance as JSON (written to `path` if given)."""
        text = json.dumps(asdict(self), indent=1)  # type: ignore[call-overload]
        if path is not None:
            if not isinstance(path, str | os.PathLike) or not os.fspath(path):
                raise TypeError(f"path must be a file path (str or os.PathLike); got {path!r}")
            if Path(path).is_dir():
                raise ValueError(f"path={os.fspath(path)!r} is a folder; give a file name")
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls: type[_R], text_or_path: str | Path) -> _R:
        """Read what `to_json` wrote (a path or the JSON text)."""
        if not isinstance(text_or_path, str | Path):
            raise TypeError(
                f"text_or_path must be JSON text or a path; got {type(text_or_path).__name__}"
            )
        text = str(text_or_path)
        if not text.strip():
            raise ValueError("text_or_path is empty; give the JSON text or a file's path")
        if isinstance(text_or_path, Path) or _is_file(text):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(
                    f"{cls.__name__}.from_json: cannot read {text!r}: {error}"
                ) from None
        try:
            data = json.loads(text)
        except ValueError as error:
            if not text.lstrip().startswith(("{", "[")):
                raise ValueError(
                    f"{cls.__name__}.from_json: {text!r:.80} is neither a file nor JSON text"
                ) from None
            raise ValueError(f"{cls.__name__}.from_json: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{cls.__name__}.from_json needs a JSON object (what to_json writes); got a "
                f"{type(data).__name__}"
            )
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        required = {
            f.name
            for f in fields(cls)  # type: ignore[arg-type]
            if f.default is MISSING and f.default_factory is MISSING
        }
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise ValueError(
                f"{cls.__name__}.from_json: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown fields {unknown}" if unknown else "",
                        f"missing fields {missing}" if missing else "",
                    )
                    if part
                )
            )
        return cls(**data)


def check_solver_record(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a tuned solver's record that run it (times, sigmas, options,
    coefficients), checked and normalised; a missing or malformed one is a ValueError /
    TypeError naming it. The diffusers face reads a saved record through it."""
    missing = [k for k in ("times", "sigmas", "options", "coefficients") if k not in record]
    if missing:
        raise ValueError(f"a tuned solver's record needs {', '.join(missing)}")
    times = _times("times", record["times"])
    sigmas = record["sigmas"]
    if not isinstance(sigmas, list | tuple) or len(sigmas) != len(times):
        raise ValueError(
            f"sigmas must be a list of {len(times)} noise levels, one per time; got {sigmas!r:.80}"
        )
    rows = record["coefficients"]
    if rows is not None:
        if not isinstance(rows, list | tuple) or len(rows) != len(times) - 1:
            raise ValueError(
                f"coefficients must be None or one row per step ({len(times) - 1}); got "
                f"{rows!r:.80}"
            )
        rows = [
            [check_float(f"coefficients[{i}]", v) for v in _row(i, row)]
            for i, row in enumerate(rows)
        ]
    return dict(
        times=times,
        sigmas=[_level(i, v) for i, v in enumerate(sigmas)],
        options=_options(record["options"]),
        coefficients=rows,
    )


def _is_file(text: str) -> bool:
    """Whether `text` names an existing file (JSON text is too long for a name, or holds
    characters no name can)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _times(name: str, values: object) -> list[float]:
    """A tuned grid's times: at least 2 finite numbers, strictly monotone."""
    if not isinstance(values, list | tuple):
        raise TypeError(f"{name} must be a list of times; got {type(values).__name__}")
    return check_grid(name, list(values), increasing=True).tolist()


def _level(i: int, value: object) -> float:
    """A noise level sigma_t / alpha_t: > 0, and inf where alpha_t = 0 (pure noise)."""
    if isinstance(value, float) and value == math.inf:
        return value
    level = check_float(f"sigmas[{i}]", value)
    if not level > 0:
        raise ValueError(f"sigmas[{i}] must be > 0; got {level!r}")
    return level


def _options(options: object) -> dict[str, Any]:
    """The base solver's options as a dict by name (checked when the solver is made)."""
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"options must be a dict of solver options by name; got {options!r:.80}")
    return options


def _row(i: int, row: object) -> list[Any]:
    if not isinstance(row, list | tuple) or not row:
        raise TypeError(f"coefficients[{i}] must be a non-empty list of numbers; got {row!r}")
    return list(row)


@dataclass
class TunedGrid(_JsonRecord):
    """An optimised time grid (`times`, a plain list of steps + 1 floats, t_start first) and
    how it was found: the solver options it was tuned for (those that differ from the
    defaults, by name), the pilots' RMS error of the first (dynamic-programme) grid and of
    the final one, and the model calls spent."""

    times: list[float]
    nfe: int
    options: dict[str, Any]
    pilot_error: float
    initial_error: float
    model_calls: int
    seed: int
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = _times("times", self.times)
        self.nfe = check_int("nfe", self.nfe, 1)
        self.options = _options(self.options)

    def solver(self) -> SolverOptions:
        """The solver options with this grid: what `sample(model, x, g.solver())` runs."""
        return SolverOptions.of(timesteps=tuple(self.times), **self.options)


@dataclass
class TunedSolver(_JsonRecord):
    """A solver tuned for one model and model-call budget by `optimize_solver`.

    `times` (steps + 1 floats, t_start first) and `sigmas` (the same points as noise levels
    sigma_t / alpha_t, for the k-diffusion and diffusers faces), the base solver's
    `options` (those that differ from the defaults, by name; `setting` is its preset
    name), and `coefficients`: one row per step of `SolverOptions.coefficients`, or None
    when the fitted coefficients did not beat the analytic rules on the held-out states
    (`fallback` says so). Provenance: the model's name, the tuning pilots and the held-out
    states (held-out pilots and extra held-out noises) counted, the seed, the model calls
    spent (`model_calls`: 'reference', 'held_out_reference' and 'search', each call on a
    whole batch, and 'evaluations'), and the errors against the reference end states:
    `pilot_error` (RMS) on the tuning pilots, `held_out_error` and
    `analytic_held_out_error` (the same grid with the analytic rules) on the held-out
    states by the measure the choice used (`details['held_out_measure']`).
    """

    times: list[float]
    sigmas: list[float]
    nfe: int
    options: dict[str, Any]
    coefficients: list[list[float]] | None
    setting: str
    model: str
    pilots: int
    held_out: int
    seed: int | None  # None: the pilots were given as states, not drawn from a seed
    model_calls: dict[str, int]
    pilot_error: float
    held_out_error: float
    analytic_held_out_error: float
    fallback: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked = check_solver_record(self.__dict__)
        self.times, self.sigmas = checked["times"], checked["sigmas"]
        self.options, self.coefficients = checked["options"], checked["coefficients"]
        self.nfe = check_int("nfe", self.nfe, 1)

    def solver(self) -> SolverOptions:
        """The setting as solver options: what `sample(model, x, solver=tuned)` runs."""
        coefficients = None
        if self.coefficients is not None:
            coefficients = tuple(tuple(row) for row in self.coefficients)
        return SolverOptions.of(
            timesteps=tuple(self.times), coefficients=coefficients, **self.options
        )

    def check_schedule(self, schedule: NoiseSchedule, name: str = "schedule") -> None:
        """ValueError unless `schedule` gives this solver's noise levels sigma_t / alpha_t at
        its times (to 1e-6): the coefficients belong to the grid of the schedule they were
        tuned on."""
        check_noise_levels(schedule, self.times, self.sigmas, name)

    def analytic(self) -> SolverOptions:
        """The same grid and base solver with the analytic rules (no coefficients)."""
        return SolverOptions.of(timesteps=tuple(self.times), **self.options)
