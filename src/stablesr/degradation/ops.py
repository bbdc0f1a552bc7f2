"""Batched image operations of the degradation: blur, resize, noise, USM, crop.

Images are float ``(B, C, H, W)`` tensors in ``[0, 1]`` on any device; per-image amounts are
``(B,)`` tensors or Python numbers. Random draws take an explicit ``torch.Generator`` on the
image's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "CropParams",
    "add_gaussian_noise",
    "add_poisson_noise",
    "crop_image",
    "filter2d",
    "random_crop",
    "reflect101_pad",
    "resize",
    "sample_crop",
    "usm_sharpen",
]

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # the luma weights of the official noise code


def _reflect101_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source indices for a reflect-101 (``dcb|abcd|cba``) padding of any width, like cv2's border."""
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def reflect101_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect-101 padding of the last two dims; unlike ``F.pad`` it allows pads wider than the image."""
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w and min(top, bottom, left, right) >= 0:
        return F.pad(x, (left, right, top, bottom), mode="reflect") if top or bottom or left or right else x
    rows = _reflect101_index(h, top, bottom, x.device)
    cols = _reflect101_index(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image with its own odd ``k x k`` kernel (``(k, k)`` or ``(B, k, k)``), reflect-101 borders.

    Example:
        >>> from stablesr.degradation.kernels import identity_kernel
        >>> x = torch.rand(2, 3, 8, 8)
        >>> torch.equal(filter2d(x, identity_kernel(5)), x)
        True
    """
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    if kernels.ndim == 2:
        kernels = kernels.expand(b, k, k)
    p = k // 2
    padded = reflect101_pad(x, p, p, p, p)
    weight = kernels.to(dtype=x.dtype, device=x.device).repeat_interleave(c, dim=0).unsqueeze(1)
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * p, w + 2 * p), weight, groups=b * c)
    return out.reshape(b, c, h, w)


def resize(
    x: torch.Tensor, mode: str, *, size: tuple[int, int] | None = None, scale: float | None = None
) -> torch.Tensor:
    """``F.interpolate`` as the official code calls it: no antialiasing, half-pixel centres.

    With ``scale`` the output is ``floor(H * scale)`` and the sampling grid uses ``scale`` itself
    (not the rounded size ratio), exactly like ``F.interpolate(x, scale_factor=scale)``.
    """
    kwargs = {} if mode == "area" else {"align_corners": False}
    if size is not None:
        if tuple(size) == tuple(x.shape[-2:]) and mode == "area":
            return x
        return F.interpolate(x, size=tuple(size), mode=mode, **kwargs)
    if scale is None:
        raise ValueError("resize needs size or scale")
    return F.interpolate(x, scale_factor=float(scale), mode=mode, **kwargs)


def _per_image(value: float | torch.Tensor | Sequence[float], b: int, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1)
    return t.expand(b).reshape(b, 1, 1, 1) if t.numel() == 1 else t.reshape(b, 1, 1, 1)


