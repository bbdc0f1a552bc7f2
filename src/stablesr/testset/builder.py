"""Building a paired test set from clean HR photos: ``OUT/gt``, ``OUT/lr``, ``OUT/meta.jsonl``.

Every pair (image stem, crop index k) has its own generator, seeded from the run seed, the stem and
k, which draws the crop and then the degradation. A pair's images therefore depend only on the
seed, the HR file and the device: not on the batch size, on the other files, or on resuming.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..degradation.config import DegradationConfig
from ..degradation.ops import CropParams, crop_image, sample_crop, usm_sharpen
from ..degradation.params import DegradationParams, sample_params
from ..degradation.pipeline import degrade, target_image
from ..errors import StableSRError

__all__ = ["TestsetOptions", "TestsetTally", "make_testset", "pair_seed"]


@dataclass(frozen=True)
class TestsetOptions:
    """Settings of one ``make-testset`` run."""

    config: DegradationConfig
    preset: str = "realesrgan"  # recorded in meta.jsonl
    crops_per_image: int = 1
    crop_size: int = 512
    seed: int = 0
    usm: bool = False
    device: str = "cpu"
    batch_size: int = 8
    skip_existing: bool = False

    def __post_init__(self) -> None:
        if self.crops_per_image < 1:
            raise StableSRError(f"--crops-per-image must be at least 1, got {self.crops_per_image}")
        if self.batch_size < 1:
            raise StableSRError(f"--batch-size must be at least 1, got {self.batch_size}")
        s = self.config.scale
        if self.crop_size < 16 * s or self.crop_size % s:
            raise StableSRError(f"--crop-size must be a multiple of --scale {s} and at least {16 * s}, "
                                f"got {self.crop_size}")


@dataclass
class TestsetTally:
    """Counts of pairs written, skipped (already there) and failed, plus the failed files."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    failed_files: list[str] = field(default_factory=list)

    def summary(self, seconds: float) -> str:
        return f"done {self.done}, skipped {self.skipped}, failed {self.failed} in {seconds:.1f} s"


@dataclass
class _Pair:
    name: str
    source: Path
    seed: int
    crop: CropParams
    params: DegradationParams
    gt: torch.Tensor | None = None


