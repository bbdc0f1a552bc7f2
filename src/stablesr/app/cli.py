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

from ..errors import StableSRError

__all__ = ["DEFAULT_MAX_PIXELS", "main", "register", "run"]

#: The page's default input limit: a shared server should refuse what would take hours.
DEFAULT_MAX_PIXELS = 16_000_000
EXIT_OK, EXIT_USAGE = 0, 2


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``ui`` command to an argparse ``subparsers`` object (``set_defaults(func=run)``)."""
    p = subparsers.add_parser(
        "ui", parents=list(parents), help="upscale in the browser (web UI)",
        description="Serve a web page for upscaling images in the browser, with a before/after slider. "
                    "Needs the ui extra: pip install \"stablesr[ui]\".",
    )
    p.set_defaults(func=run)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=_int_in(1, 65535), default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (off by default)")
    p.add_argument("--max-pixels", type=_int_in(0), default=DEFAULT_MAX_PIXELS,
                   help=f"refuse input images with more pixels (0 = no limit; default: {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--concurrency", type=_int_in(1), default=1,
                   help="upscales running at once; further requests wait in the queue (default: 1)")
    model = p.add_argument_group("model (as for `stablesr upscale`)")
    model.add_argument("--model", metavar="NAME", help="model preset (see `stablesr models`); default: turbo")
    model.add_argument("--checkpoint", metavar="PATH", help="official .ckpt/.safetensors file, or a converted folder")
    model.add_argument("--cfw-checkpoint", metavar="PATH", help="CFW autoencoder file (vqgan_cfw_00011.ckpt)")
    model.add_argument("--config", metavar="PATH", help="official-style YAML/JSON model config")
    model.add_argument("--prompt-embeds", metavar="PATH", help="precomputed prompt contexts (.safetensors)")
    model.add_argument("--offline", action="store_true", help="never download; use the Hugging Face cache only")
    model.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    model.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                       help="network precision (default: fp16 on CUDA, else fp32)")


def _int_in(low: int, high: int | None = None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}" if high else f"must be >= {low}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it is stopped; returns the exit code."""
    from .backend import Backend, ModelChoice, check_choice

    _keep_gradio_offline()
    choice = ModelChoice(model=args.model, checkpoint=args.checkpoint, cfw_checkpoint=args.cfw_checkpoint,
                         config=args.config, prompt_embeds=args.prompt_embeds, offline=args.offline,
                         device=args.device, precision=args.precision)
    max_pixels = args.max_pixels or None
    debug = bool(getattr(args, "debug", False))
    check_choice(choice)  # a mistyped path or preset is a usage error, before anything starts
    backend, load_error = None, None
    _note("loading the model ...")
    try:
        backend = Backend.load(choice, max_pixels=max_pixels, debug=debug)
    except Exception as exc:  # the page says why, so a user without a terminal sees it too
        if debug:
            raise
        load_error = " ".join(str(exc).split()) if isinstance(exc, StableSRError) else \
            f"cannot load the model: {type(exc).__name__}: {exc}"
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise StableSRError(f"{message} (see `{self.prog} --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stablesr.app ui ...``; returns the exit code (errors are one line, no traceback)."""
    parser = _Parser(prog="stablesr", description="StableSR web UI.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    register(sub, [common])
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except StableSRError as exc:
        if getattr(locals().get("args"), "debug", False):
            raise
        _note(f"error: {' '.join(str(exc).split())}")
        return EXIT_USAGE
