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
    the default accumulates in the canvas dtype. Coverage is tracked on the host (no device sync).

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
        weight_sum: torch.Tensor | None = None,
    ) -> None:
        self.value = torch.zeros(shape, device=device, dtype=dtype)
        self.official_rounding = official_rounding
        self._fixed_weights = weight_sum is not None  # precomputed by a TilePlan: not re-summed
        self.weight = weight_sum if weight_sum is not None else torch.zeros(shape[-2:], device=device, dtype=dtype)
        self._covered = np.zeros(shape[-2:], dtype=bool) if weight_sum is None else None

    def reset(self) -> None:
        """Zero the canvas for the next round (the buffer is reused)."""
        self.value.zero_()

    def add(self, tile: Tile, values: torch.Tensor, weights: torch.Tensor) -> None:
        """Add one tile's ``values`` (..., h, w) with ``weights`` (h, w)."""
        ys, xs = tile.slices
        if self.official_rounding:
            w64 = weights.to(self.value.device, torch.float64)
            region = self.value[..., ys, xs]
            self.value[..., ys, xs] = (region.double() + values.double() * w64).to(self.value.dtype)
            if not self._fixed_weights:
                self.weight[ys, xs] = (self.weight[ys, xs].double() + w64).to(self.weight.dtype)
        else:
            w = weights.to(self.value.device, self.value.dtype)
            self.value[..., ys, xs] += values.to(self.value.dtype) * w
            if not self._fixed_weights:
                self.weight[ys, xs] += w
        if self._covered is not None:
            self._covered[ys, xs] = True

    def result(self) -> torch.Tensor:
        """The blended canvas; raises if a pixel received no tile."""
        if self._covered is not None and not self._covered.all():
            raise GeometryError("tiling left pixels uncovered")
        return self.value / self.weight


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one latent canvas, grouped into fixed-size batches, with the weight map and the summed
    weights computed once per image (not per step). The last group is padded with repeats of its first
    tile so every network call has the same batch shape; the padding's outputs are discarded.

    Example:
        >>> plan = TilePlan.build(24, 20, 16, 8, batch=4, device="cpu")
        >>> [len(g) for g in plan.groups], plan.padded_batches
        ([4], [4])
    """

    tiles: list[Tile]
    groups: list[list[Tile]]
    padded_batches: list[int]
    weights: torch.Tensor
    weight_sum: torch.Tensor
    official: bool

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: int, *, batch: int, device: torch.device | str,
              official: bool = False) -> TilePlan:
        tiles = plan_tiles(height, width, tile, overlap, x_major=official)
        batch = max(1, min(int(batch), len(tiles)))
        groups = [tiles[i:i + batch] for i in range(0, len(tiles), batch)]
        dtype = torch.float64 if official else torch.float32
        weights = gaussian_weights(tiles[0].h, tiles[0].w, official_centre=official, dtype=dtype).to(device)
        acc = TileAccumulator((1, height, width), device=device, official_rounding=official)
        for t in tiles:  # the summed weights, with the same arithmetic as the values
            acc.add(t, torch.zeros(1, t.h, t.w, device=device), weights)
        acc.result()  # coverage check, once
        return cls(tiles, groups, [batch] * len(groups), weights, acc.weight, official)

    def padded(self, group: list[Tile]) -> list[Tile]:
        """``group`` filled up to the plan's batch size with repeats of its first tile."""
        return group + [group[0]] * (self.padded_batches[0] - len(group))

    def accumulator(self, shape: tuple[int, ...], device: torch.device | str) -> TileAccumulator:
        """A canvas for this plan whose summed weights are the precomputed ones."""
        return TileAccumulator(shape, device=device, official_rounding=self.official, weight_sum=self.weight_sum)
