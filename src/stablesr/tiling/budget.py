"""How many latent tiles go into one network call when the caller leaves it to us (``tile_batch_size=None``).

Small tiles in small batches waste most of a step on per-call overhead (on CPU the tiny model runs a
16x16 tile 3x faster per tile at batch 49 than at batch 1); large batches cost memory. The batch is
therefore chosen from the memory that is free now: an estimate of one tile's activations
(:func:`tile_bytes`) against half of the free memory, at most :data:`MAX_AUTO_TILE_BATCH` tiles, then
balanced so that the last network call is not mostly padding. If an estimate is still too optimistic,
the out-of-memory back-off of the service halves the batch and retries.

Example:
    >>> balanced_batch(961, 64)  # 16 calls either way; 61 tiles each instead of 64 with a padded last call
    61
    >>> auto_tile_batch(49, per_tile_bytes=4_000_000, free_bytes=10**9)
    49
    >>> auto_tile_batch(49, per_tile_bytes=400_000_000, free_bytes=4 * 10**9)  # 5 fit: 10 calls, balanced to 5
    5
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import DEFAULT_TILE_BATCH
from ..errors import GeometryError

MAX_AUTO_TILE_BATCH = 64  # beyond this the CPU gets slower per tile (cache) and GPUs gain little
MEMORY_SHARE = 0.5  # of the free memory, for one call's activations
FEATURE_SHARE = 0.25  # of the free memory, for CFW features kept from the tiled encode through the sampling
CANVAS_COPIES = 2  # float32 image canvases alive at once at the least (the padded input, the restored image)
ACTIVATION_FACTOR = 150  # elements per (model channel x latent pixel) of one tile; measured ~30 on CPU, x5 margin


def balanced_batch(n_tiles: int, batch: int) -> int:
    """The smallest batch that needs as many calls as ``batch`` does."""
    batch = max(1, min(batch, n_tiles))
    calls = math.ceil(n_tiles / batch)
    return math.ceil(n_tiles / calls)


def tile_bytes(unet: nn.Module, tile: int, samples_per_tile: int, dtype: torch.dtype) -> int:
    """A generous estimate of one tile's peak activations in one UNet call (``samples_per_tile`` = images
    in the batch x 2 under guidance)."""
    channels = getattr(getattr(unet, "config", None), "block_out_channels", None) or [320]
    element = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    return ACTIVATION_FACTOR * int(channels[0]) * tile * tile * samples_per_tile * element


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory free for tensors on ``device`` now (CUDA: free plus cached, within the process's
    ``set_per_process_memory_fraction`` cap; CPU: the OS's available), or None."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        available = free + torch.cuda.memory_reserved(device) - allocated
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.9
        if fraction is not None:
            available = min(available, int(fraction(device) * total) - allocated)
        return max(0, int(available))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def feature_budget_bytes(device: torch.device) -> int:
    """How many bytes of tiled-encode CFW features may wait through the sampling on ``device`` (0 when its
    free memory is unknown: the decoder then encodes its tiles again). Measured before the tile batch is
    chosen, so kept features leave the UNet less, not more, than it would otherwise get."""
    free = free_memory_bytes(device)
    return 0 if free is None else int(free * FEATURE_SHARE)


def auto_tile_batch(n_tiles: int, *, per_tile_bytes: int, free_bytes: int | None) -> int:
    """Tiles per call: as many as fit in :data:`MEMORY_SHARE` of ``free_bytes`` (the default batch when the free
    memory is unknown), at most :data:`MAX_AUTO_TILE_BATCH`, balanced over the calls."""
    if free_bytes is None:
        return balanced_batch(n_tiles, DEFAULT_TILE_BATCH)
    fit = int(free_bytes * MEMORY_SHARE // max(1, per_tile_bytes))
    return balanced_batch(n_tiles, min(MAX_AUTO_TILE_BATCH, max(1, fit)))


def choose_tile_batch(unet: nn.Module, n_tiles: int, tile: int, samples_per_tile: int, device: torch.device,
                      dtype: torch.dtype) -> int:
    """:func:`auto_tile_batch` for this UNet on ``device`` with the memory free now."""
    return auto_tile_batch(n_tiles, per_tile_bytes=tile_bytes(unet, tile, samples_per_tile, dtype),
                           free_bytes=free_memory_bytes(device))


def check_canvas_fits(batch: int, height: int, width: int, device: torch.device) -> None:
    """Refuse, before anything is allocated, an RGB canvas that cannot fit in the memory free on ``device``
    (an upscale of 1e6 would otherwise end in an allocator error asking for petabytes).

    Example:
        >>> check_canvas_fits(1, 10**6, 10**6, torch.device("cpu"))
        Traceback (most recent call last):
        ...
        stablesr.errors.GeometryError: the working canvas would be 1000000x1000000 px (1000000.0 MP, 24000 GB as float32 images), more than the memory free on cpu; lower the scale or crop the image
    """
    need = CANVAS_COPIES * batch * 3 * height * width * 4
    free = free_memory_bytes(device)
    if free is not None and need > free:
        raise GeometryError(f"the working canvas would be {width}x{height} px ({height * width / 1e6:.1f} MP, "
                            f"{need / 1e9:.0f} GB as float32 images), more than the memory free on {device}; "
                            "lower the scale or crop the image")
