"""Colour correction of the SR output against the (upscaled) LR input.

Diffusion SR drifts in colour; both fixes pull the low frequencies / channel statistics back
to the input's. They work on NCHW tensors in [-1, 1] (any range works), before clamping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import COLOR_FIXES, ColorFix


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match each channel's mean and std (unbiased variance + eps) of ``content`` to ``style``.

    Example:
        >>> out = adain(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8) * 2 + 1)
    """
    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(*x.shape[:2], -1)
        return flat.mean(-1)[..., None, None], (flat.var(-1) + eps).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


def _binomial_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """Depthwise 3x3 [1,2,1]x[1,2,1]/16 blur with the given dilation and replicate padding."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    padded = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=x.shape[1], dilation=dilation)


def wavelet_split(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) of an a-trous decomposition with dilations 1, 2, 4, ...; ``high + low == x``."""
    high = torch.zeros_like(x)
    for level in range(levels):
        low = _binomial_blur(x, 2**level)
        high = high + (x - low)
        x = low
    return high, x


def wavelet(content: torch.Tensor, style: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """High frequencies of ``content`` plus the lowest band of ``style``.

    Example:
        >>> out = wavelet(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
    """
    return wavelet_split(content, levels)[0] + wavelet_split(style, levels)[1]


def apply_color_fix(content: torch.Tensor, style: torch.Tensor, method: ColorFix) -> torch.Tensor:
    """Dispatch on ``method`` in :data:`stablesr.config.COLOR_FIXES`."""
    if method == "adain":
        return adain(content, style)
    if method == "wavelet":
        return wavelet(content, style)
    if method == "none":
        return content
    raise ValueError(f"unknown colour fix {method!r}; choose one of {', '.join(COLOR_FIXES)}")
