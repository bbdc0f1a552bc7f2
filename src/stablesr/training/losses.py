"""Stage-1 training objective: the time-aware encoder and SFT layers learn to denoise the HR latent."""

from __future__ import annotations

import torch

from ..diffusion.denoiser import Conditioning, StableSRDenoiser, TextConditioning
from ..diffusion.schedules import DiffusionSchedule


def vlb_weights(sched: DiffusionSchedule, parameterization: str) -> torch.Tensor:
    """The (only logged) variational-bound weights of each schedule index, as the official model defines them."""
    if parameterization == "v":
        return torch.ones_like(sched.betas)
    w = sched.betas**2 / (2 * sched.posterior_variance * (1 - sched.betas) * (1 - sched.alphas_cumprod))
    w[0] = w[1]
    return w


def stage1_loss(
    denoiser: StableSRDenoiser,
    lr_latent: torch.Tensor,
    hr_latent: torch.Tensor,
    t_index: torch.Tensor,
    noise: torch.Tensor,
    context: torch.Tensor,
    sched: DiffusionSchedule,
    parameterization: str = "eps",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mean((model(q_sample(z_gt, t), t | z_lr) - target)^2)`` with target eps or v.

    ``t_index`` indexes ``sched`` (identity for the 1000-step schedule); the networks receive
    ``sched.timesteps[t_index]`` through the same :class:`StableSRDenoiser` call as inference (per-sample
    timesteps). Returns the loss and the official log entries.
    """
    dev = hr_latent.device
    t_model = sched.timesteps.to(dev)[t_index]
    sa = sched.sqrt_alphas_cumprod.to(dev)[t_index][:, None, None, None]
    s1 = sched.sqrt_one_minus_alphas_cumprod.to(dev)[t_index][:, None, None, None]
    x_noisy = sa * hr_latent + s1 * noise
    out = denoiser(x_noisy, t_model, Conditioning(lr_latent, TextConditioning(context)))
    target = sa * noise - s1 * hr_latent if parameterization == "v" else noise
    per_sample = ((out.float() - target) ** 2).mean(dim=(1, 2, 3))
    loss = per_sample.mean()
    vlb = (vlb_weights(sched, parameterization).to(dev)[t_index] * per_sample).mean()
    return loss, {"train/loss_simple": loss.detach(), "train/loss_vlb": vlb.detach(), "train/loss": loss.detach()}
