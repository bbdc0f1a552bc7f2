"""Trained weights out: our pipeline folder (safetensors) and the official ``.ckpt`` layout.

* :func:`save_stage1_pipeline` writes a :class:`StableSRPipeline` folder (``upscale --checkpoint
  OUT/model`` and ``StableSRPipeline.from_pretrained`` read it as is: every component, the prompt
  context, the model settings).
* :func:`official_state_dict` renames our components back to the official key layout (the key
  map of :mod:`stablesr.checkpoints.keymap` inverted, then checked by converting the result forward
  again), so ``from_single_file`` and the official scripts read the exported ``.ckpt``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ._deps import (
    ENCODER_PREFIX,
    FIRST_STAGE_PREFIX,
    UNET_PREFIX,
    UNET_RESNET_RENAMES,
    VAE_ATTENTION_RENAMES,
    VAE_RESNET_RENAMES,
    CFWAutoencoderKL,
    CheckpointError,
    LDMSpec,
    PipelineConfig,
    PromptEncoder,
    StableSRPipeline,
    rename_prefix,
    rename_sub,
    split_ldm,
    unet_block_table,
    vae_block_table,
)


def _invert(table: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


def _unet_table(spec: LDMSpec) -> dict[str, str]:
    u = spec.unet
    attention = [t.startswith("CrossAttn") for t in u["down_block_types"]]
    return _invert(unet_block_table(len(u["block_out_channels"]), u["layers_per_block"], attention))


def official_unet_keys(unet: nn.Module, sft: nn.Module, spec: LDMSpec) -> dict[str, torch.Tensor]:
    """``model.diffusion_model.*`` (UNet with its ``spade`` layers) from a diffusers UNet + our SFT adapter."""
    inv, resnet_back = _unet_table(spec), _invert(UNET_RESNET_RENAMES)
    out: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        hit = rename_prefix(key, inv)
        if hit is None:
            raise CheckpointError(f"UNet key {key} has no official name")
        path, rest = hit
        if ".resnets." in key:
            rest = rename_sub(rest, resnet_back)
        out[f"{UNET_PREFIX}{path}.{rest}" if rest else f"{UNET_PREFIX}{path}"] = value
    targets = list(sft.config.targets)
    for key, value in sft.state_dict().items():
        _, index, rest = key.split(".", 2)
        out[f"{UNET_PREFIX}{inv[targets[int(index)]]}.spade.{rest}"] = value
    return out


def official_vae_keys(vae: CFWAutoencoderKL, prefix: str = "") -> dict[str, torch.Tensor]:
    """A (CFW) VAE in the official layout (``encoder.down.*``, 1x1-conv attention, ``fusion_layer_*``)."""
    cfg = vae.config
    inv = _invert(vae_block_table(len(cfg.block_out_channels), cfg.layers_per_block))
    attn_back, resnet_back = _invert(VAE_ATTENTION_RENAMES), _invert(VAE_RESNET_RENAMES)
    out: dict[str, torch.Tensor] = {}
    for key, value in vae.state_dict().items():
        hit = rename_prefix(key, inv)
        if hit is None:
            raise CheckpointError(f"VAE key {key} has no official name")
        path, rest = hit
        if path.endswith("attn_1"):
            rest = rename_sub(rest, attn_back)
            if rest.endswith("weight") and value.ndim == 2:  # linear -> 1x1 conv
                value = value[:, :, None, None]
        elif ".block." in path or path.endswith(("block_1", "block_2")):
            rest = rename_sub(rest, resnet_back)
        out[prefix + (f"{path}.{rest}" if rest else path)] = value
    return out


def official_state_dict(unet: nn.Module, sft: nn.Module, encoder: nn.Module, vae: CFWAutoencoderKL, spec: LDMSpec,
                        text_official: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The full official diffusion state dict (what ``LatentDiffusionSRTextWT`` saves), verified by round trip."""
    sd = official_unet_keys(unet, sft, spec)
    sd |= {ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
    sd |= official_vae_keys(vae, FIRST_STAGE_PREFIX)
    sd |= dict(text_official or {})
    back = split_ldm(sd, spec, with_text=False).components
    expect = {"unet": unet.state_dict(), "sft_adapter": sft.state_dict(), "time_aware_encoder": encoder.state_dict(),
              "struct_vae": vae.state_dict()}
    for name, ours in expect.items():
        got = back.get(name, {})
        if got.keys() != ours.keys():
            diff = sorted(set(ours) ^ set(got))[:3]
            raise CheckpointError(f"official export of {name} does not convert back (e.g. {diff})")
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_official_ckpt(sd: dict[str, torch.Tensor], path: str | Path, *, global_step: int = 0) -> Path:
    """Write a Lightning-style ``{"state_dict": ...}`` file (loads with ``torch.load(weights_only=True)``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": sd, "global_step": int(global_step)}, tmp)
    os.replace(tmp, path)
    return path


def save_stage1_pipeline(parts, directory: str | Path, *, cfw: CFWAutoencoderKL | None = None) -> Path:
    """The trained stage-1 model as a pipeline folder; decodes with ``cfw`` when given, else the plain VAE."""
    spec = parts.spec
    config = PipelineConfig(parameterization=spec.parameterization, sample_size=spec.image_size,
                            scale_factor=spec.scale_factor, linear_start=spec.linear_start,
                            linear_end=spec.linear_end, name=Path(directory).parent.name or "stablesr-trained",
                            **({} if cfw is not None else {"default_fidelity": 0.0}))
    pipe = StableSRPipeline(parts.unet, parts.sft, parts.encoder, cfw if cfw is not None else parts.vae,
                            struct_vae=parts.vae if cfw is not None else None,
                            prompt_encoder=PromptEncoder({"": parts.context.detach().cpu()}), config=config)
    return pipe.save_pretrained(directory)


def save_official_companions(parts, source_config: str | None, ckpt: Path) -> tuple[Path, Path]:
    """Next to ``X.ckpt``: ``X.yaml`` (official-style model config: architecture, prediction type, size) and
    ``X.prompt_embeds.safetensors`` (the empty-prompt context), which ``from_single_file`` / the CLI take as
    ``--config`` and ``--prompt-embeds`` (the weights alone tell neither)."""
    import yaml

    from ._deps import official_ldm_config, read_config_file

    spec = parts.spec
    model = read_config_file(source_config) if source_config else official_ldm_config(spec.image_size,
                                                                                       spec.parameterization)
    model["params"]["parameterization"] = spec.parameterization
    model["params"]["image_size"] = spec.image_size
    config = ckpt.with_suffix(".yaml")
    tmp = config.with_name(f".{config.name}.tmp")
    tmp.write_text(yaml.safe_dump({"model": model}, sort_keys=False))
    os.replace(tmp, config)
    embeds = ckpt.with_suffix(".prompt_embeds.safetensors")
    PromptEncoder({"": parts.context.detach().cpu()}).save(embeds)
    return config, embeds
