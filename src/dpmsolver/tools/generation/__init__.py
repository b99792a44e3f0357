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

from .files import MANIFEST, MERGED, merge_shards
from .job import MAX_SHARDS, GenerateResult, generate, noise_seed, sample_seed
from .limits import check_batch_memory

__all__ = [
    "MANIFEST",
    "MAX_SHARDS",
    "MERGED",
    "GenerateResult",
    "check_batch_memory",
    "generate",
    "merge_shards",
    "noise_seed",
    "sample_seed",
]
