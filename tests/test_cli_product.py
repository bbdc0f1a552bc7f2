"""Issue 13's product part: official command lines, release files recognised by content, guards and defects.

Model runs use the official-format tiny golden checkpoints (the real loading path); the checks that need
no model use the classical ``--model bicubic`` baseline, which goes through the same CLI, naming and writing.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA
from PIL import Image
from test_cli import run_cli, small_copy, summary
from test_lightning_checkpoints import lightning14_checkpoint, lightning15_checkpoint

from stablesr import presets
from stablesr.cli import main
from stablesr.cli.official import rewrite_official
from stablesr.config import UpscaleOptions
from stablesr.errors import CheckpointError, OptionsError, StableSRError
from stablesr.hub import ModelSpec, load_model
from stablesr.imageio.write import clean_stale_temps
from stablesr.service import Upscaler


@pytest.fixture(scope="module")
def tiny(tiny_weights: dict[str, Path]) -> dict[str, str]:
    for key in ("ldm", "cfw", "config", "prompt_embeds"):
        if not tiny_weights[key].is_file():
            pytest.skip(f"{tiny_weights[key]} not available")
    return {k: str(v) for k, v in tiny_weights.items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment: offline, an empty Hugging Face home, a private stablesr home."""
    root = tmp_path_factory.mktemp("env")
    out = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out.update(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), STABLESR_HOME=str(root / "stablesr"),
               OMP_NUM_THREADS="2")
    return out


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private stablesr home (hash cache, licence marker) for in-process runs."""
    monkeypatch.setenv("STABLESR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _photo(folder: Path, name: str = "photo.jpg", size: tuple[int, int] = (40, 32)) -> Path:
    """A small copy of a real photo (a ramp where ../shared is missing) as ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    real = DATA / "real_lr" / "0030.jpg"
    return small_copy(real, folder / name, size=size) if real.is_file() else _ramp(folder / name, size)


