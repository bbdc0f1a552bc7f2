"""Named model presets (pure data): which official files to fetch from the hub, and the settings that go with them.

A preset is data: the hub repository, the diffusion and CFW checkpoint files (with the sha256 and
byte size published for them), the resolution and prediction type the weights cannot tell, and the
README's recommended sampling settings. :mod:`stablesr.hub` fetches and loads them.
What was verified about ``Iceclear/StableSR`` on the Hugging Face hub (from stored copies of the
hub's own file and commit pages; nothing was downloaded): the six file names below, and for each
the sha256 and exact byte size recorded in its Git LFS pointer (commits 2f02eff "upload models", 3d279fd "upload models for 768v",
cf87bcf "upload face beta models" (as ``face_stablesr_000050.ckpt.ckpt``, later renamed) and
2b66732 "Upload stablesr_turbo.ckpt"). Not verified: that ``main`` still serves these exact blobs
today (checked cheaply at download time, see :func:`stablesr.hub.download`), and the face model's prediction
type (the official face config says ``v``; nobody has checked it against the weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ColorFix, Prediction
from .errors import StableSRError

__all__ = ["DEFAULT_PRESET", "LICENCE", "PRESETS", "REPO_ID", "HubFile", "ModelPreset", "detect_variant",
           "resolve_preset"]

REPO_ID = "Iceclear/StableSR"
LICENCE = "S-Lab License 1.0 (non-commercial)"
DEFAULT_PRESET = "turbo"



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
    prediction_type: Prediction
    steps: int
    fidelity: float  # the CFW weight
    color_fix: ColorFix
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

    def model_defaults(self) -> dict[str, Any]:
        """The :class:`~stablesr.config.ModelConfig` fields this preset sets (what the weights cannot tell)."""
        return {"parameterization": self.prediction_type, "sample_size": self.image_size,
                "default_steps": self.steps, "default_fidelity": self.fidelity,
                "default_color_fix": self.color_fix, "name": self.name}


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


def _known_variants() -> dict[str, dict[str, Any]]:
    """Official file-name stems -> :class:`~stablesr.config.ModelConfig` fields (derived from :data:`PRESETS`)."""
    out = {Path(p.ckpt.name).stem: p.model_defaults() for p in PRESETS.values()}
    # SFT-only extract of the 768-v model distributed for the A1111 extension (no preset: needs a base model)
    out["webui_768v"] = {"sample_size": 768, "parameterization": "v", "default_fidelity": 0.0, "name": "webui-768v"}
    return out


def detect_variant(path: str | Path) -> dict[str, Any]:
    """ModelConfig fields for a released checkpoint, recognised by its file name (the weights look alike).

    Example:
        >>> detect_variant("ckpts/stablesr_768v_000139.ckpt")["parameterization"]
        'v'
    """
    name = Path(path).name.lower()
    return next((dict(v) for stem, v in _known_variants().items() if stem in name), {})
