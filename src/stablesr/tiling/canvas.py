"""Progressive aggregation sampling: the denoiser run over overlapping latent tiles, blended every step.

:func:`canvas_model_fn` turns a :class:`~stablesr.diffusion.denoiser.StableSRDenoiser` into the model
function the samplers call: at every step the latent is cut into overlapping tiles, each tile (with the
matching crop of the LR latent) is denoised in batches, and the outputs are blended with Gaussian weights.
Everything that does not change between steps (the tile plan, the summed weights, the cropped
conditioning of every tile batch, the canvas buffer) is built once per image.
"""

from __future__ import annotations

import torch

from ..diffusion.denoiser import Conditioning, StableSRDenoiser, timestep_tensor
from ..diffusion.sampling import ModelFn
from .budget import choose_tile_batch
from .tiles import TileAccumulator, TilePlan, tile_starts


def canvas_model_fn(
    denoiser: StableSRDenoiser,
    cond: Conditioning,
    *,
    tile_size: int,
    tile_overlap: int,
    tile_batch_size: int | None = 1,
    official_tile_weights: bool = False,
) -> ModelFn:
    """Progressive aggregation sampling's model function over the whole latent canvas.

    ``official_tile_weights=True`` (the ``tile_weights`` quirk) visits tiles in the official order, uses the
    official (off-centre) weights and the official float64-per-tile accumulation, for bit-level parity;
    results differ from the default only at float32 rounding level and by the half-pixel weight shift.
    ``tile_batch_size=None`` chooses the batch from the free memory (:mod:`stablesr.tiling.budget`).
    """
    b, _, h, w = cond.struct_latent.shape
    if tile_batch_size is None:
        n_tiles = len(tile_starts(h, tile_size, tile_overlap)) * len(tile_starts(w, tile_size, tile_overlap))
        tile_batch_size = choose_tile_batch(denoiser.unet, n_tiles, tile_size, b * (2 if cond.text.guided else 1),
                                            cond.struct_latent.device, denoiser.steered.dtype)
    plan = TilePlan.build(h, w, tile_size, tile_overlap, batch=tile_batch_size, device=cond.struct_latent.device,
                          official=official_tile_weights)
    if len(plan.tiles) == 1 and not official_tile_weights:
        return lambda x, t: denoiser(x, timestep_tensor(t, x.device), cond)
    batches = [(group, plan.padded(group)) for group in plan.groups]
    conds = [cond.crop([t.slices for t in padded]) for _, padded in batches]  # once, not per step
    acc: list[TileAccumulator] = []

    def model_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        if not acc:
            acc.append(plan.accumulator(tuple(x.shape), x.device))
        canvas = acc[0]
        canvas.reset()
        t_vec = timestep_tensor(t, x.device)  # one per step, shared by its tile batches
        for (group, padded), c in zip(batches, conds):
            out = denoiser(torch.cat([x[..., s[0], s[1]] for s in (tl.slices for tl in padded)]), t_vec, c)
            for j, tile in enumerate(group):  # the padding's outputs are dropped
                canvas.add(tile, out[j * b:(j + 1) * b], plan.weights)
        return canvas.result().to(x.dtype)

    return model_fn
