"""Rebuild the example report in this folder: bicubic vs lanczos x4 on ../shared/data's ImageNet pairs.

Run from the repository root:  PYTHONPATH=src python docs/eval/make_example.py [SHARED_DATA_DIR]
(equivalently: `stablesr upscale --model bicubic|lanczos` into two folders, then `stablesr compare`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from stablesr.evaluation import classical_upscale
from stablesr.evaluation._files import load_image
from stablesr.evaluation.cli import main

here = Path(__file__).resolve().parent
data = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parents[2] / "shared" / "data"
pairs = data / "paired" / "imagenet_bicubic_x4"
with tempfile.TemporaryDirectory() as tmp:
    for method in ("bicubic", "lanczos"):
        out = Path(tmp) / method
        out.mkdir()
        for f in sorted((pairs / "lq").glob("*.png")):
            up = classical_upscale(load_image(f).rgb() / 255.0, 4, method)
            Image.fromarray(np.round(up * 255).astype(np.uint8)).save(out / f.name)
    common = ["--gt", str(pairs / "gt"), "--lr", str(pairs / "lq"), "--metrics", "psnr,psnr_y,ssim,ssim_y,lpips,niqe",
              "--no-progress"]
    dirs = [str(Path(tmp) / "bicubic"), str(Path(tmp) / "lanczos")]
    for target in ("bicubic_vs_lanczos.html", "bicubic_vs_lanczos.md"):
        rc = main(["compare", *dirs, *common, "--report", str(here / target)])
    rc = main(["compare", *dirs, *common, "--json", str(here / "bicubic_vs_lanczos.json")])
sys.exit(rc)
