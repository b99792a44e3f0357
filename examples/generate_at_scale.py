"""Generate samples into resumable shards, then merge them for an FID tool.

The same call runs under torchrun on many processes (each rank takes its share); here it
runs in one. A second call resumes: finished shards are kept, and a shard whose file no
longer matches its checksum is made again.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch

import dpmsolver as dpm

torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as folder:
    out = Path(folder) / "gen"
    first = dpm.generate("digits-net", 40, out, batch=8, steps=10, progress=False)
    print(f"made shards {sorted(first.generated)}")

    # A damaged shard: one flipped byte. The next run finds it by its checksum.
    shard = out / "shard-000002.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    again = dpm.generate("digits-net", 40, out, batch=8, steps=10, merge=True, progress=False)
    print(f"kept {again.skipped}, made again {again.generated}")

    with np.load(out / "samples.npz") as merged:  # arr_0: uint8, NHWC
        images = merged["arr_0"]
    print("merged:", images.shape, images.dtype)
    x0 = torch.from_numpy(images[:16]).permute(0, 3, 1, 2)  # back to NCHW
    print("samples:", tuple(x0.shape))
