"""Batched JPEG compression in torch (encode + decode in one go), per-image quality.

Baseline JPEG with 4:2:0 chroma: JFIF RGB->YCbCr, 2x2 averaged chroma, 8x8 orthonormal DCT,
quantisation by the Annex K tables scaled by quality, then the inverse. Two table conventions:

* ``"official"``: what the official training code's DiffJPEG does. The quality may be fractional
  and scales the tables without rounding (``(200 - 2q) / 100`` above 50, ``50 / q`` below), the
  tables are applied transposed (rows of the table multiply horizontal frequencies), the input is
  not rounded to 8 bits, borders are zero-padded to a multiple of 16, chroma is upsampled by
  repetition, and the output is clipped but not rounded.
* ``"libjpeg"``: what Pillow/OpenCV (libjpeg) encoders do: integer quality, integer tables
  ``clip(floor((T * S + 50) / 100), 1, 255)``, 8-bit input and output, edge-replicated borders,
  triangle ("fancy") chroma upsampling in the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["jpeg_compress"]

_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TOP = ((17, 18, 24, 47), (18, 21, 26, 66), (24, 26, 56, 99), (47, 66, 99, 99))
_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def _tables(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    luma = torch.tensor(_LUMA, dtype=dtype, device=device)
    chroma = torch.full((8, 8), 99.0, dtype=dtype, device=device)
    chroma[:4, :4] = torch.tensor(_CHROMA_TOP, dtype=dtype, device=device)
    return luma, chroma


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II: ``D[u, x] = c(u) cos((2x + 1) u pi / 16)``."""
    u = torch.arange(8, dtype=torch.float64).reshape(8, 1)
    x = torch.arange(8, dtype=torch.float64).reshape(1, 8)
    d = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=dtype)


def _quant_tables(quality: torch.Tensor, style: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 8, 8)`` luma and chroma step sizes for each image's quality."""
    luma, chroma = _tables(quality.device, quality.dtype)
    q = quality.reshape(-1, 1, 1)
    if style == "official":
        factor = torch.where(q < 50, 50.0 / q, (200.0 - 2 * q) / 100.0)
        return luma.T * factor, chroma.T * factor
    s = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2 * q)
    return (
        torch.clamp(torch.floor((luma * s + 50) / 100), 1, 255),
        torch.clamp(torch.floor((chroma * s + 50) / 100), 1, 255),
    )


def _code_plane(plane: torch.Tensor, steps: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """DCT, quantise/dequantise, inverse DCT of a ``(B, H, W)`` plane (H, W multiples of 8).

    The 2-D DCT of every block is one matrix product with ``kron(D, D)`` over flattened 8x8 blocks
    (much faster than many tiny 8x8 products).
    """
    b, h, w = plane.shape
    blocks = (plane - 128).reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, -1, 64)
    k = torch.kron(d, d)  # k[(u, v), (x, y)] = D[u, x] D[v, y]
    coef = blocks @ k.T
    st = steps.reshape(b, 1, 64)
    lossless = st <= 0  # quality 100 in the official scaling: nothing is quantised
    if bool(lossless.any()):
        safe = torch.where(lossless, torch.ones_like(st), st)
        coef = torch.where(lossless, coef, torch.round(coef / safe) * safe)
    else:
        coef = torch.round(coef / st) * st
    out = (coef @ k + 128).reshape(b, h // 8, w // 8, 8, 8)
    return out.permute(0, 1, 3, 2, 4).reshape(b, h, w)


def _fancy_upsample(x: torch.Tensor, dim: int) -> torch.Tensor:
    """libjpeg's triangle ("fancy") 2x chroma upsampling along ``dim``: 3/4 nearest + 1/4 next sample."""
    n = x.shape[dim]
    prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
    nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def jpeg_compress(
    x: torch.Tensor, quality: float | torch.Tensor | Sequence[float], *, style: str = "official"
) -> torch.Tensor:
    """JPEG-compress and decode RGB images ``(B, 3, H, W)`` in ``[0, 1]``; ``quality`` per image (1..100).

    Example:
        >>> x = torch.rand(2, 3, 20, 30)
        >>> jpeg_compress(x, [60.0, 90.0]).shape
        torch.Size([2, 3, 20, 30])
    """
    if style not in ("official", "libjpeg"):
        raise ValueError(f"unknown JPEG style {style!r}")
    b, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"JPEG needs 3 channels, got {c}")
    q = torch.as_tensor(quality, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    img = x.to(compute) * 255
    ph, pw = (-h) % 16, (-w) % 16
    if style == "libjpeg":
        q = torch.clamp(torch.floor(q), 1, 100)
        img = torch.clamp(img.round(), 0, 255)
        img = F.pad(img, (0, pw, 0, ph), mode="replicate") if ph or pw else img
    else:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
    luma_steps, chroma_steps = _quant_tables(q.to(compute), style)
    to_ycc = torch.tensor(_TO_YCC, dtype=compute, device=x.device)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, img)
    d = _dct_matrix(x.device, compute)
    y = _code_plane(ycc[:, 0], luma_steps, d)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)  # 4:2:0, centred chroma (the +128 offset cancels in the DCT)
    hc, wc = chroma.shape[-2:]
    both = chroma.reshape(2 * b, hc, wc) + 128  # Cb and Cr of every image as one batch of planes
    chroma = (_code_plane(both, chroma_steps.repeat_interleave(2, dim=0), d) - 128).reshape(b, 2, hc, wc)
    if style == "libjpeg":
        up = _fancy_upsample(_fancy_upsample(chroma, 2), 3)
    else:
        up = chroma.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    to_rgb = torch.tensor(_TO_RGB, dtype=compute, device=x.device)
    rgb = torch.einsum("ij,bjhw->bihw", to_rgb, torch.cat([y.unsqueeze(1), up], 1))
    rgb = torch.clamp(rgb, 0, 255)
    if style == "libjpeg":
        rgb = rgb.round()
    return (rgb[..., :h, :w] / 255).to(x.dtype)
