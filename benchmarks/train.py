"""Stage-1 training speed and peak memory: one JSON line per configuration.

    python benchmarks/train.py                # tiny golden model on the CPU (always available)
    python benchmarks/train.py --full-size    # SD-2.1-size random weights, batch 1-4, grad checkpointing off/on (GPU)
    python benchmarks/train.py --trainer      # the whole tiny example run (data, degradation, VAE, loss, AdamW)

Each configuration runs in a fresh subprocess so its peak memory is its own (max resident set on the
CPU, ``torch.cuda.max_memory_allocated`` on a GPU). A step is forward + backward + AdamW of the
trainer's own :class:`Stage1Model` on fixed latents (data and VAE excluded, except with ``--trainer``).
Random weights are fine for speed. Gradient checkpointing may fail with today's SFT hooks (known bug);
such lines carry ``"error"``.
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
GOLDEN = Path(os.environ.get("STABLESR_GOLDEN", REPO.parent / "shared" / "golden"))


def build(full: bool, device: str):
    import torch

    from stablesr.training.base import Stage1Parts, fresh_stablesr_modules, load_stage1
    from stablesr.training.config import ModelConfig

    if not full:
        w = GOLDEN / "weights"
        return load_stage1(ModelConfig(base=str(w / "tiny_ldm.ckpt"), config=str(GOLDEN / "configs" / "tiny_ldm_eps.json"),
                                       prompt_embeds=str(w / "tiny_prompt_embeds.safetensors")))
    from diffusers import UNet2DConditionModel

    from stablesr.checkpoints.official_config import LDMSpec, official_ldm_config

    spec = LDMSpec.from_official(official_ldm_config(512, "eps"))
    with torch.device(device):
        unet = UNet2DConditionModel(**spec.unet)
    sft, enc = fresh_stablesr_modules(unet, spec)
    return Stage1Parts(spec, unet, sft, enc, None, torch.randn(1, 77, 1024), "random")


def run_one(full: bool, batch: int, size: int, checkpointing: bool, steps: int, mixed: str) -> dict:
    import torch

    from stablesr.training.config import SFTTrainConfig
    from stablesr.training.sft import Stage1Model, _optimizer, prepare_parts

    device = "cuda" if torch.cuda.is_available() else "cpu"
    parts = build(full, device)
    parts.vae = parts.vae or torch.nn.Identity()
    parts = prepare_parts(parts, checkpointing)
    model = Stage1Model(parts).to(device)
    parts.unet.to(device)
    opt = _optimizer([p for p in model.parameters() if p.requires_grad], SFTTrainConfig())
    h = size // 8
    z = torch.randn(batch, 4, h, h, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    ctx = parts.context.to(device)
    amp = torch.autocast(device, dtype=torch.bfloat16 if mixed == "bf16" else torch.float16, enabled=mixed != "no")
    line = {"bench": "train_stage1", "model": "full-512" if full else "tiny", "device": device, "batch": batch,
            "size": size, "gradient_checkpointing": checkpointing, "mixed_precision": mixed,
            "threads": torch.get_num_threads()}
    try:
        times = []
        for i in range(steps + 2):  # two warm-up steps
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with amp:
                loss, _ = model(z, z, t, torch.randn_like(z), ctx)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        line["steps_per_s"] = round(len(times) / sum(times), 3)
        line["samples_per_s"] = round(batch * len(times) / sum(times), 3)
    except Exception as e:  # noqa: BLE001 - reported in the JSON line
        line["error"] = f"{type(e).__name__}: {str(e)[:160]}"
    if device == "cuda":
        line["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        line["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return line


def run_trainer_example() -> dict:
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    from stablesr.training.config import SFTTrainConfig, load_config
    from stablesr.training.sft import train_sft

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(SFTTrainConfig, REPO / "examples" / "train_tiny.yaml",
                          {"output_dir": tmp, "log_with": None, "validation_steps": 0, "checkpointing_steps": 0,
                           "export_official": False})
        t0 = time.perf_counter()
        r = train_sft(cfg)
        wall = time.perf_counter() - t0
    return {"bench": "train_tiny_example", "steps": r.global_step, "steps_per_s": round(r.steps_per_second, 3),
            "wall_s_incl_load_export": round(wall, 1), "samples_per_step": cfg.train_batch_size *
            cfg.gradient_accumulation_steps, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                   / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--trainer", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))), flush=True)
        return
    if args.trainer:
        print(json.dumps(run_trainer_example()), flush=True)
        return
    if args.full_size:
        configs = [{"full": True, "batch": b, "size": 512, "checkpointing": c, "steps": args.steps,
                    "mixed": args.mixed_precision} for c in (False, True) for b in (1, 2, 4)]
    else:
        configs = [{"full": False, "batch": b, "size": s, "checkpointing": False, "steps": args.steps,
                    "mixed": args.mixed_precision} for b in (2, 4) for s in (64, 128)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for c in configs:
        res = subprocess.run([sys.executable, __file__, "--one", json.dumps(c)], env=env, capture_output=True,
                             text=True, check=False)
        out = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        print(out[-1] if out else json.dumps({"config": c, "error": res.stderr.strip().splitlines()[-1:]}), flush=True)


if __name__ == "__main__":
    main()
