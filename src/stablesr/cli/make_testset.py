"""``stablesr make-testset HR_DIR OUT_DIR``: paired GT/LR test sets from clean photos.

Exit codes: 0 success, 1 some files failed, 2 usage error (bad flags, no inputs, bad device).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..degradation.config import PRESETS, DegradationConfig
from ..errors import StableSRError
from ..runtime.device import resolve_device

__all__ = ["register", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``make-testset`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "make-testset",
        parents=list(parents),
        help="make a paired GT/LR test set from clean HR photos (Real-ESRGAN degradation)",
        description="Crop clean HR photos and degrade them as StableSR's training does. Writes "
        "OUT_DIR/gt/<stem>_<k>.png (crop-size square), OUT_DIR/lr/<stem>_<k>.png (crop-size / scale) "
        "and OUT_DIR/meta.jsonl (each pair's sampled parameters). Deterministic per seed; the counts "
        "in the summary are pairs.",
    )
    p.add_argument("hr_dir", metavar="HR_DIR", type=Path, help="folder of clean HR images (not recursive)")
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="output folder (created)")
    p.add_argument("--degradation", choices=sorted(PRESETS), default="realesrgan",
                   help="degradation preset (default: realesrgan, the 512 training config)")
    p.add_argument("--config", metavar="YAML", type=Path,
                   help="degradation config file (keys of DegradationConfig; 'preset:' picks the base)")
    p.add_argument("--crops-per-image", type=int, default=1, metavar="K", help="random crops per image (default 1)")
    p.add_argument("--crop-size", type=int, default=512, help="GT crop size (default 512)")
    p.add_argument("--scale", type=int, default=4, help="downscaling factor (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--usm", action="store_true",
                   help="USM-sharpen the GT before degrading it, as training does (off: a test set degrades the clean image)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per batch (does not change the output)")
    p.add_argument("--skip-existing", action="store_true", help="skip pairs whose gt and lr files exist (resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _error(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"error: {' '.join(message.split())}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``make-testset`` from parsed arguments; returns the exit code."""
    from ..testset.builder import TestsetOptions, make_testset

    started = time.monotonic()
    try:
        if not args.hr_dir.is_dir():
            raise StableSRError(f"{args.hr_dir}: not a directory")
        hr, out = args.hr_dir.resolve(), args.out_dir.resolve()
        if hr in (out, out / "gt", out / "lr"):
            raise StableSRError(f"{args.out_dir}: OUT_DIR, OUT_DIR/gt and OUT_DIR/lr must differ from HR_DIR")
        preset = args.degradation
        cfg = DegradationConfig.from_yaml(args.config) if args.config else DegradationConfig.from_preset(preset)
        if args.config:
            preset = f"{args.config.name}"
        if args.scale != cfg.scale:
            cfg = dataclasses.replace(cfg, scale=args.scale)
        options = TestsetOptions(
            config=cfg,
            preset=preset,
            crops_per_image=args.crops_per_image,
            crop_size=args.crop_size,
            seed=args.seed,
            usm=args.usm,
            device=str(resolve_device(None if args.device == "auto" else args.device)),
            batch_size=args.batch_size,
            skip_existing=args.skip_existing,
        )
        tally = make_testset(args.hr_dir, args.out_dir, options, report=_error, progress=not args.quiet)
    except StableSRError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    if tally.failed_files:
        print("failed: " + ", ".join(dict.fromkeys(tally.failed_files)), flush=True)
    print(tally.summary(time.monotonic() - started), flush=True)
    return EXIT_FAILED if tally.failed else EXIT_OK
