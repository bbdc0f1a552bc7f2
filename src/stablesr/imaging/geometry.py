"""Input geometry: upscale the LR image to the working size, pad it for the VAE, and undo both at the end.

StableSR works at (at least) its training resolution: an input whose upscaled short side is
below the model size (512 or 768 px) is processed larger and resized back. The VAE needs sides
that are multiples of 8. The ``mode`` (the ``geometry`` quirk) picks one of four recipes:

* ``"exact"`` (default): pad by the minimum needed, crop the padding off exactly, and return
  exactly ``round(scale * size)`` pixels, for any (also non-integer) scale.
* ``"tile_script"``: the official tile script's arithmetic (``int`` truncation, reflect padding of
  both sides to multiples of 32 even when one is aligned, the crop applied after the final
  resize so a resized strip of padding stays in the output).
* ``"fixed_size"``: the official ``_old``, DDIM and face scripts: LANCZOS resize to a multiple of
  32, short side bilinearly resized to the model size (no antialias), centre crop to a model-size
  square. The output is that square whatever the scale.
* ``"oldcanvas"``: the official ``oldcanvas`` script: LANCZOS resize to a multiple of 8, bicubic
  ``int(scale * size)``, zero padding (mid-grey) bottom/right up to the model size, and the
  colour fix applied after cropping the padding off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import ScriptGeometry
from ..errors import GeometryError


@dataclass(frozen=True)
class Geometry:
    """Sizes of one run. ``work`` is the upscaled (pre-padding) size, ``padded`` what the VAE sees.

    ``source`` is the size after the script modes' LANCZOS pre-resize (the LR size otherwise) and
    ``crop`` the (top, left) of the fixed-size centre crop in the resized image.
    """

    lr: tuple[int, int]
    upscale: float
    work_scale: float
    work: tuple[int, int]
    padded: tuple[int, int]
    target: tuple[int, int]
    mode: ScriptGeometry = "exact"
    source: tuple[int, int] | None = None
    crop: tuple[int, int] = (0, 0)

    @classmethod
    def plan(cls, lr_hw: tuple[int, int], upscale: float, min_size: int, *, multiple: int = 8,
             mode: ScriptGeometry = "exact") -> Geometry:
        """Plan the sizes for an LR image of ``lr_hw`` pixels.

        Example:
            >>> Geometry.plan((100, 150), 2.5, 512).target
            (250, 375)
            >>> g = Geometry.plan((300, 200), 4, 128, mode="fixed_size")
            >>> g.source, g.crop, g.target
            ((288, 192), (32, 0), (128, 128))
        """
        h, w = lr_hw
        if h < 1 or w < 1:
            raise GeometryError(f"image has no pixels ({h}x{w})")
        if not upscale > 0:
            raise GeometryError(f"scale must be positive, got {upscale}")
        if mode == "fixed_size":
            return cls._fixed_size((h, w), upscale, min_size)
        if mode == "oldcanvas":
            return cls._oldcanvas((h, w), upscale, min_size, multiple)
        s = max(min_size / min(h, w), upscale)
        if mode == "tile_script":
            work = (int(h * s), int(w * s))
            if work[0] % 32 or work[1] % 32:
                padded = ((work[0] // 32 + 1) * 32, (work[1] // 32 + 1) * 32)
            else:
                padded = work
            target = (int(padded[0] * upscale / s), int(padded[1] * upscale / s)) if s > upscale else work
            target = (min(target[0], work[0]), min(target[1], work[1]))
        else:
            work = (max(1, round(h * s)), max(1, round(w * s)))
            padded = _round_up(work, multiple)
            target = (max(1, round(h * upscale)), max(1, round(w * upscale)))
        return cls((h, w), upscale, s, work, padded, target, mode)

    @classmethod
    def _fixed_size(cls, lr: tuple[int, int], upscale: float, size: int) -> Geometry:
        source = _multiple_below(lr, 32)
        short, long = sorted(source)
        resized_long = int(size * long / short)  # torchvision Resize(int): the long side truncated
        resized = (size, resized_long) if source[0] <= source[1] else (resized_long, size)
        crop = (round((resized[0] - size) / 2.0), round((resized[1] - size) / 2.0))  # torchvision CenterCrop
        square = (size, size)
        return cls(lr, upscale, size / short, resized, square, square, "fixed_size", source, crop)

    @classmethod
    def _oldcanvas(cls, lr: tuple[int, int], upscale: float, size: int, multiple: int) -> Geometry:
        source = _multiple_below(lr, 8)
        work = (int(source[0] * upscale), int(source[1] * upscale))
        if min(work) < 1:
            raise GeometryError(f"scale {upscale} leaves no pixels of a {lr[1]}x{lr[0]} image")
        padded = _round_up((max(work[0], size), max(work[1], size)), multiple)  # the VAE needs multiples of 8
        return cls(lr, upscale, upscale, work, padded, work, "oldcanvas", source)

    @property
    def color_fix_size(self) -> tuple[int, int]:
        """The region the colour fix compares: the content only in ``oldcanvas`` (its grey padding would
        skew the statistics), the whole padded canvas otherwise (as the other official scripts)."""
        return self.work if self.mode == "oldcanvas" else self.padded

    def upscale_and_pad(self, lr: torch.Tensor) -> torch.Tensor:
        """LR in [-1, 1] -> the image the VAE sees: resized to ``work``, clamped to [-1, 1], padded."""
        if self.source is not None:
            lr = lanczos_resize(lr, self.source)
        if self.mode == "fixed_size":
            if tuple(lr.shape[-2:]) != self.work:
                lr = F.interpolate(lr, size=self.work, mode="bilinear", align_corners=False)
            top, left = self.crop
            return lr[..., top: top + self.padded[0], left: left + self.padded[1]].clamp(-1, 1)
        shrink = self.work[0] < lr.shape[-2] and self.mode == "exact"  # antialias only when reducing (official: never)
        up = F.interpolate(lr, size=self.work, mode="bicubic", align_corners=False, antialias=shrink).clamp(-1, 1)
        if self.mode == "oldcanvas":
            return F.pad(up, (0, self.padded[1] - self.work[1], 0, self.padded[0] - self.work[0]), value=0.0)
        return pad_image(up, self.padded)

    def finish(self, out01: torch.Tensor) -> torch.Tensor:
        """Output in [0, 1] at ``color_fix_size`` -> final image at ``target`` size."""
        if self.mode == "tile_script":
            if self.work_scale > self.upscale:
                size = (int(self.padded[0] * self.upscale / self.work_scale),
                        int(self.padded[1] * self.upscale / self.work_scale))
                out01 = F.interpolate(out01, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
            return out01[..., : self.work[0], : self.work[1]]
        if self.mode == "fixed_size":
            return out01
        out01 = out01[..., : self.work[0], : self.work[1]]
        if self.work != self.target:
            out01 = F.interpolate(out01, size=self.target, mode="bicubic", align_corners=False, antialias=True)
        return out01.clamp(0, 1)


def lanczos_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL LANCZOS resize of (B, C, H, W) images in [-1, 1], as the official ``load_img`` does to its files.

    8-bit content goes through PIL's RGB path (the official result exactly); other values through
    PIL's float mode, channel by channel, so 16-bit and float inputs keep their precision.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    v = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    q = torch.round(v * 255)
    eight_bit = x.shape[1] == 3 and bool(torch.all((v * 255 - q).abs() < 1e-3))
    wh = (size[1], size[0])
    out = []
    for img in (q if eight_bit else v):
        if eight_bit:
            pil = Image.fromarray(img.permute(1, 2, 0).numpy().astype(np.uint8), "RGB").resize(wh, Image.LANCZOS)
            out.append(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1))
        else:
            planes = [np.asarray(Image.fromarray(c.numpy(), "F").resize(wh, Image.LANCZOS)) for c in img]
            out.append(torch.from_numpy(np.stack(planes)).clamp(0, 1))
    return (torch.stack(out) * 2 - 1).to(x.device, x.dtype)


def _multiple_below(hw: tuple[int, int], k: int) -> tuple[int, int]:
    h, w = hw[0] - hw[0] % k, hw[1] - hw[1] % k
    if h < 1 or w < 1:
        raise GeometryError(f"the official scripts need at least {k}x{k} px; this image is {hw[1]}x{hw[0]}")
    return h, w


def _round_up(hw: tuple[int, int], k: int) -> tuple[int, int]:
    return -(-hw[0] // k) * k, -(-hw[1] // k) * k


def pad_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pad bottom/right to ``size`` by reflection (replicate where the image is too small to reflect)."""
    ph, pw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if ph < 0 or pw < 0:
        raise GeometryError(f"cannot pad {tuple(x.shape[-2:])} down to {size}")
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
