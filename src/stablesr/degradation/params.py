"""Sampling the random parameters of a degradation, separately from applying them.

:func:`sample_params` draws, image by image from one ``torch.Generator``, every random choice of the
pipeline: kernels, resize directions/scales/modes, noise kinds/amounts/grey flags, JPEG qualities,
the order of the final two steps, and a seed for the pixel noise. Applying the same parameters
again gives the same bytes on the same device, and a batch of ``n`` draws equals ``n`` draws of one.

The official code draws the resize, noise kind, second-blur and final-order choices once per batch
and everything else per image; here every image draws all of them, so images in a batch are
independent while each image's distribution is the official one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import DegradationConfig, KernelConfig, StageConfig
from .kernels import KernelSpec

__all__ = [
    "BicubicParams",
    "DegradationParams",
    "FaceParams",
    "NoiseSpec",
    "RealESRGANParams",
    "ResizeSpec",
    "sample_params",
]


class _Draw:
    """Scalar draws from one generator, in a fixed order."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, lo: float, hi: float) -> float:
        u = torch.rand((), generator=self.g, dtype=torch.float64, device=self.g.device).item()
        return lo + (hi - lo) * u

    def chance(self, p: float) -> bool:
        return self.uniform(0.0, 1.0) < p

    def choice(self, items: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
        if weights is None:
            return items[int(torch.randint(len(items), (), generator=self.g, device=self.g.device).item())]
        u = self.uniform(0.0, sum(weights))
        acc = 0.0
        for item, wt in zip(items, weights):
            acc += wt
            if u < acc:
                return item
        return items[-1]

    def seed(self) -> int:
        return int(torch.randint(0, 2**62, (), generator=self.g, device=self.g.device).item())


@dataclass(frozen=True)
class ResizeSpec:
    """A random resize: ``direction`` up/down/keep, the ``scale`` drawn for it, and the mode."""

    direction: str
    scale: float
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "scale": self.scale, "mode": self.mode}


@dataclass(frozen=True)
class NoiseSpec:
    """``kind`` gaussian (``amount`` = sigma in 0..255 units) or poisson (``amount`` = scale)."""

    kind: str
    amount: float
    gray: bool

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "amount": self.amount, "gray": self.gray}


@dataclass(frozen=True)
class RealESRGANParams:
    """Everything random about one image's second-order degradation."""

    kernel1: KernelSpec
    resize1: ResizeSpec
    noise1: NoiseSpec
    jpeg1: float
    blur2: bool
    kernel2: KernelSpec
    resize2: ResizeSpec
    noise2: NoiseSpec
    sinc_first: bool  # True: [resize + sinc] then JPEG; False: JPEG then [resize + sinc]
    final_mode: str
    final_kernel: KernelSpec
    jpeg2: float
    no_degradation: bool  # training only: replace the LR by the GT
    seed: int  # drives the pixel noise

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.to_dict() if hasattr(value, "to_dict") else value
        return out


@dataclass(frozen=True)
class FaceParams:
    """One image's FFHQ (face config) degradation."""

    kernel: KernelSpec
    downscale: float
    noise_sigma: float
    jpeg_quality: int
    gray: bool
    no_degradation: bool
    seed: int

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["kernel"] = self.kernel.to_dict()
        return out


@dataclass(frozen=True)
class BicubicParams:
    """Plain bicubic downscaling has nothing random."""

    def to_dict(self) -> dict[str, Any]:
        return {}


ImageParams = RealESRGANParams | FaceParams | BicubicParams


@dataclass(frozen=True)
class DegradationParams:
    """A batch of per-image parameters plus the config they were drawn from."""

    config: DegradationConfig
    images: tuple[ImageParams, ...]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int | slice) -> DegradationParams:
        picked = self.images[index]
        return DegradationParams(self.config, picked if isinstance(picked, tuple) else (picked,))

    @staticmethod
    def concat(parts: Sequence[DegradationParams]) -> DegradationParams:
        """Join batches drawn from the same config."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return DegradationParams(parts[0].config, tuple(p for part in parts for p in part.images))

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image."""
        return [p.to_dict() for p in self.images]


def _mixed_kernel(d: _Draw, kc: KernelConfig, size: int, sigma: tuple[float, float]) -> KernelSpec:
    kind = d.choice(kc.kernel_list, kc.kernel_prob)
    sx = d.uniform(*sigma)
    if "aniso" in kind or kind == "aniso":
        sy = d.uniform(*sigma)
        theta = d.uniform(-math.pi, math.pi)
    else:
        sy, theta = sx, 0.0
    beta = 1.0
    if kind.startswith(("generalized", "plateau")):
        lo, hi = kc.betag_range if kind.startswith("generalized") else kc.betap_range
        # half of the draws below 1 and half above, as the official sampler does
        beta = d.uniform(lo, 1.0) if d.chance(0.5) else d.uniform(1.0, hi)
    return KernelSpec(kind, size, sigma_x=sx, sigma_y=sy, theta=theta, beta=beta)


