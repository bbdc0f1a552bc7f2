"""Tiled VAE encode and CFW decode for images larger than one VAE tile.

Memory stays bounded by the tile, not the image: the encoder runs tile by tile and the posterior
is blended at latent resolution. The CFW fusion features (at 1/2 and 1/4 resolution with 256/512
channels, about 96 values per image pixel for SD, 24x the latent) are kept per tile
(:class:`TileFeatures`) only within a memory budget, because they wait through the whole sampling;
the decoder plans the same tiles, so kept features spare it a second encoder pass, and without them
each decoder tile re-encodes its own pixel region of the LR image. Tiles overlap and are blended with
the shared Gaussian weights, so there are no seams.

Tile placement (:func:`balanced_starts`): the fewest tiles of at most ``tile_px`` that overlap by at
least ``overlap_px``, shrunk to one common size and spread evenly, so the VAE (most of the run time
on CPU) computes little more than the image. The latent planner's rule (last tile flush with the
border) would, at 2048 px with 1024 px tiles, run nine full tiles covering 2.25x the image; here it
is nine 768 px tiles covering 1.27x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import MIN_VAE_TILE
from ..errors import GeometryError
from ..models.cfw import CFWAutoencoderKL
from .tiles import Tile, TileAccumulator, gaussian_weights

LATENT_FACTOR = 8  # pixels per latent pixel in SD VAEs


def vae_tiling(size: int | None, overlap: int | None) -> tuple[int | None, int]:
    """Validated (tile, overlap) for the VAE in pixels; ``None`` or 0 tile = never tile (overlap then 0).

    Example:
        >>> vae_tiling(1024, None), vae_tiling(0, None)
        ((1024, 128), (None, 0))
    """
    if not size:
        return None, 0
    size = int(size)
    if size < MIN_VAE_TILE:
        raise GeometryError(f"VAE tile must be at least {MIN_VAE_TILE} px (or 0 to disable tiling), got {size}")
    overlap = min(128, size // 4) if overlap is None else int(overlap)
    if not 0 <= overlap < size:
        raise GeometryError(f"VAE tile overlap must be in [0, VAE tile {size}), got {overlap}")
    return size, overlap


def balanced_starts(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """(start offsets, common tile size) covering ``length`` with the fewest tiles of at most ``tile``
    that overlap by at least ``overlap``; the tiles are as small as that count allows and evenly spread.

    Example:
        >>> balanced_starts(256, 128, 16)
        ([0, 80, 160], 96)
        >>> balanced_starts(100, 128, 16)
        ([0], 100)
    """
    if length <= tile:
        return [0], length
    count = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (count - 1) * overlap) // count)
    return [round(i * (length - size) / (count - 1)) for i in range(count)], size


def plan_vae_tiles(h: int, w: int, tile_px: int, overlap_px: int) -> list[Tile]:
    """Latent-resolution tiles for a ``h x w`` latent and pixel tile/overlap (see :func:`balanced_starts`).

    Example:
        >>> [(t.y0, t.x0, t.h, t.w) for t in plan_vae_tiles(256, 100, 1024, 128)][:2]
        [(0, 0, 96, 100), (80, 0, 96, 100)]
    """
    tile = max(1, tile_px // LATENT_FACTOR)
    overlap = min(max(0, overlap_px // LATENT_FACTOR), tile - 1)
    ys, th = balanced_starts(h, tile, overlap)
    xs, tw = balanced_starts(w, tile, overlap)
    return [Tile(y, x, th, tw) for y in ys for x in xs]


@dataclass
class TileFeatures:
    """The CFW encoder features of each VAE tile (latent-resolution tiles; one whole-image tile when untiled),
    kept from the structure encode for the decoder, which takes each tile's once."""

    by_tile: dict[Tile, list[torch.Tensor]]

    def take(self, tile: Tile) -> list[torch.Tensor] | None:
        """The features of ``tile``, released from here (or None when this tile was not encoded: another plan)."""
        return self.by_tile.pop(tile, None)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(feats) for feats in self.by_tile.values())


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def encode(vae: CFWAutoencoderKL, image: torch.Tensor, *, tile_px: int | None = None, overlap_px: int = 128,
           keep_features: bool = False, feature_budget_bytes: float = math.inf
           ) -> tuple[torch.Tensor, TileFeatures | None]:
    """Posterior moments (mean | logvar) of ``image`` (sides multiples of 8), tiled when larger than ``tile_px``,
    and with ``keep_features`` its CFW features for :func:`decode`.

    Tiled, the features are kept only while all tiles' together stay within ``feature_budget_bytes`` (else
    None: the decoder encodes its tiles again); untiled they are what one decode needs at once, so always kept.

    Example:
        >>> from stablesr.models.cfw import CFWAutoencoderKL
        >>> vae = CFWAutoencoderKL(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        ...                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, fusion=True)
        >>> moments, feats = encode(vae, torch.zeros(1, 3, 128, 96), tile_px=64, overlap_px=16, keep_features=True)
        >>> tuple(moments.shape), len(feats.by_tile)  # 3 x 2 tiles of 56 px
        ((1, 8, 16, 12), 6)
    """
    h, w = image.shape[-2] // LATENT_FACTOR, image.shape[-1] // LATENT_FACTOR
    if tile_px is None or max(image.shape[-2:]) <= tile_px:
        enc = vae.encode_with_features(image)
        return enc.moments.float(), TileFeatures({Tile(0, 0, h, w): enc.features}) if keep_features else None
    acc, weights, kept = None, None, {}
    tiles = plan_vae_tiles(h, w, tile_px, overlap_px)
    for tile in tiles:
        ys, xs = tile.scaled(LATENT_FACTOR).slices
        enc = vae.encode_with_features(image[..., ys, xs])
        moments = enc.moments.float()
        if acc is None:  # every tile has the same size: one weight map, one feature size
            acc = TileAccumulator((*moments.shape[:2], h, w), device=moments.device)
            weights = gaussian_weights(tile.h, tile.w)
            all_tiles_bytes = len(tiles) * _nbytes(enc.features)
            keep_features = keep_features and all_tiles_bytes <= feature_budget_bytes
        acc.add(tile, moments, weights)
        if keep_features:
            kept[tile] = enc.features
    return acc.result(), TileFeatures(kept) if keep_features else None


