"""Evaluation in the field's protocol: BasicSR-exact PSNR/SSIM (RGB and Y), NIQE, learned metrics, reports.

Example:
    >>> import numpy as np
    >>> from stablesr.evaluation import psnr, ssim
    >>> a = np.full((16, 16, 3), 100.0)
    >>> psnr(a, a), ssim(a, a)
    (inf, 1.0)
"""

from .baselines import CLASSICAL_METHODS, classical_upscale
from .fidelity import crop, psnr, rgb_to_y, ssim
from .metrics import CATALOGUE, DEFAULT_METRICS, MetricUnavailable, build_metric
from .niqe_metric import niqe
from .runner import EvalResult, EvalSettings, evaluate

__all__ = [
    "CATALOGUE",
    "CLASSICAL_METHODS",
    "DEFAULT_METRICS",
    "EvalResult",
    "EvalSettings",
    "MetricUnavailable",
    "build_metric",
    "classical_upscale",
    "crop",
    "evaluate",
    "niqe",
    "psnr",
    "rgb_to_y",
    "ssim",
]
