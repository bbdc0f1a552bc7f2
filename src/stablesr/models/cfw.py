"""The CFW (controllable feature wrapping) autoencoder: the SD VAE plus LR-feature fusion in the decoder.

``encode(lr)`` returns the latent posterior *and* two encoder feature maps (the outputs of
encoder levels 1 and 2, before their down-samplers). ``decode_fused(z, features, fidelity)``
adds ``fidelity * fusion(features, h)`` to the decoder activation at the two matching resolutions, after
each level's ResBlocks and before its up-sampler. ``fidelity = 0`` is exactly the plain VAE
decoder (most realistic); ``fidelity = 1`` is most faithful to the LR input.

The base is a stock ``diffusers.AutoencoderKL``; only the fusion blocks are ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


class FusionResBlock(nn.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, with a 1x1 ``conv_out`` shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return (x if self.conv_out is None else self.conv_out(x)) + h


class DenseBlock(nn.Module):
    """Five 3x3 convs, each fed the block input and all earlier outputs; output scaled by 0.2 and added."""

    def __init__(self, channels: int, growth: int = 32) -> None:
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(channels + (i - 1) * growth, growth, 3, padding=1))
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(1, 5):
            feats.append(nn.functional.leaky_relu(getattr(self, f"conv{i}")(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block (three dense blocks, output scaled by 0.2 and added)."""

    def __init__(self, channels: int, growth: int = 32) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(channels, growth)
        self.rdb2 = DenseBlock(channels, growth)
        self.rdb3 = DenseBlock(channels, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class FusionBlock(nn.Module):
    """One CFW fusion layer: ``ResBlock(2C->C) -> 2 x RRDB -> ResBlock(C->C)`` on ``[enc | dec]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encode_enc_1 = FusionResBlock(2 * channels, channels)
        self.encode_enc_2 = nn.Sequential(RRDB(channels), RRDB(channels))
        self.encode_enc_3 = FusionResBlock(channels, channels)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return self.encode_enc_3(self.encode_enc_2(self.encode_enc_1(torch.cat([enc, dec], 1))))


@dataclass
class CFWEncoding:
    """What the CFW encoder produces for one image batch.

    ``moments`` are the posterior parameters (mean | logvar, logvar not yet clamped);
    ``features`` are the two LR feature maps the decoder fuses (level 1 then level 2).
    """

    moments: torch.Tensor
    features: list[torch.Tensor]

    @property
    def mean(self) -> torch.Tensor:
        return self.moments.chunk(2, dim=1)[0]

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * torch.clamp(self.moments.chunk(2, dim=1)[1], -30.0, 20.0))

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Posterior sample ``mean + std * noise`` (the official code samples, it never takes the mode)."""
        return self.mean + self.std * noise.to(self.moments.dtype)


FUSED_LEVELS = (1, 2)  # encoder/decoder levels (counted from full resolution) that carry a fusion block


class CFWAutoencoderKL(AutoencoderKL):
    """SD ``AutoencoderKL`` with CFW fusion layers and feature-returning encode / fusing decode.

    Extra config:
        stem_channels: width of the encoder's first conv when it differs from ``block_out_channels[0]``
            (official configs with ``ch_mult[0] != 1``); ``None`` for the standard SD VAE.
        fusion: whether the fusion layers exist (a plain SD VAE has none).

    Example:
        >>> vae = CFWAutoencoderKL(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        ...                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1)
        >>> enc = vae.encode_with_features(torch.zeros(1, 3, 64, 64))
        >>> vae.decode_fused(enc.mean, enc.features, fidelity=0.5).shape
        torch.Size([1, 3, 64, 64])
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Sequence[str] = ("DownEncoderBlock2D",) * 4,
        up_block_types: Sequence[str] = ("UpDecoderBlock2D",) * 4,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 512,
        scaling_factor: float = 0.18215,
        force_upcast: bool = True,
        shift_factor: float | None = None,
        latents_mean: tuple | None = None,
        latents_std: tuple | None = None,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        stem_channels: int | None = None,
        fusion: bool = True,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            force_upcast=force_upcast,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        if stem_channels is not None and stem_channels != block_out_channels[0]:
            # Official encoders map RGB to `ch` and widen inside level 0; diffusers' conv_in goes straight to
            # block_out_channels[0]. Rebuild those two modules so such checkpoints load unchanged.
            self.encoder.conv_in = nn.Conv2d(in_channels, stem_channels, 3, padding=1)
            self.encoder.down_blocks[0].resnets[0] = ResnetBlock2D(
                in_channels=stem_channels, out_channels=block_out_channels[0], temb_channels=None, eps=1e-6,
                groups=norm_num_groups, dropout=0.0, non_linearity=act_fn, output_scale_factor=1.0,
            )
        n = len(block_out_channels)
        # fusion_layers[k] belongs to encoder level FUSED_LEVELS[k] == decoder up block n-1-level
        self.fusion_layers = nn.ModuleList(FusionBlock(block_out_channels[lv]) for lv in FUSED_LEVELS) if fusion else None
        self._fusion_up_index = {n - 1 - lv: k for k, lv in enumerate(FUSED_LEVELS)}

    def encode_with_features(self, x: torch.Tensor) -> CFWEncoding:
        """Run the encoder, keeping the level-1 and level-2 outputs (before down-sampling) for the decoder."""
        enc = self.encoder
        h = enc.conv_in(x.to(self.dtype))
        features: list[torch.Tensor] = []
        for level, block in enumerate(enc.down_blocks):
            for resnet in block.resnets:
                h = resnet(h, None)
            if level in FUSED_LEVELS:
                features.append(h)
            if block.downsamplers is not None:
                for down in block.downsamplers:
                    h = down(h)
        h = enc.mid_block(h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return CFWEncoding(moments=h, features=features)

    def decode_fused(
        self, z: torch.Tensor, features: Sequence[torch.Tensor] | None = None, fidelity: float = 0.0
    ) -> torch.Tensor:
        """Decode the UNSCALED latent ``z`` (latent / scaling_factor), fusing ``features`` with weight ``fidelity``.

        With ``fidelity == 0`` (or no features) the fusion layers are skipped: the output is the plain VAE decoder's.
        """
        fuse = fidelity != 0 and features is not None and self.fusion_layers is not None
        dec = self.decoder
        h = z.to(self.dtype)
        if self.post_quant_conv is not None:
            h = self.post_quant_conv(h)
        h = dec.conv_in(h)
        h = dec.mid_block(h, None)
        for index, block in enumerate(dec.up_blocks):
            for resnet in block.resnets:
                h = resnet(h, None)
            k = self._fusion_up_index.get(index)
            if fuse and k is not None:
                h = h + fidelity * self.fusion_layers[k](features[k].to(h.dtype), h)
            if block.upsamplers is not None:
                for up in block.upsamplers:
                    h = up(h)
        return dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))
