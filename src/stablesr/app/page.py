"""The Gradio page of ``stablesr ui``: upload, settings, a before/after slider, a gallery, downloads.

Only this module (and the server, which imports it) imports gradio. Every model and
file operation goes through :class:`~stablesr.app.backend.Backend`. Nothing is shared between
visitors except the loaded model: each request writes into its own randomly named folder, and the
results a visitor sees live in that visitor's session state.

Element ids (``#input-files``, ``#run-btn``, ``#result``, ``#gallery``, ``#downloads``,
``#status``, ...) are part of the page's contract: the browser tests select by them.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..config import MIN_TILE
from ..errors import CancelledError
from .backend import (
    COLOR_FIXES,
    SAMPLERS,
    Backend,
    ModelDefaults,
    Result,
    UpscaleOptions,
    describe_error,
    preset_defaults,
)

__all__ = ["PageOptions", "build_demo"]

_RESULT_MAX_AGE_S = 3600  # result folders older than this are removed (a long-running server must not fill the disk)
_CHECKPOINT_CHOICE = "checkpoint"  # the preset menu's entry for "the loaded checkpoint's own settings"
_FALLBACK_DEFAULTS = ModelDefaults("turbo", 4, 0.5, "wavelet", 64)


@dataclass(frozen=True)
class PageOptions:
    """How the page behaves: where results go and how many requests run at once."""

    results_dir: Path
    concurrency: int = 1
    queue_size: int = 32
    max_pixels: int | None = None


class _RunningSessions:
    """The sessions with an upscale in progress; closing or reloading such a page cancels its upscale at the next
    sampling step, so an abandoned request does not hold the model (and the queue) for minutes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, set[threading.Event]] = {}  # session -> one event per run in progress

    @contextmanager
    def running(self, request: gr.Request | None) -> Iterator[Callable[[], bool]]:
        """Yields the run's cancellation check (true once its page has gone)."""
        session, gone = getattr(request, "session_hash", None) or "", threading.Event()
        with self._lock:
            self._runs.setdefault(session, set()).add(gone)
        try:
            yield gone.is_set
        finally:
            with self._lock:
                runs = self._runs.get(session, set())
                runs.discard(gone)
                if not runs:
                    self._runs.pop(session, None)

    def end(self, request: gr.Request) -> None:
        """``demo.unload``: the page was closed or reloaded."""
        with self._lock:
            runs = list(self._runs.get(getattr(request, "session_hash", None) or "", ()))
        for gone in runs:
            gone.set()


def build_demo(backend: Backend | None, options: PageOptions, load_error: str | None = None) -> gr.Blocks:
    """The page for ``backend`` (or, when the model could not be loaded, a page that says why).

    Example:
        >>> demo = build_demo(backend, PageOptions(Path("/tmp/results")))  # doctest: +SKIP
        >>> demo.launch(server_name="127.0.0.1")  # doctest: +SKIP
    """
    defaults = backend.defaults if backend is not None else _FALLBACK_DEFAULTS
    presets = preset_defaults()
    choices = [(name, name) for name in presets]
    if defaults.name not in presets:
        choices.insert(0, (f"{defaults.name} (the checkpoint's settings)", _CHECKPOINT_CHOICE))
    preset_value = defaults.name if defaults.name in presets else _CHECKPOINT_CHOICE

    with gr.Blocks(title="StableSR", analytics_enabled=False, delete_cache=(_RESULT_MAX_AGE_S, _RESULT_MAX_AGE_S)
                   ) as demo:
        gr.Markdown(_header(backend, options, load_error), elem_id="header")
        if load_error:
            gr.Markdown(f"**The model could not be loaded:** {load_error}", elem_id="model-error")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images (drop one or several)", file_count="multiple", file_types=["image"],
                                type="filepath", elem_id="input-files", height=140)
                preset = gr.Dropdown(choices, value=preset_value, label="Preset (applies its recommended settings)",
                                     elem_id="preset")
                scale = gr.Slider(1, 8, value=4, step=0.25, label="Scale", elem_id="scale")
                # no minimum/maximum on the numbers: Gradio's own range error names no field (and logs a
                # traceback); UpscaleOptions checks them and says which setting is wrong
                steps = gr.Number(defaults.steps, precision=0, label="Steps (1-1000)", elem_id="steps")
                fidelity = gr.Slider(0, 1, value=defaults.fidelity, step=0.05,
                                     label="Fidelity w (0 = realistic, 1 = faithful)", elem_id="fidelity")
                color_fix = gr.Radio(list(COLOR_FIXES), value=defaults.color_fix, label="Colour fix",
                                     elem_id="color-fix")
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    sampler = gr.Radio(list(SAMPLERS), value="ddpm", label="Sampler", elem_id="sampler")
                    seed = gr.Number(42, precision=0, label="Seed", elem_id="seed")
                    with gr.Row():
                        tile = gr.Number(defaults.tile, precision=0, label=f"Tile (latent px, >= {MIN_TILE})",
                                         elem_id="tile")
                        tile_overlap = gr.Number(defaults.tile_overlap, precision=0,
                                                 label="Tile overlap (latent px)", elem_id="tile-overlap")
                    guidance = gr.Slider(0, 15, value=1.0, step=0.5, label="Guidance scale (1 = off)",
                                         elem_id="guidance")
                    prompt = gr.Textbox("", label="Prompt", elem_id="prompt")
                    negative_prompt = gr.Textbox("", label="Negative prompt (needs guidance != 1)",
                                                 elem_id="negative-prompt")
                run = gr.Button("Upscale", variant="primary", elem_id="run-btn")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Before / after", type="filepath", format="png",
                                        buttons=["download", "fullscreen"], interactive=False, elem_id="result")
                status = gr.Markdown("", elem_id="status")
                gallery = gr.Gallery(label="Results (click one to compare it)", columns=6, height=220,
                                     object_fit="contain", fit_columns=False, allow_preview=False, elem_id="gallery",
                                     interactive=False)
                downloads = gr.File(label="Full-resolution PNG", file_count="multiple", interactive=False,
                                    elem_id="downloads")
        pairs = gr.State([])  # this session's (before, after) paths, for the gallery's selection

        preset.change(_apply_preset(presets, defaults), inputs=preset, outputs=[steps, fidelity, color_fix],
                      api_visibility="undocumented")
        sessions = _RunningSessions()
        demo.unload(sessions.end)
        run.click(_run_batch(backend, options, load_error, sessions),
                  inputs=[files, scale, steps, fidelity, color_fix, sampler, seed, tile, tile_overlap, guidance,
                          prompt, negative_prompt],
                  outputs=[slider, gallery, downloads, status, pairs],
                  concurrency_limit=options.concurrency, concurrency_id="model", api_visibility="undocumented")
        gallery.select(_select_pair, inputs=pairs, outputs=slider, api_visibility="undocumented")
        _add_api(backend, options, load_error)
    demo.queue(default_concurrency_limit=options.concurrency, max_size=options.queue_size)
    return demo


