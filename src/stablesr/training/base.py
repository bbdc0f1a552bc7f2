"""Stage-1 starting points: an official StableSR checkpoint (fine-tune), or a plain SD-2.x base.

A plain base (an official-format SD checkpoint, a diffusers folder or a hub id such as
``stabilityai/stable-diffusion-2-1-base`` or ``stabilityai/sd-turbo``) gets a fresh time-aware
encoder and fresh SFT layers initialised as the official code does (OFFICIAL.md 6.1): PyTorch's
default init for the SFT convs; in the encoder every ResBlock's last conv (``out_layers.3``, the
``fea_tran`` blocks included) and every attention ``proj_out`` start at zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._deps import (
    ENCODER_PREFIX,
    TEXT_PREFIX,
    CFWAutoencoderKL,
    CheckpointError,
    LDMSpec,
    PromptEncoder,
    SFTAdapter,
    TimeAwareEncoder,
    instantiate,
    load_ldm,
    load_state_dict,
    official_ldm_config,
    read_config_file,
    sft_config,
    split_ldm,
)
from .config import ModelConfig


@dataclass
class Stage1Parts:
    """The networks of one stage-1 run: frozen UNet + VAE, trainable encoder + SFT, the null-prompt context."""

    spec: LDMSpec
    unet: nn.Module
    sft: SFTAdapter
    encoder: TimeAwareEncoder
    vae: CFWAutoencoderKL  # the plain SD VAE that encodes LR and GT (and decodes validation samples)
    context: torch.Tensor  # (1, 77, dim): the empty prompt (StableSR's only training prompt)
    source_kind: str  # "stablesr", "sd-checkpoint", "diffusers"
    text_official: dict[str, torch.Tensor] = field(default_factory=dict)  # cond_stage_model.* keys, for export

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"time_aware_encoder": self.encoder, "sft_adapter": self.sft}


def official_encoder_init(encoder: TimeAwareEncoder) -> TimeAwareEncoder:
    """Zero every ResBlock's last conv and every attention ``proj_out`` (guided-diffusion ``zero_module``)."""
    with torch.no_grad():
        for name, module in encoder.named_modules():
            if name.endswith(("out_layers.3", "proj_out")):
                for p in module.parameters():
                    p.zero_()
    return encoder


def fresh_stablesr_modules(unet: nn.Module, spec: LDMSpec) -> tuple[SFTAdapter, TimeAwareEncoder]:
    """New SFT layers (PyTorch default init) and a new time-aware encoder (official zero init)."""
    sft = SFTAdapter(**sft_config(unet, spec))
    return sft, official_encoder_init(TimeAwareEncoder(**spec.encoder))


def _spec(cfg: ModelConfig, image_size: int | None, parameterization: str | None) -> LDMSpec:
    if cfg.config:
        spec = LDMSpec.from_official(read_config_file(cfg.config))
    else:
        size = cfg.image_size or image_size or 512
        spec = LDMSpec.from_official(official_ldm_config(size, parameterization or ("v" if size == 768 else "eps")))
    if cfg.parameterization:
        spec.parameterization = cfg.parameterization
    elif parameterization and not cfg.config:
        spec.parameterization = parameterization
    if spec.parameterization not in ("eps", "v"):
        raise CheckpointError(f"model.parameterization must be eps or v, got {spec.parameterization!r}")
    return spec


def _context(cfg: ModelConfig, text_encoder: object | None) -> torch.Tensor:
    if cfg.prompt_embeds:
        return PromptEncoder.from_file(cfg.prompt_embeds)("").float()
    if text_encoder is None:
        raise CheckpointError(f"{cfg.base}: has no text encoder; give model.prompt_embeds (an empty-prompt context)")
    return PromptEncoder({}, text_encoder=text_encoder)("").float()


def load_stage1(cfg: ModelConfig) -> Stage1Parts:
    """Build the stage-1 networks from ``cfg.base`` (file -> official layout; folder / repo id -> diffusers)."""
    if not cfg.base:
        raise CheckpointError("model.base is empty: give a StableSR or SD-2.x checkpoint, folder or hub id")
    path = Path(cfg.base).expanduser()
    if path.is_file():
        return _from_official_file(cfg, path)
    if not path.is_dir() and (cfg.base.startswith((".", "/", "~")) or path.suffix in _WEIGHT_SUFFIXES):
        raise CheckpointError(f"{cfg.base}: model.base not found (no such file or folder)")
    return _from_diffusers(cfg)


_WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")


def _from_official_file(cfg: ModelConfig, path: Path) -> Stage1Parts:
    from ._deps import text_encoder_from_state

    sd = load_state_dict(path)
    text_official = {k: v for k, v in sd.items() if k.startswith(TEXT_PREFIX)}
    spec = _spec(cfg, None, None)
    if any(k.startswith(ENCODER_PREFIX) for k in sd):
        parts = load_ldm(sd, spec)
        unet, sft, enc, vae, kind = parts.unet, parts.sft_adapter, parts.time_aware_encoder, parts.struct_vae, "stablesr"
        text_state = parts.text_encoder_state
        if cfg.reinit_stablesr_modules:
            sft, enc = fresh_stablesr_modules(unet, spec)
    else:  # a plain SD-2.x checkpoint: fresh StableSR modules
        comps = split_ldm(sd, spec).components
        if "unet" not in comps or "struct_vae" not in comps:
            raise CheckpointError(f"{path}: no UNet / first-stage VAE (model.diffusion_model.*, first_stage_model.*)")
        from diffusers import UNet2DConditionModel

        unet = instantiate(UNet2DConditionModel, spec.unet, comps["unet"], name=f"{path} (UNet)")
        vae = instantiate(CFWAutoencoderKL, spec.struct_vae, comps["struct_vae"], name=f"{path} (VAE)")
        sft, enc = fresh_stablesr_modules(unet, spec)
        text_state, kind = comps.get("text_encoder"), "sd-checkpoint"
    if vae is None:
        raise CheckpointError(f"{path}: has no first-stage VAE (first_stage_model.*), which training needs")
    text = (lambda: text_encoder_from_state(text_state)) if text_state else None
    return Stage1Parts(spec, unet, sft, enc, vae, _context(cfg, text), kind, text_official)


def _from_diffusers(cfg: ModelConfig) -> Stage1Parts:
    from diffusers import UNet2DConditionModel

    base, rev = cfg.base, cfg.revision
    try:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", revision=rev)
        vae = CFWAutoencoderKL.from_pretrained(base, subfolder="vae", revision=rev, fusion=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{base}: not a checkpoint file nor a diffusers SD-2.x folder/hub id "
                              f"({str(e).splitlines()[0][:200]})") from None
    prediction = _diffusers_prediction_type(base, rev)
    spec = _spec(cfg, int(unet.config.sample_size) * 8, prediction)
    text = None
    if not cfg.prompt_embeds:
        from transformers import CLIPTextModel

        text = lambda: CLIPTextModel.from_pretrained(base, subfolder="text_encoder", revision=rev)
    unet, vae = unet.eval().requires_grad_(False), vae.eval().requires_grad_(False)
    sft, enc = fresh_stablesr_modules(unet, spec)
    return Stage1Parts(spec, unet, sft, enc, vae, _context(cfg, text), "diffusers")


def _diffusers_prediction_type(base: str, revision: str | None) -> str | None:
    """``eps`` / ``v`` from the base's scheduler config (768-v models say ``v_prediction``)."""
    local = Path(base) / "scheduler" / "scheduler_config.json"
    try:
        if local.is_file():
            data = json.loads(local.read_text())
        else:
            from huggingface_hub import hf_hub_download

            data = json.loads(Path(hf_hub_download(base, "scheduler/scheduler_config.json", revision=revision)).read_text())
    except Exception:  # noqa: BLE001 - no scheduler config: fall back to the size rule
        return None
    return {"epsilon": "eps", "v_prediction": "v"}.get(data.get("prediction_type"))


def load_cfw_file(path: str, config: str | None = None, image_size: int = 512,
                  state_dict: dict | None = None) -> CFWAutoencoderKL:
    """A CFW autoencoder (or a plain VAE, which gets no fusion layers) from an official-layout file.

    Without ``config`` the architecture is read off the tensor shapes. ``state_dict``: the file's weights,
    already read (and re-keyed) by the caller; ``path`` then only names them in messages.
    """
    from ._deps import cfw_vae_config, inferred_cfw_model, load_cfw

    sd = load_state_dict(path) if state_dict is None else state_dict
    model = read_config_file(config) if config else inferred_cfw_model(sd, path)
    conf = cfw_vae_config(model, sample_size=image_size)
    return load_cfw(sd, conf, name=str(path))
