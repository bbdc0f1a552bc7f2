"""The ``stablesr`` command line: ``upscale``, ``download``, ``models``, ``convert`` and ``env``.

Every error a user can cause ends as one line on stderr and an exit code, never a traceback
(``--debug`` shows them): 0 success, 1 some images failed, 2 usage error, no inputs, or the model
cannot be loaded, 130 interrupted.

``upscale`` scales out without a code change: started by ``torchrun --nproc_per_node N -m stablesr
upscale ...`` or ``accelerate launch --multi_gpu --num_processes N -m stablesr upscale ...`` (which set
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), each process takes every N-th image of the sorted input list
and runs on ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import InputImageError, MissingWeightsError, StableSRError

if TYPE_CHECKING:  # torch, numpy and the pipeline load lazily so `stablesr models` stays instant
    import numpy as np
    import torch

    from .io import LoadedImage
    from .pipeline import StableSRPipeline

__all__ = ["build_parser", "main", "upscale_alpha"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "same")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEIGHT_SUFFIXES = frozenset({".ckpt", ".safetensors", ".pt", ".pth", ".bin"})
_DIST_TIMEOUT_S = 24 * 3600  # ranks wait this long for the slowest one before the global summary


class UsageError(StableSRError):
    """The command line is wrong (bad flag, no inputs, conflicting options): exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + message) and leaves exiting to :func:`main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# --------------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stablesr`` command line; returns the exit code.

    Example:
        >>> main(["upscale", "photos/", "-o", "results", "-s", "4"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(_normalise_flags(raw))
    except UsageError as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # `stablesr models | head -1`: the reader left; not an error worth a traceback
        with suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except StableSRError as exc:  # usage and model errors: the message is written for the user
        if args.debug:
            raise
        _print_error(str(exc))
        return EXIT_USAGE
    except Exception as exc:  # a bug still ends as one line; --debug shows where
        if args.debug:
            raise
        _print_error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED


def _print_error(message: str) -> None:
    print(f"error: {_one_line(message)}", file=sys.stderr, flush=True)


def _one_line(text: object) -> str:
    """Messages from libraries may span lines; ours must not."""
    return " ".join(str(text).split())


def _normalise_flags(argv: list[str]) -> list[str]:
    """Accept the official scripts' underscore spellings: ``--tile_overlap 8`` means ``--tile-overlap 8``.

    Only the option name is changed (``--prompt_embeds=a_b.st`` keeps its value), and nothing after a
    bare ``--``. Tokens starting with ``--`` are always options to argparse, so no value is touched.
    """
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + argv[i:]
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            token = name.replace("_", "-") + eq + value
        out.append(token)
    return out


# --------------------------------------------------------------------------------------------- parser


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows a default only where it says something: not None/False, and not already in the help text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, "", argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False
            ) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` and checks bounds, with a one-line message."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
                                             ) from None
        if math.isnan(value) or (low is not None and (value < low or (low_open and value == low))):
            bound = f"> {low}" if low_open else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``stablesr`` command and its subcommands.

    Example:
        >>> build_parser().parse_args(["upscale", "in.png", "-s", "2"]).scale
        2.0
    """
    parser = _Parser(prog="stablesr", description="StableSR real-world image super-resolution.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version('stablesr')}")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    _add_upscale(sub, common)
    _add_download(sub, common)
    _add_models(sub, common)
    _add_convert(sub, common)
    _add_env(sub, common)
    return parser


def _add_upscale(sub: Any, common: argparse.ArgumentParser) -> None:
    from .io import DEFAULT_MAX_PIXELS

    p = sub.add_parser(
        "upscale", parents=[common], help="upscale images, folders or globs",
        description="Upscale images. INPUT: image files, folders (their images) or glob patterns. One bad file "
                    "is reported and skipped. Under torchrun / accelerate launch each process takes its share.",
        formatter_class=_DefaultsFormatter,
    )
    p.set_defaults(handler=cmd_upscale)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", default="results", metavar="OUTDIR", help="output folder")
    p.add_argument("-s", "--scale", metavar="X", type=_number(float, 0, low_open=True), default=4.0,
                   help="upscaling factor; any positive number (output = round(scale x input size))")
    model = p.add_argument_group("model")
    model.add_argument("--model", default=None, metavar="NAME",
                       help="model preset (see `stablesr models`); default: turbo, or the checkpoint's own settings")
    model.add_argument("--checkpoint", metavar="PATH",
                       help="official .ckpt/.safetensors file, or a folder made by `stablesr convert`")
    model.add_argument("--cfw-checkpoint", metavar="PATH", help="CFW autoencoder file (vqgan_cfw_00011.ckpt)")
    model.add_argument("--config", metavar="PATH", help="official-style YAML/JSON model config (other architectures)")
    model.add_argument("--prompt-embeds", metavar="PATH", help="precomputed prompt contexts (.safetensors)")
    model.add_argument("--offline", action="store_true", help="never download; use the Hugging Face cache only")
    model.add_argument("--device", metavar="DEVICE", default=None,
                       help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    model.add_argument("--precision", choices=sorted(_DTYPES), default=None,
                       help="network precision (default: fp16 on CUDA, else fp32)")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--steps", metavar="N", type=_number(int, 1, 1000), default=None,
                          help="sampling steps (default: the model's, e.g. 4 for turbo, 200 otherwise)")
    sampling.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm", help="sampler")
    sampling.add_argument("--eta", metavar="ETA", type=_number(float, 0), default=0.0, help="DDIM eta")
    sampling.add_argument("-w", "--fidelity", metavar="W", type=_number(float, 0, 1), default=None,
                          help="CFW weight: 0 = most realistic, 1 = most faithful (default: the model's)")
    sampling.add_argument("--color-fix", choices=("adain", "wavelet", "none"), default=None,
                          help="colour correction against the input (default: the model's)")
    sampling.add_argument("--guidance-scale", metavar="G", type=_number(float, 0), default=1.0,
                          help="classifier-free guidance against --negative-prompt (1 = off)")
    sampling.add_argument("--prompt", metavar="TEXT", default="",
                          help="text prompt (the models were trained with the empty one)")
    sampling.add_argument("--negative-prompt", metavar="TEXT", default=None,
                          help="negative prompt (needs --guidance-scale != 1)")
    sampling.add_argument("--seed", metavar="N", type=int, default=42, help="random seed, the same for every image")
    tiles = p.add_argument_group("tiling (memory)")
    tiles.add_argument("--tile", metavar="N", type=_number(int, 1), default=None,
                       help="latent tile size, in latent pixels (8 image pixels each); default: the model's size / 8")
    tiles.add_argument("--tile-overlap", metavar="N", type=_number(int, 0), default=None,
                       help="latent tile overlap (default: half a tile)")
    tiles.add_argument("--tile-batch", metavar="N", type=_number(int, 1), default=4,
                       help="latent tiles per network call")
    tiles.add_argument("--vae-tile", metavar="PX", type=_number(int, 0), default=1024,
                       help="VAE tile size in image pixels (0 = never tile)")
    out = p.add_argument_group("output")
    out.add_argument("--suffix", metavar="TEXT", default="", help="appended to each output file name's stem")
    out.add_argument("--ext", type=str.lower, choices=_EXTENSIONS, default="png",
                     help="output format; same = the input's (images with transparency are written as PNG "
                          "when the format cannot hold it)")
    out.add_argument("--quality", metavar="Q", type=_number(int, 1, 100), default=95, help="JPEG/WebP quality")
    out.add_argument("--skip-existing", action="store_true", help="skip images whose output exists (resume)")
    out.add_argument("--max-pixels", metavar="N", type=_number(int, 0), default=DEFAULT_MAX_PIXELS,
                     help="refuse inputs with more pixels (0 = no limit)")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    out.add_argument("-v", "--verbose", action="store_true", help="one line per image")


def _add_download(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("download", parents=[common], help="fetch a model's weights into the Hugging Face cache",
                       description="Fetch preset weights (or check they are cached, with --offline).")
    p.set_defaults(handler=cmd_download)
    p.add_argument("models", nargs="+", metavar="MODEL", help="preset name(s), or all")
    p.add_argument("--offline", action="store_true", help="only check the cache")


def _add_models(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[common], help="list model presets and whether they are cached")
    p.set_defaults(handler=cmd_models)


def _add_convert(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("convert", parents=[common], help="convert official checkpoints to a diffusers-style folder",
                       description="Convert official checkpoint files (or a preset) into a folder that loads "
                                   "faster and safer (safetensors); use it with `upscale --checkpoint FOLDER`.")
    p.set_defaults(handler=cmd_convert)
    p.add_argument("checkpoint", metavar="CKPT", help="official checkpoint file, or a preset name")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder to write")
    p.add_argument("--cfw-checkpoint", metavar="PATH", help="CFW autoencoder file")
    p.add_argument("--config", metavar="PATH", help="official-style YAML/JSON model config")
    p.add_argument("--prompt-embeds", metavar="PATH", help="precomputed prompt contexts (.safetensors)")
    p.add_argument("--model", metavar="NAME", help="preset whose settings apply to CKPT")
    p.add_argument("--offline", action="store_true", help="never download")


def _add_env(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("env", parents=[common], help="versions, devices and cache locations (for bug reports)")
    p.set_defaults(handler=cmd_env)


# --------------------------------------------------------------------------------------------- scale-out


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun / accelerate launch job (rank 0 of 1 when run plainly).

    Example:
        >>> DistInfo(rank=1, world_size=2, local_rank=1).shard(["a", "b", "c"])
        ['b']
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun and accelerate set them."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise UsageError(f"inconsistent RANK={rank} / WORLD_SIZE={world} / LOCAL_RANK={local}")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world_size}] " if self.distributed else ""

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """Every ``world_size``-th item starting at ``rank``: each item goes to exactly one process."""
        return [item for i, item in enumerate(items) if i % self.world_size == self.rank]


def _all_reduce(values: list[int], dist_info: DistInfo) -> list[int] | None:
    """Sum ``values`` over all ranks (gloo, CPU), or None where that is not possible.

    Waiting here also keeps a rank that finished early from exiting while the others still work:
    torchrun stops every worker as soon as one exits with a non-zero code.
    """
    if not dist_info.distributed or not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        return None
    try:
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        if not dist.is_available():
            return None
        dist.init_process_group("gloo", timeout=timedelta(seconds=_DIST_TIMEOUT_S))
        try:
            tensor = torch.tensor(values, dtype=torch.int64)
            dist.all_reduce(tensor)
            return [int(v) for v in tensor.tolist()]
        finally:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the global summary is a nicety; each rank already printed its own
        return None


# --------------------------------------------------------------------------------------------- upscale


@dataclass
class Job:
    """One input and where its result goes; ``problem`` is set when it must not be processed."""

    source: Path
    target: Path
    problem: str | None = None


@dataclass
class Tally:
    """Counts of one run, and what went wrong."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    fatal: bool = False  # the model could not be loaded
    interrupted: bool = False

    def line(self, seconds: float) -> str:
        return f"done {self.done}, skipped {self.skipped}, failed {len(self.failed)} in {seconds:.1f} s"

    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.interrupted else _exit_code(len(self.failed), self.fatal)


