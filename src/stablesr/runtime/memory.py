"""Accelerator memory: recognising out-of-memory failures, giving the memory back, and backing off.

:func:`with_oom_backoff` retries one image with smaller working sets instead of failing: first the
latent tile batch is halved (down to 1), then the VAE tile (down to the minimum), each retry said in
one line. The output does not depend on the tile batch; a smaller VAE tile changes it only at the
blending level (tiles overlap and are blended with Gaussian weights).

Example:
    >>> from stablesr.config import UpscaleOptions
    >>> calls = []
    >>> def attempt(o):
    ...     calls.append((o.tile_batch_size, o.vae_tile_size))
    ...     if len(calls) < 3:
    ...         raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    ...     return "ok"
    >>> with_oom_backoff(attempt, UpscaleOptions(tile_batch_size=2, vae_tile_size=1024), output_side=2048,
    ...                  note=lambda m: None)
    'ok'
    >>> calls
    [(2, 1024), (1, 1024), (1, 512)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from ..config import DEFAULT_TILE_BATCH, MIN_VAE_TILE, UpscaleOptions

T = TypeVar("T")
VAE_TILE_ALIGN = 8  # the VAE tile stays a multiple of the latent factor


def is_out_of_memory(exc: BaseException) -> bool:
    """Host or accelerator out of memory (``torch.cuda.OutOfMemoryError``, or a RuntimeError saying so)."""
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))
    if isinstance(exc, (MemoryError, *oom_types)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    """Return cached CUDA memory after a failure, so the next item starts clean."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def smaller_options(options: UpscaleOptions, output_side: int) -> UpscaleOptions | None:
    """The next smaller working set after an out-of-memory failure, or None when nothing is left to shrink.

    ``output_side`` (the longer output side in pixels) stands in for the VAE tile when the VAE is untiled.

    Example:
        >>> o = smaller_options(UpscaleOptions(tile_batch_size=1, vae_tile_size=None), output_side=1000)
        >>> o.tile_batch_size, o.vae_tile_size
        (1, 496)
    """
    if options.tile_batch_size is None:  # the automatic choice was too optimistic: a fixed small batch
        return replace(options, tile_batch_size=DEFAULT_TILE_BATCH)
    if options.tile_batch_size > 1:
        return replace(options, tile_batch_size=options.tile_batch_size // 2)
    current = options.vae_tile_size or output_side
    halved = max(MIN_VAE_TILE, current // 2 // VAE_TILE_ALIGN * VAE_TILE_ALIGN)
    if halved >= current or current <= MIN_VAE_TILE:
        return None
    return replace(options, vae_tile_size=halved)


def describe(options: UpscaleOptions) -> str:
    vae = f"VAE tile {options.vae_tile_size} px" if options.vae_tile_size else "untiled VAE"
    return f"tile batch {options.tile_batch_size or 'auto'}, {vae}"


def with_oom_backoff(attempt: Callable[[UpscaleOptions], T], options: UpscaleOptions, *, output_side: int,
                     note: Callable[[str], None] = print) -> T:
    """``attempt(options)``, retried with :func:`smaller_options` after each out-of-memory failure.

    Each retry is announced by one ``note`` line; other errors, and an out-of-memory failure at the
    smallest working set, propagate unchanged.
    """
    while True:
        try:
            return attempt(options)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            smaller = smaller_options(options, output_side)
            if smaller is None:
                raise
        # outside the except block: the failed attempt's frames (and their tensors) are released now
        free_accelerator_memory()
        note(f"out of memory at {describe(options)}; retrying the image with {describe(smaller)}")
        options = smaller
