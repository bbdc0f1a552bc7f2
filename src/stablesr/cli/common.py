"""What the commands share: the parser class, number types, flag spelling, exit codes and flag groups."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ..config import MIN_TILE, PREDICTIONS
from ..errors import UsageError
from ..hub import ModelSpec, looks_like_repo_id
from ..runtime.console import one_line
from ..runtime.device import DTYPES
from .official import precision

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130



class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not usage + message) and leaves exiting to :func:`main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class DefaultsFormatter(argparse.HelpFormatter):
    """Shows a default only where it says something: not None/False, and not already in the help text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, "", argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def print_error(message: str) -> None:
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def normalise_flags(argv: list[str]) -> list[str]:
    """Accept the official scripts' underscore spellings: ``--tile_overlap 8`` means ``--tile-overlap 8``.

    Only the option name is changed (``--prompt_embeds=a_b.st`` keeps its value), and nothing after a
    bare ``--``. Tokens starting with ``--`` are always options to argparse, so no value is touched.

    Example:
        >>> normalise_flags(["--tile_overlap", "8", "--", "--keep_me"])
        ['--tile-overlap', '8', '--', '--keep_me']
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


def number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           finite: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` that parses ``kind`` and checks bounds, with a one-line message."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
                                             ) from None
        if finite and math.isinf(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if math.isnan(value) or (low is not None and (value < low or (low_open and value == low))):
            bound = f"> {low}" if low_open else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


def add_model_flags(group: Any, *, model_help: str, checkpoint_flag: bool = True) -> None:
    """``--model``, ``--checkpoint`` (unless the command takes it as a positional), CFW/config/prompt files."""
    group.add_argument("--model", default=None, metavar="NAME", help=model_help)
    if checkpoint_flag:
        group.add_argument("--checkpoint", "--ckpt", metavar="PATH",
                           help="official .ckpt/.safetensors file, or a folder made by `stablesr convert`; official "
                                "release files are recognised by content, whatever their name")
    group.add_argument("--cfw-checkpoint", "--vqgan-ckpt", metavar="PATH",
                       help="CFW autoencoder file (vqgan_cfw_00011.ckpt)")
    group.add_argument("--prediction-type", choices=PREDICTIONS, default=None,
                       help="what the diffusion model predicts (eps, or v for 768-v models); default: the release "
                            "file's, the config's, or eps with a warning")
    group.add_argument("--sample-size", "--input-size", metavar="PX", type=number(int, MIN_TILE * 8), default=None,
                       help="the model's native resolution (512, or 768 for 768-v); default: the release file's, "
                            "the config's, or 512")
    group.add_argument("--config", metavar="PATH", help="official-style YAML/JSON model config (other architectures)")
    group.add_argument("--prompt-embeds", metavar="PATH", help="precomputed prompt contexts (.safetensors)")
    group.add_argument("--offline", action="store_true", help="never download; use the Hugging Face cache only")


def add_device_flags(group: Any) -> None:
    group.add_argument("--device", metavar="DEVICE", default=None,
                       help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    group.add_argument("--precision", type=precision, choices=sorted(DTYPES), default=None,
                       help="network precision; the official spellings autocast (= fp16) and full (= fp32) work too "
                            "(default: fp16 on CUDA, else fp32)")
    group.add_argument("--offload", choices=("model", "sequential"), default=None,
                       help="keep the networks in CPU memory, each moved to the device only while it runs (model: "
                            "per stage; sequential: per layer, least memory, slowest); for small GPUs")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the denoiser (with CUDA graphs on CUDA); the first image of each size "
                            "compiles, later ones run faster")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model the flags name."""
    return ModelSpec(preset=args.model, checkpoint=args.checkpoint, cfw_checkpoint=args.cfw_checkpoint,
                     config=args.config, prompt_embeds=args.prompt_embeds, offline=args.offline,
                     prediction_type=getattr(args, "prediction_type", None),
                     sample_size=getattr(args, "sample_size", None))


def check_model_files(args: argparse.Namespace) -> None:
    """Named files must exist (a ``--checkpoint`` may also be a hub repository id)."""
    if args.config and not args.checkpoint:
        raise UsageError("--config describes a --checkpoint file; give --checkpoint too")
    for flag in ("checkpoint", "cfw_checkpoint", "config", "prompt_embeds"):
        value = getattr(args, flag)
        if value and not Path(value).exists() and not (flag == "checkpoint" and looks_like_repo_id(value)):
            raise UsageError(f"--{flag.replace('_', '-')} {value}: no such file or folder")


def version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"