def _header(backend: Backend | None, options: PageOptions, load_error: str | None) -> str:
    model = backend.description if backend is not None else "no model loaded"
    limit = f"; inputs up to {options.max_pixels:,} pixels" if options.max_pixels else ""
    return (f"## StableSR\nReal-world image super-resolution. Model: **{model}**{limit}. Results are lossless "
            "PNG (16-bit and transparency kept). The StableSR weights are under the NTU S-Lab License 1.0 "
            "(non-commercial); the stablesr code is Apache-2.0.")


def _apply_preset(presets: dict[str, ModelDefaults], own: ModelDefaults) -> Callable[[str], tuple]:
    def apply(name: str) -> tuple:
        d = presets.get(name, own)
        return d.steps, d.fidelity, d.color_fix

    return apply


def _settings(scale: float, steps: float | None, fidelity: float | None, color_fix: str | None, sampler: str,
              seed: float | None, tile: float | None, tile_overlap: float | None, guidance: float, prompt: str,
              negative_prompt: str | None) -> UpscaleOptions:
    """Page or API values -> options (checked on construction); empty fields mean the model's default."""
    def as_int(v: float | str | None) -> int | None:
        return None if v is None or v == "" else int(v)

    return UpscaleOptions(scale=float(scale), steps=as_int(steps),
                          fidelity=None if fidelity is None else float(fidelity), color_fix=color_fix or None,
                          sampler=sampler or "ddpm", seed=as_int(seed) or 0, tile_size=as_int(tile),
                          tile_overlap=as_int(tile_overlap), guidance_scale=float(guidance), prompt=prompt or "",
                          negative_prompt=negative_prompt or None)


def _new_request_dir(options: PageOptions) -> Path:
    """A fresh, unguessable folder for one request's files; old ones are pruned on the way."""
    root = options.results_dir
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - _RESULT_MAX_AGE_S
    for old in root.iterdir():
        try:
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


def _check_ready(backend: Backend | None, load_error: str | None) -> Backend:
    if backend is None:
        raise gr.Error(f"The model is not loaded: {load_error or 'unknown reason'}", print_exception=False)
    return backend


