"""Stage 1 (``stablesr train sft``): train the time-aware encoder and SFT layers on a frozen SD-2.x UNet.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``train_batch_size`` per process:

1. GT crops (data.py) -> Real-ESRGAN degradation (degrade.py) -> training-pair pool -> [-1, 1];
2. both images through the frozen VAE (posterior sample x 0.18215);
3. ``t ~ U{0..999}``, ``eps ~ N(0, I)``, the loss of :func:`stage1_loss` (eps or v target);
4. AdamW on the trained parts (DDP-averaged gradients), optional EMA, logging, checkpoints, validation.

All randomness except the pool's shuffle is keyed by the sample's global index (see data.py), so a
run resumed from a checkpoint is bit-identical to an uninterrupted one.

Example:
    >>> cfg = load_config(SFTTrainConfig, "examples/train_tiny.yaml", {"output_dir": "out"})  # doctest: +SKIP
    >>> result = train_sft(cfg)  # doctest: +SKIP
    >>> result.model_dir  # doctest: +SKIP
    PosixPath('out/model')
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._deps import CFWAutoencoderKL, DiffusionSchedule, StableSRDenoiser, StableSRError
from .base import Stage1Parts, load_stage1
from .config import SFTTrainConfig, to_dict
from .data import DEGRADE, DIFFUSION, POOL, POSTERIOR, PairPool, generator, gt_loader
from .degrade import Degrader
from .losses import stage1_loss
from .state import load_checkpoint, log_step, make_accelerator, resolve_resume, save_checkpoint, write_json_atomic

MODEL_DIR = "model"  # the pipeline folder `upscale --checkpoint` reads
OFFICIAL_FILE = "stablesr_sft.ckpt"  # the official-layout export


class Stage1Model(nn.Module):
    """What DDP wraps: the trained encoder and SFT layers. The frozen UNet is held unregistered, so it is
    neither broadcast nor saved in training checkpoints; the loss is :func:`stage1_loss`, the only place it lives."""

    def __init__(self, parts: Stage1Parts) -> None:
        super().__init__()
        self.time_aware_encoder, self.sft_adapter = parts.encoder, parts.sft
        object.__setattr__(self, "_denoiser", StableSRDenoiser(parts.unet, parts.sft, parts.encoder))
        spec = parts.spec
        self.schedule = DiffusionSchedule.respaced(spec.time_replace, spec.linear_start, spec.linear_end)
        self.parameterization = spec.parameterization

    def forward(self, lr_latent, hr_latent, t_index, noise, context):
        return stage1_loss(self._denoiser, lr_latent, hr_latent, t_index, noise, context, self.schedule,
                           self.parameterization)


def prepare_parts(parts: Stage1Parts, gradient_checkpointing: bool = False) -> Stage1Parts:
    """Freeze UNet and VAE (eval mode); the encoder and SFT layers train."""
    parts.unet.eval().requires_grad_(False)
    parts.vae.eval().requires_grad_(False)
    for m in parts.trainable_modules().values():
        m.train().requires_grad_(True)
    if gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        parts.unet.train()  # diffusers only checkpoints in training mode; the UNet has no dropout/BN to change
    return parts


@torch.no_grad()
def encode_latents(vae: CFWAutoencoderKL, images: torch.Tensor, gens: list[torch.Generator],
                   scale_factor: float) -> torch.Tensor:
    """``scale_factor * posterior sample`` of ``images`` in [-1, 1], one noise generator per row."""
    enc = vae.encode_with_features(images.to(vae.dtype))
    shape = enc.mean.shape[1:]
    noise = torch.cat([torch.randn((1, *shape), generator=g) for g in gens]).to(enc.mean.device)
    # contiguous: a strided latent (a chunk of the moments) crashes some CPU conv backward kernels in torch 2.13
    return (enc.sample(noise) * scale_factor).float().contiguous()


def diffusion_draws(indices: torch.Tensor, seed: int, shape: tuple[int, ...], num_timesteps: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``t ~ U{0..T-1}`` and ``eps ~ N(0, I)`` from each sample's own generator."""
    ts, eps = [], []
    for g in (generator(seed, DIFFUSION, int(i)) for i in indices):
        ts.append(torch.randint(0, num_timesteps, (1,), generator=g))
        eps.append(torch.randn((1, *shape), generator=g))
    return torch.cat(ts), torch.cat(eps)


