"""Speed changes that must not change results: VAE tile placement, the encoder's attention layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stablesr.models.time_aware_encoder import SelfAttentionBlock
from stablesr.tiling.vae import balanced_starts, plan_vae_tiles


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 600), st.integers(2, 200), st.data())
def test_balanced_tiles_cover_with_the_fewest_tiles_and_keep_the_overlap(length, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    starts, size = balanced_starts(length, tile, overlap)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length
    assert starts == sorted(starts)
    if len(starts) > 1:
        assert min(starts[i] + size - starts[i + 1] for i in range(len(starts) - 1)) >= overlap
        # one tile fewer of the largest size could not cover the axis with that overlap
        assert (len(starts) - 1) * (tile - overlap) + overlap < length


def test_2048_px_is_nine_768_px_tiles_not_nine_1024_px_ones():
    tiles = plan_vae_tiles(256, 256, 1024, 128)
    assert len(tiles) == 9 and {(t.h, t.w) for t in tiles} == {(96, 96)}
    covered = sum(t.h * t.w for t in tiles) / 256**2
    assert 1.2 < covered < 1.3  # the flush-with-border plan covered 2.25x


def test_encoder_attention_equals_the_per_head_math_reference():
    torch.manual_seed(0)
    block = SelfAttentionBlock(64, 4).eval()
    x = torch.randn(2, 64, 6, 10)
    with torch.no_grad():
        out = block(x)
        b, c = 2, 64
        flat = x.reshape(b, c, -1)
        qkv = block.qkv(block.norm(flat)).reshape(b * 4, 3 * 16, -1)
        q, k, v = qkv.split(16, dim=1)
        scale = 16 ** -0.25  # the official per-head layout and scaling
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        ref = flat + block.proj_out(torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1))
    torch.testing.assert_close(out, ref.reshape_as(x), atol=1e-5, rtol=1e-5)
    assert not torch.equal(out, x)


def test_sdpa_math_and_fused_paths_agree_on_contiguous_qkv():
    q, k, v = (torch.randn(2, 4, 96, 16) for _ in range(3))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v), ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- automatic tile batch


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 128))
def test_balanced_batch_keeps_the_number_of_calls_and_never_grows(n, batch):
    from stablesr.tiling.budget import balanced_batch

    b = balanced_batch(n, batch)
    calls = -(-n // min(batch, n))
    assert 1 <= b <= min(batch, n) and -(-n // b) == calls
    assert b * calls - n < calls  # the padding of the last call is less than one tile per call


def test_auto_tile_batch_follows_the_free_memory():
    from stablesr.config import DEFAULT_TILE_BATCH
    from stablesr.tiling.budget import MAX_AUTO_TILE_BATCH, auto_tile_batch

    mb = 2**20
    assert auto_tile_batch(961, per_tile_bytes=mb, free_bytes=64 * 1024 * mb) == 61  # capped at 64, balanced
    assert auto_tile_batch(961, per_tile_bytes=mb, free_bytes=64 * 1024 * mb) <= MAX_AUTO_TILE_BATCH
    assert auto_tile_batch(49, per_tile_bytes=100 * mb, free_bytes=1000 * mb) == 5  # 5 fit in half of 1000 MB
    assert auto_tile_batch(49, per_tile_bytes=100 * mb, free_bytes=10 * mb) == 1  # never below one tile
    assert auto_tile_batch(49, per_tile_bytes=mb, free_bytes=None) == DEFAULT_TILE_BATCH  # unknown: the default
    assert auto_tile_batch(3, per_tile_bytes=mb, free_bytes=None) == 3


def test_tile_bytes_scale_with_the_model_tile_and_precision():
    from types import SimpleNamespace

    from stablesr.tiling.budget import free_memory_bytes, tile_bytes

    full = SimpleNamespace(config=SimpleNamespace(block_out_channels=[320, 640, 1280, 1280]))
    tiny = SimpleNamespace(config=SimpleNamespace(block_out_channels=[32, 32, 32, 32]))
    fp16 = tile_bytes(full, 64, 1, torch.float16)
    assert 200 * 2**20 < fp16 < 600 * 2**20  # the full SD-2 UNet at a 64x64 latent tile: a few hundred MB
    assert tile_bytes(full, 64, 2, torch.float32) == 4 * fp16  # guidance doubles, fp32 doubles
    assert tile_bytes(tiny, 16, 1, torch.float32) * 160 == tile_bytes(full, 64, 1, torch.float32)
    free = free_memory_bytes(torch.device("cpu"))
    assert free is None or free > 0


def test_automatic_batch_gives_the_same_image_as_one_tile_at_a_time(tiny_weights, one_thread, monkeypatch):
    from conftest import tiny_pipeline
    from PIL import Image

    from stablesr.tiling import canvas

    pipe = tiny_pipeline(tiny_weights)
    lr = Image.effect_noise((64, 80), 40).convert("RGB")
    chosen = []
    real = canvas.choose_tile_batch
    monkeypatch.setattr(canvas, "choose_tile_batch", lambda *a, **k: chosen.append(real(*a, **k)) or chosen[-1])
    run = lambda **kw: pipe(lr, 4.0, 2, generator=torch.Generator().manual_seed(0), output_type="pt", **kw)
    auto, one = run(), run(tile_batch_size=1)
    # a 40x32 latent is 4x3 tiles of 16 (overlap 8): one call of 12 (the memory-blind default would make 3 of 4)
    assert chosen == [12]
    torch.testing.assert_close(auto.latents, one.latents, rtol=0, atol=1e-4)  # batch size changes only rounding
    torch.testing.assert_close(auto.images, one.images, rtol=0, atol=1e-4)
