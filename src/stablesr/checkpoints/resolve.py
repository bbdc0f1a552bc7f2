"""What settings a single checkpoint file gets: from the user, a named preset, its content, its config or its name.

The weights cannot tell their prediction type (eps or v) nor their native resolution, and the released
files look alike. :func:`resolve_single_file` decides, in this order: explicit settings (``--prediction-type``,
``--sample-size``), a named preset (when no config is given), the file's identity as an official release file (byte size, then cached
sha256: a renamed 768-v file is still 768-v), an official config that states ``parameterization``, the file
name, and last the SD-2 default (eps at the config's size, or 512) with ONE one-line warning saying what
was assumed and how to change it. A file that is not a diffusion checkpoint at all (a CFW autoencoder
given as ``--checkpoint``, a webui SFT-only extract) is refused on one line.

StableSR weights are under the NTU S-Lab License 1.0 (non-commercial); this code is Apache-2.0.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..presets import PRESETS, ModelPreset, detect_variant
from .identify import StateDictInfo, classify_state_dict, identify_file, unknown_file_warning

__all__ = ["ResolvedCheckpoint", "read_key_shapes", "resolve_single_file"]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """The settings a checkpoint file is built with, and where they came from.

    Example:
        >>> ResolvedCheckpoint("v", 768, "release file", preset="stablesr-768v").source
        'release file'
    """

    prediction_type: str
    sample_size: int | None  # None: the config's own size
    source: str  # "flags", "preset", "release file", "config", "file name", "assumed"
    preset: str | None = None  # the release file's (or named) preset
    warning: str | None = None  # one line for the user when something was assumed


def read_key_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint, read cheaply (safetensors header, or a memory-mapped safe load)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    from .loading import load_state_dict

    return {k: tuple(v.shape) for k, v in load_state_dict(p).items()}


def _config_prediction(config_model: dict[str, Any] | None) -> tuple[str | None, int | None]:
    """(parameterization if the config states it, its image size)."""
    if not config_model:
        return None, None
    params = config_model.get("params", {})
    stated = params.get("parameterization")
    size = params.get("image_size")
    return (str(stated) if stated else None), (int(size) if size else None)


def _refuse_kind(path: Path, info: StateDictInfo) -> None:
    if info.kind == "cfw":
        raise CheckpointError(f"{path}: this is a {info.describe()}, not a diffusion checkpoint; "
                              "pass it as --cfw-checkpoint (and the diffusion model as --checkpoint)")
    if info.kind == "sft_extract":
        raise CheckpointError(f"{path}: this is a {info.describe()}; load it in Python with "
                              "StableSRPipeline.from_single_file(extract, cfw, base_model=<SD-2.1 folder>)")
    if info.kind != "diffusion":
        raise CheckpointError(f"{path}: not a StableSR checkpoint (no UNet + time-aware encoder keys found)")


def resolve_single_file(
    path: str | os.PathLike[str],
    *,
    prediction_type: str | None = None,
    sample_size: int | None = None,
    preset: ModelPreset | None = None,
    config_model: dict[str, Any] | None = None,
    on_hash: Callable[[Path], None] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> ResolvedCheckpoint:
    """Decide the prediction type and sample size of ``path`` (see the module docstring for the order).

    ``config_model``: the official config's ``model`` section, if one was given; ``shapes``: key
    shapes already read (else read here). Raises :class:`CheckpointError` for files of another kind.

    Example:
        >>> resolve_single_file("renamed.ckpt").prediction_type  # doctest: +SKIP
        'v'
    """
    p = Path(path)
    ident = identify_file(p, on_hash=on_hash)
    if ident is not None and ident.role == "cfw":
        raise CheckpointError(f"{p}: this is the official CFW autoencoder {ident.file.name}, not a diffusion "
                              "checkpoint; pass it as --cfw-checkpoint")
    info = classify_state_dict(shapes if shapes is not None else read_key_shapes(p))
    _refuse_kind(p, info)
    stated, config_size = _config_prediction(config_model)
    named = detect_variant(p)
    released = PRESETS.get(ident.preset) if ident is not None else None
    # A named preset speaks for files without a config (with one, the config is the architecture asked for);
    # a release file recognised by content is what it is, config or not.
    for source, told in (("preset", preset if config_model is None else None), ("release file", released)):
        if told is not None:
            return ResolvedCheckpoint(prediction_type or told.prediction_type, sample_size or told.image_size,
                                      "flags" if prediction_type and sample_size else source, preset=told.name)
    if prediction_type is not None:
        return ResolvedCheckpoint(prediction_type, sample_size or named.get("sample_size"), "flags")
    if stated is not None:
        return ResolvedCheckpoint(stated, sample_size, "config")
    if named.get("parameterization"):
        return ResolvedCheckpoint(named["parameterization"], sample_size or named.get("sample_size"), "file name")
    size = sample_size or config_size or 512
    warning = "warning: " + unknown_file_warning(p, info, prediction_type="eps", sample_size=size)
    return ResolvedCheckpoint("eps", sample_size, "assumed", warning=warning)
