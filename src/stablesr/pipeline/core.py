"""``StableSRPipeline``: one pipeline, one ``__call__``, for every StableSR model and image size.

What the official code spreads over a dozen near-duplicate scripts is a handful of arguments here:
the sampler (DDPM / DDIM), guidance with a negative prompt, the CFW ``fidelity`` weight, the colour
fix, latent tiling (progressive aggregation), VAE tiling and the official quirks
(:class:`~stablesr.config.Quirks`) for parity runs.

Data flow: image -> (geometry) padded LR -> (VAE encoder) structure latent -> (sampler over latent
tiles, steered by the structure latent) latent -> (CFW decoder, fused with LR features) -> colour fix
-> image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import (
    DEFAULT_VAE_TILE,
    INITS,
    ColorFix,
    Init,
    Quirks,
    Sampler,
    UpscaleOptions,
)
from ..diffusion.denoiser import Conditioning, TextConditioning
from ..diffusion.reference import ReferenceGuidance
from ..diffusion.sampling import NoiseSource, SamplerPlan, X0Transform, q_sample
from ..diffusion.schedules import DiffusionSchedule
from ..errors import OptionsError
from ..imaging.alpha import resize_alpha
from ..imaging.color import apply_color_fix
from ..imaging.convert import ImageInput, OutputType, PipelineImage, from_pipeline_images, to_pipeline_images
from ..imaging.geometry import Geometry
from ..models.cfw import CFWEncoding
from ..tiling import vae as vae_tiling
from ..tiling.budget import check_canvas_fits, feature_budget_bytes
from ..tiling.canvas import canvas_model_fn
from ..tiling.tiles import TileAccumulator, gaussian_weights, plan_tiles
from ..tiling.vae import TileFeatures
from .models import PipelineModels
from .references import check_references, encode_reference, reference_canvas
from .settings import RunSettings, StableSRPipelineOutput, StepEndCallback, TilingSettings, progress_bar, step_callback

__all__ = ["StableSRPipeline"]

class StableSRPipeline(PipelineModels):
    """StableSR super-resolution: an SD-2.x UNet steered by a time-aware encoder through SFT layers,
    decoded by the CFW autoencoder.

    Components: ``unet`` (stock ``diffusers.UNet2DConditionModel``), ``sft_adapter``,
    ``time_aware_encoder``, ``vae`` (:class:`CFWAutoencoderKL`), optionally ``struct_vae`` (the
    diffusion checkpoint's own VAE when it differs from the CFW encoder) and a text encoder.

    Example:
        >>> pipe = StableSRPipeline.from_single_file("stablesr_turbo.ckpt", cfw_ckpt="vqgan_cfw_00011.ckpt")  # doctest: +SKIP
        >>> pipe.to("cuda", torch.float16)  # doctest: +SKIP
        >>> out = pipe(Image.open("photo.jpg"), upscale=4, num_inference_steps=4, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
        >>> out.images[0].save("photo_x4.png")  # doctest: +SKIP
    """

    # ------------------------------------------------------------------------------------------ properties

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` (e.g. in ``callback_on_step_end``) to end sampling after this step."""
        return self._interrupt

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Options for the per-step tqdm bar, e.g. ``disable=True``."""
        self.progress_bar_config.update(kwargs)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The (1, 77, dim) context of ``prompt`` (cached; the text encoder loads only on a cache miss)."""
        return self.prompt_encoder(prompt)

    # ------------------------------------------------------------------------------------------ __call__

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        upscale: float = 4.0,
        num_inference_steps: int | None = None,
        *,
        sampler: Sampler = "ddpm",
        eta: float = 0.0,
        fidelity: float | None = None,
        color_fix: ColorFix | None = None,
        guidance_scale: float = 1.0,
        prompt: str = "",
        negative_prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: NoiseSource | None = None,
        init: Init | None = None,
        start_timestep: int | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_batch_size: int | None = None,
        vae_tile_size: int | None = DEFAULT_VAE_TILE,
        vae_tile_overlap: int | None = None,
        quirks: Quirks | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        reference_image: ImageInput | None = None,
    ) -> StableSRPipelineOutput | tuple:
        """Upscale ``image`` by ``upscale`` (any positive float).

        Args:
            image: PIL image, (H, W[, 3|4]) array in [0, 1] (or uint8/uint16), (B, 3, H, W) tensor in [0, 1],
                or a list. Alpha (RGBA/LA images, 4-channel arrays) is resized and re-attached to the output.
            upscale: output size = ``round(upscale x input size)``. Inputs whose upscaled short side is
                below the model size are processed at the model size and resized back.
            num_inference_steps: sampling steps (default: the model's, e.g. 200, or 4 for Turbo); 1 step
                predicts x0 from t=999.
            sampler: ``"ddpm"`` (respaced ancestral, the paper's) or ``"ddim"`` (with ``eta``).
            fidelity: CFW weight in [0, 1]; 0 = most realistic, 1 = most faithful.
            color_fix: ``"adain"``, ``"wavelet"`` or ``"none"``.
            guidance_scale: classifier-free guidance; used when != 1 (against ``negative_prompt`` or "").
            prompt / negative_prompt: texts; the text encoder is loaded only for prompts not cached.
            prompt_embeds / negative_prompt_embeds: precomputed (77, dim) or (1, 77, dim) contexts.
            generator: seeds every random draw (deterministic output for a fixed seed).
            noise: a :class:`~stablesr.diffusion.sampling.NoiseSource` (e.g. ``RecordedNoise``) overriding
                ``generator``.
            init: start from the LR latent noised to t=999 (official tile script) or from pure noise (default:
                ``quirks.default_init``, the noised LR unless the quirks discard a draw for a pure-noise start).
            start_timestep: begin at this original timestep (x_T = LR latent noised to it).
            tile_size / tile_overlap: latent tile and overlap (default model size / 8 and half a tile).
            tile_batch_size: latent tiles per network call (default: as many as half the free memory holds,
                at most 64; the output does not depend on it).
            vae_tile_size / vae_tile_overlap: pixel tile for the VAE (None or 0 = never tile; at least 64)
                and its overlap (default a quarter tile, at most 128); with ``quirks.pixel_tiles`` the
                size/overlap of the official whole-pipeline patches.
            quirks: official behaviours to reproduce (:class:`Quirks`); default fixes all but the DDIM table.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            callback: ``callback(step_index, timestep, latent)`` after every sampling step.
            callback_on_step_end: ``callback_on_step_end(pipe, step, timestep, {"latents": x})`` after every
                step, as in diffusers; may return ``{"latents": ...}`` to replace them, or set
                ``pipe._interrupt = True`` to stop sampling.
            reference_image: face reference guidance (official face script): one reference per input image
                (e.g. a CodeFormer restoration), resized to the working size and encoded by the CFW encoder;
                x0 is pulled to its latent at every step with respaced index >= 10. Use with the ``face`` model.

        Returns:
            :class:`StableSRPipelineOutput` (or ``(images,)`` with ``return_dict=False``).
        """
        quirks = quirks or Quirks()
        init = init or quirks.default_init
        # 1. Check the inputs; fill in the model's defaults
        options = self.check_inputs(
            UpscaleOptions(scale=upscale, steps=num_inference_steps, sampler=sampler, eta=eta, fidelity=fidelity,
                           color_fix=color_fix, guidance_scale=guidance_scale, prompt=prompt,
                           negative_prompt=negative_prompt, tile_size=tile_size, tile_overlap=tile_overlap,
                           tile_batch_size=tile_batch_size, vae_tile_size=vae_tile_size),
            init=init, start_timestep=start_timestep)
        self._interrupt = False
        # 2. Text conditioning (cached; the text encoder only loads for new prompts)
        text = self.prepare_text(options, prompt_embeds, negative_prompt_embeds)
        # 3. Sampler tables and the timesteps that will run
        plan = self.prepare_schedule(options, quirks, start_timestep)
        tiling = self.prepare_tiling(options, vae_tile_overlap)
        run = RunSettings(text, plan, noise or NoiseSource(generator), init, tiling, float(options.fidelity or 0),
                          options.color_fix or "none", quirks, step_callback(self, callback, callback_on_step_end))
        # 4.-7. Per image: geometry, structure latent, denoising, decoding
        items = to_pipeline_images(image)
        if not items:
            raise OptionsError("no images given (an empty list)")
        refs = check_references(items, reference_image, quirks)
        results = [self._upscale_one(item, float(options.scale), run, ref) for item, ref in zip(items, refs)]
        # 8. Output conversion
        return self.postprocess(results, output_type, quirks, return_dict)

    # ------------------------------------------------------------------------------------------ steps

    def check_inputs(self, options: UpscaleOptions, *, init: Init, start_timestep: int | None) -> UpscaleOptions:
        """``options`` with the model's defaults filled in; raises for impossible combinations."""
        if init not in INITS:
            raise OptionsError(f"unknown init {init!r}; choose {' or '.join(INITS)}")
        if start_timestep is not None and init == "noise":
            raise OptionsError("start_timestep needs init='noised_lr' (it noises the LR latent to that step)")
        return options.with_model_defaults(self.config)

    def prepare_text(self, options: UpscaleOptions, prompt_embeds: torch.Tensor | None,
                     negative_prompt_embeds: torch.Tensor | None) -> TextConditioning:
        if negative_prompt_embeds is not None and options.guidance_scale == 1.0:
            raise OptionsError("a negative prompt needs guidance_scale != 1 (the official scripts use 7)")
        cond = self._context(prompt_embeds, options.prompt, "prompt_embeds")
        uncond = (None if options.guidance_scale == 1.0 else
                  self._context(negative_prompt_embeds, options.negative_prompt or "", "negative_prompt_embeds"))
        return TextConditioning(cond, uncond, float(options.guidance_scale))

    def _context(self, given: torch.Tensor | None, prompt: str, name: str) -> torch.Tensor:
        """``given`` contexts, or the (cached) embedding of ``prompt``, as (batch, tokens, width) on the device;
        raises if the width is not the UNet's cross-attention width (1024 for SD 2.x)."""
        context = given if given is not None else self.encode_prompt(prompt)
        unet_config: Any = self.unet.config
        width = unet_config.cross_attention_dim
        width = width[0] if isinstance(width, (list, tuple)) else width
        if not isinstance(context, torch.Tensor) or context.ndim not in (2, 3) or context.shape[-1] != width:
            source = self.prompt_encoder.source
            what = name if given is not None else (f"the embedding of the prompt {prompt!r}"
                                                   + (f" in {source}" if source else ""))
            got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise OptionsError(f"{what} must be a (tokens, {width}) or (batch, tokens, {width}) tensor for this "
                               f"model, got {got}")
        return (context if context.ndim == 3 else context[None]).to(self.device, torch.float32)

    def prepare_schedule(self, options: UpscaleOptions, quirks: Quirks, start_timestep: int | None) -> SamplerPlan:
        cfg = self.config
        return SamplerPlan.build(options.sampler, int(options.steps or 0), prediction=cfg.parameterization,
                                 eta=options.eta, linear_start=cfg.linear_start, linear_end=cfg.linear_end,
                                 ddim_timestep_mismatch=quirks.ddim_timestep_mismatch, start_timestep=start_timestep)

    @staticmethod
    def prepare_tiling(options: UpscaleOptions, vae_tile_overlap: int | None) -> TilingSettings:
        vae_tile, vae_overlap = vae_tiling.vae_tiling(options.vae_tile_size, vae_tile_overlap)
        return TilingSettings(int(options.tile_size or 0), int(options.tile_overlap or 0), options.tile_batch_size,
                              vae_tile, vae_overlap)

    def _upscale_one(self, item: PipelineImage, upscale: float, run: RunSettings, reference: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(image in [0, 1], its alpha, the latent canvas) for one input batch."""
        lr = item.pixels.to(self.device)
        # 4. Geometry: work at >= model size, pad for the VAE
        geo = Geometry.plan(tuple(lr.shape[-2:]), upscale, self.config.sample_size, mode=run.quirks.geometry)
        check_canvas_fits(lr.shape[0], *geo.padded, self.device)
        padded = geo.upscale_and_pad(lr)
        tiling, latents = run.tiling, None
        if run.quirks.pixel_tiles and tiling.vae_tile is not None and max(padded.shape[-2:]) > tiling.vae_tile:
            restored = self._restore_in_patches(padded, run)
        else:
            ref = None if reference is None else reference_canvas(geo, reference.to(self.device))
            restored, latents = self._restore(padded, run, None if run.quirks.pixel_tiles else tiling.vae_tile, ref,
                                              geo.color_fix_size)
        # 7b. Back to [0, 1], undo the geometry; resize the alpha to match
        image = geo.finish(torch.clamp((restored + 1) / 2, 0, 1))
        alpha = None if item.alpha is None else resize_alpha(item.alpha, tuple(image.shape[-2:]))
        return image, alpha, latents

    def _restore_in_patches(self, padded: torch.Tensor, run: RunSettings) -> torch.Tensor:
        """The official tile script: the whole pipeline per pixel patch, patches blended with Gaussian weights."""
        official = run.quirks.tile_weights
        tiles = plan_tiles(padded.shape[-2], padded.shape[-1], run.tiling.vae_tile, run.tiling.vae_overlap, x_major=True)
        acc = TileAccumulator(tuple(padded.shape), device=padded.device, official_rounding=official)
        for t in tiles:
            ys, xs = t.slices
            decoded, _ = self._restore(padded[..., ys, xs], run, vae_tile=None)
            acc.add(t, decoded, gaussian_weights(t.h, t.w, official_centre=official,
                                                 dtype=torch.float64 if official else torch.float32))
        return acc.result()

    def _restore(self, image: torch.Tensor, run: RunSettings, vae_tile: int | None,
                 reference: torch.Tensor | None = None, keep: tuple[int, int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode -> sample -> decode -> colour fix for one padded image (sides multiples of 8), in [-1, 1];
        ``keep``: the top-left region decoded and colour-fixed (default all)."""
        with self.resident(self.vae, self.struct_vae):  # with model offloading: one stage's networks at a time
            struct_latent, features = self.encode_structure(image, run, vae_tile)
            x_t = self.prepare_latents(struct_latent, run)
            guidance = None if reference is None else ReferenceGuidance(encode_reference(
                self.vae, reference, self.config.scale_factor, run.noise, vae_tile, run.tiling.vae_overlap))
        with self.resident(self.denoiser):
            samples = self.denoise(x_t, struct_latent, run, guidance)
        with self.resident(self.vae):
            return self.decode(samples, image, features, run, vae_tile, keep), samples

    def encode_structure(self, image: torch.Tensor, run: RunSettings, vae_tile: int | None
                         ) -> tuple[torch.Tensor, TileFeatures | None]:
        """5a. The structure latent: a posterior SAMPLE of the LR image, scaled (one draw); and, when the
        CFW encoder is the structure encoder, the fusion features of the same pass (tiled: within a
        share of the free memory), so the decoder does not encode the LR image again."""
        source = self.vae if run.quirks.structure_from_cfw else self.struct_vae or self.vae
        keep = source is self.vae and run.fidelity != 0 and self.vae.fusion_layers is not None
        moments, features = vae_tiling.encode(
            source, image.to(source.dtype), tile_px=vae_tile, overlap_px=run.tiling.vae_overlap, keep_features=keep,
            feature_budget_bytes=feature_budget_bytes(image.device) if keep else 0)
        posterior = CFWEncoding(moments, [])
        latent = self.config.scale_factor * posterior.sample(run.noise.draw(posterior.mean.shape, like=posterior.mean))
        return latent, features

    def prepare_latents(self, struct_latent: torch.Tensor, run: RunSettings) -> torch.Tensor:
        """5b. The starting latent x_T: pure noise, or the structure latent noised to the first timestep."""
        if run.init == "noise":
            if run.quirks.discarded_noise_draw:  # the official scripts draw a noised-LR start and discard it
                run.noise.draw(struct_latent.shape, like=struct_latent)
            return run.noise.draw(struct_latent.shape, like=struct_latent)
        t = 999 if run.plan.start_timestep is None else run.plan.start_timestep
        base = DiffusionSchedule.base(self.config.linear_start, self.config.linear_end)
        return q_sample(struct_latent, t, run.noise.draw(struct_latent.shape, like=struct_latent), base)

    def denoise(self, x_t: torch.Tensor, struct_latent: torch.Tensor, run: RunSettings,
                x0_transform: X0Transform | None = None) -> torch.Tensor:
        """6. Progressive aggregation sampling over the latent canvas (``x0_transform``: e.g. reference guidance)."""
        t = run.tiling
        fn = canvas_model_fn(self.denoiser, Conditioning(struct_latent, run.text), tile_size=t.tile, tile_overlap=t.overlap,
                             tile_batch_size=t.batch, official_tile_weights=run.quirks.tile_weights)
        bar = progress_bar(self.progress_bar_config, len(run.plan.timesteps))

        def on_step(i: int, timestep: int, x: torch.Tensor) -> torch.Tensor | None:
            if bar is not None:
                bar.update(1)
            return run.callback(i, timestep, x) if run.callback is not None else None

        try:
            return run.plan.run(fn, x_t, run.noise, callback=on_step, interrupted=lambda: self._interrupt,
                                x0_transform=x0_transform)
        finally:
            if bar is not None:
                bar.close()

    def decode(self, samples: torch.Tensor, image: torch.Tensor, features: TileFeatures | None,
               run: RunSettings, vae_tile: int | None, keep: tuple[int, int] | None = None) -> torch.Tensor:
        """7. CFW decode (tiled for large images) and colour fix against the LR input (its ``keep`` region)."""
        decoded = vae_tiling.decode(self.vae, (samples / self.config.scale_factor).to(self.vae.dtype),
                                    image.to(self.vae.dtype), run.fidelity, tile_px=vae_tile,
                                    overlap_px=run.tiling.vae_overlap, features=features)
        h, w = keep or image.shape[-2:]
        return apply_color_fix(decoded[..., :h, :w].float(), image[..., :h, :w].float(), run.color_fix)

    @staticmethod
    def postprocess(results: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
                    output_type: OutputType, quirks: Quirks, return_dict: bool) -> StableSRPipelineOutput | tuple:
        images = from_pipeline_images([r[0] for r in results], [r[1] for r in results], output_type,
                                      truncate=quirks.truncate_output)
        latents = results[0][2] if len(results) == 1 else None
        return StableSRPipelineOutput(images, latents) if return_dict else (images,)
