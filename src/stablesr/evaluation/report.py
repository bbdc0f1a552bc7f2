"""Reports people would rather look at than read: one self-contained HTML file, or Markdown plus PNGs.

Contents: the settings, a table of means (best value per metric in bold), metric distributions,
per-image bars, a grid of crops (LR / each method / GT) and every note, failure and unavailable
metric with its reason. Crops are re-read from disk for a few images only, so memory stays small.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ._files import StableSRError, list_images, load_image
from .charts import _font, bar_chart, distribution_chart
from .metrics import CATALOGUE
from .runner import EvalResult

__all__ = ["crop_grid", "write_report"]

_MAX_BAR_IMAGES = 60  # per-image bars beyond this are unreadable; the table and JSON still hold them all
_CROP_ROWS = 4
_CELL = 192


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.3f}"


def _best(results: Sequence[EvalResult], metric: str) -> float | None:
    vals = [r.mean[metric] for r in results if metric in r.mean and not math.isnan(r.mean[metric])]
    if len(vals) < 2:
        return None
    return max(vals) if CATALOGUE[metric].higher_is_better else min(vals)


def _metric_names(results: Sequence[EvalResult]) -> list[str]:
    return list(dict.fromkeys(m for r in results for m in r.metrics))


def _stems(results: Sequence[EvalResult]) -> list[str]:
    common = set(results[0].per_image)
    for r in results[1:]:
        common &= set(r.per_image)
    return [s for s in results[0].per_image if s in common]


def _interesting_box(gt: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The ``size`` square of the GT with the most detail (largest luma variance), on a coarse grid."""
    h, w = gt.shape[:2]
    size = min(size, h, w)
    luma = gt.mean(axis=2)
    best, box = -1.0, (0, 0, size, size)
    step = max(8, size // 4)
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            v = float(luma[y:y + size, x:x + size].var())
            if v > best:
                best, box = v, (x, y, x + size, y + size)
    return box


def _cell(pixels: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    x0, y0, x1, y1 = box
    part = np.clip(np.round(pixels[y0:y1, x0:x1]), 0, 255).astype(np.uint8)
    if part.shape[2] == 1:
        part = np.repeat(part, 3, axis=2)
    return Image.fromarray(part).resize((_CELL, _CELL), Image.NEAREST)


def _scaled_box(box: tuple[int, int, int, int], src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int, int, int]:
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    x0, y0 = int(box[0] * sx), int(box[1] * sy)
    return x0, y0, max(x0 + 1, round(box[2] * sx)), max(y0 + 1, round(box[3] * sy))


def crop_grid(results: Sequence[EvalResult], lr_dir: str | os.PathLike[str] | None = None,
              rows: int = _CROP_ROWS) -> Image.Image | None:
    """A grid image: one row per image (up to ``rows``), columns LR (when given) / each method / GT."""
    stems = _stems(results)[:rows]
    first = {s: (p, g) for s, p, g in results[0].pairs}
    if not stems or first[stems[0]][1] is None:
        return None
    lr_files = {p.stem: p for p in list_images(lr_dir)} if lr_dir is not None else {}
    heads = (["LR"] if lr_dir is not None else []) + [r.name for r in results] + ["GT"]
    label_h = 22
    grid = Image.new("RGB", (_CELL * len(heads), label_h + (_CELL + label_h) * len(stems)), "white")
    d = ImageDraw.Draw(grid)
    for i, h in enumerate(heads):
        d.text((_CELL * i + _CELL // 2, 4), h[:24], fill="#222", font=_font(14), anchor="ma")
    for row, stem in enumerate(stems):
        gt_img = load_image(first[stem][1])  # type: ignore[arg-type]
        gt = gt_img.rgb()
        box = _interesting_box(gt, 96)
        y = label_h + row * (_CELL + label_h)
        cells: list[Image.Image | None] = []
        if lr_dir is not None:
            lr_path = lr_files.get(stem)
            if lr_path is None:
                cells.append(None)
            else:
                lr = load_image(lr_path)
                cells.append(_cell(lr.rgb(), _scaled_box(box, gt_img.size, lr.size)))
        for r in results:
            pred = load_image({s: p for s, p, _ in r.pairs}[stem])
            cells.append(_cell(pred.rgb(), _scaled_box(box, gt_img.size, pred.size)))
        cells.append(_cell(gt, box))
        for i, c in enumerate(cells):
            if c is not None:
                grid.paste(c, (_CELL * i, y))
        d.text((4, y + _CELL + 3), stem[:40], fill="#555", font=_font(12))
    return grid


def _charts(results: Sequence[EvalResult]) -> list[tuple[str, Image.Image]]:
    stems = _stems(results)
    shown = stems[:_MAX_BAR_IMAGES]
    charts: list[tuple[str, Image.Image]] = []
    for m in _metric_names(results):
        if CATALOGUE[m].kind == "folder":
            continue
        arrow = "higher is better" if CATALOGUE[m].higher_is_better else "lower is better"
        series = {r.name: [r.per_image[s].get(m) for s in stems] for r in results if m in r.metrics}
        charts.append((f"dist_{m}", distribution_chart(f"{m} distribution ({arrow})", series)))
        bars = {k: v[: len(shown)] for k, v in series.items()}
        more = f", first {len(shown)} of {len(stems)}" if len(stems) > len(shown) else ""
        charts.append((f"bars_{m}", bar_chart(f"{m} per image{more}", shown, bars, width=700)))
    return charts


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _messages(results: Sequence[EvalResult]) -> list[tuple[str, str, str]]:
    out = []
    for r in results:
        out += [("unavailable", r.name, f"{k}: {v}") for k, v in r.unavailable.items()]
        out += [("failed", r.name, f) for f in r.failures]
        out += [("note", r.name, n) for n in r.notes]
    return out


def write_report(results: Sequence[EvalResult], out: str | os.PathLike[str],
                 lr_dir: str | os.PathLike[str] | None = None, title: str = "stablesr evaluation") -> Path:
    """Write ``out`` (``.html``: self-contained; ``.md``: plus PNGs in ``<stem>_files/``) and return its path."""
    path = Path(out)
    kind = path.suffix.lower()
    if kind not in (".html", ".htm", ".md"):
        raise StableSRError(f"{path}: report must end in .html or .md")
    charts = _charts(results)
    grid = crop_grid(results, lr_dir)
    if grid is not None:
        charts.append(("crops", grid))
    pngs = {name: _png(img) for name, img in charts}
    if kind == ".md":
        folder = path.with_name(f"{path.stem}_files")
        for name, data in pngs.items():
            _atomic_write(folder / f"{name}.png", data)
        text = _markdown(results, {n: f"{folder.name}/{n}.png" for n in pngs}, title)
    else:
        text = _html(results, {n: "data:image/png;base64," + base64.b64encode(d).decode() for n, d in pngs.items()}, title)
    _atomic_write(path, text.encode("utf-8"))
    return path


def _summary_line(results: Sequence[EvalResult]) -> str:
    n = len(_stems(results))
    return f"{n} image(s), crop border {results[0].crop_border}, methods: {', '.join(r.name for r in results)}"


_PROTOCOL = ("BasicSR protocol: values in [0, 255]; Y = ITU-R BT.601 (16-235); SSIM with an 11x11 Gaussian "
             "(sigma 1.5), valid windows, channel mean; NIQE on rounded Y, 96x96 blocks, MATLAB-style imresize")


def _markdown(results: Sequence[EvalResult], images: dict[str, str], title: str) -> str:
    metrics = _metric_names(results)
    lines = [f"# {title}", "", _summary_line(results), "", f"_{_PROTOCOL}_", ""]
    heads = [f"{m} {'↑' if CATALOGUE[m].higher_is_better else '↓'}" for m in metrics]
    lines += ["| method | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(metrics)]
    for r in results:
        cells = []
        for m in metrics:
            v = r.mean.get(m)
            cells.append(f"**{_fmt(v)}**" if v is not None and v == _best(results, m) else _fmt(v))
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    lines.append("")
    if "crops" in images:
        lines += ["## Crops", "", f"![crops]({images['crops']})", ""]
    lines += ["## Metrics", ""]
    lines += [f"![{n}]({src})" for n, src in images.items() if n != "crops"]
    msgs = _messages(results)
    if msgs:
        lines += ["", "## Notes", ""] + [f"- **{k}** ({who}): {text}" for k, who, text in msgs]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:22px;margin-bottom:4px}.sub{color:#666;margin:0 0 4px}.small{font-size:12px}table{border-collapse:collapse;margin:16px 0}
th,td{padding:6px 12px;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f5f5f7}td.best{font-weight:700;color:#0b6e2e}.charts{display:flex;flex-wrap:wrap;gap:12px}
.charts img{border:1px solid #eee;max-width:100%}.crops img{max-width:100%;border:1px solid #eee}
li.unavailable{color:#8a5a00}li.failed{color:#b00020}li.note{color:#555}details{margin-top:12px}
"""


def _html(results: Sequence[EvalResult], images: dict[str, str], title: str) -> str:
    e = html.escape
    metrics = _metric_names(results)
    head = "".join(f"<th title='{e(CATALOGUE[m].summary)}'>{e(m)} {'↑' if CATALOGUE[m].higher_is_better else '↓'}</th>"
                   for m in metrics)
    rows = []
    for r in results:
        tds = []
        for m in metrics:
            v = r.mean.get(m)
            best = v is not None and v == _best(results, m)
            tds.append(f"<td class='{'best' if best else ''}'>{_fmt(v)}</td>")
        rows.append(f"<tr><td>{e(r.name)}</td>{''.join(tds)}</tr>")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1><p class='sub'>{e(_summary_line(results))}</p><p class='sub small'>{e(_PROTOCOL)}</p>",
             f"<table id='summary'><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"]
    if "crops" in images:
        parts.append(f"<h2>Crops</h2><div class='crops'><img id='crops' alt='crops' src='{images['crops']}'></div>")
    parts.append("<h2>Metrics</h2><div class='charts'>")
    parts += [f"<img class='chart' alt='{e(n)}' src='{src}'>" for n, src in images.items() if n != "crops"]
    parts.append("</div>")
    msgs = _messages(results)
    if msgs:
        items = "".join(f"<li class='{k}'><b>{k}</b> ({e(who)}): {e(t)}</li>" for k, who, t in msgs)
        parts.append(f"<details open id='notes'><summary>Notes ({len(msgs)})</summary><ul>{items}</ul></details>")
    per_image = _per_image_table(results, metrics)
    parts.append(f"<details id='per-image'><summary>Per-image values</summary>{per_image}</details></body></html>")
    return "\n".join(parts)


def _per_image_table(results: Sequence[EvalResult], metrics: list[str]) -> str:
    e = html.escape
    cols = [(r, m) for r in results for m in metrics if m in r.metrics and CATALOGUE[m].kind != "folder"]
    head = "".join(f"<th>{e(r.name)}<br>{e(m)}</th>" for r, m in cols)
    body = "".join(f"<tr><td>{e(s)}</td>" + "".join(f"<td>{_fmt(r.per_image[s].get(m))}</td>" for r, m in cols) + "</tr>"
                   for s in _stems(results))
    return f"<table><thead><tr><th>image</th>{head}</tr></thead><tbody>{body}</tbody></table>"
