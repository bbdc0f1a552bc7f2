"""Running the web UI: load the model once, serve the page until Ctrl-C or SIGTERM, clean up.

All temporary files (uploads, results, Gradio's cache) live in one private folder that is removed
on exit. The server listens on 127.0.0.1 unless told otherwise, and warns when it listens on every
interface. :mod:`stablesr.cli.ui` is the command line around :func:`serve`.

Example:
    >>> serve(ModelSpec(preset="turbo"), ServerOptions(port=7861))  # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..errors import StableSRError
from ..hub import ModelSpec
from ..runtime.console import one_line

__all__ = ["DEFAULT_MAX_PIXELS", "ServerOptions", "serve"]

#: The page's default input limit: a shared server should refuse what would take hours.
DEFAULT_MAX_PIXELS = 16_000_000


@dataclass(frozen=True)
class ServerOptions:
    """Where and how the page is served."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # input images above this are refused; None = no limit
    concurrency: int = 1  # upscales running at once; further requests wait in the queue


def serve(spec: ModelSpec, opts: ServerOptions, *, device: str | None = None, precision: str | None = None,
          debug: bool = False, compile: bool = False, offload: str | None = None) -> int:
    """Load the model named by ``spec`` and serve the page until stopped; returns the exit code.

    A wrong preset or device raises :class:`~stablesr.errors.UsageError` before anything starts. A
    model that cannot be loaded (missing weights, a bad file) does not stop the server: the page
    says why, so a user without a terminal sees it too.
    """
    from .backend import Backend, check_spec

    _keep_gradio_offline()
    check_spec(spec, device)
    backend, load_error = None, None
    _note("loading the model ...")
    try:
        backend = Backend.load(spec, device=device, precision=precision, max_pixels=opts.max_pixels, debug=debug,
                               compile=compile, offload=offload)
    except Exception as exc:
        if debug:
            raise
        load_error = one_line(exc) if isinstance(exc, StableSRError) else \
            f"cannot load the model: {type(exc).__name__}: {one_line(exc)}"
        _note(f"error: {load_error}")
    private = Path(tempfile.mkdtemp(prefix="stablesr-ui-"))  # mode 0700: only this user can read it
    os.environ["GRADIO_TEMP_DIR"] = str(private / "gradio")  # before gradio is imported: its cache lives here
    previous = _terminate_as_interrupt()
    try:
        return _serve(opts, backend, load_error, private)
    finally:
        with suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(private, ignore_errors=True)


def _serve(opts: ServerOptions, backend: Any, load_error: str | None, private: Path) -> int:
    try:
        import gradio  # noqa: F401 - only to give a helpful message when the extra is missing
    except ImportError:
        raise StableSRError('the web UI needs gradio: pip install "stablesr[ui]"') from None
    from .page import PageOptions, build_demo

    demo = build_demo(backend, PageOptions(private / "gradio" / "results", concurrency=opts.concurrency,
                                           max_pixels=opts.max_pixels), load_error)
    if opts.host in ("0.0.0.0", "::"):
        _note(f"warning: listening on every network interface ({opts.host}): anyone who can reach this "
              "machine can use the page and the model")
    _note(f"temporary files in {private} (removed on exit)")
    try:
        _, local_url, share_url = demo.launch(
            server_name=opts.host, server_port=opts.port, share=opts.share, inbrowser=False, quiet=True,
            show_error=False, ssr_mode=False, footer_links=["api"], run_history=False, max_file_size="200mb",
            prevent_thread_lock=True)
    except OSError as exc:  # the port is taken, or the address is not ours
        raise StableSRError(f"cannot listen on {opts.host}:{opts.port}: {' '.join(str(exc).split())}") from None
    try:
        _note(f"serving on {local_url}" + (f" and {share_url}" if share_url else "") + " (Ctrl-C to stop)")
        while demo.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        _note("stopping")
    finally:
        if backend is not None and not backend.stop():
            _note("warning: an upscale did not end in time")
        with suppress(Exception):
            demo.close()
    return 0


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
