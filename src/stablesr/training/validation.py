"""Validation images during stage 1: fixed degraded inputs, upscaled by the model being trained.

Each image is written as one strip, LR (bicubic to the GT size) | output | GT, to
``OUTPUT/validation/step-<N>.png`` and to the tracker (TensorBoard) when there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._deps import PipelineConfig, PromptEncoder, StableSRPipeline, read_image, write_image
from .data import crop_flip, generator, list_images

VALIDATION = 7  # derived-seed purpose


def validation_pairs(cfg, seed: int, degrader) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(lr, gt) in [0, 1] at the GT size for the first ``num_val_images`` validation (else training) images."""
    dirs = cfg.val_dirs or cfg.train_dirs
    if not dirs or cfg.num_val_images <= 0:
        return None
    files = list_images(dirs)[: cfg.num_val_images]
    gts = torch.stack([crop_flip(read_image(f).rgb, cfg.gt_size, generator(seed, VALIDATION, i), False)
                       for i, f in enumerate(files)])
    gt, lr = degrader(gts, [generator(seed, VALIDATION, 10_000 + i) for i in range(len(files))])
    return lr, gt


@torch.no_grad()
def render_validation(parts, pairs, *, steps: int, seed: int, out_dir: Path, step: int, tracker=None,
                      autocast=None) -> Path:
    """Upscale the validation LRs with the current weights; save (and log) LR | output | GT strips."""
    lr, gt = pairs
    spec = parts.spec
    pipe = StableSRPipeline(parts.unet, parts.sft, parts.encoder, parts.vae,
                            prompt_encoder=PromptEncoder({"": parts.context.detach().cpu()}),
                            config=PipelineConfig(parameterization=spec.parameterization, sample_size=spec.image_size,
                                                  scale_factor=spec.scale_factor, linear_start=spec.linear_start,
                                                  linear_end=spec.linear_end, default_fidelity=0.0))
    pipe.set_progress_bar_config(disable=True)
    dev = next(parts.unet.parameters()).device
    was_training = parts.encoder.training
    parts.encoder.eval()
    try:
        with autocast() if autocast is not None else torch.autocast("cpu", enabled=False):
            out = pipe(lr.to(dev), upscale=1.0, num_inference_steps=steps, color_fix="none", output_type="pt",
                       generator=torch.Generator(dev).manual_seed(seed)).images
    finally:
        parts.encoder.train(was_training)
    out = out.float().cpu().clamp(0, 1)
    strip = torch.cat([torch.cat([lr[i].cpu(), out[i], gt[i].cpu()], dim=-1) for i in range(len(out))], dim=-2)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_image(out_dir / f"step-{step:07d}.png", np.ascontiguousarray(strip.permute(1, 2, 0).numpy()))
    if tracker is not None and hasattr(tracker, "writer"):
        tracker.writer.add_image("validation/lr_output_gt", strip, step)
    return path
