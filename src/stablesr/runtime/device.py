"""Device, precision and thread resolution for a run (``--device`` / ``--precision``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""Precision names as the command line spells them -> torch dtype names."""


def resolve_device(requested: str | None, *, local_rank: int | None = None) -> torch.device:
    """The device to run on; a plain ``cuda`` means ``cuda:local_rank`` in a distributed run.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    count = torch.cuda.device_count()
    if device.index is None and local_rank is not None:
        # One GPU per local rank; more processes than GPUs share them round-robin.
        device = torch.device("cuda", local_rank % count)
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {device}: only {count} CUDA device(s) here")
    if device.index is not None:
        torch.cuda.set_device(device)  # so code that uses "the current device" agrees
    return device


def resolve_dtype(precision: str | None, device: torch.device) -> torch.dtype:
    """``fp32``/``fp16``/``bf16``; default fp16 on CUDA, else fp32.

    Example:
        >>> import torch
        >>> resolve_dtype(None, torch.device("cpu"))
        torch.float32
    """
    import torch

    name = precision or ("fp16" if device.type == "cuda" else "fp32")
    return getattr(torch, DTYPES[name])


def quiet_library_logs() -> None:
    """Keep diffusers/transformers warnings off the terminal: they are not actionable for a CLI user
    (e.g. diffusers warns on every ``.to(dtype=...)``), and stderr is for our one-line messages."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def default_threads() -> int:
    """CPU threads for torch when the user set none: the cores this process may use, less the busy ones.

    torch takes every core by default; on a box whose cores are already busy (CI, shared servers)
    that oversubscription made one image 13x slower. The 1-minute load average tells how busy.

    Example:
        >>> 1 <= default_threads() <= (os.cpu_count() or 1)
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))
