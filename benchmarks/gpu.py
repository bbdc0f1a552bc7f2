"""GPU benchmark of the issue-12 scenarios with the full-size architecture and random weights.

    python benchmarks/gpu.py                          # bf16, all scenarios, about 5 minutes on one H200
    python benchmarks/gpu.py --precision fp16 --scenarios A B

Speed does not depend on weight values, so random SD-2.1-size weights stand in for the released
StableSR checkpoints (NTU S-Lab licence, not needed here). One JSON line per scenario: ``scenario``,
``total_s``, ``per_step_s``, per-stage seconds (``encode_s``, ``sample_s``, ``decode_s``,
``color_fix_s``), ``peak_allocated_gib``, ``peak_reserved_gib``, and for runs with fewer steps than
the issue's (``--steps-c``, ``--steps-d``, to stay within 8 minutes) ``total_<N>_s`` extrapolated
to the issue's step count. The official numbers (issue 12, one H200, fp16 autocast): A 13.97 s /
69.5 ms a step / 7.09 GiB; B 0.32 s / 58.8 ms / 7.09 GiB; C ~828 s / 4.13 s / 12.2 GiB (17.8 reserved).

Scenarios: A 128 -> 512, 200 DDPM steps; B 128 -> 512, 4 steps (Turbo-style); C 512 -> 2048, tile
path (latent tiles 64/32, tiled VAE); D 1024 -> 4096, run under a 12 GB (12e9 bytes) cap by default
(``--memory-cap-gb``; the target is that it fits). Exits with a one-line message when no CUDA
device is present.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# name: (LR side, output side, steps the issue uses)
SCENARIOS = {"A": (128, 512, 200), "B": (128, 512, 4), "C": (512, 2048, 200), "D": (1024, 4096, 200)}


def instrument(pipe: Any, seconds: dict[str, float]) -> None:
    """Per-stage wall-clock timers (synchronised) on this pipeline instance's steps."""
    import torch

    from stablesr.pipeline import core

    def timed(name: str, fn):
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.synchronize()
                seconds[name] += time.perf_counter() - start

        return wrapper

    pipe.encode_structure = timed("encode", pipe.encode_structure)
    pipe.denoise = timed("sample", pipe.denoise)
    pipe.decode = timed("decode_and_fix", pipe.decode)
    core.apply_color_fix = timed("color_fix", core.apply_color_fix)


def run(pipe: Any, name: str, steps: int, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    lr_side, out_side, issue_steps = SCENARIOS[name]
    from stablesr.pipeline import core

    seconds: dict[str, float] = defaultdict(float)
    color_fix = core.apply_color_fix
    instrument(pipe, seconds)
    lr = np.random.default_rng(0).random((lr_side, lr_side, 3), dtype=np.float32)
    cap = args.memory_cap_gb if name == "D" else None
    if cap:  # what a card of this size would leave: the automatic tile batch and feature budget see it too
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 1e9 / torch.cuda.mem_get_info()[1]))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        out = pipe(lr, upscale=out_side / lr_side, num_inference_steps=steps, sampler="ddpm",
                   tile_batch_size=args.tile_batch, vae_tile_size=args.vae_tile, output_type="np",
                   generator=torch.Generator().manual_seed(0))
    except torch.cuda.OutOfMemoryError as exc:
        out = None
        error = f"out of memory: {str(exc).splitlines()[0]}"
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    for attr in ("encode_structure", "denoise", "decode"):  # drop this run's timers
        del pipe.__dict__[attr]
    core.apply_color_fix = color_fix
    if cap:
        torch.cuda.set_per_process_memory_fraction(1.0)
    if out is None:
        return {"scenario": name, "error": error, "memory_cap_gb": cap, "precision": args.precision}
    per_step = seconds["sample"] / steps
    row = {"scenario": name, "lr_px": lr_side, "out_px": out_side, "steps": steps, "total_s": round(total, 4),
           "per_step_s": round(per_step, 5), "encode_s": round(seconds["encode"], 4),
           "sample_s": round(seconds["sample"], 4),
           "decode_s": round(seconds["decode_and_fix"] - seconds["color_fix"], 4),
           "color_fix_s": round(seconds["color_fix"], 4),
           "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
           "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
           "precision": args.precision, "tile_batch": args.tile_batch or "auto", "vae_tile": args.vae_tile,
           "compile": args.compile, "offload": args.offload, "channels_last": args.channels_last,
           "memory_cap_gb": cap,
           "out_shape": list(out.images.shape), "device": torch.cuda.get_device_name(),
           "model": "sd21-size random weights"}
    if steps != issue_steps:
        row[f"total_{issue_steps}_s"] = round(total - seconds["sample"] + per_step * issue_steps, 3)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--precision", default="bf16", choices=["fp16", "bf16"])
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

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device; nothing measured (run benchmarks/cpu.py on the CPU)")
        return 0
    from any_size import build_full

    from stablesr.config import DEFAULT_VAE_TILE

    args.vae_tile = args.vae_tile or DEFAULT_VAE_TILE
    torch.manual_seed(0)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    pipe = build_full("cpu" if args.offload else "cuda", dtype)
    pipe.set_progress_bar_config(disable=True)
    if args.channels_last:  # an experiment: convolutions then run NHWC (the tiles stay NCHW)
        for module in pipe.components.values():
            module.to(memory_format=torch.channels_last)
    if args.offload:
        pipe.enable_offload(args.offload, "cuda")
    if args.compile:
        pipe.compile()
    steps = {"A": args.steps_a, "B": 4, "C": args.steps_c, "D": args.steps_d}
    with torch.inference_mode():
        run(pipe, "B", 2, args)  # warm-up: kernels, allocator
        for name in args.scenarios:
            print(json.dumps(run(pipe, name, steps[name], args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
