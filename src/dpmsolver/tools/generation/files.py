"""The files of a generate job's folder: names, atomic writes, shard records and their
checks, the manifest, and the merged file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"


MERGED = "samples.npz"


LOCK = ".dpmsolver-generate.lock"


# What marks a manifest as this module's (older manifests carry no marker; see `_ours`).
FORMAT = "dpmsolver-generate"


# Temporary files: the job's prefix and the writing process's id, so that no process
# touches another's and none is mistaken for a user's file.
TMP_PREFIX = ".dpmsolver-tmp-"


SHARD = re.compile(r"shard-\d{6}\.(npz|json)")


def tmp_path(path: Path) -> Path:
    """The temporary file of `path` for this process (the job's prefix and its pid)."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync it, rename it over `path`, fsync the folder."""
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # its own temporary only
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a crash (where the OS allows it)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode()


def shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / f"shard-{k:06d}.npz", out / f"shard-{k:06d}.json"


def write_shard(
    out: Path, k: int, start: int, stop: int, seeds: list[int], images: np.ndarray, digest: str
) -> None:
    npz, record = shard_paths(out, k)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, indices=np.arange(start, stop, dtype=np.int64))
    data = buffer.getvalue()
    write_atomic(npz, data)
    entry = dict(
        shard=k,
        start=start,
        stop=stop,
        seeds=seeds,
        sha256=hashlib.sha256(data).hexdigest(),
        settings=digest,
    )
    write_atomic(record, json_bytes(entry))


def read_record(out: Path, k: int) -> dict[str, Any] | None:
    try:
        record = json.loads(shard_paths(out, k)[1].read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_shard(out: Path, k: int, start: int, stop: int, digest: str) -> str:
    """'' if shard k is finished and intact, else why it must be generated."""
    npz, _ = shard_paths(out, k)
    record = read_record(out, k)
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


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file (streamed), or None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def read_manifest(out: Path) -> dict[str, Any] | None:
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


def job_file(name: str) -> bool:
    """Whether a file name is one a job writes (its shards, its temporaries, its lock)."""
    return bool(SHARD.fullmatch(name)) or name.startswith(TMP_PREFIX) or name == LOCK


def merge_shards(out: str | os.PathLike[str], records: list[Any] | None = None) -> dict[str, Any]:
    """Write `samples.npz` in `out`: every shard's images in index order as `arr_0` (uint8
    NHWC). Shards are taken from the manifest (or `records`) and checked by checksum; they
    are streamed into the file one at a time, so memory stays at one shard.
    Returns the merged file's entry: name, shape and SHA-256."""
    out = Path(out)
    if records is None:
        manifest = read_manifest(out)
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
    tmp = tmp_path(path)
    shape: tuple[int, ...] = ()
    with (
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("arr_0.npy", "w", force_zip64=True) as member,
    ):
        expected = 0
        for record in records:
            npz, _ = shard_paths(out, record["shard"])
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
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    digest = file_sha256(tmp)
    if digest is None:
        raise OSError(f"cannot read back {tmp} after writing it")
    os.replace(tmp, path)
    sync_folder(out)
    return dict(file=MERGED, shape=list(shape), sha256=digest)
