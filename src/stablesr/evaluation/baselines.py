"""Classical upscalers that need no weights, to put next to StableSR in one ``stablesr compare``."""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSICAL_METHODS", "classical_upscale", "output_size"]

#: Method name -> Pillow resampling filter name.
CLASSICAL_METHODS = {"bicubic": "BICUBIC", "lanczos": "LANCZOS", "bilinear": "BILINEAR", "nearest": "NEAREST"}


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(round(scale * width), round(scale * height))`` (Python rounding, as the pipeline), at least 1 pixel."""
    return max(1, round(scale * width)), max(1, round(scale * height))


def classical_upscale(image: np.ndarray, scale: float, method: str = "bicubic") -> np.ndarray:
    """Resize a float ``HxWxC`` (or ``HxW``) image in ``[0, 1]`` by ``scale`` with Pillow's filter.

    Each channel is resampled in Pillow's 32-bit float mode (no 8-bit rounding in between);
    the output is float32, clipped to ``[0, 1]``, of size ``round(scale * size)``.

    Example:
        >>> classical_upscale(np.zeros((3, 5, 3), np.float32), 4, "lanczos").shape
        (12, 20, 3)
    """
    from PIL import Image

    if method not in CLASSICAL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(CLASSICAL_METHODS)}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    arr = np.asarray(image, dtype=np.float32)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected an HxWxC image, got shape {arr.shape}")
    size = output_size(arr.shape[1], arr.shape[0], scale)
    resample = getattr(Image.Resampling, CLASSICAL_METHODS[method])
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c]), mode="F").resize(size, resample))
              for c in range(arr.shape[2])]
    out = np.clip(np.stack(planes, axis=2), 0.0, 1.0).astype(np.float32)
    return out[..., 0] if squeeze else out