def add_gaussian_noise(
    x: torch.Tensor,
    sigma: float | torch.Tensor | Sequence[float],
    gray: bool | torch.Tensor | Sequence[bool],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``clamp(x + N(0, (sigma/255)^2), 0, 1)``; grey noise (one plane for all channels) where ``gray``."""
    b, c, h, w = x.shape
    s = _per_image(sigma, b, x) / 255.0
    g = _per_image(gray, b, x) > 0.5
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if bool(g.any()):
        grey = torch.randn((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
        noise = torch.where(g, grey.expand(b, c, h, w), noise)
    return torch.clamp(x + noise * s, 0, 1)


def _levels(q: torch.Tensor) -> torch.Tensor:
    """Per image: ``2 ** ceil(log2(number of distinct 8-bit values))``, as ``(B, 1, 1, 1)``."""
    ints = (q * 255).round().long().reshape(q.shape[0], -1)
    counts = torch.zeros(q.shape[0], 256, device=q.device, dtype=torch.long)
    counts.scatter_add_(1, ints, torch.ones_like(ints))
    distinct = (counts > 0).sum(1).clamp(min=1).to(torch.float64)
    return torch.exp2(torch.ceil(torch.log2(distinct))).to(q.dtype).reshape(-1, 1, 1, 1)


def _poisson(q: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    vals = _levels(q)
    return torch.poisson(q * vals, generator=generator) / vals - q


def add_poisson_noise(
    x: torch.Tensor,
    scale: float | torch.Tensor | Sequence[float],
    gray: bool | torch.Tensor | Sequence[bool],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shot noise: the 8-bit-rounded image is treated as photon counts at ``2**ceil(log2(levels))``
    levels; the resulting noise, times ``scale``, is added to the unrounded image, then clamped.
    Grey noise is computed on the luma plane and shared by all channels."""
    b, c, h, w = x.shape
    s = _per_image(scale, b, x)
    g = _per_image(gray, b, x) > 0.5
    if bool(g.all()):
        noise = torch.zeros_like(x)
    else:
        noise = _poisson(torch.clamp((x * 255).round(), 0, 255) / 255, generator)
    if bool(g.any()):
        wts = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
        luma = (x * wts).sum(1, keepdim=True)
        grey = _poisson(torch.clamp((luma * 255).round(), 0, 255) / 255, generator)
        noise = torch.where(g, grey.expand(b, c, h, w), noise)
    return torch.clamp(x + noise * s, 0, 1)


def _gaussian_1d(radius: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ax = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(ax**2) / (2 * sigma**2))
    return (k / k.sum()).to(device=device, dtype=dtype)


def _separable_blur(x: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    p = k1.numel() // 2
    y = reflect101_pad(x, p, p, p, p).reshape(b * c, 1, h + 2 * p, w + 2 * p)
    y = F.conv2d(y, k1.reshape(1, 1, -1, 1))
    y = F.conv2d(y, k1.reshape(1, 1, 1, -1))
    return y.reshape(b, c, h, w)


def usm_sharpen(
    x: torch.Tensor, *, weight: float = 0.5, threshold: float = 10.0, radius: int = 50, sigma: float | None = None
) -> torch.Tensor:
    """Unsharp masking of the official training target.

    ``blur`` is a ``(radius + 1)``-tap Gaussian (51 taps; sigma from OpenCV's rule for ``sigma=0``,
    which is 8.0 here); pixels whose residual ``|x - blur|`` exceeds ``threshold / 255`` form a mask,
    blurred the same way into a soft mask; the result is ``soft * clip(x + weight * residual) +
    (1 - soft) * x``.

    Example:
        >>> y = usm_sharpen(torch.rand(1, 3, 64, 64))
        >>> bool((y >= 0).all() and (y <= 1).all())
        True
    """
    taps = radius + 1 if radius % 2 == 0 else radius
    if sigma is None:
        sigma = 0.3 * ((taps - 1) * 0.5 - 1) + 0.8
    k1 = _gaussian_1d(taps // 2, sigma, x.device, x.dtype)
    residual = x - _separable_blur(x, k1)
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft = _separable_blur(mask, k1)
    sharp = torch.clamp(x + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * x


@dataclass(frozen=True)
class CropParams:
    """A horizontal flip and the crop's top-left corner as fractions of the free range."""

    flip: bool
    top: float
    left: float

    def to_dict(self) -> dict[str, float | bool]:
        return {"flip": self.flip, "top": self.top, "left": self.left}


def sample_crop(generator: torch.Generator, hflip: bool = True) -> CropParams:
    """Draw one :class:`CropParams` (flip with probability 0.5 when ``hflip``)."""
    u = torch.rand(3, generator=generator, dtype=torch.float64, device=generator.device).tolist()
    return CropParams(flip=hflip and u[0] < 0.5, top=u[1], left=u[2])


def crop_image(x: torch.Tensor, size: int, params: CropParams) -> torch.Tensor:
    """The official dataset's crop of a ``(B, C, H, W)`` image: flip, reflect-101 pad at the bottom
    and right to at least ``size``, then a ``size x size`` crop at the sampled corner.

    Example:
        >>> crop_image(torch.rand(1, 3, 100, 300), 128, CropParams(False, 0.5, 0.5)).shape
        torch.Size([1, 3, 128, 128])
    """
    if params.flip:
        x = x.flip(-1)
    h, w = x.shape[-2:]
    x = reflect101_pad(x, 0, max(0, size - h), 0, max(0, size - w))
    h, w = x.shape[-2:]
    top = min(math.floor(params.top * (h - size + 1)), h - size)
    left = min(math.floor(params.left * (w - size + 1)), w - size)
    return x[..., top : top + size, left : left + size]


def random_crop(
    images: torch.Tensor, size: int, generator: torch.Generator, hflip: bool = True
) -> tuple[torch.Tensor, list[CropParams]]:
    """Crop ``(B, C, H, W)`` images to ``size`` as the official dataset does, each image with its own
    flip and corner; returns the crops and the :class:`CropParams` used.

    Example:
        >>> crops, used = random_crop(torch.rand(2, 3, 100, 140), 64, torch.Generator().manual_seed(0))
        >>> crops.shape, len(used)
        (torch.Size([2, 3, 64, 64]), 2)
    """
    used = [sample_crop(generator, hflip) for _ in range(images.shape[0])]
    crops = torch.cat([crop_image(images[i : i + 1], size, c) for i, c in enumerate(used)])
    return crops, used
