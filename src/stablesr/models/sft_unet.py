"""The SFT-steered UNet forward: a stock diffusers ``UNet2DConditionModel`` run block by block with the
structure features passed as an ARGUMENT, so they are part of the autograd / compile graph.

Why not hooks: a forward hook reading the features from a slot on the adapter breaks under gradient
checkpointing (the recomputation runs in backward, after the slot was cleared), is shared mutable state
(two threads calling one UNet race on it) and is opaque to ``torch.compile``. Here the features travel
with the call: :class:`SFTUNet` walks the UNet's own blocks (``down_blocks`` / ``mid_block`` /
``up_blocks``, ``resnets`` / ``attentions`` / samplers, all stock diffusers modules and weights) and
applies the SFT layer of each ResBlock between its second convolution and the skip add. The UNet stays a
plain diffusers UNet (its ``state_dict`` and ``save_pretrained`` are untouched); nothing is attached to it.

Gradient checkpointing follows the UNet's own switch: after ``unet.enable_gradient_checkpointing()``
every ResBlock (with its SFT layer and feature map) and every transformer block is recomputed in
backward from its explicit inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.utils.checkpoint import checkpoint

from .sft import SFTAdapter, SFTLayer, select_feature, unet_resnet_paths

Features = dict[str, torch.Tensor]
"""The time-aware encoder's output: feature maps keyed by their width (as a string)."""

_UNSUPPORTED = ("class_embed_type", "addition_embed_type", "time_cond_proj_dim", "encoder_hid_dim")


class SFTUNet(nn.Module):
    """A UNet and its SFT layers, bound once (pure: the UNet is not modified).

    Args:
        unet: a ``diffusers.UNet2DConditionModel`` (SD-2.x layout).
        adapter: the :class:`SFTAdapter` whose ``targets`` are ``unet``'s ResBlock paths.

    Example:
        >>> steered = SFTUNet(unet, adapter)  # doctest: +SKIP
        >>> eps = steered(x_t, t, context, encoder(lr_latent, t))  # doctest: +SKIP
    """

    def __init__(self, unet: nn.Module, adapter: SFTAdapter) -> None:
        super().__init__()
        for key in _UNSUPPORTED:
            if getattr(unet.config, key, None) is not None:
                raise ValueError(f"SFTUNet: UNets with {key}={getattr(unet.config, key)!r} are not SD-2.x UNets")
        paths = set(unet_resnet_paths(unet))
        for path, layer in zip(adapter.config.targets, adapter.layers):
            if path not in paths:
                raise ValueError(f"SFT adapter target {path!r} is not a ResBlock of this UNet")
            block = unet.get_submodule(path)
            if block.upsample is not None or block.downsample is not None or block.time_embedding_norm != "default":
                raise ValueError(f"SFTUNet: {path} is not an SD-2.x ResBlock (resampling or scale-shift norm)")
            if block.conv2.out_channels != layer.mlp_gamma.out_channels:
                raise ValueError(f"SFT layer for {path} has {layer.mlp_gamma.out_channels} channels, "
                                 f"the UNet block has {block.conv2.out_channels}")
        self.unet, self.adapter = unet, adapter
        # id(ResBlock) -> its SFT layer; a plain dict so that no module is registered twice
        self._layer_of = {id(unet.get_submodule(p)): layer for p, layer in zip(adapter.config.targets, adapter.layers)}

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's compute dtype, read from one parameter (``ModelMixin.dtype`` walks every module)."""
        return self.unet.conv_in.weight.dtype

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                features: Features) -> torch.Tensor:
        """The UNet output for latent ``sample`` (B, C, H, W) at ``timesteps`` (B,) or scalar, text ``context``
        (B, n, dim) and structure ``features``, in the UNet's dtype."""
        unet = self.unet
        timesteps = torch.as_tensor(timesteps, device=sample.device).reshape(-1).expand(sample.shape[0])
        temb = unet.time_embedding(unet.time_proj(timesteps).to(sample.dtype))
        up_factor = 2 ** len([b for b in unet.up_blocks if getattr(b, "upsamplers", None)])
        odd_size = any(s % up_factor for s in sample.shape[-2:])

        h = unet.conv_in(sample)
        skips: list[torch.Tensor] = [h]
        for block in unet.down_blocks:
            attns = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attns):
                h = self._resnet(block, resnet, h, temb, features)
                if attn is not None:
                    h = self._attention(block, attn, h, context)
                skips.append(h)
            for down in block.downsamplers or []:
                h = down(h)
            if block.downsamplers:
                skips.append(h)

        mid = unet.mid_block
        h = self._resnet(mid, mid.resnets[0], h, temb, features)
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            h = self._attention(mid, attn, h, context)
            h = self._resnet(mid, resnet, h, temb, features)

        for i, block in enumerate(unet.up_blocks):
            attns = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attns):
                h = self._resnet(block, resnet, torch.cat([h, skips.pop()], dim=1), temb, features)
                if attn is not None:
                    h = self._attention(block, attn, h, context)
            size = skips[-1].shape[2:] if odd_size and i < len(unet.up_blocks) - 1 else None
            for up in block.upsamplers or []:
                h = up(h, size)

        if unet.conv_norm_out is not None:
            h = unet.conv_act(unet.conv_norm_out(h))
        return unet.conv_out(h)

    # ------------------------------------------------------------------------------------------ blocks

    def _resnet(self, block: nn.Module, resnet: ResnetBlock2D, h: torch.Tensor, temb: torch.Tensor,
                features: Features) -> torch.Tensor:
        layer = self._layer_of.get(id(resnet))
        if layer is None:  # a ResBlock the adapter does not steer
            return self._run(block, resnet, h, temb)
        feat = select_feature(features, h)  # SD-2.x ResBlocks keep the resolution
        return self._run(block, _steered_resnet, resnet, layer, h, temb, feat)

    def _attention(self, block: nn.Module, attn: nn.Module, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self._run(block, _transformer, attn, h, context)

    @staticmethod
    def _run(block: nn.Module, fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
        if getattr(block, "gradient_checkpointing", False) and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


def _steered_resnet(resnet: ResnetBlock2D, layer: SFTLayer, x: torch.Tensor, temb: torch.Tensor,
                    feat: torch.Tensor) -> torch.Tensor:
    """``ResnetBlock2D.forward`` (default time-embedding norm) with the SFT layer after ``conv2``."""
    h = resnet.conv1(resnet.nonlinearity(resnet.norm1(x)))
    if resnet.time_emb_proj is not None:
        t = temb if resnet.skip_time_act else resnet.nonlinearity(temb)
        h = h + resnet.time_emb_proj(t)[:, :, None, None]
    h = resnet.conv2(resnet.dropout(resnet.nonlinearity(resnet.norm2(h))))
    h = layer(h, feat)
    skip = x if resnet.conv_shortcut is None else resnet.conv_shortcut(x.contiguous() if resnet.training else x)
    return (skip + h) / resnet.output_scale_factor


def _transformer(attn: nn.Module, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return attn(h, encoder_hidden_states=context, return_dict=False)[0]
