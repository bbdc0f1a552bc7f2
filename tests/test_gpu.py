"""CUDA-only checks (skipped without a GPU; CI has none): no host sync inside the step loop, reduced
precision on the GPU against the CPU fp32 path, CUDA graphs through ``pipe.compile()``.

Tolerances as in ``test_precision.py`` (tiny golden models, 40 px -> 160 px, 4 DDPM steps, fidelity 0.5):
bf16 mean |diff| <= 0.01, max <= 0.1; fp16 mean <= 0.002, max <= 0.02; compiled vs eager <= 1e-3 max.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_pipeline
from PIL import Image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def lr(data_dir) -> np.ndarray:
    im = Image.open(data_dir / "real_lr" / "0030.jpg").convert("RGB").resize((40, 40), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255


def upscale(pipe, lr: np.ndarray, steps: int = 4, **kwargs) -> np.ndarray:
    return pipe(lr, upscale=4.0, num_inference_steps=steps, fidelity=0.5, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs).images


@pytest.mark.parametrize("kwargs", [{"sampler": "ddpm"}, {"sampler": "ddim", "eta": 0.5},
                                    {"sampler": "ddpm", "guidance_scale": 3.0}])
def test_step_loop_never_waits_for_the_gpu(tiny_weights, lr, kwargs):
    """From the end of step 0 to the last step every op is queued: any host<->device sync raises."""
    pipe = tiny_pipeline(tiny_weights).to("cuda")
    steps = 5

    def strict_from_step_one(i: int, t: int, x: torch.Tensor) -> None:
        torch.cuda.set_sync_debug_mode("error" if i < steps - 1 else "default")

    try:
        out = upscale(pipe, lr, steps, callback=strict_from_step_one, **kwargs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (1, 160, 160, 3) and np.isfinite(out).all()


@pytest.mark.parametrize("dtype, mean_tol, max_tol", [(torch.bfloat16, 0.01, 0.1), (torch.float16, 0.002, 0.02)])
def test_reduced_precision_on_cuda_matches_cpu_fp32(tiny_weights, lr, dtype, mean_tol, max_tol):
    reference = upscale(tiny_pipeline(tiny_weights), lr)
    out = upscale(tiny_pipeline(tiny_weights).to("cuda", dtype), lr)
    diff = np.abs(out - reference)
    assert diff.mean() <= mean_tol and diff.max() <= max_tol and diff.max() > 0


def test_cuda_graphs_compile_keeps_the_result(tiny_weights, lr):
    eager = upscale(tiny_pipeline(tiny_weights).to("cuda"), lr)
    pipe = tiny_pipeline(tiny_weights).to("cuda")
    pipe.compile()  # mode="reduce-overhead" on CUDA: the fixed-shape tile batch replays one CUDA graph
    first, second = upscale(pipe, lr), upscale(pipe, lr)
    assert np.abs(first - eager).max() <= 1e-3 and np.abs(second - first).max() <= 1e-5
