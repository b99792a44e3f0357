"""Whether a folder can take a job, and the job's manifest before and after its shards:
no file the job did not make is written or removed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .files import (
    FORMAT,
    MANIFEST,
    MERGED,
    SHARD,
    TMP_PREFIX,
    check_shard,
    file_sha256,
    job_file,
    json_bytes,
    merge_shards,
    read_manifest,
    read_record,
    write_atomic,
)
from .lock import Lock


def finished(out: Path, settings: dict[str, Any]) -> bool:
    """Whether `out` holds this job, complete (its manifest says so, with these settings):
    a rerun then has nothing to sample. Reads only; the shards are checked by the run."""
    manifest = read_manifest(out)
    return (
        isinstance(manifest, dict)
        and manifest.get("complete") is True
        and manifest.get("settings") == settings
    )


def prepare(out: Path, settings: dict[str, Any], digest: str, merge: bool, lock: Lock) -> str:
    """Rank 0, before any shard: check that the folder is empty or holds this job (its
    manifest, and every shard record there, whether or not the manifest is readable),
    take the folder's lock, drop temporary files a killed run of the job left, write the
    manifest. Returns an error message or ''; nothing in the folder is written or removed
    before the checks pass, and no file the job did not make is ever touched."""
    problem = refusal(out, settings, digest, merge)
    if problem:
        return problem
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
    except ValueError as busy:
        return str(busy)
    problem = refusal(out, settings, digest, merge)  # again, now that no one else writes
    if problem:
        return problem
    for tmp in out.glob(f"{TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)  # the job's own, from a killed run (the lock is ours)
    # In progress until `finish` has checked every shard; a merged file made earlier
    # stays recorded, so it is still known as the job's own.
    manifest: dict[str, Any] = dict(format=FORMAT, settings=settings, complete=False)
    merged = (read_manifest(out) or {}).get("merged")
    if merged is not None:
        manifest["merged"] = merged
    write_atomic(out / MANIFEST, json_bytes(manifest))
    return ""


def refusal(out: Path, settings: dict[str, Any], digest: str, merge: bool) -> str:
    """Why `out` cannot take this job ('' if it can): it is not empty and not this job's,
    it holds another job or shards of one, or merging would replace a samples.npz the
    job did not write."""
    if not out.exists():
        return ""
    if not out.is_dir():
        return f"{out} is a file; generate writes a folder"
    names = sorted(p.name for p in out.iterdir())
    manifest_path = out / MANIFEST
    manifest = read_manifest(out)
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
        if SHARD.fullmatch(name) and not (out / name).is_file():
            return f"{out / name} exists and is not a file; the job would write its shard there"
    for name in names:
        if not (SHARD.fullmatch(name) and name.endswith(".json")):
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
        foreign = [n for n in names if not job_file(n)]
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


def finish(out: Path, settings: dict[str, Any], digest: str, n_shards: int, merge: bool) -> str:
    """Rank 0, after every rank's last shard: verify all shards, write the full manifest
    and (merge, or a merged file recorded earlier that is missing or damaged) the merged
    file. Returns an error message or ''."""
    num, batch = settings["num"], settings["batch"]
    records = []
    for k in range(n_shards):
        start, stop = k * batch, min(num, (k + 1) * batch)
        reason = check_shard(out, k, start, stop, digest)
        if reason:
            return f"shard {k} is not finished ({reason}); run the same command again"
        records.append(read_record(out, k))
    old = read_manifest(out) or {}
    manifest: dict[str, Any] = dict(format=FORMAT, settings=settings, complete=True)
    manifest["shards"] = records
    recorded = old.get("merged")
    if recorded is not None and not merge:
        path = out / MERGED
        if file_sha256(path) == recorded.get("sha256"):
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
        write_atomic(out / MANIFEST, json_bytes(manifest))
    return ""
