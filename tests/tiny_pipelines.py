"""Tiny random-weight diffusers pipelines, built offline (no hub access).

Modelled on the `get_dummy_components` of diffusers' own pipeline tests, shrunk so that a
10-step run takes well under a second on one CPU thread. Where those tests load a tokenizer
from the hub (T5, and the tiny CLIP ones), the pipeline gets no tokenizer or text encoder
and is called with fixed random prompt embeddings instead; Stable Diffusion 1.5 and SDXL use
the tiny CLIP tokenizer files in tests/data with tiny random CLIP text encoders.

Each builder returns a `Tiny`: the pipeline class, its components (with the scheduler the
model family ships) and the call arguments, so that a test can swap the scheduler and run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).parent / "data"

# The scheduler configs the model families ship on the hub (their scheduler_config.json,
# with diffusers' defaults for the keys they leave out).
SD15_SCHEDULER = dict(  # runwayml/stable-diffusion-v1-5: PNDMScheduler
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    clip_sample=False,
    trained_betas=None,
)
SDXL_SCHEDULER = dict(  # stabilityai/stable-diffusion-xl-base-1.0: EulerDiscreteScheduler
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    interpolation_type="linear",
    prediction_type="epsilon",
    sample_max_value=1.0,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="leading",
    trained_betas=None,
    use_karras_sigmas=False,
)
IF_SCHEDULER = dict(  # DeepFloyd/IF-I-XL-v1.0: DDPMScheduler
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="squaredcos_cap_v2",
    clip_sample=True,
    clip_sample_range=1.0,
    dynamic_thresholding_ratio=0.95,
    prediction_type="epsilon",
    sample_max_value=1.5,
    thresholding=True,
    variance_type="learned_range",
)
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)  # FlowMatchEulerDiscreteScheduler
FLUX_SCHEDULER = dict(  # black-forest-labs/FLUX.1-dev: FlowMatchEulerDiscreteScheduler
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
WAN_UNIPC_SCHEDULER = dict(  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers: UniPCMultistepScheduler
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=3.0,
    solver_order=2,
    solver_type="bh2",
    predict_x0=True,
    lower_order_final=True,
    final_sigmas_type="zero",
    timestep_spacing="linspace",
    steps_offset=0,
)
WAN_FLOWMATCH_SCHEDULER = dict(num_train_timesteps=1000, shift=7.0)  # diffusers' Wan tests


@dataclass
class Tiny:
    """A pipeline class, its components and the arguments of one call."""

    pipeline: type
    components: dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    denoiser: str = "unet"  # the component that is called once per model evaluation
    timestep_unit: float = 1.0  # the denoiser's timestep input per training step (Flux: 1/1000)

    @property
    def scheduler(self) -> Any:
        return self.components["scheduler"]

    def make(self, scheduler: Any) -> Any:
        pipe = self.pipeline(**{**self.components, "scheduler": scheduler})
        pipe.set_progress_bar_config(disable=True)
        return pipe


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _image(seed: int, size: int = 32) -> torch.Tensor:
    """A random image in [0, 1] (what pipelines take as a tensor image)."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def clip_text_encoder(with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=100,
        hidden_act="gelu",
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)
    return model.eval()


def clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        str(DATA / "tiny_clip_vocab.json"), str(DATA / "tiny_clip_merges.txt"), model_max_length=77
    )


def sd_vae() -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=2,
    )


def sd_unet(
    in_channels: int = 4, block_out_channels: tuple[int, int] = (32, 64), **extra: Any
) -> Any:
    """SD 1.5's UNet layout in miniature (seed 0); `extra` goes to UNet2DConditionModel."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=block_out_channels,
        layers_per_block=1,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        **extra,
    )


def sd_components(
    in_channels: int = 4, scheduler_config: dict[str, Any] | None = None, **unet: Any
) -> dict[str, Any]:
    """A tiny SD 1.5 pipeline's components: `sd_unet(in_channels, **unet)`, the VAE, CLIP
    text encoder and tokenizer, and a PNDM scheduler (SD 1.5's config by default)."""
    from diffusers import PNDMScheduler

    return dict(
        unet=sd_unet(in_channels, **unet),
        vae=sd_vae(),
        text_encoder=clip_text_encoder(),
        tokenizer=clip_tokenizer(),
        scheduler=PNDMScheduler.from_config(scheduler_config or SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def sd15_txt2img() -> Tiny:
    from diffusers import StableDiffusionPipeline

    kwargs = dict(prompt="a cat", height=32, width=32, guidance_scale=7.5)
    return Tiny(StableDiffusionPipeline, sd_components(), kwargs)


def sd15_img2img() -> Tiny:
    from diffusers import StableDiffusionImg2ImgPipeline

    kwargs = dict(prompt="a dog", image=_image(1), strength=0.6, guidance_scale=7.5)
    return Tiny(StableDiffusionImg2ImgPipeline, sd_components(), kwargs)


def sd15_inpaint() -> Tiny:
    """The inpainting UNet: 4 latent + 1 mask + 4 masked-image latent channels in."""
    from diffusers import StableDiffusionInpaintPipeline

    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0  # repaint the centre
    kwargs = dict(
        prompt="a bird",
        image=_image(2),
        mask_image=mask,
        height=32,
        width=32,
        strength=1.0,
        guidance_scale=7.5,
    )
    return Tiny(StableDiffusionInpaintPipeline, sd_components(in_channels=9), kwargs)


def sdxl_txt2img() -> Tiny:
    """SDXL's two CLIP text encoders (hidden 32 + 32 = cross-attention 64) and its
    "text_time" added conditioning: 6 time ids of 8 dims plus the 32-dim pooled embedding."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
    )
    components = dict(
        unet=unet,
        vae=sd_vae(),
        text_encoder=clip_text_encoder(),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text_encoder(with_projection=True),
        tokenizer_2=clip_tokenizer(),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        image_encoder=None,
        feature_extractor=None,
    )
    kwargs = dict(prompt="a fox", height=32, width=32, guidance_scale=5.0, denoising_end=0.8)
    return Tiny(StableDiffusionXLPipeline, components, kwargs)


def if_stage1() -> Tiny:
    """DeepFloyd IF stage I: a pixel-space UNet that predicts noise and a learned variance
    (6 channels out for 3 in), conditioned on T5 embeddings (32-dim here, given directly)."""
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnAddedKVProcessor

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=3,
        out_channels=6,
        cross_attention_dim=32,
        encoder_hid_dim=32,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
    )
    unet.set_attn_processor(AttnAddedKVProcessor())
    components = dict(
        unet=unet,
        text_encoder=None,
        tokenizer=None,
        scheduler=DDPMScheduler.from_config(IF_SCHEDULER),
        watermarker=None,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    kwargs = dict(
        prompt_embeds=_randn(1, 8, 32, seed=10),
        negative_prompt_embeds=_randn(1, 8, 32, seed=11),
        # Modest guidance: with a random UNet, IF's usual 7 makes x0_pred so extreme that
        # thresholding decides everything and a one-step change of the grid moves the output
        # as much as a change of solver order does.
        guidance_scale=2.0,
        height=16,
        width=16,
    )
    return Tiny(IFPipeline, components, kwargs)


def _sd3_components() -> dict[str, Any]:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
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
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return dict(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
        image_encoder=None,
        feature_extractor=None,
    )


def _sd3_embeds() -> dict[str, Any]:
    """CLIP-L + CLIP-G + T5 embeddings as SD3 concatenates them (joint dim 32, pooled 64)."""
    return dict(
        prompt_embeds=_randn(1, 12, 32, seed=20),
        pooled_prompt_embeds=_randn(1, 64, seed=21),
        negative_prompt_embeds=_randn(1, 12, 32, seed=22),
        negative_pooled_prompt_embeds=_randn(1, 64, seed=23),
    )


def sd3_txt2img() -> Tiny:
    from diffusers import StableDiffusion3Pipeline

    kwargs = dict(_sd3_embeds(), height=32, width=32, guidance_scale=5.0)
    return Tiny(StableDiffusion3Pipeline, _sd3_components(), kwargs, "transformer")


def sd3_img2img() -> Tiny:
    from diffusers import StableDiffusion3Img2ImgPipeline

    kwargs = dict(_sd3_embeds(), image=_image(3), strength=0.6, guidance_scale=5.0)
    return Tiny(StableDiffusion3Img2ImgPipeline, _sd3_components(), kwargs, "transformer")


def flux_txt2img(scheduler_config: dict[str, Any] | None = None) -> Tiny:
    """Flux: 2x2-packed latents of a 1-channel VAE (4 channels per token), one double- and
    one single-stream block. true_cfg_scale stays 1 (distilled guidance): one call a step.
    `scheduler_config`: the FlowMatchEulerDiscrete config (default FLUX.1-dev's)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    components = dict(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(scheduler_config or FLUX_SCHEDULER),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        image_encoder=None,
        feature_extractor=None,
    )
    kwargs = dict(
        prompt_embeds=_randn(1, 12, 32, seed=30),
        pooled_prompt_embeds=_randn(1, 32, seed=31),
        height=32,
        width=32,
        guidance_scale=3.5,
    )
    return Tiny(FluxPipeline, components, kwargs, "transformer", 1e-3)


def wan_txt2video(scheduler_config: dict[str, Any] | None = None) -> Tiny:
    """Wan 2.1 text-to-video: 9 frames of 16x16 (3 latent frames of 2x2 tokens after the
    VAE's 8x spatial, 4x temporal compression and the transformer's 1x2x2 patches)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    config = WAN_UNIPC_SCHEDULER if scheduler_config is None else scheduler_config
    flow_unipc = bool(config.get("use_flow_sigmas"))
    native = UniPCMultistepScheduler if flow_unipc else FlowMatchEulerDiscreteScheduler
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    components = dict(
        transformer=transformer,
        transformer_2=None,
        vae=vae,
        scheduler=native.from_config(config),
        text_encoder=None,
        tokenizer=None,
    )
    kwargs = dict(
        prompt_embeds=_randn(1, 16, 32, seed=40),
        negative_prompt_embeds=_randn(1, 16, 32, seed=41),
        guidance_scale=6.0,
        height=16,
        width=16,
        num_frames=9,
    )
    return Tiny(WanPipeline, components, kwargs, "transformer")