def _ramp(path: Path, size: tuple[int, int]) -> Path:
    x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
    Image.fromarray(np.broadcast_to(x, (size[1], size[0], 3)).astype(np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------------------------- official command lines


def test_rewrite_official_only_in_official_commands() -> None:
    assert rewrite_official(["--init-img", "in", "--scale", "7.0"]) == ["--init-img", "in", "--guidance-scale", "7.0"]
    assert rewrite_official(["in.png", "--scale", "2"]) == ["in.png", "--scale", "2"]
    assert rewrite_official(["x", "--ddim_steps=20"]) == ["x", "--steps=20", "--sampler", "ddim"]


@pytest.mark.slow
def test_official_readme_command_lines_run_unchanged(tmp_path: Path, tiny: dict[str, str],
                                                     env: dict[str, str]) -> None:
    """The README's oldcanvas (Turbo settings) and 768-v DDIM canvas_tile lines, paths replaced by the tiny model's
    (plus --prompt-embeds: the tiny model has no text encoder; --input_size is the tiny model's 128)."""
    inputs = tmp_path / "inputs"
    _photo(inputs, "a.jpg", (48, 40))
    (inputs / "notes.txt").write_text("not an image")
    model = ["--config", tiny["config"], "--ckpt", tiny["ldm"], "--vqgan_ckpt", tiny["cfw"],
             "--prompt-embeds", tiny["prompt_embeds"]]
    ddpm = ["upscale", *model, "--init-img", str(inputs), "--outdir", str(tmp_path / "ddpm"),
            "--ddpm_steps", "4", "--dec_w", "0.5", "--colorfix_type", "wavelet", "--upscale", "2.0",
            "--tile_overlap", "8", "--seed", "42", "--n_samples", "1", "--precision", "full", "-v"]
    ddim = ["upscale", *model, "--init-img", str(inputs), "--outdir", str(tmp_path / "ddim"),
            "--ddim_steps", "3", "--ddim_eta", "1.0", "--scale", "7.0", "--use_negative_prompt", "--dec_w", "0.0",
            "--colorfix_type", "nofix", "--upscale", "2", "--seed", "42", "--n_samples", "1", "--input_size", "128",
            "--tile_overlap", "8", "--vqgantile_size", "128", "--vqgantile_stride", "96", "-v"]
    for args, folder in ((ddpm, "ddpm"), (ddim, "ddim")):
        result = run_cli(args, env)
        assert result.returncode == 0, result.stderr
        assert summary(result.stdout) == (1, 1, 0)
        assert "skipped 1 (not images: notes.txt)" in result.stdout
        with Image.open(tmp_path / folder / "a.png") as im:
            assert im.size == (96, 80)
        # the tiny config states no prediction type: one warning line says what was assumed and how to set it
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "--prediction-type v --sample-size 768" in warnings[0], result.stderr
    # guidance 7 against the official negative prompt, DDIM eta 1 and colour fix none change the result
    a = np.asarray(Image.open(tmp_path / "ddpm" / "a.png"), np.float32)
    b = np.asarray(Image.open(tmp_path / "ddim" / "a.png"), np.float32)
    assert np.abs(a - b).mean() > 1.0


def test_official_old_script_command_with_its_quirks(tmp_path: Path, tiny: dict[str, str], home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``_old`` script's README line (no --upscale) plus ``--quirks official:old``: the fixed-size script's
    model-size square, started from pure noise after the discarded draw; without the quirks, our default x4."""
    from stablesr.cli.upscale import expert_options
    from stablesr.service import Upscaler

    _photo(tmp_path / "in", "a.png", (64, 40))
    line = ["upscale", "--init-img", str(tmp_path / "in"), "--config", tiny["config"], "--ckpt", tiny["ldm"],
            "--vqgan_ckpt", tiny["cfw"], "--prompt-embeds", tiny["prompt_embeds"], "--prediction-type", "eps",
            "--ddpm_steps", "2", "--dec_w", "0.5", "--colorfix_type", "adain", "-q"]
    seen: list = []
    real = Upscaler.upscale
    monkeypatch.setattr(Upscaler, "upscale", lambda self, *a, **k: seen.append(a[2]) or real(self, *a, **k))
    assert main([*line, "--outdir", str(tmp_path / "old"), "--quirks", "official:old"]) == 0
    assert main([*line, "--outdir", str(tmp_path / "ours")]) == 0
    with Image.open(tmp_path / "old" / "a.png") as old, Image.open(tmp_path / "ours" / "a.png") as ours:
        assert old.size == (128, 128) and ours.size == (256, 160)
    assert [e.init for e in seen] == ["noise", "noised_lr"]
    assert seen[0].quirks.structure_from_cfw and seen[0].quirks.geometry == "fixed_size"
    assert expert_options(argparse_namespace(init="noised_lr", quirks=seen[0].quirks)).init == "noised_lr"


def argparse_namespace(**kw: object):
    import argparse

    return argparse.Namespace(start_timestep=None, vae_tile=1024, vae_tile_overlap=None, **kw)


def test_reference_folder_guides_each_image_by_file_name(tiny: dict[str, str], tmp_path: Path, home: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--reference DIR (official --ref-img): same file names; a missing reference fails that image only."""
    _photo(tmp_path / "in", "a.png")
    _photo(tmp_path / "in", "b.png", size=(32, 40))
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (64, 64), (250, 20, 20)).save(refs / "a.png")  # a flat red face "restoration"
    flags = ["--checkpoint", tiny["ldm"], "--cfw-checkpoint", tiny["cfw"], "--config", tiny["config"],
             "--prompt-embeds", tiny["prompt_embeds"], "--prediction-type", "eps", "--steps", "30",
             "-s", "2", "--device", "cpu", "--color-fix", "none", "-q"]
    assert main(["upscale", str(tmp_path / "in" / "a.png"), "-o", str(tmp_path / "plain"), *flags]) == 0
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "guided"), "--ref-img", str(refs), *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 1 and len(err) == 1 and "b.png" in err[0] and "reference" in err[0]  # b has no reference
    assert not (tmp_path / "guided" / "b.png").exists()
    blue = tmp_path / "photo_refs"
    _photo(blue, "a.png", size=(64, 64))  # a textured reference (the photo itself, larger)
    assert main(["upscale", str(tmp_path / "in" / "a.png"), "-o", str(tmp_path / "guided_photo"),
                 "--reference", str(blue), *flags]) == 0
    plain, red, other = (np.asarray(Image.open(tmp_path / d / "a.png"), np.float32)
                         for d in ("plain", "guided", "guided_photo"))
    # the random tiny VAE maps colours arbitrarily, so only check that the reference steers the result:
    assert np.abs(red - plain).mean() > 2 and np.abs(red - other).mean() > 2  # 8-bit levels
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--reference", str(tmp_path / "no"),
                 *flags]) == 2


# --------------------------------------------------------------------------------------------- release files by content


