"""Blur kernels of the Real-ESRGAN degradation, built from their closed forms in float64.

Every kernel is square with an odd size, centred, and normalised to sum to 1. Anisotropic kernels
use the covariance ``R(theta) diag(sigma_x**2, sigma_y**2) R(theta)^T``, so ``theta`` rotates the
long (``sigma_x``) axis counter-clockwise from the image's x axis (columns), with rows pointing
down. The shape parameter ``beta`` follows the official parametrisation: with the Mahalanobis
distance ``d2 = x^T S^-1 x``, the generalized Gaussian is ``exp(-d2**beta / 2)`` (``beta = 1`` is
the Gaussian, i.e. shape exponent ``2 * beta = 2`` in the usual ``|x|**p`` convention) and the
plateau kernel is ``1 / (1 + d2**beta)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "KERNEL_KINDS",
    "KernelSpec",
    "circular_lowpass_kernel",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "identity_kernel",
    "pad_kernel",
    "plateau_kernel",
]

#: Kinds a :class:`KernelSpec` can have.
KERNEL_KINDS = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "sinc",
    "identity",
)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column (x) and row (y) offsets from the centre, each ``size x size``, float64."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _mahalanobis2(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``x^T S^-1 x`` on the grid for the rotated covariance ``S``."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    # coordinates in the kernel's own frame (u along the sigma_x axis)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalised(k: torch.Tensor) -> torch.Tensor:
    return k / k.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """Isotropic (``sigma_y`` None) or rotated anisotropic Gaussian.

    Example:
        >>> k = gaussian_kernel(7, 1.0)
        >>> round(float(k.sum()), 6), tuple(k.shape)
        (1.0, (7, 7))
    """
    d2 = _mahalanobis2(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(torch.exp(-0.5 * d2))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> torch.Tensor:
    """``exp(-0.5 * d2**beta)``; ``beta = 1`` is :func:`gaussian_kernel`."""
    d2 = _mahalanobis2(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(torch.exp(-0.5 * d2.pow(beta)))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> torch.Tensor:
    """``1 / (1 + d2**beta)``: flat top, heavy tails."""
    d2 = _mahalanobis2(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(1.0 / (d2.pow(beta) + 1.0))


def circular_lowpass_kernel(size: int, omega_c: float) -> torch.Tensor:
    """Ideal circular low-pass filter with cutoff ``omega_c`` (radians per pixel, pi = Nyquist), truncated.

    The impulse response of an ideal disc of radius ``omega_c`` in frequency is
    ``omega_c * J1(omega_c r) / (2 pi r)``, with the limit ``omega_c**2 / (4 pi)`` at ``r = 0``.

    Example:
        >>> k = circular_lowpass_kernel(11, math.pi / 2)
        >>> round(float(k.sum()), 6)
        1.0
    """
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    k = omega_c * torch.special.bessel_j1(omega_c * safe_r) / (2 * math.pi * safe_r)
    k = torch.where(r == 0, torch.full_like(r, omega_c**2 / (4 * math.pi)), k)
    return _normalised(k)


def identity_kernel(size: int = 1) -> torch.Tensor:
    """A unit pulse (convolving with it changes nothing)."""
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2] = 1.0
    return k


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a centred odd kernel to ``size x size`` (the official code pads every kernel to 21)."""
    p = (size - kernel.shape[-1]) // 2
    if p < 0:
        raise ValueError(f"kernel of size {kernel.shape[-1]} does not fit in {size}")
    return torch.nn.functional.pad(kernel, (p, p, p, p))


@dataclass(frozen=True)
class KernelSpec:
    """The sampled description of one kernel; :meth:`build` turns it into weights.

    Example:
        >>> KernelSpec("aniso", 13, sigma_x=1.2, sigma_y=0.4, theta=0.3).build().shape
        torch.Size([13, 13])
    """

    kind: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    omega_c: float = 0.0

    def build(self) -> torch.Tensor:
        """The ``size x size`` float64 kernel (not padded: zero padding does not change a blur)."""
        k = self.kind
        if k == "identity":
            return identity_kernel(self.size)
        if k == "sinc":
            return circular_lowpass_kernel(self.size, self.omega_c)
        iso = k.endswith("_iso") or k == "iso"
        sy, th = (None, 0.0) if iso else (self.sigma_y, self.theta)
        if k in ("iso", "aniso"):
            return gaussian_kernel(self.size, self.sigma_x, sy, th)
        if k.startswith("generalized"):
            return generalized_gaussian_kernel(self.size, self.sigma_x, sy, th, self.beta)
        if k.startswith("plateau"):
            return plateau_kernel(self.size, self.sigma_x, sy, th, self.beta)
        raise ValueError(f"unknown kernel kind {k!r}; expected one of {', '.join(KERNEL_KINDS)}")

    def to_dict(self) -> dict[str, float | int | str]:
        """Only the fields that matter for this kind (for meta.jsonl)."""
        d: dict[str, float | int | str] = {"kind": self.kind, "size": self.size}
        if self.kind == "sinc":
            d["omega_c"] = self.omega_c
        elif self.kind != "identity":
            d["sigma_x"] = self.sigma_x
            if "aniso" in self.kind:
                d["sigma_y"], d["theta"] = self.sigma_y, self.theta
            if self.kind.startswith(("generalized", "plateau")):
                d["beta"] = self.beta
        return d
