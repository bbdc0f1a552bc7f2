"""Adapter between training and the Real-ESRGAN degradation of :mod:`stablesr.degradation`.

Training never synthesises degradations itself: this file is the only place that calls the
degradation module. Each sample gets its own generator, so a pair depends only on the run seed and
the sample's global index, never on how the batch is split across processes.
"""

from __future__ import annotations

import torch

from ..degradation import DegradationConfig, degrade, sample_params, target_image, training_input, usm_sharpen


class Degrader:
    """GT batch in [0, 1] -> (target, LR resized back to the GT size), OFFICIAL.md 6.2 steps 1-7.

    Args:
        preset: a :data:`stablesr.degradation.PRESETS` name (``realesrgan``, ``realesrgan-768v``, ``face``, ...).
        use_usm: sharpen the GT first (both the LR and the target come from the sharpened GT);
            ``None`` keeps the preset's choice.
        no_degradation_prob: probability that a sample's LR is its target; ``None`` keeps the preset's.

    Example:
        >>> d = Degrader("realesrgan", use_usm=False, no_degradation_prob=0.0)
        >>> gt, lr = d(torch.rand(2, 3, 64, 64), [torch.Generator().manual_seed(i) for i in range(2)])
        >>> lr.shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, preset: str = "realesrgan", *, use_usm: bool | None = None,
                 no_degradation_prob: float | None = None) -> None:
        overrides = {k: v for k, v in {"use_usm": use_usm, "no_degradation_prob": no_degradation_prob}.items()
                     if v is not None}
        self.cfg = DegradationConfig.from_preset(preset, **overrides)
        self.kind = preset

    def _one(self, gt: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.use_usm:
            gt = usm_sharpen(gt)
        params = sample_params(self.cfg, 1, generator)
        lr = degrade(gt, params)
        target = target_image(gt, params)
        lr = training_input(target, lr, params)  # bicubic back to the GT size; LR <- GT on no_degradation
        if torch.isnan(lr).any():  # official: a NaN LR is replaced by the GT
            lr = target.clone()
        return target, lr

    @torch.no_grad()
    def __call__(self, gt: torch.Tensor, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._one(gt[i:i + 1], g) for i, g in enumerate(generators)]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