def _stage_kernel(d: _Draw, kc: KernelConfig) -> KernelSpec:
    size = d.choice(kc.sizes)
    if d.chance(kc.sinc_prob):
        omega = d.uniform(math.pi / 3, math.pi) if size < 13 else d.uniform(math.pi / 5, math.pi)
        return KernelSpec("sinc", size, omega_c=omega)
    return _mixed_kernel(d, kc, size, kc.blur_sigma)


def _resize(d: _Draw, st: StageConfig, modes: Sequence[str]) -> ResizeSpec:
    direction = d.choice(("up", "down", "keep"), st.resize_prob)
    if direction == "up":
        scale = d.uniform(1.0, st.resize_range[1])
    elif direction == "down":
        scale = d.uniform(st.resize_range[0], 1.0)
    else:
        scale = 1.0
    return ResizeSpec(direction, scale, d.choice(modes))


def _noise(d: _Draw, st: StageConfig) -> NoiseSpec:
    if d.chance(st.gaussian_noise_prob):
        amount, kind = d.uniform(*st.noise_range), "gaussian"
    else:
        amount, kind = d.uniform(*st.poisson_scale_range), "poisson"
    return NoiseSpec(kind, amount, d.chance(st.gray_noise_prob))


def _sample_realesrgan(d: _Draw, cfg: DegradationConfig) -> RealESRGANParams:
    # the kernels come first, as in the official dataset; the GPU-side draws follow in pipeline order
    kernel1 = _stage_kernel(d, cfg.stage1.kernel)
    kernel2 = _stage_kernel(d, cfg.stage2.kernel)
    if d.chance(cfg.final_sinc_prob):
        final_kernel = KernelSpec("sinc", d.choice(cfg.stage1.kernel.sizes), omega_c=d.uniform(math.pi / 3, math.pi))
    else:
        final_kernel = KernelSpec("identity", 1)
    resize1 = _resize(d, cfg.stage1, cfg.resize_modes)
    noise1 = _noise(d, cfg.stage1)
    jpeg1 = d.uniform(*cfg.stage1.jpeg_range)
    blur2 = d.chance(cfg.stage2.blur_prob)
    resize2 = _resize(d, cfg.stage2, cfg.resize_modes)
    noise2 = _noise(d, cfg.stage2)
    sinc_first = d.chance(0.5)
    final_mode = d.choice(cfg.resize_modes)
    jpeg2 = d.uniform(*cfg.stage2.jpeg_range)
    return RealESRGANParams(
        kernel1=kernel1,
        resize1=resize1,
        noise1=noise1,
        jpeg1=jpeg1,
        blur2=blur2,
        kernel2=kernel2,
        resize2=resize2,
        noise2=noise2,
        sinc_first=sinc_first,
        final_mode=final_mode,
        final_kernel=final_kernel,
        jpeg2=jpeg2,
        no_degradation=d.chance(cfg.no_degradation_prob),
        seed=d.seed(),
    )


def _sample_face(d: _Draw, cfg: DegradationConfig) -> FaceParams:
    f = cfg.face
    kc = KernelConfig(kernel_list=f.kernel_list, kernel_prob=f.kernel_prob)
    kernel = _mixed_kernel(d, kc, f.kernel_size, f.blur_sigma)
    downscale = d.uniform(*f.downsample_range)
    sigma = d.uniform(*f.noise_range)
    quality = int(d.uniform(*f.jpeg_range))  # cv2 gets int(quality): truncated
    gray = d.chance(f.gray_prob)
    return FaceParams(kernel, downscale, sigma, quality, gray, d.chance(cfg.no_degradation_prob), d.seed())


def sample_params(cfg: DegradationConfig, batch: int, generator: torch.Generator) -> DegradationParams:
    """Draw the parameters of ``batch`` images, one image after the other.

    Example:
        >>> cfg = DegradationConfig.from_preset("realesrgan")
        >>> p = sample_params(cfg, 2, torch.Generator().manual_seed(0))
        >>> len(p), p.images[0].kernel1.size in range(7, 22, 2)
        (2, True)
    """
    d = _Draw(generator)
    images: list[ImageParams] = []
    for _ in range(batch):
        if cfg.kind == "realesrgan":
            images.append(_sample_realesrgan(d, cfg))
        elif cfg.kind == "face":
            images.append(_sample_face(d, cfg))
        else:
            images.append(BicubicParams())
    return DegradationParams(cfg, tuple(images))
