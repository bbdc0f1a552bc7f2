"""SFT (spatial feature transform) layers that steer a stock diffusers UNet with structure features.

StableSR keeps the Stable Diffusion UNet frozen and adds one SFT layer per ResBlock: the
residual branch ``h`` (after the block's second convolution, before the skip add) becomes
``GN(h) * (1 + gamma(f)) + beta(f)`` where ``f`` is the time-aware encoder's feature map at
``h``'s resolution. The official code calls these layers SPADE.

We do not fork the UNet: :class:`SFTAdapter` owns the SFT layers and attaches them to an
unmodified ``diffusers.UNet2DConditionModel`` with forward hooks on each ResBlock's ``conv2``.
The UNet weights therefore stay a plain diffusers UNet (loadable and shareable on their own),
and the same adapter can be put on any SD-2.x UNet, as the "webui" extracts expect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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
        >>> adapter = SFTAdapter.for_unet(unet, cond_channels=256)
        >>> adapter.attach(unet)
        >>> with adapter.conditioning(encoder(lr_latent, t)):
        ...     eps = unet(x_t, t, encoder_hidden_states=context).sample
    """

    @register_to_config
    def __init__(self, targets: Sequence[str] = (), channels: Sequence[int] = (), cond_channels: int = 256) -> None:
        super().__init__()
        if len(targets) != len(channels):
            raise ValueError("SFTAdapter: targets and channels must have the same length")
        self.layers = nn.ModuleList(SFTLayer(c, cond_channels) for c in channels)
        self._features: dict[str, torch.Tensor] | None = None
        self._attached: list[torch.utils.hooks.RemovableHandle] = []

    @classmethod
    def for_unet(cls, unet: nn.Module, cond_channels: int = 256) -> SFTAdapter:
        """A fresh adapter with one layer per ResBlock of ``unet``."""
        paths = unet_resnet_paths(unet)
        return cls(targets=paths, channels=[unet.get_submodule(p).conv2.out_channels for p in paths],
                   cond_channels=cond_channels)

    def attach(self, unet: nn.Module) -> None:
        """Hook every layer onto its ResBlock of ``unet`` (idempotent: re-attaching detaches first)."""
        self.detach()
        for path, layer in zip(self.config.targets, self.layers):
            conv2 = unet.get_submodule(path).conv2
            if conv2.out_channels != layer.mlp_gamma.out_channels:
                raise ValueError(f"SFT layer for {path} has {layer.mlp_gamma.out_channels} channels, "
                                 f"the UNet block has {conv2.out_channels}")
            self._attached.append(conv2.register_forward_hook(self._hook(layer)))

    def detach(self) -> None:
        """Remove the hooks: the UNet becomes plain Stable Diffusion again."""
        for handle in self._attached:
            handle.remove()
        self._attached.clear()

    def _hook(self, layer: SFTLayer):
        def apply(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            feats = self._features
            if feats is None:
                raise RuntimeError("SFTAdapter: call the UNet inside `with adapter.conditioning(features):`")
            return layer(out, select_feature(feats, out))

        return apply

    @contextmanager
    def conditioning(self, features: dict[str, torch.Tensor]) -> Iterator[None]:
        """Make ``features`` (the time-aware encoder's output) the modulation maps for the enclosed UNet calls."""
        previous, self._features = self._features, features
        try:
            yield
        finally:
            self._features = previous


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
