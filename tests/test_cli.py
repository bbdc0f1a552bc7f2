"""End-to-end tests of the `stablesr` command line, run as a real subprocess on the tiny golden model.

Real images from ../shared/data are copied into a temporary folder at small sizes (the tiny model
works on at least 128 px, so every image costs about the same); one sampling step keeps a run at a
few seconds. No network: HF_HUB_OFFLINE=1 and an empty HF_HOME in every run.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require
from PIL import Image

from stablesr.cli import main
from stablesr.cli.common import normalise_flags
from stablesr.imageio.naming import plan_jobs
from stablesr.imaging.alpha import upscale_alpha
from stablesr.runtime.distributed import DistInfo

SUMMARY = re.compile(r"^done (\d+), skipped (\d+), failed (\d+) in [\d.]+ s", re.MULTILINE)


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of every run: offline, an empty Hugging Face home, a private stablesr home."""
    root = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), STABLESR_HOME=str(root / "stablesr"),
               OMP_NUM_THREADS="2")
    env.pop("HF_HUB_CACHE", None)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def tiny_flags(tiny_weights: dict[str, Path]) -> list[str]:
    for key in ("ldm", "cfw", "config", "prompt_embeds"):
        require(tiny_weights[key])
    return ["--checkpoint", str(tiny_weights["ldm"]), "--cfw-checkpoint", str(tiny_weights["cfw"]),
            "--config", str(tiny_weights["config"]), "--prompt-embeds", str(tiny_weights["prompt_embeds"]),
            "--prediction-type", "eps", "--steps", "1", "--device", "cpu"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stablesr", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, check=False)


def sha256_tree(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary or hidden files (a partial output would show up here)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def summary(stdout: str) -> tuple[int, int, int]:
    match = SUMMARY.search(stdout)
    assert match, f"no summary line in: {stdout!r}"
    return int(match[1]), int(match[2]), int(match[3])


def small_copy(src: Path, dst: Path, size: tuple[int, int] = (48, 40), **save: Any) -> Path:
    """A downscaled copy of ``src`` keeping its mode (RGB, L, RGBA)."""
    with Image.open(src) as im:
        im.resize(size, Image.Resampling.LANCZOS).save(dst, **save)
    return dst


def ramp_jpeg(dst: Path, orientation: int | None = None) -> Path:
    """A 48x40 RGB JPEG, dark on the left and bright on the right, optionally with an EXIF orientation."""
    x = np.linspace(0, 255, 48, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(x, (40, 48, 3)).astype(np.uint8)
    im = Image.fromarray(pixels)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(dst, quality=95, exif=exif.tobytes())
    return dst


# --------------------------------------------------------------------------------------------- a mixed batch


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, cli_env: dict[str, str],
          tiny_flags: list[str]) -> dict[str, object]:
    """One run over RGB JPEG, grey PNG, RGBA PNG, 16-bit RGBA PNG and an EXIF-rotated JPEG at scale 1.5."""
    cv2 = pytest.importorskip("cv2")
    real = data_dir / "real_lr"
    root = tmp_path_factory.mktemp("batch")
    inputs = root / "in"
    inputs.mkdir()
    small_copy(real / "0030.jpg", inputs / "photo.jpg", quality=95)
    small_copy(real / "00017_gray.png", inputs / "grey.png")
    with Image.open(real / "children-alpha.png") as im:
        rgba = np.array(im.convert("RGBA").resize((48, 40), Image.Resampling.LANCZOS))
    rgba[:, :24, 3], rgba[:, 24:, 3] = 0, 255  # a known alpha plane: left transparent, right opaque
    Image.fromarray(rgba, "RGBA").save(inputs / "alpha.png")
    deep = cv2.imread(str(real / "tree_alpha_16bit.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape[2] == 4
    cv2.imwrite(str(inputs / "deep16.png"), cv2.resize(deep, (48, 40), interpolation=cv2.INTER_AREA))
    ramp_jpeg(inputs / "rotated.jpg", orientation=6)
    before = sha256_tree(inputs)
    out = root / "out"
    # Underscore spelling on purpose (the official scripts' style); wavelet keeps the input's layout visible.
    result = run_cli(["upscale", str(inputs), "-o", str(out), "-s", "1.5", "--tile_overlap", "8",
                      "--color-fix", "wavelet", *tiny_flags], cli_env)
    return {"inputs": inputs, "out": out, "result": result, "before": before, "root": root}


@pytest.mark.slow
def test_batch_succeeds_with_summary(batch: dict) -> None:
    result = batch["result"]
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout) == (5, 0, 0)
    assert "Traceback" not in result.stderr and "error" not in result.stderr


@pytest.mark.slow
def test_batch_sizes_and_modes(batch: dict) -> None:
    out: Path = batch["out"]
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "deep16.png", "grey.png", "photo.png",
                                                     "rotated.png"]
    expected_mode = {"photo.png": "RGB", "grey.png": "L", "alpha.png": "RGBA", "deep16.png": "RGBA"}
    for name, mode in expected_mode.items():
        with Image.open(out / name) as im:
            assert im.size == (72, 60), name  # round(1.5 x 48), round(1.5 x 40)
            assert im.mode == mode, name


@pytest.mark.slow
def test_batch_alpha_is_upscaled_and_reattached(batch: dict) -> None:
    with Image.open(batch["out"] / "alpha.png") as im:
        alpha = np.asarray(im)[..., 3].astype(np.float32)
    assert alpha[:, :30].max() <= 8  # left of the edge (input column 24 -> output 36): transparent
    assert alpha[:, 42:].min() >= 247  # right of it: opaque
    with Image.open(batch["inputs"] / "alpha.png") as im:
        reference = np.asarray(im.getchannel("A").resize((72, 60), Image.Resampling.BICUBIC), np.float32)
    assert np.abs(alpha - reference).mean() < 6


@pytest.mark.slow
def test_batch_16bit_stays_16bit(batch: dict) -> None:
    import cv2

    data = cv2.imread(str(batch["out"] / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert data is not None and data.dtype == np.uint16 and data.shape == (60, 72, 4)
    assert len(np.unique(data[..., :3])) > 256  # real 16-bit values, not 8-bit ones scaled up


@pytest.mark.slow
def test_batch_exif_orientation_is_applied(batch: dict) -> None:
    with Image.open(batch["out"] / "rotated.png") as im:
        assert im.size == (60, 72)  # stored 48x40, displayed 40x48 (rotated 90 degrees clockwise)
        grey = np.asarray(im.convert("L"), np.float32)
    # The stored left-to-right ramp is top-to-bottom once rotated.
    assert grey[-12:].mean() - grey[:12].mean() > 100
    assert abs(grey[:, -12:].mean() - grey[:, :12].mean()) < 40


@pytest.mark.slow
def test_batch_leaves_inputs_untouched_and_no_temp_files(batch: dict) -> None:
    assert sha256_tree(batch["inputs"]) == batch["before"]
    assert leftovers(batch["out"]) == []


@pytest.mark.slow
def test_skip_existing_rerun_skips_everything(batch: dict, cli_env: dict[str, str], tiny_flags: list[str]) -> None:
    out: Path = batch["out"]
    written = sha256_tree(out)
    result = run_cli(["upscale", str(batch["inputs"]), "-o", str(out), "-s", "1.5", "--skip-existing",
                      *tiny_flags], cli_env)
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout) == (0, 5, 0)
    assert sha256_tree(out) == written


# --------------------------------------------------------------------------------------------- bad files


@pytest.mark.slow
def test_bad_files_are_reported_and_the_batch_continues(tmp_path: Path, data_dir: Path, cli_env: dict[str, str],
                                                         tiny_flags: list[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = small_copy(data_dir / "real_lr" / "ADE_val_00000114.jpg", inputs / "good.jpg")
    png = small_copy(data_dir / "real_lr" / "children-alpha.png", tmp_path / "whole.png").read_bytes()
    bad = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "noise.jpg": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "notes.png": b"this is a text file, not an image\n",
    }
    for name, data in bad.items():
        (inputs / name).write_bytes(data)
    before = sha256_tree(inputs)
    out = tmp_path / "out"
    result = run_cli(["upscale", str(inputs), "-o", str(out), "-s", "2", *tiny_flags], cli_env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert summary(result.stdout) == (1, 0, 4)
    for name in bad:
        lines = [line for line in result.stderr.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    assert "failed:" in result.stdout
    assert [p.name for p in out.iterdir()] == [good.with_suffix(".png").name]
    with Image.open(out / "good.png") as im:
        assert im.size == (96, 80)
    assert sha256_tree(inputs) == before


# --------------------------------------------------------------------------------------------- naming


@pytest.mark.slow
def test_ext_same_and_name_collisions(tmp_path: Path, data_dir: Path, cli_env: dict[str, str],
                                      tiny_flags: list[str]) -> None:
    real = data_dir / "real_lr"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    small_copy(real / "0030.jpg", tmp_path / "a" / "cat.jpg", size=(48, 40))
    small_copy(real / "ADE_val_00000114.jpg", tmp_path / "b" / "cat.jpg", size=(40, 32))
    small_copy(real / "00017_gray.png", tmp_path / "b" / "dog.png")
    out = tmp_path / "out"
    result = run_cli(["upscale", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "-s", "2",
                      "--ext", "same", *tiny_flags], cli_env)
    assert result.returncode == 1, result.stderr
    assert summary(result.stdout) == (2, 0, 1)
    clash = [line for line in result.stderr.splitlines() if "b/cat.jpg" in line]
    assert len(clash) == 1 and "a/cat.jpg" in clash[0]
    assert sorted(p.name for p in out.iterdir()) == ["cat.jpg", "dog.png"]
    with Image.open(out / "cat.jpg") as im:
        assert im.format == "JPEG" and im.size == (96, 80)  # a/cat.jpg's result, not overwritten by b's


# --------------------------------------------------------------------------------------------- convert


@pytest.mark.slow
def test_convert_then_upscale_from_folder_is_byte_identical(tmp_path: Path, data_dir: Path,
                                                            cli_env: dict[str, str], tiny_flags: list[str],
                                                            tiny_weights: dict[str, Path]) -> None:
    model = tmp_path / "model"
    converted = run_cli(["convert", str(tiny_weights["ldm"]), "--cfw-checkpoint", str(tiny_weights["cfw"]),
                         "--config", str(tiny_weights["config"]), "--prompt-embeds",
                         str(tiny_weights["prompt_embeds"]), "-o", str(model)], cli_env)
    assert converted.returncode == 0, converted.stderr
    assert (model / "model_index.json").is_file()
    image = small_copy(data_dir / "real_lr" / "0030.jpg", tmp_path / "photo.jpg")
    single = run_cli(["upscale", str(image), "-o", str(tmp_path / "single"), "-s", "2", *tiny_flags], cli_env)
    folder = run_cli(["upscale", str(image), "-o", str(tmp_path / "folder"), "-s", "2", "--checkpoint", str(model),
                      "--steps", "1", "--device", "cpu"], cli_env)
    assert single.returncode == 0 and folder.returncode == 0, (single.stderr, folder.stderr)
    assert (tmp_path / "single" / "photo.png").read_bytes() == (tmp_path / "folder" / "photo.png").read_bytes()


@pytest.mark.slow
def test_convert_refuses_to_overwrite_a_foreign_folder(tmp_path: Path, cli_env: dict[str, str],
                                                       tiny_weights: dict[str, Path]) -> None:
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"precious")
    result = run_cli(["convert", str(tiny_weights["ldm"]), "-o", str(target)], cli_env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not overwriting" in result.stderr
    assert (target / "holiday.jpg").read_bytes() == b"precious"


# --------------------------------------------------------------------------------------------- info commands


@pytest.mark.slow
def test_env_and_models(cli_env: dict[str, str]) -> None:
    env = run_cli(["env"], cli_env)
    assert env.returncode == 0, env.stderr
    for field in ("stablesr:", "torch:", "diffusers:", "transformers:", "huggingface_hub:", "python:",
                  "cuda available:", "device: cpu", "hf cache:", "hf offline: yes"):
        assert field in env.stdout, field
    assert cli_env["HF_HOME"] in env.stdout
    models = run_cli(["models"], cli_env)
    assert models.returncode == 0, models.stderr
    for text in ("turbo (default)", "stablesr-512", "stablesr-768v", "face", "stablesr_turbo.ckpt",
                 "vqgan_cfw_00011.ckpt", "face_vqgan_cfw_00011.ckpt", "not cached, 6.48 GB", "S-Lab License 1.0"):
        assert text in models.stdout, text


@pytest.mark.slow
def test_offline_default_model_missing_is_one_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    ramp_jpeg(tmp_path / "photo.jpg")
    result = run_cli(["upscale", "photo.jpg"], cli_env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in ("stablesr_turbo.ckpt", "vqgan_cfw_00011.ckpt", "stablesr download turbo",
                 "hf download Iceclear/StableSR"):
        assert text in lines[0]
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------- interrupt


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(tmp_path: Path, cli_env: dict[str, str], tiny_flags: list[str]) -> None:
    """SIGINT after the first image is reported done (an event, not a sleep) stops the batch between images."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(20):
        ramp_jpeg(inputs / f"img{i:02d}.jpg")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "stablesr", "upscale", str(inputs), "-o", str(out), "-s", "2",
                             "-v", *tiny_flags], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    first_done = threading.Event()  # also set at end of output, so a crashed run does not wait for the timeout

    def read_stdout() -> None:  # "-v" prints "wrote ... from ..." once an image is written and counted
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("wrote "):
                first_done.set()
        first_done.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    stderr_box: list[str] = []
    err_reader = threading.Thread(target=lambda: stderr_box.append(proc.stderr.read()), daemon=True)
    err_reader.start()
    try:
        first_done.wait(timeout=600)
        assert any(line.startswith("wrote ") for line in lines), ("no image was reported done", "".join(lines))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=60)
    err_reader.join(timeout=60)
    stdout, stderr = "".join(lines), "".join(stderr_box)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    done, _, failed = summary(stdout)
    assert "(interrupted)" in stdout and 1 <= done < 20 and failed == 0
    assert leftovers(out) == []
    for path in out.iterdir():  # whatever was written is complete
        with Image.open(path) as im:
            im.load()


# --------------------------------------------------------------------------------------------- in-process units


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        ["upscale", str(tmp_path / "missing.png")],
        ["upscale", "x.png", "--steps", "0"],
        ["upscale", "x.png", "--fidelity", "1.5"],
        ["upscale", "x.png", "--ext", "gif"],
        ["upscale", "x.png", "--negative-prompt", "blurry"],
        ["upscale", "x.png", "--config", "tiny.json"],
        ["upscale", "x.png", "--bogus"],
        ["download", "nonexistent-model"],
        [],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        if argv:
            assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)


def test_underscore_flags_are_normalised() -> None:
    argv = ["--tile_overlap", "8", "--prompt_embeds=a_b.safetensors", "in_1.png", "--", "--keep_me"]
    assert normalise_flags(argv) == ["--tile-overlap", "8", "--prompt-embeds=a_b.safetensors", "in_1.png", "--",
                                      "--keep_me"]


def test_plan_jobs_refuses_clashes_and_overwriting_inputs(tmp_path: Path) -> None:
    a, b, c, d = (tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "c" / "y.png",
                  tmp_path / "d" / "x.jpg")
    jobs = plan_jobs([a, b, c, d], tmp_path / "out", suffix="", ext="png")
    # x.jpg + x.png: each keeps its source extension; a second x.jpg still clashes with the first
    assert [j.target.name for j in jobs] == ["x_jpg.png", "x_png.png", "y.png", "x_jpg.png"]
    assert [j.problem is None for j in jobs] == [True, True, True, False]
    assert str(a) in (jobs[3].problem or "")
    same = plan_jobs([a, b], tmp_path / "out", suffix="", ext="same")  # x.jpg and x.png: no clash
    assert all(j.problem is None for j in same)
    onto_input = plan_jobs([c], tmp_path / "c", suffix="", ext="png")
    assert "overwrite an input" in (onto_input[0].problem or "")


def test_sharding_covers_every_item_once() -> None:
    items = list(range(11))
    for world in (1, 2, 3, 4):
        shards = [DistInfo(rank, world, rank).shard(items) for rank in range(world)]
        assert sorted(x for shard in shards for x in shard) == items


def test_upscale_alpha_shape_and_range() -> None:
    alpha = np.zeros((4, 6), np.float32)
    alpha[:, 3:] = 1
    out = upscale_alpha(alpha, (9, 13))
    assert out.shape == (9, 13) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1  # bicubic overshoot is clamped
    assert np.allclose(out[:, 0], 0, atol=1e-6) and np.allclose(out[:, -1], 1, atol=1e-6)
