"""Degradation speed (pairs per second) and LR statistics (for distribution-level parity checks).

    python benchmarks/degradation.py                       # speed: 512 crops, batch 1 and 8, CPU (+ GPU if any)
    python benchmarks/degradation.py --threads 2           # the CI-sized CPU
    python benchmarks/degradation.py --stats 300           # statistics of 300 LR images from ../shared/data/hr
    python benchmarks/degradation.py --stats 300 --pairs-dir OFFICIAL  # the same statistics of OFFICIAL/{gt,lr}

Speed covers what a training step or make-testset does per pair on the device: crop, parameter
sampling, the degradation itself (USM off, as make-testset's default). Statistics, one JSON line
each: PSNR of the LR against the bicubic-downscaled GT (overall severity), a noise sigma estimate
(Immerkaer's Laplacian method, 0..255), sharpness (mean gradient of LR / of bicubic GT), JPEG
blockiness (mean step across 8-pixel block edges / elsewhere) and colour shift (mean absolute
difference of channel means, 0..255). Compare the mean/std of two sources; they match when the
difference of means is within about two standard errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STABLESR_SHARED", REPO.parent / "shared")) / "data"


def photos(min_side: int = 0):
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for p in sorted((DATA / "hr").glob("*/*")):
        im = Image.open(p).convert("RGB")
        if min(im.size) < min_side:
            continue
        rgb = np.asarray(im, dtype=np.float32) / 255
        out.append(torch.from_numpy(rgb.transpose(2, 0, 1).copy()).unsqueeze(0))
    if not out:  # no shared data: random texture still times the pipeline correctly
        out = [torch.rand(1, 3, 768, 768)]
    return out


def speed(device: str, batch: int, seconds: float, preset: str) -> dict:
    import torch

    from stablesr.degradation import DegradationConfig, degrade, random_crop, sample_params

    cfg = DegradationConfig.from_preset(preset)
    images = photos(512)
    gen = torch.Generator().manual_seed(0)
    pairs, rounds, start, cpu0 = 0, 0, None, 0.0
    while True:
        src = images[rounds % len(images)]
        crops, _ = random_crop(src.expand(batch, -1, -1, -1), 512, gen)
        lr = degrade(crops.to(device), sample_params(cfg, batch, gen))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        _ = lr
        rounds += 1
        if start is None:  # the first round warms up kernels and caches
            start, cpu0 = time.perf_counter(), time.process_time()
            continue
        pairs += batch
        if time.perf_counter() - start > seconds:
            break
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    # CPU seconds per pair are robust to other processes sharing the machine (wall time is not)
    return {"bench": "degradation_speed", "preset": preset, "device": device, "batch": batch,
            "threads": torch.get_num_threads(), "crop": 512, "pairs": pairs, "seconds": round(wall, 2),
            "pairs_per_s": round(pairs / wall, 2),
            "cpu_s_per_pair": round(cpu / pairs, 4), "load_avg": round(os.getloadavg()[0], 1)}


def _stats_of(gt, lr) -> dict:
    import torch
    import torch.nn.functional as F

    ref = F.interpolate(gt, size=lr.shape[-2:], mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mse = float(((lr - ref) ** 2).mean())
    grey = (lr * torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(1, keepdim=True) * 255
    lap = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]]).reshape(1, 1, 3, 3)
    resp = F.conv2d(grey, lap).abs()
    h, w = grey.shape[-2:]
    sigma = math.sqrt(math.pi / 2) * float(resp.sum()) / (6 * (w - 2) * (h - 2))

    def grad(x):
        return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())

    dx = (grey[..., :, 1:] - grey[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    edge = torch.arange(dx.numel()) % 8 == 7
    return {
        "psnr_vs_bicubic": 10 * math.log10(1 / max(mse, 1e-12)),
        "noise_sigma": sigma,
        "sharpness": grad(lr) / max(grad(ref), 1e-12),
        "blockiness": float(dx[edge].mean() / dx[~edge].mean().clamp(min=1e-12)),
        "colour_shift": float((lr.mean(dim=(2, 3)) - ref.mean(dim=(2, 3))).abs().mean() * 255),
    }


def _summary(source: str, rows: list[dict]) -> list[dict]:
    out = []
    for key in rows[0]:
        vals = [r[key] for r in rows]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1))
        out.append({"bench": "degradation_stats", "source": source, "stat": key, "n": len(vals),
                    "mean": round(mean, 4), "std": round(std, 4), "sem": round(std / math.sqrt(len(vals)), 4)})
    return out


def stats_generated(n: int, preset: str, seed: int) -> list[dict]:
    import torch

    from stablesr.degradation import DegradationConfig, degrade, random_crop, sample_params

    cfg = DegradationConfig.from_preset(preset)
    images = photos(384)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        crops, _ = random_crop(images[i % len(images)], 512, gen)
        lr = degrade(crops, sample_params(cfg, 1, gen))
        lr = (lr * 255).round() / 255  # as written to disk
        rows.append(_stats_of(crops, lr))
    return _summary(f"stablesr:{preset}:seed{seed}", rows)


def stats_folder(folder: Path, n: int) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    def load(p):
        a = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255
        return torch.from_numpy(a.transpose(2, 0, 1).copy()).unsqueeze(0)

    rows = []
    for p in sorted((folder / "lr").glob("*.png"))[:n]:
        rows.append(_stats_of(load(folder / "gt" / p.name), load(p)))
    return _summary(str(folder), rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seconds", type=float, default=6.0, help="timing window per configuration")
    ap.add_argument("--preset", default="realesrgan")
    ap.add_argument("--stats", type=int, metavar="N", help="compute LR statistics over N pairs instead of speed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs-dir", type=Path, help="with --stats: a folder with gt/ and lr/ (e.g. official pairs)")
    ap.add_argument("--devices", nargs="*", help="default: cpu, plus cuda when available")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stats:
        rows = stats_folder(args.pairs_dir, args.stats) if args.pairs_dir else stats_generated(
            args.stats, args.preset, args.seed)
        for row in rows:
            print(json.dumps(row), flush=True)
        return 0
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for device in devices:
        for batch in (1, 8):
            print(json.dumps(speed(device, batch, args.seconds, args.preset)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
