"""The one place training imports stablesr internals from (the package layout may move; only this file follows).

Everything training needs from the inference side is re-exported here by the name training uses
(``PipelineConfig`` is :class:`stablesr.config.ModelConfig`, renamed to keep it apart from the training
``ModelConfig``).
"""

from __future__ import annotations

from ..checkpoints.convert import instantiate, load_cfw, load_ldm, sft_config, split_ldm, text_encoder_from_state
from ..checkpoints.keymap import (
    ENCODER_PREFIX,
    FIRST_STAGE_PREFIX,
    TEXT_PREFIX,
    UNET_PREFIX,
    UNET_RESNET_RENAMES,
    VAE_ATTENTION_RENAMES,
    VAE_RESNET_RENAMES,
    rename_prefix,
    rename_sub,
    unet_block_table,
    vae_block_table,
)
from ..checkpoints.loading import load_state_dict
from ..checkpoints.official_config import (
    LDMSpec,
    cfw_vae_config,
    infer_vae_ddconfig,
    official_cfw_config,
    official_ldm_config,
    read_config_file,
)
from ..checkpoints.single_file import inferred_cfw_model
from ..config import ModelConfig as PipelineConfig
from ..diffusion.denoiser import Conditioning, StableSRDenoiser, TextConditioning
from ..diffusion.sampling import NoiseSource, q_sample, sample_ddpm
from ..diffusion.schedules import DiffusionSchedule
from ..errors import CheckpointError, InputImageError, StableSRError
from ..hub import looks_like_repo_id
from ..imageio.naming import IMAGE_EXTENSIONS
from ..imageio.read import read_image
from ..imageio.write import write_image
from ..models.cfw import FUSED_LEVELS, CFWAutoencoderKL
from ..models.sft import SFTAdapter, unet_resnet_paths
from ..models.text import PromptEncoder
from ..models.time_aware_encoder import TimeAwareEncoder
from ..pipeline import StableSRPipeline

__all__ = [
    "ENCODER_PREFIX",
    "FIRST_STAGE_PREFIX",
    "FUSED_LEVELS",
    "IMAGE_EXTENSIONS",
    "TEXT_PREFIX",
    "UNET_PREFIX",
    "UNET_RESNET_RENAMES",
    "VAE_ATTENTION_RENAMES",
    "VAE_RESNET_RENAMES",
    "CFWAutoencoderKL",
    "CheckpointError",
    "Conditioning",
    "DiffusionSchedule",
    "InputImageError",
    "LDMSpec",
    "NoiseSource",
    "PipelineConfig",
    "PromptEncoder",
    "SFTAdapter",
    "StableSRDenoiser",
    "StableSRError",
    "StableSRPipeline",
    "TextConditioning",
    "TimeAwareEncoder",
    "cfw_vae_config",
    "infer_vae_ddconfig",
    "inferred_cfw_model",
    "instantiate",
    "load_cfw",
    "load_ldm",
    "load_state_dict",
    "looks_like_repo_id",
    "official_cfw_config",
    "official_ldm_config",
    "q_sample",
    "read_config_file",
    "read_image",
    "rename_prefix",
    "rename_sub",
    "sample_ddpm",
    "sft_config",
    "split_ldm",
    "text_encoder_from_state",
    "unet_block_table",
    "unet_resnet_paths",
    "vae_block_table",
    "write_image",
]
