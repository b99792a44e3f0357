"""Sharded, resumable sample generation on one process or many (torch.distributed).

    dpm.generate("digits-net", 10_000, "gen/", batch=256, steps=10, merge=True)
    torchrun --nproc-per-node 4 -m dpmsolver generate --model digits-net --num-samples 50000 \
        --batch 256 --out gen/ --merge

Sample i starts from noise drawn from a seed derived from (seed, i) alone. Shard k holds
samples [k * batch, (k + 1) * batch) and is generated as one batch, whichever rank makes
it; ranks deal out the unfinished shards round-robin. So the samples do not depend on the
number of ranks or on restarts (bit for bit). With eta > 0 (SDE solvers) sample i's noise
is drawn from its own generator too, seeded from (seed, i) (`PerSampleNoise`). A batch
size changes the samples only by the floating-point rounding of a batched network, except
with method='adaptive' (its step sizes follow the whole batch's error).

Files in the output folder (a folder is this job's only when its manifest says so: a
non-empty folder without one is refused before any work, and no file the job did not
create is deleted or overwritten):
- `manifest.json`: the settings (marked as a dpmsolver generate manifest), and once all
  shards are finished, every shard's record (and the merged file's);
- `shard-000012.npz`: `images` (uint8, NHWC) and `indices`; written to a temporary file
  (`.dpmsolver-tmp-<pid>-<name>`: the job's prefix and the writing process's id), fsynced,
  then renamed, so a shard is either whole or absent;
- `shard-000012.json`: its record (index range, seeds, SHA-256 of the npz, settings
  digest), written the same way after the npz: a shard counts as finished only when its
  record exists and the npz matches the checksum; otherwise it is generated again;
- `samples.npz` (with `merge`): all images in index order as `arr_0`, uint8 NHWC, the
  layout FID tools read;
- `.dpmsolver-generate.lock` while a job runs: a second run into the folder is refused
  as busy (a lock left by a killed process on this machine is recognised and taken over).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import socket
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_bool, check_device, check_int
from ..core import DiffusionModel, Sampler, SolverOptions, check_model
from ..noise.brownian import PerSampleNoise
from ..noise.start import sample_shape, start_states
from .png import to_uint8
from .progress import Progress

__all__ = [
    "GenerateResult",
    "check_batch_memory",
    "generate",
    "merge_shards",
    "noise_seed",
    "sample_seed",
]

MANIFEST = "manifest.json"
MERGED = "samples.npz"
LOCK = ".dpmsolver-generate.lock"
# What marks a manifest as this module's (older manifests carry no marker; see `_ours`).
FORMAT = "dpmsolver-generate"
# Temporary files: the job's prefix and the writing process's id, so that no process
# touches another's and none is mistaken for a user's file.
TMP_PREFIX = ".dpmsolver-tmp-"
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
    dev = check_device("device", device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {dev} does not exist: {torch.cuda.device_count()} CUDA devices visible"
            )
    if isinstance(model, str):
        from ..models import load

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
    problem = _refusal(out, settings, digest, merge)  # read-only; taken again under the lock
    if problem:
        raise ValueError(problem)
    if not _finished(out, settings):
        _probe(net, sampler, shape, dtype, dev)
    group = _Group(dev)
    try:
        return _run(group, net, sampler, settings, digest, out, dev, dtype, merge, progress)
    finally:
        group.close()


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


# Bytes a batch needs per sample element beyond the model's own: the float64 starting
# noise, and the sampler's state, its kept outputs and temporaries in the run's dtype.
_NOISE_BYTES = 8
_STATES = 6


def check_batch_memory(
    batch: int,
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    name: str = "batch",
) -> None:
    """Raise ValueError if one batch of samples cannot fit in the device's free memory:
    its noise and the sampler's states alone (the model needs more on top), counted
    before anything is allocated. `name` is how the caller calls the batch size."""
    elements = batch * math.prod(shape)
    need = elements * (_NOISE_BYTES + _STATES * torch.empty((), dtype=dtype).element_size())
    free = _free_memory(device)
    if free is not None and need > free:
        raise ValueError(
            f"{name}={batch}: one batch of {batch} samples of shape {tuple(shape)} needs about "
            f"{need / 2**30:.3g} GiB for its noise and the sampler's states alone, more than "
            f"the {free / 2**30:.3g} GiB free on {device}; lower {name}"
        )


def _free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device`, or None where that is not known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        pages = getattr(os, "sysconf_names", {})
        if "SC_AVPHYS_PAGES" in pages and "SC_PAGE_SIZE" in pages:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _finished(out: Path, settings: dict[str, Any]) -> bool:
    """Whether `out` holds this job, complete (its manifest says so, with these settings):
    a rerun then has nothing to sample. Reads only; the shards are checked by the run."""
    manifest = _read_manifest(out)
    return (
        isinstance(manifest, dict)
        and manifest.get("complete") is True
        and manifest.get("settings") == settings
    )


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
    group: _Group,
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
    lock = _Lock(out / LOCK)
    try:
        group.raise_if(_on_rank0(group, lambda: _prepare(out, settings, digest, merge, lock)))
        return _sample_shards(
            group, model, sampler, settings, digest, out, dev, dtype, merge, progress
        )
    finally:
        lock.release()  # rank 0's (the other ranks hold none)


def _sample_shards(
    group: _Group,
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
        reason = _check_shard(out, k, *span(k), digest)
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
    # The bar starts at the samples already made, so its rate counts this run's only.
    made = num - sum(span(k)[1] - span(k)[0] for k in order)
    bar = Progress(
        num, not progress or group.rank != 0, desc="generating", unit="sample", initial=made
    )
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
                    _write_shard(out, k, start, stop, seeds, images, digest)
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
        error = _finish(out, settings, digest, n_shards, merge)
        if error:
            raise ValueError(error)
        result.merged = out / MERGED if merge else None
    return result


def _on_rank0(group: _Group, step: Callable[[], str]) -> str:
    """Run `step` on rank 0; any exception becomes the message all ranks raise."""
    if group.rank != 0:
        return ""
    try:
        return step()
    except Exception as err:
        return f"{type(err).__name__}: {err}"


class _Group:
    """The torch.distributed process group, or one process when not under torchrun."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        self.device = torch.device("cpu")
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not dist.is_available():
            if launched:
                raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed")
            self.rank, self.world = 0, 1
            return
        if not dist.is_initialized():
            if not launched:
                self.rank, self.world = 0, 1
                return
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
            self.owned = True
        if dist.get_backend() == "nccl":
            if device.type != "cuda":
                raise ValueError(f"the process group uses NCCL; give a CUDA device, not {device}")
            self.device = device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def agree(self, settings: dict[str, Any]) -> None:
        """Raise ValueError on every rank if any rank's settings differ from rank 0's."""
        if self.world == 1:
            return
        gathered: list[Any] = [None] * self.world
        self.dist.all_gather_object(gathered, settings)
        for rank, other in enumerate(gathered):
            keys = sorted(k for k in settings if gathered[0].get(k) != other.get(k))
            if keys:
                diff = "; ".join(f"{k}: {gathered[0].get(k)!r} vs {other.get(k)!r}" for k in keys)
                raise ValueError(f"ranks disagree on the settings: rank 0 vs rank {rank}: {diff}")

    def raise_if(self, error: str) -> None:
        """Rank 0's error (or '') raised on every rank."""
        if self.world > 1:
            box = [error]
            self.dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error:
            raise ValueError(error)

    def gather_dict(self, part: dict[int, str]) -> dict[int, str]:
        """The union of every rank's `part`."""
        if self.world == 1:
            return dict(part)
        parts: list[Any] = [None] * self.world
        self.dist.all_gather_object(parts, part)
        return {k: v for p in parts for k, v in p.items()}

    def sum(self, n: int, failed: bool) -> tuple[int, int]:
        """Samples made this round and the number of other ranks that failed."""
        if self.world == 1:
            return n, 0
        total = torch.tensor([n, int(failed)], dtype=torch.int64, device=self.device)
        self.dist.all_reduce(total)
        made, failures = total.tolist()  # once per round of shards, not per model call
        return made, failures - int(failed)

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


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


