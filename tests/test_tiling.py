"""Tests for stablesr.tiling: tile grid, visiting order, Gaussian weight maps and weighted blending.

Reference values come from OFFICIAL.md sections 5.7 and 10 and from the golden vectors (tile
orders in ``index.json``, the official float64 weight map ``inter.tile_weights``).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stablesr.errors import GeometryError
from stablesr.tiling.tiles import Tile, TileAccumulator, TilePlan, gaussian_weights, plan_tiles, tile_starts

PROPERTY = settings(max_examples=150, deadline=None)
SLOW_PROPERTY = settings(max_examples=60, deadline=None)


@st.composite
def axis_geometry(draw, max_length: int = 5000, max_tile: int = 300) -> tuple[int, int, int]:
    """(length, tile, overlap) with 0 <= overlap < tile."""
    length = draw(st.integers(1, max_length))
    tile = draw(st.integers(1, max_tile))
    overlap = draw(st.integers(0, tile - 1))
    return length, tile, overlap


@st.composite
def canvas_geometry(draw, max_side: int = 160, max_tile: int = 72) -> tuple[int, int, int, int]:
    """(height, width, tile, overlap), sides often not multiples of 8 / 32, tiles sometimes larger than the image."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    tile = draw(st.integers(1, max_tile))
    overlap = draw(st.integers(0, tile - 1))
    return height, width, tile, overlap


def _coverage(height: int, width: int, tiles: list[Tile]) -> np.ndarray:
    count = np.zeros((height, width), dtype=np.int64)
    for t in tiles:
        ys, xs = t.slices
        count[ys, xs] += 1
    return count


