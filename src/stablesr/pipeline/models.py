"""What a StableSR pipeline holds (its networks and model config) and how it loads, saves and moves them.

:class:`~stablesr.pipeline.core.StableSRPipeline` adds what it does with them (``__call__`` and its steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn
from typing_extensions import Self

from ..checkpoints.components import ModelComponents
from ..checkpoints.folder import load_folder, save_folder
from ..checkpoints.single_file import build_from_single_file
from ..config import ModelConfig
from ..diffusion.denoiser import StableSRDenoiser
from ..errors import OptionsError
from ..models.cfw import CFWAutoencoderKL
from ..models.sft import SFTAdapter
from ..models.text import PromptEncoder
from ..models.time_aware_encoder import TimeAwareEncoder

Offload = Literal["model", "sequential"]
OFFLOADS: tuple[str, ...] = get_args(Offload)


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
        self._offload: tuple[Offload, torch.device] | None = None

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
        """Where the networks compute (with offloading: where they are brought to run)."""
        return self._offload[1] if self._offload else next(self.unet.parameters()).device

    def enable_offload(self, mode: Offload = "model", device: str | torch.device = "cuda") -> Self:
        """Keep the networks in CPU memory and bring them to ``device`` only while they run; returns self.

        ``"model"``: a whole stage's networks move at once (the VAE for encoding and decoding, the
        denoiser for sampling), so only one stage's weights occupy the accelerator; costs one transfer
        per stage and image. ``"sequential"`` (needs ``accelerate``): every layer's weights move in just
        before it runs and out after, for the smallest accelerator memory and the slowest runs.

        Example:
            >>> pipe = StableSRPipeline.from_pretrained("stablesr-turbo").enable_offload("model", "cuda")  # doctest: +SKIP
        """
        if mode not in OFFLOADS:
            raise OptionsError(f"unknown offload {mode!r}; choose {' or '.join(OFFLOADS)}")
        target = torch.device(device)
        for module in self.components.values():
            nn.Module.to(module, device="cpu")
        if mode == "sequential":
            try:
                from accelerate import cpu_offload
            except ImportError:
                raise OptionsError("offload 'sequential' needs accelerate: pip install 'stablesr[train]'") from None
            for module in {id(m): m for m in (self.denoiser, self.vae, self.struct_vae) if m is not None}.values():
                cpu_offload(module, execution_device=target)
        self._offload = (mode, target)
        return self

    @contextmanager
    def resident(self, *modules: nn.Module | None) -> Iterator[None]:
        """With model offloading, ``modules`` on the compute device for the block and back in CPU memory after."""
        present = [m for m in modules if m is not None]
        if self._offload is None or self._offload[0] != "model":
            yield
            return
        for module in present:
            nn.Module.to(module, device=self._offload[1])
        try:
            yield
        finally:
            for module in present:
                nn.Module.to(module, device="cpu")

    def compile(self, *, mode: str | None = None, backend: str = "inductor", fullgraph: bool = True) -> Self:
        """Compile the denoiser (time-aware encoder + SFT-steered UNet) with ``torch.compile``; returns self.

        The SFT features are a forward argument, so the whole denoiser is one graph (``fullgraph=True``
        fails loudly on a graph break). ``mode`` defaults to ``"reduce-overhead"`` on CUDA, which records
        CUDA graphs: every tile batch of an image has one shape (the last one is padded), so one graph is
        replayed at every call of every step. The first image of each new shape pays the compile time.

        Example:
            >>> pipe = StableSRPipeline.from_pretrained("stablesr-turbo", device="cuda").compile()  # doctest: +SKIP
        """
        if mode is None and self.device.type == "cuda":
            mode = "reduce-overhead"
        self.denoiser = torch.compile(self.denoiser, mode=mode, backend=backend, fullgraph=fullgraph)  # type: ignore[assignment]
        return self

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Self:
        """Move to ``device`` and cast the diffusion networks to ``dtype``.

        The VAEs follow ``dtype`` for bfloat16 but stay float32 for float16, where the SD VAE can
        overflow. Latents, schedules and tile blending are always float32.
        """
        if self._offload is not None:
            raise OptionsError("the networks are offloaded (enable_offload): move and cast them before offloading")
        for name, module in self.components.items():
            vae_like = name in ("vae", "struct_vae")
            d = dtype if not (vae_like and dtype == torch.float16) else torch.float32
            nn.Module.to(module, device=device, dtype=d)  # plain cast: we choose per component what stays fp32
        self.prompt_encoder.to(device)
        return self
