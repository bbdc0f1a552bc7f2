"""Stage 2 (``stablesr train cfw``): train only the CFW fusion layers (OFFICIAL.md 6.4).

Per pair from ``make-cfw-data``: ``features = encoder(lq)`` (frozen), ``rec = decoder(latent, features, w)``
with the decoder frozen except ``fusion_layers``. Generator loss ``mean(|gt - rec| + LPIPS(gt, rec)) / B
- 0.025 * f(step) * mean(D(rec))``; discriminator hinge loss ``f(step) * 0.5 * (relu(1 - D(gt)) + relu(1 +
D(rec)))`` with ``f = 0`` before ``disc_start`` (501). Two Adam optimizers (lr 5e-5, betas 0.5/0.9).

Outputs: ``OUT/cfw`` (our folder, safetensors), ``OUT/stablesr_cfw.ckpt`` (official layout, loads with
``upscale --cfw-checkpoint``) and, with ``pipeline`` (a stage-1 model folder), ``OUT/model`` = that
pipeline decoding with the trained CFW.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._deps import CFWAutoencoderKL, CheckpointError, StableSRError, load_state_dict, read_image
from .base import load_cfw_file
from .config import CFWTrainConfig, to_dict
from .data import EPOCH_ORDER, RankSampler, generator
from .perceptual import LPIPS, PatchDiscriminator, hinge_d_loss
from .state import load_checkpoint, log_step, make_accelerator, resolve_resume, save_checkpoint, write_json_atomic

CFW_DIR, CFW_FILE = "cfw", "stablesr_cfw.ckpt"
SCALE_FACTOR = 0.18215


class CFWPairs(Dataset):
    """``gts/ inputs/ latents/ samples/`` of one folder (sorted, equal counts); key = global sample index."""

    def __init__(self, root: str, seed: int) -> None:
        r = Path(root)
        self.files = {d: sorted(p for p in (r / d).glob("*") if not p.name.startswith(".")) if (r / d).is_dir()
                      else [] for d in ("gts", "inputs", "latents")}
        counts = {d: len(v) for d, v in self.files.items()}
        if not counts["gts"] or len(set(counts.values())) != 1:
            raise StableSRError(f"{r}: expected equal, non-zero numbers of gts/, inputs/, latents/ files, got {counts}")
        self.seed, self._order = seed, None

    def __len__(self) -> int:
        return len(self.files["gts"])

    def __getitem__(self, g: int) -> dict:
        epoch, pos = divmod(g, len(self))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(len(self), generator=generator(self.seed, EPOCH_ORDER, epoch)))
        i = int(self._order[1][pos])
        img = {d: torch.from_numpy(read_image(self.files[d][i]).rgb).permute(2, 0, 1) for d in ("gts", "inputs")}
        latent = torch.from_numpy(np.load(self.files["latents"][i])[0].astype(np.float32))
        return {"gt": img["gts"], "lq": img["inputs"], "latent": latent, "index": g}


class FusionModel(nn.Module):
    """What DDP wraps: the fusion layers; the frozen CFW autoencoder rides along unregistered."""

    def __init__(self, vae: CFWAutoencoderKL, w: float) -> None:
        super().__init__()
        self.fusion_layers = vae.fusion_layers
        object.__setattr__(self, "_vae", vae)
        self.w = w

    def forward(self, lq: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self._vae.encode_with_features(lq).features
        return self._vae.decode_fused(latent / SCALE_FACTOR, features, self.w)


class DiscriminatorLoss(nn.Module):
    """Both discriminator calls in one forward (one DDP forward per step; BatchNorm sees real and fake apart)."""

    def __init__(self, disc: PatchDiscriminator) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, gt: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        return hinge_d_loss(self.disc(gt), self.disc(rec))


def load_cfw_base(path: str, config: str | None = None) -> CFWAutoencoderKL:
    """An official CFW checkpoint (fine-tune), or any official-layout VAE / SD / StableSR file (fresh fusion layers)."""
    sd = load_state_dict(path)
    if any(k.startswith("decoder.fusion_layer_") for k in sd):
        return load_cfw_file(path, config)
    if any(k.startswith("first_stage_model.") for k in sd):
        sd = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    plain = load_cfw_file(path, config, state_dict=sd)  # the one official-VAE loader; messages name the file
    cfw = CFWAutoencoderKL(**{**plain.config, "fusion": True})
    missing, unexpected = cfw.load_state_dict(plain.state_dict(), strict=False)
    if unexpected or any(not k.startswith("fusion_layers.") for k in missing):
        raise CheckpointError(f"{path}: VAE weights do not fit the CFW architecture")
    return cfw


@dataclass
class CFWResult:
    global_step: int
    losses: list[dict] = field(default_factory=list)
    model_dir: Path | None = None
    official_ckpt: Path | None = None


def _collate(items: list[dict]) -> dict:
    return {k: torch.stack([i[k] for i in items]) if k != "index" else torch.tensor([i[k] for i in items])
            for k in items[0]}


def check_cfw_config(cfg: CFWTrainConfig) -> None:
    """Refuse, before any work, settings stage 2 does not use (they would be silently ignored) and a
    ``pipeline`` that is not a model folder (found only at the export otherwise, after the whole run)."""
    from ._deps import looks_like_repo_id

    o, defaults = cfg.optim, CFWTrainConfig().optim
    unused = {"ema_decay": cfg.ema_decay is not None, "gradient_checkpointing": cfg.gradient_checkpointing,
              "optim.lr_scheduler": o.lr_scheduler != defaults.lr_scheduler,
              "optim.lr_warmup_steps": o.lr_warmup_steps != defaults.lr_warmup_steps,
              "optim.weight_decay": o.weight_decay != defaults.weight_decay}
    named = [name for name, is_set in unused.items() if is_set]
    if named:
        raise StableSRError(f"train cfw does not use {', '.join(named)} (stage 2 is Adam at a constant lr on the "
                            "fusion layers, as the official recipe); remove them")
    if cfg.pipeline and not (Path(cfg.pipeline) / "model_index.json").is_file() and not (
            looks_like_repo_id(cfg.pipeline) and not Path(cfg.pipeline).exists()):
        raise StableSRError(f"pipeline {cfg.pipeline}: not a stablesr model folder (no model_index.json); give "
                            "the stage-1 output's model/ folder")


def train_cfw(cfg: CFWTrainConfig, *, stop_after: int | None = None) -> CFWResult:
    """Run (or resume) stage 2; ``stop_after`` ends this invocation early (see :func:`train_sft`)."""
    check_cfw_config(cfg)
    acc = make_accelerator(cfg)
    out = Path(cfg.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    dev = acc.device
    torch.manual_seed(cfg.seed)  # fresh fusion layers, the discriminator's N(0, 0.02), a test-mode random VGG
    vae = load_cfw_base(cfg.base, cfg.cfw_config).to(dev).eval().requires_grad_(False)
    vae.fusion_layers.train().requires_grad_(True)
    lpips = LPIPS(cfg.loss.vgg_weights, cfg.loss.lpips_weights, allow_random=cfg.loss.allow_random_lpips).to(dev)
    disc = PatchDiscriminator(channels=cfg.loss.disc_channels, layers=cfg.loss.disc_layers).to(dev)
    gen_model, disc_model = FusionModel(vae, cfg.fusion_w), DiscriminatorLoss(disc)
    o = cfg.optim
    opt_g = torch.optim.Adam(gen_model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    opt_d = torch.optim.Adam(disc_model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    gen_model, disc_model, opt_g, opt_d = acc.prepare(gen_model, disc_model, opt_g, opt_d)
    step, micro = 0, 0
    resume = resolve_resume(out, cfg.resume_from_checkpoint)
    if resume is not None:
        state, _, _ = load_checkpoint(acc, resume)
        step, micro = int(state["global_step"]), int(state["micro_step"])
    if acc.is_main_process:
        write_json_atomic(out / "train_config.json", to_dict(cfg))
        if cfg.log_with:
            acc.init_trackers("stablesr-cfw", config={k: str(v) for k, v in to_dict(cfg).items()})
    ds = CFWPairs(cfg.data.root, cfg.seed)
    loader = DataLoader(ds, batch_size=cfg.train_batch_size, collate_fn=_collate, num_workers=cfg.data.num_workers,
                        sampler=RankSampler(cfg.train_batch_size, acc.process_index, acc.num_processes, micro))
    raw_disc = acc.unwrap_model(disc_model).disc
    result = CFWResult(global_step=step)
    target = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    batches = iter(loader)
    while step < target:
        b = next(batches)
        gt, lq, latent = (b["gt"].to(dev) * 2 - 1), (b["lq"].to(dev) * 2 - 1), b["latent"].to(dev)
        factor = cfg.loss.disc_factor if step >= cfg.loss.disc_start else 0.0
        with acc.accumulate(gen_model, disc_model):
            rec = gen_model(lq, latent)
            rec_loss = (gt - rec).abs() + cfg.loss.perceptual_weight * lpips(gt, rec)
            nll = rec_loss.mean() / rec.shape[0]  # official: the mean, divided once more by the batch size
            g_loss = torch.zeros((), device=dev)
            if factor > 0:
                raw_disc.requires_grad_(False)  # the generator's pass gives the discriminator no gradients
                g_loss = -raw_disc(rec).mean()
                raw_disc.requires_grad_(True)
            loss_g = nll + cfg.loss.disc_weight * factor * g_loss
            acc.backward(loss_g)
            loss_d = factor * disc_model(gt.detach(), rec.detach())
            acc.backward(loss_d)
            if acc.sync_gradients and cfg.optim.max_grad_norm:
                acc.clip_grad_norm_(gen_model.parameters(), cfg.optim.max_grad_norm)
            opt_g.step()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
        micro += 1
        if not acc.sync_gradients:
            continue
        step += 1
        entry = {"train/rec_loss": rec_loss.mean().item(), "train/nll_loss": nll.item(),
                 "train/g_loss": g_loss.item(), "train/disc_loss": loss_d.item(), "train/disc_factor": factor}
        result.losses.append(entry)
        if step % max(1, cfg.logging_steps) == 0 or step == 1:
            log_step(acc, cfg, out, step, entry)
        if cfg.checkpointing_steps > 0 and step % cfg.checkpointing_steps == 0:
            save_checkpoint(acc, out, step, {"global_step": step, "micro_step": micro, "stage": "cfw",
                                             "num_processes": acc.num_processes}, {}, {}, cfg.checkpoints_total_limit)
    result.global_step = step
    if stop_after is None or step >= cfg.max_steps:
        acc.wait_for_everyone()
        if acc.is_main_process:
            result.model_dir, result.official_ckpt = _export(cfg, vae, raw_disc)
    acc.end_training()
    return result


def _export(cfg: CFWTrainConfig, vae: CFWAutoencoderKL, disc: nn.Module) -> tuple[Path, Path | None]:
    from .export import official_vae_keys, save_official_ckpt

    out = Path(cfg.output_dir)
    vae.save_pretrained(out / CFW_DIR, safe_serialization=True)
    official = None
    if cfg.export_official:
        sd = official_vae_keys(vae) | {f"loss.discriminator.{k}": v for k, v in disc.state_dict().items()}
        official = save_official_ckpt({k: v.detach().cpu().contiguous() for k, v in sd.items()}, out / CFW_FILE)
    model_dir = out / CFW_DIR
    if cfg.pipeline:
        from ._deps import StableSRPipeline

        pipe = StableSRPipeline.from_pretrained(cfg.pipeline)
        if pipe.struct_vae is None:  # the stage-1 VAE keeps encoding the LR for the diffusion model
            pipe.struct_vae = pipe.vae
        pipe.vae = vae.eval()
        pipe.config = dataclasses.replace(pipe.config, default_fidelity=0.5)
        model_dir = pipe.save_pretrained(out / "model")
    return model_dir, official