def _official_pixel_starts(length: int, tile: int, overlap: int) -> list[int]:
    """The pixel-tiling rule of the official ``ImageSpliterTh``, written out independently:
    ``range(0, L, stride)``, every start past ``L - tile`` snapped to ``L - tile``, duplicates removed."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts: list[int] = []
    for s in range(0, length, stride):
        s = min(s, length - tile)
        if s not in starts:
            starts.append(s)
    return starts


# ---------------------------------------------------------------------------------------------
# tile_starts


@PROPERTY
@given(axis_geometry())
def test_tile_starts_cover_the_axis(geom: tuple[int, int, int]) -> None:
    length, tile, overlap = geom
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)

    assert starts[0] == 0
    assert starts[-1] == max(length - tile, 0)
    assert all(b > a for a, b in itertools.pairwise(starts)), "starts must be strictly ascending"
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts)), "a gap would leave pixels uncovered"
    assert all(0 <= s and s + size <= length for s in starts), "every tile must lie inside the axis"
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s:s + size] = True
    assert covered.all()


@PROPERTY
@given(axis_geometry())
def test_tile_starts_follow_the_official_grid_formula(geom: tuple[int, int, int]) -> None:
    """OFFICIAL 5.7: n = 1 if L <= T else 1 + ceil((L - T) / S); o_i = i * S for i < n - 1; o_{n-1} = L - T."""
    length, tile, overlap = geom
    starts = tile_starts(length, tile, overlap)
    stride = tile - overlap
    n = 1 if length <= tile else 1 + math.ceil((length - tile) / stride)
    assert len(starts) == n
    assert starts[:-1] == [i * stride for i in range(n - 1)]
    # the official pixel splitter (a different loop) lands on the same starts
    assert starts == _official_pixel_starts(length, tile, overlap)


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (100, 64, 32, [0, 32, 36]),  # OFFICIAL 5.7 / 10
        (96, 64, 32, [0, 32]),  # exact fit: no duplicated last tile
        (64, 64, 32, [0]),
        (10, 64, 32, [0]),  # tile longer than the axis
        (24, 16, 12, [0, 4, 8]),  # golden d_canvas, height
        (20, 16, 12, [0, 4]),  # golden d_canvas, width
        (1, 1, 0, [0]),
        (5, 1, 0, [0, 1, 2, 3, 4]),
    ],
)
def test_tile_starts_reference_values(length: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert tile_starts(length, tile, overlap) == expected


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "bad"),
    [
        (0, 64, 32, 0),
        (-5, 64, 32, -5),
        (100, 0, 0, 0),
        (100, -8, 0, -8),
        (100, 64, -1, -1),
        (100, 64, 64, 64),
        (100, 64, 65, 65),
    ],
)
def test_tile_starts_rejects_bad_geometry(length: int, tile: int, overlap: int, bad: int) -> None:
    with pytest.raises(GeometryError) as info:
        tile_starts(length, tile, overlap)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message and "\n" not in message
    assert str(bad) in message, f"the message should name the offending value: {message!r}"


def test_plan_tiles_rejects_bad_geometry() -> None:
    with pytest.raises(GeometryError):
        plan_tiles(0, 32, 16, 8)
    with pytest.raises(GeometryError):
        plan_tiles(32, 32, 16, 16)


# ---------------------------------------------------------------------------------------------
# plan_tiles


@SLOW_PROPERTY
@given(canvas_geometry(), st.booleans())
def test_plan_tiles_cover_every_pixel(geom: tuple[int, int, int, int], x_major: bool) -> None:
    height, width, tile, overlap = geom
    tiles = plan_tiles(height, width, tile, overlap, x_major=x_major)

    assert all((t.h, t.w) == (min(tile, height), min(tile, width)) for t in tiles)
    assert all(t.y0 >= 0 and t.x0 >= 0 and t.y0 + t.h <= height and t.x0 + t.w <= width for t in tiles)
    assert len({(t.y0, t.x0) for t in tiles}) == len(tiles), "no tile is visited twice"
    assert (_coverage(height, width, tiles) > 0).all()
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    assert len(tiles) == len(ys) * len(xs)


@PROPERTY
@given(canvas_geometry())
def test_plan_tiles_visiting_orders(geom: tuple[int, int, int, int]) -> None:
    height, width, tile, overlap = geom
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    x_major = [(t.y0, t.x0) for t in plan_tiles(height, width, tile, overlap, x_major=True)]
    row_major = [(t.y0, t.x0) for t in plan_tiles(height, width, tile, overlap)]
    assert x_major == [(y, x) for x in xs for y in ys]  # official: for each x, every y
    assert row_major == [(y, x) for y in ys for x in xs]


def test_plan_tiles_official_example() -> None:
    """Golden README, d_canvas: latent (24, 20), tile 16, overlap 12."""
    tiles = plan_tiles(24, 20, 16, 12, x_major=True)
    assert [(t.y0, t.x0) for t in tiles] == [(0, 0), (4, 0), (8, 0), (0, 4), (4, 4), (8, 4)]
    assert {(t.h, t.w) for t in tiles} == {(16, 16)}


def test_plan_tiles_grid_example_from_reference() -> None:
    """OFFICIAL 10: latent 100x100, T=64, O=32 -> offsets [0, 32, 36] per axis, 9 tiles."""
    tiles = plan_tiles(100, 100, 64, 32, x_major=True)
    assert len(tiles) == 9
    assert sorted({t.y0 for t in tiles}) == sorted({t.x0 for t in tiles}) == [0, 32, 36]


def test_plan_tiles_degenerate_shapes() -> None:
    # 1 x N strip: tiles are clipped to the single row
    tiles = plan_tiles(1, 50, 16, 4)
    assert {(t.y0, t.h, t.w) for t in tiles} == {(0, 1, 16)}
    assert (_coverage(1, 50, tiles) > 0).all()
    # tile larger than the whole image: one tile, the image itself
    assert plan_tiles(7, 13, 64, 32) == [Tile(0, 0, 7, 13)]


def test_tile_scaled_maps_latent_tiles_to_pixels() -> None:
    t = Tile(4, 8, 16, 12).scaled(8)
    assert t == Tile(32, 64, 128, 96)
    assert t.slices == (slice(32, 160), slice(64, 160))
    # the scaled plan of a latent canvas covers the pixel canvas
    tiles = [tt.scaled(8) for tt in plan_tiles(24, 20, 16, 12)]
    assert (_coverage(24 * 8, 20 * 8, tiles) > 0).all()


def _golden_tile_orders(golden_dir: Path) -> list[tuple[str, int, int, int, int, list[tuple[int, int]]]]:
    index = json.loads((golden_dir / "index.json").read_text())
    out = []
    for case in index["cases"]:
        meta, params = case.get("meta", {}), case["params"]
        for patch in meta.get("pixel_tiles", []):
            h, w = patch["latent_hw"]
            order = [(t["y0"], t["x0"]) for t in patch["canvas_tiles"]]
            out.append((case["id"], h, w, meta["tile_size_latent"], params["tile_overlap"], order))
        if "canvas" in params and "canvas_tiles" in meta:
            _, ih, iw = params["image_shape"]
            order = [(t["y0"], t["x0"]) for t in meta["canvas_tiles"]]
            canvas = params["canvas"]
            out.append((case["id"], ih // 8, iw // 8, canvas["tile_size"], canvas["tile_overlap"], order))
    return out


def test_plan_tiles_matches_every_golden_canvas_order(golden_dir: Path) -> None:
    cases = _golden_tile_orders(golden_dir)
    assert len(cases) >= 4
    for case_id, h, w, tile, overlap, order in cases:
        got = [(t.y0, t.x0) for t in plan_tiles(h, w, tile, overlap, x_major=True)]
        assert got == order, case_id


def test_plan_tiles_matches_golden_pixel_tiles(golden_dir: Path) -> None:
    """f_tile_pipeline: the official pixel splitter (160 px tiles, stride 96) visits its patches height-first."""
    index = json.loads((golden_dir / "index.json").read_text())
    case = next(c for c in index["cases"] if c["id"] == "f_tile_pipeline")
    patches = [tuple(p["index_infos_h0_h1_w0_w1"]) for p in case["meta"]["pixel_tiles"]]
    size, stride = case["params"]["vqgantile_size"], case["params"]["vqgantile_stride"]
    height, width = max(p[1] for p in patches), max(p[3] for p in patches)
    tiles = plan_tiles(height, width, size, size - stride, x_major=True)
    assert [(t.y0, t.y0 + t.h, t.x0, t.x0 + t.w) for t in tiles] == patches


# ---------------------------------------------------------------------------------------------
# gaussian_weights


@SLOW_PROPERTY
@given(st.integers(1, 256), st.integers(1, 256), st.booleans())
def test_gaussian_weights_strictly_positive_and_separable(h: int, w: int, official: bool) -> None:
    g = gaussian_weights(h, w, official_centre=official)
    assert g.shape == (h, w)
    assert g.dtype == torch.float32
    assert bool((g > 0).all()) and bool(torch.isfinite(g).all())
    g64 = gaussian_weights(h, w, official_centre=official, dtype=torch.float64)
    # rank one: w[i, j] * w[k, l] == w[i, l] * w[k, j]
    torch.testing.assert_close(g64[:, :1] * g64[:1, :] / g64[0, 0], g64, rtol=1e-12, atol=0)


@SLOW_PROPERTY
@given(st.integers(1, 256), st.integers(1, 256))
def test_gaussian_weights_default_is_symmetric(h: int, w: int) -> None:
    g = gaussian_weights(h, w)
    torch.testing.assert_close(g.flip(0), g, rtol=1e-6, atol=0)
    torch.testing.assert_close(g.flip(1), g, rtol=1e-6, atol=0)
    # the peak is in the centre
    assert float(g[(h - 1) // 2, (w - 1) // 2]) == pytest.approx(float(g.max()), rel=1e-6)


def test_gaussian_weights_official_centre_reference_values() -> None:
    """OFFICIAL 5.7 for T=64: the map is outer(g_y, g_x) with g_y centred at T/2 and g_x at (T-1)/2."""
    g = gaussian_weights(64, 64, official_centre=True, dtype=torch.float64)
    gx = {0: 2.1905e-5, 31: 3.97727, 32: 3.97727, 63: 2.1905e-5}
    gy = {0: 1.4867e-5, 32: 3.98942, 63: 3.2079e-5}
    for y, vy in gy.items():
        for x, vx in gx.items():
            assert float(g[y, x]) == pytest.approx(vy * vx, rel=1e-4), (y, x)
    # the horizontal profile is symmetric, the vertical one is half a pixel low
    assert torch.equal(g.flip(1), g)
    assert float(g[0, 31]) < float(g[63, 31])


def test_gaussian_weights_default_centre_differs_from_official_only_vertically() -> None:
    plain = gaussian_weights(64, 48, dtype=torch.float64)
    official = gaussian_weights(64, 48, official_centre=True, dtype=torch.float64)
    assert not torch.allclose(plain, official)
    # same horizontal profile: the ratio between columns is identical
    torch.testing.assert_close(plain / plain[:, :1], official / official[:, :1], rtol=1e-12, atol=0)


def test_gaussian_weights_match_golden_tile_weights(golden_dir: Path) -> None:
    from safetensors.torch import load_file

    golden = load_file(str(golden_dir / "cases" / "d_canvas.safetensors"))["inter.tile_weights"]
    assert golden.dtype == torch.float64 and golden.shape == (1, 4, 16, 16)
    ours = gaussian_weights(16, 16, official_centre=True, dtype=torch.float64)
    for c in range(golden.shape[1]):
        torch.testing.assert_close(ours, golden[0, c], rtol=0, atol=1e-12)
    # the default (symmetric) map is a different one
    assert (gaussian_weights(16, 16, dtype=torch.float64) - golden[0, 0]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# TileAccumulator


def _blend(canvas: torch.Tensor, tile: int, overlap: int, weights: str, official: bool, seed: int) -> torch.Tensor:
    *_, h, w = canvas.shape
    acc = TileAccumulator(tuple(canvas.shape), device="cpu", official_rounding=official)
    gen = torch.Generator().manual_seed(seed)
    for t in plan_tiles(h, w, tile, overlap, x_major=official):
        if weights == "gaussian":
            dtype = torch.float64 if official else torch.float32
            wt = gaussian_weights(t.h, t.w, official_centre=official, dtype=dtype)
        else:  # arbitrary positive weights, different for every tile
            wt = torch.rand(t.h, t.w, generator=gen, dtype=torch.float64) * 10 + 1e-3
        acc.add(t, canvas[(..., *t.slices)].clone(), wt)
    return acc.result()


@SLOW_PROPERTY
@given(canvas_geometry(max_side=96, max_tile=48), st.sampled_from(["gaussian", "random"]), st.integers(0, 2**31 - 1))
def test_accumulator_reproduces_the_canvas(geom: tuple[int, int, int, int], weights: str, seed: int) -> None:
    h, w, tile, overlap = geom
    canvas = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    out = _blend(canvas, tile, overlap, weights, official=False, seed=seed)
    assert out.shape == canvas.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, canvas, rtol=1e-5, atol=1e-5)


@SLOW_PROPERTY
@given(canvas_geometry(max_side=96, max_tile=48), st.sampled_from(["gaussian", "random"]), st.integers(0, 2**31 - 1))
def test_accumulator_official_rounding_reproduces_the_canvas(
    geom: tuple[int, int, int, int], weights: str, seed: int
) -> None:
    h, w, tile, overlap = geom
    canvas = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(seed))
    out = _blend(canvas, tile, overlap, weights, official=True, seed=seed)
    assert out.dtype == torch.float32
    # Error bound of the official arithmetic: every tile add rounds the float32 value and weight sums once
    # (relative error <= u = 2**-24 of a partial sum; all terms share the sign of the pixel, so no cancellation),
    # and the final division rounds once more: |out - x| <= (2 n + 1) u |x| for a pixel covered by n tiles,
    # whatever the BLAS or vector path. A factor 2 covers the second-order terms.
    cover = torch.zeros(h, w, dtype=torch.float64)
    for t in plan_tiles(h, w, tile, overlap, x_major=True):
        cover[t.slices] += 1
    bound = 2 * (2 * cover + 1) * 2.0**-24 * canvas.double().abs() + 1e-30
    err = (out.double() - canvas.double()).abs()
    assert bool((err <= bound).all()), f"max error / bound {float((err / bound).max()):.3f}"


@SLOW_PROPERTY
@given(canvas_geometry(max_side=64, max_tile=40), st.floats(-1e3, 1e3, allow_nan=False), st.booleans())
def test_accumulator_blends_a_constant_to_the_constant(
    geom: tuple[int, int, int, int], value: float, official: bool
) -> None:
    h, w, tile, overlap = geom
    acc = TileAccumulator((1, 4, h, w), device="cpu", official_rounding=official)
    for t in plan_tiles(h, w, tile, overlap):
        acc.add(t, torch.full((1, 4, t.h, t.w), value), gaussian_weights(t.h, t.w, official_centre=official))
    expected = torch.full((1, 4, h, w), value, dtype=torch.float32)
    torch.testing.assert_close(acc.result(), expected, rtol=2e-6, atol=1e-6)


def test_accumulator_weights_matter() -> None:
    """Two full-size tiles with different values and weights 1 and 3 blend to (a + 3 b) / 4."""
    acc = TileAccumulator((1, 2, 4, 5), device="cpu")
    t = Tile(0, 0, 4, 5)
    acc.add(t, torch.full((1, 2, 4, 5), 1.0), torch.ones(4, 5))
    acc.add(t, torch.full((1, 2, 4, 5), 5.0), torch.full((4, 5), 3.0))
    torch.testing.assert_close(acc.result(), torch.full((1, 2, 4, 5), 4.0))


def test_accumulator_official_rounding_rounds_after_every_tile() -> None:
    """The official buffers are float32 and each float64 tile sum is rounded back to float32."""
    acc = TileAccumulator((1, 1, 1, 1), device="cpu", official_rounding=True)
    t = Tile(0, 0, 1, 1)
    w = torch.tensor([[1.0]], dtype=torch.float64)
    acc.add(t, torch.tensor([[[[1.0]]]]), w)
    acc.add(t, torch.tensor([[[[2.0**-30]]]]), w)  # lost when rounded to float32 after the first tile
    assert acc.value.dtype == torch.float32
    assert float(acc.value) == 1.0
    plain64 = TileAccumulator((1, 1, 1, 1), device="cpu", dtype=torch.float64)
    plain64.add(t, torch.tensor([[[[1.0]]]], dtype=torch.float64), w)
    plain64.add(t, torch.tensor([[[[2.0**-30]]]], dtype=torch.float64), w)
    assert float(plain64.value) == 1.0 + 2.0**-30


@pytest.mark.parametrize("official", [False, True])
def test_accumulator_raises_on_uncovered_pixels(official: bool) -> None:
    acc = TileAccumulator((1, 4, 24, 20), device="cpu", official_rounding=official)
    tiles = plan_tiles(24, 20, 16, 12)
    for t in tiles[:-1]:  # the last tile holds the bottom-right corner alone
        acc.add(t, torch.ones(1, 4, t.h, t.w), gaussian_weights(t.h, t.w))
    with pytest.raises(GeometryError) as info:
        acc.result()
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    # nothing added at all
    with pytest.raises(GeometryError):
        TileAccumulator((3, 5), device="cpu").result()


# TilePlan: built once per image


@pytest.mark.parametrize("official", [False, True])
def test_tile_plan_pads_the_last_group_and_sums_the_weights_once(official):
    plan = TilePlan.build(24, 20, 16, 12, batch=4, device="cpu", official=official)
    assert len(plan.tiles) == 6 and [len(g) for g in plan.groups] == [4, 2]
    assert [len(plan.padded(g)) for g in plan.groups] == [4, 4]  # fixed-shape batches
    again = TileAccumulator((1, 24, 20), device="cpu", official_rounding=official)
    for t in plan.tiles:
        again.add(t, torch.zeros(1, t.h, t.w), plan.weights)
    torch.testing.assert_close(plan.weight_sum, again.weight, rtol=0, atol=0)
    acc = plan.accumulator((1, 3, 24, 20), "cpu")
    for _ in range(2):  # the buffer is reused across steps: reset, add, result
        acc.reset()
        for t in plan.tiles:
            acc.add(t, torch.full((1, 3, t.h, t.w), 2.0), plan.weights)
        torch.testing.assert_close(acc.result(), torch.full((1, 3, 24, 20), 2.0), rtol=1e-6, atol=1e-6)
