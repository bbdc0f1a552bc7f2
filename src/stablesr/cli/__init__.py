"""The ``stablesr`` command line: ``upscale``, ``download``, ``models``, ``convert``, ``env``, ``eval``, ``compare``.

Every error a user can cause ends as one line on stderr and an exit code, never a traceback
(``--debug`` shows them): 0 success, 1 some images failed, 2 usage error, no inputs, or the model
cannot be loaded, 130 interrupted.

Each command is one module exposing ``register(subparsers, parents)`` and ``run(args) -> int``; a new
command plugs in by adding its module to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress

from ..errors import StableSRError, UsageError
from ..evaluation import cli as evaluation_cli
from . import convert, download, env, make_testset, models, train, ui, upscale
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser, normalise_flags, print_error, version
from .official import rewrite_official

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (upscale, download, models, convert, env, make_testset, ui, train.TRAIN, train.MAKE_CFW_DATA)
"""The command modules, in the order ``stablesr --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``stablesr`` command and its subcommands.

    Example:
        >>> build_parser().parse_args(["upscale", "in.png", "-s", "2"]).scale
        2.0
    """
    parser = Parser(prog="stablesr", description="StableSR real-world image super-resolution.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('stablesr')}")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.register(sub, [common]).set_defaults(handler=command.run)
    evaluation_cli.register(sub, [common])  # `eval` and `compare`: each sets `func`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stablesr`` command line; returns the exit code.

    Example:
        >>> main(["upscale", "photos/", "-o", "results", "-s", "4"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(normalise_flags(rewrite_official(raw)))
    except UsageError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except BrokenPipeError:  # `stablesr models | head -1`: the reader left; not an error worth a traceback
        with suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except StableSRError as exc:  # usage and model errors: the message is written for the user
        if args.debug:
            raise
        print_error(str(exc))
        return EXIT_USAGE
    except Exception as exc:  # a bug still ends as one line; --debug shows where
        if args.debug:
            raise
        print_error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED
