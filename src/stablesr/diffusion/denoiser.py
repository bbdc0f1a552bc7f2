"""The StableSR denoiser: time-aware encoder + SFT-steered UNet, with classifier-free guidance.

``StableSRDenoiser(x, t, cond)`` is one model evaluation, shared by inference and training: ``t`` is a
tensor of per-sample ORIGINAL timesteps (or one timestep for all), ``cond`` a :class:`Conditioning` (the
structure latent and the text) that crops itself per tile. :func:`stablesr.tiling.canvas.canvas_model_fn`
turns it into the progressive-aggregation model function the samplers call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import StableSRError
from ..models.sft import SFTAdapter
from ..models.sft_unet import SFTUNet
from ..models.time_aware_encoder import TimeAwareEncoder

Region = tuple[slice, slice]
"""A (rows, columns) pair of slices of a latent canvas."""


@dataclass(frozen=True)
class TextConditioning:
    """Prompt contexts (B or 1, n_ctx, dim); ``uncond`` with ``scale != 1`` enables classifier-free guidance."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    scale: float = 1.0

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.scale != 1.0


@dataclass(frozen=True)
class Conditioning:
    """What steers one denoiser call: the structure latent (B, 4, h, w) of the LR image and the text.

    Example:
        >>> c = Conditioning(torch.zeros(1, 4, 16, 16), TextConditioning(torch.zeros(1, 77, 8)))
        >>> c.crop([(slice(0, 8), slice(0, 8)), (slice(8, 16), slice(0, 8))]).struct_latent.shape
        torch.Size([2, 4, 8, 8])
    """

    struct_latent: torch.Tensor
    text: TextConditioning

    def crop(self, regions: Sequence[Region]) -> Conditioning:
        """The conditioning of a batch of tiles: the structure latent cut at each region, stacked on the batch
        axis (tile-major, as the latent tiles are); the text repeats per tile."""
        z = self.struct_latent
        return replace(self, struct_latent=torch.cat([z[..., ys, xs] for ys, xs in regions]))


class StableSRDenoiser(nn.Module):
    """Wires the three networks together; owns no weights of its own and keeps no per-call state.

    Example:
        >>> den = StableSRDenoiser(unet, sft_adapter, encoder)  # doctest: +SKIP
        >>> eps = den(x_t, torch.tensor([999]), Conditioning(lr_latent, TextConditioning(empty_context)))  # doctest: +SKIP
    """

    def __init__(self, unet: nn.Module, sft: SFTAdapter, encoder: TimeAwareEncoder) -> None:
        super().__init__()
        self.steered = SFTUNet(unet, sft)
        self.encoder = encoder

    @property
    def unet(self) -> nn.Module:
        return self.steered.unet

    @property
    def sft(self) -> SFTAdapter:
        return self.steered.adapter

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, cond: Conditioning) -> torch.Tensor:
        """eps or v for latent ``x`` (N, 4, h, w) at timesteps ``t`` ((N,) or scalar), in float32."""
        n = x.shape[0]
        t = t if isinstance(t, torch.Tensor) else timestep_tensor(t, x.device)
        t_vec = t.to(x.device, torch.long).reshape(-1).expand(n)
        text = cond.text
        feats = self.encoder(cond.struct_latent, t_vec)  # once, also under guidance (both halves are identical)
        ctx = _batch(text.cond, n)
        x_in, t_in = x, t_vec
        if text.guided:
            x_in, t_in = torch.cat([x, x]), torch.cat([t_vec, t_vec])
            ctx = torch.cat([_batch(text.uncond, n), ctx])
        dtype = self.steered.dtype  # read once per call
        out = self.steered(x_in.to(dtype), t_in, ctx.to(dtype), feats).float()
        if text.guided:
            uncond, cond_out = out.chunk(2)
            out = uncond + text.scale * (cond_out - uncond)
        return out


def timestep_tensor(t: int, device: torch.device) -> torch.Tensor:
    """``t`` as a (1,) long tensor filled on ``device``: copying a host scalar would make the host wait for the
    GPU, and a compiled denoiser given a tensor sees a changing value rather than a new constant each step
    (a recompile, or a CUDA graph per step)."""
    return torch.full((1,), int(t), device=device, dtype=torch.long)


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
