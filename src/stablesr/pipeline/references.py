"""Reference images for face reference guidance: checked against the inputs, brought to the working canvas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import Quirks
from ..diffusion.sampling import NoiseSource
from ..errors import OptionsError
from ..imaging.convert import ImageInput, PipelineImage, to_pipeline_images
from ..imaging.geometry import Geometry, pad_image
from ..models.cfw import CFWAutoencoderKL, CFWEncoding
from ..tiling import vae as vae_tiling


def check_references(items: list[PipelineImage], reference_image: ImageInput | None, quirks: Quirks
                     ) -> list[torch.Tensor | None]:
    """One reference (B, 3, h, w) in [-1, 1] per input item, or ``None`` for each when there are none."""
    if reference_image is None:
        return [None] * len(items)
    refs: list[torch.Tensor | None] = [r.pixels for r in to_pipeline_images(reference_image)]
    if len(refs) != len(items) or any(r is None or r.shape[0] != i.pixels.shape[0] for r, i in zip(refs, items)):
        raise OptionsError(f"give one reference image per input image ({len(items)} inputs, {len(refs)} references)")
    if quirks.pixel_tiles:
        raise OptionsError("reference guidance needs one latent canvas; turn off the pixel_tiles quirk")
    return refs


def reference_canvas(geo: Geometry, reference: torch.Tensor) -> torch.Tensor:
    """A reference of any size -> the padded working canvas of the input (bicubic, as the LR is resized).

    In the ``fixed_size`` geometry (the official face script) the reference gets the same preprocessing as
    the LR, planned for its own size: LANCZOS to a multiple of 32, resize, centre crop to the model size.
    """
    if geo.mode == "fixed_size":
        h, w = reference.shape[-2:]
        own = Geometry.plan((h, w), geo.upscale, geo.padded[0], mode="fixed_size")
        return own.upscale_and_pad(reference)
    shrink = geo.work[0] < reference.shape[-2]
    up = F.interpolate(reference, size=geo.work, mode="bicubic", align_corners=False, antialias=shrink).clamp(-1, 1)
    return pad_image(up, geo.padded)


def encode_reference(vae: CFWAutoencoderKL, reference: torch.Tensor, scale_factor: float, noise: NoiseSource,
                     vae_tile: int | None, vae_overlap: int) -> torch.Tensor:
    """The reference latent: the scaled posterior SAMPLE of the CFW encoder (official face script), one draw."""
    moments = vae_tiling.encode_moments(vae, reference.to(vae.dtype), tile_px=vae_tile, overlap_px=vae_overlap)
    posterior = CFWEncoding(moments.float(), [])
    return scale_factor * posterior.sample(noise.draw(posterior.mean.shape, like=posterior.mean))