def _tmp_path(path: Path) -> Path:
    """The temporary file of `path` for this process (the job's prefix and its pid)."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the folder."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # its own temporary only
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a crash (where the OS allows it)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


def _shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / f"shard-{k:06d}.npz", out / f"shard-{k:06d}.json"


def _write_shard(
    out: Path, k: int, start: int, stop: int, seeds: list[int], images: np.ndarray, digest: str
) -> None:
    npz, record = _shard_paths(out, k)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, indices=np.arange(start, stop, dtype=np.int64))
    data = buffer.getvalue()
    _write_atomic(npz, data)
    entry = dict(
        shard=k,
        start=start,
        stop=stop,
        seeds=seeds,
        sha256=hashlib.sha256(data).hexdigest(),
        settings=digest,
    )
    _write_atomic(record, _json_bytes(entry))


def _read_record(out: Path, k: int) -> dict[str, Any] | None:
    try:
        record = json.loads(_shard_paths(out, k)[1].read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _check_shard(out: Path, k: int, start: int, stop: int, digest: str) -> str:
    """'' if shard k is finished and intact, else why it must be generated."""
    npz, _ = _shard_paths(out, k)
    record = _read_record(out, k)
    if record is None or not npz.exists():
        return "missing" if record is None and not npz.exists() else "partial"
    if record.get("settings") != digest or (record.get("start"), record.get("stop")) != (
        start,
        stop,
    ):
        return "written with other settings"
    if hashlib.sha256(npz.read_bytes()).hexdigest() != record.get("sha256"):
        return "checksum mismatch"
    return ""


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """The folder's manifest if it is this module's (`_ours`), else None (absent too)."""
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if _ours(data) else None


def _ours(data: object) -> bool:
    """Whether a parsed manifest is this module's: marked with FORMAT, or an unmarked one
    written by an earlier version (its settings and completion flag, nothing else)."""
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        return False
    if "format" in data:
        return data["format"] == FORMAT
    return isinstance(data.get("complete"), bool) and set(data) <= {
        "settings",
        "complete",
        "shards",
        "merged",
    }


_SHARD = re.compile(r"shard-\d{6}\.(npz|json)")


def _job_file(name: str) -> bool:
    """Whether a file name is one a job writes (its shards, its temporaries, its lock)."""
    return bool(_SHARD.fullmatch(name)) or name.startswith(TMP_PREFIX) or name == LOCK


def _prepare(out: Path, settings: dict[str, Any], digest: str, merge: bool, lock: _Lock) -> str:
    """Rank 0, before any shard: check that the folder is empty or holds this job (its
    manifest, and every shard record there, whether or not the manifest is readable),
    take the folder's lock, drop temporary files a killed run of the job left, write the
    manifest. Returns an error message or ''; nothing in the folder is written or removed
    before the checks pass, and no file the job did not make is ever touched."""
    problem = _refusal(out, settings, digest, merge)
    if problem:
        return problem
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
    except ValueError as busy:
        return str(busy)
    problem = _refusal(out, settings, digest, merge)  # again, now that no one else writes
    if problem:
        return problem
    for tmp in out.glob(f"{TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)  # the job's own, from a killed run (the lock is ours)
    # In progress until `_finish` has checked every shard; a merged file made earlier
    # stays recorded, so it is still known as the job's own.
    manifest: dict[str, Any] = dict(format=FORMAT, settings=settings, complete=False)
    merged = (_read_manifest(out) or {}).get("merged")
    if merged is not None:
        manifest["merged"] = merged
    _write_atomic(out / MANIFEST, _json_bytes(manifest))
    return ""


def _refusal(out: Path, settings: dict[str, Any], digest: str, merge: bool) -> str:
    """Why `out` cannot take this job ('' if it can): it is not empty and not this job's,
    it holds another job or shards of one, or merging would replace a samples.npz the
    job did not write."""
    if not out.exists():
        return ""
    if not out.is_dir():
        return f"{out} is a file; generate writes a folder"
    names = sorted(p.name for p in out.iterdir())
    manifest_path = out / MANIFEST
    manifest = _read_manifest(out)
    if manifest_path.exists() and manifest is None:
        return (
            f"{out} holds a {MANIFEST} that is not a dpmsolver generate manifest (not "
            "readable as one); generate writes only into an empty folder or its own job's: "
            "use another folder (if it is this job's damaged manifest, remove it to resume)"
        )
    if manifest is not None and manifest["settings"] != settings:
        old = manifest["settings"]
        keys = sorted(k for k in settings if old.get(k) != settings[k])
        diff = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in keys)
        return (
            f"{out} holds a job with other settings ({diff}); use another folder or the "
            "same settings to resume"
        )
    for name in names:
        if _SHARD.fullmatch(name) and not (out / name).is_file():
            return f"{out / name} exists and is not a file; the job would write its shard there"
    for name in names:
        if not (_SHARD.fullmatch(name) and name.endswith(".json")):
            continue
        try:
            record = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue  # a torn record of a killed run: its shard is made again
        if isinstance(record, dict) and record.get("settings") != digest:
            return (
                f"{out} holds shards of another job ({name} was written with other "
                "settings); use another folder, or the same settings to resume"
            )
    if manifest is None:
        foreign = [n for n in names if not _job_file(n)]
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            return (
                f"{out} is not empty ({shown}) and holds no dpmsolver generate manifest: "
                "generate writes only into an empty folder or its own job's, and never "
                "touches files it did not make; use another folder"
            )
    merged = out / MERGED
    if merge and (merged.exists() or merged.is_symlink()):
        if not merged.is_file():
            return f"{merged} exists and is not a file; merging would replace it"
        if manifest is None or "merged" not in manifest:
            return (
                f"{merged} exists and this job's manifest does not record writing it; "
                "move it away to merge (generate never overwrites a file it did not make)"
            )
    return ""


def _finish(out: Path, settings: dict[str, Any], digest: str, n_shards: int, merge: bool) -> str:
    """Rank 0, after every rank's last shard: verify all shards, write the full manifest
    and (merge, or a merged file recorded earlier that is missing or damaged) the merged
    file. Returns an error message or ''."""
    num, batch = settings["num"], settings["batch"]
    records = []
    for k in range(n_shards):
        start, stop = k * batch, min(num, (k + 1) * batch)
        reason = _check_shard(out, k, start, stop, digest)
        if reason:
            return f"shard {k} is not finished ({reason}); run the same command again"
        records.append(_read_record(out, k))
    old = _read_manifest(out) or {}
    manifest: dict[str, Any] = dict(format=FORMAT, settings=settings, complete=True)
    manifest["shards"] = records
    recorded = old.get("merged")
    if recorded is not None and not merge:
        path = out / MERGED
        if _sha256(path) == recorded.get("sha256"):
            manifest["merged"] = recorded
        else:  # the job's own merged file, removed or damaged since: made again
            print(
                f"dpmsolver generate: {path} does not match its checksum; merging again",
                file=sys.stderr,
            )
            merge = True
    if merge:
        manifest["merged"] = merge_shards(out, records)
    if manifest != old:
        _write_atomic(out / MANIFEST, _json_bytes(manifest))
    return ""


def _sha256(path: Path) -> str | None:
    """The SHA-256 of a file (streamed), or None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


