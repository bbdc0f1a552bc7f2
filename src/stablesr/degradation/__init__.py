"""Real-ESRGAN second-order degradation as StableSR trains with it, in batched torch (no basicsr).

Sample the random parameters, then apply them::

    >>> import torch
    >>> from stablesr.degradation import DegradationConfig, sample_params, degrade
    >>> cfg = DegradationConfig.from_preset("realesrgan")
    >>> gen = torch.Generator().manual_seed(0)
    >>> gt = torch.rand(2, 3, 128, 128)
    >>> params = sample_params(cfg, 2, gen)
    >>> degrade(gt, params).shape
    torch.Size([2, 3, 32, 32])

Only torch and numpy are needed here; file reading/writing lives in :mod:`.testset`.
"""

from __future__ import annotations

from .config import PRESETS, DegradationConfig, DegradationConfigError, FaceConfig, KernelConfig, StageConfig
from .jpeg import jpeg_compress
from .kernels import (
    KernelSpec,
    circular_lowpass_kernel,
    gaussian_kernel,
    generalized_gaussian_kernel,
    pad_kernel,
    plateau_kernel,
)
from .ops import (
    CropParams,
    add_gaussian_noise,
    add_poisson_noise,
    crop_image,
    filter2d,
    random_crop,
    reflect101_pad,
    resize,
    sample_crop,
    usm_sharpen,
)
from .params import (
    BicubicParams,
    DegradationParams,
    FaceParams,
    NoiseSpec,
    RealESRGANParams,
    ResizeSpec,
    sample_params,
)
from .pipeline import degrade, target_image, training_input

__all__ = [
    "PRESETS",
    "BicubicParams",
    "CropParams",
    "DegradationConfig",
    "DegradationConfigError",
    "DegradationParams",
    "FaceConfig",
    "FaceParams",
    "KernelConfig",
    "KernelSpec",
    "NoiseSpec",
    "RealESRGANParams",
    "ResizeSpec",
    "StageConfig",
    "add_gaussian_noise",
    "add_poisson_noise",
    "circular_lowpass_kernel",
    "crop_image",
    "degrade",
    "filter2d",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "jpeg_compress",
    "pad_kernel",
    "plateau_kernel",
    "random_crop",
    "reflect101_pad",
    "resize",
    "sample_crop",
    "sample_params",
    "target_image",
    "training_input",
    "usm_sharpen",
]

