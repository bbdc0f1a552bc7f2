"""Pillow images -> float planes in [0, 1] (values, alpha, grey or not, bit depth): no torch, so file reading
stays light. Used by :mod:`stablesr.imageio.read` for files and :mod:`.convert` for the Python API."""

from __future__ import annotations

import numpy as np
from PIL import Image

GREY_16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def pil_planes(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool, int]:
    """(values HxW or HxWx3 in [0, 1], alpha HxW or None, is_grey, bit_depth) of a loaded Pillow image.

    Alpha includes key-colour (tRNS / palette) transparency. Raises ``ValueError`` for a mode Pillow cannot
    convert.

    Example:
        >>> values, alpha, grey, bits = pil_planes(Image.new("RGBA", (3, 2)))
        >>> values.shape, alpha.shape, grey, bits
        ((2, 3, 3), (2, 3), False, 8)
    """
    mode = im.mode
    if mode in GREY_16_MODES:
        # "I" is how older Pillow versions (and some TIFFs) present 16-bit grey.
        grey = np.clip(np.asarray(im).astype(np.float32), 0, 65535) / 65535
        return grey, None, True, 16
    if mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float32)), 0, 1)
        return grey, None, True, 16  # float data has more than 8 bits: keep precision on output

    has_key_colour = "transparency" in im.info  # tRNS / palette transparency is alpha too
    if mode in ("LA", "La") or (mode in ("1", "L") and has_key_colour):
        target, is_grey = "LA", True
    elif mode in ("1", "L"):
        target, is_grey = "L", True
    elif mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and has_key_colour):
        target, is_grey = "RGBA", False
    else:
        target, is_grey = "RGB", False
    if mode != target:
        im = im.convert(target)  # ValueError for modes Pillow cannot convert

    planes = np.asarray(im, dtype=np.float32) / 255
    if target == "LA":
        return planes[..., 0], planes[..., 1], True, 8
    if target == "RGBA":
        return planes[..., :3], planes[..., 3], False, 8
    return planes, None, is_grey, 8
