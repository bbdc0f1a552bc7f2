"""The official scripts' input geometries (``Quirks.geometry``): fixed size (``_old``, DDIM, face) and ``oldcanvas``.

Sizes are checked against numbers worked out by hand from OFFICIAL.md 5.1/5.2, the LANCZOS step against
PIL itself, and the pipeline runs on the tiny official-format models with a real photo.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_pipeline
from PIL import Image

from stablesr.config import Quirks
from stablesr.errors import GeometryError, OptionsError
from stablesr.imaging.geometry import Geometry, lanczos_resize
from stablesr.pipeline.references import reference_canvas


@pytest.fixture(scope="module")
def pipe(tiny_weights):
    return tiny_pipeline(tiny_weights)


@pytest.fixture(scope="module")
def photo(data_dir) -> Image.Image:
    return Image.open(data_dir / "real_lr" / "0030.jpg").convert("RGB")


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1


@pytest.mark.parametrize("hw, source, resized, crop", [
    ((300, 200), (288, 192), (192, 128), (32, 0)),     # portrait: width is the short side
    ((130, 517), (128, 512), (128, 512), (0, 192)),    # landscape, already at the model size vertically
    ((64, 96), (64, 96), (128, 192), (0, 32)),         # smaller than the model: upscaled
    ((100, 70), (96, 64), (192, 128), (32, 0)),
])
def test_fixed_size_plan_matches_the_scripts_arithmetic(hw, source, resized, crop):
    """LANCZOS down to a multiple of 32, short side -> 128 (long side truncated), round((L - 128) / 2) crop."""
    for scale in (1.0, 4.0):  # the fixed-size scripts have no scale: the output is always the model size
        g = Geometry.plan(hw, scale, 128, mode="fixed_size")
        assert (g.source, g.work, g.crop) == (source, resized, crop)
        assert g.padded == g.target == g.color_fix_size == (128, 128)


def test_oldcanvas_plan_pads_to_the_model_size_and_fixes_colour_on_the_content():
    g = Geometry.plan((14, 18), 4.0, 128, mode="oldcanvas")
    assert (g.source, g.work, g.padded, g.target, g.color_fix_size) == ((8, 16), (32, 64), (128, 128), (32, 64),
                                                                        (32, 64))
    big = Geometry.plan((203, 170), 2.5, 128, mode="oldcanvas")  # 200x168 -> 500x420, larger than the model
    assert (big.source, big.work, big.padded) == ((200, 168), (500, 420), (504, 424))
    with pytest.raises(GeometryError, match="at least 32x32"):
        Geometry.plan((20, 300), 1.0, 128, mode="fixed_size")


def test_lanczos_step_is_pils_resize_for_8_bit_and_keeps_precision_otherwise(photo):
    im = photo.resize((70, 53))
    x = to_tensor(im)
    got = lanczos_resize(x, (32, 64))
    want = to_tensor(im.resize((64, 32), Image.LANCZOS))
    assert torch.equal(got, want)  # the 8-bit path is PIL's own result, value for value
    fine = x + 0.3 / 255  # no longer 8-bit: PIL's float mode, not rounded to 8 bits
    got16 = lanczos_resize(fine, (32, 64))
    # PIL's 8-bit path rounds and clips between its horizontal and vertical passes: at sharp edges that
    # moves a value by up to ~3 levels (measured 2.7); in [-1, 1] units 8/255 is 4 levels.
    assert (got16 - want).abs().max() <= 8 / 255
    assert ((got16 + 1) / 2 * 255 % 1 - 0.5).abs().min() < 0.45  # values between the 8-bit levels


def test_fixed_size_input_is_the_centre_crop(photo):
    im = photo.resize((96, 160))  # portrait 160x96: multiples of 32, resized to 128x213 then cropped vertically
    g = Geometry.plan((160, 96), 4.0, 128, mode="fixed_size")
    vae_in = g.upscale_and_pad(to_tensor(im))
    assert tuple(vae_in.shape[-2:]) == (128, 128)
    resized = torch.nn.functional.interpolate(to_tensor(im), size=(213, 128), mode="bilinear", align_corners=False)
    top = round((213 - 128) / 2)
    torch.testing.assert_close(vae_in, resized[..., top:top + 128, :], rtol=0, atol=1e-6)


def test_pipeline_fixed_size_output_is_the_model_square_whatever_the_scale(pipe, photo):
    lr = photo.resize((64, 40))
    outs = [pipe(lr, s, 1, generator=torch.Generator().manual_seed(0), output_type="np",
                 quirks=Quirks.official("old"), init="noise").images for s in (2.0, 4.0)]
    assert outs[0].shape == outs[1].shape == (1, 128, 128, 3)
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6)  # the scale plays no role


def test_pipeline_oldcanvas_zero_pads_and_matches_colour_on_the_content(pipe, data_dir):
    dark = Image.open(data_dir / "real_lr" / "0030.jpg").convert("RGB").resize((18, 14))
    dark = Image.fromarray((np.asarray(dark, np.float32) * 0.3).astype(np.uint8))  # mean far from the grey padding
    seen = []
    source = pipe.struct_vae or pipe.vae  # the oldcanvas script encodes with the checkpoint's own VAE
    hook = source.encoder.conv_in.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    try:
        out = pipe(dark, 4.0, 2, generator=torch.Generator().manual_seed(0), output_type="np", color_fix="adain",
                   quirks=Quirks(geometry="oldcanvas")).images[0]
    finally:
        hook.remove()
    assert out.shape == (32, 64, 3)  # LANCZOS to 8x16, x4, padding cropped off
    vae_in = seen[0]
    assert tuple(vae_in.shape[-2:]) == (128, 128)
    assert vae_in[..., 32:, :].abs().max() == 0 and vae_in[..., :, 64:].abs().max() == 0  # zero (mid-grey) pad
    content = (vae_in[0, :, :32, :64] + 1) / 2
    content_mean = content.mean(dim=(1, 2)).numpy()
    padded_mean = ((vae_in[0] + 1) / 2).mean(dim=(1, 2)).numpy()
    assert np.abs(content_mean - padded_mean).max() > 0.1  # the padding would pull the statistics to grey
    np.testing.assert_allclose(out.mean(axis=(0, 1)), content_mean, rtol=0, atol=0.03)


def test_fixed_size_reference_gets_the_same_preprocessing(photo):
    g = Geometry.plan((40, 64), 4.0, 128, mode="fixed_size")
    ref = to_tensor(photo.resize((200, 300)))  # a reference of another size: planned for its own size
    canvas = reference_canvas(g, ref)
    own = Geometry.plan((300, 200), 4.0, 128, mode="fixed_size")
    assert tuple(canvas.shape[-2:]) == (128, 128)
    assert torch.equal(canvas, own.upscale_and_pad(ref))


def test_quirks_parse_and_official_script_profiles():
    assert Quirks.parse("official") == Quirks.official() == Quirks.official("tile")
    old = Quirks.parse("official:old")
    assert (old.geometry, old.structure_from_cfw, old.discarded_noise_draw, old.pixel_tiles) == (
        "fixed_size", True, True, False)
    canvas = Quirks.official("oldcanvas")
    assert (canvas.geometry, canvas.structure_from_cfw, canvas.pixel_tiles) == ("oldcanvas", False, False)
    tile = Quirks.official("ddim_canvas_tile")
    assert (tile.geometry, tile.pixel_tiles, tile.discarded_noise_draw) == ("tile_script", True, True)
    assert Quirks.parse("tile-weights,geometry=fixed_size") == Quirks(
        ddim_timestep_mismatch=False, tile_weights=True, geometry="fixed_size")
    for bad in ("official:nope", "geometry=round", "bogus", "geometry=exact,geometry=oldcanvas"):
        with pytest.raises(OptionsError):
            Quirks.parse(bad)
