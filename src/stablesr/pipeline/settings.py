"""What one pipeline call carries: its resolved settings (typed, frozen), its output, the callback type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..config import ColorFix, Init, Quirks
from ..diffusion.denoiser import TextConditioning
from ..diffusion.sampling import NoiseSource, SamplerPlan, StepCallback

if TYPE_CHECKING:
    from .core import StableSRPipeline

POSITIVE_PROMPT = "(masterpiece:2), (best quality:2), (realistic:2), (very clear:2)"
NEGATIVE_PROMPT = "3d, cartoon, anime, sketches, (worst quality:2), (low quality:2)"
"""The official scripts' optional positive prompt and their negative prompt (plain text to the tokenizer)."""

StepEndCallback = Callable[["StableSRPipeline", int, int, dict[str, torch.Tensor]], "dict[str, torch.Tensor] | None"]
"""``callback_on_step_end(pipe, step, timestep, {"latents": x})``; a returned ``"latents"`` replaces x."""


@dataclass
class StableSRPipelineOutput:
    """``images``: PIL images, a (B, H, W, C) float array in [0, 1], or a (B, C, H, W) tensor in [0, 1]
    (C = 4 when the input had alpha, else 3). ``latents``: the final latent canvas (when the image was
    sampled as one canvas)."""

    images: Any
    latents: torch.Tensor | None = None


@dataclass(frozen=True)
class TilingSettings:
    """Latent tiles (latent pixels) and VAE tiles (image pixels; ``vae_tile`` None = never tile)."""

    tile: int
    overlap: int
    batch: int | None  # None: chosen from the free memory per image
    vae_tile: int | None
    vae_overlap: int


@dataclass(frozen=True)
class RunSettings:
    """One call's resolved settings, shared by every image (and pixel patch) of the call."""

    text: TextConditioning
    plan: SamplerPlan
    noise: NoiseSource
    init: Init
    tiling: TilingSettings
    fidelity: float
    color_fix: ColorFix
    quirks: Quirks
    callback: StepCallback | None = None


def step_callback(pipe: StableSRPipeline, callback: Callable[[int, int, torch.Tensor], None] | None,
                  on_step_end: StepEndCallback | None) -> StepCallback | None:
    """One sampler callback for the old ``callback(step, t, x)`` and diffusers' ``callback_on_step_end``."""
    if callback is None and on_step_end is None:
        return None

    def step(i: int, t: int, x: torch.Tensor) -> torch.Tensor | None:
        if callback is not None:
            callback(i, t, x)
        if on_step_end is None:
            return None
        returned = on_step_end(pipe, i, t, {"latents": x})
        return (returned or {}).get("latents")

    return step


def progress_bar(config: dict[str, Any], total: int) -> Any:
    """The per-step tqdm bar (``None`` when ``config`` disables it)."""
    if config.get("disable", False):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, **{"leave": False, "desc": "steps", **config})
