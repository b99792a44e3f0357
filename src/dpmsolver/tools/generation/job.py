"""generate: one job, from its arguments to its shards, on one rank or many."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...checks import check_bool, check_device, check_int
from ...core import DiffusionModel, Sampler, SolverOptions, check_model
from ...noise.brownian import PerSampleNoise
from ...noise.start import sample_shape, start_states
from ..png import to_uint8
from ..progress import Progress
from .files import LOCK, MERGED, check_shard, write_shard
from .folder import finish, finished, prepare, refusal
from .limits import check_batch_memory
from .lock import Lock
from .ranks import Group, on_rank0

# The most shards a job may have: each is two files and a manifest record that every run
# checks (a million records make a manifest of a few hundred MB).
MAX_SHARDS = 1_000_000


# Run hooks of `sample` that are not settings (functions cannot be recorded or compared).
_NOT_SETTINGS = ("callback", "correcting_xt_fn", "generator")


@dataclass
class GenerateResult:
    """What one process did: the output folder, the shards it generated (with the reason:
    'missing', 'checksum', ...), those it found finished, and the merged file if any."""

    out: Path
    num: int
    shards: int
    generated: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    merged: Path | None = None


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index`: a 63-bit hash of (seed, index) (numpy's SeedSequence),
    so neighbouring indices get unrelated noise."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def noise_seed(seed: int, index: int) -> int:
    """The seed of sample `index`'s SDE noise (eta > 0): a hash of (seed, index, 1), apart
    from every `sample_seed`."""
    state = np.random.SeedSequence([seed, index, 1]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def generate(
    model: str | DiffusionModel,
    num: int,
    out: str | os.PathLike[str],
    *,
    batch: int = 64,
    seed: int = 0,
    shape: Sequence[int] | None = None,
    model_name: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    merge: bool = False,
    progress: bool = True,
    options: SolverOptions | None = None,
    **solver_options: Any,
) -> GenerateResult:
    """Generate `num` samples into the folder `out`, resuming what is there.

    Under torchrun (WORLD_SIZE > 1 in the environment) each rank calls this with the same
    arguments; the process group is set up here (gloo on CPU, NCCL on CUDA) unless the
    caller already did. A rank whose settings differ from rank 0's raises ValueError on
    every rank, as does a folder holding a job with other settings; an error while a rank
    makes a shard stops every rank at the end of that round. Returns on every rank; only
    rank 0 checks all shards at the end, writes the manifest and merges.

    Args:
        model: a built-in model's name (`dpmsolver.models.MODELS`) or a `DiffusionModel`.
        num: number of samples.
        batch: samples per shard (one model batch).
        out: the output folder (shared by all ranks; on several machines, a shared file
            system).
        seed: base seed; sample i starts from `sample_seed(seed, i)`.
        shape: one image's (channels, height, width), values in [-1, 1] (default: the
            model's `sample_shape`: 1x8x8 for the built-in models).
        model_name: the model's name in the settings (default: `model` if a name; needed
            for a model object); a restart must give the same.
        device: where to sample; 'cuda' means cuda:LOCAL_RANK (a built-in network is
            moved there; move your own model yourself).
        dtype: dtype of the states (the noise is drawn in float64 and cast).
        merge: when all shards are finished, also write `samples.npz` (`arr_0`).
        progress: one bar on rank 0 for the whole job (needs tqdm).
        options: the solver as a `SolverOptions` value; the manifest records the options
            that differ from the defaults.
        **solver_options: solver options by name (steps, order, timesteps, ...), over
            `options`.
    """
    num = check_int("num", num, 1)
    batch = check_int("batch", batch, 1)
    seed = check_int("seed", seed, 0)
    out = _check_out(out)
    merge, progress = check_bool("merge", merge), check_bool("progress", progress)
    shards = math.ceil(num / batch)
    if shards > MAX_SHARDS:
        raise ValueError(
            f"num={num} in batches of batch={batch} makes {shards} shards, more than "
            f"{MAX_SHARDS}: each is a file pair and a manifest record, checked on every run; "
            f"raise batch to at least {math.ceil(num / MAX_SHARDS)}"
        )
    for name in _NOT_SETTINGS:
        if name in solver_options:
            raise ValueError(f"generate does not take {name}: it cannot be recorded or resumed")
    dev = _job_device(device)
    net, model_name = _job_model(model, model_name, dev)
    shape = sample_shape(net, shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be (channels, height, width) of ints >= 1; got {shape!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32); got {dtype!r}")
    _jsonable(solver_options)  # a value that cannot be recorded: a clear TypeError
    solver = SolverOptions.of(options, **solver_options)
    settings = dict(
        model=model_name,
        num=num,
        batch=batch,
        seed=seed,
        shape=list(shape),
        dtype=str(dtype).removeprefix("torch."),
        device_type=dev.type,
        options=solver.changed(),
    )
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    check_batch_memory(min(batch, num), shape, dtype, dev)
    # Planning checks the options against the schedule before any file is written, and one
    # model call on one sample checks the shape and dtype (a failing setting leaves no
    # manifest behind, so the corrected rerun is not refused as another job). A finished
    # job's rerun has nothing to sample, so it skips that call.
    sampler = Sampler(net, solver)
    problem = refusal(out, settings, digest, merge)  # read-only; taken again under the lock
    if problem:
        raise ValueError(problem)
    if not finished(out, settings):
        _probe(net, sampler, shape, dtype, dev)
    group = Group(dev)
    try:
        return _run(group, net, sampler, settings, digest, out, dev, dtype, merge, progress)
    finally:
        group.close()


def _job_device(device: object) -> torch.device:
    """The device to sample on: 'cuda' alone is this rank's (cuda:LOCAL_RANK)."""
    dev = check_device("device", device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {dev} does not exist: {torch.cuda.device_count()} CUDA devices visible"
            )
    return dev


