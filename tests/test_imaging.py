"""The one conversion between PIL/arrays/tensors and the pipeline's tensors, alpha included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stablesr.errors import StableSRError
from stablesr.imaging.alpha import resize_alpha, upscale_alpha
from stablesr.imaging.convert import from_pipeline_images, to_pipeline_images
from stablesr.imaging.planes import pil_planes


def test_arrays_and_tensors_become_pipeline_tensors() -> None:
    rgb = np.random.default_rng(0).random((4, 6, 3), dtype=np.float32)
    (item,) = to_pipeline_images(rgb)
    assert item.pixels.shape == (1, 3, 4, 6) and item.alpha is None
    torch.testing.assert_close(item.pixels[0, :, 1, 2], torch.from_numpy(rgb[1, 2]) * 2 - 1)
    (u16,) = to_pipeline_images((rgb * 65535).round().astype(np.uint16))
    torch.testing.assert_close(u16.pixels, item.pixels, atol=2e-5, rtol=0)
    (grey,) = to_pipeline_images(rgb[..., 0])
    assert torch.equal(grey.pixels[0, 0], grey.pixels[0, 2])
    batch = to_pipeline_images([torch.zeros(2, 3, 8, 8), rgb])
    assert [b.pixels.shape[0] for b in batch] == [2, 1]
    with pytest.raises(StableSRError):
        to_pipeline_images(np.zeros((4, 6, 2)))
    with pytest.raises(StableSRError):
        to_pipeline_images(torch.zeros(1, 4, 8, 8))


def test_alpha_is_split_and_reattached() -> None:
    rng = np.random.default_rng(1)
    rgba = rng.random((4, 6, 4), dtype=np.float32)
    (item,) = to_pipeline_images(rgba)
    assert item.alpha is not None and item.alpha.shape == (1, 4, 6)
    np.testing.assert_allclose(item.alpha[0].numpy(), rgba[..., 3])
    image = (item.pixels + 1) / 2
    out = from_pipeline_images([image], [item.alpha], "np")
    assert out.shape == (1, 4, 6, 4)
    np.testing.assert_allclose(out[0], rgba, atol=1e-6)
    pil = from_pipeline_images([image], [item.alpha], "pil")[0]
    assert pil.mode == "RGBA" and pil.size == (6, 4)
    # a PIL RGBA image keeps its alpha through the conversion too
    (again,) = to_pipeline_images(pil)
    assert again.alpha is not None
    np.testing.assert_allclose(again.alpha[0].numpy(), np.asarray(pil)[..., 3] / 255, atol=1e-6)


def test_pil_planes_modes() -> None:
    values, alpha, grey, bits = pil_planes(Image.new("LA", (3, 2), (128, 64)))
    assert values.shape == (2, 3) and grey and bits == 8 and alpha is not None
    assert np.allclose(alpha, 64 / 255)
    values, alpha, grey, bits = pil_planes(Image.new("I;16", (3, 2), 65535))
    assert grey and bits == 16 and alpha is None and np.allclose(values, 1.0)


def test_alpha_resize_shape_range_and_agreement() -> None:
    plane = np.random.default_rng(2).random((5, 7), dtype=np.float32)
    big = upscale_alpha(plane, (10, 14))
    assert big.shape == (10, 14) and big.min() >= 0 and big.max() <= 1
    np.testing.assert_allclose(resize_alpha(torch.from_numpy(plane)[None], (10, 14))[0].numpy(), big)


def test_upscale_options_are_checked_and_take_model_defaults() -> None:
    from stablesr.config import ModelConfig, UpscaleOptions
    from stablesr.errors import GeometryError, OptionsError

    for bad in ({"fidelity": 1.5}, {"scale": 0}, {"sampler": "euler"}, {"color_fix": "sepia"}, {"steps": 0},
                {"negative_prompt": "blurry"}, {"tile_batch_size": 0}, {"steps": 1.5}, {"steps": True},
                {"tile_size": 32.0}, {"vae_tile_size": "512"}, {"seed": 2**64}, {"seed": 1.5}):
        with pytest.raises(OptionsError):
            UpscaleOptions(**bad)
    with pytest.raises(GeometryError):
        UpscaleOptions(tile_size=16, tile_overlap=16)
    with pytest.raises(GeometryError, match="tile size must be at least 16 latent px"):
        UpscaleOptions(tile_size=8, tile_overlap=4)  # the networks' deepest maps would be 1 px
    assert UpscaleOptions(steps=np.int64(3)).steps == 3  # numpy integers are whole numbers too
    model = ModelConfig(sample_size=256, default_steps=4, default_fidelity=0.2, default_color_fix="wavelet")
    filled = UpscaleOptions(steps=7).with_model_defaults(model)
    assert (filled.steps, filled.fidelity, filled.color_fix, filled.tile_size, filled.tile_overlap) == (
        7, 0.2, "wavelet", 32, 16)
    with pytest.raises(GeometryError):  # a default tile smaller than the requested overlap
        UpscaleOptions(tile_overlap=40).with_model_defaults(model)
