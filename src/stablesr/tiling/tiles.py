"""One tile planner, one weight map and one accumulator, shared by latent and VAE/pixel tiling.

Tiles overlap; each tile's output is multiplied by a Gaussian weight map and the canvas is the
weighted sum divided by the summed weights, so there are no seams. The official code uses the
same scheme at three places (latent tiles, pixel tiles); here it is written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GeometryError


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: every ``tile - overlap`` pixels, the last tile flush with the border.

    A tile longer than the axis is clipped to it (one tile at 0). This is the official rule
    for latent tiles and pixel tiles alike.

    Example:
        >>> tile_starts(100, 64, 32)
        [0, 32, 36]
    """
    if length <= 0:
        raise GeometryError(f"cannot tile an axis of length {length}")
    if tile <= 0:
        raise GeometryError(f"tile size must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise GeometryError(f"tile overlap must be in [0, tile size {tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = 1 + math.ceil((length - tile) / stride)
    return [i * stride for i in range(count - 1)] + [length - tile]


@dataclass(frozen=True)
class Tile:
    """A rectangle ``[y0, y0 + h) x [x0, x0 + w)`` of a canvas."""

    y0: int
    x0: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.h), slice(self.x0, self.x0 + self.w)

    def scaled(self, factor: int) -> Tile:
        """The same region on a canvas ``factor`` times larger (latent tile -> pixel tile)."""
        return Tile(self.y0 * factor, self.x0 * factor, self.h * factor, self.w * factor)


def plan_tiles(height: int, width: int, tile: int, overlap: int, *, x_major: bool = False) -> list[Tile]:
    """All tiles covering a ``height x width`` canvas.

    ``x_major`` visits tiles column by column (for each x, every y), the official order; the
    default is row by row. Tiles are ``min(tile, side)`` along each axis.

    Example:
        >>> [(t.y0, t.x0) for t in plan_tiles(24, 20, 16, 12, x_major=True)]
        [(0, 0), (4, 0), (8, 0), (0, 4), (4, 4), (8, 4)]
    """
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    if x_major:
        return [Tile(y, x, th, tw) for x in xs for y in ys]
    return [Tile(y, x, th, tw) for y in ys for x in xs]


def gaussian_weights(
    height: int, width: int, *, official_centre: bool = False, var: float = 0.01, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Separable Gaussian weight map of shape (height, width), sigma = 0.1 x side, strictly positive.

    The default centre is ``(n - 1) / 2`` on both axes. ``official_centre=True`` reproduces the
    official map, whose vertical centre is ``n / 2`` (half a pixel low); it is built in float64
    as there.
    """
    def profile(n: int, mid: float) -> np.ndarray:
        x = np.arange(n, dtype=np.float64)
        return np.exp(-(x - mid) * (x - mid) / (n * n) / (2 * var)) / np.sqrt(2 * np.pi * var)

    gy = profile(height, height / 2 if official_centre else (height - 1) / 2)
    gx = profile(width, (width - 1) / 2)
    return torch.from_numpy(np.outer(gy, gx)).to(dtype)


class TileAccumulator:
    """Weighted blending of tile outputs into a canvas of shape (..., H, W).

    ``official_rounding=True`` adds each tile in float64 and rounds the canvas to float32 after
    every tile, which is what the official code's float32-buffer/float64-weight arithmetic does;
    the default accumulates in the canvas dtype.

    Example:
        >>> acc = TileAccumulator((1, 4, 24, 20), device="cpu")
        >>> for t in plan_tiles(24, 20, 16, 8):
        ...     acc.add(t, torch.ones(1, 4, t.h, t.w), gaussian_weights(t.h, t.w))
        >>> bool(torch.allclose(acc.result(), torch.ones(1, 4, 24, 20)))
        True
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
        official_rounding: bool = False,
    ) -> None:
        self.value = torch.zeros(shape, device=device, dtype=dtype)
        self.weight = torch.zeros(shape[-2:], device=device, dtype=dtype)
        self.official_rounding = official_rounding

    def add(self, tile: Tile, values: torch.Tensor, weights: torch.Tensor) -> None:
        """Add one tile's ``values`` (..., h, w) with ``weights`` (h, w)."""
        ys, xs = tile.slices
        if self.official_rounding:
            w64 = weights.to(self.value.device, torch.float64)
            region = self.value[..., ys, xs]
            self.value[..., ys, xs] = (region.double() + values.double() * w64).to(self.value.dtype)
            self.weight[ys, xs] = (self.weight[ys, xs].double() + w64).to(self.weight.dtype)
        else:
            w = weights.to(self.value.device, self.value.dtype)
            self.value[..., ys, xs] += values.to(self.value.dtype) * w
            self.weight[ys, xs] += w

    def result(self) -> torch.Tensor:
        """The blended canvas; raises if a pixel received no tile."""
        if not bool((self.weight > 0).all()):
            raise GeometryError("tiling left pixels uncovered")
        return self.value / self.weight
