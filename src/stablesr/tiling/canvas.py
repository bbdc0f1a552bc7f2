"""Progressive aggregation sampling: the denoiser run over overlapping latent tiles, blended every step.

:func:`canvas_model_fn` turns a :class:`~stablesr.diffusion.denoiser.StableSRDenoiser` into the model
function the samplers call: at every step the latent is cut into overlapping tiles, each tile (with the
matching crop of the LR latent) is denoised in batches, and the outputs are blended with Gaussian weights.
"""

from __future__ import annotations

import torch

from ..diffusion.denoiser import StableSRDenoiser, TextConditioning
from ..diffusion.sampling import ModelFn
from .tiles import Tile, TileAccumulator, gaussian_weights, plan_tiles


def canvas_model_fn(
    denoiser: StableSRDenoiser,
    struct_latent: torch.Tensor,
    text: TextConditioning,
    *,
    tile_size: int,
    tile_overlap: int,
    tile_batch_size: int = 1,
    official_tile_weights: bool = False,
) -> ModelFn:
    """Progressive aggregation sampling's model function over the whole latent canvas.

    ``official_tile_weights=True`` (the ``tile_weights`` quirk) visits tiles in the official order, uses the official (off-centre)
    weights and the official float64-per-tile accumulation, for bit-level parity; results
    differ from the default only at float32 rounding level and by the half-pixel weight shift.
    """
    b, _, h, w = struct_latent.shape
    tiles = plan_tiles(h, w, tile_size, tile_overlap, x_major=official_tile_weights)
    if len(tiles) == 1 and not official_tile_weights:
        return lambda x, t: denoiser(x, t, struct_latent, text)
    th, tw = tiles[0].h, tiles[0].w
    weights = gaussian_weights(th, tw, official_centre=official_tile_weights,
                               dtype=torch.float64 if official_tile_weights else torch.float32)
    weights = weights.to(struct_latent.device)
    batch = max(1, int(tile_batch_size))

    def crop(z: torch.Tensor, group: list[Tile]) -> torch.Tensor:
        return torch.cat([z[..., t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] for t in group])

    def model_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        acc = TileAccumulator(tuple(x.shape), device=x.device, official_rounding=official_tile_weights)
        for start in range(0, len(tiles), batch):
            group = tiles[start:start + batch]
            out = denoiser(crop(x, group), t, crop(struct_latent, group), text)
            for j, tile in enumerate(group):
                acc.add(tile, out[j * b:(j + 1) * b], weights)
        return acc.result().to(x.dtype)

    return model_fn
