"""The web UI's model side (:mod:`stablesr.app.backend`) on the tiny golden model, and the ``ui`` command's
argument handling, without a server or a browser (those are in test_ui_server.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stablesr.app.backend import Backend, describe_error
from stablesr.cli.ui import DEFAULT_MAX_PIXELS, register, run
from stablesr.config import UpscaleOptions
from stablesr.errors import InputImageError
from stablesr.hub import ModelSpec


@pytest.fixture(scope="module")
def backend(tiny_weights: dict[str, Path]) -> Backend:
    for key in ("ldm", "cfw", "config", "prompt_embeds"):
        if not tiny_weights[key].is_file():
            pytest.skip(f"{tiny_weights[key]} not available")
    spec = ModelSpec(checkpoint=str(tiny_weights["ldm"]), cfw_checkpoint=str(tiny_weights["cfw"]),
                     config=str(tiny_weights["config"]), prompt_embeds=str(tiny_weights["prompt_embeds"]))
    return Backend.load(spec, device="cpu", max_pixels=20_000)


def test_upscale_file_keeps_16_bit_and_alpha(backend: Backend, data_dir: Path, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    deep = cv2.imread(str(data_dir / "real_lr" / "tree_alpha_16bit.png"), cv2.IMREAD_UNCHANGED)
    source = tmp_path / "tree.png"
    cv2.imwrite(str(source), cv2.resize(deep, (40, 32), interpolation=cv2.INTER_AREA))
    original = source.read_bytes()
    result = backend.upscale_file(source, tmp_path / "out", UpscaleOptions(scale=2, steps=2, color_fix="wavelet"))
    out = cv2.imread(str(result.output), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (64, 80, 4)
    assert result.size == (80, 64) and result.output.suffix == ".png"
    with Image.open(result.before) as before:  # the slider's other side: the input at the output size
        assert before.size == (80, 64) and before.mode == "RGBA"
    assert source.read_bytes() == original  # the input is left alone


def test_upscale_file_refuses_images_above_the_pixel_limit(backend: Backend, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200), (10, 20, 30)).save(big)
    with pytest.raises(InputImageError, match=r"200x200 \(40,000 pixels\), above the limit of 20,000"):
        backend.upscale_file(big, tmp_path / "out", UpscaleOptions(scale=2, steps=1))
    assert not (tmp_path / "out").exists()


def test_a_cancelled_upscale_stops_at_its_next_step_and_a_stopped_backend_takes_no_more(
        backend: Backend, data_dir: Path, tmp_path: Path) -> None:
    from stablesr.errors import CancelledError, StableSRError

    source = tmp_path / "photo.png"
    with Image.open(data_dir / "real_lr" / "0030.jpg") as im:
        im.convert("RGB").resize((40, 32)).save(source)
    asked: list[int] = []

    def cancelled() -> bool:  # the page goes away during step 3
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(CancelledError):
        backend.upscale_file(source, tmp_path / "out", UpscaleOptions(scale=2, steps=500), cancelled)
    assert len(asked) == 3  # asked once per step, and nothing ran after the third
    result = backend.upscale_file(source, tmp_path / "out2", UpscaleOptions(scale=2, steps=2), lambda: False)
    assert result.size == (80, 64)  # the next request runs normally

    assert backend.stop(timeout_s=5)  # nothing running: returns at once
    with pytest.raises(StableSRError, match="the server is stopping"):
        backend.upscale_file(source, tmp_path / "out3", UpscaleOptions(scale=2, steps=1))
    backend._stopping.clear()  # the module's other tests share this backend


def test_running_sessions_cancel_only_the_page_that_went_away() -> None:
    pytest.importorskip("gradio")
    from types import SimpleNamespace

    from stablesr.app.page import _RunningSessions

    sessions = _RunningSessions()
    a, b = SimpleNamespace(session_hash="a"), SimpleNamespace(session_hash="b")
    with sessions.running(a) as a_cancelled, sessions.running(b) as b_cancelled:
        assert not a_cancelled() and not b_cancelled()
        sessions.end(a)  # page a reloaded
        assert a_cancelled() and not b_cancelled()
        sessions.end(SimpleNamespace(session_hash="c"))  # a page with nothing running: nothing happens
    with sessions.running(a) as again:  # a new run of that session starts uncancelled
        assert not again()
        with sessions.running(a) as second:  # two runs of one page: both end with it
            sessions.end(a)
            assert again() and second()
    assert not sessions._runs  # nothing kept once the runs are over


def test_error_messages_name_the_upload_not_the_server_path() -> None:
    exc = InputImageError("/tmp/stablesr-ui-abc/gradio/123/x.png", "not a recognised image file")
    assert describe_error(exc, "x.png") == "x.png: not a recognised image file"
    assert describe_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "a.jpg").startswith(
        "a.jpg: out of memory; try a smaller scale or tile size")
    assert describe_error(ValueError("bad\nthing"), "a.jpg") == "a.jpg: unexpected ValueError: bad thing"


def test_register_adds_the_ui_command_with_safe_defaults() -> None:
    parser = argparse.ArgumentParser()
    command = register(parser.add_subparsers(), [])  # returns its parser, as the main CLI's commands do
    assert command.prog.endswith(" ui")
    args = parser.parse_args(["ui", "--model", "turbo"])
    assert args.func is run
    assert (args.host, args.port, args.share, args.concurrency, args.max_pixels) == (
        "127.0.0.1", 7860, False, 1, DEFAULT_MAX_PIXELS)


def test_bad_flags_fail_in_one_line_without_importing_gradio(tmp_path: Path) -> None:
    code = ("import sys; from stablesr.cli import main; rc = main(sys.argv[1:]); "
            "print('gradio' in sys.modules, rc)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), HF_HUB_OFFLINE="1")
    missing = tmp_path / "nope.ckpt"
    result = subprocess.run([sys.executable, "-c", code, "ui", "--checkpoint", str(missing)], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    assert result.stdout.split() == ["False", "2"], result.stderr
    assert result.stderr.strip() == f"error: --checkpoint {missing}: no such file or folder"
    result = subprocess.run([sys.executable, "-c", code, "ui", "--checkpoint", "/no/such/folder"], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    assert result.stdout.split() == ["False", "2"], result.stderr  # an absolute path is never a hub repository id
    assert "--checkpoint /no/such/folder: no such file or folder" in result.stderr
    result = subprocess.run([sys.executable, "-c", code, "ui", "--port", "99999"], capture_output=True,
                            text=True, env=env, timeout=120, check=False)
    assert result.stdout.split() == ["False", "2"] and "--port: must be <= 65535, got 99999" in result.stderr
