"""Named model presets: which official files to fetch from the hub, and the settings that go with them.

A preset is data: the hub repository, the diffusion and CFW checkpoint files (with the sha256 and
byte size published for them), the resolution and prediction type the weights cannot tell, and the
README's recommended sampling settings. :func:`download` fetches (or finds in the Hugging Face
cache) a preset's files; :func:`load_preset_pipeline` builds a ready pipeline from them.

What was verified about ``Iceclear/StableSR`` on the Hugging Face hub (from stored copies of the
hub's own file and commit pages; nothing was downloaded): the six file names below, and for each
the sha256 and exact byte size recorded in its Git LFS pointer (commits 2f02eff "upload models", 3d279fd "upload models for 768v",
cf87bcf "upload face beta models" (as ``face_stablesr_000050.ckpt.ckpt``, later renamed) and
2b66732 "Upload stablesr_turbo.ckpt"). Not verified: that ``main`` still serves these exact blobs
today (checked cheaply at download time, see :func:`download`), and the face model's prediction
type (the official face config says ``v``; nobody has checked it against the weights).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import MissingWeightsError, StableSRError
from .paths import stablesr_home  # re-exported: where the licence-notice marker lives

if TYPE_CHECKING:  # heavy imports only for type checkers; the functions import lazily
    import torch

    from .pipeline import StableSRPipeline

__all__ = [
    "DEFAULT_PRESET",
    "LICENCE",
    "PRESETS",
    "REPO_ID",
    "HubFile",
    "ModelPreset",
    "apply_preset_defaults",
    "cached_files",
    "download",
    "download_command",
    "licence_notice",
    "load_preset_pipeline",
    "resolve_preset",
    "stablesr_home",
]

REPO_ID = "Iceclear/StableSR"
LICENCE = "S-Lab License 1.0 (non-commercial)"
DEFAULT_PRESET = "turbo"

_LICENCE_MARKER = "licence-notice-shown"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    """One file of the hub repository, with what its hub page publishes about it.

    Example:
        >>> HubFile("vqgan_cfw_00011.ckpt", sha256=None, size_bytes=959_719_471).size_bytes
        959719471
    """

    name: str
    sha256: str | None  # of the file content (the Git LFS object id); None where unknown
    size_bytes: int | None  # None where unknown


# Published Git LFS object ids and sizes (see the module docstring for where they come from).
_TURBO = HubFile(
    "stablesr_turbo.ckpt", "3615aa00dcab2868042dcd1bba4979edbb6051e6e49c147cda6a2d550fb62c58", 6_481_632_291
)
_SR512 = HubFile(
    "stablesr_000117.ckpt", "b8862bf3fd11c5b8fe82fb8a4618a1c74a29e0301a190bd6c2e84d68986ef9cb", 6_481_647_231
)
_SR768V = HubFile(
    "stablesr_768v_000139.ckpt", "d5f83b544035b4bf24ab1d7aa86e0f83328e9ce121efb2c850f833178be3d10b", 6_481_647_231
)
_FACE = HubFile(
    "face_stablesr_000050.ckpt", "ea839ea3e1eb99df7c95c7d7d17f282aa79052c74890deacb73e90c6d792b99c", 6_314_343_980
)
_CFW = HubFile("vqgan_cfw_00011.ckpt", "5b20ed9a80e9bdbf9e76ff1642a6a5428ca3427b08b779248a88bfbba2e74e8e", 959_719_471)
_FACE_CFW = HubFile(
    "face_vqgan_cfw_00011.ckpt", "085e82ae2a889ba953060a23ecf5955851bbeb7427be6d93c6012059805b3cce", 959_719_471
)


@dataclass(frozen=True)
class ModelPreset:
    """A named official model: its files on the hub and the settings that suit it.

    Example:
        >>> p = resolve_preset("turbo")
        >>> p.filenames, p.steps, p.color_fix
        (('stablesr_turbo.ckpt', 'vqgan_cfw_00011.ckpt'), 4, 'wavelet')
    """

    name: str
    description: str
    ckpt: HubFile
    cfw_ckpt: HubFile
    image_size: int  # native resolution in pixels
    prediction_type: str  # "eps" or "v"
    steps: int
    cfw_weight: float
    color_fix: str  # "adain", "wavelet" or "none"
    repo_id: str = REPO_ID
    licence: str = LICENCE

    @property
    def files(self) -> tuple[HubFile, ...]:
        """The hub files this preset needs, diffusion checkpoint first."""
        return (self.ckpt, self.cfw_ckpt)

    @property
    def filenames(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)

    @property
    def size_bytes(self) -> int | None:
        """Total download size, or None when a file's size is unknown."""
        sizes = [f.size_bytes for f in self.files]
        return None if None in sizes else sum(s for s in sizes if s is not None)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        # README: `--ddpm_steps 4 --dec_w 0.5 --colorfix_type wavelet` with the 512 config.
        ModelPreset("turbo", "StableSR-Turbo (SD-Turbo based): 4 steps, fast",
                    _TURBO, _CFW, 512, "eps", 4, 0.5, "wavelet"),
        ModelPreset("stablesr-512", "StableSR on SD-2.1-base 512 (the paper's model): 200 steps",
                    _SR512, _CFW, 512, "eps", 200, 0.5, "adain"),
        ModelPreset("stablesr-768v", "StableSR on SD-2.1 768-v: 200 steps, native 768 px",
                    _SR768V, _CFW, 768, "v", 200, 0.5, "wavelet"),
        ModelPreset("face", "StableSR fine-tuned on faces (beta; official face CFW, fidelity 0)",
                    _FACE, _FACE_CFW, 512, "v", 200, 0.0, "none"),
    )
}


