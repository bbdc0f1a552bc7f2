"""``stablesr make-cfw-data``: stage-2 training data from a stage-1 model (OFFICIAL.md 6.3).

For pair ``k`` (numbered from ``base_index``): a GT crop and its Real-ESRGAN degradation (USM on,
no queue), then DDPM sampling (``ddpm_steps`` respaced steps) from the LR latent noised to t=999,
decoded with the PLAIN VAE decoder. Written in the official layout::

    OUT/gts/%08d.png       the (sharpened) GT
    OUT/inputs/%08d.png    the degraded LR, bicubic-resized to the GT size
    OUT/latents/%08d.npy   the generated scaled latent, (1, 4, h, w) float32
    OUT/samples/%08d.png   its plain-VAE decoding

Process ``r`` of ``W`` (``torchrun`` / ``accelerate launch`` set RANK / WORLD_SIZE) makes the pairs
with ``k % W == r``. A pair whose four files exist is skipped, so a rerun resumes; every file is
written atomically. Each pair's randomness depends only on ``seed`` and ``k``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._deps import (
    Conditioning,
    DiffusionSchedule,
    NoiseSource,
    StableSRDenoiser,
    StableSRPipeline,
    TextConditioning,
    q_sample,
    sample_ddpm,
    write_image,
)
from .config import MakeCFWDataConfig
from .data import DEGRADE, DIFFUSION, POSTERIOR, ImageFolderGT, generator, list_images
from .degrade import Degrader
from .sft import encode_latents

SUBDIRS = ("gts", "inputs", "latents", "samples")


class RowNoise(NoiseSource):
    """Gaussian draws where row ``i`` always comes from generator ``i`` (independent of batching)."""

    def __init__(self, generators: list[torch.Generator]) -> None:
        super().__init__(None)
        self.generators = generators

    def draw(self, shape, like: torch.Tensor) -> torch.Tensor:
        rows = [torch.randn((1, *shape[1:]), generator=g) for g in self.generators]
        return torch.cat(rows).to(device=like.device, dtype=like.dtype)


@dataclass
class DataReport:
    written: int = 0
    existing: int = 0
    skipped: int = 0  # NaN outputs (official: not written)


def _stage1_networks(cfg: MakeCFWDataConfig):
    """(unet, sft, encoder, plain VAE, context, parameterization, scale_factor) from a file or a pipeline folder."""
    base = Path(cfg.model.base)
    if base.is_dir() and (base / "model_index.json").is_file():
        pipe = StableSRPipeline.from_pretrained(base)
        vae = pipe.struct_vae if pipe.struct_vae is not None else pipe.vae  # decoded without fusion (w = 0)
        c = pipe.config
        return pipe.unet, pipe.sft_adapter, pipe.time_aware_encoder, vae, pipe.encode_prompt(""), \
            c.parameterization, c.scale_factor, (c.linear_start, c.linear_end)
    from .base import load_stage1

    p = load_stage1(cfg.model)
    s = p.spec
    return p.unet, p.sft, p.encoder, p.vae, p.context, s.parameterization, s.scale_factor, (s.linear_start,
                                                                                            s.linear_end)


def _pair_paths(out: Path, k: int) -> dict[str, Path]:
    return {d: out / d / f"{k:08d}.{'npy' if d == 'latents' else 'png'}" for d in SUBDIRS}


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _png(path: Path, chw: torch.Tensor) -> None:
    write_image(path, np.ascontiguousarray(chw.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()))


@torch.no_grad()
def make_cfw_data(cfg: MakeCFWDataConfig, *, rank: int | None = None, world: int | None = None) -> DataReport:
    """Generate (or complete) this process's share of the CFW training pairs."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.output_dir)
    for d in SUBDIRS:
        (out / d).mkdir(parents=True, exist_ok=True)
    todo = [k for k in range(cfg.base_index, cfg.base_index + cfg.num_images) if k % world == rank]
    report = DataReport()
    pending = []
    for k in todo:
        if all(p.is_file() for p in _pair_paths(out, k).values()):
            report.existing += 1
        else:
            pending.append(k)
    if not pending:
        return report
    unet, sft, encoder, vae, context, param, scale, (ls, le) = _stage1_networks(cfg)
    for m in (unet, sft, encoder, vae):
        m.to(dev).eval()
    denoiser = StableSRDenoiser(unet, sft, encoder)
    text = TextConditioning(context.to(dev))
    sched = DiffusionSchedule.respaced(cfg.ddpm_steps, ls, le)
    base = DiffusionSchedule.base(ls, le)
    dataset = ImageFolderGT(list_images(cfg.data.train_dirs, cfg.data.face_dirs, cfg.data.num_face),
                            cfg.data.gt_size, cfg.seed, hflip=cfg.data.use_hflip, min_side=cfg.data.min_side)
    degrader = Degrader(cfg.data.degradation, use_usm=cfg.data.use_usm, no_degradation_prob=0.0)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float16,
                              enabled=cfg.mixed_precision in ("fp16", "bf16"))
    for start in range(0, len(pending), cfg.batch_size):
        ks = pending[start:start + cfg.batch_size]
        gt = torch.stack([dataset[k]["gt"] for k in ks]).to(dev)
        gt, lr = degrader(gt, [generator(cfg.seed, DEGRADE, k) for k in ks])
        with autocast:
            z_lr = encode_latents(vae, (lr * 2 - 1).clamp(-1, 1), [generator(cfg.seed, POSTERIOR, k) for k in ks],
                                  scale)
            noise = RowNoise([generator(cfg.seed, DIFFUSION, k) for k in ks])
            x_t = q_sample(z_lr, 999, noise.draw(z_lr.shape, like=z_lr), base)
            cond = Conditioning(z_lr, text)
            latent = sample_ddpm(lambda x, t, c=cond: denoiser(x, t, c), x_t, sched, param, noise).float()
            sample = vae.decode_fused(latent / scale).float()
        for i, k in enumerate(ks):
            if torch.isnan(latent[i]).any() or torch.isnan(sample[i]).any():
                report.skipped += 1
                continue
            paths = _pair_paths(out, k)
            _png(paths["gts"], gt[i])
            _png(paths["inputs"], lr[i])
            _save_npy(paths["latents"], latent[i:i + 1].cpu().numpy().astype(np.float32))
            _png(paths["samples"], (sample[i] + 1) / 2)
            report.written += 1
    return report
