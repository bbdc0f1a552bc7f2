"""CPU benchmark of the issue-12 scenarios with the tiny golden model, fp32, one JSON line per scenario.

    python benchmarks/cpu.py                      # scenarios A and C, 20 steps, all cores
    python benchmarks/cpu.py --threads 1 --steps 20 --scenarios A C

Scenarios (tiny-model terms: the tiny model's size is 128 px, so its latent tile is 16 with overlap 8,
the analogue of the full-size 64/32):

- ``A``: 128 -> 512 px, DDPM (the issue's 200 steps; ``--steps`` runs fewer and extrapolates ``total_200_s``).
- ``C``: 512 -> 2048 px, the tile path: tiled VAE (``--vae-tile`` px) and latent tiles 16/8.

Each line: ``scenario``, ``total_s``, ``per_step_s``, per-stage seconds (``io_s`` read + write of the
PNGs, ``encode_s``, ``sample_s``, ``decode_s``, ``color_fix_s``), ``network_s`` (time inside the UNet,
time-aware encoder and VAE calls, measured with forward pre/post hooks and timers around the VAE's
encode/decode entry points), ``overhead_share`` ((total - network) / total) and the step count.
``--clock cpu`` measures process CPU time instead of wall time (what the issue's side-by-side uses).
``--one-encoder`` drops the tiny diffusion checkpoint's own VAE, as loading the released pair does (their
two encoders are one), so the tiled VAE encodes each tile once instead of once per encoder.
Timing wrappers are installed on this process's pipeline instance only; the computation is unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from any_size import GOLDEN, build_tiny

SCENARIOS = {"A": (128, 512), "C": (512, 2048)}
OFFICIAL_STEPS = 200


class Timers:
    """Named wall-clock accumulators; ``network`` is only counted at the outermost network call."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth = 0
        self._net_start = 0.0

    def enter_network(self) -> None:
        if self._depth == 0:
            self._net_start = self.clock()
        self._depth += 1

    def leave_network(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds["network"] += self.clock() - self._net_start

    def timed(self, name: str, fn: Callable[..., Any], *, network: bool = False) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if network:
                self.enter_network()
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += self.clock() - start
                if network:
                    self.leave_network()

        return wrapper


def instrument(pipe: Any, timers: Timers) -> None:
    """Stage timers on the pipeline's steps, network timers on its networks (this instance only)."""
    from stablesr.pipeline import core

    # the steered UNet (SFTUNet runs the diffusers blocks itself, so hooks on pipe.unet would never fire)
    for module in (pipe.denoiser.steered, pipe.time_aware_encoder):
        module.register_forward_pre_hook(lambda *_: timers.enter_network())
        module.register_forward_hook(lambda *_: timers.leave_network())
    for vae in {id(v): v for v in (pipe.vae, pipe.struct_vae) if v is not None}.values():
        vae.encode_with_features = timers.timed("vae_encode_net", vae.encode_with_features, network=True)
        vae.decode_fused = timers.timed("vae_decode_net", vae.decode_fused, network=True)
    pipe.encode_structure = timers.timed("encode", pipe.encode_structure)
    pipe.prepare_latents = timers.timed("prepare", pipe.prepare_latents)
    pipe.denoise = timers.timed("sample", pipe.denoise)
    pipe.decode = timers.timed("decode_and_fix", pipe.decode)
    core.apply_color_fix = timers.timed("color_fix", core.apply_color_fix)


def run_scenario(name: str, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from stablesr.imageio.read import read_image
    from stablesr.imageio.write import write_image
    from stablesr.pipeline import core

    lr_side, out_side = SCENARIOS[name]
    color_fix = core.apply_color_fix
    pipe = build_tiny()
    pipe.set_progress_bar_config(disable=True)
    if args.one_encoder:  # as the released pair loads: its two VAE encoders are one, so no struct_vae is kept
        pipe.struct_vae = None
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timers = Timers(clock)
    instrument(pipe, timers)
    tile = pipe.config.sample_size // 8
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lr.png"
        rng = np.random.default_rng(0)
        write_image(src, rng.random((lr_side, lr_side, 3), dtype=np.float32))
        stamps: list[float] = []
        start = clock()
        io_start = clock()
        loaded = read_image(src)
        io_s = clock() - io_start
        out = pipe(loaded.rgb, upscale=out_side / lr_side, num_inference_steps=args.steps, sampler="ddpm",
                   tile_size=tile, tile_overlap=tile // 2, tile_batch_size=args.tile_batch,
                   vae_tile_size=args.vae_tile, output_type="np", generator=torch.Generator().manual_seed(0),
                   callback=lambda i, t, x: stamps.append(clock()))
        io_start = clock()
        write_image(Path(tmp) / "sr.png", out.images[0])
        io_s += clock() - io_start
        total = clock() - start
    core.apply_color_fix = color_fix  # the next scenario installs its own timer
    s = timers.seconds
    steps = len(stamps)
    per_step = s["sample"] / max(1, steps)
    network = s["network"]
    return {
        "scenario": name, "lr_px": lr_side, "out_px": out_side, "steps": steps, "threads": torch.get_num_threads(),
        "total_s": round(total, 4), "per_step_s": round(per_step, 5),
        f"total_{OFFICIAL_STEPS}_s": round(total - s["sample"] + per_step * OFFICIAL_STEPS, 3),
        "io_s": round(io_s, 4), "encode_s": round(s["encode"] + s["prepare"], 4), "sample_s": round(s["sample"], 4),
        "decode_s": round(s["decode_and_fix"] - s["color_fix"], 4), "color_fix_s": round(s["color_fix"], 4),
        "network_s": round(network, 4), "overhead_share": round((total - network) / total, 4),
        "sample_overhead_share": round((s["sample"] - _network_in_sample(s)) / max(s["sample"], 1e-9), 4),
        "vae_s": round(s["vae_encode_net"] + s["vae_decode_net"], 4), "tile_batch": args.tile_batch or "auto",
        "vae_tile": args.vae_tile, "latent_tile": [tile, tile // 2], "out_shape": list(out.images.shape),
        "model": "tiny golden", "precision": "fp32", "clock": args.clock, "one_encoder": args.one_encoder,
    }


def _network_in_sample(s: dict[str, float]) -> float:
    """Network time spent during sampling: all network time minus the VAE calls (which run outside sampling)."""
    return s["network"] - s["vae_encode_net"] - s["vae_decode_net"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--steps", type=int, default=20, help=f"DDPM steps (the issue's {OFFICIAL_STEPS} extrapolated)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (e.g. 1 for the side-by-side)")
    ap.add_argument("--tile-batch", type=int, default=None, help="latent tiles per network call (default: the "
                    "pipeline's)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall time, or this process's CPU "
                    "time (robust on a shared machine; with --threads 1 it is the work done)")
    ap.add_argument("--vae-tile", type=int, default=None, help="VAE tile in px (default: the pipeline's)")
    ap.add_argument("--one-encoder", action="store_true", help="structure and CFW encoder are one network, as in "
                    "the released weights (the tiny ones differ; the official code side by side runs both)")
    args = ap.parse_args()
    import torch

    from stablesr.config import DEFAULT_VAE_TILE

    if args.threads:
        torch.set_num_threads(args.threads)
    args.vae_tile = args.vae_tile or DEFAULT_VAE_TILE
    if not (GOLDEN / "weights" / "tiny_ldm.ckpt").is_file():
        sys.exit(f"benchmarks/cpu.py: tiny golden weights not found under {GOLDEN} (set STABLESR_GOLDEN)")
    torch.manual_seed(0)
    with torch.inference_mode():
        for name in args.scenarios:
            print(json.dumps(run_scenario(name, args)), flush=True)


if __name__ == "__main__":
    main()
