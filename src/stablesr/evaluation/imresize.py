"""MATLAB-style ``imresize`` (bicubic, optional antialiasing), the resampler NIQE's half scale relies on.

MATLAB's ``imresize`` differs from Pillow/OpenCV in two ways that change metric values: when
shrinking it widens the cubic kernel by ``1 / scale`` (antialiasing), and it extends the image by
mirror-symmetric padding (edge sample repeated). The output size is ``ceil(scale * size)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["imresize"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """Dense ``out_len x in_len`` matrix whose rows are the normalised taps of each output sample."""
    widen = antialias and scale < 1
    width = 4.0 / scale if widen else 4.0
    centre = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)  # 1-based source coords
    first = np.floor(centre - width / 2)
    taps = math.ceil(width) + 2
    idx = first[:, None] + np.arange(taps)[None, :]
    dist = centre[:, None] - idx
    w = scale * _cubic(dist * scale) if widen else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # Mirror-symmetric extension (sample 0 -> 1, -1 -> 2, n+1 -> n, ...), in 1-based indices.
    j = idx.astype(np.int64)
    j = np.where(j < 1, 1 - j, j)
    j = np.where(j > in_len, 2 * in_len + 1 - j, j)
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), taps), (j - 1).ravel()), w.ravel())
    return m


def imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """Resize an ``HxW`` or ``HxWxC`` float image by ``scale`` the way MATLAB's ``imresize`` does.

    Rows are resampled first, then columns (MATLAB's order for shrinking both equally).

    Example:
        >>> imresize(np.ones((6, 4)), 0.5).shape
        (3, 2)
        >>> bool(np.allclose(imresize(np.ones((6, 4)), 0.5), 1.0))
        True
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    squeeze = img.ndim == 2
    x = img[..., None] if squeeze else img
    h, w = x.shape[:2]
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    rows = _resize_matrix(h, out_h, scale, antialias)
    cols = _resize_matrix(w, out_w, scale, antialias)
    x = np.einsum("oh,hwc->owc", rows, x.astype(np.float64))
    x = np.einsum("pw,owc->opc", cols, x)
    return x[..., 0] if squeeze else x