def pair_seed(seed: int, stem: str, k: int) -> int:
    """A 63-bit seed for pair ``k`` of image ``stem`` (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{seed}\0{stem}\0{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def list_images(hr_dir: Path) -> list[Path]:
    """Image files directly in ``hr_dir``, sorted (hidden files skipped)."""
    from ..imageio.naming import IMAGE_EXTENSIONS

    return sorted(
        p for p in hr_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def make_testset(
    hr_dir: Path,
    out_dir: Path,
    options: TestsetOptions,
    *,
    report: Callable[[str], None] = print,
    progress: bool = True,
) -> TestsetTally:
    """Write the pairs for every image in ``hr_dir``; bad files get one ``report`` line each."""
    from tqdm import tqdm

    sources = list_images(hr_dir)
    if not sources:
        raise StableSRError(f"{hr_dir}: no image files in this directory")
    tally = TestsetTally()
    meta: dict[str, dict[str, Any]] = {}
    stems: dict[str, Path] = {}
    bar = tqdm(total=len(sources) * options.crops_per_image, unit="pair", disable=not progress or None)
    batch: list[_Pair] = []
    try:
        for source in sources:
            if source.stem in stems:
                _fail(tally, report, source, f"same name as {stems[source.stem].name}; outputs would clash",
                      options.crops_per_image, bar)
                continue
            stems[source.stem] = source
            pairs = [_plan(source, k, options) for k in range(options.crops_per_image)]
            todo = [p for p in pairs if not (options.skip_existing and _exists(out_dir, p.name))]
            for p in pairs:
                if p not in todo:
                    meta[p.name] = _meta(p, options)
                    tally.skipped += 1
                    bar.update(1)
            if not todo:
                continue
            try:
                image = _load(source)
            except StableSRError as exc:
                _fail(tally, report, source, str(exc), len(todo), bar, named=True)
                continue
            for p in todo:
                p.gt = crop_image(image, options.crop_size, p.crop)
                batch.append(p)
            while len(batch) >= options.batch_size:
                _flush(batch[: options.batch_size], out_dir, options, meta, tally, report, bar)
                del batch[: options.batch_size]
        _flush(batch, out_dir, options, meta, tally, report, bar)
    finally:
        bar.close()
        if meta:
            _write_meta(out_dir / "meta.jsonl", meta)
    return tally


def _plan(source: Path, k: int, options: TestsetOptions) -> _Pair:
    seed = pair_seed(options.seed, source.stem, k)
    gen = torch.Generator().manual_seed(seed)
    crop = sample_crop(gen)
    return _Pair(f"{source.stem}_{k}", source, seed, crop, sample_params(options.config, 1, gen))


def _exists(out_dir: Path, name: str) -> bool:
    return (out_dir / "gt" / f"{name}.png").is_file() and (out_dir / "lr" / f"{name}.png").is_file()


def _load(source: Path) -> torch.Tensor:
    from ..imageio.read import read_image

    img = read_image(source)
    return torch.from_numpy(img.rgb.transpose(2, 0, 1).copy()).unsqueeze(0)


def _fail(tally: TestsetTally, report: Callable[[str], None], source: Path, reason: str, pairs: int, bar: Any,
          named: bool = False) -> None:
    report(reason if named else f"{source}: {reason}")
    tally.failed += pairs
    tally.failed_files.append(str(source))
    bar.update(pairs)


def _flush(batch: list[_Pair], out_dir: Path, options: TestsetOptions, meta: dict[str, dict[str, Any]],
           tally: TestsetTally, report: Callable[[str], None], bar: Any) -> None:
    from ..imageio.write import write_image

    if not batch:
        return
    device = torch.device(options.device)
    try:
        gt = torch.cat([p.gt for p in batch if p.gt is not None]).to(device)
        if options.usm:
            gt = usm_sharpen(gt)
        params = DegradationParams.concat([p.params for p in batch])
        lr = degrade(gt, params)
        gt = target_image(gt, params)
    except (RuntimeError, ValueError) as exc:  # e.g. out of device memory: report, keep going
        reason = " ".join(str(exc).split())[:200]
        for p in batch:
            report(f"{p.source}: pair {p.name} could not be degraded on {device} ({reason})")
            tally.failed += 1
            tally.failed_files.append(str(p.source))
            p.gt = None
            bar.update(1)
        return
    for i, p in enumerate(batch):
        try:
            for folder, img in (("gt", gt[i]), ("lr", lr[i])):
                rgb = img.permute(1, 2, 0).to("cpu", torch.float32).numpy()
                write_image(out_dir / folder / f"{p.name}.png", rgb, protected=[p.source])
        except StableSRError as exc:
            report(str(exc))
            tally.failed += 1
            tally.failed_files.append(str(p.source))
        else:
            meta[p.name] = _meta(p, options)
            tally.done += 1
        p.gt = None
        bar.update(1)


def _meta(p: _Pair, options: TestsetOptions) -> dict[str, Any]:
    return {
        "name": p.name,
        "source": p.source.name,
        "preset": options.preset,
        "scale": options.config.scale,
        "crop_size": options.crop_size,
        "usm": options.usm,
        "seed": p.seed,
        "crop": p.crop.to_dict(),
        "params": p.params.to_dicts()[0],
    }


def _lines(meta: dict[str, dict[str, Any]]) -> Iterator[str]:
    for name in sorted(meta):
        yield json.dumps(meta[name], sort_keys=True) + "\n"


def _write_meta(path: Path, meta: dict[str, dict[str, Any]]) -> None:
    """Merge with the lines already there (other runs into the same folder) and replace atomically."""
    merged: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                merged[str(entry["name"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
    merged.update(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".meta-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(_lines(merged))
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
