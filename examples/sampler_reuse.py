"""Plan once, sample many batches; with --compile, the same loop under torch.compile.

Run: python examples/sampler_reuse.py [--compile]
(compiling the digits U-Net with the loop takes a minute or two on a laptop CPU)
"""

import sys
import time

import torch

import dpmsolver as dpm
from dpmsolver.models import load_digits_net

torch.set_num_threads(1)
model = load_digits_net()  # a small trained U-Net (float32, CPU)
# A setting is one checked, hashable value; keywords work the same way.
setting = dpm.SolverOptions(steps=10, order=2, skip_type="logSNR")
sampler = dpm.Sampler(model, setting)

batches = [torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(4)]
start = time.perf_counter()
samples = [sampler(x_T) for x_T in batches]  # arguments checked and coefficients built once
print(f"eager: 4 batches in {time.perf_counter() - start:.2f} s")
same = dpm.sample(model, batches[0], steps=10, order=2, skip_type="logSNR")
print("Sampler equals dpm.sample:", bool(torch.equal(same, samples[0])))
print("model calls per batch:", setting.model_calls(), "| steps:", setting.num_steps())
print("samples:", tuple(samples[0].shape))

if "--compile" in sys.argv:
    fast = sampler.compile()  # torch.compile(fullgraph=True); the first call compiles
    compiled = fast(batches[0])
    print("compiled equals eager to", f"{float((compiled - samples[0]).abs().max()):.1e}")
