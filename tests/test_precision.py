"""Reduced precision through the pipeline on CPU: bf16 (and fp16, slow on CPU) against the fp32 path.

Tolerances (tiny golden models, 40 px -> 160 px, 4 DDPM steps, fidelity 0.5, outputs in [0, 1]):
bf16 mean |diff| <= 0.01, max <= 0.1, PSNR >= 40 dB (measured 0.003 / 0.026 / 48 dB); fp16 (the VAE
stays fp32) mean <= 0.002, max <= 0.02, PSNR >= 55 dB (measured 0.0002 / 0.0016 / 72 dB). Another seed
differs by ~0.28 mean, so these bounds do test that the reduced-precision run is the same computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_pipeline
from PIL import Image

from stablesr.pipeline import StableSRPipeline


@pytest.fixture(scope="module")
def lr(data_dir) -> np.ndarray:
    im = Image.open(data_dir / "real_lr" / "0030.jpg").convert("RGB").resize((40, 40), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255


@pytest.fixture(scope="module")
def fp32(tiny_weights, lr) -> np.ndarray:
    return upscale(tiny_pipeline(tiny_weights), lr)


def upscale(pipe: StableSRPipeline, lr: np.ndarray, seed: int = 0) -> np.ndarray:
    return pipe(lr, upscale=4.0, num_inference_steps=4, fidelity=0.5, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2)))


def test_bf16_matches_fp32_within_tolerance(tiny_weights, lr, fp32):
    pipe = tiny_pipeline(tiny_weights).to(dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    out = upscale(pipe, lr)
    assert out.shape == fp32.shape and np.isfinite(out).all()
    diff = np.abs(out - fp32)
    assert diff.mean() <= 0.01 and diff.max() <= 0.1 and psnr(out, fp32) >= 40
    assert diff.max() > 0  # it really ran in bf16
    assert np.abs(upscale(tiny_pipeline(tiny_weights), lr, seed=1) - fp32).mean() > 0.05


@pytest.mark.slow
def test_fp16_matches_fp32_within_tolerance(tiny_weights, lr, fp32):
    pipe = tiny_pipeline(tiny_weights).to(dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float32  # the SD VAE stays fp32 in fp16
    out = upscale(pipe, lr)
    diff = np.abs(out - fp32)
    assert diff.mean() <= 0.002 and diff.max() <= 0.02 and psnr(out, fp32) >= 55
    assert diff.max() > 0
