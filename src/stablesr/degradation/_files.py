"""The one place the degradation package reaches for image files (so a move of the I/O module is a one-line fix)."""

from __future__ import annotations

from ..io import IMAGE_EXTENSIONS, read_image, write_image

__all__ = ["IMAGE_EXTENSIONS", "read_image", "write_image"]
