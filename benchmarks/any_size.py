"""Time per sampling step and peak memory vs output size, tile batch 1 vs batched.

    python benchmarks/any_size.py                 # tiny golden model on the CPU (always available)
    python benchmarks/any_size.py --full-size     # SD-2.1-size random weights (GPU: fp16; needs a GPU to be quick)

Each configuration runs in a fresh subprocess so that peak memory is its own: the process's
maximum resident set on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. Random weights
are fine for speed (it does not depend on values). Tile batch 1 is how the official code
runs progressive aggregation sampling (one tile per network call).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STABLESR_SHARED", REPO.parent / "shared"))  # as the tests find it
GOLDEN = Path(os.environ.get("STABLESR_GOLDEN", SHARED / "golden"))


def build_tiny():
    from stablesr.pipeline import StableSRPipeline

    w = GOLDEN / "weights"
    return StableSRPipeline.from_single_file(w / "tiny_ldm.ckpt", w / "tiny_cfw.ckpt",
                                             config=GOLDEN / "configs" / "tiny_ldm_eps.json",
                                             prompt_embeds=w / "tiny_prompt_embeds.safetensors")


def build_full(device: str, dtype):
    """SD-2.1-size StableSR modules with random weights (no download needed)."""
    import torch
    from diffusers import UNet2DConditionModel

    from stablesr.checkpoints.convert import sft_config
    from stablesr.checkpoints.official_config import LDMSpec, cfw_vae_config, official_cfw_config, official_ldm_config
    from stablesr.config import ModelConfig
    from stablesr.models.cfw import CFWAutoencoderKL
    from stablesr.models.sft import SFTAdapter
    from stablesr.models.text import PromptEncoder
    from stablesr.models.time_aware_encoder import TimeAwareEncoder
    from stablesr.pipeline import StableSRPipeline

    spec = LDMSpec.from_official(official_ldm_config(512, "eps"))
    with torch.device(device):
        unet = UNet2DConditionModel(**spec.unet)
        sft = SFTAdapter(**sft_config(unet, spec))
        enc = TimeAwareEncoder(**spec.encoder)
        vae = CFWAutoencoderKL(**cfw_vae_config(official_cfw_config()))
    for m in (unet, sft, enc, vae):
        m.eval().requires_grad_(False)
    pipe = StableSRPipeline(unet, sft, enc, vae, prompt_encoder=PromptEncoder({"": torch.randn(77, 1024)}),
                            config=ModelConfig(sample_size=512))
    return pipe.to(device, dtype)


def measure(args: argparse.Namespace) -> dict:
    """One configuration, in this process."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    pipe = build_full(args.device, dtype) if args.full_size else build_tiny().to(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    model_px = pipe.config.sample_size
    lr_side = max(1, args.size // 4)
    lr = np.random.default_rng(0).random((lr_side, lr_side, 3), dtype=np.float32)
    stamps: list[float] = []

    def tick(i, t, x):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = pipe(lr, upscale=args.size / lr_side, num_inference_steps=args.steps, tile_batch_size=args.tile_batch,
               vae_tile_size=args.vae_tile, callback=tick, output_type="np",
               generator=torch.Generator().manual_seed(0))
    total = time.perf_counter() - start
    per_step = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1) if len(stamps) > 1 else total
    latent = args.size // 8
    tile = model_px // 8
    from stablesr.tiling import tile_starts

    n_tiles = len(tile_starts(latent, tile, tile // 2)) ** 2
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"size": args.size, "tile_batch": args.tile_batch, "tiles_per_step": n_tiles, "s_per_step": per_step,
            "total_s": total, "peak_mib": peak / 2**20, "out_shape": list(out.images.shape), "device": args.device,
            "precision": args.precision, "model": "sd21-size random" if args.full_size else "tiny golden"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full-size", action="store_true", help="SD-2.1-size random weights instead of the tiny model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--tile-batches", type=int, nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--vae-tile", type=int, default=1024)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    ap.add_argument("--tile-batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.precision = args.precision or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.one:
        print(json.dumps(measure(args)))
        return
    cuda = args.device.startswith("cuda")
    sizes = args.sizes or ([512, 1024, 2048, 4096] if cuda else [512, 1024, 2048])
    batches = args.tile_batches or ([1, 16] if cuda else [1, 8])
    rows = []
    print(f"{'model':<17} {'device':<6} {'prec':<5} {'output':>7} {'tiles/step':>10} {'tile batch':>10} "
          f"{'s/step':>8} {'total s':>8} {'peak MiB':>9}")
    for size in sizes:
        for tb in batches:
            cmd = [sys.executable, __file__, "--one", "--size", str(size), "--tile-batch", str(tb), "--steps",
                   str(args.steps), "--device", args.device, "--precision", args.precision, "--vae-tile",
                   str(args.vae_tile)] + (["--full-size"] if args.full_size else [])
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(f"{size}px tile batch {tb}: failed: {res.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{r['model']:<17} {r['device']:<6} {r['precision']:<5} {size:>7} {r['tiles_per_step']:>10} "
                  f"{tb:>10} {r['s_per_step']:>8.3f} {r['total_s']:>8.2f} {r['peak_mib']:>9.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
