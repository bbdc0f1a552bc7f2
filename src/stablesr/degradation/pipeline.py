"""Applying sampled parameters: ``degrade(gt, params) -> lr``, batched, on the images' device.

Image sizes inside the second-order pipeline depend on each image's own random resizes, so the
images of a batch go through it one by one (every operation is itself batched); the results are
identical to degrading each image alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DegradationConfig
from .jpeg import jpeg_compress
from .ops import add_gaussian_noise, add_poisson_noise, filter2d, resize
from .params import BicubicParams, DegradationParams, FaceParams, NoiseSpec, RealESRGANParams

__all__ = ["degrade", "target_image", "training_input"]

_LUMA_CV2 = (0.299, 0.587, 0.114)


def degrade(gt: torch.Tensor, params: DegradationParams) -> torch.Tensor:
    """Turn HR images ``(B, 3, H, W)`` in ``[0, 1]`` into LR images ``(B, 3, H // s, W // s)`` in ``[0, 1]``.

    ``s`` is ``params.config.scale``. The output is clamped; it is rounded to 8 bits only where the
    official pipeline rounds (the face pipeline); write it with 8-bit rounding for a test set.

    Example:
        >>> from stablesr.degradation import DegradationConfig, sample_params
        >>> cfg = DegradationConfig.from_preset("realesrgan")
        >>> gt = torch.rand(2, 3, 64, 64)
        >>> degrade(gt, sample_params(cfg, 2, torch.Generator().manual_seed(1))).shape
        torch.Size([2, 3, 16, 16])
    """
    if gt.ndim != 4 or gt.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(gt.shape)}")
    if gt.shape[0] != len(params):
        raise ValueError(f"{gt.shape[0]} images but parameters for {len(params)}")
    cfg = params.config
    if gt.shape[-2] < cfg.scale or gt.shape[-1] < cfg.scale:
        raise ValueError(f"images of size {tuple(gt.shape[-2:])} are too small for scale {cfg.scale}")
    if not gt.is_floating_point():
        raise ValueError(f"expected a float tensor in [0, 1], got {gt.dtype}")
    outs = [_degrade_one(gt[i : i + 1], p, cfg) for i, p in enumerate(params.images)]
    return torch.cat(outs)


def target_image(gt: torch.Tensor, params: DegradationParams) -> torch.Tensor:
    """The training/test target for ``gt``: the face config also turns the GT grey when its LR is grey."""
    cfg = params.config
    if cfg.kind != "face" or not cfg.face.gt_gray:
        return gt
    flags = [isinstance(p, FaceParams) and p.gray for p in params.images]
    if not any(flags):
        return gt
    mask = torch.tensor(flags, device=gt.device).reshape(-1, 1, 1, 1)
    return torch.where(mask, _to_gray(gt), gt)


def training_input(gt: torch.Tensor, lr: torch.Tensor, params: DegradationParams) -> torch.Tensor:
    """The LR as the official training step feeds it: bicubic back to the GT size, clamped, and
    replaced by the GT where ``no_degradation`` was drawn."""
    up = F.interpolate(lr, size=tuple(gt.shape[-2:]), mode="bicubic", align_corners=False).clamp(0, 1)
    flags = [bool(getattr(p, "no_degradation", False)) for p in params.images]
    if any(flags):
        mask = torch.tensor(flags, device=gt.device).reshape(-1, 1, 1, 1)
        up = torch.where(mask, gt, up)
    return up


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA_CV2, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def _generator(x: torch.Tensor, seed: int) -> torch.Generator:
    return torch.Generator(device=x.device).manual_seed(seed)


def _degrade_one(x: torch.Tensor, p: object, cfg: DegradationConfig) -> torch.Tensor:
    if isinstance(p, RealESRGANParams):
        return _realesrgan(x, p, cfg)
    if isinstance(p, FaceParams):
        return _face(x, p, cfg)
    if isinstance(p, BicubicParams):
        h, w = x.shape[-2:]
        out = F.interpolate(x, size=(h // cfg.scale, w // cfg.scale), mode="bicubic", align_corners=False,
                            antialias=True)
        return out.clamp(0, 1)
    raise TypeError(f"unknown parameter type {type(p).__name__}")


def _add_noise(x: torch.Tensor, spec: NoiseSpec, gen: torch.Generator) -> torch.Tensor:
    if spec.kind == "gaussian":
        return add_gaussian_noise(x, spec.amount, spec.gray, gen)
    return add_poisson_noise(x, spec.amount, spec.gray, gen)


def _realesrgan(x: torch.Tensor, p: RealESRGANParams, cfg: DegradationConfig) -> torch.Tensor:
    gen = _generator(x, p.seed)
    h, w = x.shape[-2:]
    sf = cfg.scale
    # stage 1: blur, resize by a factor, noise, JPEG
    out = filter2d(x, p.kernel1.build())
    out = resize(out, p.resize1.mode, scale=p.resize1.scale)
    out = _add_noise(out, p.noise1, gen)
    out = jpeg_compress(out.clamp(0, 1), p.jpeg1)
    # stage 2: optional blur, resize to a size around the target, noise
    if p.blur2:
        out = filter2d(out, p.kernel2.build())
    size2 = (max(1, int(h / sf * p.resize2.scale)), max(1, int(w / sf * p.resize2.scale)))
    out = resize(out, p.resize2.mode, size=size2)
    out = _add_noise(out, p.noise2, gen)
    # final: [resize to the target + sinc] and JPEG, in a random order
    final = (h // sf, w // sf)
    if p.sinc_first:
        out = filter2d(resize(out, p.final_mode, size=final), p.final_kernel.build())
        out = jpeg_compress(out.clamp(0, 1), p.jpeg2)
    else:
        out = jpeg_compress(out.clamp(0, 1), p.jpeg2)
        out = filter2d(resize(out, p.final_mode, size=final), p.final_kernel.build())
    return out.clamp(0, 1)


def _face(x: torch.Tensor, p: FaceParams, cfg: DegradationConfig) -> torch.Tensor:
    gen = _generator(x, p.seed)
    h, w = x.shape[-2:]
    out = filter2d(x, p.kernel.build())
    small = (max(1, int(h // p.downscale)), max(1, int(w // p.downscale)))
    out = resize(out, "bilinear", size=small)
    out = add_gaussian_noise(out, p.noise_sigma, False, gen)
    out = jpeg_compress(out, p.jpeg_quality, style="libjpeg")
    # the official face data goes back to the GT size; a test set goes to GT size / scale
    out = resize(out, "bilinear", size=(h // cfg.scale, w // cfg.scale))
    if p.gray:
        out = _to_gray(out)
    return torch.clamp((out * 255).round(), 0, 255) / 255
