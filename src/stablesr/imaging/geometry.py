"""Input geometry: upscale the LR image to the working size, pad it for the VAE, and undo both at the end.

StableSR works at (at least) its training resolution: an input whose upscaled short side is
below the model size (512 or 768 px) is processed larger and resized back. The VAE needs sides
that are multiples of 8. Two variants exist:

* :class:`Geometry` (default): pad by the minimum needed, crop the padding off exactly, and
  return exactly ``round(scale * size)`` pixels, for any (also non-integer) scale.
* ``tile_script_geometry=True`` (the quirk of that name): the official tile script's arithmetic (``int`` truncation, reflect padding of
  both sides to multiples of 32 even when one is aligned, the crop applied after the final
  resize so a resized strip of padding stays in the output) for parity runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GeometryError


@dataclass(frozen=True)
class Geometry:
    """Sizes of one run. ``work`` is the upscaled (pre-padding) size, ``padded`` what the VAE sees."""

    lr: tuple[int, int]
    upscale: float
    work_scale: float
    work: tuple[int, int]
    padded: tuple[int, int]
    target: tuple[int, int]
    tile_script_geometry: bool = False

    @classmethod
    def plan(cls, lr_hw: tuple[int, int], upscale: float, min_size: int, *, multiple: int = 8,
             tile_script_geometry: bool = False) -> Geometry:
        """Plan the sizes for an LR image of ``lr_hw`` pixels.

        Example:
            >>> Geometry.plan((100, 150), 2.5, 512).target
            (250, 375)
        """
        h, w = lr_hw
        if h < 1 or w < 1:
            raise GeometryError(f"image has no pixels ({h}x{w})")
        if not upscale > 0:
            raise GeometryError(f"scale must be positive, got {upscale}")
        s = max(min_size / min(h, w), upscale)
        if tile_script_geometry:
            work = (int(h * s), int(w * s))
            if work[0] % 32 or work[1] % 32:
                padded = ((work[0] // 32 + 1) * 32, (work[1] // 32 + 1) * 32)
            else:
                padded = work
            target = (int(padded[0] * upscale / s), int(padded[1] * upscale / s)) if s > upscale else work
            target = (min(target[0], work[0]), min(target[1], work[1]))
        else:
            work = (max(1, round(h * s)), max(1, round(w * s)))
            padded = (-(-work[0] // multiple) * multiple, -(-work[1] // multiple) * multiple)
            target = (max(1, round(h * upscale)), max(1, round(w * upscale)))
        return cls((h, w), upscale, s, work, padded, target, tile_script_geometry)

    def upscale_and_pad(self, lr: torch.Tensor) -> torch.Tensor:
        """LR in [-1, 1] -> the image the VAE sees: resized to ``work``, clamped to [-1, 1], padded."""
        shrink = self.work[0] < lr.shape[-2] and not self.tile_script_geometry  # antialias only when reducing (official: never)
        up = F.interpolate(lr, size=self.work, mode="bicubic", align_corners=False, antialias=shrink).clamp(-1, 1)
        return pad_image(up, self.padded)

    def finish(self, out01: torch.Tensor) -> torch.Tensor:
        """Padded-size output in [0, 1] -> final image at ``target`` size."""
        if self.tile_script_geometry:
            if self.work_scale > self.upscale:
                size = (int(self.padded[0] * self.upscale / self.work_scale),
                        int(self.padded[1] * self.upscale / self.work_scale))
                out01 = F.interpolate(out01, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
            return out01[..., : self.work[0], : self.work[1]]
        out01 = out01[..., : self.work[0], : self.work[1]]
        if self.work != self.target:
            out01 = F.interpolate(out01, size=self.target, mode="bicubic", align_corners=False, antialias=True)
        return out01.clamp(0, 1)


def pad_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pad bottom/right to ``size`` by reflection (replicate where the image is too small to reflect)."""
    ph, pw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if ph < 0 or pw < 0:
        raise GeometryError(f"cannot pad {tuple(x.shape[-2:])} down to {size}")
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
