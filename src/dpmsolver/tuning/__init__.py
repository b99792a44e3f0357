"""Tuning for a model and a model-call budget, above the core (it imports only public
names of the core's modules).

    pilots         the pilots' fine reference solution that every search shares
    grid_search    `optimize_time_grid`: a time grid for a given solver
    solver_search  `optimize_solver`: the grid, solver and per-step coefficients together
    refinement     its search space: runs on the pilots re-done from any step through the
                   core's stepper, and the Levenberg-Marquardt refinement
    values         what they return, `TunedGrid` and `TunedSolver`: plain JSON values every
                   face runs
    budget         the budget benchmark: tuned against untuned settings on held-out noises
"""

from .grid_search import optimize_time_grid
from .pilots import PilotReference, pilot_reference
from .solver_search import optimize_solver, optimize_solvers
from .values import TunedGrid, TunedSolver

__all__ = [
    "PilotReference",
    "TunedGrid",
    "TunedSolver",
    "optimize_solver",
    "optimize_solvers",
    "optimize_time_grid",
    "pilot_reference",
]
