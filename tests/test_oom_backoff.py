"""OOM back-off: simulated out-of-memory errors (the real exception types) make the image retry smaller."""

from __future__ import annotations

import pytest
import torch

from stablesr.config import MIN_VAE_TILE, UpscaleOptions
from stablesr.runtime.memory import is_out_of_memory, smaller_options, with_oom_backoff


def failing(n: int, exc: BaseException):
    """An attempt that raises ``exc`` the first ``n`` times, recording the options it was given."""
    seen: list[tuple[int, int | None]] = []

    def attempt(o: UpscaleOptions) -> str:
        seen.append((o.tile_batch_size, o.vae_tile_size))
        if len(seen) <= n:
            raise exc
        return "done"

    return attempt, seen


@pytest.mark.parametrize("exc", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"),
                                 RuntimeError("CUDA error: out of memory")])
def test_halves_tile_batch_then_vae_tile_and_says_so(exc):
    attempt, seen = failing(4, exc)
    notes: list[str] = []
    result = with_oom_backoff(attempt, UpscaleOptions(tile_batch_size=4, vae_tile_size=1024), output_side=2048,
                              note=notes.append)
    assert result == "done"
    assert seen == [(4, 1024), (2, 1024), (1, 1024), (1, 512), (1, 256)]
    assert len(notes) == 4 and all("\n" not in n and "out of memory" in n for n in notes)
    assert "tile batch 1, VAE tile 512 px" in notes[2] and "VAE tile 256 px" in notes[3]


def test_untiled_vae_starts_tiling_at_half_the_output():
    attempt, seen = failing(1, torch.cuda.OutOfMemoryError("out of memory"))
    with_oom_backoff(attempt, UpscaleOptions(tile_batch_size=1, vae_tile_size=None), output_side=1500,
                     note=lambda m: None)
    assert seen == [(1, None), (1, 744)]


def test_gives_up_at_the_smallest_working_set_with_the_original_error():
    exc = torch.cuda.OutOfMemoryError("CUDA out of memory")
    attempt, seen = failing(100, exc)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        with_oom_backoff(attempt, UpscaleOptions(tile_batch_size=2, vae_tile_size=256), output_side=4096,
                         note=lambda m: None)
    assert seen[-1] == (1, MIN_VAE_TILE) and len(seen) == 4  # (2,256) (1,256) (1,128) (1,64)
    assert smaller_options(UpscaleOptions(tile_batch_size=1, vae_tile_size=MIN_VAE_TILE), 4096) is None


def test_other_errors_are_not_retried():
    attempt, seen = failing(1, ValueError("bad image"))
    with pytest.raises(ValueError):
        with_oom_backoff(attempt, UpscaleOptions(), output_side=512, note=lambda m: None)
    assert len(seen) == 1
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and is_out_of_memory(MemoryError())


def test_backoff_through_the_real_pipeline(tiny_weights):
    """The pipeline's first VAE decode raises a CUDA OOM; the retry with a smaller VAE tile produces the image."""
    import numpy as np

    from stablesr.pipeline import StableSRPipeline

    pipe = StableSRPipeline.from_single_file(tiny_weights["ldm"], tiny_weights["cfw"], config=tiny_weights["config"],
                                             prompt_embeds=tiny_weights["prompt_embeds"])
    pipe.set_progress_bar_config(disable=True)
    real_decode, calls = pipe.vae.decode_fused, []

    def decode_once_oom(z, *a, **k):
        calls.append(tuple(z.shape[-2:]))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real_decode(z, *a, **k)

    pipe.vae.decode_fused = decode_once_oom
    lr = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    notes: list[str] = []

    def attempt(o: UpscaleOptions):
        return pipe(lr, o.scale, 1, tile_batch_size=o.tile_batch_size, vae_tile_size=o.vae_tile_size,
                    output_type="np", generator=torch.Generator().manual_seed(0)).images

    out = with_oom_backoff(attempt, UpscaleOptions(scale=4, tile_batch_size=1, vae_tile_size=None), output_side=128,
                           note=notes.append)
    assert out.shape == (1, 128, 128, 3) and len(notes) == 1
    assert calls[0] == (16, 16) and len(calls) == 10  # then 3x3 tiles of at most 64 px (8 latent)
    assert all(max(c) <= 8 for c in calls[1:])


def test_automatic_tile_batch_backs_off_to_the_fixed_default_first():
    from stablesr.config import DEFAULT_TILE_BATCH

    o = smaller_options(UpscaleOptions(tile_batch_size=None, vae_tile_size=1024), output_side=2048)
    assert o is not None and (o.tile_batch_size, o.vae_tile_size) == (DEFAULT_TILE_BATCH, 1024)
