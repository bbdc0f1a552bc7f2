"""The StableSR pipeline: :class:`StableSRPipeline` (:mod:`.core`) and its per-call settings (:mod:`.settings`)."""

from .core import StableSRPipeline
from .settings import NEGATIVE_PROMPT, POSITIVE_PROMPT, RunSettings, StableSRPipelineOutput, TilingSettings

__all__ = ["NEGATIVE_PROMPT", "POSITIVE_PROMPT", "RunSettings", "StableSRPipeline", "StableSRPipelineOutput",
           "TilingSettings"]