def _exit_code(failed: int, fatal: bool) -> int:
    """2 when the model could not be loaded, 1 when some image failed, else 0."""
    return EXIT_USAGE if fatal else EXIT_FAILED if failed else EXIT_OK


@dataclass
class Console:
    """Where messages go: errors and notes to stderr (around progress bars), results to stdout."""

    quiet: bool = False
    verbose: bool = False
    prefix: str = ""

    def error(self, message: str) -> None:
        self._stderr(f"{self.prefix}error: {_one_line(message)}")

    def note(self, message: str) -> None:
        if not self.quiet:
            self._stderr(f"{self.prefix}note: {_one_line(message)}")

    def detail(self, message: str) -> None:
        if self.verbose:
            self.out(message)

    def out(self, message: str) -> None:
        print(f"{self.prefix}{message}", file=sys.stdout, flush=True)

    @staticmethod
    def _stderr(line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)  # keeps an active progress bar intact
        sys.stderr.flush()


def plan_jobs(sources: Sequence[Path], out_dir: Path, *, suffix: str, ext: str) -> list[Job]:
    """Output paths for ``sources``; inputs whose output would overwrite an input or another input's
    output get a ``problem`` (the first of a clash keeps its output).

    The extension is planned as if no input had transparency; :func:`_final_target` corrects the
    rare case where it matters (``--ext jpg`` for an RGBA PNG gives a PNG).

    Example:
        >>> jobs = plan_jobs([Path("a/x.png"), Path("b/x.jpg")], Path("out"), suffix="", ext="png")
        >>> [j.problem is None for j in jobs]
        [True, False]
    """
    from .io import output_path, resolve_extension

    inputs = {_path_key(s, real=True) for s in sources}
    owner: dict[str, Path] = {}
    jobs = []
    for src in sources:
        target = output_path(src, out_dir, suffix=suffix, ext=resolve_extension(ext, src.suffix, has_alpha=False))
        # Names differing only in case clash too: they would on macOS and Windows file systems.
        key = _path_key(target).casefold()
        problem = None
        if _path_key(target, real=True) in inputs:
            problem = f"output {target} would overwrite an input image; choose another -o, --suffix or --ext"
        elif key in owner:
            problem = (f"output {target} would overwrite the result of {owner[key]} (same file name); "
                       "rename one of them or process them in separate runs")
        else:
            owner[key] = src
        jobs.append(Job(src, target, problem))
    return jobs


