"""StableSRPipeline end to end on the tiny official-format checkpoints and real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_pipeline
from PIL import Image

from stablesr.config import Quirks
from stablesr.errors import GeometryError, MissingWeightsError, OptionsError, StableSRError
from stablesr.pipeline import NEGATIVE_PROMPT, StableSRPipeline
from stablesr.tiling.tiles import tile_starts


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return tiny_pipeline(tiny_weights)


@pytest.fixture(scope="module")
def photo(data_dir):
    return Image.open(data_dir / "real_lr" / "0030.jpg").convert("RGB").resize((40, 40), Image.BICUBIC)


# Separately built model instances hold equal weights (checked with torch.equal) but not necessarily at the same
# memory alignment, so CPU kernels may take different vectorised paths and differ by ~1e-6 per UNet call. Outputs
# are images in [0, 1]: 1e-4 is 1/40 of one 8-bit level, far below any real loading mistake (>= 1e-2).
SAME_MODEL_ATOL = 1e-4


def assert_same_weights(a, b):
    """Every network of two pipelines holds bit-identical parameters and buffers."""
    for name in ("unet", "sft_adapter", "time_aware_encoder", "vae", "struct_vae"):
        ma, mb = getattr(a, name), getattr(b, name)
        assert (ma is None) == (mb is None), name
        if ma is None:
            continue
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys(), name
        for key, value in sa.items():
            assert value.dtype == sb[key].dtype and torch.equal(value, sb[key]), f"{name}.{key}"


def run(pipe, image, seed=0, **kw):
    kw.setdefault("num_inference_steps", 2)
    return pipe(image, generator=torch.Generator().manual_seed(seed), output_type="np", **kw).images


def test_deterministic_under_seed_and_seed_matters(pipe, photo):
    a, b, c = run(pipe, photo, 1, upscale=3.5), run(pipe, photo, 1, upscale=3.5), run(pipe, photo, 2, upscale=3.5)
    assert a.shape == (1, 140, 140, 3)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


@pytest.mark.parametrize("size,scale", [((40, 40), 4.0), ((37, 23), 2.5), ((20, 50), 1.3), ((64, 48), 3.0)])
def test_output_is_exactly_round_scale_times_input(pipe, photo, size, scale):
    out = run(pipe, photo.resize(size), upscale=scale, num_inference_steps=1)
    assert out.shape[1:3] == (round(size[1] * scale), round(size[0] * scale))
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_official_geometry_quirk_keeps_padding_strip(pipe, photo):
    # 14x18 LR, x4 with a 128 px model: the official tile script returns 70x84, not 56x72.
    lr = photo.resize((18, 14))
    fixed = run(pipe, lr, upscale=4.0, num_inference_steps=1)
    quirky = run(pipe, lr, upscale=4.0, num_inference_steps=1, quirks=Quirks(geometry="tile_script"))
    assert fixed.shape[1:3] == (56, 72)
    assert quirky.shape[1:3] == (70, 84)


def test_fidelity_changes_output_and_zero_skips_fusion(pipe, photo):
    w0, w1 = run(pipe, photo, upscale=3.2, fidelity=0.0), run(pipe, photo, upscale=3.2, fidelity=1.0)
    assert np.abs(w0 - w1).mean() > 1e-3
    calls = []
    hook = pipe.vae.fusion_layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        run(pipe, photo, upscale=3.2, fidelity=0.0)
        assert calls == []
        run(pipe, photo, upscale=3.2, fidelity=0.5)
        assert calls
    finally:
        hook.remove()


def test_samplers_guidance_and_init_modes_run(pipe, photo):
    base = run(pipe, photo, upscale=3.2)
    ddim = run(pipe, photo, upscale=3.2, sampler="ddim", eta=0.5)
    clean = run(pipe, photo, upscale=3.2, sampler="ddim", eta=0.5, quirks=Quirks(ddim_timestep_mismatch=False))
    cfg = run(pipe, photo, upscale=3.2, guidance_scale=3.0, negative_prompt=NEGATIVE_PROMPT)
    noise_init = run(pipe, photo, upscale=3.2, init="noise")
    late = run(pipe, photo, upscale=3.2, num_inference_steps=4, start_timestep=500)
    for other in (ddim, clean, cfg, noise_init, late):
        assert other.shape == base.shape and np.isfinite(other).all()
        assert np.abs(other - base).mean() > 1e-4
    assert np.abs(ddim - clean).mean() > 1e-4


def test_prompt_without_text_encoder_is_a_clear_error(pipe, photo):
    with pytest.raises(MissingWeightsError, match="no text encoder"):
        run(pipe, photo, prompt="a photo of a cat")
    with pytest.raises(StableSRError, match="guidance_scale"):
        run(pipe, photo, negative_prompt=NEGATIVE_PROMPT)


def test_bad_geometry_is_reported_not_crashed(pipe, photo):
    with pytest.raises(GeometryError):
        run(pipe, photo, upscale=2.0, tile_size=16, tile_overlap=16)
    with pytest.raises(StableSRError):
        run(pipe, np.zeros((0, 5, 3), dtype=np.float32))
    with pytest.raises(StableSRError):
        run(pipe, photo, upscale=0.0)
    # 1xN images and tiles larger than the latent work
    thin = run(pipe, np.full((1, 9, 3), 0.5, dtype=np.float32), upscale=2.0, num_inference_steps=1)
    assert thin.shape == (1, 2, 18, 3)
    big_tile = run(pipe, photo, upscale=2.0, tile_size=100, tile_overlap=10, num_inference_steps=1)
    assert big_tile.shape == (1, 80, 80, 3)


def test_save_pretrained_round_trip_keeps_weights_and_results(pipe, photo, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    again = StableSRPipeline.from_pretrained(tmp_path / "model")
    again.set_progress_bar_config(disable=True)
    assert_same_weights(pipe, again)
    assert again.config == pipe.config
    np.testing.assert_allclose(run(again, photo, upscale=3.2), run(pipe, photo, upscale=3.2), rtol=0,
                               atol=SAME_MODEL_ATOL)
    with pytest.raises(StableSRError):
        StableSRPipeline.from_pretrained(tmp_path)  # not a model folder


def _border_mask(n_px: int, starts: list[int], tile: int, width: int = 4) -> np.ndarray:
    """Pixels within ``width`` of an interior tile edge (latent edges x 8)."""
    mask = np.zeros(n_px, dtype=bool)
    for s in starts:
        for edge in (s * 8, (s + tile) * 8):
            if 0 < edge < n_px:
                mask[max(0, edge - width):edge + width] = True
    return mask


@pytest.mark.slow
def test_tiling_leaves_no_seams_on_a_real_image(pipe, data_dir):
    """Seam metric: mean |tiled - untiled| within 4 px of interior tile edges divided by the mean elsewhere.

    Seams would concentrate the difference at tile edges (ratio >> 1); Gaussian blending keeps it ~1.
    """
    img = Image.open(data_dir / "real_lr" / "OST_009.png").convert("RGB").resize((48, 64), Image.BICUBIC)
    kw = {"upscale": 4.0, "num_inference_steps": 3, "vae_tile_size": None}
    untiled = run(pipe, img, 3, tile_size=32, tile_overlap=0, **kw)[0]  # latent 32x24: one tile
    tiled = run(pipe, img, 3, tile_size=16, tile_overlap=8, **kw)[0]
    diff = np.abs(tiled - untiled).mean(-1)
    h, w = diff.shape
    rows = _border_mask(h, tile_starts(h // 8, 16, 8), 16)
    cols = _border_mask(w, tile_starts(w // 8, 16, 8), 16)
    border = rows[:, None] | cols[None, :]
    ratio = diff[border].mean() / diff[~border].mean()
    print(f"seam metric: edge/interior ratio {ratio:.3f}, mean diff {diff.mean():.4f}")
    assert diff.mean() > 1e-4  # the runs really differ
    assert ratio < 1.5, f"tile-edge/interior difference ratio {ratio:.3f}"


def test_tiled_vae_matches_untiled_closely(pipe, photo):
    whole = run(pipe, photo, upscale=4.0, vae_tile_size=None)
    tiled = run(pipe, photo, upscale=4.0, vae_tile_size=64, vae_tile_overlap=32)
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).mean() < 0.1


def test_reduced_precision_stays_close_to_fp32(tiny_weights, photo):
    p = StableSRPipeline.from_single_file(tiny_weights["ldm"], tiny_weights["cfw"], config=tiny_weights["config"],
                                          prompt_embeds=tiny_weights["prompt_embeds"])
    p.set_progress_bar_config(disable=True)
    ref = run(p, photo, upscale=3.2)
    p.to("cpu", torch.bfloat16)
    assert p.unet.dtype == torch.bfloat16 and p.time_aware_encoder.dtype == torch.bfloat16
    low = run(p, photo, upscale=3.2)
    assert np.isfinite(low).all()
    assert np.abs(low - ref).mean() < 0.02


def test_webui_extract_on_a_separate_base_unet(pipe, tiny_weights, photo, tmp_path):
    """SFT-only extracts (spade + structcond keys) load on top of a diffusers base model folder."""
    from safetensors.torch import save_file

    from stablesr.checkpoints.loading import load_state_dict

    full = load_state_dict(tiny_weights["ldm"])
    extract = {k: v for k, v in full.items() if ".spade." in k or k.startswith("structcond_stage_model.")}
    save_file(extract, str(tmp_path / "webui_extract.safetensors"))
    pipe.unet.save_pretrained(tmp_path / "base" / "unet")
    webui = StableSRPipeline.from_single_file(tmp_path / "webui_extract.safetensors", tiny_weights["cfw"],
                                              config=tiny_weights["config"], base_model=tmp_path / "base",
                                              prompt_embeds=tiny_weights["prompt_embeds"])
    webui.set_progress_bar_config(disable=True)
    assert webui.struct_vae is None  # the extract has no VAE: the CFW encoder gives the structure latent
    reference = StableSRPipeline(pipe.unet, pipe.sft_adapter, pipe.time_aware_encoder, pipe.vae,
                                 prompt_encoder=pipe.prompt_encoder, config=pipe.config)
    reference.set_progress_bar_config(disable=True)
    assert_same_weights(webui, reference)
    np.testing.assert_allclose(run(webui, photo, upscale=3.2), run(reference, photo, upscale=3.2), rtol=0,
                               atol=SAME_MODEL_ATOL)
    with pytest.raises(StableSRError, match="base model"):
        StableSRPipeline.from_single_file(tmp_path / "webui_extract.safetensors", tiny_weights["cfw"],
                                          config=tiny_weights["config"])


def test_validation_of_call_arguments(pipe, photo):
    for kwargs in ({"num_inference_steps": 0}, {"init": "foo"}, {"upscale": float("inf")}, {"vae_tile_size": 32},
                   {"vae_tile_size": 128, "vae_tile_overlap": 128}, {"start_timestep": 1000},
                   {"start_timestep": 500, "init": "noise"}, {"color_fix": "sepia"}, {"fidelity": 1.5}):
        kwargs.setdefault("upscale", 2.0)
        with pytest.raises(StableSRError):
            run(pipe, photo, **kwargs)
    assert run(pipe, photo, upscale=2.0, vae_tile_size=0).shape == (1, 80, 80, 3)  # 0 = never tile


def test_start_timestep_and_one_step(pipe, photo):
    seen = []
    run(pipe, photo, upscale=3.2, num_inference_steps=4, start_timestep=500, callback=lambda i, t, x: seen.append((i, t)))
    assert seen == [(0, 333), (1, 0)]  # snapped to the first step at or below 500
    seen.clear()
    one = run(pipe, photo, upscale=3.2, num_inference_steps=1, callback=lambda i, t, x: seen.append((i, t)))
    assert seen == [(0, 999)] and np.isfinite(one).all()


def test_integer_inputs_are_scaled(pipe, photo):
    arr = np.array(photo)
    a = run(pipe, arr, upscale=3.2)
    b = run(pipe, arr.astype(np.float32) / 255, upscale=3.2)
    c = run(pipe, torch.from_numpy(arr).permute(2, 0, 1)[None], upscale=3.2)
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_bad_arguments_are_typed_one_line_errors_before_any_work(pipe, photo):
    """Each of these used to run silently wrong (a black image) or end in a raw torch / numpy / allocator error."""
    arr = np.array(photo)
    for bad in (arr.astype(np.int64), torch.from_numpy(arr).permute(2, 0, 1)[None].long(), arr > 128):
        with pytest.raises(StableSRError, match="uint8 .* or uint16") as err:
            run(pipe, bad, upscale=2.0)
        assert "\n" not in str(err.value)
    with pytest.raises(OptionsError, match=r"prompt_embeds must be a \(tokens, 32\)"):
        run(pipe, photo, upscale=2.0, prompt_embeds=torch.zeros(77, 16))
    with pytest.raises(OptionsError, match="negative_prompt_embeds"):
        run(pipe, photo, upscale=2.0, guidance_scale=3.0, negative_prompt_embeds=torch.zeros(32))
    for output_type in ("pil", "np", "pt"):
        with pytest.raises(OptionsError, match="no images"):
            pipe([], upscale=2.0, output_type=output_type)
    with pytest.raises(GeometryError, match="more than the memory free"):
        run(pipe, photo, upscale=1e6)
    with pytest.raises(GeometryError, match="at least 16 latent px"):
        run(pipe, photo, upscale=2.0, tile_size=8, tile_overlap=4)
    with pytest.raises(OptionsError, match="whole number"):
        run(pipe, photo, upscale=2.0, num_inference_steps=1.5)


def test_callback_on_step_end_sees_every_step_and_can_interrupt(pipe, photo):
    seen = []

    def record(p, step, timestep, kwargs):
        assert p is pipe and kwargs["latents"].ndim == 4
        seen.append((step, timestep))

    run(pipe, photo, upscale=2.0, num_inference_steps=3, callback_on_step_end=record)
    assert [s for s, _ in seen] == [0, 1, 2] and seen[0][1] > seen[-1][1]

    def stop_after_first(p, step, timestep, kwargs):
        seen.append(step)
        p._interrupt = True

    seen.clear()
    stopped = run(pipe, photo, upscale=2.0, num_inference_steps=3, callback_on_step_end=stop_after_first)
    full = run(pipe, photo, upscale=2.0, num_inference_steps=3)
    assert seen == [0] and stopped.shape == full.shape and np.abs(stopped - full).max() > 1e-3
    assert np.array_equal(run(pipe, photo, upscale=2.0, num_inference_steps=3), full)  # the flag resets per call


def test_callback_on_step_end_can_replace_the_latents(pipe, photo):
    def zero(p, step, timestep, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])}

    a = run(pipe, photo, 1, upscale=2.0, num_inference_steps=2, callback_on_step_end=zero)
    b = run(pipe, photo, 2, upscale=2.0, num_inference_steps=2, callback_on_step_end=zero)
    np.testing.assert_allclose(a, b, atol=1e-5)  # every seed ends at the same (zeroed) latent


def test_alpha_survives_the_python_api(pipe, photo):
    rgba = photo.convert("RGBA")
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 255
    rgba.putalpha(Image.fromarray(mask))
    out = pipe(rgba, upscale=2.0, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).images[0]
    assert out.mode == "RGBA" and out.size == (80, 80)
    alpha = np.asarray(out)[..., 3]
    assert alpha[:, :30].max() < 10 and alpha[:, 50:].min() > 245
    rgb = run(pipe, photo.convert("RGB"), upscale=2.0, num_inference_steps=1)
    with_alpha = run(pipe, rgba, upscale=2.0, num_inference_steps=1)
    assert rgb.shape == (1, 80, 80, 3) and with_alpha.shape == (1, 80, 80, 4)
    np.testing.assert_allclose(with_alpha[..., :3], rgb, atol=1e-5)  # alpha does not change the colours
