"""Degradation settings as frozen dataclasses, the official presets, and YAML/dict loading.

Field names follow the official configs (``resize_prob``, ``noise_range``, ``jpeg_range``...), grouped
by stage: stage 1 is the first degradation, stage 2 the second one, whose ``jpeg_range`` is the
official ``jpeg_range2`` used by the final [resize + sinc] / JPEG step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import StableSRError

__all__ = ["PRESETS", "DegradationConfig", "DegradationConfigError", "FaceConfig", "KernelConfig", "StageConfig"]

KINDS = ("realesrgan", "face", "bicubic")
RESIZE_MODES = ("area", "bilinear", "bicubic")
_MIXED = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


class DegradationConfigError(StableSRError, ValueError):
    """A degradation config that cannot be used (unknown key, bad range, unknown preset)."""


@dataclass(frozen=True)
class KernelConfig:
    """How one blur kernel is drawn (sizes are odd, 7..21, as the official dataset hard-codes)."""

    kernel_list: tuple[str, ...] = _MIXED
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    betag_range: tuple[float, float] = (0.5, 2.0)
    betap_range: tuple[float, float] = (1.0, 1.5)
    sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)


@dataclass(frozen=True)
class StageConfig:
    """One of the two degradation stages (blur, random resize, noise, JPEG)."""

    blur_prob: float = 1.0
    kernel: KernelConfig = field(default_factory=KernelConfig)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.3, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 15.0)  # sigma in 0..255 units
    poisson_scale_range: tuple[float, float] = (0.05, 2.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (60.0, 95.0)


@dataclass(frozen=True)
class FaceConfig:
    """The FFHQ degradation of the face config (GFPGAN-style, one stage)."""

    kernel_size: int = 41
    kernel_list: tuple[str, ...] = ("iso", "aniso")
    kernel_prob: tuple[float, ...] = (0.5, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 15.0)
    downsample_range: tuple[float, float] = (0.8, 32.0)
    noise_range: tuple[float, float] = (0.0, 20.0)
    jpeg_range: tuple[float, float] = (30.0, 100.0)
    gray_prob: float = 0.01
    gt_gray: bool = True


_STAGE2 = StageConfig(
    blur_prob=0.5,
    kernel=KernelConfig(blur_sigma=(0.2, 1.0)),
    resize_prob=(0.3, 0.4, 0.3),
    resize_range=(0.6, 1.2),
    noise_range=(1.0, 12.0),
    poisson_scale_range=(0.05, 1.0),
    jpeg_range=(60.0, 100.0),
)


@dataclass(frozen=True)
class DegradationConfig:
    """Everything that decides how an HR crop becomes its LR image.

    Example:
        >>> cfg = DegradationConfig.from_preset("realesrgan-768v")
        >>> cfg.stage2.jpeg_range, cfg.use_usm
        ((60.0, 95.0), False)
    """

    kind: str = "realesrgan"
    scale: int = 4
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = _STAGE2
    final_sinc_prob: float = 0.8
    resize_modes: tuple[str, ...] = RESIZE_MODES
    no_degradation_prob: float = 0.01  # training only: LR <- GT
    use_usm: bool = True  # training sharpens the GT first; make-testset does not unless --usm
    face: FaceConfig = field(default_factory=FaceConfig)

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DegradationConfig:
        """One of :data:`PRESETS`, optionally with top-level fields replaced."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise DegradationConfigError(
                f"unknown degradation preset {name!r}; choose from {', '.join(PRESETS)}"
            ) from None
        return replace(base, **overrides) if overrides else base

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradationConfig:
        """Nested mapping as written by :meth:`to_dict`; an optional ``preset`` key gives the base.

        Example:
            >>> DegradationConfig.from_dict({"preset": "realesrgan", "stage1": {"noise_range": [1, 5]}}).stage1.noise_range
            (1.0, 5.0)
        """
        data = dict(data)
        base = cls.from_preset(str(data.pop("preset", "realesrgan")))
        return _merge(base, data, "degradation")

    @classmethod
    def from_yaml(cls, path: str | Path) -> DegradationConfig:
        """Load :meth:`from_dict` data from a YAML file."""
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DegradationConfigError(f"{p}: cannot read degradation config ({exc})") from exc
        if not isinstance(data, Mapping):
            raise DegradationConfigError(f"{p}: expected a mapping at the top level")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (lists for tuples), loadable with :meth:`from_dict`."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(obj: Any, data: Mapping[str, Any], where: str) -> Any:
    """``obj`` with the fields in ``data`` replaced, recursing into nested dataclasses."""
    known = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise DegradationConfigError(f"{where}: unknown key {key!r}; expected one of {', '.join(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise DegradationConfigError(f"{where}.{key}: expected a mapping")
            changes[key] = _merge(current, value, f"{where}.{key}")
        elif isinstance(current, tuple):
            if not isinstance(value, (list, tuple)):
                raise DegradationConfigError(f"{where}.{key}: expected a list")
            kind = type(current[0]) if current else float
            changes[key] = tuple(kind(v) for v in value)
        elif isinstance(current, bool):
            changes[key] = bool(value)
        else:
            changes[key] = type(current)(value)
    try:
        return replace(obj, **changes)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DegradationConfigError):
            raise
        raise DegradationConfigError(f"{where}: {exc}") from exc


