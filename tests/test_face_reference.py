"""Face reference guidance (OFFICIAL.md 4.7, 5.6): the official arithmetic, its schedule, the pipeline path."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from stablesr.diffusion.reference import ReferenceGuidance
from stablesr.diffusion.sampling import NoiseSource, StepInfo, sample_ddim, sample_ddpm
from stablesr.diffusion.schedules import DDIMTable, DiffusionSchedule
from stablesr.errors import OptionsError
from stablesr.pipeline import StableSRPipeline
from stablesr.presets import PRESETS, detect_variant


def latents(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return torch.randn(b, 4, 6, 6, generator=g), torch.randn(b, 4, 6, 6, generator=g)


def test_batch_of_one_reaches_the_reference_after_the_first_iteration():
    x0, ref = latents(1)
    info = StepInfo(0, 10, 51)
    torch.testing.assert_close(ReferenceGuidance(ref, iterations=1)(x0, info), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ReferenceGuidance(ref)(x0, info), ref, rtol=0, atol=1e-6)


def test_batch_of_two_keeps_two_to_the_minus_ten_of_the_distance():
    x0, ref = latents(2)
    got = ReferenceGuidance(ref)(x0, StepInfo(0, 500, 500))
    torch.testing.assert_close(got, ref + 2.0**-10 * (x0 - ref), rtol=1e-5, atol=1e-6)
    assert got.dtype == torch.float32


def test_float16_inputs_are_computed_in_float32_and_returned_as_given():
    x0, ref = latents(2)
    got = ReferenceGuidance(ref)(x0.half(), StepInfo(0, 10, 51))
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), ref + 2.0**-10 * (x0.half().float() - ref), rtol=1e-3, atol=1e-3)


def test_applies_at_respaced_index_10_to_1000_only():
    g = ReferenceGuidance(torch.zeros(1, 4, 2, 2))
    assert [k for k in range(1002) if g.applies(StepInfo(0, k, 0))] == list(range(10, 1001))


def _guided_indices(run) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    guidance = ReferenceGuidance(torch.zeros(1, 4, 4, 4))

    def transform(x0, info):
        if guidance.applies(info):
            seen.append((info.index, info.timestep))
        return guidance(x0, info)

    run(transform)
    return seen


def test_ddpm_guides_every_step_but_the_last_ten_at_200_steps():
    sched = DiffusionSchedule.respaced(200)
    model = lambda x, t: torch.zeros_like(x)
    seen = _guided_indices(lambda tr: sample_ddpm(model, torch.randn(1, 4, 4, 4), sched, "v", NoiseSource(),
                                                  x0_transform=tr))
    assert [k for k, _ in seen] == list(range(199, 9, -1))
    assert [t for _, t in seen] == [int(sched.timesteps[k]) for k in range(199, 9, -1)]
    assert min(t for _, t in seen) > 45  # only t <= ~45 denoise freely (OFFICIAL.md 4.7)


def test_ddim_counts_the_index_from_the_last_step_too():
    table = DDIMTable.build(20, 0.0)
    model = lambda x, t: torch.zeros_like(x)
    seen = _guided_indices(lambda tr: sample_ddim(model, torch.randn(1, 4, 4, 4), table, "eps", NoiseSource(),
                                                  x0_transform=tr))
    assert [k for k, _ in seen] == list(range(19, 9, -1))


def test_guided_ddim_step_moves_towards_the_reference():
    table = DDIMTable.build(4, 0.0, timestep_mismatch=False)
    x, ref = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    model = lambda x, t: torch.randn_like(x)
    out = sample_ddim(model, x, table, "eps", NoiseSource(torch.Generator().manual_seed(0)),
                      x0_transform=lambda x0, info: ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)  # last step: alpha_prev = 1 lands on x0


def test_face_preset_prediction_type_is_the_official_configs(data_dir):
    """OFFICIAL.md 1.1: the face config (v2-finetune_face_T_512.yaml) declares ``parameterization: "v"``."""
    spec = (data_dir.parent / "reference" / "OFFICIAL.md").read_text()
    row = next(line for line in spec.splitlines() if line.startswith("| `face_stablesr_000050.ckpt`"))
    official = re.match(r"\s*\**(\w+)", row.split("|")[5]).group(1)  # "**v** (the config says so; ...)"
    assert official == "v"
    assert PRESETS["face"].prediction_type == official
    assert detect_variant("weights/face_stablesr_000050.ckpt")["parameterization"] == official


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    p = StableSRPipeline.from_single_file(tiny_weights["ldm"], tiny_weights["cfw"], config=tiny_weights["config_v"],
                                          prompt_embeds=tiny_weights["prompt_embeds"])
    # a 128 px native size keeps the canvas small (the tiny model's own is 512): 11 steps stay fast
    p = StableSRPipeline(p.unet, p.sft_adapter, p.time_aware_encoder, p.vae, struct_vae=p.struct_vae,
                         prompt_encoder=p.prompt_encoder, config=replace(p.config, sample_size=128))
    p.set_progress_bar_config(disable=True)
    return p


def _run(pipe, image, steps, **kw):
    return pipe(image, 2.0, steps, generator=torch.Generator().manual_seed(0), output_type="np", color_fix="none",
                **kw).images


def test_pipeline_with_a_reference_image(pipe, data_dir):
    lr = Image.open(data_dir / "real_lr" / "0030.jpg").convert("RGB").resize((32, 32), Image.BICUBIC)
    ref_a = lr.resize((64, 64), Image.BICUBIC)  # e.g. a restoration at the output size
    ref_b = Image.fromarray(255 - np.asarray(ref_a))
    guided_a, guided_b = _run(pipe, lr, 11, reference_image=ref_a), _run(pipe, lr, 11, reference_image=ref_b)
    assert guided_a.shape == guided_b.shape == (1, 64, 64, 3)
    assert np.isfinite(guided_a).all()
    # 11 steps: index 10 is guided, so the reference steers the result (its posterior draw is the same)
    assert np.abs(guided_a - guided_b).max() > 1e-3
    with pytest.raises(OptionsError, match="one reference image per input"):
        _run(pipe, [lr, lr], 11, reference_image=ref_a)
