"""``stablesr ui [--host H] [--port P] [model flags] [--share] [--max-pixels N] [--concurrency N]``.

Serves the web page of :mod:`stablesr.app` (gradio is imported only when the server starts).

Example:
    >>> build_parser().parse_args(["ui", "--model", "turbo"]).host  # doctest: +SKIP
    '127.0.0.1'
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..app.server import DEFAULT_MAX_PIXELS
from .common import add_device_flags, add_model_flags, check_model_files, model_spec, number

__all__ = ["register", "run"]


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``ui`` command; returns its parser."""
    p = subparsers.add_parser(
        "ui", parents=list(parents), help="upscale in the browser (web UI)",
        description="Serve a web page for upscaling images in the browser, with a before/after slider. "
                    "Needs the ui extra: pip install \"stablesr[ui]\".",
    )
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=number(int, 1, 65535), default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--max-pixels", metavar="N", type=number(int, 0), default=DEFAULT_MAX_PIXELS,
                   help=f"refuse input images with more pixels (0 = no limit; default: {DEFAULT_MAX_PIXELS})")
    p.add_argument("--concurrency", metavar="N", type=number(int, 1), default=1,
                   help="upscales running at once; further requests wait in the queue (default: 1)")
    model = p.add_argument_group("model (as for `stablesr upscale`)")
    add_model_flags(model, model_help="model preset (see `stablesr models`); default: turbo, "
                                      "or the checkpoint's own settings")
    add_device_flags(model)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it is stopped; returns the exit code."""
    from ..app.server import ServerOptions, serve  # gradio loads only now

    check_model_files(args)
    opts = ServerOptions(host=args.host, port=args.port, share=args.share, max_pixels=args.max_pixels or None,
                         concurrency=args.concurrency)
    return serve(model_spec(args), opts, device=args.device, precision=args.precision,
                 debug=bool(getattr(args, "debug", False)), compile=args.compile, offload=args.offload)
