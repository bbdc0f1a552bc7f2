"""``StableSRPipeline``: one pipeline, one ``__call__``, for every StableSR model and image size.

What the official code spreads over a dozen near-duplicate scripts is a handful of flags here:
the sampler (DDPM / DDIM), guidance with a negative prompt, the CFW fidelity weight, the colour
fix, latent tiling (progressive aggregation), VAE tiling and the official quirks
(:class:`Quirks`) for parity runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import vae_tiling
from .color import COLOR_FIXES, apply_color_fix
from .denoiser import StableSRDenoiser, TextConditioning, canvas_model_fn
from .errors import GeometryError, StableSRError
from .geometry import Geometry
from .models.cfw import CFWAutoencoderKL, CFWEncoding
from .models.sft import SFTAdapter
from .models.text import PromptEncoder
from .models.time_aware_encoder import TimeAwareEncoder
from .sampling import NoiseSource, q_sample, sample_ddim, sample_ddpm
from .schedules import DDIMTable, DiffusionSchedule
from .tiling import TileAccumulator, gaussian_weights, plan_tiles

POSITIVE_PROMPT = "(masterpiece:2), (best quality:2), (realistic:2), (very clear:2)"
NEGATIVE_PROMPT = "3d, cartoon, anime, sketches, (worst quality:2), (low quality:2)"
"""The official scripts' optional positive prompt and their negative prompt (plain text to the tokenizer)."""


@dataclass(frozen=True)
class Quirks:
    """Official behaviours that change outputs, each switchable. ``Quirks.official()`` turns all on.

    Attributes:
        ddim_timestep_mismatch: DDIM coefficients from ``range(0, 1000, 1000 // S)`` while the networks
            see ``space_timesteps(S)`` (official; default on). Off: one consistent list ending at x0.
        tile_weights: off-centre Gaussian tile weights (vertical centre ``T/2``), the official tile
            visiting order and float64-per-tile accumulation (default off: centred weights).
        tile_script_geometry: ``int`` sizes, both sides reflect-padded to multiples of 32 even when one
            is aligned, and the crop applied after the final resize, which leaves a resized strip of
            padding in small-input outputs (default off: exact ``round(scale x size)`` output).
        pixel_tiles: whole-pipeline pixel tiles (encode, sample, decode per 1280 px patch, blended) as the
            tile scripts do, instead of one latent canvas with a tiled VAE (default off).
        truncate_output: 8-bit output by truncation instead of rounding (default off).
    """

    ddim_timestep_mismatch: bool = True
    tile_weights: bool = False
    tile_script_geometry: bool = False
    pixel_tiles: bool = False
    truncate_output: bool = False

    @classmethod
    def official(cls) -> Quirks:
        return cls(**{f.name: True for f in fields(cls)})


@dataclass
class PipelineConfig:
    """Model-level settings that the weights alone do not tell."""

    parameterization: Literal["eps", "v"] = "eps"
    sample_size: int = 512  # native resolution in pixels (512, or 768 for the 768-v model)
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    default_steps: int = 200
    default_cfw_weight: float = 0.5
    default_color_fix: str = "adain"
    name: str = "stablesr"


@dataclass
class StableSRPipelineOutput:
    """``images``: PIL images, a (B, H, W, 3) float array in [0, 1], or a (B, 3, H, W) tensor in [0, 1].
    ``latents``: the final latent canvas (when the image was sampled as one canvas)."""

    images: Any
    latents: torch.Tensor | None = None


ImageInput = Any  # PIL.Image | np.ndarray (H, W, 3) in [0, 1] | torch.Tensor (B, 3, H, W) in [0, 1] | list of those


def _to_batch(image: ImageInput) -> list[torch.Tensor]:
    """Input images -> list of (B, 3, h, w) float tensors in [-1, 1]; equally sized tensors stay batched."""
    if isinstance(image, (list, tuple)):
        return [t for im in image for t in _to_batch(im)]
    if isinstance(image, torch.Tensor):
        t = image if image.ndim == 4 else image[None]
        if t.ndim != 4 or t.shape[1] != 3:
            raise StableSRError(f"image tensor must have shape (B, 3, H, W), got {tuple(image.shape)}")
        scale = 1.0 if t.is_floating_point() else float(torch.iinfo(t.dtype).max)
        return [t.float() / scale * 2 - 1]
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise StableSRError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        a = image.astype(np.float32)
        if np.issubdtype(image.dtype, np.integer):  # uint8 / uint16 pixels
            a /= float(np.iinfo(image.dtype).max)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        return [torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)[None] * 2 - 1]
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit greyscale: keep its precision
            return _to_batch(np.asarray(image, dtype=np.float32).clip(0, 65535) / 65535.0)
        if image.mode == "F":
            return _to_batch(np.asarray(image, dtype=np.float32))
        return _to_batch(np.asarray(image.convert("RGB")))
    raise StableSRError(f"unsupported image type {type(image).__name__}; give a PIL image, an array or a tensor")


