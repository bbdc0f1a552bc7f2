"""Evaluate a folder of predictions against ground truth, one image pair at a time.

Only one pair is in memory at any time, so folders of thousands of images work; folder metrics
(FID) accumulate features as they go. Problems with single files are collected, not raised:
the run goes on and the caller reports them at the end.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._files import EvalImage, StableSRError, list_images, load_image
from .matching import Pairing, match_by_stem
from .metrics import CATALOGUE, BoundMetric, MetricUnavailable, build_metric

__all__ = ["EvalResult", "EvalSettings", "evaluate", "resize_to"]

# What a metric may raise on one image (torch's errors, out-of-memory included, are RuntimeErrors).
_METRIC_ERRORS = (ValueError, RuntimeError, MemoryError, OSError)


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate. ``metrics`` are catalogue names (see :data:`.metrics.CATALOGUE`).

    Example:
        >>> EvalSettings(metrics=("psnr_y", "ssim_y"), crop_border=4).crop_border
        4
    """

    metrics: tuple[str, ...] = ("psnr", "psnr_y", "ssim", "ssim_y", "niqe")
    crop_border: int = 0
    resize_gt: bool = False
    device: str = "cpu"
    niqe_params: str | None = None
    progress: bool = True


@dataclass
class EvalResult:
    """Scores of one method. ``per_image`` values are ``None`` where a metric failed on that image."""

    name: str
    metrics: list[str]
    crop_border: int
    mean: dict[str, float]
    per_image: dict[str, dict[str, float | None]]
    unavailable: dict[str, str]
    failures: list[str] = field(default_factory=list)  # one line each: "file: problem"
    notes: list[str] = field(default_factory=list)  # tolerated suffixes, unmatched files, ...
    pairs: list[tuple[str, Path, Path | None]] = field(default_factory=list)  # (stem, pred, gt), for reports

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape: metrics, crop_border, mean, per_image, unavailable."""
        return {
            "metrics": list(self.metrics),
            "crop_border": self.crop_border,
            "mean": {k: _jsonable(v) for k, v in self.mean.items()},
            "per_image": {s: {k: _jsonable(v) for k, v in row.items()} for s, row in self.per_image.items()},
            "unavailable": dict(self.unavailable),
        }


def _jsonable(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def resize_to(img: EvalImage, size: tuple[int, int]) -> np.ndarray:
    """Bicubic-resize (Pillow, per channel, float) ``img`` to ``size`` = (width, height), values kept in [0, 255]."""
    from PIL import Image

    chans = [np.asarray(Image.fromarray(img.pixels[..., c].astype(np.float32), mode="F").resize(size, Image.BICUBIC))
             for c in range(img.pixels.shape[2])]
    return np.clip(np.stack(chans, axis=2).astype(np.float64), 0, 255)


def _describe(pairing: Pairing) -> list[str]:
    notes = [f"prediction suffix '{s}' tolerated on {n} file(s)" for s, n in sorted(pairing.suffixes.items())]
    notes += [f"{p}: no GT image with this stem (skipped)" for p in pairing.extra_pred]
    notes += [f"{p}: another prediction has the same stem (skipped)" for p in pairing.duplicates]
    notes += [f"{p}: another GT image has the same stem (skipped)" for p in pairing.duplicate_gt]
    return notes


def _bind(names: Sequence[str], settings: EvalSettings, have_gt: bool) -> tuple[dict[str, BoundMetric], dict[str, str]]:
    bound: dict[str, BoundMetric] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        if CATALOGUE[name].kind != "nr" and not have_gt:
            unavailable[name] = "needs ground truth (--gt DIR)"
            continue
        try:
            bound[name] = build_metric(name, settings.crop_border, settings.device, settings.niqe_params)
        except MetricUnavailable as exc:
            unavailable[name] = str(exc)
    return bound, unavailable


def evaluate(pred_dir: str | os.PathLike[str], gt_dir: str | os.PathLike[str] | None, settings: EvalSettings,
             name: str | None = None) -> EvalResult:
    """Score every prediction in ``pred_dir`` against the GT with the same stem in ``gt_dir``.

    Raises :class:`~stablesr.errors.StableSRError` only for problems with the folders themselves
    (missing, empty, nothing matched); per-file problems land in ``failures``.

    Example:
        >>> r = evaluate("out/stablesr", "testset/gt", EvalSettings(metrics=("psnr_y",)))  # doctest: +SKIP
        >>> r.to_json()["mean"]  # doctest: +SKIP
        {'psnr_y': 24.91}
    """
    preds = list_images(pred_dir)
    if not preds:
        raise StableSRError(f"{pred_dir}: no image files in this directory")
    if gt_dir is not None:
        gts = list_images(gt_dir)
        if not gts:
            raise StableSRError(f"{gt_dir}: no image files in this directory")
        pairing = match_by_stem(preds, gts)
        if not pairing.pairs:
            raise StableSRError(f"{pred_dir}: no file matches a GT stem in {gt_dir} (files are paired by name)")
        pairs: list[tuple[str, Path, Path | None]] = list(pairing.pairs)
        notes = _describe(pairing)
    else:
        pairs, notes = [(p.stem, p, None) for p in preds], []
    bound, unavailable = _bind(settings.metrics, settings, gt_dir is not None)
    result = EvalResult(name or Path(pred_dir).name, [m for m in settings.metrics if m in bound],
                        settings.crop_border, {}, {}, unavailable, notes=notes, pairs=pairs)
    if gt_dir is not None:
        # A missing prediction would silently shrink the test set behind the means: count it as a failure.
        result.failures += [f"{g}: no prediction for this GT image in {pred_dir}" for g in pairing.missing_pred]
    _run(result, bound, settings)
    return result


def _run(result: EvalResult, bound: dict[str, BoundMetric], settings: EvalSettings) -> None:
    from tqdm import tqdm

    per_image_metrics = [n for n, m in bound.items() if m.score is not None]
    for stem, pred_path, gt_path in tqdm(result.pairs, desc=f"eval {result.name}", unit="img",
                                         disable=not settings.progress, leave=False):
        try:
            pred, gt = _load_pair(pred_path, gt_path, settings.resize_gt)
        except StableSRError as exc:
            result.failures.append(str(exc))
            continue
        row: dict[str, float | None] = {}
        for n in per_image_metrics:
            try:
                row[n] = bound[n].score(pred, gt)  # type: ignore[misc]
            except _METRIC_ERRORS as exc:
                row[n] = None
                result.failures.append(f"{pred_path}: {n}: {exc}")
        for n, m in bound.items():
            if m.folder is not None:
                try:
                    m.folder.update(pred, gt)
                except _METRIC_ERRORS as exc:
                    result.failures.append(f"{pred_path}: {n}: {exc}")
        result.per_image[stem] = row
    for n in result.metrics:
        m = bound[n]
        if m.folder is not None:
            try:
                result.mean[n] = m.folder.compute()
            except _METRIC_ERRORS as exc:
                result.failures.append(f"{n}: {exc}")
            continue
        vals = [r[n] for r in result.per_image.values() if r.get(n) is not None]
        if vals:
            result.mean[n] = float(np.mean(vals))


def _load_pair(pred_path: Path, gt_path: Path | None, resize: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels of a pair; two grey images stay single-channel (their grey is their Y, as in BasicSR)."""
    pred = load_image(pred_path)
    if gt_path is None:
        return pred.pixels, None
    gt = load_image(gt_path)
    both_grey = pred.pixels.shape[2] == 1 and gt.pixels.shape[2] == 1
    p, g = (pred.pixels, gt.pixels) if both_grey else (pred.rgb(), gt.rgb())
    if g.shape[:2] != p.shape[:2]:
        if not resize:
            (pw, ph), (gw, gh) = pred.size, gt.size
            raise StableSRError(f"{pred_path}: size {pw}x{ph} differs from its GT {gt_path} ({gw}x{gh}); "
                                "pass --resize-gt to resize the GT")
        g = resize_to(EvalImage(g, gt.path), pred.size)
    return p, g
