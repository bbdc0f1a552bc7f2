"""The StableSR denoiser: time-aware encoder + SFT-steered UNet, with classifier-free guidance.

``StableSRDenoiser(x, t, ...)`` is one model evaluation; :func:`stablesr.tiling.canvas.canvas_model_fn`
turns it into the progressive-aggregation model function the samplers call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import StableSRError
from ..models.sft import SFTAdapter
from ..models.time_aware_encoder import TimeAwareEncoder


@dataclass
class TextConditioning:
    """Prompt contexts (B or 1, n_ctx, dim); ``uncond`` with ``scale != 1`` enables classifier-free guidance."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    scale: float = 1.0

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.scale != 1.0


class StableSRDenoiser(nn.Module):
    """Wires the three networks together; owns no weights of its own.

    Example:
        >>> den = StableSRDenoiser(unet, sft_adapter, encoder)
        >>> eps = den(x_t, 999, lr_latent, TextConditioning(empty_context))
    """

    def __init__(self, unet: nn.Module, sft: SFTAdapter, encoder: TimeAwareEncoder) -> None:
        super().__init__()
        self.unet, self.sft, self.encoder = unet, sft, encoder
        sft.attach(unet)

    def forward(self, x: torch.Tensor, t: int, struct_latent: torch.Tensor, text: TextConditioning) -> torch.Tensor:
        n = x.shape[0]
        t_vec = torch.full((n,), int(t), dtype=torch.long, device=x.device)
        feats = self.encoder(struct_latent, t_vec)  # once, also under guidance (both halves are identical)
        ctx = _batch(text.cond, n)
        x_in, t_in = x, t_vec
        if text.guided:
            x_in, t_in = torch.cat([x, x]), torch.cat([t_vec, t_vec])
            ctx = torch.cat([_batch(text.uncond, n), ctx])
        unet_dtype = self.unet.dtype
        with self.sft.conditioning(feats):
            out = self.unet(x_in.to(unet_dtype), t_in, encoder_hidden_states=ctx.to(unet_dtype)).sample
        out = out.float()
        if text.guided:
            uncond, cond = out.chunk(2)
            out = uncond + text.scale * (cond - uncond)
        return out


def _batch(context: torch.Tensor, n: int) -> torch.Tensor:
    if context.ndim == 2:
        context = context[None]
    if context.shape[0] == n:
        return context
    if context.shape[0] == 1:
        return context.expand(n, *context.shape[1:])
    if n % context.shape[0] == 0:  # tiles of several images: contexts repeat per tile
        return context.repeat(n // context.shape[0], 1, 1)
    raise StableSRError(f"prompt embeddings have {context.shape[0]} rows; give 1 or one per image")
