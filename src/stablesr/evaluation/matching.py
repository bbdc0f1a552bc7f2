"""Pairing prediction files with ground truth by file stem, tolerating the suffixes upscalers add."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Pairing", "match_by_stem"]

# One upscaler suffix: "_out", "_sr", "_x4", "-x4", "_4x", "_stablesr", ...; they may be chained ("_x4_out").
_SUFFIX = re.compile(r"[_-](?:out|output|sr|SR|x\d+|\d+x|stablesr|bicubic|lanczos|restored|result)$")


def _strip_suffixes(stem: str, known: dict[str, Path]) -> tuple[str, str]:
    """The longest known GT stem reachable by removing suffixes from the right, and what was removed."""
    base = stem
    while (m := _SUFFIX.search(base)) is not None:
        base = base[: m.start()]
        if base in known:
            return base, stem[len(base):]
    return stem, ""


@dataclass
class Pairing:
    """``pairs``: (stem, pred, gt) in GT order; ``suffixes``: stripped suffix -> count; the rest: unmatched files."""

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    suffixes: dict[str, int] = field(default_factory=dict)
    missing_pred: list[Path] = field(default_factory=list)  # GT files without a prediction
    extra_pred: list[Path] = field(default_factory=list)  # predictions without a GT
    duplicates: list[Path] = field(default_factory=list)  # second prediction claiming the same GT stem
    duplicate_gt: list[Path] = field(default_factory=list)  # second GT file with a stem already seen


def match_by_stem(preds: list[Path], gts: list[Path]) -> Pairing:
    """Match each GT to the prediction with the same stem, or the same stem plus a known upscaler suffix.

    Example:
        >>> r = match_by_stem([Path("p/cat_x4.png")], [Path("g/cat.jpg")])
        >>> r.pairs[0][0], r.suffixes
        ('cat', {'_x4': 1})
    """
    gt_by_stem: dict[str, Path] = {}
    out = Pairing()
    for g in gts:
        if g.stem in gt_by_stem:
            out.duplicate_gt.append(g)
        else:
            gt_by_stem[g.stem] = g
    chosen: dict[str, tuple[Path, str]] = {}
    for p in preds:
        stem, suffix = p.stem, ""
        if stem not in gt_by_stem:
            stem, suffix = _strip_suffixes(stem, gt_by_stem)
        if stem not in gt_by_stem:
            out.extra_pred.append(p)
            continue
        prev = chosen.get(stem)
        if prev is not None:
            # An exact-stem prediction beats a suffixed one; otherwise the first one (sorted) wins.
            if prev[1] and not suffix:
                out.duplicates.append(prev[0])
                chosen[stem] = (p, suffix)
            else:
                out.duplicates.append(p)
            continue
        chosen[stem] = (p, suffix)
    for g in gt_by_stem.values():
        if g.stem in chosen:
            p, suffix = chosen[g.stem]
            out.pairs.append((g.stem, p, g))
            if suffix:
                out.suffixes[suffix] = out.suffixes.get(suffix, 0) + 1
        else:
            out.missing_pred.append(g)
    return out
