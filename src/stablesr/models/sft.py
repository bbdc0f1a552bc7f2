"""SFT (spatial feature transform) layers that steer a stock diffusers UNet with structure features.

StableSR keeps the Stable Diffusion UNet frozen and adds one SFT layer per ResBlock: the
residual branch ``h`` (after the block's second convolution, before the skip add) becomes
``GN(h) * (1 + gamma(f)) + beta(f)`` where ``f`` is the time-aware encoder's feature map at
``h``'s resolution. The official code calls these layers SPADE.

We do not fork the UNet: :class:`SFTAdapter` owns the SFT layers, and
:class:`~stablesr.models.sft_unet.SFTUNet` runs an unmodified ``diffusers.UNet2DConditionModel`` block by
block with the layers applied after each ResBlock's ``conv2`` and the features passed as an argument.
The UNet weights therefore stay a plain diffusers UNet (loadable and shareable on their own),
and the same adapter can steer any SD-2.x UNet, as the "webui" extracts expect.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from .time_aware_encoder import GroupNorm32


class SFTLayer(nn.Module):
    """``GN(h) * (1 + gamma(f)) + beta(f)`` with 3x3 conv heads on a shared 128-wide ReLU trunk."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = GroupNorm32(32, channels, eps=1e-5, affine=True)  # affine despite the name
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_shared(cond.to(h.dtype))
        return self.param_free_norm(h) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def unet_resnet_paths(unet: nn.Module) -> list[str]:
    """Paths of the UNet's ResBlocks in the official order: down blocks, middle block, up blocks."""
    paths: list[str] = []
    for prefix in ("down_blocks", "mid_block", "up_blocks"):
        paths += [
            f"{prefix}.{name}" for name, m in unet.get_submodule(prefix).named_modules() if isinstance(m, ResnetBlock2D)
        ]
    return paths


class SFTAdapter(ModelMixin, ConfigMixin):
    """All SFT layers of one UNet, attachable to an unmodified ``UNet2DConditionModel``.

    Args:
        targets: the UNet ResBlock paths that get a layer (see :func:`unet_resnet_paths`).
        channels: output channels of each target ResBlock.
        cond_channels: channels of the time-aware encoder's feature maps.

    Example:
        >>> adapter = SFTAdapter.for_unet(unet, cond_channels=256)  # doctest: +SKIP
        >>> from stablesr.models.sft_unet import SFTUNet  # doctest: +SKIP
        >>> eps = SFTUNet(unet, adapter)(x_t, t, context, encoder(lr_latent, t))  # doctest: +SKIP
    """

    @register_to_config
    def __init__(self, targets: Sequence[str] = (), channels: Sequence[int] = (), cond_channels: int = 256) -> None:
        super().__init__()
        if len(targets) != len(channels):
            raise ValueError("SFTAdapter: targets and channels must have the same length")
        self.layers = nn.ModuleList(SFTLayer(c, cond_channels) for c in channels)

    @classmethod
    def for_unet(cls, unet: nn.Module, cond_channels: int = 256) -> SFTAdapter:
        """A fresh adapter with one layer per ResBlock of ``unet``."""
        paths = unet_resnet_paths(unet)
        return cls(targets=paths, channels=[unet.get_submodule(p).conv2.out_channels for p in paths],
                   cond_channels=cond_channels)


def select_feature(features: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """The feature map for activation ``h``: looked up by width (as the official code does), checked by height."""
    f = features.get(str(h.shape[-1]))
    if f is None or f.shape[-2] != h.shape[-2]:
        have = ", ".join(f"{tuple(v.shape[-2:])}" for v in features.values())
        raise ValueError(f"no structure feature map of size {tuple(h.shape[-2:])} (have {have})")
    if f.shape[0] != h.shape[0]:
        if h.shape[0] % f.shape[0]:
            raise ValueError(f"structure features batch {f.shape[0]} does not divide UNet batch {h.shape[0]}")
        f = f.repeat(h.shape[0] // f.shape[0], 1, 1, 1)  # CFG: one encoder pass serves both halves
    return f
