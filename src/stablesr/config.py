"""Typed settings shared by every layer: the model config saved with the weights, the official quirks, and
the run options (:class:`UpscaleOptions`) that the CLI, the web UI, evaluation and the Python API all use.

The defaults of a run are defined here once; everything else reads them from these dataclasses.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

from .errors import GeometryError, OptionsError

Sampler = Literal["ddpm", "ddim"]
ColorFix = Literal["adain", "wavelet", "none"]
Prediction = Literal["eps", "v"]
Init = Literal["noised_lr", "noise"]
"""Where sampling starts: the LR latent noised to the first timestep (official tile script), or pure noise."""

SAMPLERS: tuple[str, ...] = get_args(Sampler)
COLOR_FIXES: tuple[str, ...] = get_args(ColorFix)
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
INITS: tuple[str, ...] = get_args(Init)

DEFAULT_TILE_BATCH = 4  # latent tiles per network call when the free memory cannot be read
DEFAULT_VAE_TILE = 1024  # VAE tile in image pixels
MIN_VAE_TILE = 64
# Latent tile floor: the released models were trained on 64 px latents; tiles below 16 give poor results at many
# times the network calls, and on small models the 8x-downsampled maps leave their group norms one value.
MIN_TILE = 16


ScriptGeometry = Literal["exact", "tile_script", "fixed_size", "oldcanvas"]
"""How the LR image becomes the VAE's input (see :mod:`stablesr.imaging.geometry`)."""
OfficialScript = Literal["tile", "old", "oldcanvas", "ddim", "ddim_canvas_tile", "face"]
"""The official inference scripts whose behaviour :meth:`Quirks.official` reproduces (OFFICIAL.md 5.1-5.6)."""

SCRIPT_GEOMETRIES: tuple[str, ...] = get_args(ScriptGeometry)
OFFICIAL_SCRIPTS: tuple[str, ...] = get_args(OfficialScript)


@dataclass(frozen=True)
class Quirks:
    """Official behaviours that change outputs, each switchable. ``Quirks.official(script)`` gives one
    official script's set (default: the tile script the official README recommends).

    Attributes:
        ddim_timestep_mismatch: DDIM coefficients from ``range(0, 1000, 1000 // S)`` while the networks
            see ``space_timesteps(S)`` (official; default on). Off: one consistent list ending at x0.
        tile_weights: off-centre Gaussian tile weights (vertical centre ``T/2``), the official tile
            visiting order and float64-per-tile accumulation (default off: centred weights).
        geometry: ``"exact"`` (default: ``round(scale x size)`` output, minimal padding cropped off
            exactly), ``"tile_script"`` (``int`` sizes, both sides reflect-padded to multiples of 32,
            the crop after the final resize), ``"fixed_size"`` (the ``_old``/DDIM/face scripts:
            LANCZOS to a multiple of 32, short side resized to the model size, centre crop; the output
            is always model-size square whatever the scale) or ``"oldcanvas"`` (LANCZOS to a multiple
            of 8, ``int`` upscale, zero (mid-grey) padding up to the model size, colour fix after the crop).
        pixel_tiles: whole-pipeline pixel tiles (encode, sample, decode per 1280 px patch, blended) as the
            tile scripts do, instead of one latent canvas with a tiled VAE (default off).
        structure_from_cfw: the structure latent from the CFW encoder even when the diffusion checkpoint
            has its own VAE (the ``_old``, DDIM and face scripts); off: the checkpoint's VAE (tile scripts).
        discarded_noise_draw: with ``init="noise"``, first draw (and throw away) the noise of a noised-LR
            start, as the ``_old`` and DDIM canvas scripts do; only the random stream changes.
        truncate_output: 8-bit output by truncation instead of rounding (default off).

    Example:
        >>> Quirks.official().pixel_tiles, Quirks().pixel_tiles, Quirks.official("old").geometry
        (True, False, 'fixed_size')
    """

    ddim_timestep_mismatch: bool = True
    tile_weights: bool = False
    geometry: ScriptGeometry = "exact"
    pixel_tiles: bool = False
    structure_from_cfw: bool = False
    discarded_noise_draw: bool = False
    truncate_output: bool = False

    @property
    def default_init(self) -> Init:
        """Where sampling starts unless told: from pure noise for the scripts that discard a noised-LR draw."""
        return "noise" if self.discarded_noise_draw else "noised_lr"

    def __post_init__(self) -> None:
        if self.geometry not in SCRIPT_GEOMETRIES:
            raise OptionsError(f"unknown geometry {self.geometry!r}; choose one of {', '.join(SCRIPT_GEOMETRIES)}")

    @classmethod
    def official(cls, script: OfficialScript = "tile") -> Quirks:
        """Every quirk of one official script (``"tile"``: ``sr_val_ddpm_text_T_vqganfin_oldcanvas_tile.py``)."""
        if script not in OFFICIAL_SCRIPTS:
            raise OptionsError(f"unknown official script {script!r}; choose one of {', '.join(OFFICIAL_SCRIPTS)}")
        tiled = script in ("tile", "ddim_canvas_tile")
        geometry: ScriptGeometry = "tile_script" if tiled else "oldcanvas" if script == "oldcanvas" else "fixed_size"
        return cls(ddim_timestep_mismatch=True, tile_weights=True, geometry=geometry, pixel_tiles=tiled,
                   structure_from_cfw=script in ("old", "ddim", "face"),
                   discarded_noise_draw=script in ("old", "ddim_canvas_tile"), truncate_output=True)

    @classmethod
    def parse(cls, text: str) -> Quirks:
        """``official`` (the tile script), ``official:SCRIPT``, ``none``, or a comma list of the switches to
        turn on (every other one off) and ``geometry=MODE`` (default ``exact``).

        Example:
            >>> Quirks.parse("tile_weights,geometry=oldcanvas")
            Quirks(ddim_timestep_mismatch=False, tile_weights=True, geometry='oldcanvas', pixel_tiles=False, structure_from_cfw=False, discarded_noise_draw=False, truncate_output=False)
            >>> Quirks.parse("official:old").structure_from_cfw
            True
        """
        names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
        if len(names) == 1 and names[0].split(":")[0] == "official":
            return cls.official(names[0].partition(":")[2] or "tile")  # type: ignore[arg-type]
        switches = [f.name for f in fields(cls) if f.name != "geometry"]
        if names == ["none"]:
            return cls(**{k: False for k in switches})  # type: ignore[arg-type]
        geometry = [n.partition("=")[2] for n in names if n.startswith("geometry=")]
        unknown = [n for n in names if n not in switches and not n.startswith("geometry=")]
        if unknown or not names or len(geometry) > 1:
            raise OptionsError(f"unknown quirk {', '.join(unknown) or text!r}; use official, official:SCRIPT "
                               f"({', '.join(OFFICIAL_SCRIPTS)}), none, or a comma list of {', '.join(switches)} "
                               f"and geometry=({'|'.join(SCRIPT_GEOMETRIES)})")
        return cls(**{k: k in names for k in switches}, geometry=geometry[0] if geometry else "exact")  # type: ignore[arg-type]



