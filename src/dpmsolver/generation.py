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

Files in the output folder:
- `shard-000012.npz`: `images` (uint8, NHWC) and `indices`; written to a temporary file,
  fsynced, then renamed, so a shard is either whole or absent;
- `shard-000012.json`: its record (index range, seeds, SHA-256 of the npz, settings
  digest), written the same way after the npz: a shard counts as finished only when its
  record exists and the npz matches the checksum; otherwise it is generated again;
- `manifest.json`: the settings, and once all shards are finished, every shard's record;
- `samples.npz` (with `merge`): all images in index order as `arr_0`, uint8 NHWC, the
  layout FID tools read.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .brownian import PerSampleNoise
from .checks import check_int
from .core import DiffusionModel, Sampler, SolverOptions
from .noise import sample_shape, start_states
from .png import to_uint8
from .progress import Progress

__all__ = ["GenerateResult", "generate", "merge_shards", "noise_seed", "sample_seed"]

MANIFEST = "manifest.json"
MERGED = "samples.npz"
_TMP = ".tmp"
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
    for name in _NOT_SETTINGS:
        if name in solver_options:
            raise ValueError(f"generate does not take {name}: it cannot be recorded or resumed")
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {dev} does not exist: {torch.cuda.device_count()} CUDA devices visible"
            )
    if isinstance(model, str):
        from .models import load

        model_name = model_name or model
        net: DiffusionModel = load(model, device=dev)
    else:
        if model_name is None:
            raise ValueError(
                "give model_name: the manifest records it, and a restart must name the same "
                "model (a restart with other weights would mix their samples)"
            )
        net = model
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
    # Planning checks the options against the schedule before any file is written, and one
    # model call on one sample checks the shape and dtype (a failing setting leaves no
    # manifest behind, so the corrected rerun is not refused as another job).
    sampler = Sampler(net, solver)
    _probe(net, sampler, shape, dtype, dev)
    group = _Group(dev)
    try:
        return _run(group, net, sampler, settings, digest, Path(out), dev, dtype, merge, progress)
    finally:
        group.close()


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
    num, batch, seed, shape = (settings[k] for k in ("num", "batch", "seed", "shape"))
    group.agree(dict(settings, merge=merge))
    group.raise_if(_on_rank0(group, lambda: _prepare(out, settings, digest)))
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
    bar = Progress(num, not progress or group.rank != 0, desc="generating", unit="sample")
    bar.update(num - sum(span(k)[1] - span(k)[0] for k in order))
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the folder."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}{_TMP}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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


def _prepare(out: Path, settings: dict[str, Any], digest: str) -> str:
    """Rank 0, before any shard: create the folder or check that it holds this job (its
    manifest, and every shard record there, whether or not the manifest is readable);
    drop temporary files a killed run left. Returns an error message or '' (nothing in the
    folder is touched before the checks pass)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())["settings"]
        except (ValueError, TypeError, KeyError):
            old = None  # unreadable: rewritten below; the shard records carry the digest
        if isinstance(old, dict) and old != settings:
            keys = sorted(k for k in settings if old.get(k) != settings[k])
            diff = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in keys)
            return (
                f"{out} holds a job with other settings ({diff}); use another folder or the "
                "same settings to resume"
            )
    for record_path in sorted(out.glob("shard-*.json")):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue  # a torn record of a killed run: its shard is made again
        if isinstance(record, dict) and record.get("settings") != digest:
            return (
                f"{out} holds shards of another job ({record_path.name} was written with "
                "other settings); use another folder, or the same settings to resume"
            )
    for tmp in out.glob(f"*{_TMP}"):
        tmp.unlink(missing_ok=True)
    _write_atomic(manifest, _json_bytes(dict(settings=settings, complete=False)))
    return ""


def _finish(out: Path, settings: dict[str, Any], digest: str, n_shards: int, merge: bool) -> str:
    """Rank 0, after every rank's last shard: verify all shards, write the full manifest
    and (merge) the merged file. Returns an error message or ''."""
    num, batch = settings["num"], settings["batch"]
    records = []
    for k in range(n_shards):
        start, stop = k * batch, min(num, (k + 1) * batch)
        reason = _check_shard(out, k, start, stop, digest)
        if reason:
            return f"shard {k} is not finished ({reason}); run the same command again"
        records.append(_read_record(out, k))
    manifest: dict[str, Any] = dict(settings=settings, complete=True, shards=records)
    if merge:
        manifest["merged"] = merge_shards(out, records)
    _write_atomic(out / MANIFEST, _json_bytes(manifest))
    return ""


def merge_shards(out: str | os.PathLike[str], records: list[Any] | None = None) -> dict[str, Any]:
    """Write `samples.npz` in `out`: every shard's images in index order as `arr_0` (uint8
    NHWC). Shards are taken from the manifest (or `records`) and checked by checksum; they
    are streamed into the file one at a time, so memory stays at one shard.
    Returns the merged file's entry: name, shape and SHA-256."""
    out = Path(out)
    if records is None:
        manifest = json.loads((out / MANIFEST).read_text())
        if not manifest.get("complete"):
            raise ValueError(f"{out} has unfinished shards; run the generation to the end first")
        records = manifest["shards"]
    if not records:
        raise ValueError(f"{out}: no shards to merge")
    num = records[-1]["stop"]
    path = out / MERGED
    tmp = path.with_name(f"{path.name}.{os.getpid()}{_TMP}")
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