def _job_model(
    model: str | DiffusionModel, model_name: str | None, dev: torch.device
) -> tuple[DiffusionModel, str]:
    """The model to sample and its name in the settings (a built-in model is loaded onto
    `dev`; a model object needs a name, which a restart must give again)."""
    if isinstance(model, str):
        from ...models import load

        model_name = model_name or model
        net: DiffusionModel = load(model, device=dev)
    else:
        check_model(model)
        if model_name is None:
            raise ValueError(
                "give model_name: the manifest records it, and a restart must name the same "
                "model (a restart with other weights would mix their samples)"
            )
        net = model
    if not isinstance(model_name, str) or not model_name.strip():
        raise TypeError(
            f"model_name must be a non-empty str (the manifest records it); got {model_name!r}"
        )
    return net, model_name


def _check_out(out: object) -> Path:
    """The output folder as a Path: a non-empty str or os.PathLike, else a clear error."""
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be a folder path (str or os.PathLike); got {type(out).__name__}")
    if not os.fspath(out):
        raise ValueError("out must name a folder; got '' (use '.' for the current folder)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out={os.fspath(out)!r} is a file; generate writes a folder")
    return path


def _probe(
    net: DiffusionModel, sampler: Sampler, shape: Sequence[int], dtype: torch.dtype, dev: Any
) -> None:
    """One model call on one sample of `shape` and `dtype` at the run's start: a model that
    cannot take them fails here, before the manifest is written."""
    x = torch.zeros((1, *shape), dtype=dtype, device=dev)
    level = sampler.schedule.levels([sampler.plan.t_start])[0]
    try:
        with torch.no_grad():
            out = net(x, level, sampler.options.form)
    except Exception as error:
        raise ValueError(
            f"the model fails on one sample of shape={tuple(shape)!r}, dtype={dtype}: {error}"
        ) from error
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model returns {got} for one sample of shape={tuple(shape)!r}; expected "
            f"{tuple(x.shape)}"
        )


def _run(
    group: Group,
    model: DiffusionModel,
    sampler: Sampler,
    settings: dict[str, Any],
    digest: str,
    out: Path,
    dev: torch.device,
    dtype: torch.dtype,
    merge: bool,
    progress: bool,
) -> GenerateResult:
    group.agree(dict(settings, merge=merge))
    lock = Lock(out / LOCK)
    try:
        group.raise_if(on_rank0(group, lambda: prepare(out, settings, digest, merge, lock)))
        return _sample_shards(
            group, model, sampler, settings, digest, out, dev, dtype, merge, progress
        )
    finally:
        lock.release()  # rank 0's (the other ranks hold none)


