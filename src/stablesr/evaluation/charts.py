"""Small charts drawn with Pillow (no plotting library needed): per-image bars and value distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "bar_chart", "distribution_chart"]

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_BG, _AXIS, _GRID, _TEXT = "#ffffff", "#444444", "#e6e6e6", "#222222"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _frame(width: int, height: int, title: str, lo: float, hi: float, left: int = 64, bottom: int = 46):
    img = Image.new("RGB", (width, height), _BG)
    d = ImageDraw.Draw(img)
    d.text((left, 8), title, fill=_TEXT, font=_font(15))
    top, right = 32, width - 12
    plot = (left, top, right, height - bottom)
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = plot[3] - (plot[3] - plot[1]) * i / 4
        d.line([(left, y), (right, y)], fill=_GRID)
        d.text((left - 6, y), f"{v:.4g}", fill=_TEXT, font=_font(11), anchor="rm")
    d.line([(left, top), (left, plot[3]), (right, plot[3])], fill=_AXIS)
    return img, d, plot


def _legend(d: ImageDraw.ImageDraw, names: Sequence[str], x: int, y: int) -> None:
    for i, n in enumerate(names):
        d.rectangle([x, y + 16 * i, x + 10, y + 16 * i + 10], fill=PALETTE[i % len(PALETTE)])
        d.text((x + 14, y + 16 * i - 1), n, fill=_TEXT, font=_font(11))


def bar_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]],
              width: int = 900, height: int = 300) -> Image.Image:
    """Grouped bars: one group per label (image), one bar per series (method). Missing values are left out."""
    vals = _finite([v for s in series.values() for v in s])
    lo, hi = _range(vals)
    if vals and 0 <= min(vals) < 0.5 * max(vals):  # bars from zero when zero is close anyway
        lo = 0.0
    img, d, (x0, y0, x1, y1) = _frame(width, height, title, lo, hi)
    n, k = max(1, len(labels)), max(1, len(series))
    group = (x1 - x0) / n
    bar = max(1.0, group * 0.8 / k)
    for s_idx, (_, values) in enumerate(series.items()):
        for i, v in enumerate(values):
            if v is None or not math.isfinite(v):
                continue
            bx = x0 + group * i + group * 0.1 + bar * s_idx
            by = y1 - (y1 - y0) * (v - lo) / (hi - lo)
            d.rectangle([bx, min(by, y1), bx + bar - 1, y1], fill=PALETTE[s_idx % len(PALETTE)])
    font = _font(10)
    shown = [lab[-8:] for lab in labels]
    widest = max((font.getlength(lab) for lab in shown), default=0.0) + 6
    step = max(1, math.ceil(widest / group))  # skip labels rather than let them overlap
    for i in range(0, n, step):
        d.text((x0 + group * (i + 0.5), y1 + 4), shown[i], fill=_TEXT, font=font, anchor="ma")
    _legend(d, list(series), x1 - 150, 10)
    return img


def distribution_chart(title: str, series: dict[str, Sequence[float | None]], width: int = 440,
                       height: int = 300) -> Image.Image:
    """One column per series: every value as a dot, with a box from the 25th to the 75th percentile and the median."""
    vals = _finite([v for s in series.values() for v in s])
    lo, hi = _range(vals)
    img, d, (x0, y0, x1, y1) = _frame(width, height, title, lo, hi)
    k = max(1, len(series))
    col = (x1 - x0) / k

    def ypos(v: float) -> float:
        return y1 - (y1 - y0) * (v - lo) / (hi - lo)

    for s_idx, (name, values) in enumerate(series.items()):
        xs = x0 + col * (s_idx + 0.5)
        colour = PALETTE[s_idx % len(PALETTE)]
        fin = sorted(_finite(values))
        if fin:
            q1, med, q3 = (fin[round(q * (len(fin) - 1))] for q in (0.25, 0.5, 0.75))
            d.rectangle([xs - col * 0.22, ypos(q3), xs + col * 0.22, ypos(q1)], outline=colour, width=2)
            d.line([(xs - col * 0.22, ypos(med)), (xs + col * 0.22, ypos(med))], fill=_AXIS, width=2)
        for j, v in enumerate(fin):
            jitter = ((j * 37) % 17 - 8) / 8 * col * 0.15  # deterministic spread so dots do not overlap
            d.ellipse([xs + jitter - 3, ypos(v) - 3, xs + jitter + 3, ypos(v) + 3], fill=colour)
        d.text((xs, y1 + 6), name[:18], fill=_TEXT, font=_font(11), anchor="ma")
    return img
