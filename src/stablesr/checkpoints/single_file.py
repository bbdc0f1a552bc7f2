"""Building a model's components from official single files (``.ckpt`` / ``.safetensors``, official key layout)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel

from ..config import ModelConfig
from ..errors import CheckpointError
from ..models.cfw import CFWAutoencoderKL
from ..models.text import PromptEncoder
from ..paths import prompt_cache_file
from ..presets import detect_variant
from .components import ModelComponents
from .convert import load_cfw, load_ldm, text_encoder_from_state
from .loading import load_state_dict
from .official_config import (
    LDMSpec,
    cfw_vae_config,
    infer_vae_ddconfig,
    official_cfw_config,
    official_ldm_config,
    read_config_file,
)


def _same_encoder(a: CFWAutoencoderKL, b: CFWAutoencoderKL) -> bool:
    """Whether two VAEs have identical encoders (then one encoder pass serves both roles)."""
    sa = {k: v for k, v in a.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    sb = {k: v for k, v in b.state_dict().items() if k.startswith(("encoder.", "quant_conv."))}
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def build_from_single_file(
    ckpt: str | Path,
    cfw_ckpt: str | Path | None = None,
    *,
    config: str | Path | None = None,
    cfw_config: str | Path | None = None,
    prediction_type: str | None = None,
    image_size: int | None = None,
    prompt_embeds: str | Path | None = None,
    base_model: str | Path | None = None,
) -> ModelComponents:
    """The components of an official checkpoint (plus CFW file), with the settings its file name implies.

    ``config`` / ``cfw_config``: official-style YAML/JSON for non-preset architectures; ``prediction_type`` /
    ``image_size``: what neither the file name nor the config tells; ``prompt_embeds``: precomputed contexts;
    ``base_model``: a diffusers SD-2.1 folder or hub id for SFT-only "webui" extracts.
    """
    variant = detect_variant(ckpt)  # {} for files of unknown name
    if config is not None:
        model = read_config_file(config)
        spec = LDMSpec.from_official(model)
        if prediction_type is not None:
            spec.parameterization = prediction_type
        if image_size is not None:  # what a release file / the user says beats the config's default
            spec.image_size = image_size
    else:
        size = image_size or variant.get("sample_size", 512)
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
            cfw_cfg = cfw_vae_config(inferred_cfw_model(cfw_sd, cfw_ckpt), sample_size=spec.image_size)
        vae = load_cfw(cfw_sd, cfw_cfg, name=str(cfw_ckpt))
        struct_vae = parts.struct_vae if parts.struct_vae is not None and not _same_encoder(parts.struct_vae, vae) else None
    elif parts.struct_vae is not None:
        vae, struct_vae = parts.struct_vae, None  # no CFW: the plain VAE decoder (fidelity weight has no effect)
    else:
        raise CheckpointError(f"{ckpt}: has no VAE; give the CFW checkpoint (cfw_ckpt=...)")

    cache = PromptEncoder.from_file(prompt_embeds).cache if prompt_embeds else {}
    source = prompt_embeds
    text_state = parts.text_encoder_state
    persist = None
    if text_state and not prompt_embeds:  # remember computed embeddings (the empty one above all) across runs
        persist = prompt_cache_file(ckpt)
        if persist.is_file():
            try:
                cache, source = PromptEncoder.from_file(persist).cache, persist
            except Exception:  # noqa: BLE001 - a damaged cache is recomputed
                cache = {}
    prompt_encoder = PromptEncoder(cache, text_encoder=(lambda: text_encoder_from_state(text_state)) if text_state
                                   else None, persist_to=persist, source=source)
    config_ = replace(ModelConfig(), **{k: v for k, v in variant.items() if k.startswith("default_")},
                      parameterization=spec.parameterization, sample_size=spec.image_size,
                      scale_factor=spec.scale_factor, linear_start=spec.linear_start, linear_end=spec.linear_end,
                      name=variant.get("name", Path(ckpt).stem))
    return ModelComponents(parts.unet, parts.sft_adapter, parts.time_aware_encoder, vae, struct_vae=struct_vae,
                           prompt_encoder=prompt_encoder, config=config_)


def inferred_cfw_model(sd: dict[str, torch.Tensor], path: object) -> dict[str, Any]:
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


