"""Sharded, resumable sample generation on one process or many (torch.distributed).

    dpm.generate("digits-net", 10_000, "gen/", batch=256, steps=10, merge=True)
    torchrun --nproc-per-node 4 -m dpmsolver generate --model digits-net --num-samples 50000 \
        --batch 256 --out gen/ --merge

Sample i starts from noise drawn from a seed derived from (seed, i) alone. Shard k holds
samples [k * batch, (k + 1) * batch) and is generated as one batch, whichever rank makes
it; ranks take shards round-robin. So the samples do not depend on the number of ranks or
on restarts (bit for bit), and a batch size changes them only by the floating-point
reassociation of a batched network.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int
from ._progress import Progress
from .model import DiffusionModel
from .sampler import Sampler

__all__ = ["GenerateResult", "generate", "merge_shards", "sample_seed"]

MANIFEST = "manifest.json"
MERGED = "samples.npz"
_TMP = ".tmp"
# Solver options that are not settings (functions cannot be recorded or compared).
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


def start_states(sigma_T: float, shape: Sequence[int], seeds: Sequence[int]) -> Tensor:
    """x_T = sigma_T * N(0, I) in float64 on the CPU, one generator per sample."""
    gen = torch.Generator()
    noise = torch.empty((len(seeds), *shape), dtype=torch.float64)
    for row, s in zip(noise, seeds, strict=True):
        row.copy_(torch.randn(tuple(shape), generator=gen.manual_seed(s), dtype=torch.float64))
    return sigma_T * noise


def to_uint8_nhwc(x: Tensor) -> np.ndarray:
    """Images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C), rounded to nearest."""
    pixels = ((x.detach().double().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return np.ascontiguousarray(pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy())


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
    **options: Any,
) -> GenerateResult:
    """Generate `num` samples into the folder `out`, resuming what is there.

    Under torchrun (WORLD_SIZE > 1 in the environment) each rank calls this with the same
    arguments; the process group is set up here (gloo on CPU, NCCL on CUDA) unless the
    caller already did. A rank whose settings differ from rank 0's raises ValueError on
    every rank, as does a folder holding a job with other settings.

    Args:
        model: a built-in model's name (`dpmsolver.models.MODELS`) or a `DiffusionModel`.
        num, batch: number of samples and samples per shard (one model batch).
        out: the output folder (shared by all ranks; on several machines, a shared file
            system).
        seed: base seed; sample i starts from `sample_seed(seed, i)`.
        shape: one sample's shape (default: the built-in model's, 1x8x8).
        model_name: the model's name in the settings (default: `model` if a name, else its
            class name); a restart must give the same.
        device: where to sample; 'cuda' means cuda:LOCAL_RANK under torchrun.
        dtype: dtype of the states (the noise is drawn in float64 and cast).
        merge: when all shards are finished, also write `samples.npz` (`arr_0`).
        progress: one bar on rank 0 for the whole job (needs tqdm).
        **options: solver options of `dpmsolver.sample` (steps, order, timesteps, ...).
    """
    num = check_int("num", num, 1)
    batch = check_int("batch", batch, 1)
    seed = check_int("seed", seed, 0)
    for name in _NOT_SETTINGS:
        if name in options:
            raise ValueError(f"generate does not take {name}: it cannot be recorded or resumed")
    if isinstance(model, str):
        from .models import load

        model_name = model_name or model
        net: DiffusionModel = load(model)
    else:
        net = model
        model_name = model_name or type(model).__name__
    if shape is None:
        builtin = (1, 8, 8) if isinstance(model, str) else None  # both built-in models
        shape = getattr(getattr(net, "mixture", None), "sample_shape", builtin)
        if shape is None:
            raise ValueError("give shape (one sample's shape, without the batch)")
    shape = [check_int("shape", s, 1) for s in shape]
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    settings = dict(
        model=model_name,
        num=num,
        batch=batch,
        seed=seed,
        shape=shape,
        dtype=str(dtype).removeprefix("torch."),
        device_type=dev.type,
        options=_jsonable(options),
    )
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    sampler = Sampler(net, **options)  # checks the options before any file is written
    group = _Group(dev)
    try:
        return _run(group, net, sampler, settings, digest, Path(out), dev, dtype, merge, progress)
    finally:
        group.close()


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
    group.agree(settings)
    error = ""
    if group.rank == 0:
        error = _prepare(out, settings)
    group.raise_if(error)
    n_shards = math.ceil(num / batch)
    result = GenerateResult(out, num, n_shards)
    sigma_T = float(model.schedule.sigma(torch.tensor(sampler.t_start, dtype=torch.float64)))
    bar = Progress(num, not progress or group.rank != 0, desc="generating", unit="sample")
    try:
        for first in range(0, n_shards, group.world):  # one round: a shard per rank
            k = first + group.rank
            done = 0
            if k < n_shards:
                start, stop = k * batch, min(num, (k + 1) * batch)
                reason = _check_shard(out, k, start, stop, digest)
                if reason:
                    if reason != "missing":
                        print(
                            f"dpmsolver generate: shard {k}: {reason}; generating it again",
                            file=sys.stderr,
                        )
                    seeds = [sample_seed(seed, i) for i in range(start, stop)]
                    x_T = start_states(sigma_T, shape, seeds).to(dev, dtype)
                    images = to_uint8_nhwc(sampler(x_T))
                    _write_shard(out, k, start, stop, seeds, images, digest)
                    result.generated[k] = reason
                else:
                    result.skipped.append(k)
                done = stop - start
            bar.update(group.sum(done))
    finally:
        bar.close()
    group.barrier()
    if group.rank == 0:
        error = _finish(out, settings, digest, n_shards, merge)
    group.raise_if(error)
    if merge:
        result.merged = out / MERGED
    return result


class _Group:
    """The torch.distributed process group, or one process when not under torchrun."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        self.device = torch.device("cpu")
        if not dist.is_available() or (
            not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) <= 1
        ):
            self.rank, self.world = 0, 1
            return
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True
        if dist.get_backend() == "nccl":
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

    def sum(self, n: int) -> int:
        if self.world == 1:
            return n
        total = torch.tensor([n], dtype=torch.int64, device=self.device)
        self.dist.all_reduce(total)
        return int(total.item())  # once per round of shards, outside the sampling loop

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
        plain[key] = value
    return plain


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the folder."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}{_TMP}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # the rename itself survives a crash once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
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
        record: dict[str, Any] = json.loads(_shard_paths(out, k)[1].read_text())
        return record
    except (OSError, ValueError):
        return None


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


