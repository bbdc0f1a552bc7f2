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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .config import Init, Quirks, ScriptGeometry, UpscaleOptions
from .errors import CancelledError, OptionsError, StableSRError
from .hub import ModelSpec, load_model
from .imageio.read import LoadedImage
from .runtime.memory import with_oom_backoff

if TYPE_CHECKING:
    import torch

    from .pipeline import StableSRPipeline

__all__ = ["ExpertOptions", "ModelSpec", "UpscaleResult", "Upscaler"]


@dataclass(frozen=True)
class UpscaleResult:
    """``rgb``: HxWx3 float32 in [0, 1]; ``alpha``: HxW float32 in [0, 1] when the input had transparency."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None


@dataclass(frozen=True)
class ExpertOptions:
    """Settings for parity runs and experiments, handed to the pipeline as they are.

    ``init``: start from the LR latent noised to the first step, or from pure noise (default: the quirks'
    ``default_init``); ``start_timestep``:
    begin there (needs ``noised_lr``); ``vae_tile_overlap``: VAE tile overlap in pixels (default a quarter
    tile); ``quirks``: the official behaviours to reproduce (``Quirks.official()`` for all).

    Example:
        >>> ExpertOptions(init="noise").quirks == Quirks()
        True
    """

    init: Init | None = None
    start_timestep: int | None = None
    vae_tile_overlap: int | None = None
    quirks: Quirks = field(default_factory=Quirks)

    def __post_init__(self) -> None:
        if self.init is None:
            object.__setattr__(self, "init", self.quirks.default_init)
        if self.start_timestep is not None and not 0 <= self.start_timestep <= 999:
            raise OptionsError(f"start_timestep must be in 0..999, got {self.start_timestep}")
        if self.start_timestep is not None and self.init == "noise":
            raise OptionsError("start_timestep needs init noised_lr (it noises the LR latent to that step)")
        if self.vae_tile_overlap is not None and self.vae_tile_overlap < 0:
            raise OptionsError(f"vae_tile_overlap must be >= 0, got {self.vae_tile_overlap}")


def stop_if(cancelled: Callable[[], bool]) -> Callable[..., None]:
    """A step callback that raises :class:`CancelledError` once ``cancelled()`` is true."""

    def check(*_: object) -> None:
        if cancelled():
            raise CancelledError("cancelled")

    return check


class Upscaler:
    """A loaded pipeline and the way every front end runs it on one image."""

    def __init__(self, pipe: StableSRPipeline) -> None:
        self.pipe = pipe

    @classmethod
    def load(cls, spec: ModelSpec, device: str | torch.device | None = None, dtype: torch.dtype | None = None, *,
             announce: bool = True, progress: bool = False, note: Callable[[str], None] | None = None,
             compile: bool = False, offload: str | None = None) -> Upscaler:
        """Load the model named by ``spec`` (see :func:`stablesr.hub.load_model`); ``progress`` shows step bars;
        ``compile`` compiles the denoiser (:meth:`~stablesr.pipeline.StableSRPipeline.compile`); ``offload``
        (``"model"`` or ``"sequential"``) keeps the networks in CPU memory between uses on ``device``."""
        pipe = load_model(spec, "cpu" if offload else device, dtype, announce=announce, note=note)
        pipe.set_progress_bar_config(disable=not progress)
        if offload:
            pipe.enable_offload(offload, device or "cuda")  # type: ignore[arg-type]
        if compile:
            pipe.compile()
        return cls(pipe)

    @property
    def name(self) -> str:
        return self.pipe.config.name

    def check(self, options: UpscaleOptions, expert: ExpertOptions | None = None) -> None:
        """Find now what would fail every image: tiles that do not fit this model's default tile (it depends on
        the model's size), an impossible VAE tiling, and prompts the model cannot encode (a model error)."""
        from .tiling.vae import vae_tiling

        options.with_model_defaults(self.pipe.config)
        vae_tiling(options.vae_tile_size, None if expert is None else expert.vae_tile_overlap)
        self.pipe.prepare_text(options, None, None)  # encodes (or finds) the prompts and checks their width

    def check_size(self, size: tuple[int, int], scale: float, max_pixels: int | None, *,
                   geometry: ScriptGeometry = "exact") -> None:
        """Refuse (one line) an image whose output, or the canvas it is worked on, exceeds ``max_pixels``.

        Inputs whose upscaled short side is below the model's size are worked on at that size: a 1x300
        image at scale 1 on the 512 model becomes a 512x153600 canvas, which this refuses.
        """
        from .imaging.geometry import Geometry

        if max_pixels is None:
            return
        geo = Geometry.plan(size, scale, self.pipe.config.sample_size, mode=geometry)
        for what, (h, w) in (("output", geo.target), ("working canvas", geo.padded)):
            if h * w > max_pixels:
                why = "" if what == "output" else f" (the model needs a {self.pipe.config.sample_size} px short side)"
                raise StableSRError(f"the {what} would be {w}x{h} ({h * w / 1e6:.1f} MP){why}, over "
                                    f"--max-output-pixels {max_pixels}; lower -s, crop the image, or raise the "
                                    "limit (0 = none)")

    def upscale(self, image: LoadedImage | np.ndarray, options: UpscaleOptions,
                expert: ExpertOptions | None = None, *, reference: np.ndarray | None = None,
                note: Callable[[str], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> UpscaleResult:
        """Upscale one image: a :class:`~stablesr.imageio.read.LoadedImage`, or an HxW[x3|x4] array in [0, 1].

        The noise comes from a CPU generator seeded with ``options.seed``, so every device and every
        rerun draws the same noise. An input holding NaN/Inf is refused, and a result holding NaN/Inf
        raises :class:`~stablesr.errors.StableSRError` rather than being returned as a black image. On an
        accelerator out-of-memory error the image is retried with half the tile batch, then half the VAE
        tile, and ``note`` (default ``print``) gets one line saying so. ``reference`` (an HxWx3 array in
        [0, 1], any size) turns on face reference guidance (the official face script's ``--ref-img``).
        ``cancelled`` is asked after every sampling step; True raises :class:`~stablesr.errors.CancelledError`
        (for this call only: other threads' calls on the same pipeline go on).
        """
        import torch

        if isinstance(image, LoadedImage):
            pixels = image.rgb if image.alpha is None else np.dstack([image.rgb, image.alpha])
        else:
            pixels = image
        if np.issubdtype(np.asarray(pixels).dtype, np.floating) and not np.isfinite(pixels).all():
            raise StableSRError("the input holds NaN or infinite values")
        x = expert or ExpertOptions()

        def attempt(o: UpscaleOptions):  # retried with a smaller tile batch / VAE tile on out-of-memory
            return self.pipe(
                pixels, o.scale, o.steps, sampler=o.sampler, eta=o.eta, fidelity=o.fidelity, color_fix=o.color_fix,
                guidance_scale=o.guidance_scale, prompt=o.prompt, negative_prompt=o.negative_prompt,
                tile_size=o.tile_size, tile_overlap=o.tile_overlap, tile_batch_size=o.tile_batch_size,
                vae_tile_size=o.vae_tile_size, generator=torch.Generator().manual_seed(o.seed), output_type="np",
                init=x.init, start_timestep=x.start_timestep, vae_tile_overlap=x.vae_tile_overlap, quirks=x.quirks,
                reference_image=reference, callback=None if cancelled is None else stop_if(cancelled),
            )

        side = round(max(np.shape(pixels)[:2]) * options.scale)
        output = with_oom_backoff(attempt, options, output_side=side, note=note or print)
        assert not isinstance(output, tuple)  # return_dict=True
        out = output.images[0]
        if not np.isfinite(out).all():
            raise StableSRError("the model produced NaN/Inf values (nothing was saved); try --precision fp32, "
                                "another --sampler or smaller --eta/--guidance-scale")
        return UpscaleResult(np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3]) if out.shape[-1] == 4
                             else None)
