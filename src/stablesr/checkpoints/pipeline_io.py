"""Building a :class:`~stablesr.pipeline.StableSRPipeline` from official files or converted folders, and saving one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from ..errors import CheckpointError, MissingWeightsError
from ..models.cfw import CFWAutoencoderKL
from ..models.sft import SFTAdapter
from ..models.text import PromptEncoder
from ..models.time_aware_encoder import TimeAwareEncoder
from ..paths import prompt_cache_file
from .convert import load_cfw, load_ldm, text_encoder_from_state
from .loading import load_state_dict
from .official_config import (
    LDMSpec, cfw_vae_config, infer_vae_ddconfig, official_cfw_config, official_ldm_config, read_config_file,
)

INDEX_FILE = "model_index.json"
PROMPT_FILE = "prompt_embeds.safetensors"
FORMAT_VERSION = 1

def known_variants() -> dict[str, dict[str, Any]]:
    """Official file-name stems -> what the weights cannot tell (resolution, prediction type) and the
    preset's defaults. Derived from :data:`stablesr.registry.PRESETS`, the one source of these settings."""
    from ..registry import PRESETS

    out = {
        Path(p.ckpt.name).stem: {"image_size": p.image_size, "parameterization": p.prediction_type,
                                 "default_steps": p.steps, "default_cfw_weight": p.cfw_weight,
                                 "default_color_fix": p.color_fix, "name": p.name}
        for p in PRESETS.values()
    }
    # SFT-only extract of the 768-v model distributed for the A1111 extension (no preset: needs a base model)
    out["webui_768v"] = {"image_size": 768, "parameterization": "v", "default_cfw_weight": 0.0, "name": "webui-768v"}
    return out


def detect_variant(path: str | Path) -> dict[str, Any]:
    """Settings for a released checkpoint, recognised by its file name (the weights look alike)."""
    name = Path(path).name.lower()
    return next((dict(v) for stem, v in known_variants().items() if stem in name), {})


