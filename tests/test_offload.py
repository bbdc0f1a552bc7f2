"""CPU offload of idle networks (``enable_offload`` / ``--offload``): same images, networks moved per stage.

No GPU here: the compute device is the CPU too, so these tests check the orchestration (which networks are
brought in for which stage, accelerate's per-layer hooks in place, results unchanged), not memory savings.
"""

from __future__ import annotations

import pytest
import torch
from conftest import noise_image, tiny_pipeline
from PIL import Image
from torch import nn

from stablesr.errors import OptionsError


@pytest.fixture(scope="module")
def lr() -> Image.Image:
    return noise_image(40, 48)


def run(pipe, lr):
    return pipe(lr, 4.0, 2, generator=torch.Generator().manual_seed(0), output_type="pt").images


@pytest.fixture(scope="module")
def reference(tiny_weights, lr):
    return run(tiny_pipeline(tiny_weights), lr)


def test_model_offload_brings_in_one_stage_at_a_time(tiny_weights, lr, reference, monkeypatch):
    pipe = tiny_pipeline(tiny_weights).enable_offload("model", "cpu")
    names = {id(m): n for n, m in [("vae", pipe.vae), ("struct_vae", pipe.struct_vae), ("denoiser", pipe.denoiser)]}
    moves: list[tuple[str, str]] = []
    real_to = nn.Module.to

    def spy(module, *args, **kwargs):  # records the move, then moves
        if id(module) in names:
            moves.append((names[id(module)], str(kwargs.get("device", args[0] if args else None))))
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", spy)
    out = run(pipe, lr)
    monkeypatch.undo()
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    stages = [name for name, _ in moves]
    assert stages == ["vae", "struct_vae", "vae", "struct_vae", "denoiser", "denoiser", "vae", "vae"]
    assert pipe.device == torch.device("cpu")
    with pytest.raises(OptionsError, match="offloaded"):
        pipe.to("cpu")


def test_sequential_offload_hooks_every_layer_and_keeps_the_image(tiny_weights, lr, reference):
    pytest.importorskip("accelerate")
    pipe = tiny_pipeline(tiny_weights).enable_offload("sequential", "cpu")
    assert pipe.unet.conv_in.weight.device.type == "meta"  # weights live in accelerate's CPU map, not the module
    assert hasattr(pipe.unet.conv_in, "_hf_hook")
    torch.testing.assert_close(run(pipe, lr), reference, rtol=0, atol=1e-5)


def test_unknown_offload_is_refused(tiny_weights):
    with pytest.raises(OptionsError, match="unknown offload"):
        tiny_pipeline(tiny_weights).enable_offload("disk", "cpu")  # type: ignore[arg-type]


def test_cli_offload_flag_runs_the_tiny_model(tiny_weights, tmp_path, monkeypatch):
    from stablesr.cli import main

    monkeypatch.setenv("STABLESR_HOME", str(tmp_path / "home"))
    (tmp_path / "in").mkdir()
    noise_image(40, 32).save(tmp_path / "in" / "a.png")
    flags = ["--checkpoint", str(tiny_weights["ldm"]), "--cfw-checkpoint", str(tiny_weights["cfw"]),
             "--config", str(tiny_weights["config"]), "--prompt-embeds", str(tiny_weights["prompt_embeds"]),
             "--prediction-type", "eps", "--steps", "2", "-s", "2", "--device", "cpu", "-q"]
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--offload", "model", *flags]) == 0
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.size == (80, 64)