@dataclass
class TrainResult:
    global_step: int
    losses: list[float] = field(default_factory=list)  # the mean loss of every optimizer step of this run
    model_dir: Path | None = None
    official_ckpt: Path | None = None
    skipped: list[str] = field(default_factory=list)
    steps_per_second: float = 0.0


def _optimizer(params, cfg) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def _scheduler(optimizer, cfg):
    from diffusers.optimization import get_scheduler

    return get_scheduler(cfg.optim.lr_scheduler, optimizer=optimizer, num_warmup_steps=cfg.optim.lr_warmup_steps,
                         num_training_steps=cfg.max_steps)


def _ema(params, decay: float | None):
    if not decay:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=decay)


def train_sft(cfg: SFTTrainConfig, *, stop_after: int | None = None, parts: Stage1Parts | None = None) -> TrainResult:
    """Run (or resume) stage 1. ``stop_after`` ends this invocation after that many optimizer steps
    (a deliberate interruption, as a killed job would); the run continues with ``resume_from_checkpoint``."""
    acc = make_accelerator(cfg)
    out = Path(cfg.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # freshly initialised encoder / SFT layers are the same in every run of a seed
    parts = prepare_parts(parts or load_stage1(cfg.model), cfg.gradient_checkpointing)
    dev = acc.device
    parts.unet.to(dev)
    parts.vae.to(dev)
    context = parts.context.to(dev)
    model = Stage1Model(parts).to(dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, cfg)
    scheduler = _scheduler(optimizer, cfg)
    model, optimizer = acc.prepare(model, optimizer)
    ema = _ema(trainable, cfg.ema_decay)
    pool = PairPool(cfg.data.queue_size)
    degrader = Degrader(cfg.data.degradation, use_usm=cfg.data.use_usm,
                        no_degradation_prob=cfg.data.no_degradation_prob)

    step, micro = 0, 0
    resume = resolve_resume(out, cfg.resume_from_checkpoint)
    if resume is not None:
        state, extra, rank_state = load_checkpoint(acc, resume)
        step, micro = int(state["global_step"]), int(state["micro_step"])
        scheduler.load_state_dict(extra["scheduler"])
        if ema is not None and "ema" in extra:
            ema.load_state_dict(extra["ema"])
        if "pool" in rank_state:
            pool.load_state_dict({k: (v.to(dev) if isinstance(v, torch.Tensor) else v)
                                  for k, v in rank_state["pool"].items()})
        acc.print(f"resumed from {resume} at step {step}")
    if acc.is_main_process:
        write_json_atomic(out / "train_config.json", to_dict(cfg))
        if cfg.log_with:
            acc.init_trackers("stablesr-sft", config={k: str(v) for k, v in to_dict(cfg).items()})
    loader = gt_loader(cfg.data, cfg.seed, cfg.train_batch_size, acc.process_index, acc.num_processes, micro)
    val_pairs = None
    if acc.is_main_process and cfg.validation_steps > 0:
        from .validation import validation_pairs

        val_pairs = validation_pairs(cfg.data, cfg.seed, degrader)

    result = TrainResult(global_step=step)
    target = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    sched_len = len(model.module.schedule if hasattr(model, "module") else model.schedule)
    accum_losses: list[torch.Tensor] = []
    started = time.perf_counter()
    steps_this_run = 0
    batches = iter(loader)
    while step < target:
        batch = next(batches)
        result.skipped += batch["skipped"]
        index = batch["index"]
        gt, lr = degrader(batch["gt"].to(dev), [generator(cfg.seed, DEGRADE, int(i)) for i in index])
        lr, gt = pool(lr, gt, generator(cfg.seed, POOL, micro, acc.process_index))
        lr, gt = (lr * 2 - 1).clamp(-1, 1), gt * 2 - 1
        with acc.autocast():
            z_lr = encode_latents(parts.vae, lr, [generator(cfg.seed, POSTERIOR, int(i), 0) for i in index],
                                  parts.spec.scale_factor)
            z_gt = encode_latents(parts.vae, gt, [generator(cfg.seed, POSTERIOR, int(i), 1) for i in index],
                                  parts.spec.scale_factor)
        t_index, noise = diffusion_draws(index, cfg.seed, tuple(z_gt.shape[1:]), sched_len)
        with acc.accumulate(model):
            loss, logs = model(z_lr, z_gt, t_index.to(dev), noise.to(dev), context)
            if not torch.isfinite(loss):
                raise StableSRError(f"loss is {loss.item()} at step {step}; lower optim.lr or use bf16 over fp16")
            acc.backward(loss)
            grad_norm = None
            if acc.sync_gradients and cfg.optim.max_grad_norm:
                grad_norm = acc.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        accum_losses.append(loss.detach())
        if not acc.sync_gradients:
            continue
        scheduler.step()
        step += 1
        steps_this_run += 1
        if ema is not None:
            ema.step(trainable)
        step_loss = acc.gather(torch.stack(accum_losses).mean()[None]).mean().item()
        accum_losses.clear()
        result.losses.append(step_loss)
        if step % max(1, cfg.logging_steps) == 0 or step == 1:
            entry = {"train/loss": step_loss, "train/loss_vlb": logs["train/loss_vlb"].item(),
                     "lr": scheduler.get_last_lr()[0]}
            if grad_norm is not None:
                entry["train/grad_norm"] = float(grad_norm)
            log_step(acc, cfg, out, step, entry)
        if cfg.checkpointing_steps > 0 and step % cfg.checkpointing_steps == 0:
            _checkpoint(acc, cfg, step, micro, scheduler, ema, pool)
        if val_pairs is not None and step % cfg.validation_steps == 0:
            _validate(acc, cfg, parts, val_pairs, step, ema, trainable)
        acc.wait_for_everyone()
    elapsed = time.perf_counter() - started
    result.global_step = step
    result.steps_per_second = steps_this_run / elapsed if elapsed > 0 else math.nan
    if stop_after is None or step >= cfg.max_steps:
        if cfg.checkpointing_steps > 0 and step % cfg.checkpointing_steps:
            _checkpoint(acc, cfg, step, micro, scheduler, ema, pool)
        result.model_dir, result.official_ckpt = _export(acc, cfg, parts, ema, trainable)
    acc.end_training()
    if result.skipped and acc.is_main_process:
        acc.print(f"skipped {len(result.skipped)} unreadable training image(s): " + "; ".join(result.skipped[:5]))
    return result


def _checkpoint(acc, cfg, step, micro, scheduler, ema, pool) -> None:
    state = {"global_step": step, "micro_step": micro, "num_processes": acc.num_processes, "stage": "sft"}
    extra = {"scheduler": scheduler.state_dict()}
    if ema is not None:
        extra["ema"] = ema.state_dict()
    rank_state = {"pool": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in pool.state_dict().items()
                           if v is not None}}
    save_checkpoint(acc, cfg.output_dir, step, state, extra, rank_state, cfg.checkpoints_total_limit)


