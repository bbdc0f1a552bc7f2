"""Stage 2 and CFW data generation on the tiny official-format models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stablesr.training.cfw import load_cfw_base, train_cfw
from stablesr.training.cfw_data import make_cfw_data
from stablesr.training.config import CFWTrainConfig, MakeCFWDataConfig, ModelConfig, load_config
from stablesr.training.perceptual import LPIPS, PatchDiscriminator, lpips_package_weights, vgg16_features

pytestmark = [pytest.mark.filterwarnings("ignore:LPIPS uses a RANDOMLY INITIALISED VGG16"),
              pytest.mark.usefixtures("one_thread")]  # conftest: the tiny networks run on one thread


@pytest.fixture(scope="module")
def cfw_data(tmp_path_factory, golden_dir, data_dir):
    """Two pairs made by make-cfw-data from the tiny StableSR checkpoint (2 DDPM steps)."""
    w = golden_dir / "weights"
    out = tmp_path_factory.mktemp("cfwdata")
    cfg = load_config(MakeCFWDataConfig, None, {"output_dir": str(out), "num_images": 2, "batch_size": 2,
                                                "ddpm_steps": 2, "data.train_dirs": [str(data_dir / "hr" / "set5")],
                                                "data.gt_size": 128})
    cfg.model = ModelConfig(base=str(w / "tiny_ldm.ckpt"), config=str(golden_dir / "configs" / "tiny_ldm_eps.json"),
                            prompt_embeds=str(w / "tiny_prompt_embeds.safetensors"))
    with torch.no_grad():
        report = make_cfw_data(cfg)
    return out, report, cfg


def test_make_cfw_data_layout_and_resume(cfw_data):
    out, report, cfg = cfw_data
    assert report.written == 2
    for d, ext in (("gts", "png"), ("inputs", "png"), ("samples", "png"), ("latents", "npy")):
        assert sorted(p.name for p in (out / d).iterdir()) == [f"00000000.{ext}", f"00000001.{ext}"]
    lat = np.load(out / "latents" / "00000000.npy")
    assert lat.shape == (1, 4, 16, 16) and lat.dtype == np.float32 and np.isfinite(lat).all()
    again = make_cfw_data(cfg)
    assert (again.written, again.existing) == (0, 2)
    shard = make_cfw_data(cfg.__class__(**{**cfg.__dict__, "num_images": 3}), rank=1, world=2)
    assert (shard.written, shard.existing) == (0, 1)  # rank 1 of 2 owns pair 1 only (of 0..2)


def test_stage2_trains_only_the_fusion_layers(cfw_data, tiny_weights, tmp_path):
    out, _, _ = cfw_data
    cfg = load_config(CFWTrainConfig, None, {
        "base": str(tiny_weights["cfw"]), "output_dir": str(tmp_path / "run"), "data.root": str(out),
        "data.num_workers": 0, "loss.allow_random_lpips": True, "loss.disc_start": 1, "max_steps": 3,
        "gradient_accumulation_steps": 1, "log_with": None, "checkpointing_steps": 0, "optim.lr": 1e-3})
    before = load_cfw_base(cfg.base).state_dict()
    result = train_cfw(cfg)
    after = load_file(str(result.model_dir / "diffusion_pytorch_model.safetensors"))
    assert before.keys() == after.keys()
    fusion = [k for k in before if k.startswith("fusion_layers.")]
    assert fusion and any(not torch.equal(before[k], after[k]) for k in fusion)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in fusion)  # byte-identical
    logs = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert logs[0]["train/disc_factor"] == 0.0 and result.losses[-1]["train/disc_factor"] == 1.0
    assert result.losses[-1]["train/disc_loss"] > 0  # the hinge GAN is on from disc_start
    sd = torch.load(result.official_ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("loss.discriminator.main.") for k in sd)
    from stablesr.pipeline import StableSRPipeline

    pipe = StableSRPipeline.from_single_file(tiny_weights["ldm"], result.official_ckpt, config=tiny_weights["config"],
                                             prompt_embeds=tiny_weights["prompt_embeds"])
    assert all(torch.equal(v, after[k]) for k, v in pipe.vae.state_dict().items())


def test_cfw_from_a_plain_vae_gets_fresh_fusion_layers(tiny_weights):
    vae = load_cfw_base(str(tiny_weights["ldm"]))  # the StableSR file's first-stage VAE
    assert vae.fusion_layers is not None
    ref = torch.load(tiny_weights["ldm"], weights_only=True)["state_dict"]
    assert torch.equal(vae.encoder.conv_in.weight, ref["first_stage_model.encoder.conv_in.weight"].float())
    from stablesr.errors import CheckpointError

    not_a_vae = str(tiny_weights["prompt_embeds"])
    with pytest.raises(CheckpointError, match="not an official CFW/VAE checkpoint") as err:
        load_cfw_base(not_a_vae)
    assert str(err.value).startswith(not_a_vae + ":")  # the user's file, not an internal temporary one


def test_fresh_fusion_layers_follow_the_seed_and_unused_settings_are_refused(cfw_data, tiny_weights, tmp_path):
    from stablesr.errors import StableSRError
    from stablesr.training.cfw import check_cfw_config
    from stablesr.training.config import ConfigError

    out, _, _ = cfw_data
    common = {"base": str(tiny_weights["ldm"]), "data.root": str(out), "data.num_workers": 0,  # a VAE: fresh fusion
              "loss.allow_random_lpips": True, "max_steps": 1, "gradient_accumulation_steps": 1, "log_with": None,
              "checkpointing_steps": 0, "export_official": False}
    runs = [train_cfw(load_config(CFWTrainConfig, None, {**common, "output_dir": str(tmp_path / name), **extra}))
            for name, extra in (("a", {}), ("b", {}), ("c", {"seed": 7}))]
    weights = [load_file(str(r.model_dir / "diffusion_pytorch_model.safetensors")) for r in runs]
    fusion = [k for k in weights[0] if k.startswith("fusion_layers.")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in fusion)  # same seed, same fresh layers
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in fusion)
    assert runs[0].official_ckpt is None and not (tmp_path / "a" / "stablesr_cfw.ckpt").exists()

    for extra, named in (({"ema_decay": 0.5}, "ema_decay"), ({"optim.lr_scheduler": "linear"}, "optim.lr_scheduler"),
                         ({"optim.weight_decay": 1.0}, "optim.weight_decay")):
        with pytest.raises(StableSRError, match=f"train cfw does not use {named}"):
            check_cfw_config(load_config(CFWTrainConfig, None, {**common, **extra}))
    with pytest.raises(StableSRError, match="not a stablesr model folder"):
        check_cfw_config(load_config(CFWTrainConfig, None, {**common, "pipeline": str(tmp_path)}))
    for bad, message in (({"optim.betas": [0.5]}, "optim.betas must be two numbers"),
                         ({"train_batch_size": 0}, "train_batch_size must be at least 1"),
                         ({"max_steps": -1}, "max_steps must be at least 1")):
        with pytest.raises(ConfigError, match=message):
            load_config(CFWTrainConfig, None, {**common, **bad})
    with pytest.raises(ConfigError, match="mixed_precision must be no or fp16 or bf16"):
        load_config(MakeCFWDataConfig, None, {"mixed_precision": "fp8"})


def test_lpips_parts_use_torchvision_and_lpips_names(tmp_path):
    feats = vgg16_features()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision file also has the classifier
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    heads_file = lpips_package_weights()  # the lpips package's real heads, when it is installed
    if heads_file is None:  # else a file in its layout (lin<k>.model.1.weight), to load by the same names
        heads_file = tmp_path / "vgg.pth"
        torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1)
                    for k, c in enumerate((64, 128, 256, 512, 512))}, heads_file)
    net = LPIPS(str(tmp_path / "vgg16-397923af.pth"), str(heads_file))
    assert not net.random_weights and torch.equal(net.features[0].weight, feats[0].weight)
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    assert all(torch.equal(net.lins[k].model[1].weight, heads[f"lin{k}.model.1.weight"]) for k in range(5))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert net(x, x).abs().max() == 0 and net(x, -x).item() > 0
    with pytest.raises(Exception, match="VGG16 weights"):
        LPIPS(None)


def test_patch_discriminator_matches_the_official_layout():
    d = PatchDiscriminator()
    names = set(d.state_dict())
    assert {"main.0.weight", "main.0.bias", "main.2.weight", "main.3.running_mean", "main.11.weight",
            "main.11.bias"} <= names
    assert d(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)


@pytest.mark.slow
def test_stage2_resume_is_bit_identical(cfw_data, tiny_weights, tmp_path):
    out, _, _ = cfw_data

    def cfg(name, **kw):
        return load_config(CFWTrainConfig, None, {
            "base": str(tiny_weights["cfw"]), "output_dir": str(tmp_path / name), "data.root": str(out),
            "data.num_workers": 0, "loss.allow_random_lpips": True, "loss.disc_start": 2, "max_steps": 4,
            "gradient_accumulation_steps": 2, "log_with": None, "checkpointing_steps": 2, "optim.lr": 1e-3} | kw)

    full = train_cfw(cfg("full"))
    assert train_cfw(cfg("cut"), stop_after=3).model_dir is None
    resumed = train_cfw(cfg("cut", resume_from_checkpoint="latest"))
    a = load_file(str(full.model_dir / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed.model_dir / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.losses == full.losses[2:]
