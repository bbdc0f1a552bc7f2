"""Adapter between training and the Real-ESRGAN degradation of :mod:`stablesr.degradation`.

Training never synthesises degradations itself: this file is the only place that calls the
degradation module (``DegradationConfig.from_preset``, ``sample_params``, ``degrade``,
``usm_sharpen``). Each sample gets its own generator, so a pair depends only on the run seed and
the sample's global index, never on the batch split across processes.

Until ``stablesr.degradation`` is available, :class:`Degrader` falls back to a PLAIN BICUBIC x4
DOWNSCALE (no blur, noise, JPEG or USM). That fallback exists so the trainer can be tested; it is
announced with a warning and ``Degrader.kind == "bicubic-fallback"``, and is not a training recipe.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

BICUBIC_FALLBACK = "bicubic-fallback"


def _degradation_module():
    try:
        from .. import degradation  # type: ignore[attr-defined]
    except ImportError:
        return None
    return degradation if hasattr(degradation, "degrade") else None


class Degrader:
    """GT batch in [0, 1] -> (target GT, LR upsampled back to the GT size), per OFFICIAL.md 6.2 steps 1-7.

    Args:
        preset: degradation preset name (``"realesrgan"``; the 768-v recipe uses its own JPEG range).
        use_usm: sharpen the GT first; both the LR and the target come from the sharpened GT.
        no_degradation_prob: probability that a sample's LR is its GT (official 0.01).
        scale: the LR is ``1/scale`` of the GT before it is resized back.
        allow_fallback: use the bicubic stand-in when the degradation module is missing.

    Example:
        >>> d = Degrader("realesrgan", use_usm=False, no_degradation_prob=0.0)
        >>> gt, lr = d(torch.rand(2, 3, 64, 64), [torch.Generator().manual_seed(i) for i in range(2)])
        >>> lr.shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, preset: str = "realesrgan", *, use_usm: bool = True, no_degradation_prob: float = 0.01,
                 scale: int = 4, allow_fallback: bool = True) -> None:
        self.module = _degradation_module()
        self.use_usm, self.no_degradation_prob, self.scale = use_usm, no_degradation_prob, scale
        if self.module is not None:
            self.cfg = self.module.DegradationConfig.from_preset(preset)
            self.kind = preset
        elif allow_fallback:
            self.cfg, self.kind = None, BICUBIC_FALLBACK
            warnings.warn("stablesr.degradation is not available: training pairs use a PLAIN BICUBIC x4 downscale "
                          "(test stand-in, not the Real-ESRGAN recipe)", stacklevel=2)
        else:
            raise RuntimeError("stablesr.degradation is not available")

    def _one(self, gt: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = gt.shape[-2:]
        if self.module is None:
            lr = F.interpolate(gt, size=(h // self.scale, w // self.scale), mode="bicubic", antialias=True,
                               align_corners=False)
        else:
            if self.use_usm:
                gt = self.module.usm_sharpen(gt)
            params = self.module.sample_params(self.cfg, 1, generator)
            lr = self.module.degrade(gt, params)
        lr = F.interpolate(lr.clamp(0, 1), size=(h, w), mode="bicubic", align_corners=False)  # back to GT size
        keep_gt = torch.rand((), generator=generator).item() < self.no_degradation_prob
        if keep_gt or torch.isnan(lr).any():
            lr = gt.clone()
        return gt, lr

    @torch.no_grad()
    def __call__(self, gt: torch.Tensor, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._one(gt[i:i + 1], g) for i, g in enumerate(generators)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
