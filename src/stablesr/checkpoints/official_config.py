"""Official-style model configs (``model: {target, params}``, YAML or JSON) -> our component configs.

The official repository describes each model with an OmegaConf file whose ``target`` strings
name its classes. We never import those strings: we read the hyper-parameters and build the
diffusers / stablesr modules that hold the same weights. Built-in presets reproduce the
released models' configs, so no config file is needed for them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

LDM_TARGETS = ("LatentDiffusionSRTextWT", "LatentDiffusionSRTextWTFFHQ")
CFW_TARGETS = ("AutoencoderKLResi",)
VAE_TARGETS = ("AutoencoderKL",)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read an official config (``.yaml``/``.yml``/``.json``); returns the dict under ``model``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # pyyaml comes with huggingface_hub

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is a user error about this file
        raise CheckpointError(f"{path}: not a valid config file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or "model" not in data or "params" not in data.get("model", {}):
        raise CheckpointError(f"{path}: expected an official-style config with model.target and model.params")
    return data["model"]


def _target_name(model: dict[str, Any]) -> str:
    return str(model.get("target", "")).rsplit(".", 1)[-1]


def unet_config(p: dict[str, Any], sample_size: int) -> dict[str, Any]:
    """``UNetModelDualcondV2`` params -> ``diffusers.UNet2DConditionModel`` kwargs."""
    mc, mult = p["model_channels"], list(p["channel_mult"])
    attn = set(p.get("attention_resolutions", []))
    has_attn = [2**level in attn for level in range(len(mult))]
    nhc = p.get("num_head_channels", -1)
    heads = [(mc * m) // nhc if nhc != -1 else p["num_heads"] for m in mult]
    if not p.get("use_spatial_transformer", True):
        raise CheckpointError("only spatial-transformer (SD-2 style) UNets are supported")
    return {
        "sample_size": sample_size,
        "in_channels": p.get("in_channels", 4),
        "out_channels": p.get("out_channels", 4),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": [mc * m for m in mult],
        "layers_per_block": p["num_res_blocks"],
        "attention_head_dim": heads,  # diffusers' SD-2 naming: these are head counts
        "cross_attention_dim": p["context_dim"],
        "use_linear_projection": bool(p.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": p.get("transformer_depth", 1),
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "downsample_padding": 1,
    }


def encoder_config(p: dict[str, Any]) -> dict[str, Any]:
    """``EncoderUNetModelWT`` params -> :class:`TimeAwareEncoder` kwargs."""
    return {
        "in_channels": p.get("in_channels", 4),
        "model_channels": p["model_channels"],
        "out_channels": p["out_channels"],
        "num_res_blocks": p["num_res_blocks"],
        "attention_resolutions": list(p.get("attention_resolutions", [])),
        "channel_mult": list(p["channel_mult"]),
        "num_heads": p.get("num_heads", 4),
        "num_head_channels": p.get("num_head_channels", -1),
    }


def vae_config(ddconfig: dict[str, Any], embed_dim: int, *, fusion: bool, sample_size: int) -> dict[str, Any]:
    """LDM ``ddconfig`` -> :class:`CFWAutoencoderKL` kwargs (``fusion=False`` for a plain SD VAE)."""
    if ddconfig.get("attn_resolutions"):
        raise CheckpointError("VAE configs with attention inside the levels are not supported")
    ch, mult = ddconfig["ch"], list(ddconfig["ch_mult"])
    if embed_dim != ddconfig["z_channels"]:
        raise CheckpointError("VAE embed_dim must equal z_channels")
    return {
        "in_channels": ddconfig.get("in_channels", 3),
        "out_channels": ddconfig.get("out_ch", 3),
        "down_block_types": ["DownEncoderBlock2D"] * len(mult),
        "up_block_types": ["UpDecoderBlock2D"] * len(mult),
        "block_out_channels": [ch * m for m in mult],
        "layers_per_block": ddconfig["num_res_blocks"],
        "latent_channels": embed_dim,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "stem_channels": ch if mult[0] != 1 else None,
        "fusion": fusion,
    }


@dataclass
class LDMSpec:
    """What an official diffusion config says, in our terms."""

    unet: dict[str, Any]
    encoder: dict[str, Any]
    struct_vae: dict[str, Any]
    parameterization: str
    image_size: int
    scale_factor: float
    linear_start: float
    linear_end: float
    cond_channels: int
    time_replace: int = 1000  # respaced step count the model trains with (1000 = none)

    @classmethod
    def from_official(cls, model: dict[str, Any]) -> LDMSpec:
        if _target_name(model) not in LDM_TARGETS:
            raise CheckpointError(f"config target {model.get('target')!r} is not a StableSR diffusion model")
        p = model["params"]
        image_size = int(p.get("image_size", 512))
        fs = p["first_stage_config"]["params"]
        return cls(
            unet=unet_config(p["unet_config"]["params"], image_size // 8),
            encoder=encoder_config(p["structcond_stage_config"]["params"]),
            struct_vae=vae_config(fs["ddconfig"], fs["embed_dim"], fusion=False, sample_size=image_size),
            parameterization=p.get("parameterization", "eps"),
            image_size=image_size,
            scale_factor=float(p.get("scale_factor", 0.18215)),
            linear_start=float(p.get("linear_start", 0.00085)),
            linear_end=float(p.get("linear_end", 0.012)),
            cond_channels=p["unet_config"]["params"].get("semb_channels", 256),
            time_replace=int(p.get("time_replace") or 1000),
        )


def cfw_vae_config(model: dict[str, Any], sample_size: int = 512) -> dict[str, Any]:
    """An ``AutoencoderKLResi`` config -> :class:`CFWAutoencoderKL` kwargs."""
    if _target_name(model) not in CFW_TARGETS + VAE_TARGETS:
        raise CheckpointError(f"config target {model.get('target')!r} is not a (CFW) autoencoder")
    p = model["params"]
    return vae_config(p["ddconfig"], p["embed_dim"], fusion=_target_name(model) in CFW_TARGETS,
                      sample_size=sample_size)


def infer_vae_ddconfig(sd: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], int]:
    """Read an official VAE's ``ddconfig`` and ``embed_dim`` off its tensor shapes (official key layout).

    Lets a CFW checkpoint load without its YAML: only the widths and counts vary between configs.
    """
    def shape(key: str) -> tuple[int, ...]:
        return tuple(sd[prefix + key].shape)

    ch = shape("encoder.conv_in.weight")[0]
    levels = sorted({int(k[len(prefix):].split(".")[2]) for k in sd if k.startswith(prefix + "encoder.down.")})
    blocks = {int(k[len(prefix):].split(".")[4]) for k in sd if k.startswith(prefix + "encoder.down.0.block.")}
    mult = [shape(f"encoder.down.{i}.block.0.conv2.weight")[0] // ch for i in levels]
    z = shape("decoder.conv_in.weight")[1]
    ddconfig = {"double_z": True, "z_channels": z, "in_channels": shape("encoder.conv_in.weight")[1],
                "out_ch": shape("decoder.conv_out.weight")[0], "ch": ch, "ch_mult": mult,
                "num_res_blocks": len(blocks), "attn_resolutions": [], "dropout": 0.0}
    return ddconfig, shape("post_quant_conv.weight")[1]


# ---------------------------------------------------------------------------------------------
# Presets: the released models' configs (the official YAML hyper-parameters, as data).

_SD_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 512, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def official_ldm_config(image_size: int = 512, parameterization: str = "eps") -> dict[str, Any]:
    """The ``model`` section of ``v2-finetune_text_T_{512,768v}.yaml`` / the face config."""
    return {
        "target": "ldm.models.diffusion.ddpm.LatentDiffusionSRTextWT",
        "params": {
            "parameterization": parameterization, "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000,
            "image_size": image_size, "channels": 4, "scale_factor": 0.18215,
            "unet_config": {"params": {
                "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
                "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
                "num_head_channels": 64, "use_spatial_transformer": True, "use_linear_in_transformer": True,
                "transformer_depth": 1, "context_dim": 1024, "legacy": False, "semb_channels": 256}},
            "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": copy.deepcopy(_SD_DDCONFIG)}},
            "structcond_stage_config": {"params": {
                "image_size": 96, "in_channels": 4, "model_channels": 256, "out_channels": 256,
                "num_res_blocks": 2, "attention_resolutions": [4, 2, 1], "channel_mult": [1, 1, 2, 2],
                "num_heads": 4, "num_head_channels": -1}},
        },
    }


def official_cfw_config() -> dict[str, Any]:
    """The ``model`` section of ``autoencoder_kl_64x64x4_resi.yaml`` (general and face CFW)."""
    return {"target": "ldm.models.autoencoder.AutoencoderKLResi",
            "params": {"embed_dim": 4, "fusion_w": 1.0, "ddconfig": copy.deepcopy(_SD_DDCONFIG)}}


# The SD-2 OpenCLIP ViT-H/14 text tower as a transformers CLIPTextModel (penultimate layer = 23 layers).
SD2_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 1024, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0,
}
