"""What a checkpoint file is: an official release file (by content, not by name), or what its keys say.

:func:`identify_file` matches a file against the sha256 and byte size published for every
preset's files. The size is checked first (free); only a file whose size matches a published
one is hashed, once: the digest is cached by (resolved path, size, mtime_ns) in
``stablesr_home()/file_hashes.json``. :func:`classify_state_dict` tells from keys and shapes
alone what a state dict holds (full diffusion checkpoint, CFW autoencoder, webui SFT-only
extract) and the architecture it implies; :func:`unknown_file_warning` is the one line to show
when a file is not a release file and the settings the weights cannot tell were assumed.

StableSR weights are under the NTU S-Lab License 1.0 (non-commercial); this code is Apache-2.0.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..paths import stablesr_home
from ..presets import PRESETS, HubFile, ModelPreset  # the one place the preset table is imported

__all__ = ["Identification", "StateDictInfo", "classify_state_dict", "hash_cache_file", "identify_file",
           "unknown_file_warning"]

_UNET = "model.diffusion_model."
_ENCODER = "structcond_stage_model."
_TEXT = "cond_stage_model."
_VAE = "first_stage_model."
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Identification:
    """An official release file, recognised by its content.

    Example:
        >>> ident = Identification(PRESETS["stablesr-768v"].ckpt, "diffusion", ("stablesr-768v",))
        >>> ident.preset, ident.role, ident.file.name
        ('stablesr-768v', 'diffusion', 'stablesr_768v_000139.ckpt')
    """

    file: HubFile  # the hub file it is: published name, sha256 and size
    role: str  # "diffusion" (a preset's ``ckpt``) or "cfw" (its ``cfw_ckpt``)
    presets: tuple[str, ...]  # every preset that uses this file in that role (the CFW file is shared)

    @property
    def preset(self) -> str:
        """The first preset using the file (the only one for a diffusion checkpoint)."""
        return self.presets[0]


def hash_cache_file() -> Path:
    """Where file digests are cached (read at call time, so ``$STABLESR_HOME`` applies)."""
    return stablesr_home() / "file_hashes.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache() -> dict[str, Any]:
    try:
        files = json.loads(hash_cache_file().read_text()).get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):  # missing or damaged: start afresh
        return {}


def _write_cache(files: dict[str, Any]) -> None:
    target = hash_cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".file_hashes.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "files": files}, f, indent=1, sort_keys=True)
        os.replace(tmp, target)  # atomic: a reader never sees half a file
    except OSError:  # a read-only home only costs a re-hash next time
        pass


def _cached_sha256(path: Path, size: int, mtime_ns: int, on_hash: Callable[[Path], None] | None) -> str:
    key = str(path)
    files = _read_cache()
    entry = files.get(key)
    if isinstance(entry, dict) and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
        cached = entry.get("sha256")
        if isinstance(cached, str) and len(cached) == 64:
            return cached
    if on_hash is not None:
        on_hash(path)
    digest = _sha256(path)
    files = _read_cache()  # re-read: another process may have added entries while we hashed
    files = {k: v for k, v in files.items() if os.path.exists(k)}  # forget files that are gone
    files[key] = {"size": size, "mtime_ns": mtime_ns, "sha256": digest}
    _write_cache(files)
    return digest


def identify_file(path: str | os.PathLike[str], *, presets: Mapping[str, ModelPreset] | None = None,
                  use_cache: bool = True, on_hash: Callable[[Path], None] | None = None) -> Identification | None:
    """The official file ``path`` is (by size, then sha256), or None when it is none of them.

    A file whose size matches no published size is never read. ``presets`` defaults to the
    built-in preset table. ``on_hash(path)`` is called just before a file is actually read
    (a few seconds per GB, once per file version), e.g. to tell the user why they wait.

    Example:
        >>> ident = identify_file("my_renamed_copy.ckpt")  # doctest: +SKIP
        >>> ident.preset, ident.role  # doctest: +SKIP
        ('stablesr-768v', 'diffusion')
    """
    table = PRESETS if presets is None else presets
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e.strerror or e})") from None
    candidates = [f for pr in table.values() for f in pr.files if f.sha256 and f.size_bytes == st.st_size]
    if not candidates:
        return None
    if use_cache:
        digest = _cached_sha256(p, st.st_size, st.st_mtime_ns, on_hash)
    else:
        if on_hash is not None:
            on_hash(p)
        digest = _sha256(p)
    for role, attr in (("diffusion", "ckpt"), ("cfw", "cfw_ckpt")):
        users = [pr for pr in table.values() if getattr(pr, attr).sha256 == digest]
        if users:
            return Identification(getattr(users[0], attr), role, tuple(pr.name for pr in users))
    return None


# ---------------------------------------------------------------------------------------------
# What the keys and shapes say


@dataclass(frozen=True)
class StateDictInfo:
    """What a state dict holds, read from keys and shapes only (prediction type and resolution are not in them).

    Example:
        >>> classify_state_dict({"encoder.conv_in.weight": (128, 3, 3, 3),
        ...                      "decoder.fusion_layer_0.encode_enc_1.norm1.weight": (512,)}).kind
        'cfw'
    """

    kind: str  # "diffusion" (full model), "cfw" (CFW autoencoder), "sft_extract" (webui: SFT + encoder), "unknown"
    model_channels: int | None = None  # UNet base width (SD 2.x: 320)
    in_channels: int | None = None  # UNet latent channels (4)
    context_dim: int | None = None  # cross-attention width (SD 2.x: 1024, SD 1.x: 768)
    linear_proj: bool | None = None  # transformer proj_in is linear (SD 2.x) rather than a 1x1 conv (SD 1.x)
    sft_layers: int = 0
    encoder_channels: int | None = None  # time-aware encoder base width
    text_width: int | None = None  # OpenCLIP text tower width, when the text encoder is included
    has_vae: bool = False
    cfw_fusion_layers: int = 0
    has_training_loss: bool = False  # CFW training's LPIPS/discriminator weights (``loss.*``), unused for inference

    @property
    def family(self) -> str | None:
        """``"SD 2.x"`` / ``"SD 1.x"`` from the cross-attention width, when the UNet is present."""
        return {1024: "SD 2.x", 768: "SD 1.x"}.get(self.context_dim) if self.context_dim else None

    def describe(self) -> str:
        """A short phrase for messages, e.g. ``full StableSR diffusion checkpoint (SD 2.x UNet, 320 channels, ...)``."""
        if self.kind == "cfw":
            return (f"CFW autoencoder ({self.cfw_fusion_layers} fusion layers"
                    + (", with training loss weights" if self.has_training_loss else "") + ")")
        if self.kind == "sft_extract":
            return f"webui SFT extract ({self.sft_layers} SFT layers + time-aware encoder; needs a base UNet)"
        if self.kind == "diffusion":
            arch = [self.family or "UNet", f"{self.model_channels} channels", f"context dim {self.context_dim}",
                    f"{self.sft_layers} SFT layers"]
            if self.text_width:
                arch.append(f"text encoder width {self.text_width}")
            return f"full StableSR diffusion checkpoint ({', '.join(arch)})"
        return "unrecognised state dict"


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def classify_state_dict(sd: Mapping[str, Any]) -> StateDictInfo:
    """Classify an official-layout state dict; values may be tensors or bare shapes (as in the manifests).

    Example:
        >>> classify_state_dict({"model.diffusion_model.input_blocks.1.0.spade.mlp_shared.0.weight": (128, 4, 3, 3),
        ...                      "structcond_stage_model.time_embed.0.weight": (1024, 256)}).kind
        'sft_extract'
    """
    keys = list(sd)
    unet = [k for k in keys if k.startswith(_UNET)]
    sft = {k.split(".spade.")[0] for k in unet if ".spade." in k}
    base_unet = [k for k in unet if ".spade." not in k]
    encoder = [k for k in keys if k.startswith(_ENCODER)]
    fusion = {k.split(".")[1] for k in keys if k.startswith("decoder.fusion_layer_")}
    common = {"sft_layers": len(sft),
              "encoder_channels": _first_dim(sd, _ENCODER + "time_embed.0.weight", axis=1)}

    if base_unet and encoder:
        attn = next((k for k in base_unet if k.endswith("attn2.to_k.weight")), None)
        proj = next((k for k in base_unet if k.endswith(".proj_in.weight")), None)
        text = _first_dim(sd, _TEXT + "model.ln_final.weight", axis=0)
        return StateDictInfo("diffusion", model_channels=_first_dim(sd, _UNET + "input_blocks.0.0.weight", axis=0),
                             in_channels=_first_dim(sd, _UNET + "input_blocks.0.0.weight", axis=1),
                             context_dim=_shape(sd[attn])[1] if attn else None,
                             linear_proj=len(_shape(sd[proj])) == 2 if proj else None, text_width=text,
                             has_vae=any(k.startswith(_VAE) for k in keys), **common)
    if sft and encoder and not base_unet:
        return StateDictInfo("sft_extract", **common)
    if fusion and any(k.startswith("encoder.") for k in keys):
        return StateDictInfo("cfw", has_vae=True, cfw_fusion_layers=len(fusion),
                             has_training_loss=any(k.startswith("loss.") for k in keys))
    return StateDictInfo("unknown", **common)


def _first_dim(sd: Mapping[str, Any], key: str, axis: int) -> int | None:
    shape = _shape(sd[key]) if key in sd else ()
    return shape[axis] if len(shape) > axis else None


def unknown_file_warning(path: str | os.PathLike[str], info: StateDictInfo, *, prediction_type: str,
                         sample_size: int) -> str:
    """One line for a file that is no official release: what it looks like, what was assumed, how to change it.

    Example:
        >>> unknown_file_warning("my.ckpt", StateDictInfo("diffusion", 320, 4, 1024, True, 44, 256),
        ...                      prediction_type="eps", sample_size=512)  # doctest: +ELLIPSIS
        "my.ckpt: not an official StableSR release file; read as a full StableSR diffusion checkpoint (SD 2.x, ...
    """
    other_type = "v" if prediction_type == "eps" else "eps"
    other_size = 768 if other_type == "v" else 512
    return (f"{path}: not an official StableSR release file; read as a {info.describe()}, assuming prediction "
            f"type '{prediction_type}' at {sample_size} px (the weights cannot tell); if results look wrong, "
            f"pass --prediction-type {other_type} --sample-size {other_size}"
            + (" (768-v models)" if other_type == "v" else "") + " or the settings it was trained with")
