"""The ``ui`` command: ``stablesr ui [--host H] [--port P] [model flags] [--share] [--max-pixels N]
[--concurrency N]``; also ``python -m stablesr.app ui ...``. The work is :func:`stablesr.app.server.serve`.

The model flags mirror ``stablesr upscale``'s (``stablesr.cli.common.add_model_flags``); this room
ranks below the command line, so it declares them itself.

Example:
    >>> main(["ui", "--model", "turbo", "--port", "7861"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import StableSRError, UsageError
from ..runtime.console import one_line
from ..runtime.device import DTYPES
from .server import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "main", "register", "run"]

EXIT_OK, EXIT_USAGE = 0, 2


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and leaves exiting to :func:`main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``ui`` command to an argparse ``subparsers`` object (``set_defaults(func=run)``); returns its parser."""
    p = subparsers.add_parser(
        "ui", parents=list(parents), help="upscale in the browser (web UI)",
        description="Serve a web page for upscaling images in the browser, with a before/after slider. "
                    "Needs the ui extra: pip install \"stablesr[ui]\".",
    )
    p.set_defaults(func=run)
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=_int(1, 65535), default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--max-pixels", metavar="N", type=_int(0), default=DEFAULT_MAX_PIXELS,
                   help=f"refuse input images with more pixels (0 = no limit; default: {DEFAULT_MAX_PIXELS})")
    p.add_argument("--concurrency", metavar="N", type=_int(1), default=1,
                   help="upscales running at once; further requests wait in the queue (default: 1)")
    model = p.add_argument_group("model (as for `stablesr upscale`)")
    model.add_argument("--model", metavar="NAME",
                       help="model preset (see `stablesr models`); default: turbo, or the checkpoint's own settings")
    model.add_argument("--checkpoint", metavar="PATH",
                       help="official .ckpt/.safetensors file, or a folder made by `stablesr convert`")
    model.add_argument("--cfw-checkpoint", metavar="PATH", help="CFW autoencoder file (vqgan_cfw_00011.ckpt)")
    model.add_argument("--config", metavar="PATH", help="official-style YAML/JSON model config (other architectures)")
    model.add_argument("--prompt-embeds", metavar="PATH", help="precomputed prompt contexts (.safetensors)")
    model.add_argument("--offline", action="store_true", help="never download; use the Hugging Face cache only")
    model.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    model.add_argument("--precision", choices=sorted(DTYPES),
                       help="network precision (default: fp16 on CUDA, else fp32)")
    return p


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it is stopped; returns the exit code."""
    from ..hub import ModelSpec
    from .server import ServerOptions, serve

    spec = ModelSpec(preset=args.model, checkpoint=args.checkpoint, cfw_checkpoint=args.cfw_checkpoint,
                     config=args.config, prompt_embeds=args.prompt_embeds, offline=args.offline)
    opts = ServerOptions(host=args.host, port=args.port, share=args.share, max_pixels=args.max_pixels or None,
                         concurrency=args.concurrency)
    return serve(spec, opts, device=args.device, precision=args.precision, debug=bool(getattr(args, "debug", False)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stablesr.app ui ...``; returns the exit code (errors are one line, no traceback)."""
    parser = _Parser(prog="stablesr", description="StableSR web UI.")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    register(sub, [common])
    args = None
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except StableSRError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
