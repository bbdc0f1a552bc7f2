"""``stablesr upscale``: images, folders or globs in, upscaled files out; one bad file never stops the batch.

It scales out without a code change: started by ``torchrun --nproc_per_node N -m stablesr upscale ...``
or ``accelerate launch --multi_gpu --num_processes N -m stablesr upscale ...`` (which set
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), each process takes every N-th image of the sorted input list
and runs on ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import COLOR_FIXES, INITS, MIN_TILE, MIN_VAE_TILE, OFFICIAL_SCRIPTS, SAMPLERS, Quirks, UpscaleOptions
from ..errors import InputImageError, MissingWeightsError, StableSRError, UsageError
from ..imageio.naming import OUTPUT_CHOICES, Job, final_target, path_key, plan_jobs
from ..imageio.read import DEFAULT_MAX_PIXELS
from ..runtime.batch import BatchRunner, Outcome, StopBatch, Tally
from ..runtime.console import Console
from ..runtime.distributed import DistInfo, all_reduce, ignore_termination, terminate_as_interrupt
from ..service import ExpertOptions
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    DefaultsFormatter,
    add_device_flags,
    add_model_flags,
    check_model_files,
    model_spec,
    number,
)
from .official import add_official_flags, apply_official, color_fix

if TYPE_CHECKING:  # torch and the pipeline load lazily so `stablesr models` stays instant
    from ..service import Upscaler

_DEFAULTS = UpscaleOptions()
BASELINES = ("bicubic", "lanczos")  # --model names that need no weights (stablesr.evaluation.baselines)
DEFAULT_MAX_OUTPUT_PIXELS = 36_000_000  # 6000 x 6000: a 1500 px image at 4x; larger runs take hours on most GPUs


def vae_tile(text: str) -> int:
    """``--vae-tile``: 0 (never tile) or at least the smallest tile the VAE can use."""
    value = number(int, 0)(text)
    if 0 < value < MIN_VAE_TILE:
        raise argparse.ArgumentTypeError(f"must be 0 (never tile) or at least {MIN_VAE_TILE}, got {text}")
    return value


def quirks_flag(text: str) -> Quirks:
    """``--quirks``: which official behaviours to reproduce (:meth:`Quirks.parse`)."""
    try:
        return Quirks.parse(text)
    except StableSRError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "upscale", parents=parents, help="upscale images, folders or globs",
        description="Upscale images. INPUT: image files, folders (their images) or glob patterns. One bad file "
                    "is reported and skipped. Under torchrun / accelerate launch each process takes its share. "
                    "The official scripts' flag spellings work too (--ckpt, --init-img, --ddpm_steps, ...; "
                    "see the README).",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", "--outdir", default="results", metavar="OUTDIR", help="output folder")
    p.add_argument("-s", "--scale", "--upscale", metavar="X", type=number(float, 0, low_open=True, finite=True),
                   default=_DEFAULTS.scale, help="upscaling factor; any positive number (output = round(scale x input "
                                                 "size))")
    model = p.add_argument_group("model")
    add_model_flags(model, model_help="model preset (see `stablesr models`), or bicubic/lanczos (classical "
                                      "baselines, no weights); default: turbo, or the checkpoint's own settings")
    add_device_flags(model)
    model.add_argument("--threads", metavar="N", type=number(int, 1), default=None,
                       help="CPU threads for torch (default: the cores not busy by the 1-minute load average)")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--steps", "--ddpm-steps", metavar="N", type=number(int, 1, 1000), default=_DEFAULTS.steps,
                          help="sampling steps (default: the model's, e.g. 4 for turbo, 200 otherwise)")
    sampling.add_argument("--sampler", choices=SAMPLERS, default=_DEFAULTS.sampler, help="sampler")
    sampling.add_argument("--eta", "--ddim-eta", metavar="ETA", type=number(float, 0, 1), default=None,
                          help="DDIM eta in [0, 1] (ddim only; default 0)")
    sampling.add_argument("-w", "--fidelity", "--dec-w", metavar="W", type=number(float, 0, 1),
                          default=_DEFAULTS.fidelity,
                          help="CFW weight: 0 = most realistic, 1 = most faithful (default: the model's)")
    sampling.add_argument("--color-fix", "--colorfix-type", type=color_fix, choices=COLOR_FIXES,
                          default=_DEFAULTS.color_fix,
                          help="colour correction against the input; nofix = none (default: the model's)")
    sampling.add_argument("--guidance-scale", metavar="G", type=number(float, 0, finite=True), default=None,
                          help="classifier-free guidance against --negative-prompt (1 = off; default 1)")
    sampling.add_argument("--prompt", metavar="TEXT", default=_DEFAULTS.prompt,
                          help="text prompt (the models were trained with the empty one)")
    sampling.add_argument("--negative-prompt", metavar="TEXT", default=_DEFAULTS.negative_prompt,
                          help="negative prompt (needs --guidance-scale != 1)")
    sampling.add_argument("--seed", metavar="N", type=int, default=_DEFAULTS.seed,
                          help="random seed, the same for every image")
    sampling.add_argument("--reference", metavar="DIR", default=None,
                          help="face reference guidance: DIR holds one reference per input, same file name "
                               "(e.g. CodeFormer outputs; official --ref-img); use with --model face")
    sampling.add_argument("--init", choices=INITS, default=None,
                          help="start from the LR latent noised to the first step, or from pure noise (default: "
                               "noised_lr; noise with the quirks of the official scripts that start from it)")
    sampling.add_argument("--start-timestep", metavar="T", type=number(int, 0, 999), default=None,
                          help="begin sampling at this original timestep (0..999; needs --init noised_lr)")
    sampling.add_argument("--quirks", metavar="LIST", type=quirks_flag, default=Quirks(),
                          help="official behaviours to reproduce: 'official' (the tile script), 'official:SCRIPT' "
                               f"({', '.join(OFFICIAL_SCRIPTS)}), 'none', or a comma list of switches "
                               "(default: none but ddim_timestep_mismatch; see stablesr.Quirks)")
    tiles = p.add_argument_group("tiling (memory)")
    tiles.add_argument("--tile", metavar="N", type=number(int, MIN_TILE), default=_DEFAULTS.tile_size,
                       help=f"latent tile size, in latent pixels (8 image pixels each), at least {MIN_TILE}; "
                            "default: the model's size / 8")
    tiles.add_argument("--tile-overlap", metavar="N", type=number(int, 0), default=_DEFAULTS.tile_overlap,
                       help="latent tile overlap, below --tile (default: half a tile)")
    tiles.add_argument("--tile-batch", metavar="N|auto", type=lambda v: None if v == "auto" else number(int, 1)(v),
                       default=_DEFAULTS.tile_batch_size,
                       help="latent tiles per network call (default auto: from the free memory, at most 64)")
    tiles.add_argument("--vae-tile", "--vqgantile-size", metavar="PX", type=vae_tile, default=_DEFAULTS.vae_tile_size,
                       help=f"VAE tile size in image pixels, 0 = never tile, else at least {MIN_VAE_TILE}")
    tiles.add_argument("--vae-tile-overlap", metavar="PX", type=number(int, 0), default=None,
                       help="VAE tile overlap in pixels (default: a quarter tile, at most 128)")
    out = p.add_argument_group("output")
    out.add_argument("--suffix", metavar="TEXT", default="", help="appended to each output file name's stem")
    out.add_argument("--ext", type=str.lower, choices=OUTPUT_CHOICES, default="png",
                     help="output format; same = the input's (images with transparency are written as PNG "
                          "when the format cannot hold it)")
    out.add_argument("--quality", metavar="Q", type=number(int, 1, 100), default=95, help="JPEG/WebP quality")
    out.add_argument("--skip-existing", action="store_true", help="skip images whose output exists (resume)")
    out.add_argument("--max-pixels", metavar="N", type=number(int, 0), default=DEFAULT_MAX_PIXELS,
                     help="refuse inputs with more pixels (0 = no limit)")
    out.add_argument("--max-output-pixels", metavar="N", type=number(int, 0), default=DEFAULT_MAX_OUTPUT_PIXELS,
                     help="refuse images whose output or working canvas would have more pixels (0 = no limit)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    out.add_argument("-v", "--verbose", action="store_true", help="one line per image")
    add_official_flags(p)
    return p


def upscale_options(args: argparse.Namespace) -> UpscaleOptions:
    """The run options the flags ask for; impossible combinations are usage errors."""
    if args.eta is not None and args.sampler == "ddpm":
        raise UsageError(f"--eta {args.eta}: eta applies to --sampler ddim only (ddpm has no eta)")
    if args.tile is not None and args.tile_overlap is not None and args.tile_overlap >= args.tile:
        raise UsageError(f"--tile-overlap {args.tile_overlap}: must be smaller than --tile {args.tile}")
    if args.tile is None and args.tile_overlap is not None:
        tile = (args.sample_size or 512) // 8  # the model may still say 768; 512 is the smallest released
        if args.tile_overlap >= tile:
            raise UsageError(f"--tile-overlap {args.tile_overlap}: must be smaller than the tile ({tile} latent "
                             "pixels by default; set --tile)")
    guidance = _DEFAULTS.guidance_scale if args.guidance_scale is None else args.guidance_scale
    try:
        return UpscaleOptions(
            scale=args.scale, steps=args.steps, sampler=args.sampler, eta=args.eta or 0.0, fidelity=args.fidelity,
            color_fix=args.color_fix, guidance_scale=guidance, prompt=args.prompt,
            negative_prompt=args.negative_prompt, seed=args.seed, tile_size=args.tile, tile_overlap=args.tile_overlap,
            tile_batch_size=args.tile_batch, vae_tile_size=args.vae_tile or None,
        )
    except StableSRError as exc:  # OptionsError / GeometryError, worded after the option names
        raise UsageError(str(exc)) from None


def expert_options(args: argparse.Namespace) -> ExpertOptions:
    from ..tiling.vae import vae_tiling

    try:
        vae_tiling(args.vae_tile or None, args.vae_tile_overlap)  # needs no model: refused before loading one
        return ExpertOptions(init=args.init, start_timestep=args.start_timestep,
                             vae_tile_overlap=args.vae_tile_overlap, quirks=args.quirks)
    except StableSRError as exc:
        raise UsageError(str(exc)) from None


def _check_paths(args: argparse.Namespace) -> None:
    """Conflicts argparse cannot see; all are usage errors (exit 2) before anything heavy happens."""
    check_model_files(args)
    if "/" in args.suffix or os.sep in args.suffix:
        raise UsageError(f"--suffix {args.suffix!r}: must not contain a path separator (use -o for folders)")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder")
    if args.reference is not None:
        if not Path(args.reference).is_dir():
            raise UsageError(f"--reference {args.reference}: not a folder")
        if args.model in BASELINES:
            raise UsageError(f"--reference needs a diffusion model, not --model {args.model}")


def run(args: argparse.Namespace) -> int:
    """``stablesr upscale``: see the module docstring; returns the exit code."""
    started = time.monotonic()
    dist_info = DistInfo.from_env()
    console = Console(args.quiet, args.verbose, dist_info.prefix)
    apply_official(args)
    if not args.inputs:
        raise UsageError("give at least one INPUT (an image, folder or glob) or --init-img")
    options, expert = upscale_options(args), expert_options(args)
    _check_paths(args)
    if args.model and args.model not in BASELINES:
        from ..presets import resolve_preset

        resolve_preset(args.model)  # an unknown name is a usage error before any work
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..imageio.naming import collect_inputs, not_images

    found, problems = collect_inputs(args.inputs)
    if not found:
        raise UsageError("no input images found" + "".join(f"; {problem}" for problem in problems))
    jobs = plan_jobs(sorted(found, key=str), Path(args.output), suffix=args.suffix, ext=args.ext)
    _check_before_loading(args, jobs, dist_info)
    batch = _UpscaleBatch(args, options, expert, jobs, console, dist_info)
    if dist_info.rank == 0:  # spec problems concern the whole job: report them once
        for problem in problems:
            console.error(problem)
            batch.tally.failed.append(problem.split(": ", 1)[0])
        batch.tally.not_images = [p.name for p in not_images(args.inputs)]
        batch.tally.skipped += len(batch.tally.not_images)
    with terminate_as_interrupt():
        try:
            batch.run(dist_info.shard(jobs))
        except KeyboardInterrupt:
            batch.tally.interrupted = True
    return _finish(batch.tally, started, console, dist_info)


def _check_before_loading(args: argparse.Namespace, jobs: list[Job], dist_info: DistInfo) -> None:
    """What would make every image fail, found before the model loads: the output folder; unreadable inputs
    become per-image problems. Stale temporary files of a killed earlier run are removed (rank 0)."""
    from ..imageio.write import check_writable_folder, clean_stale_temps

    try:
        check_writable_folder(args.output)
    except InputImageError as exc:
        raise UsageError(f"-o {exc}") from None
    if dist_info.rank == 0:
        clean_stale_temps(args.output)
    for job in jobs:
        if job.problem is None and not os.access(job.source, os.R_OK):
            job.problem = "cannot read the file (permission denied)"


class _UpscaleBatch:
    """The upscale command's jobs: loads the model only if some job needs it, then runs the batch."""

    def __init__(self, args: argparse.Namespace, options: UpscaleOptions, expert: ExpertOptions, all_jobs: list[Job],
                 console: Console, dist_info: DistInfo) -> None:
        self.args, self.options, self.console, self.dist_info = args, options, console, dist_info
        self.expert = expert
        self.tally = Tally()
        self.sources = [j.source for j in all_jobs]  # write_image refuses to overwrite any of them
        # Planned outputs of all processes: an output whose name changes late must not take one of them.
        self.planned = {path_key(j.target).casefold(): j.source for j in all_jobs if j.problem is None}
        self.bars = not args.quiet and dist_info.rank == 0 and sys.stderr.isatty()
        self.upscaler: Upscaler | None = None

    def run(self, jobs: list[Job]) -> None:
        skip = self.args.skip_existing
        if any(j.problem is None and not (skip and j.target.exists()) for j in jobs) and not self._load():
            return
        BatchRunner(self._upscale, name=lambda job: str(job.source), console=self.console, tally=self.tally,
                    reason=_failure_reason, debug=self.args.debug, progress=self.bars).run(jobs)

    def _load(self) -> bool:
        try:
            self.upscaler = _load_upscaler(self)
        except Exception as exc:  # any load failure is reported on one line, exit 2
            if self.args.debug:
                raise
            self.console.error(str(exc) if isinstance(exc, StableSRError)
                               else f"cannot load the model: {type(exc).__name__}: {exc}")
            self.tally.fatal = True
            return False
        return True

    def _upscale(self, job: Job) -> Outcome:
        """Upscale one input. Raises on failure; StopBatch when the model itself failed."""
        try:
            return self._upscale_job(job)
        except MissingWeightsError as exc:  # about the model, not this file: it would fail for every image
            raise StopBatch(str(exc)) from exc

    def _upscale_job(self, job: Job) -> Outcome:
        args = self.args
        skipped = Outcome(f"skipped {job.source} (output exists)", skipped=True)
        if job.problem:
            raise StableSRError(job.problem)
        if args.skip_existing and job.target.exists():
            return skipped
        from ..imageio.read import read_image
        from ..imageio.write import write_image

        img = read_image(job.source, max_pixels=args.max_pixels or None)
        target = final_target(job, img.alpha is not None, args.ext, args.suffix)
        if target != job.target:
            owner = self.planned.get(path_key(target).casefold())
            if owner is not None and owner != job.source:
                raise StableSRError(f"output {target} would overwrite the result of {owner} (same file name)")
            if args.skip_existing and target.exists():
                return skipped
        assert self.upscaler is not None  # loaded whenever some job was neither refused nor skipped
        self.upscaler.check_size(img.rgb.shape[:2], self.options.scale, args.max_output_pixels or None,
                                 geometry=self.expert.quirks.geometry)
        reference = None
        if args.reference is not None:  # the face script's reference: same file name in another folder
            ref_path = Path(args.reference) / job.source.name
            if not ref_path.is_file():
                raise StableSRError(f"{ref_path}: no reference image for {job.source.name} (--reference)")
            reference = read_image(ref_path, max_pixels=args.max_pixels or None).rgb
        result = self.upscaler.upscale(img, self.options, self.expert, reference=reference)

        def write() -> str:  # run by the batch runner with Ctrl-C held until the image is counted
            written = write_image(target, result.rgb, alpha=result.alpha, is_grey=img.is_grey, bit_depth=img.bit_depth,
                                  icc_profile=img.icc_profile, quality=args.quality, protected=self.sources)
            return f"wrote {written} from {job.source}"

        return Outcome("", commit=write)


