"""StableSR (IJCV 2024) real-world super-resolution on diffusers.

Example:
    >>> from stablesr import StableSRPipeline
    >>> pipe = StableSRPipeline.from_single_file("stablesr_turbo.ckpt", cfw_ckpt="vqgan_cfw_00011.ckpt")  # doctest: +SKIP
    >>> image = pipe(Image.open("photo.jpg"), upscale=4, num_inference_steps=4).images[0]  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names -> defining module; imported on first use so `import stablesr` stays light.
_EXPORTS = {
    "StableSRPipeline": "stablesr.pipeline",
    "StableSRPipelineOutput": "stablesr.pipeline",
    "ModelConfig": "stablesr.config",
    "Quirks": "stablesr.config",
    "UpscaleOptions": "stablesr.config",
    "Upscaler": "stablesr.service",
    "UpscaleResult": "stablesr.service",
    "ModelSpec": "stablesr.hub",
    "load_model": "stablesr.hub",
    "TimeAwareEncoder": "stablesr.models.time_aware_encoder",
    "SFTAdapter": "stablesr.models.sft",
    "CFWAutoencoderKL": "stablesr.models.cfw",
    "RecordedNoise": "stablesr.diffusion.sampling",
    "NoiseSource": "stablesr.diffusion.sampling",
    "StableSRError": "stablesr.errors",
    "InputImageError": "stablesr.errors",
    "CheckpointError": "stablesr.errors",
    "MissingWeightsError": "stablesr.errors",
    "GeometryError": "stablesr.errors",
    "OptionsError": "stablesr.errors",
}

__all__ = [*_EXPORTS.keys(), "__version__"]  # noqa: PLE0604 - the keys are strings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stablesr' has no attribute {name!r}")
