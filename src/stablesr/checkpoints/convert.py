"""Build our modules from official checkpoints (full models, webui SFT extracts, CFW autoencoders)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from ..errors import CheckpointError
from ..models.cfw import CFWAutoencoderKL
from ..models.sft import SFTAdapter, unet_resnet_paths
from ..models.time_aware_encoder import TimeAwareEncoder
from .keymap import (
    ENCODER_PREFIX,
    TEXT_PREFIX,
    UNET_PREFIX,
    Conversion,
    has_prefix,
    split_cfw_state_dict,
    split_ldm_state_dict,
    unet_block_table,
    vae_block_table,
)
from .loading import load_state_dict
from .official_config import SD2_TEXT_ENCODER_CONFIG, LDMSpec


def instantiate(cls: type[nn.Module], config: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None,
                *, name: str, meta: bool = False, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build ``cls(**config)`` without random init and load ``state`` strictly (all keys, right shapes).

    With ``meta=True`` nothing is allocated (used to check key layouts of full-size models).
    """
    with torch.device("meta"):
        module = cls(**config)
    if state is None:
        return module
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    try:
        missing, unexpected = module.load_state_dict(dict(state), strict=False, assign=True)
    except RuntimeError as e:  # shape mismatch: report the first one on a single line
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        first = lines[0].rstrip(".") if lines else str(e).splitlines()[0]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise CheckpointError(f"{name}: weights do not fit the configured architecture: {first}{more}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{name}: checkpoint does not match the architecture ({len(missing)} missing, {len(unexpected)} "
            f"unexpected keys; e.g. {(missing or unexpected)[:3]})"
        )
    if not meta:
        for bname, buf in list(module.named_buffers()):
            if buf.is_meta:  # non-persistent buffers are not in checkpoints: rebuild them for real
                raise CheckpointError(f"{name}: buffer {bname} was not initialised")
    return module.eval().requires_grad_(False)