def _sample_shards(
    group: Group,
    model: DiffusionModel,
    sampler: Sampler,
    settings: dict[str, Any],
    digest: str,
    out: Path,
    dev: torch.device,
    dtype: torch.dtype,
    merge: bool,
    progress: bool,
) -> GenerateResult:
    """Every rank: check its share of the shards, make the unfinished ones round by round,
    then (rank 0) verify them all, write the manifest and merge."""
    num, batch, seed, shape = (settings[k] for k in ("num", "batch", "seed", "shape"))
    n_shards = math.ceil(num / batch)
    result = GenerateResult(out, num, n_shards)

    def span(k: int) -> tuple[int, int]:
        return k * batch, min(num, (k + 1) * batch)

    # Each rank checks a share of the shards; the unfinished ones are then dealt out
    # round-robin, so a restart after one rank died spreads the rest over all ranks.
    todo_here = {}
    for k in range(group.rank, n_shards, group.world):
        reason = check_shard(out, k, *span(k), digest)
        if reason:
            todo_here[k] = reason
            if reason != "missing":
                print(
                    f"dpmsolver generate: shard {k}: {reason}; generating it again", file=sys.stderr
                )
        else:
            result.skipped.append(k)
    todo = group.gather_dict(todo_here)
    order = sorted(todo)
    sigma_T = float(model.schedule.sigma(torch.tensor(sampler.plan.t_start, dtype=torch.float64)))
    # The bar counts this run's samples only, so that its rate is this run's (a bar started
    # at the samples already made would divide them by this run's time too).
    todo_samples = sum(span(k)[1] - span(k)[0] for k in order)
    shown = progress and group.rank == 0
    if shown and not order:
        print(
            f"dpmsolver generate: already complete: all {num} samples ({n_shards} shards) are "
            f"in {out}; nothing to generate",
            file=sys.stderr,
        )
    kept = f" ({num - todo_samples} of {num} already made)" if todo_samples < num else ""
    bar = Progress(todo_samples, not (shown and order), desc=f"generating{kept}", unit="sample")
    try:
        for first in range(0, len(order), group.world):  # one round: a shard per rank
            done, failed = 0, None
            if first + group.rank < len(order):
                k = order[first + group.rank]
                start, stop = span(k)
                try:
                    seeds = [sample_seed(seed, i) for i in range(start, stop)]
                    x_T = start_states(sigma_T, shape, seeds).to(dev, dtype)
                    run = sampler
                    if sampler.options.eta > 0:  # per-sample SDE noise, as the start's
                        seeds_z = [noise_seed(seed, i) for i in range(start, stop)]
                        noise = PerSampleNoise(x_T, seeds_z)
                        run = Sampler(model, sampler.options, noise_sampler=noise)  # plan cached
                    x0 = run(x_T).detach().double().cpu().numpy()
                    images = np.ascontiguousarray(to_uint8(x0.transpose(0, 2, 3, 1)))  # NHWC
                    write_shard(out, k, start, stop, seeds, images, digest)
                except Exception as err:  # every rank must reach the collective below
                    failed = err
                result.generated[k] = todo[k]
                done = stop - start
            total, failures = group.sum(done, failed is not None)
            if failed is not None:
                raise failed
            if failures:
                raise RuntimeError(f"{failures} other rank(s) failed; see their errors")
            bar.update(total)
    finally:
        bar.close()
    group.barrier()
    # Rank 0 checks every shard and writes the manifest (and the merged file) alone; the
    # other ranks do not wait in a collective, which could time out on a large merge.
    if group.rank == 0:
        error = finish(out, settings, digest, n_shards, merge)
        if error:
            raise ValueError(error)
        result.merged = out / MERGED if merge else None
    return result


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    """Solver options as JSON values (tensors of times as lists), or a clear TypeError."""
    plain: dict[str, Any] = {}
    for key, value in sorted(options.items()):
        if isinstance(value, Tensor):
            value = value.tolist()
        try:
            json.dumps(value)
        except TypeError:
            raise TypeError(
                f"generate records its solver options; {key}={value!r} is not a JSON value"
            ) from None
        plain[key] = json.loads(json.dumps(value))  # tuples as lists, as a restart reads them
    return plain
