"""Transparency is not image content: an alpha plane is resized (bicubic, clamped), never diffused."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (..., h, w) alpha planes in [0, 1] to ``size`` = (H, W): bicubic, antialiased, clamped to [0, 1].

    Example:
        >>> resize_alpha(torch.ones(1, 4, 6), (8, 12)).shape
        torch.Size([1, 8, 12])
    """
    lead = alpha.shape[:-2]
    planes = alpha.float().reshape(-1, 1, *alpha.shape[-2:])
    resized = F.interpolate(planes, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0).reshape(*lead, *size)


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`resize_alpha` for one HxW numpy plane.

    Example:
        >>> upscale_alpha(np.ones((4, 6), np.float32), (8, 12)).shape
        (8, 12)
    """
    plane = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))
    return resize_alpha(plane, size).numpy()