class StableSRPipeline:
    """StableSR super-resolution: an SD-2.x UNet steered by a time-aware encoder through SFT layers,
    decoded by the CFW autoencoder.

    Components: ``unet`` (stock ``diffusers.UNet2DConditionModel``), ``sft_adapter``,
    ``time_aware_encoder``, ``vae`` (:class:`CFWAutoencoderKL`), optionally ``struct_vae`` (the
    diffusion checkpoint's own VAE when it differs from the CFW encoder) and a text encoder.

    Example:
        >>> pipe = StableSRPipeline.from_single_file("stablesr_turbo.ckpt", cfw_ckpt="vqgan_cfw_00011.ckpt")
        >>> pipe.to("cuda", torch.float16)
        >>> out = pipe(Image.open("photo.jpg"), upscale=4, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
        >>> out.images[0].save("photo_x4.png")
    """

    def __init__(
        self,
        unet: nn.Module,
        sft_adapter: SFTAdapter,
        time_aware_encoder: TimeAwareEncoder,
        vae: CFWAutoencoderKL,
        *,
        struct_vae: CFWAutoencoderKL | None = None,
        prompt_encoder: PromptEncoder | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.unet, self.sft_adapter, self.time_aware_encoder, self.vae = unet, sft_adapter, time_aware_encoder, vae
        self.struct_vae = struct_vae
        self.prompt_encoder = prompt_encoder or PromptEncoder()
        self.config = config or PipelineConfig()
        self.denoiser = StableSRDenoiser(unet, sft_adapter, time_aware_encoder)
        self.progress_bar_config: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------
    # Loading and saving (implemented in stablesr.checkpoints.pipeline_io to keep this file on sampling)

    @classmethod
    def from_single_file(cls, ckpt: str | Path, cfw_ckpt: str | Path | None = None, **kwargs: Any) -> StableSRPipeline:
        """Build from official checkpoint files (``.ckpt`` or ``.safetensors``, official key layout).

        Keyword args: ``config`` / ``cfw_config`` (official-style YAML/JSON for non-preset architectures),
        ``prediction_type`` ("eps"/"v", when neither the file name nor the config tells), ``prompt_embeds``
        (a ``prompt_embeds.safetensors`` file), ``base_model`` (diffusers SD-2.1 folder or hub id, for
        SFT-only "webui" extracts), ``dtype``, ``device``.
        """
        from .checkpoints.pipeline_io import pipeline_from_single_file

        return pipeline_from_single_file(cls, ckpt, cfw_ckpt, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, **kwargs: Any) -> StableSRPipeline:
        """Load a folder written by :meth:`save_pretrained` (or ``stablesr convert``), local or on the hub."""
        from .checkpoints.pipeline_io import pipeline_from_pretrained

        return pipeline_from_pretrained(cls, path_or_repo, **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a diffusers-style folder: one subfolder per component (config.json + safetensors)."""
        from .checkpoints.pipeline_io import save_pipeline

        return save_pipeline(self, directory)

    # ------------------------------------------------------------------------------------------

    @property
    def components(self) -> dict[str, nn.Module]:
        out = {"unet": self.unet, "sft_adapter": self.sft_adapter, "time_aware_encoder": self.time_aware_encoder,
               "vae": self.vae}
        if self.struct_vae is not None:
            out["struct_vae"] = self.struct_vae
        return out

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> StableSRPipeline:
        """Move to ``device`` and cast the diffusion networks to ``dtype``.

        The VAEs follow ``dtype`` for bfloat16 but stay float32 for float16, where the SD VAE can
        overflow. Latents, schedules and tile blending are always float32.
        """
        for name, module in self.components.items():
            vae_like = name in ("vae", "struct_vae")
            d = dtype if not (vae_like and dtype == torch.float16) else torch.float32
            nn.Module.to(module, device=device, dtype=d)  # plain cast: we choose per component what stays fp32
        self.prompt_encoder.to(device)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Options for the per-step tqdm bar, e.g. ``disable=True``."""
        self.progress_bar_config.update(kwargs)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The (1, 77, dim) context of ``prompt`` (cached; the text encoder loads only on a cache miss)."""
        return self.prompt_encoder(prompt)

    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        upscale: float = 4.0,
        num_inference_steps: int | None = None,
        *,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        eta: float = 0.0,
        cfw_weight: float | None = None,
        color_fix: str | None = None,
        guidance_scale: float = 1.0,
        prompt: str = "",
        negative_prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: NoiseSource | None = None,
        init: Literal["noised_lr", "noise"] = "noised_lr",
        start_timestep: int | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int = 4,
        vae_tile_size: int | None = 1024,
        vae_tile_overlap: int | None = None,
        quirks: Quirks | None = None,
        output_type: Literal["pil", "np", "pt"] = "pil",
        return_dict: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> StableSRPipelineOutput | tuple:
        """Upscale ``image`` by ``upscale`` (any positive float).

        Args:
            image: PIL image, (H, W, 3) array in [0, 1] (or uint8), (B, 3, H, W) tensor in [0, 1], or a list.
            upscale: output size = ``round(upscale x input size)``. Inputs whose upscaled short side is
                below the model size are processed at the model size and resized back.
            num_inference_steps: sampling steps (default: the model's, e.g. 200, or 4 for Turbo); 1 step
                predicts x0 from t=999.
            sampler: ``"ddpm"`` (respaced ancestral, the paper's) or ``"ddim"`` (with ``eta``).
            cfw_weight: CFW fidelity weight ``w`` in [0, 1]; 0 = most realistic, 1 = most faithful.
            color_fix: ``"adain"``, ``"wavelet"`` or ``"none"``.
            guidance_scale: classifier-free guidance; used when != 1 (against ``negative_prompt`` or "").
            prompt / negative_prompt: texts; the text encoder is loaded only for prompts not cached.
            prompt_embeds / negative_prompt_embeds: precomputed (77, dim) or (1, 77, dim) contexts.
            generator: seeds every random draw (deterministic output for a fixed seed).
            noise: a :class:`~stablesr.sampling.NoiseSource` (e.g. ``RecordedNoise``) overriding ``generator``.
            init: start from the LR latent noised to t=999 (official tile script) or from pure noise.
            start_timestep: begin at this original timestep (x_T = LR latent noised to it).
            tile_size / tile_overlap: latent tile and overlap (default model size / 8 and half a tile).
            tile_batch_size: latent tiles per network call.
            vae_tile_size / vae_tile_overlap: pixel tile for the VAE (None or 0 = never tile; at least 64)
                and its overlap (default a quarter tile, at most 128); with ``quirks.pixel_tiles`` the
                size/overlap of the official whole-pipeline patches.
            quirks: official behaviours to reproduce (:class:`Quirks`); default fixes all but the DDIM table.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            callback: ``callback(step_index, timestep, latent)`` after every sampling step.

        Returns:
            :class:`StableSRPipelineOutput` (or ``(images,)`` with ``return_dict=False``).
        """
        # 1. Check inputs and resolve defaults
        cfg = self.config
        quirks = quirks or Quirks()
        steps = int(cfg.default_steps if num_inference_steps is None else num_inference_steps)
        w = cfg.default_cfw_weight if cfw_weight is None else float(cfw_weight)
        color_fix = cfg.default_color_fix if color_fix is None else color_fix
        if sampler not in ("ddpm", "ddim"):
            raise StableSRError(f"unknown sampler {sampler!r}; choose ddpm or ddim")
        if not 0.0 <= w <= 1.0:
            raise StableSRError(f"cfw_weight must be in [0, 1], got {w}")
        if not 1 <= steps <= 1000:
            raise StableSRError(f"num_inference_steps must be in 1..1000, got {steps}")
        # One step: predict x0 from t=999. (The official respacing would put a lone step at t=0, which
        # only decodes the starting noise.)
        one_step = [999] if steps == 1 else None
        if color_fix not in COLOR_FIXES + ("nofix",):
            raise StableSRError(f"unknown colour fix {color_fix!r}; choose one of {', '.join(COLOR_FIXES)}")
        if init not in ("noised_lr", "noise"):
            raise StableSRError(f"unknown init {init!r}; choose noised_lr or noise")
        if not (isinstance(upscale, (int, float)) and math.isfinite(upscale) and upscale > 0):
            raise StableSRError(f"upscale must be a positive finite number, got {upscale}")
        tile = int(cfg.sample_size // 8 if tile_size is None else tile_size)
        overlap = int(tile // 2 if tile_overlap is None else tile_overlap)
        if tile < 1 or not 0 <= overlap < tile:
            raise GeometryError(f"tile overlap must be in [0, tile size {tile}), got {overlap}")
        vae_tile, vae_overlap = _vae_tiling(vae_tile_size, vae_tile_overlap)
        noise = noise or NoiseSource(generator)
        dev = self.device

        # 2. Text conditioning (cached; the text encoder only loads for new prompts)
        text = self._text_conditioning(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                       guidance_scale, dev)

        # 3. Sampler tables; the timesteps that will run (all, or those from start_timestep down)
        if sampler == "ddpm":
            sched = DiffusionSchedule.respaced(steps, cfg.linear_start, cfg.linear_end, timesteps=one_step)
            run_t = [int(t) for t in reversed(sched.timesteps.tolist())]
        else:
            table = DDIMTable.build(steps, eta, compat=quirks.ddim_timestep_mismatch and one_step is None,
                                    base=DiffusionSchedule.base(cfg.linear_start, cfg.linear_end), timesteps=one_step)
            run_t = list(table.model_t)
        start_t = None
        if start_timestep is not None:
            if init == "noise":
                raise StableSRError("start_timestep needs init='noised_lr' (it noises the LR latent to that step)")
            run_t = [t for t in run_t if t <= int(start_timestep)]
            if not 0 <= int(start_timestep) <= 999 or not run_t:
                raise StableSRError(f"start_timestep must be in 0..999 and not below the last step, got {start_timestep}")
            start_t = run_t[0]  # snap to the first step that actually runs, so x_T matches it

        def run_sampler(fn: Callable, x_t: torch.Tensor) -> torch.Tensor:
            cb = self._progress(len(run_t), callback)
            if sampler == "ddpm":
                return sample_ddpm(fn, x_t, sched, cfg.parameterization, noise, start_timestep=start_t, callback=cb)
            return sample_ddim(fn, x_t, table, cfg.parameterization, noise, start_timestep=start_t, callback=cb)

        settings = _RunSettings(text, run_sampler, noise, tile, overlap, tile_batch_size, w, color_fix, init,
                                start_t, vae_tile, vae_overlap, quirks)
        images, latents = [], []
        for lr in _to_batch(image):
            out, lat = self._upscale_one(lr.to(dev), float(upscale), settings)
            images.append(out)
            latents.append(lat)

        # 8. Output conversion
        result = self._convert_output(images, output_type, quirks.truncate_output)
        single = latents[0] if len(latents) == 1 else None
        return StableSRPipelineOutput(result, single) if return_dict else (result,)

    # ------------------------------------------------------------------------------------------

    def _upscale_one(self, lr: torch.Tensor, upscale: float, s: _RunSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Geometry around the core: plan sizes, upscale + pad, run (whole or in pixel patches), finish."""
        # 4. Geometry: work at >= model size, pad for the VAE
        geo = Geometry.plan(tuple(lr.shape[-2:]), upscale, self.config.sample_size,
                            official=s.quirks.tile_script_geometry)
        padded = geo.upscale_and_pad(lr)
        latents = None
        patch = s.vae_tile_size
        if s.quirks.pixel_tiles and patch is not None and max(padded.shape[-2:]) > patch:
            # Official tile script: the whole pipeline per pixel patch, patches blended with Gaussian weights.
            tiles = plan_tiles(padded.shape[-2], padded.shape[-1], patch, s.vae_tile_overlap, x_major=True)
            acc = TileAccumulator(tuple(padded.shape), device=padded.device, official_rounding=s.quirks.tile_weights)
            for t in tiles:
                ys, xs = t.slices
                decoded, _ = self._restore(padded[..., ys, xs], s, vae_tile=None)
                acc.add(t, decoded, gaussian_weights(t.h, t.w, official_centre=s.quirks.tile_weights,
                                                     dtype=torch.float64 if s.quirks.tile_weights else torch.float32))
            restored = acc.result()
        else:
            restored, latents = self._restore(padded, s, vae_tile=None if s.quirks.pixel_tiles else patch)
        # 7. Back to [0, 1], undo the geometry
        return geo.finish(torch.clamp((restored + 1) / 2, 0, 1)), latents

    def _restore(self, image: torch.Tensor, s: _RunSettings, vae_tile: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode -> sample -> decode -> colour fix for one padded image (sides multiples of 8), in [-1, 1]."""
        cfg = self.config
        # 5a. Structure latent: a posterior SAMPLE of the LR image, scaled (one draw)
        untiled = vae_tile is None or max(image.shape[-2:]) <= vae_tile
        if self.struct_vae is None and untiled:  # one encoder pass gives the latent and the CFW features
            enc = self.vae.encode_with_features(image.to(self.vae.dtype))
            moments, features = enc.moments.float(), enc.features
        else:  # the decoder re-encodes its tiles (or the whole image) for the features
            source = self.struct_vae or self.vae
            moments = vae_tiling.encode_moments(source, image.to(source.dtype), tile_px=vae_tile,
                                                overlap_px=s.vae_tile_overlap)
            features = None
        posterior = CFWEncoding(moments, [])
        init = cfg.scale_factor * posterior.sample(s.noise.draw(posterior.mean.shape, like=posterior.mean))

        # 5b. Starting latent
        base = DiffusionSchedule.base(cfg.linear_start, cfg.linear_end)
        if s.init == "noise":
            x_t = s.noise.draw(init.shape, like=init)
        else:
            x_t = q_sample(init, 999 if s.start_timestep is None else int(s.start_timestep),
                           s.noise.draw(init.shape, like=init), base)

        # 6. Progressive aggregation sampling over the latent canvas
        fn = canvas_model_fn(self.denoiser, init, s.text, tile_size=s.tile, tile_overlap=s.overlap,
                             tile_batch_size=s.tile_batch_size, official=s.quirks.tile_weights)
        samples = s.run_sampler(fn, x_t)

        # 7. CFW decode (tiled for large images) and colour fix against the LR input
        decoded = vae_tiling.decode(self.vae, (samples / cfg.scale_factor).to(self.vae.dtype),
                                    image.to(self.vae.dtype), s.cfw_weight, tile_px=vae_tile,
                                    overlap_px=s.vae_tile_overlap, features=features)
        return apply_color_fix(decoded.float(), image.float(), s.color_fix), samples

    def _text_conditioning(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, scale, dev
                           ) -> TextConditioning:
        cond = prompt_embeds if prompt_embeds is not None else self.encode_prompt(prompt)
        uncond = None
        if scale != 1.0:
            if negative_prompt_embeds is not None:
                uncond = negative_prompt_embeds
            else:
                uncond = self.encode_prompt(negative_prompt or "")
        elif negative_prompt is not None or negative_prompt_embeds is not None:
            raise StableSRError("a negative prompt needs guidance_scale != 1 (the official scripts use 7)")
        prep = lambda t: (t if t.ndim == 3 else t[None]).to(dev, torch.float32)  # noqa: E731
        return TextConditioning(prep(cond), None if uncond is None else prep(uncond), float(scale))

    def _progress(self, total: int, callback):
        if self.progress_bar_config.get("disable", False):
            return callback
        from tqdm.auto import tqdm

        bar = tqdm(total=total, **{"leave": False, "desc": "steps", **self.progress_bar_config})  # total = steps run

        def step(i: int, t: int, x: torch.Tensor) -> None:
            bar.update(1)
            if i + 1 >= total:
                bar.close()
            if callback is not None:
                callback(i, t, x)

        return step

    @staticmethod
    def _convert_output(images: list[torch.Tensor], output_type: str, truncate: bool) -> Any:
        same_size = all(im.shape[1:] == images[0].shape[1:] for im in images)
        if output_type == "pt":
            return torch.cat(images) if same_size else images
        arrays = [im.permute(0, 2, 3, 1).float().cpu().numpy() for im in images]
        if output_type == "np":
            return np.concatenate(arrays) if same_size else arrays
        if output_type != "pil":
            raise StableSRError(f"unknown output_type {output_type!r}; choose pil, np or pt")
        from PIL import Image

        out = []
        for a in arrays:
            q = a * 255.0
            q = np.floor(q) if truncate else np.round(q)
            out += [Image.fromarray(x) for x in np.clip(q, 0, 255).astype(np.uint8)]
        return out


def _vae_tiling(size: int | None, overlap: int | None) -> tuple[int | None, int]:
    """Validated (tile, overlap) for the VAE in pixels; ``None`` tile = never tile."""
    if not size:
        return None, 0
    size = int(size)
    if size < 64:
        raise GeometryError(f"VAE tile must be at least 64 px (or 0 to disable tiling), got {size}")
    overlap = min(128, size // 4) if overlap is None else int(overlap)
    if not 0 <= overlap < size:
        raise GeometryError(f"VAE tile overlap must be in [0, VAE tile {size}), got {overlap}")
    return size, overlap


@dataclass
class _RunSettings:
    text: TextConditioning
    run_sampler: Callable[[Callable, torch.Tensor], torch.Tensor]
    noise: NoiseSource
    tile: int
    overlap: int
    tile_batch_size: int
    cfw_weight: float
    color_fix: str
    init: str
    start_timestep: int | None
    vae_tile_size: int | None
    vae_tile_overlap: int
    quirks: Quirks = field(default_factory=Quirks)


__all__ = ["StableSRPipeline", "StableSRPipelineOutput", "PipelineConfig", "Quirks", "POSITIVE_PROMPT",
           "NEGATIVE_PROMPT"]
