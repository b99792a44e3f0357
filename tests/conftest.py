import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

# The tests use small tensors, for which intra-op threads only add overhead and contention.
torch.set_num_threads(1)
