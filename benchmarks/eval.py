"""Evaluation throughput: images/s for psnr + ssim + niqe (RGB and Y) at 512x512. Prints JSON lines.

    PYTHONPATH=src python benchmarks/eval.py [--images 16] [--size 512]

One line per metric (milliseconds per image, arrays already in memory) and one end-to-end line
(`evaluate` over a folder: decoding + pairing + all metrics), all on one CPU thread set by torch/numpy.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stablesr.evaluation import EvalSettings, build_metric, evaluate

METRICS = ("psnr", "psnr_y", "ssim", "ssim_y", "niqe")


def _images(n: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Textured GT (smoothed noise at several scales) and a blurred+noisy prediction, as 8-bit codes."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        gt = np.zeros((size, size, 3))
        for cells in (4, 16, 64):
            small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
            gt += np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), dtype=np.float64) / 3
        gt = np.round(gt)
        pred = np.asarray(Image.fromarray(gt.astype(np.uint8)).resize((size // 4, size // 4), Image.BICUBIC)
                          .resize((size, size), Image.BICUBIC), dtype=np.float64)
        pred = np.clip(np.round(pred + rng.normal(0, 3, pred.shape)), 0, 255)
        out.append((pred, gt))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    pairs = _images(args.images, args.size)
    env = {"python": platform.python_version(), "machine": platform.machine(), "size": args.size, "images": args.images}
    total = 0.0
    for name in METRICS:
        metric = build_metric(name)
        metric.score(*pairs[0])  # warm-up (tables, caches)
        t = time.perf_counter()
        for pred, gt in pairs:
            metric.score(pred, gt)
        dt = (time.perf_counter() - t) / len(pairs)
        total += dt
        print(json.dumps({"bench": "eval_metric", "metric": name, "ms_per_image": round(dt * 1e3, 2), **env}))
    print(json.dumps({"bench": "eval_metrics_sum", "metrics": list(METRICS), "images_per_s": round(1 / total, 2), **env}))
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir, gt_dir = Path(tmp) / "pred", Path(tmp) / "gt"
        pred_dir.mkdir()
        gt_dir.mkdir()
        for i, (pred, gt) in enumerate(pairs):
            Image.fromarray(pred.astype(np.uint8)).save(pred_dir / f"{i:04d}_out.png")
            Image.fromarray(gt.astype(np.uint8)).save(gt_dir / f"{i:04d}.png")
        t = time.perf_counter()
        result = evaluate(pred_dir, gt_dir, EvalSettings(metrics=METRICS, progress=False))
        dt = time.perf_counter() - t
        assert not result.failures, result.failures
        print(json.dumps({"bench": "eval_folder", "metrics": list(METRICS), "images_per_s": round(len(pairs) / dt, 2),
                          "mean": {k: round(v, 4) for k, v in result.mean.items()}, **env}))


if __name__ == "__main__":
    main()
