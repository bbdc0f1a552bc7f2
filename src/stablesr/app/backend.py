"""Everything the web UI needs from the model and from image files, in one place.

The page (:mod:`stablesr.app.page`) never touches the pipeline or the image codecs: it asks a
:class:`Backend` to upscale one file with :class:`Settings` and gets back the paths of a lossless
PNG result and of a "before" image (the input resized to the output size, for the slider).

Example:
    >>> backend = Backend.load(ModelChoice(model="turbo"))  # doctest: +SKIP
    >>> result = backend.upscale_file(Path("photo.jpg"), Path("out"), Settings(scale=2, steps=4))  # doctest: +SKIP
    >>> result.size  # doctest: +SKIP
    (1024, 768)
"""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputImageError, MissingWeightsError, StableSRError

if TYPE_CHECKING:
    from ..pipeline import StableSRPipeline

__all__ = ["Backend", "ModelChoice", "ModelDefaults", "Result", "Settings", "check_choice", "describe_error",
           "preset_defaults"]

StepCallback = Callable[[int, int], None]  # (steps done, steps in total) of the current image

COLOR_FIXES = ("adain", "wavelet", "none")
SAMPLERS = ("ddpm", "ddim")


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load: the same choices as ``stablesr upscale``'s model flags."""

    model: str | None = None
    checkpoint: str | None = None
    cfw_checkpoint: str | None = None
    config: str | None = None
    prompt_embeds: str | None = None
    offline: bool = False
    device: str | None = None
    precision: str | None = None


@dataclass(frozen=True)
class Settings:
    """One request's sampling settings; None means "the model's recommended value" (as in the CLI)."""

    scale: float = 4.0
    steps: int | None = None
    fidelity: float | None = None
    color_fix: str | None = None
    sampler: str = "ddpm"
    seed: int = 42
    tile: int | None = None
    tile_overlap: int | None = None
    guidance_scale: float = 1.0
    prompt: str = ""
    negative_prompt: str | None = None

    def check(self) -> None:
        """Refuse impossible combinations with a message for the user (the CLI's rules)."""
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise StableSRError(f"scale must be a positive finite number, got {self.scale}")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise StableSRError(f"steps must be in 1..1000, got {self.steps}")
        if self.fidelity is not None and not 0.0 <= self.fidelity <= 1.0:
            raise StableSRError(f"fidelity must be in [0, 1], got {self.fidelity}")
        if self.color_fix is not None and self.color_fix not in COLOR_FIXES:
            raise StableSRError(f"unknown colour fix {self.color_fix!r}; choose one of {', '.join(COLOR_FIXES)}")
        if self.sampler not in SAMPLERS:
            raise StableSRError(f"unknown sampler {self.sampler!r}; choose ddpm or ddim")
        if self.tile is not None and self.tile < 1:
            raise StableSRError(f"tile must be at least 1, got {self.tile}")
        if self.tile_overlap is not None and (self.tile_overlap < 0 or (self.tile is not None and
                                                                         self.tile_overlap >= self.tile)):
            raise StableSRError(f"tile overlap must be in [0, tile size {self.tile}), got {self.tile_overlap}")
        if self.guidance_scale < 0:
            raise StableSRError(f"guidance scale must be >= 0, got {self.guidance_scale}")
        if self.negative_prompt and self.guidance_scale == 1.0:
            raise StableSRError("a negative prompt needs guidance_scale != 1 (the official scripts use 7)")


@dataclass(frozen=True)
class ModelDefaults:
    """A model's recommended settings, shown as the page's initial values."""

    name: str
    steps: int
    fidelity: float
    color_fix: str
    tile: int  # latent pixels

    @property
    def tile_overlap(self) -> int:
        return self.tile // 2


@dataclass(frozen=True)
class Result:
    """One upscaled image: the lossless PNG, the input resized to the same size, and that size."""

    output: Path
    before: Path
    size: tuple[int, int]  # (width, height)


