"""DPMSolverScheduler swapped into a diffusers pipeline, as in `pipe.scheduler = ...`.

The pipeline is diffusers' DDPMPipeline around a tiny UNet2DModel with random weights,
built from a config, so nothing is downloaded (its samples are noise-like images; a real
pipeline loads trained weights with `from_pretrained`). The scheduler is loaded from the
pipeline's own config and runs 10 steps where DDPM's scheduler needs 1000. The same 10
steps with diffusers' DPMSolverMultistepScheduler on the same config give nearly the same
images. Needs the `diffusers` extra.
"""

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

# The docs show the import and the swap below as one block.
# --8<-- [start:import]
from dpmsolver.diffusers import DPMSolverScheduler

# --8<-- [end:import]
torch.set_num_threads(1)
torch.manual_seed(0)
unet = UNet2DModel(  # a stand-in for a trained UNet: 8x8 RGB, random weights
    sample_size=8,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
)
pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
pipe.set_progress_bar_config(disable=True)
ddpm_config = pipe.scheduler.config

# --8<-- [start:swap]
config = pipe.scheduler.config
pipe.scheduler = DPMSolverScheduler.from_config(config, timestep_spacing="linspace")
images = pipe(
    batch_size=16,
    num_inference_steps=10,
    output_type="np",
    generator=torch.Generator().manual_seed(0),
).images
# --8<-- [end:swap]

pipe.scheduler = DPMSolverMultistepScheduler.from_config(ddpm_config, timestep_spacing="linspace")
theirs = pipe(
    batch_size=16,
    num_inference_steps=10,
    output_type="np",
    generator=torch.Generator().manual_seed(0),
).images
print(
    f"ours vs diffusers' DPM-Solver++(2M), 10 steps: max |diff| {np.abs(images - theirs).max():.2e}"
)
print("samples:", images.shape)