def _same_encoder(a: CFWAutoencoderKL, b: CFWAutoencoderKL) -> bool:
    """Whether two VAEs have identical encoders (then one encoder pass serves both roles)."""
    sa = {k: v for k, v in a.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    sb = {k: v for k, v in b.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def pipeline_from_single_file(
    cls: type,
    ckpt: str | Path,
    cfw_ckpt: str | Path | None = None,
    *,
    config: str | Path | None = None,
    cfw_config: str | Path | None = None,
    prediction_type: str | None = None,
    image_size: int | None = None,
    prompt_embeds: str | Path | None = None,
    base_model: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Any:
    from ..pipeline import PipelineConfig

    variant = detect_variant(ckpt)  # {} for files of unknown name
    if config is not None:
        model = read_config_file(config)
        spec = LDMSpec.from_official(model)
        if prediction_type is not None:
            spec.parameterization = prediction_type
    else:
        size = image_size or variant.get("image_size", 512)
        spec = LDMSpec.from_official(official_ldm_config(size, prediction_type or variant.get("parameterization", "eps")))
    base_unet = None
    if base_model is not None:
        base_unet = UNet2DConditionModel.from_pretrained(str(base_model), subfolder="unet")
    parts = load_ldm(ckpt, spec, base_unet=base_unet)

    if cfw_ckpt is not None:
        cfw_sd = load_state_dict(cfw_ckpt)
        if cfw_config is not None:
            cfw_cfg = cfw_vae_config(read_config_file(cfw_config), sample_size=spec.image_size)
        else:
            cfw_cfg = cfw_vae_config(_inferred_cfw_model(cfw_sd, cfw_ckpt), sample_size=spec.image_size)
        vae = load_cfw(cfw_sd, cfw_cfg, name=str(cfw_ckpt))
        struct_vae = parts.struct_vae if parts.struct_vae is not None and not _same_encoder(parts.struct_vae, vae) else None
    elif parts.struct_vae is not None:
        vae, struct_vae = parts.struct_vae, None  # no CFW: the plain VAE decoder (fidelity weight has no effect)
    else:
        raise CheckpointError(f"{ckpt}: has no VAE; give the CFW checkpoint (cfw_ckpt=...)")

    cache = PromptEncoder.from_file(prompt_embeds).cache if prompt_embeds else {}
    text_state = parts.text_encoder_state
    persist = None
    if text_state and not prompt_embeds:  # remember computed embeddings (the empty one above all) across runs
        persist = prompt_cache_file(ckpt)
        if persist.is_file():
            try:
                cache = PromptEncoder.from_file(persist).cache
            except Exception:  # noqa: BLE001 - a damaged cache is recomputed
                cache = {}
    prompt_encoder = PromptEncoder(cache, text_encoder=(lambda: text_encoder_from_state(text_state)) if text_state
                                   else None, persist_to=persist)
    pconf = PipelineConfig(
        parameterization=spec.parameterization, sample_size=spec.image_size, scale_factor=spec.scale_factor,
        linear_start=spec.linear_start, linear_end=spec.linear_end, name=variant.get("name", Path(ckpt).stem),
        **{k: v for k, v in variant.items() if k.startswith("default_")},
    )
    pipe = cls(parts.unet, parts.sft_adapter, parts.time_aware_encoder, vae, struct_vae=struct_vae,
               prompt_encoder=prompt_encoder, config=pconf)
    if device is not None or dtype is not None:
        pipe.to(device, dtype)
    return pipe


def _inferred_cfw_model(sd: dict[str, torch.Tensor], path: object) -> dict[str, Any]:
    """An official-style CFW model section read off the checkpoint's shapes (no YAML needed)."""
    try:
        ddconfig, embed_dim = infer_vae_ddconfig(sd)
    except (KeyError, IndexError, ZeroDivisionError):
        raise CheckpointError(f"{path}: not an official CFW/VAE checkpoint (encoder/decoder keys missing)") from None
    model = official_cfw_config()
    model["params"].update(ddconfig=ddconfig, embed_dim=embed_dim)
    if not any(k.startswith("decoder.fusion_layer_") for k in sd):
        model["target"] = "ldm.models.autoencoder.AutoencoderKL"
    return model


def save_pipeline(pipe: Any, directory: str | Path) -> Path:
    """Write ``pipe`` as a folder (atomically: a temporary sibling folder renamed into place)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, module in pipe.components.items():
            module.save_pretrained(tmp / name, safe_serialization=True)
        pe: PromptEncoder = pipe.prompt_encoder
        if pe.has_text_encoder:
            pe("")  # make sure the empty-prompt embedding is cached in the folder
            pe.text_encoder().save_pretrained(tmp / "text_encoder", safe_serialization=True)
        if pe.tokenizer is not None:  # makes the folder self-sufficient for new prompts offline
            pe.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if pe.cache:
            pe.save(tmp / PROMPT_FILE)
        index = {"_class_name": "StableSRPipeline", "format_version": FORMAT_VERSION,
                 "components": sorted(pipe.components), "config": asdict(pipe.config),
                 "text_encoder": pe.has_text_encoder}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        if directory.exists():
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
            elif not (directory / INDEX_FILE).is_file():
                raise CheckpointError(f"{directory}: exists and is not a stablesr model folder; not overwriting")
            else:
                shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


_COMPONENT_CLASSES = {"unet": UNet2DConditionModel, "sft_adapter": SFTAdapter, "time_aware_encoder": TimeAwareEncoder,
                      "vae": CFWAutoencoderKL, "struct_vae": CFWAutoencoderKL}


def resolve_folder(path_or_repo: str | Path, *, revision: str | None = None, local_files_only: bool | None = None
                   ) -> Path:
    """A local folder, or a hub repo id downloaded into the Hugging Face cache."""
    path = Path(path_or_repo)
    if path.exists():
        if not (path / INDEX_FILE).is_file():
            raise CheckpointError(f"{path}: not a stablesr model folder (no {INDEX_FILE})")
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path_or_repo), revision=revision, local_files_only=bool(local_files_only)))
    except Exception as e:  # noqa: BLE001
        raise MissingWeightsError(
            f"{path_or_repo}: not a local folder and not available from the hub cache or network "
            f"({type(e).__name__}); download it with `hf download {path_or_repo}` or give a local folder"
        ) from None


def pipeline_from_pretrained(cls: type, path_or_repo: str | Path, *, dtype: torch.dtype | None = None,
                             device: str | torch.device | None = None, revision: str | None = None,
                             local_files_only: bool | None = None) -> Any:
    from ..pipeline import PipelineConfig

    folder = resolve_folder(path_or_repo, revision=revision, local_files_only=local_files_only)
    index = json.loads((folder / INDEX_FILE).read_text())
    if index.get("_class_name") != "StableSRPipeline":
        raise CheckpointError(f"{folder}: {INDEX_FILE} is not a StableSRPipeline index")
    modules = {}
    for name in index["components"]:
        if name not in _COMPONENT_CLASSES:
            raise CheckpointError(f"{folder}: unknown component {name!r}")
        modules[name] = _COMPONENT_CLASSES[name].from_pretrained(str(folder / name)).eval().requires_grad_(False)
    text_dir = folder / "text_encoder"

    def build_text_encoder():
        from transformers import CLIPTextModel

        return CLIPTextModel.from_pretrained(str(text_dir)).eval().requires_grad_(False)

    tok_dir = folder / "tokenizer"

    def build_tokenizer():
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(tok_dir))

    cache = PromptEncoder.from_file(folder / PROMPT_FILE).cache if (folder / PROMPT_FILE).is_file() else {}
    prompt_encoder = PromptEncoder(cache, text_encoder=build_text_encoder if text_dir.is_dir() else None,
                                   tokenizer=build_tokenizer if tok_dir.is_dir() else None)
    pipe = cls(modules["unet"], modules["sft_adapter"], modules["time_aware_encoder"], modules["vae"],
               struct_vae=modules.get("struct_vae"), prompt_encoder=prompt_encoder,
               config=PipelineConfig(**index.get("config", {})))
    if device is not None or dtype is not None:
        pipe.to(device, dtype)
    return pipe
