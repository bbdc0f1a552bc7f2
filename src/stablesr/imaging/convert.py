"""The one place that converts PIL images, arrays and tensors to and from the pipeline's tensors.

The pipeline works on (B, 3, h, w) float32 tensors in [-1, 1]; an alpha plane is split off on the way
in and re-attached (resized) on the way out, so transparency survives the Python API as it does the CLI.
Files are not known here (see :mod:`stablesr.imageio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from ..errors import StableSRError
from .planes import pil_planes

ImageInput = Any  # PIL.Image | np.ndarray (H, W[, 1|3|4]) | torch.Tensor (B, 3, H, W) in [0, 1] | list of those
OutputType = Literal["pil", "np", "pt"]


@dataclass(frozen=True)
class PipelineImage:
    """One input as the pipeline sees it: ``pixels`` (B, 3, h, w) in [-1, 1], ``alpha`` (B, h, w) in [0, 1] or None."""

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None


def to_pipeline_images(image: ImageInput) -> list[PipelineImage]:
    """Inputs -> pipeline tensors; equally sized tensors stay one batch, lists give one entry per item.

    Example:
        >>> [im.pixels.shape for im in to_pipeline_images([np.zeros((4, 6, 3)), torch.zeros(2, 3, 8, 8)])]
        [torch.Size([1, 3, 4, 6]), torch.Size([2, 3, 8, 8])]
    """
    if isinstance(image, (list, tuple)):
        return [item for im in image for item in to_pipeline_images(im)]
    if isinstance(image, torch.Tensor):
        t = image if image.ndim == 4 else image[None]
        if t.ndim != 4 or t.shape[1] != 3:
            raise StableSRError(f"image tensor must have shape (B, 3, H, W), got {tuple(image.shape)}")
        scale = 1.0 if t.is_floating_point() else _pixel_max(str(t.dtype).removeprefix("torch."))
        return [PipelineImage(t.float() / scale * 2 - 1)]
    if isinstance(image, np.ndarray):
        return [_from_array(image)]
    if isinstance(image, Image.Image):
        try:
            values, alpha, _, _ = pil_planes(image)
        except ValueError:
            raise StableSRError(f"unsupported PIL image mode {image.mode!r}") from None
        return [_from_array(values if alpha is None else np.dstack([_rgb(values), alpha]))]
    raise StableSRError(f"unsupported image type {type(image).__name__}; give a PIL image, an array or a tensor")


def _pixel_max(dtype: str) -> float:
    """The white level of integer pixels; other integer types are refused rather than guessed (an int64 array of
    0-255 values divided by the int64 maximum would be a black image)."""
    if dtype == "uint8":
        return 255.0
    if dtype == "uint16":
        return 65535.0
    raise StableSRError(f"image pixels must be floats in [0, 1], uint8 (0-255) or uint16 (0-65535), got {dtype}; "
                        "convert them, e.g. with .astype(np.uint8)")


def _rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1) if values.ndim == 2 else values


def _from_array(image: np.ndarray) -> PipelineImage:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, float in [0, 1] or uint8/uint16 pixels."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
        raise StableSRError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32) / _pixel_max(str(image.dtype))
    a = image.astype(np.float32)
    a = _rgb(a)
    pixels = torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)[None] * 2 - 1
    alpha = torch.from_numpy(np.ascontiguousarray(a[..., 3]))[None].clamp(0, 1) if a.shape[-1] == 4 else None
    return PipelineImage(pixels, alpha)


def from_pipeline_images(images: list[torch.Tensor], alphas: list[torch.Tensor | None], output_type: OutputType,
                         *, truncate: bool = False) -> Any:
    """Results (B, 3, H, W) in [0, 1] plus their alpha (B, H, W) or None -> ``output_type``.

    ``"pt"``: one (B, C, H, W) tensor (C = 4 with alpha), ``"np"``: (B, H, W, C) float array, ``"pil"``: a
    list of RGB/RGBA images (``truncate``: 8 bits by truncation, the official scripts' way). Differently
    sized results come as a list instead of one batch.
    """
    merged = [im if a is None else torch.cat([im, a[:, None].to(im)], dim=1) for im, a in zip(images, alphas)]
    same_size = all(im.shape[1:] == merged[0].shape[1:] for im in merged)
    if output_type == "pt":
        return torch.cat(merged) if same_size else merged
    arrays = [im.permute(0, 2, 3, 1).float().cpu().numpy() for im in merged]
    if output_type == "np":
        return np.concatenate(arrays) if same_size else arrays
    if output_type != "pil":
        raise StableSRError(f"unknown output_type {output_type!r}; choose pil, np or pt")
    out = []
    for a in arrays:
        q = a * 255.0
        q = np.floor(q) if truncate else np.round(q)
        out += [Image.fromarray(x) for x in np.clip(q, 0, 255).astype(np.uint8)]
    return out
