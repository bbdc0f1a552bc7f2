"""Table-driven renaming of official (LDM-layout) state-dict keys to our components.

Each official key lands in exactly one place: a component's state dict (``unet``,
``sft_adapter``, ``time_aware_encoder``, ``struct_vae``, ``text_encoder`` for a diffusion
checkpoint; ``vae`` for a CFW checkpoint) or the ``ignored`` table with the reason. A key that
fits neither is reported as unexpected, so a checkpoint of an unknown layout never loads silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ..models.cfw import FUSED_LEVELS

UNET_PREFIX = "model.diffusion_model."
ENCODER_PREFIX = "structcond_stage_model."
FIRST_STAGE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."

# Official ResBlock sub-module -> diffusers ResnetBlock2D attribute.
UNET_RESNET_RENAMES = {
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}
VAE_RESNET_RENAMES = {"nin_shortcut": "conv_shortcut"}
VAE_ATTENTION_RENAMES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
TEXT_BLOCK_RENAMES = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
TEXT_TOP_RENAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
IGNORED_PREFIXES = {
    "model_ema.": "EMA copy (the released models have none; inference uses the trained weights)",
    "loss.": "training-only LPIPS / discriminator of the CFW autoencoder",
}


@dataclass
class Conversion:
    """Result of splitting one official state dict."""

    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    def put(self, component: str, key: str, value: torch.Tensor) -> None:
        self.components.setdefault(component, {})[key] = value


def rename_prefix(key: str, table: Mapping[str, str]) -> tuple[str, str] | None:
    """Longest ``table`` prefix of ``key`` (at a dot boundary) -> (new prefix, remainder)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in table:
            return table[prefix], ".".join(parts[n:])
    return None


def rename_sub(rest: str, renames: Mapping[str, str]) -> str:
    hit = rename_prefix(rest, renames)
    return f"{hit[0]}.{hit[1]}" if hit and hit[1] else (hit[0] if hit else rest)