def preset_defaults() -> dict[str, ModelDefaults]:
    """The recommended settings of every named preset (what the page's preset menu applies)."""
    from ..registry import PRESETS

    return {name: ModelDefaults(name, p.steps, p.cfw_weight, p.color_fix, p.image_size // 8)
            for name, p in PRESETS.items()}


def describe_error(exc: BaseException, name: str) -> str:
    """A one-line message for the page about ``exc``, raised while processing the upload ``name``.

    Example:
        >>> describe_error(MemoryError(), "a.png")
        'a.png: out of memory; try a smaller scale or tile size, or a smaller image'
    """
    if isinstance(exc, InputImageError):
        return f"{name}: {exc.reason}"  # the server-side temporary path means nothing to the user
    if isinstance(exc, MissingWeightsError):
        return str(exc)
    if isinstance(exc, StableSRError):
        return f"{name}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        _free_accelerator_memory()
        return f"{name}: out of memory; try a smaller scale or tile size, or a smaller image"
    return f"{name}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Backend:
    """A loaded model (loaded once, shared by all requests) plus file reading and writing."""

    def __init__(self, pipe: StableSRPipeline, defaults: ModelDefaults, *, max_pixels: int | None = None) -> None:
        self.pipe = pipe
        self.defaults = defaults
        self.max_pixels = max_pixels
        self._prompt_lock = threading.Lock()  # the text encoder loads lazily: once, not once per thread

    @classmethod
    def load(cls, choice: ModelChoice, *, max_pixels: int | None = None, debug: bool = False) -> Backend:
        """Load the model named by ``choice``; raises :class:`StableSRError` with a message for the user."""
        from .. import cli as _cli  # the CLI's loader until the service layer lands

        check_choice(choice)
        dist = _cli.DistInfo()
        device = _cli._resolve_device(choice.device, dist)
        dtype = _cli._resolve_dtype(choice.precision, device)
        if not debug:
            _cli._quiet_library_logs()
        args = argparse.Namespace(**vars_of(choice))
        pipe = _cli._load_pipeline(args, device, dtype, _cli.Console(), announce=True)
        pipe.set_progress_bar_config(disable=True)  # progress goes to the page, not to the server's terminal
        pipe.encode_prompt("")
        cfg = pipe.config
        defaults = ModelDefaults(cfg.name, int(cfg.default_steps), float(cfg.default_cfw_weight),
                                 str(cfg.default_color_fix), int(cfg.sample_size // 8))
        return cls(pipe, defaults, max_pixels=max_pixels)

    @property
    def description(self) -> str:
        d = self.defaults
        return f"{d.name} on {self.pipe.device}"

    def upscale_file(self, source: Path, out_dir: Path, settings: Settings,
                     on_step: StepCallback | None = None) -> Result:
        """Upscale the image file ``source`` into ``out_dir`` (created); raises on failure.

        The result is a PNG that keeps what the CLI keeps (16-bit depth, alpha, grey, ICC profile).
        """
        import numpy as np
        import torch

        from ..cli import upscale_alpha
        from ..io import read_image, write_image

        settings.check()
        img = read_image(source, max_pixels=self.max_pixels)
        self._encode_prompts(settings)
        steps_total = settings.steps or self.defaults.steps

        def callback(i: int, t: int, latent: torch.Tensor) -> None:
            if on_step is not None:
                on_step(i + 1, steps_total)

        generator = torch.Generator().manual_seed(int(settings.seed))  # CPU noise: same result on any device
        output = self.pipe(
            img.rgb, upscale=float(settings.scale), num_inference_steps=settings.steps, sampler=settings.sampler,
            cfw_weight=settings.fidelity, color_fix=settings.color_fix, guidance_scale=settings.guidance_scale,
            prompt=settings.prompt, negative_prompt=settings.negative_prompt or None, tile_size=settings.tile,
            tile_overlap=settings.tile_overlap, generator=generator, output_type="np", callback=callback,
        )
        rgb = output.images[0]
        alpha = None if img.alpha is None else upscale_alpha(img.alpha, rgb.shape[:2])
        height, width = rgb.shape[:2]
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = Path(source).stem or "image"
        target = write_image(out_dir / f"{stem}_x{_scale_text(settings.scale)}.png", rgb, alpha=alpha,
                             is_grey=img.is_grey, bit_depth=img.bit_depth, icc_profile=img.icc_profile,
                             protected=[source])
        before_rgb = _resize(img.rgb, (height, width))
        before_alpha = None if img.alpha is None else upscale_alpha(img.alpha, (height, width))
        before = write_image(out_dir / f"{stem}_input.png", np.clip(before_rgb, 0, 1), alpha=before_alpha,
                             is_grey=img.is_grey, protected=[source])
        return Result(target, before, (width, height))

    def _encode_prompts(self, settings: Settings) -> None:
        with self._prompt_lock:
            self.pipe.encode_prompt(settings.prompt)
            if settings.guidance_scale != 1.0:
                self.pipe.encode_prompt(settings.negative_prompt or "")


def vars_of(choice: ModelChoice) -> dict[str, object]:
    """The argparse-style attributes the CLI's loader reads."""
    from dataclasses import asdict

    return asdict(choice)


def check_choice(choice: ModelChoice) -> None:
    """Refuse flags that cannot work (missing files, unknown preset) before anything is loaded."""
    if choice.model:
        from ..registry import resolve_preset

        resolve_preset(choice.model)
    if choice.config and not choice.checkpoint:
        raise StableSRError("--config describes a --checkpoint file; give --checkpoint too")
    for flag in ("checkpoint", "cfw_checkpoint", "config", "prompt_embeds"):
        value = getattr(choice, flag)
        if value and not Path(value).exists() and not (flag == "checkpoint" and "/" in value and
                                                       not Path(value).suffix):
            raise StableSRError(f"--{flag.replace('_', '-')} {value}: no such file or folder")


def _scale_text(scale: float) -> str:
    return f"{scale:g}".replace(".", "_")


def _resize(rgb, size: tuple[int, int]):
    """Bicubic resize of an HxWx3 float image to ``size`` = (H, W): the slider's "before" side."""
    import torch
    import torch.nn.functional as F

    planes = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    out = F.interpolate(planes, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).clamp_(0, 1).numpy()