def _load_upscaler(batch: _UpscaleBatch) -> Upscaler:
    """Load the model named by the command line; check what would fail every image with it (tiles, prompts)."""
    args, console, dist_info = batch.args, batch.console, batch.dist_info
    from ..runtime.device import quiet_library_logs, resolve_device, resolve_dtype
    from ..service import Upscaler

    if args.model in BASELINES:
        from .baseline import ClassicalUpscaler

        console.detail(f"model {args.model} (classical, no weights)")
        return ClassicalUpscaler(args.model)  # type: ignore[return-value]
    device = resolve_device(args.device, local_rank=dist_info.local_rank if dist_info.distributed else None)
    dtype = resolve_dtype(args.precision, device)
    if device.type == "cpu" and not args.threads and "OMP_NUM_THREADS" not in os.environ:
        import torch

        from ..runtime.device import default_threads

        torch.set_num_threads(default_threads())  # not every core of a busy box: see --threads
        console.detail(f"{torch.get_num_threads()} CPU threads (set --threads to change)")
    if not args.debug:
        quiet_library_logs()
    upscaler = Upscaler.load(model_spec(args), device, dtype, announce=dist_info.rank == 0, progress=batch.bars,
                             note=console.note, compile=args.compile, offload=args.offload)
    upscaler.check(batch.options, batch.expert)
    cfg = upscaler.pipe.config
    console.detail(f"model {upscaler.name} on {device} ({str(dtype).removeprefix('torch.')}; "
                   f"{cfg.parameterization}-prediction, {cfg.sample_size} px)")
    return upscaler


