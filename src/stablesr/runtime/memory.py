"""Accelerator memory: recognising out-of-memory failures and giving the memory back."""

from __future__ import annotations


def is_out_of_memory(exc: BaseException) -> bool:
    """Host or accelerator out of memory (CUDA reports it as a RuntimeError)."""
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    """Return cached CUDA memory after a failure, so the next item starts clean."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