def unet_block_table(num_levels: int, layers_per_block: int, attention: list[bool]) -> dict[str, str]:
    """Official UNet block paths -> diffusers paths, for any depth/width (SD-2: 4 levels, 2 layers)."""
    per = layers_per_block + 1
    t = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
         "time_embed.2": "time_embedding.linear_2", "out.0": "conv_norm_out", "out.2": "conv_out",
         "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
         "middle_block.2": "mid_block.resnets.1"}
    for level in range(num_levels):
        for j in range(layers_per_block):
            i = 1 + level * per + j
            t[f"input_blocks.{i}.0"] = f"down_blocks.{level}.resnets.{j}"
            if attention[level]:
                t[f"input_blocks.{i}.1"] = f"down_blocks.{level}.attentions.{j}"
        if level < num_levels - 1:
            t[f"input_blocks.{(level + 1) * per}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
    for up in range(num_levels):
        has_attn = attention[num_levels - 1 - up]
        for j in range(per):
            i = up * per + j
            t[f"output_blocks.{i}.0"] = f"up_blocks.{up}.resnets.{j}"
            if has_attn:
                t[f"output_blocks.{i}.1"] = f"up_blocks.{up}.attentions.{j}"
            if up < num_levels - 1 and j == per - 1:
                t[f"output_blocks.{i}.{2 if has_attn else 1}.conv"] = f"up_blocks.{up}.upsamplers.0.conv"
    return t


def vae_block_table(num_levels: int, layers_per_block: int) -> dict[str, str]:
    """Official VAE (and CFW) paths -> :class:`CFWAutoencoderKL` paths."""
    t = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for side in ("encoder", "decoder"):
        t |= {f"{side}.conv_in": f"{side}.conv_in", f"{side}.conv_out": f"{side}.conv_out",
              f"{side}.norm_out": f"{side}.conv_norm_out", f"{side}.mid.block_1": f"{side}.mid_block.resnets.0",
              f"{side}.mid.block_2": f"{side}.mid_block.resnets.1", f"{side}.mid.attn_1": f"{side}.mid_block.attentions.0"}
    for i in range(num_levels):
        for j in range(layers_per_block):
            t[f"encoder.down.{i}.block.{j}"] = f"encoder.down_blocks.{i}.resnets.{j}"
        t[f"encoder.down.{i}.downsample.conv"] = f"encoder.down_blocks.{i}.downsamplers.0.conv"
        for j in range(layers_per_block + 1):
            t[f"decoder.up.{i}.block.{j}"] = f"decoder.up_blocks.{num_levels - 1 - i}.resnets.{j}"
        t[f"decoder.up.{i}.upsample.conv"] = f"decoder.up_blocks.{num_levels - 1 - i}.upsamplers.0.conv"
    for k, level in enumerate(FUSED_LEVELS):
        t[f"decoder.fusion_layer_{level}"] = f"fusion_layers.{k}"
    return t


def convert_vae_key(key: str, table: Mapping[str, str], value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    hit = rename_prefix(key, table)
    if hit is None:
        return None
    new, rest = hit
    if new.endswith("attentions.0"):
        rest = rename_sub(rest, VAE_ATTENTION_RENAMES)
        if rest.endswith("weight") and value.ndim == 4:  # 1x1 conv -> linear
            value = value.reshape(value.shape[0], value.shape[1])
    elif ".resnets." in new:
        rest = rename_sub(rest, VAE_RESNET_RENAMES)
    return (f"{new}.{rest}" if rest else new), value


def convert_text_key(rest: str, value: torch.Tensor, num_layers: int) -> list[tuple[str, torch.Tensor]] | str:
    """OpenCLIP text-tower key -> CLIPTextModel key(s), or a string saying why it is ignored."""
    if rest in TEXT_TOP_RENAMES:
        return [(TEXT_TOP_RENAMES[rest], value)]
    if rest in ("text_projection", "logit_scale"):
        return "not used: StableSR conditions on the penultimate layer's tokens, not the pooled projection"
    parts = rest.split(".")
    if parts[:2] != ["transformer", "resblocks"] or len(parts) < 4:
        return ""
    layer, sub = int(parts[2]), ".".join(parts[3:])
    if layer >= num_layers:
        return "not used: the penultimate-layer text embedding never runs the last transformer block"
    base = f"text_model.encoder.layers.{layer}"
    if sub in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = "weight" if sub.endswith("weight") else "bias"
        q, k, v = value.chunk(3, dim=0)
        return [(f"{base}.self_attn.{n}_proj.{kind}", t) for n, t in zip("qkv", (q, k, v))]
    return [(f"{base}.{rename_sub(sub, TEXT_BLOCK_RENAMES)}", value)]


def split_ldm_state_dict(
    sd: Mapping[str, torch.Tensor],
    *,
    unet_table: Mapping[str, str],
    sft_targets: list[str],
    struct_vae_table: Mapping[str, str] | None,
    text_layers: int | None,
) -> Conversion:
    """Split an official StableSR diffusion state dict (or a webui SFT-only extract) into components."""
    out = Conversion()
    sft_index = {path: i for i, path in enumerate(sft_targets)}
    for key, value in sd.items():
        if key in SCHEDULE_BUFFERS:
            out.ignored[key] = "schedule buffer: recomputed from the config at sampling time"
        elif key.startswith(UNET_PREFIX):
            hit = rename_prefix(key[len(UNET_PREFIX):], unet_table)
            if hit is None:
                out.unexpected.append(key)
                continue
            path, rest = hit
            if rest.startswith("spade.") and path in sft_index:
                out.put("sft_adapter", f"layers.{sft_index[path]}.{rest[len('spade.'):]}", value)
            elif ".resnets." in path or path.startswith("mid_block.resnets"):
                out.put("unet", f"{path}.{rename_sub(rest, UNET_RESNET_RENAMES)}", value)
            else:
                out.put("unet", f"{path}.{rest}" if rest else path, value)
        elif key.startswith(ENCODER_PREFIX):
            out.put("time_aware_encoder", key[len(ENCODER_PREFIX):], value)
        elif key.startswith(FIRST_STAGE_PREFIX):
            conv = convert_vae_key(key[len(FIRST_STAGE_PREFIX):], struct_vae_table, value) if struct_vae_table else None
            if conv is None:
                out.unexpected.append(key)
            else:
                out.put("struct_vae", *conv)
        elif key.startswith(TEXT_PREFIX):
            if text_layers is None:
                out.ignored[key] = "text encoder not requested"
                continue
            res = convert_text_key(key[len(TEXT_PREFIX):], value, text_layers)
            if isinstance(res, str):
                (out.ignored.__setitem__(key, res) if res else out.unexpected.append(key))
            else:
                for k, v in res:
                    out.put("text_encoder", k, v)
        elif any(key.startswith(p) for p in IGNORED_PREFIXES):
            out.ignored[key] = next(r for p, r in IGNORED_PREFIXES.items() if key.startswith(p))
        else:
            out.unexpected.append(key)
    return out


def split_cfw_state_dict(sd: Mapping[str, torch.Tensor], *, vae_table: Mapping[str, str]) -> Conversion:
    """Split an official CFW (``AutoencoderKLResi``) state dict: everything but ``loss.*`` goes to ``vae``."""
    out = Conversion()
    for key, value in sd.items():
        if any(key.startswith(p) for p in IGNORED_PREFIXES):
            out.ignored[key] = next(r for p, r in IGNORED_PREFIXES.items() if key.startswith(p))
            continue
        conv = convert_vae_key(key, vae_table, value)
        if conv is None:
            out.unexpected.append(key)
        else:
            out.put("vae", *conv)
    return out


def has_prefix(keys: Iterable[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)
