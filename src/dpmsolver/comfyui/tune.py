"""A tuned solver for a ComfyUI model: `optimize_solver` on the model as ComfyUI's samplers
call it (classifier-free guidance included), run inside a sampler call so that ComfyUI
loads the model and prepares the conditioning as for any sampling; cached as JSON."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..k_diffusion.denoiser import KDenoiser, extra_kwargs, sampling, schedule_for
from ..tools.measure import counting
from ..tools.progress import Progress
from ..tuning import TunedSolver, optimize_solver
from ..tuning.solver_search import held_out_count

__all__ = ["MAX_EVALUATIONS", "cache_path", "max_calls_for", "tune_in_sampler"]

# What a tuning may cost at most, in evaluations (the model on one latent, guidance
# included): the reference and the search together.
MAX_EVALUATIONS = 50_000
# The pilot reference's size (candidates, DPM-Solver-3 steps per candidate interval).
CANDIDATES, SUBSTEPS = 64, 4
REFERENCE_CALLS = 3 * CANDIDATES * SUBSTEPS + CANDIDATES  # `pilot_reference`'s cost


def max_calls_for(pilots: int) -> int:
    """The search's call budget that keeps a tuning on `pilots` latents within
    MAX_EVALUATIONS: the reference's calls are on every pilot, the search's on the tuning
    three quarters."""
    reference = REFERENCE_CALLS * pilots
    tuning = pilots - held_out_count(pilots)
    return max(0, (MAX_EVALUATIONS - reference) // tuning)


def tune_in_sampler(
    model: Any,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Any = None,
    disable: bool | None = None,
    *,
    nfe: int,
    found: list[TunedSolver],
    max_calls: int,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Tensor:
    """A sampler function that tunes instead of sampling: `optimize_solver` with `nfe`
    calls from sigmas[0] to the last positive sigma, the batch x (the pilots, noised by
    ComfyUI) as pilot states; the result is appended to `found` and x returned unchanged.
    `progress(done, total)` is called at every model call; `max_calls` and `options` are
    optimize_solver's."""
    kind = sampling(model, None)
    positive = [float(s) for s in sigmas.tolist() if s > 0]
    schedule = schedule_for(kind, positive[-1], positive[0])
    hidden = Progress(0, True)
    denoiser = KDenoiser(model, schedule, extra_kwargs(extra_args), {}, None, hidden)
    pilots = int(x.shape[0])
    total = REFERENCE_CALLS + max_calls
    start, done = time.perf_counter(), [0]

    def on_call() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
        if done[0] in (total // 20, total // 4, total // 2, 3 * total // 4):
            left = (time.perf_counter() - start) / done[0] * (total - done[0])
            print(f"dpmsolver tune: {done[0]}/{total} calls, at most {left:.0f} s left")

    tuned = optimize_solver(
        counting(denoiser, on_call)[0],
        nfe,
        x_T=x,
        pilots=pilots,
        candidates=CANDIDATES,
        substeps=SUBSTEPS,
        # The batch ComfyUI noised is all the node's pilots: MAX_EVALUATIONS has no room
        # for extra held-out noises beside them.
        held_out_noises=0,
        max_calls=max_calls,
        **options,
    )
    found.append(tuned)
    return x


def cache_path(parts: dict[str, Any], folder: str | os.PathLike[str] | None = None) -> Path:
    """The cache file of a tuning: a hash of its inputs (`parts`: the model's identity, the
    conditioning, guidance, size, budget, pilots, seed) in `folder` (default
    $DPMSOLVER_COMFYUI_CACHE, else ComfyUI's user folder / dpmsolver, else
    ~/.cache/dpmsolver/comfyui)."""
    digest = hashlib.sha256()
    for key in sorted(parts):
        digest.update(key.encode())
        _feed(digest, parts[key])
    if folder is None:
        folder = os.environ.get("DPMSOLVER_COMFYUI_CACHE") or _default_folder()
    return Path(folder) / f"tuned-{digest.hexdigest()[:24]}.json"


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        data = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"[{len(value)}]".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(json.dumps(value, default=str).encode())


def _default_folder() -> Path:
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is not None and hasattr(folder_paths, "get_user_directory"):
        return Path(folder_paths.get_user_directory()) / "dpmsolver"
    return Path.home() / ".cache" / "dpmsolver" / "comfyui"