def _path_key(path: Path, *, real: bool = False) -> str:
    """A comparable form of ``path``: absolute (or with links resolved), normalised as the platform compares."""
    return os.path.normcase(os.path.realpath(path) if real else os.path.abspath(path))


def _final_target(job: Job, img: LoadedImage, ext: str, suffix: str) -> Path:
    """The output path now that we know whether the image has alpha (JPEG/BMP cannot hold it)."""
    if img.alpha is None:
        return job.target
    from .io import output_path, resolve_extension

    return output_path(job.source, job.target.parent, suffix=suffix,
                       ext=resolve_extension(ext, job.source.suffix, has_alpha=True))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an alpha plane (HxW, [0, 1]) to ``size`` = (H, W), bicubic, clamped to [0, 1].

    Transparency is not image content, so it is resized, not diffused.

    Example:
        >>> import numpy as np
        >>> upscale_alpha(np.ones((4, 6), np.float32), (8, 12)).shape
        (8, 12)
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    plane = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
    resized = F.interpolate(plane, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return resized[0, 0].clamp_(0.0, 1.0).numpy()


@dataclass
class _Upscaler:
    """Runs the pipeline on one loaded image with the command line's settings."""

    pipe: StableSRPipeline
    call: dict[str, Any]
    seed: int

    def __call__(self, img: LoadedImage) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        # A CPU generator draws the same noise on every device, so a rerun (or another GPU) reproduces the output.
        generator = torch.Generator().manual_seed(self.seed)
        output = self.pipe(img.rgb, generator=generator, output_type="np", return_dict=True, **self.call)
        assert not isinstance(output, tuple)  # return_dict=True
        rgb = output.images[0]
        alpha = None if img.alpha is None else upscale_alpha(img.alpha, rgb.shape[:2])
        return rgb, alpha


def _pipeline_call_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``StableSRPipeline.__call__`` from the command line (None = model default)."""
    return {
        "upscale": args.scale,
        "num_inference_steps": args.steps,
        "sampler": args.sampler,
        "eta": args.eta,
        "cfw_weight": args.fidelity,
        "color_fix": args.color_fix,
        "guidance_scale": args.guidance_scale,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "tile_size": args.tile,
        "tile_overlap": args.tile_overlap,
        "tile_batch_size": args.tile_batch,
        "vae_tile_size": args.vae_tile or None,
    }


def _check_upscale_args(args: argparse.Namespace) -> None:
    """Conflicts argparse cannot see; all are usage errors (exit 2) before anything heavy happens."""
    if args.negative_prompt is not None and args.guidance_scale == 1.0:
        raise UsageError("--negative-prompt needs --guidance-scale other than 1 (the official scripts use 7)")
    if args.tile is not None and args.tile_overlap is not None and args.tile_overlap >= args.tile:
        raise UsageError(f"--tile-overlap ({args.tile_overlap}) must be smaller than --tile ({args.tile})")
    if args.config and not args.checkpoint:
        raise UsageError("--config describes a --checkpoint file; give --checkpoint too")
    for flag in ("checkpoint", "cfw_checkpoint", "config", "prompt_embeds"):
        value = getattr(args, flag)
        if value and not Path(value).exists() and not (flag == "checkpoint" and _looks_like_repo_id(value)):
            raise UsageError(f"--{flag.replace('_', '-')} {value}: no such file or folder")
    if "/" in args.suffix or os.sep in args.suffix:
        raise UsageError(f"--suffix {args.suffix!r}: must not contain a path separator (use -o for folders)")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder")


def _looks_like_repo_id(text: str) -> bool:
    """``owner/name`` of a hub repository (not a missing ``dir/file.ckpt``)."""
    return bool(_REPO_ID.fullmatch(text)) and Path(text).suffix.lower() not in _WEIGHT_SUFFIXES


def cmd_upscale(args: argparse.Namespace) -> int:
    """``stablesr upscale``: see the module docstring; returns the exit code."""
    started = time.monotonic()
    dist_info = DistInfo.from_env()
    console = Console(args.quiet, args.verbose, dist_info.prefix)
    _check_upscale_args(args)
    if args.model:
        from .registry import resolve_preset

        resolve_preset(args.model)  # an unknown name is a usage error before any work

    from .io import collect_inputs

    found, problems = collect_inputs(args.inputs)
    if not found:
        raise UsageError("no input images found" + "".join(f"; {problem}" for problem in problems))
    jobs = plan_jobs(sorted(found, key=str), Path(args.output), suffix=args.suffix, ext=args.ext)
    runner = _BatchRunner(args, jobs, console, dist_info)
    if dist_info.rank == 0:  # spec problems concern the whole job: report them once
        for problem in problems:
            console.error(problem)
            runner.tally.failed.append(problem.split(": ", 1)[0])
    with _terminate_as_interrupt():
        try:
            runner.run(dist_info.shard(jobs))
        except KeyboardInterrupt:
            runner.tally.interrupted = True
    return _finish(runner.tally, started, console, dist_info)


class _BatchRunner:
    """Processes jobs one by one, counting outcomes; one bad image never stops the batch."""

    def __init__(self, args: argparse.Namespace, all_jobs: list[Job], console: Console, dist_info: DistInfo
                 ) -> None:
        self.args, self.console, self.dist_info = args, console, dist_info
        self.tally = Tally()
        self.sources = [j.source for j in all_jobs]  # write_image refuses to overwrite any of them
        # Planned outputs of all processes: an output whose name changes late must not take one of them.
        self.planned = {_path_key(j.target).casefold(): j.source for j in all_jobs if j.problem is None}
        self.bars = not args.quiet and dist_info.rank == 0 and sys.stderr.isatty()
        self.upscaler: _Upscaler | None = None

    def run(self, jobs: list[Job]) -> None:
        """Load the model (only if some job needs it), then process ``jobs``."""
        skip = self.args.skip_existing
        if any(j.problem is None and not (skip and j.target.exists()) for j in jobs) and not self._load():
            return
        from tqdm import tqdm

        for job in tqdm(jobs, desc="images", unit="img", disable=not self.bars, file=sys.stderr):
            if not self._process(job):
                return  # the model failed in a way every further image would repeat

    def _load(self) -> bool:
        try:
            self.upscaler = _make_upscaler(self.args, self.console, self.dist_info, self.bars)
        except Exception as exc:  # any load failure is reported on one line, exit 2
            if self.args.debug:
                raise
            self.console.error(str(exc) if isinstance(exc, StableSRError)
                               else f"cannot load the model: {type(exc).__name__}: {exc}")
            self.tally.fatal = True
            return False
        return True

    def _process(self, job: Job) -> bool:
        """Process one job and count it; False when the batch must stop."""
        started = time.monotonic()
        try:
            written = self._upscale(job)
        except MissingWeightsError as exc:  # about the model, not this file: it would fail for every image
            self.console.error(str(exc))
            self.tally.fatal = True
            return False
        except Exception as exc:  # one bad image must not stop the batch
            if self.args.debug:
                raise
            self.console.error(f"{job.source}: {_failure_reason(job, exc)}")
            self.tally.failed.append(str(job.source))
            return True
        if written is None:
            self.tally.skipped += 1
            self.console.detail(f"skipped {job.source} (output exists)")
        else:
            self.tally.done += 1
            self.console.detail(f"wrote {written} from {job.source} in {time.monotonic() - started:.1f} s")
        return True

    def _upscale(self, job: Job) -> Path | None:
        """Upscale one input; returns the written path, or None when skipped. Raises on failure."""
        args = self.args
        if job.problem:
            raise StableSRError(job.problem)
        if args.skip_existing and job.target.exists():
            return None
        from .io import read_image, write_image

        img = read_image(job.source, max_pixels=args.max_pixels or None)
        target = _final_target(job, img, args.ext, args.suffix)
        if target != job.target:
            owner = self.planned.get(_path_key(target).casefold())
            if owner is not None and owner != job.source:
                raise StableSRError(f"output {target} would overwrite the result of {owner} (same file name)")
            if args.skip_existing and target.exists():
                return None
        assert self.upscaler is not None  # loaded whenever some job was neither refused nor skipped
        rgb, alpha = self.upscaler(img)
        return write_image(target, rgb, alpha=alpha, is_grey=img.is_grey, bit_depth=img.bit_depth,
                           icc_profile=img.icc_profile, quality=args.quality, protected=self.sources)


def _failure_reason(job: Job, exc: BaseException) -> str:
    """The one-line reason for a failed image (the file name is printed before it)."""
    if isinstance(exc, InputImageError):
        return exc.reason if exc.path == str(job.source) else str(exc)  # a write error names the output
    if isinstance(exc, StableSRError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        _free_accelerator_memory()
        return "out of memory; try a smaller --tile-batch, --tile or --vae-tile, or --precision fp16/bf16"
    return f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def _free_accelerator_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _finish(tally: Tally, started: float, console: Console, dist_info: DistInfo) -> int:
    """Print this process's summary (and the job-wide one on rank 0 of a distributed run); the exit code."""
    if not (tally.fatal and tally.done + tally.skipped + len(tally.failed) == 0):  # the error said it all
        line = tally.line(time.monotonic() - started)
        console.out(f"{line} (interrupted)" if tally.interrupted else line)
        if tally.failed:
            console.out("failed: " + ", ".join(tally.failed))
    if tally.interrupted:  # the other ranks are being stopped too; do not wait for them
        return EXIT_INTERRUPTED
    totals = _all_reduce([tally.done, tally.skipped, len(tally.failed), int(tally.fatal)], dist_info)
    if totals is None:
        return tally.exit_code()
    done, skipped, failed, fatal = totals
    if dist_info.rank == 0:  # after the reduction every rank has finished: this is the job's wall time
        print(f"done {done}, skipped {skipped}, failed {failed} in {time.monotonic() - started:.1f} s "
              f"(all {dist_info.world_size} processes)", flush=True)
    # The job's result is settled and every output written. torchrun sends SIGTERM to the other workers
    # as soon as one exits non-zero; ignoring it now lets each exit with the job-wide code instead of
    # being reported as killed.
    with suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _exit_code(failed, bool(fatal))


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (what torchrun sends to stop workers) like Ctrl-C, so clean-up code runs."""

    def raise_interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------------------------- model loading


def _resolve_device(requested: str | None, dist_info: DistInfo) -> torch.device:
    """The device to run on; a plain ``cuda`` means ``cuda:LOCAL_RANK`` in a distributed run."""
    import torch

    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    count = torch.cuda.device_count()
    if device.index is None and dist_info.distributed:
        # One GPU per local rank; more processes than GPUs share them round-robin.
        device = torch.device("cuda", dist_info.local_rank % count)
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {device}: only {count} CUDA device(s) here")
    if device.index is not None:
        torch.cuda.set_device(device)  # so code that uses "the current device" agrees
    return device


def _quiet_library_logs() -> None:
    """Keep diffusers/transformers warnings off the terminal: they are not actionable for a CLI user
    (e.g. diffusers warns on every ``.to(dtype=...)``), and stderr is for our one-line messages."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def _resolve_dtype(precision: str | None, device: torch.device) -> torch.dtype:
    import torch

    name = precision or ("fp16" if device.type == "cuda" else "fp32")
    return getattr(torch, _DTYPES[name])


def _make_upscaler(args: argparse.Namespace, console: Console, dist_info: DistInfo, bars: bool) -> _Upscaler:
    """Load the model named by the command line and check it can condition on the requested prompts."""
    device = _resolve_device(args.device, dist_info)
    dtype = _resolve_dtype(args.precision, device)
    if not args.debug:
        _quiet_library_logs()
    pipe = _load_pipeline(args, device, dtype, console, announce=dist_info.rank == 0)
    pipe.set_progress_bar_config(disable=not bars)
    # Encode the prompts now: a prompt the model cannot encode is a model error, not one per image.
    pipe.encode_prompt(args.prompt)
    if args.guidance_scale != 1.0:
        pipe.encode_prompt(args.negative_prompt or "")
    console.detail(f"model {pipe.config.name} on {device} ({str(dtype).removeprefix('torch.')})")
    return _Upscaler(pipe, _pipeline_call_args(args), args.seed)


def _load_pipeline(args: argparse.Namespace, device: torch.device | None, dtype: torch.dtype | None,
                   console: Console, *, announce: bool) -> StableSRPipeline:
    """A preset (downloaded or cached), an official checkpoint file, or a converted folder / hub repo."""
    from .registry import DEFAULT_PRESET, apply_preset_defaults, load_preset_pipeline, resolve_preset

    preset = resolve_preset(args.model) if args.model else None
    if not args.checkpoint:
        return load_preset_pipeline(preset or resolve_preset(DEFAULT_PRESET), device, dtype, args.offline,
                                    cfw_ckpt=args.cfw_checkpoint, prompt_embeds=args.prompt_embeds,
                                    announce=announce)
    from .pipeline import StableSRPipeline

    ckpt = Path(args.checkpoint)
    if ckpt.is_dir() or not ckpt.exists():  # a converted folder, or a hub repo holding one
        if args.cfw_checkpoint or args.config or args.prompt_embeds:
            raise UsageError("--cfw-checkpoint, --config and --prompt-embeds apply to checkpoint files, "
                             "not to a converted folder (it holds them already)")
        pipe = StableSRPipeline.from_pretrained(ckpt if ckpt.is_dir() else args.checkpoint, dtype=dtype,
                                                device=device, local_files_only=args.offline)
    else:
        settings = {}
        if preset is not None and not args.config:  # the preset says what the file name may not
            settings = {"prediction_type": preset.prediction_type, "image_size": preset.image_size}
        pipe = StableSRPipeline.from_single_file(ckpt, args.cfw_checkpoint, config=args.config,
                                                 prompt_embeds=args.prompt_embeds, dtype=dtype, device=device,
                                                 **settings)
        if not args.cfw_checkpoint:
            console.note("no --cfw-checkpoint: decoding with the checkpoint's own VAE (--fidelity has no effect)")
    if preset is not None:
        apply_preset_defaults(pipe, preset)
    return pipe


# --------------------------------------------------------------------------------------------- other commands


def cmd_download(args: argparse.Namespace) -> int:
    """``stablesr download MODEL...``: fetch presets into the Hugging Face cache and print where they are."""
    from .registry import PRESETS, download, resolve_preset

    names = list(PRESETS) if [m.lower() for m in args.models] == ["all"] else args.models
    presets = [resolve_preset(name) for name in names]  # all names checked before any download
    for preset in presets:
        for name, path in download(preset, offline=args.offline).items():
            print(f"{preset.name}: {name} -> {path}", flush=True)
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """``stablesr models``: the presets, their files, whether each is cached (with its size), the licence."""
    from huggingface_hub import constants

    from .registry import DEFAULT_PRESET, PRESETS, cached_files

    for preset in PRESETS.values():
        cached = cached_files(preset)
        default = " (default)" if preset.name == DEFAULT_PRESET else ""
        print(f"{preset.name}{default}: {preset.description}")
        print(f"  settings: {preset.steps} steps, fidelity {preset.cfw_weight}, colour fix {preset.color_fix}, "
              f"{preset.prediction_type}-prediction, {preset.image_size} px")
        for hub_file in preset.files:
            path = cached[hub_file.name]
            state = f"cached, {_size(path.stat().st_size)}" if path else f"not cached, {_size(hub_file.size_bytes)}"
            print(f"  {preset.repo_id}/{hub_file.name}: {state}")
        print(f"  licence: {preset.licence}")
    print(f"cache: {constants.HF_HUB_CACHE}; fetch a model with `stablesr download NAME`")
    return EXIT_OK


def _size(n: int | None) -> str:
    """Decimal units, as the hub shows sizes."""
    if n is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def cmd_convert(args: argparse.Namespace) -> int:
    """``stablesr convert``: official checkpoint (or preset) -> folder for ``upscale --checkpoint``."""
    out = Path(args.output)
    if out.exists() and not (out / "model_index.json").is_file():
        raise UsageError(f"-o {out}: exists and is not a stablesr model folder; not overwriting it")
    from .registry import PRESETS

    if not Path(args.checkpoint).exists():
        if args.checkpoint.lower().replace("_", "-") not in PRESETS:
            raise UsageError(f"{args.checkpoint}: no such checkpoint file or model preset")
        if args.model:
            raise UsageError("give either a preset name or --model with a checkpoint file, not both")
        args.model, args.checkpoint = args.checkpoint, None  # convert the preset's (downloaded) files
    _quiet_library_logs()
    pipe = _load_pipeline(args, None, None, Console(), announce=True)
    pipe.save_pretrained(out)
    print(f"wrote {out}", flush=True)
    return EXIT_OK


def cmd_env(args: argparse.Namespace) -> int:
    """``stablesr env``: what a bug report needs."""
    import platform

    import torch
    from huggingface_hub import constants

    from .paths import stablesr_home

    for package in ("stablesr", "torch", "diffusers", "transformers", "huggingface_hub", "safetensors",
                    "accelerate", "opencv-python-headless", "pillow", "numpy"):
        print(f"{package}: {_version(package)}")
    print(f"python: {platform.python_version()} ({sys.executable})")
    print(f"platform: {platform.platform()}")
    print(f"cuda available: {'yes' if torch.cuda.is_available() else 'no'} "
          f"(torch CUDA build: {torch.version.cuda or 'none, CPU-only'})")
    for line in _device_lines(torch):
        print(f"device: {line}")
    print(f"hf cache: {constants.HF_HUB_CACHE}")
    from .registry import _env_offline

    offline = _env_offline()
    print(f"hf offline: {'yes' if offline else 'no'} (HF_HUB_OFFLINE)")
    print(f"stablesr home: {stablesr_home()}")
    launch = {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ}
    print(f"distributed: {', '.join(f'{k}={v}' for k, v in launch.items()) or 'no (single process)'}")
    return EXIT_OK


def _device_lines(torch: Any) -> list[str]:
    lines = [f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.1f} GiB)")
    return lines


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"
