"""The product in one object: :class:`Upscaler` loads a model once and upscales one image at a time.

This is what the command line, the web UI and evaluation call, so they all get the same model
loading, the same defaults (:class:`~stablesr.config.UpscaleOptions`) and the same alpha handling.

Example:
    >>> up = Upscaler.load(ModelSpec(preset="turbo"), device="cuda")  # doctest: +SKIP
    >>> result = up.upscale(read_image("photo.png"), UpscaleOptions(scale=4, fidelity=0.5))  # doctest: +SKIP
    >>> result.rgb.shape, result.alpha is None  # doctest: +SKIP
    ((1024, 2048, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .config import UpscaleOptions
from .hub import ModelSpec, load_model
from .imageio.read import LoadedImage

if TYPE_CHECKING:
    import torch

    from .pipeline import StableSRPipeline

__all__ = ["ModelSpec", "UpscaleResult", "Upscaler"]


@dataclass(frozen=True)
class UpscaleResult:
    """``rgb``: HxWx3 float32 in [0, 1]; ``alpha``: HxW float32 in [0, 1] when the input had transparency."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None


class Upscaler:
    """A loaded pipeline and the way every front end runs it on one image."""

    def __init__(self, pipe: StableSRPipeline) -> None:
        self.pipe = pipe

    @classmethod
    def load(cls, spec: ModelSpec, device: str | torch.device | None = None, dtype: torch.dtype | None = None, *,
             announce: bool = True, progress: bool = False, note: Callable[[str], None] | None = None) -> Upscaler:
        """Load the model named by ``spec`` (see :func:`stablesr.hub.load_model`); ``progress`` shows step bars."""
        pipe = load_model(spec, device, dtype, announce=announce, note=note)
        pipe.set_progress_bar_config(disable=not progress)
        return cls(pipe)

    @property
    def name(self) -> str:
        return self.pipe.config.name

    def check(self, options: UpscaleOptions) -> None:
        """Encode the options' prompts now: a prompt the model cannot encode is a model error, not one per image."""
        self.pipe.encode_prompt(options.prompt)
        if options.guidance_scale != 1.0:
            self.pipe.encode_prompt(options.negative_prompt or "")

    def upscale(self, image: LoadedImage | np.ndarray, options: UpscaleOptions) -> UpscaleResult:
        """Upscale one image: a :class:`~stablesr.imageio.read.LoadedImage`, or an HxW[x3|x4] array in [0, 1].

        The noise comes from a CPU generator seeded with ``options.seed``, so every device and every
        rerun draws the same noise.
        """
        import torch

        if isinstance(image, LoadedImage):
            pixels = image.rgb if image.alpha is None else np.dstack([image.rgb, image.alpha])
        else:
            pixels = image
        o = options
        output = self.pipe(
            pixels, o.scale, o.steps, sampler=o.sampler, eta=o.eta, fidelity=o.fidelity, color_fix=o.color_fix,
            guidance_scale=o.guidance_scale, prompt=o.prompt, negative_prompt=o.negative_prompt,
            tile_size=o.tile_size, tile_overlap=o.tile_overlap, tile_batch_size=o.tile_batch_size,
            vae_tile_size=o.vae_tile_size, generator=torch.Generator().manual_seed(o.seed), output_type="np",
        )
        assert not isinstance(output, tuple)  # return_dict=True
        out = output.images[0]
        return UpscaleResult(np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3]) if out.shape[-1] == 4
                             else None)