def encode_moments(vae: CFWAutoencoderKL, image: torch.Tensor, *, tile_px: int | None = None,
                   overlap_px: int = 128) -> torch.Tensor:
    """Posterior moments (mean | logvar) of ``image`` (sides multiples of 8), tiled when larger than ``tile_px``."""
    return encode(vae, image, tile_px=tile_px, overlap_px=overlap_px)[0]


def decode(vae: CFWAutoencoderKL, latent: torch.Tensor, lr_image: torch.Tensor | None, fidelity: float, *,
           tile_px: int | None = None, overlap_px: int = 128, features: TileFeatures | None = None
           ) -> torch.Tensor:
    """CFW-decode the UNSCALED ``latent`` with weight ``fidelity``, tiled when the output is larger than ``tile_px``.

    ``lr_image`` (the padded, upscaled LR in [-1, 1]) supplies the fusion features; ``features`` kept by
    :func:`encode` with the same tiling spare encoding it again (tiles missing from them are encoded).
    The kept features are consumed: each tile's are released once that tile is decoded.
    """
    fuse = fidelity != 0 and vae.fusion_layers is not None and (lr_image is not None or features is not None)

    def features_of(tile: Tile) -> list[torch.Tensor] | None:
        if not fuse:
            return None
        kept = None if features is None else features.take(tile)
        if kept is not None:
            return kept
        if lr_image is None:
            raise GeometryError(f"no CFW features for VAE tile {tile} and no LR image to encode them from")
        ys, xs = tile.scaled(LATENT_FACTOR).slices
        return vae.encode_with_features(lr_image[..., ys, xs]).features

    h, w_lat = latent.shape[-2:]
    if tile_px is None or max(h, w_lat) * LATENT_FACTOR <= tile_px:
        return vae.decode_fused(latent, features_of(Tile(0, 0, h, w_lat)), fidelity).float()
    acc, weights = None, None
    for tile in plan_vae_tiles(h, w_lat, tile_px, overlap_px):
        ys, xs = tile.slices
        px = tile.scaled(LATENT_FACTOR)
        out = vae.decode_fused(latent[..., ys, xs], features_of(tile), fidelity).float()
        if acc is None:
            acc = TileAccumulator((*out.shape[:2], h * LATENT_FACTOR, w_lat * LATENT_FACTOR), device=out.device)
            weights = gaussian_weights(px.h, px.w, dtype=out.dtype)
        acc.add(px, out, weights)
    return acc.result()
