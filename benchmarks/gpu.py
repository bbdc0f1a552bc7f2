"""GPU benchmark of the issue-12 scenarios with the full-size architecture and random weights.

    python benchmarks/gpu.py                          # bf16, all scenarios, about 5 minutes on one H200
    python benchmarks/gpu.py --precision fp16 --scenarios A B
    python benchmarks/gpu.py --device cpu --tiny --scenarios B --parity   # dry run of this script, no GPU

Speed does not depend on weight values, so random SD-2.1-size weights stand in for the released
StableSR checkpoints (NTU S-Lab licence, not needed here). One JSON line per scenario: ``scenario``,
``total_s``, ``per_step_s``, per-stage seconds (``encode_s``, ``sample_s``, ``decode_s``,
``color_fix_s``), ``peak_allocated_gib``, ``peak_reserved_gib``, and for runs with fewer steps than
the issue's (``--steps-c``, ``--steps-d``, to stay within 8 minutes) ``total_<N>_s`` extrapolated
to the issue's step count. The official numbers (issue 12, one H200, fp16 autocast): A 13.97 s /
69.5 ms a step / 7.09 GiB; B 0.32 s / 58.8 ms / 7.09 GiB; C ~828 s / 4.13 s / 12.2 GiB (17.8 reserved).

Scenarios: A 128 -> 512, 200 DDPM steps; B 128 -> 512, 4 steps (Turbo-style); C 512 -> 2048, tile
path (latent tiles 64/32, tiled VAE); D 1024 -> 4096, run under a 12 GB (12e9 bytes) cap by default
(``--memory-cap-gb``; the target is that it fits). ``--parity`` first runs B in fp32 and prints how far
the ``--precision`` output is from it (``parity`` row: mean and max absolute difference, PSNR), with
the same weights (the reduced-precision ones are the fp32 ones rounded, as when the released fp32
files are loaded in bf16).

``--device cpu --tiny`` runs the same code on the CPU with the tiny golden model (``STABLESR_GOLDEN``):
a dry run that checks this script before a GPU is spent on it; its memory fields are then the
process's peak resident set. Without ``--device cpu`` it exits with a one-line message when no CUDA
device is present.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# name: (LR side, output side, steps the issue uses)
SCENARIOS = {"A": (128, 512, 200), "B": (128, 512, 4), "C": (512, 2048, 200), "D": (1024, 4096, 200)}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class Device:
    """What the timers and memory fields need of the device: synchronise, peak memory, a name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cuda = name.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peaks(self) -> dict[str, float]:
        """Peak GPU memory since ``reset_peak`` on CUDA; on the CPU the process's peak resident set so far."""
        if not self.cuda:
            return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30, 3)}
        import torch

        return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3)}

    def label(self) -> str:
        if self.cuda:
            import torch

            return torch.cuda.get_device_name()
        return f"cpu ({platform.machine()})"

    def cap_memory(self, gigabytes: float | None) -> None:
        """Let this process see only ``gigabytes`` (1e9 bytes) of the card, or all of it for None."""
        if self.cuda:
            import torch

            torch.cuda.empty_cache()  # blocks cached by an earlier scenario would count against the cap
            total = torch.cuda.mem_get_info()[1]
            torch.cuda.set_per_process_memory_fraction(min(1.0, gigabytes * 1e9 / total) if gigabytes else 1.0)


def instrument(pipe: Any, seconds: dict[str, float], device: Device) -> None:
    """Per-stage wall-clock timers (synchronised) on this pipeline instance's steps."""
    from stablesr.pipeline import core

    def timed(name: str, fn):
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            device.sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                device.sync()
                seconds[name] += time.perf_counter() - start

        return wrapper

    pipe.encode_structure = timed("encode", pipe.encode_structure)
    pipe.denoise = timed("sample", pipe.denoise)
    pipe.decode = timed("decode_and_fix", pipe.decode)
    core.apply_color_fix = timed("color_fix", core.apply_color_fix)


