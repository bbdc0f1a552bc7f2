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
    from conftest import noise_image, tiny_pipeline

    from stablesr.tiling import canvas

    pipe = tiny_pipeline(tiny_weights)
    lr = noise_image(64, 80)
    chosen = []
    real = canvas.choose_tile_batch
    monkeypatch.setattr(canvas, "choose_tile_batch", lambda *a, **k: chosen.append(real(*a, **k)) or chosen[-1])
    run = lambda **kw: pipe(lr, 4.0, 2, generator=torch.Generator().manual_seed(0), output_type="pt", **kw)
    auto, one = run(), run(tile_batch_size=1)
    # a 40x32 latent is 4x3 tiles of 16 (overlap 8): one call of 12 (the memory-blind default would make 3 of 4)
    assert chosen == [12]
    # the batch size changes only float32 rounding (latents of size ~5: relative 1e-4; images in [0, 1])
    torch.testing.assert_close(auto.latents, one.latents, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(auto.images, one.images, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------- VAE tiles encoded once


def _count_encoder_passes(vae) -> list[int]:
    calls = [0]
    vae.encoder.conv_in.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_tiled_decode_reuses_the_structure_encode_features(tiny_weights, one_thread, monkeypatch):
    from conftest import noise_image, tiny_pipeline

    from stablesr.pipeline import core
    from stablesr.tiling.vae import plan_vae_tiles

    pipe = tiny_pipeline(tiny_weights)
    # The released checkpoints' two encoders are one (the loader then keeps no struct_vae); the tiny random
    # ones differ, so drop the diffusion checkpoint's VAE as loading the released pair does.
    pipe.struct_vae = None
    calls = _count_encoder_passes(pipe.vae)
    lr = noise_image(40, 48)  # 160x192 out: 3x4 VAE tiles of 64 px (overlap 16)
    n_tiles = len(plan_vae_tiles(160 // 8, 192 // 8, 64, 16))
    run = lambda **kw: pipe(lr, 4.0, 2, generator=torch.Generator().manual_seed(0), output_type="pt",
                            vae_tile_size=64, vae_tile_overlap=16, **kw).images
    kept = run(fidelity=0.5)
    assert n_tiles == 12 and calls[0] == n_tiles  # each tile encoded once: its features waited for the decoder
    calls[0] = 0
    monkeypatch.setattr(core, "feature_budget_bytes", lambda device: 0)  # no room: the decoder encodes again
    again = run(fidelity=0.5)
    assert calls[0] == 2 * n_tiles
    torch.testing.assert_close(kept, again, rtol=0, atol=1e-6)  # the same encoder on the same pixels
    calls[0] = 0
    plain = run(fidelity=0.0)  # no fusion: no features are needed at all
    assert calls[0] == n_tiles and (plain - kept).abs().max() > 1e-3


def test_tile_features_are_kept_only_within_the_budget():
    from stablesr.models.cfw import CFWAutoencoderKL
    from stablesr.tiling.vae import decode, encode

    torch.manual_seed(0)
    vae = CFWAutoencoderKL(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                           up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, fusion=True).eval()
    image = torch.rand(1, 3, 96, 128) * 2 - 1
    with torch.no_grad():
        _, feats = encode(vae, image, tile_px=64, overlap_px=16, keep_features=True)
        need = feats.nbytes
        # level 1 (32 ch at 1/2) + level 2 (32 ch at 1/4) of 2 x 3 tiles of 56 px, fp32
        assert len(feats.by_tile) == 6 and need == 6 * 4 * 32 * (28 * 28 + 14 * 14)
        assert encode(vae, image, tile_px=64, overlap_px=16, keep_features=True, feature_budget_bytes=need - 1)[1] is None
        assert encode(vae, image, tile_px=64, overlap_px=16, keep_features=True, feature_budget_bytes=need)[1] is not None
        assert encode(vae, image, tile_px=None, keep_features=True, feature_budget_bytes=0)[1] is not None  # untiled
        latent = torch.randn(1, 4, 12, 16)
        with_kept = decode(vae, latent, image, 0.7, tile_px=64, overlap_px=16, features=feats)
        assert feats.by_tile == {}  # consumed: each tile's features were released once it was decoded
        encoded = decode(vae, latent, image, 0.7, tile_px=64, overlap_px=16)
        torch.testing.assert_close(with_kept, encoded, rtol=0, atol=1e-6)
        # a different tile plan finds none of its tiles among the kept ones and encodes them itself
        feats = encode(vae, image, tile_px=64, overlap_px=16, keep_features=True)[1]
        other = decode(vae, latent, image, 0.7, tile_px=80, overlap_px=16, features=feats)
        assert len(feats.by_tile) == 6  # none of them was used
        torch.testing.assert_close(other, decode(vae, latent, image, 0.7, tile_px=80, overlap_px=16), rtol=0, atol=1e-6)