class _EMAWeights:
    """Temporarily swap the EMA weights into the trained modules (no-op without EMA)."""

    def __init__(self, ema, params) -> None:
        self.ema, self.params = ema, params

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.params)


def _validate(acc, cfg, parts, pairs, step, ema, params) -> None:
    if not acc.is_main_process:
        return
    from .validation import render_validation

    tracker = acc.get_tracker("tensorboard", unwrap=False) if cfg.log_with == "tensorboard" else None
    with _EMAWeights(ema, params):
        render_validation(parts, pairs, steps=cfg.validation_sampling_steps, seed=cfg.seed,
                          out_dir=Path(cfg.output_dir) / "validation", step=step, tracker=tracker,
                          autocast=acc.autocast)


def _export(acc, cfg, parts, ema, params) -> tuple[Path | None, Path | None]:
    """Write OUTPUT/model (pipeline folder) and OUTPUT/stablesr_sft.ckpt (official layout), EMA weights if kept."""
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return None, None
    from .export import official_state_dict, save_official_ckpt, save_official_companions, save_stage1_pipeline

    out = Path(cfg.output_dir)
    cfw = None
    if cfg.model.cfw_checkpoint:
        from .base import load_cfw_file

        cfw = load_cfw_file(cfg.model.cfw_checkpoint, cfg.model.cfw_config, parts.spec.image_size)
    with _EMAWeights(ema, params):
        model_dir = save_stage1_pipeline(parts, out / MODEL_DIR, cfw=cfw)
        official = None
        if cfg.export_official:
            sd = official_state_dict(parts.unet, parts.sft, parts.encoder, parts.vae, parts.spec, parts.text_official)
            official = save_official_ckpt(sd, out / OFFICIAL_FILE)
            save_official_companions(parts, cfg.model.config, out / OFFICIAL_FILE)
    return model_dir, official
