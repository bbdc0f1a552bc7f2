"""The networks of one model and its config: what checkpoint loading returns and folder saving takes."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..config import ModelConfig
from ..models.cfw import CFWAutoencoderKL
from ..models.sft import SFTAdapter
from ..models.text import PromptEncoder
from ..models.time_aware_encoder import TimeAwareEncoder


@dataclass
class ModelComponents:
    """``unet`` (stock diffusers UNet), ``sft_adapter``, ``time_aware_encoder``, ``vae`` (CFW), optionally
    ``struct_vae`` (the diffusion checkpoint's own VAE when its encoder differs), the prompt cache and config."""

    unet: nn.Module
    sft_adapter: SFTAdapter
    time_aware_encoder: TimeAwareEncoder
    vae: CFWAutoencoderKL
    struct_vae: CFWAutoencoderKL | None = None
    prompt_encoder: PromptEncoder = field(default_factory=PromptEncoder)
    config: ModelConfig = field(default_factory=ModelConfig)

    def modules(self) -> dict[str, nn.Module]:
        """The saved networks by component name (``struct_vae`` only when present)."""
        out = {"unet": self.unet, "sft_adapter": self.sft_adapter, "time_aware_encoder": self.time_aware_encoder,
               "vae": self.vae}
        if self.struct_vae is not None:
            out["struct_vae"] = self.struct_vae
        return out