def resolve_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (case-insensitive; ``_`` and ``-`` are interchangeable).

    Example:
        >>> resolve_preset("Stablesr_768v").prediction_type
        'v'
    """
    key = name.strip().lower().replace("_", "-")
    if key in PRESETS:
        return PRESETS[key]
    raise StableSRError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)} (see `stablesr models`)")


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


def _env_offline() -> bool:
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
    offline = offline or _env_offline()
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


def apply_preset_defaults(pipe: Any, preset: ModelPreset) -> None:
    """Make the preset's steps, CFW weight and colour fix the pipeline's defaults.

    Example:
        >>> apply_preset_defaults(pipe, resolve_preset("turbo")); pipe.config.default_steps  # doctest: +SKIP
        4
    """
    cfg = pipe.config
    cfg.default_steps = preset.steps
    cfg.default_cfw_weight = preset.cfw_weight
    cfg.default_color_fix = preset.color_fix
    cfg.name = preset.name


def load_preset_pipeline(
    preset: ModelPreset,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    offline: bool = False,
    *,
    cfw_ckpt: str | os.PathLike[str] | None = None,
    prompt_embeds: str | os.PathLike[str] | None = None,
    announce: bool = True,
) -> StableSRPipeline:
    """A pipeline for ``preset``: its files fetched or found in the cache, its defaults applied.

    ``cfw_ckpt`` replaces the preset's CFW file (then only the diffusion checkpoint is fetched).

    Example:
        >>> pipe = load_preset_pipeline(resolve_preset("turbo"), "cuda", torch.float16)  # doctest: +SKIP
        >>> pipe(image, upscale=4).images[0].save("out.png")  # doctest: +SKIP
    """
    from .pipeline import StableSRPipeline

    needed = (preset.ckpt.name,) if cfw_ckpt is not None else preset.filenames
    paths = download(preset, offline=offline, files=needed, announce=announce)
    pipe = StableSRPipeline.from_single_file(
        paths[preset.ckpt.name],
        Path(cfw_ckpt) if cfw_ckpt is not None else paths[preset.cfw_ckpt.name],
        prediction_type=preset.prediction_type,
        image_size=preset.image_size,
        prompt_embeds=prompt_embeds,
        dtype=dtype,
        device=device,
    )
    apply_preset_defaults(pipe, preset)
    return pipe
