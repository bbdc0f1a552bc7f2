"""Everything the web UI needs from the model and from image files, in one place.

The page (:mod:`stablesr.app.page`) never touches the model or the image codecs: it asks a
:class:`Backend` to upscale one file with :class:`~stablesr.config.UpscaleOptions` and gets back the
paths of a lossless PNG result and of a "before" image (the input resized to the output size, for the
slider). The model itself is a :class:`stablesr.service.Upscaler`, loaded once.

Example:
    >>> backend = Backend.load(ModelSpec(preset="turbo"))  # doctest: +SKIP
    >>> result = backend.upscale_file(Path("photo.jpg"), Path("out"), UpscaleOptions(scale=2))  # doctest: +SKIP
    >>> result.size  # doctest: +SKIP
    (1024, 768)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import COLOR_FIXES, SAMPLERS, UpscaleOptions
from ..errors import InputImageError, MissingWeightsError, StableSRError, UsageError
from ..hub import ModelSpec, looks_like_repo_id

if TYPE_CHECKING:
    import numpy as np

    from ..service import Upscaler

__all__ = ["COLOR_FIXES", "SAMPLERS", "Backend", "ModelDefaults", "ModelSpec", "Result", "UpscaleOptions",
           "check_spec", "describe_error", "preset_defaults"]


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
    from ..presets import PRESETS

    return {name: ModelDefaults(name, p.steps, p.fidelity, p.color_fix, p.image_size // 8)
            for name, p in PRESETS.items()}


def describe_error(exc: BaseException, name: str) -> str:
    """A one-line message for the page about ``exc``, raised while processing the upload ``name``.

    Example:
        >>> describe_error(MemoryError(), "a.png")
        'a.png: out of memory; try a smaller scale or tile size, or a smaller image'
    """
    from ..runtime.memory import free_accelerator_memory, is_out_of_memory

    if isinstance(exc, InputImageError):
        return f"{name}: {exc.reason}"  # the server-side temporary path means nothing to the user
    if isinstance(exc, MissingWeightsError):
        return str(exc)
    if isinstance(exc, StableSRError):
        return f"{name}: {exc}"
    if is_out_of_memory(exc):
        free_accelerator_memory()
        return f"{name}: out of memory; try a smaller scale or tile size, or a smaller image"
    return f"{name}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"


def check_spec(spec: ModelSpec, device: str | None = None) -> None:
    """Missing files, an unknown preset or device: :class:`UsageError`, before anything is loaded."""
    from ..runtime.device import resolve_device

    if spec.config and not spec.checkpoint:
        raise UsageError("--config describes a --checkpoint file; give --checkpoint too")
    for flag in ("checkpoint", "cfw_checkpoint", "config", "prompt_embeds"):
        value = getattr(spec, flag)
        repo_id = flag == "checkpoint" and looks_like_repo_id(str(value))  # owner/name on the hub
        if value and not Path(value).exists() and not repo_id:
            raise UsageError(f"--{flag.replace('_', '-')} {value}: no such file or folder")
    if spec.preset:
        from ..presets import resolve_preset

        resolve_preset(spec.preset)
    resolve_device(device)


class Backend:
    """A loaded model (loaded once, shared by all requests) plus file reading and writing."""

    def __init__(self, upscaler: Upscaler, *, max_pixels: int | None = None) -> None:
        self.upscaler = upscaler
        self.max_pixels = max_pixels
        cfg = upscaler.pipe.config
        self.defaults = ModelDefaults(cfg.name, int(cfg.default_steps), float(cfg.default_fidelity),
                                      str(cfg.default_color_fix), int(cfg.sample_size // 8))
        self._prompt_lock = threading.Lock()  # the text encoder loads lazily: once, not once per thread
        self._stopping = threading.Event()
        self._running = 0  # upscales in progress, under _idle
        self._idle = threading.Condition()

    @classmethod
    def load(cls, spec: ModelSpec, *, device: str | None = None, precision: str | None = None,
             max_pixels: int | None = None, debug: bool = False, compile: bool = False,
             offload: str | None = None) -> Backend:
        """Load the model named by ``spec``; raises :class:`StableSRError` with a message for the user.

        The pipeline's step bars stay on: the page follows them (``gr.Progress(track_tqdm=True)``).
        """
        from ..runtime.device import quiet_library_logs, resolve_device, resolve_dtype
        from ..service import Upscaler

        check_spec(spec, device)
        device_ = resolve_device(device)
        dtype = resolve_dtype(precision, device_)
        if not debug:
            quiet_library_logs()
        upscaler = Upscaler.load(spec, device_, dtype, announce=True, progress=True, compile=compile, offload=offload)
        upscaler.check(UpscaleOptions())  # the empty prompt: a model that cannot encode it fails now
        return cls(upscaler, max_pixels=max_pixels)

    @property
    def description(self) -> str:
        return f"{self.defaults.name} on {self.upscaler.pipe.device}"

    def upscale_file(self, source: Path, out_dir: Path, options: UpscaleOptions,
                     cancelled: Callable[[], bool] | None = None) -> Result:
        """Upscale the image file ``source`` into ``out_dir`` (created); raises on failure.

        The result is a PNG that keeps what the CLI keeps (16-bit depth, alpha, grey, ICC profile).
        ``cancelled`` is asked after every sampling step (True: :class:`~stablesr.errors.CancelledError`).
        """
        if self._stopping.is_set():
            raise StableSRError("the server is stopping")
        stop = self._stopping.is_set  # a stopping server cancels the run like a page that went away
        with self._idle:
            self._running += 1
        try:
            return self._upscale_file(source, out_dir, options,
                                      stop if cancelled is None else lambda: stop() or cancelled())
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Refuse new upscales, end the running ones at their next sampling step, and wait for them (at most
        ``timeout_s``): a process that exits while a worker thread is inside torch aborts. True if all ended."""
        self._stopping.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout_s)

    def _upscale_file(self, source: Path, out_dir: Path, options: UpscaleOptions,
                      cancelled: Callable[[], bool]) -> Result:
        from ..imageio.read import read_image
        from ..imageio.write import write_image
        from ..imaging.alpha import upscale_alpha

        img = read_image(source, max_pixels=self.max_pixels)
        with self._prompt_lock:
            self.upscaler.check(options)
        result = self.upscaler.upscale(img, options, cancelled=cancelled)
        height, width = result.rgb.shape[:2]
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = Path(source).stem or "image"
        target = write_image(out_dir / f"{stem}_x{_scale_text(options.scale)}.png", result.rgb, alpha=result.alpha,
                             is_grey=img.is_grey, bit_depth=img.bit_depth, icc_profile=img.icc_profile,
                             protected=[source])
        before_alpha = None if img.alpha is None else upscale_alpha(img.alpha, (height, width))
        before = write_image(out_dir / f"{stem}_input.png", _resize(img.rgb, (height, width)), alpha=before_alpha,
                             is_grey=img.is_grey, protected=[source])
        return Result(target, before, (width, height))


def _scale_text(scale: float) -> str:
    return f"{scale:g}".replace(".", "_")


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an HxWx3 float image to ``size`` = (H, W): the slider's "before" side."""
    import torch
    import torch.nn.functional as F

    planes = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    out = F.interpolate(planes, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).clamp_(0, 1).numpy()