def _register_768v(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    old = presets.PRESETS["stablesr-768v"]
    fake = replace(old, ckpt=presets.HubFile(old.ckpt.name, digest, path.stat().st_size))
    monkeypatch.setitem(presets.PRESETS, "stablesr-768v", fake)


def test_registered_file_gets_its_preset_under_any_name(tmp_path: Path, tiny: dict[str, str], home: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    renamed = Path(shutil.copy(tiny["ldm"], tmp_path / "my_favourite_model.ckpt"))
    _register_768v(monkeypatch, renamed)
    spec = ModelSpec(checkpoint=renamed, cfw_checkpoint=tiny["cfw"], config=tiny["config"],
                     prompt_embeds=tiny["prompt_embeds"])
    pipe = load_model(spec, "cpu", torch.float32, announce=False)
    assert (pipe.config.parameterization, pipe.config.sample_size) == ("v", 768)
    assert pipe.config.name == "stablesr-768v" and pipe.config.default_steps == 200
    assert "warning" not in capsys.readouterr().err
    assert (home / "file_hashes.json").is_file()  # hashed once, cached by path + size + mtime


def test_unregistered_file_warns_once_and_honours_prediction_type(tmp_path: Path, tiny: dict[str, str], home: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = ModelSpec(checkpoint=tiny["ldm"], cfw_checkpoint=tiny["cfw"], config=tiny["config"],
                     prompt_embeds=tiny["prompt_embeds"])
    pipe = load_model(spec, "cpu", torch.float32, announce=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert pipe.config.parameterization == "eps"
    assert len(err) == 1 and err[0].startswith("warning:") and "assuming prediction type 'eps'" in err[0]
    assert "--prediction-type" in err[0] and "--sample-size" in err[0]
    told = load_model(replace(spec, prediction_type="v"), "cpu", torch.float32, announce=False)
    assert told.config.parameterization == "v" and "warning" not in capsys.readouterr().err


def test_cfw_file_as_checkpoint_is_one_clear_error(tiny: dict[str, str], home: Path,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="--cfw-checkpoint"):
        load_model(ModelSpec(checkpoint=tiny["cfw"], config=tiny["config"]), "cpu", announce=False)
    _photo(tmp_path / "in")
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--checkpoint", tiny["cfw"],
                 "--config", tiny["config"], "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "CFW autoencoder" in err[0] and "--cfw-checkpoint" in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["lightning14", "lightning15"])
def test_training_checkpoints_upscale_through_the_cli(layout: str, tmp_path: Path, tiny: dict[str, str],
                                                      env: dict[str, str]) -> None:
    from stablesr.checkpoints.loading import load_state_dict

    build = lightning14_checkpoint if layout == "lightning14" else lightning15_checkpoint
    ldm = build(load_state_dict(tiny["ldm"]), tmp_path / "ldm.ckpt")
    cfw = build(load_state_dict(tiny["cfw"]), tmp_path / "cfw.ckpt")
    _photo(tmp_path / "in")
    result = run_cli(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-s", "2", "--ckpt", str(ldm),
                      "--vqgan_ckpt", str(cfw), "--config", tiny["config"], "--prompt-embeds", tiny["prompt_embeds"],
                      "--prediction-type", "v", "--steps", "1", "--device", "cpu", "-v"], env)
    assert result.returncode == 0, result.stderr
    assert "v-prediction" in result.stdout and "warning" not in result.stderr  # the flag is honoured, no guess
    with Image.open(tmp_path / "out" / "photo.png") as im:
        assert im.size == (80, 64)


# --------------------------------------------------------------------------------------------- guards and defects


@pytest.mark.parametrize("flags, text", [
    (["--eta", "5", "--sampler", "ddim"], "--eta"),
    (["--eta", "0.5"], "ddim only"),
    (["--vae-tile", "10"], "--vae-tile"),
    (["-s", "inf"], "finite"),
    (["--tile", "16", "--tile-overlap", "16"], "smaller than --tile"),
    (["--tile-overlap", "64"], "smaller than the tile"),
    (["--vae-tile", "64", "--vae-tile-overlap", "64"], "VAE tile overlap must be in [0, VAE tile 64)"),
    (["--vae-tile-overlap", "2000"], "VAE tile overlap must be in [0, VAE tile 1024)"),
    (["--quirks", "bogus"], "unknown quirk"),
    (["--start-timestep", "500", "--init", "noise"], "noised_lr"),
])
def test_usage_errors_exit_2_on_one_line(flags: list[str], text: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _photo(tmp_path / "in")
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "bicubic", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and text in err[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_options_refuse_eta_and_guidance_that_break_sampling() -> None:
    for bad in ({"eta": 5.0, "sampler": "ddim"}, {"eta": -0.1, "sampler": "ddim"}, {"eta": 0.5},
                {"guidance_scale": math.nan}, {"guidance_scale": math.inf}, {"guidance_scale": -1.0}):
        with pytest.raises(OptionsError):
            UpscaleOptions(**bad)
    assert UpscaleOptions(eta=1.0, sampler="ddim").eta == 1.0


def test_nan_input_and_nan_result_are_errors_not_black_files(tiny: dict[str, str], home: Path) -> None:
    spec = ModelSpec(checkpoint=tiny["ldm"], cfw_checkpoint=tiny["cfw"], config=tiny["config"],
                     prompt_embeds=tiny["prompt_embeds"], prediction_type="eps")
    up = Upscaler.load(spec, "cpu", torch.float32, announce=False)
    image = np.random.default_rng(0).random((32, 40, 3), dtype=np.float32)
    options = UpscaleOptions(scale=1.0, steps=1)
    bad = image.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(StableSRError, match="NaN"):
        up.upscale(bad, options)
    with torch.no_grad():  # a broken network (as a diverging sampler would be): the result holds NaN
        next(up.pipe.unet.parameters()).fill_(float("nan"))
    with pytest.raises(StableSRError, match="NaN/Inf"):
        up.upscale(image, options)


def test_working_canvas_guard_refuses_a_thin_strip(tmp_path: Path, tiny: dict[str, str], home: Path) -> None:
    spec = ModelSpec(checkpoint=tiny["ldm"], cfw_checkpoint=tiny["cfw"], config=tiny["config"],
                     prompt_embeds=tiny["prompt_embeds"], prediction_type="eps")
    up = Upscaler.load(spec, "cpu", torch.float32, announce=False)  # a 128 px model
    with pytest.raises(StableSRError, match=r"working canvas would be 38400x128 .*128 px short side"):
        up.check_size((1, 300), 1.0, 1_000_000)
    with pytest.raises(StableSRError, match="output would be 6400x6400"):
        up.check_size((100, 100), 64.0, 36_000_000)
    up.check_size((100, 100), 4.0, 36_000_000)  # fine


def test_max_output_pixels_refuses_one_image_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _photo(tmp_path / "in", "big.jpg", (100, 100))
    _photo(tmp_path / "in", "small.jpg", (10, 10))
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "lanczos", "-s", "8",
                 "--max-output-pixels", "100000"])
    captured = capsys.readouterr()
    assert code == 1 and summary(captured.out) == (1, 0, 1)
    assert "big.jpg: the output would be 800x800 (0.6 MP), over --max-output-pixels 100000" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.png"]


def test_name_clashes_keep_the_source_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    for ext in ("bmp", "tiff", "webp"):
        _photo(inputs, f"image.{ext}")
    _photo(inputs, "rgb.png")
    _photo(inputs, "rgb.jpg")
    _photo(inputs, "alone.jpg")
    code = main(["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", "bicubic", "-s", "2"])
    assert code == 0 and summary(capsys.readouterr().out) == (6, 0, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "alone.png", "image_bmp.png", "image_tiff.png", "image_webp.png", "rgb_jpg.png", "rgb_png.png"]


def test_skipped_files_are_counted_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    _photo(inputs, "a.jpg")
    (inputs / "notes.txt").write_text("hello")
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(inputs / "animated.gif", save_all=True, append_images=frames[1:])
    code = main(["upscale", str(inputs), "-o", str(tmp_path / "out"), "--model", "bicubic", "-s", "2"])
    out = capsys.readouterr().out
    assert code == 0 and summary(out) == (1, 2, 0)
    assert "skipped 2 (not images: animated.gif, notes.txt)" in out


def test_output_folder_checked_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _photo(tmp_path / "in")
    (tmp_path / "file").write_text("x")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")  # loading it would fail: the output problem must be reported first
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "file" / "out"), "--checkpoint", str(broken)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "output folder is not writable" in err[0], err
    assert str(tmp_path / "file") in err[0] and "broken.ckpt" not in err[0]


def test_tiles_that_do_not_fit_the_model_fail_once_not_per_image(tiny: dict[str, str], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The default tile comes from the model's size (16 latent px for the tiny one): an overlap that does not fit
    it is found when the model has loaded, before any image, with exit 2 (not one failure per image, exit 1)."""
    _photo(tmp_path / "in", "a.png")
    _photo(tmp_path / "in", "b.png")
    flags = ["--checkpoint", tiny["ldm"], "--cfw-checkpoint", tiny["cfw"], "--config", tiny["config"],
             "--prompt-embeds", tiny["prompt_embeds"], "--steps", "1", "-s", "2", "--device", "cpu", "-q"]
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tile-overlap", "20", *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1 and "tile overlap must be in [0, tile size 16), got 20" in err[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_prompt_embeddings_of_another_width_fail_once_naming_the_file(tiny: dict[str, str], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    _photo(tmp_path / "in", "a.png")
    _photo(tmp_path / "in", "b.png")
    wide = tmp_path / "wide_embeds.safetensors"
    save_file({"empty": torch.zeros(77, 1024)}, str(wide))  # SD-2.x width; the tiny model's is 32
    flags = ["--checkpoint", tiny["ldm"], "--cfw-checkpoint", tiny["cfw"], "--config", tiny["config"],
             "--prompt-embeds", str(wide), "--steps", "1", "-s", "2", "--device", "cpu", "-q"]
    code = main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1, err
    assert f"the embedding of the prompt '' in {wide} must be a (tokens, 32)" in err[0] and "(1, 77, 1024)" in err[0]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where nobody can create folders")
def test_uncreatable_output_folder_is_refused_even_for_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Permission bits say nothing for root (CI runs as root): the check makes and removes a real test folder."""
    _photo(tmp_path / "in")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    code = main(["upscale", str(tmp_path / "in"), "-o", "/proc/stablesr-out", "--checkpoint", str(broken)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot create folders in /proc" in err[0], err

    from stablesr.imageio.write import check_writable_folder

    check_writable_folder(tmp_path / "new" / "deeper")  # creatable: passes and leaves nothing behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.ckpt", "in"]


def test_stale_temp_files_of_a_killed_write_are_cleaned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale, fresh = out / ".photo.png.0123abcd.tmp", out / ".other.png.deadbeef.tmp"
    foreign, hidden = out / "mine.tmp", out / ".config"
    for p in (stale, fresh, foreign, hidden):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    for p in (stale, foreign, hidden):
        os.utime(p, (old, old))
    _photo(tmp_path / "in")
    assert main(["upscale", str(tmp_path / "in"), "-o", str(out), "--model", "bicubic", "-s", "2"]) == 0
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([fresh.name, foreign.name, hidden.name, "photo.png"])  # only our old temp went
    assert clean_stale_temps(out) == []


def test_threads_flag_sets_torch_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        _photo(tmp_path / "in")
        assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "bicubic",
                     "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_sixteen_bit_rgb_png_on_the_base_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("opencv-python-headless") for d in deps["dependencies"])
    assert deps["license"] == "Apache-2.0"  # the SPDX string form
    cv2 = pytest.importorskip("cv2")
    ramp = (np.linspace(0, 65535, 24, dtype=np.float64)[None, :, None] * np.ones((16, 1, 3))).astype(np.uint16)
    ramp[..., 1] = 12345  # a level 8 bits cannot hold
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "deep.png"), ramp)
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "bicubic", "-s", "1"]) == 0
    back = cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.abs(back[..., 1].astype(int) - 12345).max() <= 2


def test_eval_and_compare_are_registered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _photo(tmp_path / "gt", "a.png", (64, 48))
    with Image.open(tmp_path / "gt" / "a.png") as im:
        (tmp_path / "lr").mkdir()
        im.resize((32, 24), Image.Resampling.BICUBIC).save(tmp_path / "lr" / "a.png")
    for method in ("bicubic", "lanczos"):
        assert main(["upscale", str(tmp_path / "lr"), "-o", str(tmp_path / method), "--model", method, "-s", "2"]) == 0
    capsys.readouterr()
    assert main(["eval", "--pred", str(tmp_path / "bicubic"), "--gt", str(tmp_path / "gt"), "--metrics", "psnr",
                 "--no-progress"]) == 0
    assert "psnr" in capsys.readouterr().out.lower()
    assert main(["compare", str(tmp_path / "bicubic"), str(tmp_path / "lanczos"), "--gt", str(tmp_path / "gt"),
                 "--metrics", "psnr", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "lanczos" in out


def test_help_lists_the_new_flags() -> None:
    result = subprocess.run([sys.executable, "-m", "stablesr", "upscale", "--help"], capture_output=True, text=True,
                            check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0
    for flag in ("--prediction-type", "--sample-size", "--init", "--start-timestep", "--vae-tile-overlap",
                 "--quirks", "--threads", "--max-output-pixels", "--ddpm-steps", "--dec-w", "--colorfix-type",
                 "--ckpt", "--vqgan-ckpt", "--upscale", "--outdir", "--ddim-eta", "--vqgantile-size", "--input-size"):
        assert flag in result.stdout, flag
