"""Exceptions with one-line, user-facing messages.

Every error a user can cause (a bad file, a missing checkpoint, impossible geometry) is a
:class:`StableSRError`; the CLI prints ``str(err)`` and never a traceback.
"""

from __future__ import annotations


class StableSRError(Exception):
    """Base class for errors whose message is meant for the user, on one line."""


class InputImageError(StableSRError):
    """An input image cannot be read or used. The message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(StableSRError):
    """A checkpoint is missing, unsafe to load, or does not match the expected layout."""


class MissingWeightsError(CheckpointError):
    """Weights are not cached and cannot be downloaded (offline, or no network)."""


class GeometryError(StableSRError, ValueError):
    """Impossible tile or image geometry (zero size, overlap >= tile, ...)."""


class OptionsError(StableSRError, ValueError):
    """A run option is out of range or conflicts with another (see :class:`stablesr.config.UpscaleOptions`)."""


class UsageError(StableSRError):
    """The command line is wrong (bad flag, no inputs, conflicting options): exit code 2."""


class CancelledError(StableSRError):
    """The caller gave up on a run (a web page closed or reloaded); raised at the next sampling step."""
