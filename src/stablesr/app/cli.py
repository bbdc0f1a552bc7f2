"""The ``ui`` command: ``stablesr ui [--host H] [--port P] [model flags] [--share] [--max-pixels N]
[--concurrency N]``.

Loads the model once, then serves the page until Ctrl-C (or SIGTERM). All temporary files (uploads,
results, Gradio's cache) live in one private folder that is removed on exit. The server listens on
127.0.0.1 unless ``--host`` says otherwise, and warns when it listens on every interface.

Example:
    >>> main(["ui", "--model", "turbo", "--port", "7861"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

from ..cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    DefaultsFormatter,
    Parser,
    add_device_flags,
    add_model_flags,
    normalise_flags,
    number,
    print_error,
)
from ..errors import StableSRError
from ..runtime.console import one_line

__all__ = ["DEFAULT_MAX_PIXELS", "main", "register", "run"]

#: The page's default input limit: a shared server should refuse what would take hours.
DEFAULT_MAX_PIXELS = 16_000_000


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """Add the ``ui`` command to an argparse ``subparsers`` object (``set_defaults(func=run)``); returns its parser."""
    p = subparsers.add_parser(
        "ui", parents=list(parents), help="upscale in the browser (web UI)", formatter_class=DefaultsFormatter,
        description="Serve a web page for upscaling images in the browser, with a before/after slider. "
                    "Needs the ui extra: pip install \"stablesr[ui]\".",
    )
    p.set_defaults(func=run)
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=number(int, 1, 65535), default=7860, help="port")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--max-pixels", metavar="N", type=number(int, 0), default=DEFAULT_MAX_PIXELS,
                   help="refuse input images with more pixels (0 = no limit)")
    p.add_argument("--concurrency", metavar="N", type=number(int, 1), default=1,
                   help="upscales running at once; further requests wait in the queue")
    model = p.add_argument_group("model (as for `stablesr upscale`)")
    add_model_flags(model, model_help="model preset (see `stablesr models`); default: turbo, or the checkpoint's "
                                      "own settings")
    add_device_flags(model)
    return p


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it is stopped; returns the exit code."""
    from ..cli.common import check_model_files, model_spec
    from .backend import Backend, check_spec

    _keep_gradio_offline()
    check_model_files(args)  # a mistyped path, preset or device is a usage error, before anything starts
    spec = model_spec(args)
    check_spec(spec, args.device)
    max_pixels = args.max_pixels or None
    debug = bool(getattr(args, "debug", False))
    backend, load_error = None, None
    _note("loading the model ...")
    try:
        backend = Backend.load(spec, device=args.device, precision=args.precision, max_pixels=max_pixels,
                               debug=debug)
    except Exception as exc:  # the page says why, so a user without a terminal sees it too
        if debug:
            raise
        load_error = one_line(exc) if isinstance(exc, StableSRError) else \
            f"cannot load the model: {type(exc).__name__}: {one_line(exc)}"
        _note(f"error: {load_error}")
    private = Path(tempfile.mkdtemp(prefix="stablesr-ui-"))  # mode 0700: only this user can read it
    os.environ["GRADIO_TEMP_DIR"] = str(private / "gradio")  # before gradio is imported: its cache lives here
    previous = _terminate_as_interrupt()
    try:
        return _serve(args, backend, load_error, private, max_pixels)
    finally:
        with suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(private, ignore_errors=True)


def _serve(args: argparse.Namespace, backend: Any, load_error: str | None, private: Path,
           max_pixels: int | None) -> int:
    try:
        import gradio  # noqa: F401 - only to give a helpful message when the extra is missing
    except ImportError:
        raise StableSRError('the web UI needs gradio: pip install "stablesr[ui]"') from None
    from .page import PageOptions, build_demo

    demo = build_demo(backend, PageOptions(private / "gradio" / "results", concurrency=args.concurrency,
                                           max_pixels=max_pixels), load_error)
    if args.host in ("0.0.0.0", "::"):
        _note(f"warning: listening on every network interface ({args.host}): anyone who can reach this "
              "machine can use the page and the model")
    _note(f"temporary files in {private} (removed on exit)")
    try:
        _, local_url, share_url = demo.launch(
            server_name=args.host, server_port=args.port, share=args.share, inbrowser=False, quiet=True,
            show_error=False, ssr_mode=False, footer_links=["api"], run_history=False, max_file_size="200mb",
            prevent_thread_lock=True)
    except OSError as exc:  # the port is taken, or the address is not ours
        raise StableSRError(f"cannot listen on {args.host}:{args.port}: {' '.join(str(exc).split())}") from None
    try:
        _note(f"serving on {local_url}" + (f" and {share_url}" if share_url else "") + " (Ctrl-C to stop)")
        while demo.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        _note("stopping")
    finally:
        with suppress(Exception):
            demo.close()
    return EXIT_OK


def _keep_gradio_offline() -> None:
    """No telemetry or version checks (set before gradio is imported); our own share flag decides tunnels."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.pop("GRADIO_SHARE", None)
    no_proxy = os.environ.get("NO_PROXY", "")
    if "127.0.0.1" not in no_proxy:  # launch() checks that the local server answers, through any proxy
        os.environ["NO_PROXY"] = ",".join(filter(None, [no_proxy, "127.0.0.1", "localhost"]))


def _terminate_as_interrupt() -> Any:
    """SIGTERM behaves like Ctrl-C, so the server closes and the temporary folder is removed."""

    def interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use)
        return signal.SIG_DFL


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stablesr.app ui ...``; returns the exit code (errors are one line, no traceback)."""
    parser = Parser(prog="stablesr", description="StableSR web UI.")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    register(sub, [common])
    args = None
    try:
        args = parser.parse_args(normalise_flags(list(sys.argv[1:] if argv is None else argv)))
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except StableSRError as exc:
        if getattr(args, "debug", False):
            raise
        print_error(str(exc))
        return EXIT_USAGE