def _run_batch(backend: Backend | None, options: PageOptions, load_error: str | None,
               sessions: _RunningSessions) -> Callable[..., tuple]:
    def run_batch(files: list[str] | None, scale: float, steps: float | None, fidelity: float, color_fix: str,
                  sampler: str, seed: float | None, tile: float | None, tile_overlap: float | None, guidance: float,
                  prompt: str, negative_prompt: str, request: gr.Request,
                  progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008 - the step bars
        model = _check_ready(backend, load_error)
        if not files:
            raise gr.Error("Please upload one or more images first.", print_exception=False)
        try:
            settings = _settings(scale, steps, fidelity, color_fix, sampler, seed, tile, tile_overlap, guidance,
                                 prompt, negative_prompt)
        except Exception as exc:  # noqa: BLE001 - a bad setting is the user's to fix, not a traceback
            raise gr.Error(str(exc), print_exception=False) from None
        folder = _new_request_dir(options)
        started = time.monotonic()
        results: list[Result] = []
        failures: list[str] = []
        with sessions.running(request) as cancelled:
            for k, path in enumerate(files):
                name = Path(path).name
                progress(k / len(files), desc=f"{name} ({k + 1}/{len(files)})")
                try:
                    results.append(model.upscale_file(Path(path), folder / str(k), settings, cancelled))
                except CancelledError:  # the page is gone, or the server is stopping: nobody to show the rest to
                    raise gr.Error("cancelled: the page was closed or reloaded, or the server is stopping",
                                   print_exception=False) from None
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
                    failures.append(describe_error(exc, name))
        if not results:
            raise gr.Error(" ".join(failures), print_exception=False)
        if failures:
            gr.Warning(f"{len(failures)} of {len(files)} images failed: " + " ".join(failures))
        first = results[0]
        lines = [(f"Upscaled {len(results)} image(s) in {time.monotonic() - started:.1f} s; first result "
                  f"{first.size[0]}x{first.size[1]} px.")]
        lines += [f"- failed: {failure}" for failure in failures]
        pairs = [(str(r.before), str(r.output)) for r in results]
        gallery = [(str(r.output), f"{r.output.name} ({r.size[0]}x{r.size[1]})") for r in results]
        return pairs[0], gallery, [str(r.output) for r in results], "\n".join(lines), pairs

    return run_batch


def _select_pair(pairs: list[tuple[str, str]], evt: gr.SelectData) -> tuple[str, str] | None:
    if not pairs or evt.index is None:
        return None
    index = evt.index if isinstance(evt.index, int) else evt.index[0]
    return tuple(pairs[index]) if 0 <= index < len(pairs) else None


def _readable_decode_errors(component: gr.Image) -> gr.Image:
    """gr.Image opens uploads with Pillow before our function runs: turn its failures into a message."""
    inner = component.preprocess

    @functools.wraps(inner)
    def preprocess(payload: Any) -> Any:
        try:
            return inner(payload)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
            name = getattr(payload, "orig_name", None) or "upload"
            raise gr.Error(f"{name}: not a recognised image file ({type(exc).__name__})",
                           print_exception=False) from None

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def _add_api(backend: Backend | None, options: PageOptions, load_error: str | None) -> None:
    """The ``upscale`` endpoint for gradio_client and scripts: one image in, one PNG out, CLI-named settings."""

    def upscale(image: str | None, scale: float = 4.0, steps: int | None = None, fidelity: float | None = None,
                color_fix: str | None = None, sampler: str = "ddpm", seed: int = 42, tile: int | None = None,
                tile_overlap: int | None = None, guidance_scale: float = 1.0, prompt: str = "",
                negative_prompt: str | None = None,
                progress: gr.Progress = gr.Progress(track_tqdm=True)) -> str:  # noqa: B008 - the step bars
        """Upscale one image; returns the path of the lossless PNG (16-bit and alpha kept)."""
        model = _check_ready(backend, load_error)
        if not image:
            raise gr.Error("no image given", print_exception=False)
        try:
            settings = _settings(scale, steps, fidelity, color_fix, sampler, seed, tile, tile_overlap,
                                 guidance_scale, prompt, negative_prompt)
        except Exception as exc:  # noqa: BLE001 - a bad setting is the caller's to fix, not the image's fault
            raise gr.Error(str(exc), print_exception=False) from None
        try:
            progress(0, desc=Path(image).name)
            result = model.upscale_file(Path(image), _new_request_dir(options), settings)
        except Exception as exc:  # noqa: BLE001 - the caller gets the one-line reason
            raise gr.Error(describe_error(exc, Path(image).name), print_exception=False) from None
        return str(result.output)

    # Hidden components give the endpoint real file handling (upload in, download out) and typed,
    # CLI-named parameters with the CLI's defaults.
    with gr.Column(visible=False):
        inputs = [
            _readable_decode_errors(gr.Image(type="filepath", image_mode=None, label="image")),
            gr.Number(4.0, label="scale"),
            gr.Number(None, precision=0, label="steps"),
            gr.Number(None, label="fidelity"),
            gr.Dropdown(list(COLOR_FIXES), value=None, label="color_fix"),
            gr.Dropdown(list(SAMPLERS), value="ddpm", label="sampler"),
            gr.Number(42, precision=0, label="seed"),
            gr.Number(None, precision=0, label="tile"),
            gr.Number(None, precision=0, label="tile_overlap"),
            gr.Number(1.0, label="guidance_scale"),
            gr.Textbox("", label="prompt"),
            gr.Textbox(None, label="negative_prompt"),
        ]
        output = gr.Image(type="filepath", format="png", label="upscaled")
        trigger = gr.Button(visible=False)
    trigger.click(upscale, inputs=inputs, outputs=output, api_name="upscale", concurrency_limit=options.concurrency,
                  concurrency_id="model")
