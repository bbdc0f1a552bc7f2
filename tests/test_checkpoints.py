"""Tests for stablesr.checkpoints: safe file reading, official key conversion, full-size layouts (on the meta
device, nothing allocated), the tiny official checkpoints, webui extracts and refusal of bad files.

Full-size key lists: ``shared/reference/manifests/*.json``; parameter counts: OFFICIAL.md 2.7.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from conftest import MANIFESTS, official_checkpoints, require

from stablesr.checkpoints.convert import LDMParts, load_cfw, load_ldm, text_encoder_from_state
from stablesr.checkpoints.keymap import split_cfw_state_dict, vae_block_table
from stablesr.checkpoints.loading import load_state_dict
from stablesr.checkpoints.official_config import (
    SD2_TEXT_ENCODER_CONFIG,
    LDMSpec,
    cfw_vae_config,
    official_cfw_config,
    official_ldm_config,
    read_config_file,
)
from stablesr.errors import CheckpointError

LDM_MANIFESTS = {  # name -> (image_size, parameterization) of the official config (OFFICIAL.md 1.1; checked below)
    "stablesr_text_T_512": (512, "eps"),
    "stablesr_text_T_768v": (768, "v"),
    "stablesr_face_T_512": (512, "v"),  # the face config says v although it was initialised from the eps model
}
CFW_MANIFEST = "cfw_autoencoder_kl_64x64x4_resi"
TEXT = "cond_stage_model.model."
TEXT_LAYERS = SD2_TEXT_ENCODER_CONFIG["num_hidden_layers"]  # 23 of OpenCLIP's 24 blocks are used
SCHEDULE_BUFFERS = {  # registered by the official model constructor, recomputed by us at sampling time
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
}

# OFFICIAL.md 2.7
UNET_PARAMS = 865_910_724
SFT_PARAMS = 53_020_160
ENCODER_PARAMS = 52_494_080
CFW_FUSION_PARAMS = 44_393_728
VAE_ENCODER_PARAMS, VAE_DECODER_PARAMS = 34_163_592, 49_490_179


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _manifest(name: str) -> dict:
    return json.loads(require(MANIFESTS / f"{name}.json").read_text())


def _meta_state_dict(manifest: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v["shape"], device="meta") for k, v in manifest["keys"].items()}


# ---------------------------------------------------------------------------------------------
# Full-size official layouts, on the meta device


@pytest.fixture(scope="module", params=sorted(LDM_MANIFESTS))
def full_ldm(request: pytest.FixtureRequest) -> tuple[dict, LDMParts]:
    manifest = _manifest(request.param)
    size, parameterization = LDM_MANIFESTS[request.param]
    official = {row["config"]: row for row in official_checkpoints().values()}[manifest["official_config"]]
    assert (official["image_size"], official["prediction"]) == (size, parameterization), request.param
    spec = LDMSpec.from_official(official_ldm_config(size, parameterization))
    assert spec.parameterization == parameterization and spec.image_size == size
    return manifest, load_ldm(_meta_state_dict(manifest), spec, meta=True)


def test_full_size_manifest_keys_all_land_somewhere(full_ldm: tuple[dict, LDMParts]) -> None:
    manifest, parts = full_ldm
    keys = manifest["keys"]
    conv = parts.conversion
    assert len(keys) == manifest["n_keys"]
    assert conv.unexpected == []

    unused_text = {k for k in keys if k.startswith(f"{TEXT}transformer.resblocks.{TEXT_LAYERS}.")}
    assert len(unused_text) == 12
    expected_ignored = SCHEDULE_BUFFERS | unused_text | {f"{TEXT}text_projection", f"{TEXT}logit_scale"}
    assert {k for k, v in keys.items() if v["kind"] == "buffer"} == SCHEDULE_BUFFERS
    assert set(conv.ignored) == expected_ignored
    assert all(reason for reason in conv.ignored.values())

    # every key is converted or ignored; the fused q/k/v projection of each used text block becomes 3 tensors
    fused = [k for k in keys if k.startswith(TEXT) and k.endswith(("attn.in_proj_weight", "attn.in_proj_bias"))
             and k not in conv.ignored]
    assert len(fused) == 2 * TEXT_LAYERS
    converted = sum(len(sd) for sd in conv.components.values())
    assert converted - 2 * len(fused) + len(conv.ignored) == len(keys)

    # ... and into the right component
    counts = {c: len(sd) for c, sd in conv.components.items()}
    unet_keys = [k for k in keys if k.startswith("model.diffusion_model.")]
    assert counts["sft_adapter"] == sum(".spade." in k for k in unet_keys) == 176
    assert counts["unet"] == len(unet_keys) - counts["sft_adapter"] == 686
    assert counts["time_aware_encoder"] == sum(k.startswith("structcond_stage_model.") for k in keys)
    assert counts["struct_vae"] == sum(k.startswith("first_stage_model.") for k in keys)
    text_used = sum(k.startswith(TEXT) and k not in conv.ignored for k in keys)
    assert counts["text_encoder"] == text_used + 2 * len(fused)

    # no weight is lost or duplicated: converted tensors hold exactly the elements of the used keys
    numel = {k: torch.Size(v["shape"]).numel() for k, v in keys.items()}
    used = sum(n for k, n in numel.items() if k not in conv.ignored)
    assert sum(t.numel() for sd in conv.components.values() for t in sd.values()) == used


def test_full_size_modules_have_official_parameter_counts(full_ldm: tuple[dict, LDMParts]) -> None:
    manifest, parts = full_ldm
    assert _params(parts.unet) == UNET_PARAMS
    assert _params(parts.sft_adapter) == SFT_PARAMS
    assert len(parts.sft_adapter.layers) == 22
    assert _params(parts.time_aware_encoder) == ENCODER_PARAMS
    assert parts.struct_vae is not None
    by_component = manifest["parameters_by_component"]
    unet_total = by_component["model.diffusion_model (UNetModelDualcondV2)"]
    assert _params(parts.unet) + _params(parts.sft_adapter) == unet_total
    assert _params(parts.struct_vae) == by_component["first_stage_model"]
    assert _params(parts.struct_vae.encoder) == VAE_ENCODER_PARAMS
    assert _params(parts.struct_vae.decoder) == VAE_DECODER_PARAMS
    # meta=True allocated nothing
    for module in (parts.unet, parts.sft_adapter, parts.time_aware_encoder, parts.struct_vae):
        assert all(p.is_meta for p in module.parameters())


def test_full_size_text_tower_conversion(full_ldm: tuple[dict, LDMParts]) -> None:
    manifest, parts = full_ldm
    state = parts.text_encoder_state
    assert state is not None
    width = SD2_TEXT_ENCODER_CONFIG["hidden_size"]
    qkv = [k for k in state if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]
    assert len(qkv) == 3 * TEXT_LAYERS
    assert all(tuple(state[k].shape) == (width, width) for k in qkv)
    assert all(tuple(v.shape) == (width,) for k, v in state.items() if k.endswith(("q_proj.bias", "v_proj.bias")))
    # the OpenCLIP positional embedding (77, 1024) becomes the CLIP position embedding table
    pos = [v for k, v in state.items() if k.endswith("position_embedding.weight")]
    assert len(pos) == 1 and tuple(pos[0].shape) == (77, width)
    text_params = manifest["parameters_by_component"]["cond_stage_model"]
    unused = sum(torch.Size(manifest["keys"][k]["shape"]).numel()
                 for k in parts.conversion.ignored if k.startswith(TEXT))
    assert sum(t.numel() for t in state.values()) == text_params - unused


def test_full_size_text_tower_loads_into_clip_text_model(full_ldm: tuple[dict, LDMParts]) -> None:
    """No missing / unexpected keys with the installed transformers (4.x keeps a ``text_model.`` wrapper, 5.x not)."""
    _, parts = full_ldm
    model = text_encoder_from_state(parts.text_encoder_state, meta=True)
    assert model.config.num_hidden_layers == TEXT_LAYERS
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in parts.text_encoder_state.values())


def test_full_size_shape_mismatch_is_refused() -> None:
    manifest = _manifest("stablesr_text_T_512")
    sd = _meta_state_dict(manifest)
    key = "model.diffusion_model.input_blocks.1.0.spade.mlp_gamma.weight"
    assert key in sd
    sd[key] = torch.empty(321, 128, 3, 3, device="meta")
    with pytest.raises(CheckpointError) as info:
        load_ldm(sd, LDMSpec.from_official(official_ldm_config()), meta=True)
    assert "size mismatch" in str(info.value) and "mlp_gamma" in str(info.value)


def test_full_size_768v_spec_differs_only_where_expected() -> None:
    s512 = LDMSpec.from_official(official_ldm_config(512, "eps"))
    s768 = LDMSpec.from_official(official_ldm_config(768, "v"))
    assert (s512.parameterization, s768.parameterization) == ("eps", "v")
    assert (s512.unet["sample_size"], s768.unet["sample_size"]) == (64, 96)
    assert {k: v for k, v in s512.unet.items() if k != "sample_size"} == \
        {k: v for k, v in s768.unet.items() if k != "sample_size"}


@pytest.fixture(scope="module")
def full_cfw() -> tuple[dict, dict[str, torch.Tensor]]:
    manifest = _manifest(CFW_MANIFEST)
    return manifest, _meta_state_dict(manifest)


def test_full_size_cfw_manifest_converts(full_cfw: tuple[dict, dict[str, torch.Tensor]]) -> None:
    manifest, sd = full_cfw
    config = cfw_vae_config(official_cfw_config())
    conv = split_cfw_state_dict(sd, vae_table=vae_block_table(len(config["block_out_channels"]),
                                                             config["layers_per_block"]))
    assert conv.unexpected == [] and conv.ignored == {}
    assert len(conv.components["vae"]) == len(sd) == manifest["n_keys"]

    vae = load_cfw(sd, config, meta=True)
    assert set(vae.state_dict()) == set(conv.components["vae"])
    assert all(p.is_meta for p in vae.parameters())
    assert _params(vae) == manifest["n_parameters"]
    assert _params(vae.fusion_layers) == CFW_FUSION_PARAMS
    assert _params(vae.encoder) == VAE_ENCODER_PARAMS
    assert _params(vae.decoder) == VAE_DECODER_PARAMS


def test_full_size_cfw_ignores_training_loss_keys(full_cfw: tuple[dict, dict[str, torch.Tensor]]) -> None:
    """Released CFW checkpoints also hold LPIPS / discriminator weights under ``loss.*``."""
    _, sd = full_cfw
    extra = dict(sd)
    extra["loss.discriminator.main.0.weight"] = torch.empty(64, 3, 4, 4, device="meta")
    extra["loss.perceptual_loss.net.slice1.0.weight"] = torch.empty(64, 3, 3, 3, device="meta")
    vae = load_cfw(extra, cfw_vae_config(official_cfw_config()), meta=True)
    assert _params(vae.fusion_layers) == CFW_FUSION_PARAMS
    junk = dict(sd)
    junk["decoder.fusion_layer_3.encode_enc_1.conv1.weight"] = torch.empty(1, device="meta")
    with pytest.raises(CheckpointError, match="fusion_layer_3"):
        load_cfw(junk, cfw_vae_config(official_cfw_config()), meta=True)


# ---------------------------------------------------------------------------------------------
# Tiny official checkpoints


@pytest.fixture(scope="module")
def tiny_spec(tiny_weights: dict[str, Path]) -> LDMSpec:
    return LDMSpec.from_official(read_config_file(tiny_weights["config"]))


@pytest.fixture(scope="module")
def tiny_sd(tiny_weights: dict[str, Path]) -> dict[str, torch.Tensor]:
    return load_state_dict(tiny_weights["ldm"])


@pytest.fixture(scope="module")
def tiny_parts(tiny_weights: dict[str, Path], tiny_spec: LDMSpec) -> LDMParts:
    return load_ldm(tiny_weights["ldm"], tiny_spec)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_ckpt_state_dict_is_unwrapped(tiny_sd: dict[str, torch.Tensor]) -> None:
    assert len(tiny_sd) == 880  # golden README: 880 keys including 12 buffers
    assert all(isinstance(v, torch.Tensor) for v in tiny_sd.values())
    assert SCHEDULE_BUFFERS <= set(tiny_sd)


def test_tiny_ckpt_and_safetensors_load_the_same_modules(tiny_weights: dict[str, Path], tiny_spec: LDMSpec,
                                                         tiny_parts: LDMParts) -> None:
    st_path = tiny_weights["ldm"].with_suffix(".safetensors")
    if not st_path.is_file():
        require(st_path, "hidden golden set")
    raw = load_state_dict(st_path)
    assert any(v.dtype == torch.float16 for v in raw.values())  # parameters are stored as float16
    from_st = load_ldm(st_path, tiny_spec)
    for name in ("unet", "sft_adapter", "time_aware_encoder", "struct_vae"):
        assert _same_state(getattr(tiny_parts, name), getattr(from_st, name)), name
    assert all(p.dtype == torch.float32 for p in from_st.unet.parameters())

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 16, 24, generator=gen)
    t = torch.tensor([999, 250])
    with torch.no_grad():
        a, b = tiny_parts.time_aware_encoder(x, t), from_st.time_aware_encoder(x, t)
    assert sorted(a, key=int) == sorted(b, key=int) == ["3", "6", "12", "24"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["24"][0], a["24"][1]), "the timestep must change the features"


def test_tiny_encoder_reproduces_golden_case(golden_dir: Path, tiny_parts: LDMParts) -> None:
    """The converted time-aware encoder matches the official forward (golden case a2, non-square)."""
    from safetensors.torch import load_file

    case = load_file(str(golden_dir / "cases" / "a2_struct_encoder_nonsquare.safetensors"))
    with torch.no_grad():
        feats = tiny_parts.time_aware_encoder(case["in.x"], case["in.t"])
    outs = {k[len("out."):]: v for k, v in case.items() if k.startswith("out.")}
    assert set(feats) == set(outs)
    for k, expected in outs.items():
        torch.testing.assert_close(feats[k].double(), expected.double(), rtol=0, atol=1e-4)


def test_tiny_cfw_ckpt_and_safetensors_agree(tiny_weights: dict[str, Path]) -> None:
    config = cfw_vae_config(read_config_file(tiny_weights["cfw_config"]))
    a = load_cfw(tiny_weights["cfw"], config)
    assert not any(p.is_meta for p in a.parameters())
    st_path = tiny_weights["cfw"].with_suffix(".safetensors")
    if not st_path.is_file():
        require(st_path, "hidden golden set")
    assert _same_state(a, load_cfw(st_path, config))


# ---------------------------------------------------------------------------------------------
# Unknown keys, wrong checkpoint kinds


def test_unknown_unet_key_is_refused(tiny_sd: dict[str, torch.Tensor], tiny_spec: LDMSpec) -> None:
    sd = dict(tiny_sd)
    sd["model.diffusion_model.bogus.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_ldm(sd, tiny_spec)
    assert "model.diffusion_model.bogus.weight" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_top_level_key_is_refused(tiny_sd: dict[str, torch.Tensor], tiny_spec: LDMSpec) -> None:
    sd = dict(tiny_sd)
    sd["some_other_model.layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="some_other_model"):
        load_ldm(sd, tiny_spec)


def test_missing_and_misshapen_weights_are_refused(tiny_sd: dict[str, torch.Tensor], tiny_spec: LDMSpec) -> None:
    key = next(k for k in tiny_sd if k.startswith("structcond_stage_model.") and k.endswith(".weight"))
    missing = {k: v for k, v in tiny_sd.items() if k != key}
    with pytest.raises(CheckpointError, match="missing"):
        load_ldm(missing, tiny_spec)
    misshapen = dict(tiny_sd)
    misshapen[key] = torch.zeros(*tiny_sd[key].shape[:-1], tiny_sd[key].shape[-1] + 1)
    with pytest.raises(CheckpointError):
        load_ldm(misshapen, tiny_spec)


def test_misshapen_weight_error_is_one_line(tiny_sd: dict[str, torch.Tensor], tiny_spec: LDMSpec) -> None:
    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    misshapen = dict(tiny_sd)
    misshapen[key] = torch.zeros(tiny_sd[key].shape[0] + 1, *tiny_sd[key].shape[1:])
    with pytest.raises(CheckpointError) as info:
        load_ldm(misshapen, tiny_spec)
    message = str(info.value)
    assert "conv1.weight" in message  # names the offending (converted) weight
    assert "\n" not in message and "\t" not in message


def test_cfw_checkpoint_is_not_a_diffusion_checkpoint(tiny_weights: dict[str, Path], tiny_spec: LDMSpec) -> None:
    with pytest.raises(CheckpointError) as info:
        load_ldm(tiny_weights["cfw"], tiny_spec)
    assert str(tiny_weights["cfw"]) in str(info.value)


def test_diffusion_checkpoint_is_not_a_cfw_checkpoint(tiny_weights: dict[str, Path]) -> None:
    config = cfw_vae_config(read_config_file(tiny_weights["cfw_config"]))
    with pytest.raises(CheckpointError) as info:
        load_cfw(tiny_weights["ldm"], config)
    assert str(tiny_weights["ldm"]) in str(info.value)


# ---------------------------------------------------------------------------------------------
# webui extracts (SFT layers + time-aware encoder only)


def _webui_extract(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if "spade" in k or k.startswith("structcond_stage_model.")}


def test_webui_extract_with_base_unet(tiny_sd: dict[str, torch.Tensor], tiny_spec: LDMSpec,
                                      tiny_parts: LDMParts) -> None:
    extract = _webui_extract(tiny_sd)
    assert not any(k.startswith("model.diffusion_model.") and "spade" not in k for k in extract)
    parts = load_ldm(extract, tiny_spec, base_unet=tiny_parts.unet)
    assert parts.unet is tiny_parts.unet
    assert _same_state(parts.sft_adapter, tiny_parts.sft_adapter)
    assert _same_state(parts.time_aware_encoder, tiny_parts.time_aware_encoder)
    assert parts.struct_vae is None


def test_webui_extract_without_base_unet_asks_for_it(tiny_sd: dict[str, torch.Tensor], tiny_spec: LDMSpec) -> None:
    with pytest.raises(CheckpointError) as info:
        load_ldm(_webui_extract(tiny_sd), tiny_spec)
    assert "base model" in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Unsafe or broken files


def _write_marker(path: str) -> None:
    """The payload of the malicious pickles: it would create ``path`` if the pickle were ever executed."""
    Path(path).write_text("this checkpoint ran code")


class _MarkerPayload:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (_write_marker, (self.path,))


class _ShellPayload:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


def _assert_refused(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message and message.strip() == message
    return message


def test_malicious_torch_checkpoint_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = {"state_dict": {"w": torch.zeros(2)}}
    for name, payload in (("marker.ckpt", _MarkerPayload(marker)), ("shell.ckpt", _ShellPayload(marker))):
        path = tmp_path / name
        torch.save({**good, "callback": payload}, path)
        _assert_refused(path)
        assert not marker.exists(), f"loading {name} executed its payload"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_plain_pickle_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"state_dict": {"w": torch.zeros(2)}, "x": _MarkerPayload(marker)})
    path = tmp_path / "plain.ckpt"
    path.write_bytes(blob)
    _assert_refused(path)
    assert not marker.exists()
    # the fixture is armed: an unrestricted unpickler does run the payload
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_MarkerPayload(armed)))
    assert armed.exists()


def test_shell_payload_in_plain_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "shell.pth"
    path.write_bytes(pickle.dumps([_ShellPayload(marker)], protocol=2))
    _assert_refused(path)
    assert not marker.exists()


def test_broken_files_give_one_line_errors(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    _assert_refused(tmp_path / "does_not_exist.ckpt")

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    _assert_refused(empty)
    empty_st = tmp_path / "empty.safetensors"
    empty_st.write_bytes(b"")
    _assert_refused(empty_st)

    rng = random.Random(1234)
    noise = bytes(rng.randrange(256) for _ in range(8192))
    for name in ("random.ckpt", "random.safetensors", "random.pth"):
        (tmp_path / name).write_bytes(noise)
        _assert_refused(tmp_path / name)

    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               f"oid sha256:{'ab' * 32}\nsize 12502869\n")
    for name in ("lfs.ckpt", "lfs.safetensors"):
        (tmp_path / name).write_text(pointer)
        assert "lfs" in _assert_refused(tmp_path / name).lower()

    st_path = tiny_weights["ldm"].with_suffix(".safetensors")
    source = st_path if st_path.is_file() else None
    if source is None:  # hidden set: make a safetensors file of our own
        from safetensors.torch import save_file

        source = tmp_path / "whole.safetensors"
        save_file({"w": torch.zeros(4096)}, str(source))
    data = source.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    _assert_refused(truncated)

    ckpt = tiny_weights["ldm"].read_bytes()
    truncated_ckpt = tmp_path / "truncated.ckpt"
    truncated_ckpt.write_bytes(ckpt[: len(ckpt) // 2])
    _assert_refused(truncated_ckpt)


def test_containers_without_tensors_are_refused(tmp_path: Path) -> None:
    no_tensors = tmp_path / "meta.ckpt"
    torch.save({"epoch": 3, "global_step": 10}, no_tensors)
    _assert_refused(no_tensors)
    a_list = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], a_list)
    _assert_refused(a_list)


def test_plain_and_wrapped_state_dicts_load(tmp_path: Path) -> None:
    weights = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}
    for name, obj in (("plain.ckpt", weights), ("lightning.ckpt", {"state_dict": weights, "epoch": 1}),
                      ("ema.pth", {"params_ema": weights})):
        torch.save(obj, tmp_path / name)
        got = load_state_dict(tmp_path / name)
        assert got.keys() == weights.keys() and all(torch.equal(got[k], weights[k]) for k in weights)