def _check_range(name: str, r: tuple[float, ...], lo: float = -math.inf) -> None:
    if len(r) != 2 or not (lo <= r[0] <= r[1]):
        raise DegradationConfigError(f"{name}: expected [low, high] with {lo} <= low <= high, got {list(r)}")


def _check_probs(name: str, p: tuple[float, ...], n: int) -> None:
    if len(p) != n or any(v < 0 for v in p) or sum(p) <= 0:
        raise DegradationConfigError(f"{name}: expected {n} non-negative weights, got {list(p)}")


def _validate(cfg: DegradationConfig) -> None:
    if cfg.kind not in KINDS:
        raise DegradationConfigError(f"kind: expected one of {', '.join(KINDS)}, got {cfg.kind!r}")
    if cfg.scale < 1:
        raise DegradationConfigError(f"scale: expected a positive integer, got {cfg.scale}")
    for mode in cfg.resize_modes:
        if mode not in RESIZE_MODES:
            raise DegradationConfigError(f"resize_modes: unknown mode {mode!r}")
    for name, st in (("stage1", cfg.stage1), ("stage2", cfg.stage2)):
        k = st.kernel
        for kind in k.kernel_list:
            if kind not in _MIXED:
                raise DegradationConfigError(f"{name}.kernel.kernel_list: unknown kernel {kind!r}")
        _check_probs(f"{name}.kernel.kernel_prob", k.kernel_prob, len(k.kernel_list))
        if any(s < 1 or s % 2 == 0 for s in k.sizes) or not k.sizes:
            raise DegradationConfigError(f"{name}.kernel.sizes: expected odd sizes, got {list(k.sizes)}")
        _check_range(f"{name}.kernel.blur_sigma", k.blur_sigma, 1e-6)
        _check_range(f"{name}.kernel.betag_range", k.betag_range, 1e-6)
        _check_range(f"{name}.kernel.betap_range", k.betap_range, 1e-6)
        _check_probs(f"{name}.resize_prob", st.resize_prob, 3)
        _check_range(f"{name}.resize_range", st.resize_range, 1e-3)
        _check_range(f"{name}.noise_range", st.noise_range, 0.0)
        _check_range(f"{name}.poisson_scale_range", st.poisson_scale_range, 0.0)
        _check_range(f"{name}.jpeg_range", st.jpeg_range, 1.0)
        if st.jpeg_range[1] > 100:
            raise DegradationConfigError(f"{name}.jpeg_range: quality above 100")
    f = cfg.face
    _check_probs("face.kernel_prob", f.kernel_prob, len(f.kernel_list))
    _check_range("face.blur_sigma", f.blur_sigma, 1e-6)
    _check_range("face.downsample_range", f.downsample_range, 1e-3)
    _check_range("face.noise_range", f.noise_range, 0.0)
    _check_range("face.jpeg_range", f.jpeg_range, 1.0)


#: Named configurations: ``realesrgan`` (the 512 training config), ``realesrgan-768v`` (its JPEG-2
#: range 60..95, no USM, no clean pairs), ``face`` (the FFHQ degradation of the face config) and
#: ``bicubic`` (plain antialiased bicubic x4, for classic benchmarks).
PRESETS: dict[str, DegradationConfig] = {
    "realesrgan": DegradationConfig(),
    "realesrgan-768v": DegradationConfig(
        stage2=replace(_STAGE2, jpeg_range=(60.0, 95.0)), use_usm=False, no_degradation_prob=0.0
    ),
    "face": DegradationConfig(kind="face", use_usm=False, no_degradation_prob=0.005),
    "bicubic": DegradationConfig(kind="bicubic", use_usm=False, no_degradation_prob=0.0),
}