def text_encoder_from_state(state: Mapping[str, torch.Tensor], *, meta: bool = False,
                            config: Mapping[str, Any] | None = None) -> nn.Module:
    """An SD-2 ``CLIPTextModel`` (23 layers) holding the converted OpenCLIP text tower."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**(config or SD2_TEXT_ENCODER_CONFIG))
    with torch.device("meta"):
        names = CLIPTextModel(config).state_dict().keys()
    if not any(k.startswith("text_model.") for k in names):  # transformers >= 5 dropped the prefix
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    if meta:
        with torch.device("meta"):
            model = CLIPTextModel(config)
        missing, unexpected = model.load_state_dict(dict(state), strict=False, assign=True)
    else:
        model = CLIPTextModel(config)
        missing, unexpected = model.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"text encoder: {len(missing)} missing / {len(unexpected)} unexpected keys "
                              f"(e.g. {(missing or unexpected)[:3]})")
    return model.eval().requires_grad_(False)


@dataclass
class LDMParts:
    """The modules of an official StableSR diffusion checkpoint."""

    spec: LDMSpec
    unet: UNet2DConditionModel
    sft_adapter: SFTAdapter
    time_aware_encoder: TimeAwareEncoder
    struct_vae: CFWAutoencoderKL | None
    text_encoder_state: dict[str, torch.Tensor] | None
    conversion: Conversion


def _ldm_tables(spec: LDMSpec) -> dict[str, Any]:
    u = spec.unet
    attention = [t.startswith("CrossAttn") for t in u["down_block_types"]]
    with torch.device("meta"):
        skeleton = UNet2DConditionModel(**u)
    return {
        "unet_table": unet_block_table(len(u["block_out_channels"]), u["layers_per_block"], attention),
        "sft_targets": unet_resnet_paths(skeleton),
        "struct_vae_table": vae_block_table(len(spec.struct_vae["block_out_channels"]),
                                            spec.struct_vae["layers_per_block"]),
    }


def split_ldm(sd: Mapping[str, torch.Tensor], spec: LDMSpec, *, with_text: bool = True,
              tables: dict[str, Any] | None = None) -> Conversion:
    """Official diffusion state dict -> per-component state dicts (raises on unknown keys)."""
    conv = split_ldm_state_dict(
        sd, **(tables or _ldm_tables(spec)),
        text_layers=SD2_TEXT_ENCODER_CONFIG["num_hidden_layers"] if with_text else None,
    )
    if conv.unexpected:
        raise CheckpointError(f"unrecognised keys in the StableSR checkpoint, e.g. {conv.unexpected[:3]}")
    return conv


def map_official_keys(keys: list[str], spec: LDMSpec) -> dict[str, tuple[str, str]]:
    """Where each official key lands: ``{official key: (component, our key)}`` (keys that split, e.g.
    the text tower's fused q/k/v projection, map to their first part)."""
    tables = _ldm_tables(spec)
    out: dict[str, tuple[str, str]] = {}
    for key in keys:
        conv = split_ldm({key: torch.empty(3)}, spec, tables=tables)
        hit = next(((c, next(iter(sd))) for c, sd in conv.components.items()), None)
        if hit is None:
            raise CheckpointError(f"{key}: not a weight of any component ({conv.ignored.get(key, 'unknown key')})")
        out[key] = hit
    return out


def sft_config(unet: nn.Module, spec: LDMSpec) -> dict[str, Any]:
    paths = unet_resnet_paths(unet)
    return {"targets": paths, "channels": [unet.get_submodule(p).conv2.out_channels for p in paths],
            "cond_channels": spec.cond_channels}


def load_ldm(
    source: str | Path | Mapping[str, torch.Tensor],
    spec: LDMSpec,
    *,
    base_unet: UNet2DConditionModel | None = None,
    meta: bool = False,
) -> LDMParts:
    """Load an official StableSR diffusion checkpoint (full, or a webui SFT-only extract + ``base_unet``)."""
    sd = load_state_dict(source) if isinstance(source, (str, Path)) else source
    name = str(source) if isinstance(source, (str, Path)) else "checkpoint"
    if not has_prefix(sd, ENCODER_PREFIX):
        raise CheckpointError(f"{name}: no time-aware encoder (structcond_stage_model.*): not a StableSR checkpoint")
    conv = split_ldm(sd, spec)
    parts = conv.components
    if "unet" in parts:
        unet = instantiate(UNet2DConditionModel, spec.unet, parts["unet"], name=f"{name} (UNet)", meta=meta)
    elif base_unet is not None:
        unet = base_unet
    else:
        raise CheckpointError(f"{name}: holds only the StableSR modules (a webui extract); "
                              "give the SD-2.1 base model it goes with")
    sft = instantiate(SFTAdapter, sft_config(unet, spec), parts.get("sft_adapter", {}), name=f"{name} (SFT)", meta=meta)
    enc = instantiate(TimeAwareEncoder, spec.encoder, parts["time_aware_encoder"], name=f"{name} (encoder)", meta=meta)
    struct_vae = None
    if "struct_vae" in parts:
        struct_vae = instantiate(CFWAutoencoderKL, spec.struct_vae, parts["struct_vae"], name=f"{name} (VAE)", meta=meta)
    return LDMParts(spec, unet, sft, enc, struct_vae, parts.get("text_encoder"), conv)


def load_cfw(source: str | Path | Mapping[str, torch.Tensor], config: Mapping[str, Any], *, meta: bool = False,
             name: str | None = None) -> CFWAutoencoderKL:
    """Load an official CFW autoencoder checkpoint (``vqgan_cfw_00011.ckpt`` and the face one)."""
    sd = load_state_dict(source) if isinstance(source, (str, Path)) else source
    name = name or (str(source) if isinstance(source, (str, Path)) else "CFW checkpoint")
    if has_prefix(sd, UNET_PREFIX) or has_prefix(sd, TEXT_PREFIX):
        raise CheckpointError(f"{name}: this is a diffusion checkpoint, not a CFW autoencoder")
    conv = split_cfw_state_dict(sd, vae_table=vae_block_table(len(config["block_out_channels"]),
                                                              config["layers_per_block"]))
    if conv.unexpected:
        raise CheckpointError(f"{name}: unrecognised keys for a CFW autoencoder, e.g. {conv.unexpected[:3]}")
    return instantiate(CFWAutoencoderKL, config, conv.components.get("vae", {}), name=name, meta=meta)
