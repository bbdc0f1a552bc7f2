"""What a StableSR pipeline holds (its networks and model config) and how it loads, saves and moves them.

:class:`~stablesr.pipeline.core.StableSRPipeline` adds what it does with them (``__call__`` and its steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from typing_extensions import Self

from ..checkpoints.components import ModelComponents
from ..checkpoints.folder import load_folder, save_folder
from ..checkpoints.single_file import build_from_single_file
from ..config import ModelConfig
from ..diffusion.denoiser import StableSRDenoiser
from ..models.cfw import CFWAutoencoderKL
from ..models.sft import SFTAdapter
from ..models.text import PromptEncoder
from ..models.time_aware_encoder import TimeAwareEncoder

P = TypeVar("P", bound="PipelineModels")


class PipelineModels:
    """The networks of a StableSR pipeline, their placement, and their files (official single files or folders)."""

    def __init__(
        self,
        unet: nn.Module,
        sft_adapter: SFTAdapter,
        time_aware_encoder: TimeAwareEncoder,
        vae: CFWAutoencoderKL,
        *,
        struct_vae: CFWAutoencoderKL | None = None,
        prompt_encoder: PromptEncoder | None = None,
        config: ModelConfig | None = None,
    ) -> None:
        self.unet, self.sft_adapter, self.time_aware_encoder, self.vae = unet, sft_adapter, time_aware_encoder, vae
        self.struct_vae = struct_vae
        self.prompt_encoder = prompt_encoder or PromptEncoder()
        self.config = config or ModelConfig()
        self.denoiser = StableSRDenoiser(unet, sft_adapter, time_aware_encoder)
        self.progress_bar_config: dict[str, Any] = {}
        self._interrupt = False

    # ------------------------------------------------------------------------------------------ loading, saving

    @classmethod
    def from_model(cls, model: ModelComponents) -> Self:
        """A pipeline over loaded components (see :mod:`stablesr.checkpoints`)."""
        return cls(model.unet, model.sft_adapter, model.time_aware_encoder, model.vae, struct_vae=model.struct_vae,
                   prompt_encoder=model.prompt_encoder, config=model.config)

    @classmethod
    def from_single_file(cls, ckpt: str | Path, cfw_ckpt: str | Path | None = None, *,
                         dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                         **kwargs: Any) -> Self:
        """Build from official checkpoint files (``.ckpt`` or ``.safetensors``, official key layout).

        Keyword args: ``config`` / ``cfw_config`` (official-style YAML/JSON for non-preset architectures),
        ``prediction_type`` ("eps"/"v", when neither the file name nor the config tells), ``image_size``,
        ``prompt_embeds`` (a ``prompt_embeds.safetensors`` file), ``base_model`` (diffusers SD-2.1 folder or
        hub id, for SFT-only "webui" extracts).
        """
        return cls.from_model(build_from_single_file(ckpt, cfw_ckpt, **kwargs))._placed(device, dtype)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, *, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, revision: str | None = None,
                        local_files_only: bool | None = None) -> Self:
        """Load a folder written by :meth:`save_pretrained` (or ``stablesr convert``), local or on the hub."""
        model = load_folder(path_or_repo, revision=revision, local_files_only=local_files_only)
        return cls.from_model(model)._placed(device, dtype)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a diffusers-style folder: one subfolder per component (config.json + safetensors)."""
        return save_folder(self.model_components(), directory)

    def model_components(self) -> ModelComponents:
        return ModelComponents(self.unet, self.sft_adapter, self.time_aware_encoder, self.vae,
                               struct_vae=self.struct_vae, prompt_encoder=self.prompt_encoder, config=self.config)

    def _placed(self, device: str | torch.device | None, dtype: torch.dtype | None) -> Self:
        return self.to(device, dtype) if device is not None or dtype is not None else self

    # ------------------------------------------------------------------------------------------ properties

    @property
    def components(self) -> dict[str, nn.Module]:
        return self.model_components().modules()

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Self:
        """Move to ``device`` and cast the diffusion networks to ``dtype``.

        The VAEs follow ``dtype`` for bfloat16 but stay float32 for float16, where the SD VAE can
        overflow. Latents, schedules and tile blending are always float32.
        """
        for name, module in self.components.items():
            vae_like = name in ("vae", "struct_vae")
            d = dtype if not (vae_like and dtype == torch.float16) else torch.float32
            nn.Module.to(module, device=device, dtype=d)  # plain cast: we choose per component what stays fp32
        self.prompt_encoder.to(device)
        return self