class _Lock:
    """An exclusive lock file in the output folder: created with O_EXCL and holding its
    owner (pid, host, the process's start time). A lock whose process is gone, on this
    host, is stale and taken over; any other means the folder is busy (ValueError)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self.owner = dict(
            pid=os.getpid(), host=socket.gethostname(), start=_start_time(os.getpid())
        )

    def acquire(self) -> None:
        for _ in range(2):  # once more after removing a stale lock
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder):
                    raise ValueError(
                        f"{self.path.parent} is busy: another generate (pid {holder.get('pid')} "
                        f"on {holder.get('host')}) is writing into it; wait for it to finish, "
                        f"or remove {self.path} if that process is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = True
            return
        raise ValueError(f"{self.path.parent} is busy: its lock {self.path} keeps coming back")

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # torn by a crash while being written: stale
        return data if isinstance(data, dict) else None

    def release(self) -> None:
        if self.held:
            if self._holder() == self.owner:
                self.path.unlink(missing_ok=True)
            self.held = False


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, from /proc), or None where that is
    not known: with the pid it names the process even after pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that holds a lock still runs (a lock of another host is taken
    to be held: its process cannot be seen from here)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    start = holder.get("start")
    return start is None or _start_time(pid) in (None, start)


def merge_shards(out: str | os.PathLike[str], records: list[Any] | None = None) -> dict[str, Any]:
    """Write `samples.npz` in `out`: every shard's images in index order as `arr_0` (uint8
    NHWC). Shards are taken from the manifest (or `records`) and checked by checksum; they
    are streamed into the file one at a time, so memory stays at one shard.
    Returns the merged file's entry: name, shape and SHA-256."""
    out = Path(out)
    if records is None:
        manifest = _read_manifest(out)
        if manifest is None:
            raise ValueError(
                f"{out} holds no readable dpmsolver generate manifest ({MANIFEST} is missing, "
                "damaged or another program's); run the generation into it first"
            )
        if manifest.get("complete") is not True:
            raise ValueError(f"{out} has unfinished shards; run the generation to the end first")
        records = manifest["shards"]
    if not records:
        raise ValueError(f"{out}: no shards to merge")
    num = records[-1]["stop"]
    path = out / MERGED
    tmp = _tmp_path(path)
    shape: tuple[int, ...] = ()
    with (
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("arr_0.npy", "w", force_zip64=True) as member,
    ):
        expected = 0
        for record in records:
            npz, _ = _shard_paths(out, record["shard"])
            data = npz.read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError(f"{npz} does not match its checksum; run the generation again")
            with np.load(io.BytesIO(data)) as shard:
                indices, images = shard["indices"], shard["images"]
            if indices[0] != expected:
                raise ValueError(f"{npz} starts at index {indices[0]}, not {expected}")
            if not shape:
                shape = (num, *images.shape[1:])
                header = {"descr": "|u1", "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(member, header)
            expected += len(indices)
            member.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        if expected != num:
            raise ValueError(f"the shards hold {expected} samples, not {num}")
    digest = hashlib.sha256()
    with open(tmp, "rb+") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_folder(out)
    return dict(file=MERGED, shape=list(shape), sha256=digest.hexdigest())
