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
