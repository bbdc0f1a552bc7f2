"""Classical upscaling baselines (bicubic / lanczos) for `stablesr compare`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stablesr.evaluation import classical_upscale
from stablesr.evaluation._files import load_image


@pytest.mark.parametrize("scale, size, expected", [(4, (5, 3), (20, 12)), (2.5, (7, 3), (18, 8)), (1.5, (3, 5), (4, 8))])  # Python round(): 4.5 -> 4, as the pipeline
def test_output_size_is_round_scale_times_size(scale, size, expected):
    out = classical_upscale(np.zeros((size[1], size[0], 3), np.float32), scale, "bicubic")
    assert out.shape == (expected[1], expected[0], 3) and out.dtype == np.float32


@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_matches_pillow_8bit_resize_on_a_real_image(data_dir, method):
    lq = data_dir / "paired" / "imagenet_bicubic_x4" / "lq" / "ILSVRC2012_val_00000151.png"
    src = load_image(lq).pixels / 255.0
    ours = classical_upscale(src, 4, method)
    filt = Image.BICUBIC if method == "bicubic" else Image.LANCZOS
    pillow = np.asarray(Image.open(lq).convert("RGB").resize((256, 256), filt)) / 255.0
    # Pillow's 8-bit path rounds and clips between its two passes; ours stays in float: on a photo the two
    # agree to half a code on average and 99.9% of values within 1.5 codes; only a few pixels at hard edges,
    # where the first pass overshoots and Pillow clips it, differ more.
    diff = np.abs(ours - pillow) * 255
    assert diff.mean() < 0.5
    assert np.percentile(diff, 99.9) < 1.5


def test_constant_stays_constant_and_values_stay_in_range():
    flat = np.full((6, 6, 3), 0.25, np.float32)
    assert classical_upscale(flat, 3, "lanczos") == pytest.approx(0.25, abs=1e-6)
    edge = np.zeros((8, 8, 1), np.float32)
    edge[:, 4:] = 1.0  # lanczos overshoots at a step edge; the result is clipped to [0, 1]
    out = classical_upscale(edge, 4, "lanczos")
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert classical_upscale(edge[..., 0], 2, "bicubic").shape == (16, 16)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown method"):
        classical_upscale(np.zeros((2, 2, 3)), 2, "esrgan")
    with pytest.raises(ValueError, match="scale"):
        classical_upscale(np.zeros((2, 2, 3)), 0, "bicubic")
