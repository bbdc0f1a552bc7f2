"""Full-reference fidelity metrics in the field's protocol (BasicSR's ``calculate_psnr`` / ``calculate_ssim``).

Conventions, all as in BasicSR (which matches the MATLAB code the SR literature reports):

- inputs are float arrays in ``[0, 255]`` (8-bit codes), ``HxWxC``;
- ``crop_border`` pixels are removed from every edge *before* the Y conversion;
- Y is ITU-R BT.601 "studio swing" luma, ``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for
  ``R, G, B`` in ``[0, 255]``, so Y lies in ``[16, 235]``; it is not rounded, and passes through
  float32 as in BasicSR (a difference far below the reported digits, kept for exactness);
  a single-channel (grey) image is used as its own Y, as BasicSR does;
- PSNR uses peak 255 and the mean squared error over all pixels and channels (``inf`` when equal);
- SSIM uses an 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``,
  keeps only the 'valid' part of the filtered maps, computes in float64 and averages the
  per-channel SSIMs.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["crop", "psnr", "rgb_to_y", "ssim"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])  # BT.601 for R, G, B in [0, 1] -> [0, 219]


def crop(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each edge (``0``: unchanged)."""
    if border < 0:
        raise ValueError(f"crop border must be >= 0, got {border}")
    if border == 0:
        return img
    if 2 * border >= min(img.shape[0], img.shape[1]):
        raise ValueError(f"crop border {border} leaves nothing of a {img.shape[1]}x{img.shape[0]} image")
    return img[border:-border, border:-border, ...]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an ``HxWx3`` RGB image in ``[0, 255]``, as ``HxWx1`` float64 in ``[16, 235]``.

    Example:
        >>> float(rgb_to_y(np.full((1, 1, 3), 255.0))[0, 0, 0])
        235.0
    """
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        return img.astype(np.float64)
    unit = img.astype(np.float32) / np.float32(255.0)
    y = (unit.astype(np.float64) @ _Y_WEIGHTS + 16.0) / 255.0
    return (y.astype(np.float32) * np.float32(255.0)).astype(np.float64)[..., None]


def _prepare(img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if img.shape != ref.shape:
        raise ValueError(f"image sizes differ: {img.shape} vs {ref.shape}")
    a, b = crop(img, crop_border), crop(ref, crop_border)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a.astype(np.float64), b.astype(np.float64)


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of ``img`` against ``ref`` (both ``[0, 255]``).

    Example:
        >>> a = np.zeros((8, 8, 3)); b = a + 1.0
        >>> round(psnr(a, b), 4)
        48.1308
    """
    a, b = _prepare(img, ref, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 * 255.0 / mse))


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


_TAPS = _gaussian_taps()


def _blur_valid(plane: np.ndarray) -> np.ndarray:
    # The 2-D window is the outer product of the 1-D taps, so filtering is separable; only windows
    # lying fully inside the image are kept ('valid'), i.e. (H-10)x(W-10) outputs, no padding at all.
    rows = sliding_window_view(plane, len(_TAPS), axis=0) @ _TAPS
    return sliding_window_view(rows, len(_TAPS), axis=1) @ _TAPS


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _blur_valid(a), _blur_valid(b)
    var_a = _blur_valid(a * a) - mu_a**2
    var_b = _blur_valid(b * b) - mu_b**2
    cov = _blur_valid(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM of ``img`` against ``ref`` (both ``[0, 255]``); mean over channels.

    Example:
        >>> rng = np.random.default_rng(0); a = rng.uniform(0, 255, (32, 32, 3))
        >>> ssim(a, a)
        1.0
    """
    a, b = _prepare(img, ref, crop_border, y_channel)
    if min(a.shape[0], a.shape[1]) < len(_TAPS):
        raise ValueError(f"SSIM needs at least {len(_TAPS)}x{len(_TAPS)} pixels after cropping, got {a.shape[1]}x{a.shape[0]}")
    planes = [(np.ascontiguousarray(a[..., c]), np.ascontiguousarray(b[..., c])) for c in range(a.shape[2])]
    return float(np.mean([_ssim_plane(pa, pb) for pa, pb in planes]))
