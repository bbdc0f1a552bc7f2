"""The evaluation package's only door to image files (swap the import here if imageio moves).

Metrics follow BasicSR's conventions, which work on 8-bit values as floats in ``[0, 255]``: an
8-bit file comes back exactly as its integer codes, a 16-bit file scaled to the same range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputImageError, StableSRError
from ..imageio.naming import IMAGE_EXTENSIONS
from ..imageio.read import read_image

__all__ = ["EvalImage", "InputImageError", "StableSRError", "list_images", "load_image"]


@dataclass(frozen=True)
class EvalImage:
    """Pixels as float64 ``HxWxC`` in ``[0, 255]``; ``C`` is 1 for grey sources (as BasicSR reads them)."""

    pixels: np.ndarray
    path: Path

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    def rgb(self) -> np.ndarray:
        """Three channels (grey replicated), float64 in ``[0, 255]``."""
        return self.pixels if self.pixels.shape[2] == 3 else np.repeat(self.pixels, 3, axis=2)


def load_image(path: str | os.PathLike[str]) -> EvalImage:
    """Read one image for evaluation; any problem raises a one-line :class:`InputImageError`.

    Example:
        >>> img = load_image("gt/0001.png")  # doctest: +SKIP
        >>> img.pixels.dtype, float(img.pixels.max()) <= 255.0  # doctest: +SKIP
        (dtype('float64'), True)
    """
    loaded = read_image(path)
    plane = loaded.rgb.astype(np.float64) * 255.0
    if loaded.bit_depth == 8:
        plane = np.round(plane)  # back to the exact integer codes BasicSR sees through cv2.imread
    if loaded.is_grey:
        plane = plane[..., :1]
    return EvalImage(np.ascontiguousarray(plane), Path(path))


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive, hidden files skipped), sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise StableSRError(f"{p}: not a directory")
    return sorted(
        e for e in p.iterdir() if e.is_file() and not e.name.startswith(".") and e.suffix.lower() in IMAGE_EXTENSIONS
    )
