"""The Hugging Face hub side: the cache, downloads, the weights' licence notice, and :func:`load_model`.

:func:`download` fetches (or finds in the Hugging Face cache) a preset's files (see
:mod:`stablesr.presets` for what is known about them); :func:`load_model` builds a ready pipeline from
a preset, official checkpoint file(s), or a converted folder / hub repository, applying a preset's
settings exactly once.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import MissingWeightsError, OptionsError
from .paths import stablesr_home
from .presets import DEFAULT_PRESET, ModelPreset, resolve_preset

if TYPE_CHECKING:  # heavy imports only for type checkers; the functions import lazily
    import torch

    from .pipeline import StableSRPipeline

__all__ = ["ModelSpec", "cached_files", "download", "download_command", "env_offline", "licence_notice",
           "load_model"]

_LICENCE_MARKER = "licence-notice-shown"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------------------------- cache


def _hub_cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The Hugging Face hub cache in use (read at call time, so HF_HOME set late still counts)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_files(preset: ModelPreset, *, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Path | None]:
    """Where each of the preset's files sits in the Hugging Face cache (``main``), or None. No network.

    Example:
        >>> cached_files(resolve_preset("turbo"))  # doctest: +SKIP
        {'stablesr_turbo.ckpt': PosixPath('.../hub/models--Iceclear--StableSR/snapshots/<commit>/stablesr_turbo.ckpt'),
         'vqgan_cfw_00011.ckpt': None}
    """
    from huggingface_hub import try_to_load_from_cache

    found: dict[str, Path | None] = {}
    for name in preset.filenames:
        hit = try_to_load_from_cache(preset.repo_id, name, cache_dir=str(_hub_cache(cache_dir)))
        found[name] = Path(hit) if isinstance(hit, str) else None  # _CACHED_NO_EXIST counts as missing
    return found


def env_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, but at call time (its constant is fixed at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def download_command(preset: ModelPreset, files: tuple[str, ...] | None = None) -> str:
    """The shell commands that fetch ``files`` (default: all of the preset's) into the hub cache.

    Example:
        >>> download_command(resolve_preset("turbo"))
        '`stablesr download turbo` (or `hf download Iceclear/StableSR stablesr_turbo.ckpt vqgan_cfw_00011.ckpt`)'
    """
    names = " ".join(files or preset.filenames)
    return f"`stablesr download {preset.name}` (or `hf download {preset.repo_id} {names}`)"


def download(
    preset: ModelPreset,
    *,
    offline: bool = False,
    files: tuple[str, ...] | None = None,
    announce: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    stream: IO[str] | None = None,
) -> dict[str, Path]:
    """Local paths of the preset's files, downloading what the Hugging Face cache lacks.

    Cached files are used without any network access. ``offline`` (or ``HF_HUB_OFFLINE=1``) never
    touches the network. ``files`` restricts to some of the preset's files. When a file is missing
    and cannot be fetched, :class:`MissingWeightsError` says, on one line, which files, the command
    that fetches them and where they go. ``announce`` prints the weights' licence notice once per
    machine (and a warning if a cached file is not the published version) on ``stream`` (stderr).

    Example:
        >>> paths = download(resolve_preset("turbo"), offline=True)  # doctest: +SKIP
        >>> sorted(paths)  # doctest: +SKIP
        ['stablesr_turbo.ckpt', 'vqgan_cfw_00011.ckpt']
    """
    offline = offline or env_offline()
    wanted = tuple(files or preset.filenames)
    found = {k: v for k, v in cached_files(preset, cache_dir=cache_dir).items() if k in wanted}
    missing = [name for name in wanted if found.get(name) is None]
    reason = "offline mode: --offline or HF_HUB_OFFLINE=1" if offline else ""
    if missing and not offline:
        reason = _fetch(preset, missing, found, cache_dir)
        missing = [name for name in wanted if found.get(name) is None]
    if missing:
        raise MissingWeightsError(_missing_message(preset, tuple(missing), reason, cache_dir))
    paths = {name: p for name, p in found.items() if p is not None}
    if announce:
        out = stream or sys.stderr
        licence_notice(preset, stream=out)
        for line in _version_warnings(preset, paths):
            print(line, file=out)
    return paths


def _fetch(preset: ModelPreset, names: list[str], found: dict[str, Path | None],
           cache_dir: str | os.PathLike[str] | None) -> str:
    """Download ``names`` into the cache, filling ``found``; returns why a download failed ("" if none did)."""
    from huggingface_hub import hf_hub_download

    for name in names:
        try:
            found[name] = Path(hf_hub_download(preset.repo_id, name, cache_dir=str(_hub_cache(cache_dir))))
        except Exception as exc:  # noqa: BLE001 - network, HTTP, disk: all mean "could not fetch"
            # Stop at the first failure: without a connection every further try would wait for its own timeout.
            return _fetch_reason(exc)
    return ""


def _fetch_reason(exc: BaseException) -> str:
    """A short reason for a failed download (the hub library's own messages span several lines)."""
    kind = type(exc).__name__
    if kind == "LocalEntryNotFoundError":
        return "no connection to the hub"
    if isinstance(exc, OSError) and getattr(exc, "strerror", None):
        return f"download failed: {exc.strerror}"
    return f"download failed ({kind})"


def _missing_message(preset: ModelPreset, missing: tuple[str, ...], reason: str,
                     cache_dir: str | os.PathLike[str] | None) -> str:
    why = f" ({reason})" if reason else ""
    return (
        f"model '{preset.name}' needs {', '.join(missing)} from {preset.repo_id}, which "
        f"{'is' if len(missing) == 1 else 'are'} not in the Hugging Face cache and could not be downloaded{why}; "
        f"fetch {'it' if len(missing) == 1 else 'them'} once with {download_command(preset, missing)}, "
        f"which stores them in {_hub_cache(cache_dir)}, or pass local files with --checkpoint/--cfw-checkpoint"
    )


def _version_warnings(preset: ModelPreset, paths: dict[str, Path]) -> list[str]:
    """Warnings for cached files that are not the published version.

    The cache names each blob by its ETag, which for LFS files is the content's sha256, so the
    check costs no hashing. Files not stored that way (copied in by hand) are not checked.
    """
    expected = {f.name: f.sha256 for f in preset.files}
    lines = []
    for name, path in paths.items():
        blob = Path(os.path.realpath(path)).name
        want = expected.get(name)
        if want and _SHA256_RE.fullmatch(blob) and blob != want:
            lines.append(
                f"warning: {name} in the cache (sha256 {blob[:12]}...) is not the version this preset was "
                f"checked against ({want[:12]}...); results may differ"
            )
    return lines


# --------------------------------------------------------------------------------------------- licence


def licence_notice(preset: ModelPreset, *, stream: IO[str] | None = None) -> bool:
    """Print the weights' licence notice unless it was shown before on this machine; True if printed.

    A marker file in :func:`stablesr.paths.stablesr_home` remembers it. When the marker cannot be
    written (read-only home) the notice is shown every time rather than never.

    Example:
        >>> licence_notice(resolve_preset("turbo"))  # doctest: +SKIP
        True
    """
    marker = stablesr_home() / _LICENCE_MARKER
    if marker.exists():
        return False
    print(
        f"note: the StableSR weights from {preset.repo_id} are licensed under the {preset.licence}: "
        "research and other non-commercial use only; commercial use needs the authors' permission "
        "(see https://github.com/IceClear/StableSR). This notice is shown once.",
        file=stream or sys.stderr,
    )
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{preset.licence}\n")
    except OSError:
        pass  # showing the notice again next time is the safe failure
    return True


# --------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load. Without ``checkpoint``: the preset (default turbo), fetched or cached.
    With a checkpoint file: it (plus ``cfw_checkpoint`` / ``config`` / ``prompt_embeds``), and the
    preset's settings if one is named. A folder or hub repository id: a converted model.

    Example:
        >>> ModelSpec(preset="turbo", offline=True).preset
        'turbo'
    """

    preset: str | None = None
    checkpoint: str | os.PathLike[str] | None = None
    cfw_checkpoint: str | os.PathLike[str] | None = None
    config: str | os.PathLike[str] | None = None
    prompt_embeds: str | os.PathLike[str] | None = None
    offline: bool = False
    prediction_type: str | None = None  # "eps" / "v": overrides what the file, preset or config say
    sample_size: int | None = None  # native resolution in pixels (512, 768): likewise


def load_model(
    spec: ModelSpec,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    announce: bool = True,
    note: Callable[[str], None] | None = None,
) -> StableSRPipeline:
    """A ready pipeline for ``spec``; a named preset's defaults (steps, fidelity, colour fix) applied once.

    ``announce`` prints the licence notice (rank 0 of a distributed run only); ``note`` receives
    remarks worth telling a user (e.g. no CFW file given).

    Example:
        >>> pipe = load_model(ModelSpec(preset="turbo"), "cuda", torch.float16)  # doctest: +SKIP
        >>> pipe(image, upscale=4).images[0].save("out.png")  # doctest: +SKIP
    """
    from .pipeline import StableSRPipeline

    preset = resolve_preset(spec.preset) if spec.preset else None
    if not spec.checkpoint:
        preset = preset or resolve_preset(DEFAULT_PRESET)
        needed = (preset.ckpt.name,) if spec.cfw_checkpoint is not None else preset.filenames
        paths = download(preset, offline=spec.offline, files=needed, announce=announce)
        cfw = spec.cfw_checkpoint if spec.cfw_checkpoint is not None else paths[preset.cfw_ckpt.name]
        pipe = StableSRPipeline.from_single_file(paths[preset.ckpt.name], cfw,
                                                 prediction_type=spec.prediction_type or preset.prediction_type,
                                                 image_size=spec.sample_size or preset.image_size,
                                                 prompt_embeds=spec.prompt_embeds,
                                                 dtype=dtype, device=device)
    elif Path(spec.checkpoint).is_dir() or not Path(spec.checkpoint).exists():  # a folder, or a hub repo holding one
        if spec.cfw_checkpoint or spec.config or spec.prompt_embeds:
            raise OptionsError("a converted folder holds its CFW checkpoint, config and prompt embeddings already; "
                               "give those only with checkpoint files")
        pipe = StableSRPipeline.from_pretrained(spec.checkpoint, dtype=dtype, device=device,
                                                local_files_only=spec.offline)
    else:
        pipe, preset = _load_single_file(spec, preset, device, dtype, note)
    if preset is not None:
        defaults = preset.model_defaults()
        pipe.config = replace(pipe.config, **{k: v for k, v in defaults.items() if k.startswith("default_") or k == "name"})
    return pipe


def _load_single_file(spec: ModelSpec, preset: ModelPreset | None, device: str | torch.device | None,
                      dtype: torch.dtype | None, note: Callable[[str], None] | None
                      ) -> tuple[StableSRPipeline, ModelPreset | None]:
    """An official checkpoint file: its settings decided by content (see :mod:`stablesr.checkpoints.resolve`).

    Returns the pipeline and the preset whose defaults apply (named, or the release file identified).
    """
    from .checkpoints.official_config import read_config_file
    from .checkpoints.resolve import resolve_single_file
    from .pipeline import StableSRPipeline

    tell = note or (lambda line: print(line, file=sys.stderr, flush=True))
    config_model = read_config_file(spec.config) if spec.config else None
    told = resolve_single_file(spec.checkpoint, prediction_type=spec.prediction_type, sample_size=spec.sample_size,
                               preset=preset, config_model=config_model,
                               on_hash=lambda p: tell(f"note: identifying {p.name} by its sha256 (once per file)"))
    if told.warning:
        print(told.warning, file=sys.stderr, flush=True)  # a warning, shown even with --quiet
    pipe = StableSRPipeline.from_single_file(spec.checkpoint, spec.cfw_checkpoint, config=spec.config,
                                             prompt_embeds=spec.prompt_embeds, dtype=dtype, device=device,
                                             prediction_type=told.prediction_type, image_size=told.sample_size)
    if not spec.cfw_checkpoint and note is not None:
        note("no CFW checkpoint: decoding with the checkpoint's own VAE (fidelity has no effect)")
    if preset is None and told.preset is not None and told.source == "release file":
        preset = resolve_preset(told.preset)
    return pipe, preset


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name: no leading "/" or "."
_WEIGHT_SUFFIXES = frozenset({".ckpt", ".safetensors", ".pt", ".pth", ".bin"})


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` of a hub repository (not a missing ``dir/file.ckpt`` or an absolute path).

    Example:
        >>> looks_like_repo_id("Iceclear/StableSR"), looks_like_repo_id("/no/such/folder")
        (True, False)
    """
    return bool(_REPO_ID.fullmatch(text)) and Path(text).suffix.lower() not in _WEIGHT_SUFFIXES