@dataclass(frozen=True)
class ModelConfig:
    """What the weights alone do not tell: saved with a converted folder, set by a preset or the file name.

    Example:
        >>> ModelConfig(parameterization="v", sample_size=768).default_steps
        200
    """

    parameterization: Prediction = "eps"
    sample_size: int = 512  # native resolution in pixels (512, or 768 for the 768-v model)
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    default_steps: int = 200
    default_fidelity: float = 0.5
    default_color_fix: ColorFix = "adain"
    name: str = "stablesr"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Read a saved config; folders written before the rename say ``default_cfw_weight``."""
        data = dict(data)
        if "default_cfw_weight" in data:
            data.setdefault("default_fidelity", data.pop("default_cfw_weight"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class UpscaleOptions:
    """How to upscale one image; ``None`` means the model's own default. Checked on construction.

    Attributes:
        scale: output size = ``round(scale x input size)``; any positive number.
        steps: sampling steps (default: the model's, e.g. 4 for Turbo, 200 otherwise).
        sampler / eta: ``"ddpm"`` (the paper's) or ``"ddim"`` with its ``eta``.
        fidelity: CFW weight in [0, 1]: 0 = most realistic, 1 = most faithful.
        color_fix: ``"adain"``, ``"wavelet"`` or ``"none"``.
        guidance_scale / prompt / negative_prompt: classifier-free guidance (1 = off).
        seed: seeds a CPU generator, so every device draws the same noise.
        tile_size / tile_overlap: latent tile and overlap in latent pixels (default model size / 8, half a tile).
        tile_batch_size: latent tiles per network call (``None``: chosen from the free memory, at most 64).
        vae_tile_size: VAE tile in image pixels (``None`` or 0 = never tile).

    Example:
        >>> UpscaleOptions(scale=2, fidelity=0.7).fidelity
        0.7
        >>> UpscaleOptions(fidelity=2)
        Traceback (most recent call last):
        ...
        stablesr.errors.OptionsError: fidelity must be in [0, 1], got 2
    """

    scale: float = 4.0
    steps: int | None = None
    sampler: Sampler = "ddpm"
    eta: float = 0.0
    fidelity: float | None = None
    color_fix: ColorFix | None = None
    guidance_scale: float = 1.0
    prompt: str = ""
    negative_prompt: str | None = None
    seed: int = 42
    tile_size: int | None = None
    tile_overlap: int | None = None
    tile_batch_size: int | None = None
    vae_tile_size: int | None = DEFAULT_VAE_TILE

    def __post_init__(self) -> None:
        check_options(self)

    def with_model_defaults(self, model: ModelConfig) -> UpscaleOptions:
        """These options with every ``None`` replaced by ``model``'s default (checked again).

        Example:
            >>> o = UpscaleOptions().with_model_defaults(ModelConfig(default_steps=4))
            >>> o.steps, o.fidelity, o.tile_size, o.tile_overlap
            (4, 0.5, 64, 32)
        """
        tile = model.sample_size // 8 if self.tile_size is None else self.tile_size
        return replace(
            self,
            steps=model.default_steps if self.steps is None else self.steps,
            fidelity=model.default_fidelity if self.fidelity is None else self.fidelity,
            color_fix=model.default_color_fix if self.color_fix is None else self.color_fix,
            tile_size=tile,
            tile_overlap=tile // 2 if self.tile_overlap is None else self.tile_overlap,
        )


def check_options(o: UpscaleOptions) -> None:
    """Raise :class:`OptionsError` (or :class:`GeometryError` for tiles) for impossible options."""
    if not (isinstance(o.scale, (int, float)) and math.isfinite(o.scale) and o.scale > 0):
        raise OptionsError(f"scale must be a positive finite number, got {o.scale}")
    for name in ("steps", "seed", "tile_size", "tile_overlap", "tile_batch_size", "vae_tile_size"):
        value = getattr(o, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise OptionsError(f"{name} must be a whole number, got {value!r}")
    if not -(2**63) <= o.seed < 2**64:  # what torch.Generator.manual_seed takes
        raise OptionsError(f"seed must be in [-2**63, 2**64), got {o.seed}")
    if o.steps is not None and not 1 <= o.steps <= 1000:
        raise OptionsError(f"steps must be in 1..1000, got {o.steps}")
    if o.sampler not in SAMPLERS:
        raise OptionsError(f"unknown sampler {o.sampler!r}; choose {' or '.join(SAMPLERS)}")
    if not (isinstance(o.eta, (int, float)) and 0.0 <= o.eta <= 1.0):  # eta > 1 drives DDIM to NaN (black images)
        raise OptionsError(f"eta must be in [0, 1], got {o.eta}")
    if o.sampler == "ddpm" and o.eta != 0.0:
        raise OptionsError(f"eta applies to the ddim sampler only (got eta {o.eta} with ddpm); use sampler ddim")
    if not (isinstance(o.guidance_scale, (int, float)) and math.isfinite(o.guidance_scale) and o.guidance_scale >= 0):
        raise OptionsError(f"guidance_scale must be a finite number >= 0, got {o.guidance_scale}")
    if o.fidelity is not None and not 0.0 <= o.fidelity <= 1.0:
        raise OptionsError(f"fidelity must be in [0, 1], got {o.fidelity}")
    if o.color_fix is not None and o.color_fix not in COLOR_FIXES:
        raise OptionsError(f"unknown colour fix {o.color_fix!r}; choose one of {', '.join(COLOR_FIXES)}")
    if o.negative_prompt is not None and o.guidance_scale == 1.0:
        raise OptionsError("a negative prompt needs guidance_scale != 1 (the official scripts use 7)")
    if o.tile_size is not None and o.tile_size < MIN_TILE:
        raise GeometryError(f"tile size must be at least {MIN_TILE} latent px ({MIN_TILE * 8} image px), "
                            f"got {o.tile_size}")
    if o.tile_overlap is not None and (o.tile_overlap < 0 or (o.tile_size is not None and o.tile_overlap >= o.tile_size)):
        raise GeometryError(f"tile overlap must be in [0, tile size {o.tile_size}), got {o.tile_overlap}")
    if o.tile_batch_size is not None and o.tile_batch_size < 1:
        raise OptionsError(f"tile_batch_size must be at least 1, got {o.tile_batch_size}")
    if o.vae_tile_size and o.vae_tile_size < MIN_VAE_TILE:
        raise GeometryError(f"VAE tile must be at least {MIN_VAE_TILE} px (or 0 to disable tiling), got {o.vae_tile_size}")
