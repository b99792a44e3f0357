"""A solver tuned for a diffusers pipeline in one call, then run by the pipeline itself.

The pipeline is diffusers' StableDiffusion3Pipeline around a tiny SD3 transformer and VAE
with random weights, built from configs, with prompt embeddings in place of the text
encoders, so nothing is downloaded (a real pipeline loads trained weights with
`from_pretrained`; the tuning is then minutes to hours of GPU time, see the docs). The
search is kept small here (8 pilots, 8 extra held-out noises, two families, one refinement
step) so that it runs in seconds on a CPU. Needs the `diffusers` extra.
"""

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

# The docs show the import and the tuning below as one block.
# --8<-- [start:import]
from dpmsolver.diffusers import DPMSolverScheduler, tune_pipeline

# --8<-- [end:import]
torch.set_num_threads(1)
torch.manual_seed(0)
transformer = SD3Transformer2DModel(  # a stand-in for SD3's transformer, random weights
    sample_size=16,
    patch_size=1,
    in_channels=4,
    num_layers=1,
    attention_head_dim=8,
    num_attention_heads=4,
    caption_projection_dim=32,
    joint_attention_dim=32,
    pooled_projection_dim=64,
    out_channels=4,
)
vae = AutoencoderKL(
    in_channels=3,
    out_channels=3,
    block_out_channels=(4, 8),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=2,
)
pipe = StableDiffusion3Pipeline(
    transformer=transformer,
    vae=vae,
    scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    text_encoder=None,
    tokenizer=None,
    text_encoder_2=None,
    tokenizer_2=None,
    text_encoder_3=None,
    tokenizer_3=None,
)
pipe.set_progress_bar_config(disable=True)
g = torch.Generator().manual_seed(1)
prompt = dict(  # what the text encoders would give for a prompt and the empty one
    prompt_embeds=torch.randn(1, 12, 32, generator=g),
    pooled_prompt_embeds=torch.randn(1, 64, generator=g),
    negative_prompt_embeds=torch.randn(1, 12, 32, generator=g),
    negative_pooled_prompt_embeds=torch.randn(1, 64, generator=g),
)

# --8<-- [start:tune]
tuned = tune_pipeline(
    pipe,
    6,  # model calls
    guidance_scale=5.0,
    height=32,
    width=32,
    call_kwargs=prompt,
    pilots=8,
    families=["dpm++2m", "dpm++2m+c"],
    iterations=1,
    candidates=16,
    substeps=1,
    held_out_noises=8,
)
pipe.scheduler = DPMSolverScheduler.from_tuned(tuned, pipe.scheduler.config)
batch = {k: v.expand(16, *v.shape[1:]) for k, v in prompt.items()}  # 16 images
latents = pipe(
    **batch,
    guidance_scale=5.0,
    height=32,
    width=32,
    num_inference_steps=tuned.nfe,
    output_type="latent",
    generator=torch.Generator().manual_seed(0),
).images
# --8<-- [end:tune]

print(f"tuned {tuned.setting} for {tuned.nfe} calls; tuning cost {tuned.model_calls}")
print("samples:", tuple(latents.shape))