def _prepare(out: Path, settings: dict[str, Any]) -> str:
    """Rank 0, before any shard: create the folder or check that it holds this job; drop
    temporary files a killed run left. Returns an error message or ''."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text()).get("settings")
        except ValueError:
            old = None
        if old is not None and old != settings:
            keys = sorted(k for k in settings if old.get(k) != settings[k])
            diff = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in keys)
            return (
                f"{out} holds a job with other settings ({diff}); use another folder or the "
                "same settings to resume"
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
    NHWC). Shards are taken from the manifest (or `records`) and checked by checksum.
    Returns the merged file's entry: name, shape and SHA-256."""
    out = Path(out)
    if records is None:
        manifest = json.loads((out / MANIFEST).read_text())
        if not manifest.get("complete"):
            raise ValueError(f"{out} has unfinished shards; run the generation to the end first")
        records = manifest["shards"]
    parts, expected = [], 0
    for record in records:
        npz, _ = _shard_paths(out, record["shard"])
        data = npz.read_bytes()
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ValueError(f"{npz} does not match its checksum; run the generation again")
        with np.load(io.BytesIO(data)) as shard:
            if shard["indices"][0] != expected:
                raise ValueError(f"{npz} starts at index {shard['indices'][0]}, not {expected}")
            expected += len(shard["indices"])
            parts.append(shard["images"])
    buffer = io.BytesIO()
    images = np.concatenate(parts)
    np.savez(buffer, arr_0=images)
    data = buffer.getvalue()
    _write_atomic(out / MERGED, data)
    return dict(file=MERGED, shape=list(images.shape), sha256=hashlib.sha256(data).hexdigest())
