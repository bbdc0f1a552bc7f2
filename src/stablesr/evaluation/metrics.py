"""The metric catalogue: names, what each needs, and one constructor for all of them.

Every metric is built into a :class:`BoundMetric` that scores one image (pair) at a time, so a
folder of thousands of images streams through without being held in memory. Folder metrics
(FID) accumulate in ``update`` and give one value in ``compute``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import fidelity, learned
from .learned import MetricUnavailable
from .niqe_metric import load_pristine, niqe

__all__ = ["CATALOGUE", "DEFAULT_METRICS", "BoundMetric", "MetricInfo", "MetricUnavailable", "build_metric",
           "parse_metric_list"]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: ``kind`` is 'fr' (needs GT), 'nr' (prediction only) or 'folder' (one value per folder)."""

    name: str
    kind: str
    higher_is_better: bool
    summary: str


CATALOGUE: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("psnr", "fr", True, "PSNR (dB) on RGB"),
    MetricInfo("psnr_y", "fr", True, "PSNR (dB) on BT.601 Y"),
    MetricInfo("ssim", "fr", True, "SSIM on RGB (channel mean)"),
    MetricInfo("ssim_y", "fr", True, "SSIM on BT.601 Y"),
    MetricInfo("lpips", "fr", False, "LPIPS (AlexNet)"),
    MetricInfo("dists", "fr", False, "DISTS"),
    MetricInfo("fid", "folder", False, "FID over the folder"),
    MetricInfo("niqe", "nr", False, "NIQE on Y (BasicSR)"),
    MetricInfo("musiq", "nr", True, "MUSIQ (pyiqa)"),
    MetricInfo("maniqa", "nr", True, "MANIQA (pyiqa)"),
    MetricInfo("clipiqa", "nr", True, "CLIP-IQA (pyiqa)"),
)}

DEFAULT_METRICS = ("psnr", "psnr_y", "ssim", "ssim_y", "lpips", "dists", "fid", "niqe")  # pyiqa ones are opt-in


def parse_metric_list(text: str) -> list[str]:
    """``"psnr,ssim_y"`` -> ``["psnr", "ssim_y"]``; ``"all"`` gives every metric; unknown names raise ``ValueError``."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(CATALOGUE)} or 'all'")
    if not names:
        raise ValueError("no metrics given")
    return list(dict.fromkeys(names))


@dataclass
class BoundMetric:
    """A ready-to-run metric. ``score(pred, gt)`` gets float64 ``HxWxC`` arrays in ``[0, 255]`` (``gt`` may be None for 'nr')."""

    info: MetricInfo
    score: Callable[[np.ndarray, np.ndarray | None], float] | None = None
    folder: Any = None  # an object with update(pred, gt) and compute() for 'folder' metrics


def build_metric(name: str, crop_border: int = 0, device: str = "cpu", niqe_params: str | None = None) -> BoundMetric:
    """Construct one metric, or raise :class:`MetricUnavailable` with the reason and the fetch command.

    Example:
        >>> m = build_metric("psnr")
        >>> a = np.zeros((16, 16, 3))
        >>> round(m.score(a, a + 2.0), 2)
        42.11
    """
    info = CATALOGUE[name]
    cb = crop_border

    def cropped(f: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray | None], float]:
        return lambda p, g: f(fidelity.crop(p, cb), fidelity.crop(g, cb))  # type: ignore[arg-type]

    if name in ("psnr", "psnr_y"):
        return BoundMetric(info, lambda p, g: fidelity.psnr(p, g, cb, y_channel=name.endswith("_y")))
    if name in ("ssim", "ssim_y"):
        return BoundMetric(info, lambda p, g: fidelity.ssim(p, g, cb, y_channel=name.endswith("_y")))
    if name == "niqe":
        try:
            import scipy.ndimage  # noqa: F401 - a core dependency; checked so a broken install reads clearly
        except ImportError:
            raise MetricUnavailable("needs scipy; install: pip install scipy") from None
        try:
            model = load_pristine(niqe_params)
        except (OSError, ValueError, KeyError) as exc:
            raise MetricUnavailable(str(exc)) from None
        return BoundMetric(info, lambda p, g: niqe(p, cb, model))
    if name == "lpips":
        return BoundMetric(info, cropped(learned.build_lpips(device)))
    if name == "dists":
        return BoundMetric(info, cropped(learned.build_dists(device)))
    if name == "fid":
        return BoundMetric(info, folder=learned.build_fid(device))
    scorer = learned.build_pyiqa(name, device)
    return BoundMetric(info, lambda p, g: scorer(fidelity.crop(p, cb)))
