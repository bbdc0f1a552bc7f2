"""The time-aware encoder: LR latent + timestep -> structure feature maps at four scales.

It is the encoder half of a small diffusion UNet (ResBlocks with a timestep embedding and
multi-head self-attention). The inputs of its down-samplers and the output of its middle block
each pass through one more ResBlock (``fea_tran``) that maps them to ``out_channels``. The
result is a dict keyed by the feature map's width as a string, which is how the SFT layers of
the UNet look their modulation maps up.

Module and parameter names follow the official checkpoints (``structcond_stage_model.*`` with
that prefix removed), so official weights load without renaming.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f_k) | sin(t f_k)]`` with ``f_k = max_period^(-k/half)``, in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back (the official normalisation layer), whatever the weights' dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-5)


class TimestepResBlock(nn.Module):
    """ResBlock with an additive timestep embedding (no scale-shift norm, dropout 0)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            _norm(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention over pixels with the official *per-head* q/k/v channel layout.

    The 1x1 ``qkv`` projection yields, for each head in turn, a block of q, then k, then v
    channels. Scaling q and k by ``d^-1/4`` each (official) equals SDPA's ``d^-1/2``.
    """

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        head_dim = c // self.num_heads
        # (B, heads, 3*d, L) -> three (B, heads, L, d) tensors
        q, k, v = qkv.reshape(b, self.num_heads, 3 * head_dim, -1).transpose(-1, -2).split(head_dim, dim=-1)
        # Strided views send SDPA to its slow math path; contiguous ones take the fused kernel (3-5x faster).
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        out = out.transpose(-1, -2).reshape(b, c, -1)
        return (flat + self.proj_out(out)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (padding 1), as in the diffusion UNet."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class _Step(nn.ModuleList):
    """One entry of ``input_blocks``/``middle_block``: modules applied in order."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepResBlock) else layer(x)
        return x


class TimeAwareEncoder(ModelMixin, ConfigMixin):
    """StableSR's time-aware encoder (``EncoderUNetModelWT``).

    Args:
        in_channels: latent channels (4).
        model_channels: base width (256 in the released models).
        out_channels: channels of every returned feature map; must equal the SFT layers' input.
        num_res_blocks: ResBlocks per level.
        attention_resolutions: down-sampling factors that get self-attention.
        channel_mult: width multiplier per level.
        num_heads: attention heads (used when ``num_head_channels`` is -1).
        num_head_channels: fixed head width, or -1.

    Example:
        >>> enc = TimeAwareEncoder(model_channels=32, out_channels=32, num_res_blocks=1, channel_mult=(1, 2, 1, 1))
        >>> feats = enc(torch.zeros(1, 4, 16, 24), torch.tensor([999]))
        >>> sorted(feats, key=int)
        ['3', '6', '12', '24']
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        model_channels: int = 256,
        out_channels: int = 256,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4, 2, 1),
        channel_mult: Sequence[int] = (1, 1, 2, 2),
        num_heads: int = 4,
        num_head_channels: int = -1,
    ) -> None:
        super().__init__()
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def heads(ch: int) -> int:
            return num_heads if num_head_channels == -1 else ch // num_head_channels

        ch = channel_mult[0] * model_channels
        blocks: list[nn.Module] = [_Step([nn.Conv2d(in_channels, ch, 3, padding=1)])]
        tapped: list[int] = []  # channels of the maps handed to fea_tran, in order
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [TimestepResBlock(ch, emb_dim, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(SelfAttentionBlock(ch, heads(ch)))
                blocks.append(_Step(layers))
            if level != len(channel_mult) - 1:
                tapped.append(ch)
                blocks.append(_Step([Downsample(ch)]))
                ds *= 2
        self.input_blocks = nn.ModuleList(blocks)
        self.middle_block = _Step(
            [TimestepResBlock(ch, emb_dim), SelfAttentionBlock(ch, heads(ch)), TimestepResBlock(ch, emb_dim)]
        )
        tapped.append(ch)
        self.fea_tran = nn.ModuleList(TimestepResBlock(c, emb_dim, out_channels) for c in tapped)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode the (clean) LR latent ``x`` at the ORIGINAL timesteps (0..999), one per batch row."""
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(self.dtype))
        h = x.to(self.dtype)
        taps: list[torch.Tensor] = []
        for block in self.input_blocks:
            if isinstance(block[0], Downsample):
                taps.append(h)
            h = block(h, emb)
        taps.append(self.middle_block(h, emb))
        return {str(f.shape[-1]): f for f in (tran(t, emb) for tran, t in zip(self.fea_tran, taps))}