def upscale(pipe: Any, name: str, steps: int, args: argparse.Namespace) -> Any:
    """One scenario's call with the benchmark's fixed input and seed; returns the (1, H, W, 3) array."""
    import numpy as np
    import torch

    lr_side, out_side, _ = SCENARIOS[name]
    lr = np.random.default_rng(0).random((lr_side, lr_side, 3), dtype=np.float32)
    return pipe(lr, upscale=out_side / lr_side, num_inference_steps=steps, sampler="ddpm",
                tile_batch_size=args.tile_batch, vae_tile_size=args.vae_tile, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def run(pipe: Any, name: str, steps: int, args: argparse.Namespace, device: Device) -> dict:
    import torch

    from stablesr.pipeline import core

    lr_side, out_side, issue_steps = SCENARIOS[name]
    seconds: dict[str, float] = defaultdict(float)
    color_fix = core.apply_color_fix
    instrument(pipe, seconds, device)
    cap = args.memory_cap_gb if name == "D" and device.cuda else None
    if cap:  # what a card of this size would leave: the automatic tile batch and feature budget see it too
        device.cap_memory(cap)
    device.sync()
    device.reset_peak()
    start = time.perf_counter()
    try:
        out = upscale(pipe, name, steps, args)
    except torch.cuda.OutOfMemoryError as exc:
        out = None
        error = f"out of memory: {str(exc).splitlines()[0]}"
    device.sync()
    total = time.perf_counter() - start
    for attr in ("encode_structure", "denoise", "decode"):  # drop this run's timers
        del pipe.__dict__[attr]
    core.apply_color_fix = color_fix
    if cap:
        device.cap_memory(None)
    if out is None:
        return {"scenario": name, "error": error, "memory_cap_gb": cap, "precision": args.precision}
    per_step = seconds["sample"] / steps
    row = {"scenario": name, "lr_px": lr_side, "out_px": out_side, "steps": steps, "total_s": round(total, 4),
           "per_step_s": round(per_step, 5), "encode_s": round(seconds["encode"], 4),
           "sample_s": round(seconds["sample"], 4),
           "decode_s": round(seconds["decode_and_fix"] - seconds["color_fix"], 4),
           "color_fix_s": round(seconds["color_fix"], 4), **device.peaks(),
           "precision": args.precision, "tile_batch": args.tile_batch or "auto", "vae_tile": args.vae_tile,
           "compile": args.compile, "offload": args.offload, "channels_last": args.channels_last,
           "memory_cap_gb": cap, "out_shape": list(out.shape), "device": device.label(),
           "model": "tiny golden" if args.tiny else "sd21-size random weights"}
    if steps != issue_steps:
        row[f"total_{issue_steps}_s"] = round(total - seconds["sample"] + per_step * issue_steps, 3)
    return row


def parity(reference: Any, out: Any, args: argparse.Namespace) -> dict:
    """How far the ``--precision`` output of scenario B is from the fp32 one (images in [0, 1])."""
    import numpy as np

    diff = np.abs(out.astype(np.float64) - reference)
    mse = float(np.mean(diff**2))
    return {"scenario": "parity", "of": "B", "precision": args.precision, "against": "fp32",
            "mean_abs_diff": round(float(diff.mean()), 6), "max_abs_diff": round(float(diff.max()), 6),
            "psnr_db": round(-10 * np.log10(mse), 2) if mse > 0 else None, "finite": bool(np.isfinite(out).all()),
            "compile": args.compile, "channels_last": args.channels_last}


def fp32_reference(pipe: Any, args: argparse.Namespace) -> Any:
    """Scenario B in true fp32: TF32 (on by default for cuDNN convolutions) has fp16's mantissa, so it is off."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return upscale(pipe, "B", 4, args).astype("float64")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def build(args: argparse.Namespace, device: Device, dtype: Any) -> Any:
    from any_size import build_full, build_tiny

    place = "cpu" if args.offload else device.name
    pipe = build_tiny().to(place, dtype) if args.tiny else build_full(place, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--precision", default="bf16", choices=list(DTYPES))
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu, the latter for a dry run with --tiny")
    ap.add_argument("--tiny", action="store_true", help="the tiny golden model instead of SD-2.1-size random weights")
    ap.add_argument("--parity", action="store_true", help="first measure scenario B against the fp32 path")
    ap.add_argument("--steps-a", type=int, default=200)
    ap.add_argument("--steps-c", type=int, default=20, help="C steps (the issue's 200 extrapolated)")
    ap.add_argument("--steps-d", type=int, default=5, help="D steps (200 extrapolated)")
    ap.add_argument("--tile-batch", type=int, default=None, help="latent tiles per network call")
    ap.add_argument("--vae-tile", type=int, default=None, help="VAE tile in px")
    ap.add_argument("--compile", action="store_true", help="pipe.compile() (CUDA graphs); the warm-up compiles")
    ap.add_argument("--offload", choices=["model", "sequential"], default=None, help="CPU offload of idle networks")
    ap.add_argument("--memory-cap-gb", type=float, default=12.0,
                    help="D runs as on a card of this many GB, 1e9 bytes (the issue's target: 12; 0 = the whole GPU)")
    ap.add_argument("--channels-last", action="store_true", help="every network's weights in channels_last (NHWC)")
    args = ap.parse_args()
    import torch

    device = Device(args.device)
    if device.cuda and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device; nothing measured (run benchmarks/cpu.py on the CPU, or this "
              "script with --device cpu --tiny for a dry run)")
        return 0
    from stablesr.config import DEFAULT_VAE_TILE

    args.vae_tile = args.vae_tile or DEFAULT_VAE_TILE
    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[args.precision])
    if args.parity and args.offload:
        ap.error("--parity measures on the device: run it without --offload")
    pipe = build(args, device, torch.float32 if args.parity else dtype)
    with torch.inference_mode():
        reference = fp32_reference(pipe, args) if args.parity else None
        if args.parity:
            pipe.to(dtype=dtype)  # the same weights, rounded
        if args.channels_last:  # an experiment: convolutions then run NHWC (the tiles stay NCHW)
            for module in pipe.components.values():
                module.to(memory_format=torch.channels_last)
        if args.offload:
            pipe.enable_offload(args.offload, device.name)
        if args.compile:
            pipe.compile()
        steps = {"A": args.steps_a, "B": 4, "C": args.steps_c, "D": args.steps_d}
        warm = upscale(pipe, "B", 4 if args.parity else 2, args)  # warm-up: kernels, allocator, compilation
        if reference is not None:
            print(json.dumps(parity(reference, warm, args)), flush=True)
        for name in args.scenarios:
            print(json.dumps(run(pipe, name, steps[name], args, device)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