def _failure_reason(job: Job, exc: Exception) -> str:
    """The one-line reason for a failed image (the file name is printed before it)."""
    from ..runtime.memory import free_accelerator_memory, is_out_of_memory

    if isinstance(exc, InputImageError):
        return exc.reason if exc.path == str(job.source) else str(exc)  # a write error names the output
    if isinstance(exc, StableSRError):
        return str(exc)
    if is_out_of_memory(exc):
        free_accelerator_memory()
        return "out of memory; try a smaller --tile-batch, --tile or --vae-tile, or --precision fp16/bf16"
    return f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def exit_code(failed: int, fatal: bool) -> int:
    """2 when the model could not be loaded, 1 when some image failed, else 0."""
    return EXIT_USAGE if fatal else EXIT_FAILED if failed else EXIT_OK


def _finish(tally: Tally, started: float, console: Console, dist_info: DistInfo) -> int:
    """Print this process's summary (and the job-wide one on rank 0 of a distributed run); the exit code."""
    if not (tally.fatal and tally.done + tally.skipped + len(tally.failed) == 0):  # the error said it all
        line = tally.line(time.monotonic() - started)
        console.out(f"{line} (interrupted)" if tally.interrupted else line)
        if tally.not_images:
            console.out(f"skipped {len(tally.not_images)} (not images: {', '.join(tally.not_images)})")
        if tally.failed:
            console.out("failed: " + ", ".join(tally.failed))
    if tally.interrupted:  # the other ranks are being stopped too; do not wait for them
        return EXIT_INTERRUPTED
    totals = all_reduce([tally.done, tally.skipped, len(tally.failed), int(tally.fatal)], dist_info)
    if totals is None:
        return exit_code(len(tally.failed), tally.fatal)
    done, skipped, failed, fatal = totals
    if dist_info.rank == 0:  # after the reduction every rank has finished: this is the job's wall time
        print(f"done {done}, skipped {skipped}, failed {failed} in {time.monotonic() - started:.1f} s "
              f"(all {dist_info.world_size} processes)", flush=True)
    # The job's result is settled and every output written. torchrun sends SIGTERM to the other workers
    # as soon as one exits non-zero; ignoring it now lets each exit with the job-wide code instead of
    # being reported as killed.
    ignore_termination()
    return exit_code(failed, bool(fatal))
