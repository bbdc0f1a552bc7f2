"""The official code's golden vectors replay through our modules (fp32, CPU)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from stablesr.testing import golden


def test_every_golden_case_passes(golden_dir):
    out = io.StringIO()
    passed, failed = golden.run(golden_dir, out=out)
    lines = out.getvalue().splitlines()
    n_cases = len(json.loads((golden_dir / "index.json").read_text())["cases"])
    assert failed == 0, "\n".join(lines)
    assert passed == n_cases
    assert lines[-1] == f"{n_cases} passed, 0 failed"
    assert all(line.startswith("PASS ") and "max_abs_err=" in line for line in lines[:-1])


@pytest.mark.slow
def test_module_entry_point_reports_and_exit_code(golden_dir, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "stablesr.golden", str(golden_dir), "-k", "colorfix"],
                        capture_output=True, text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "2 passed, 0 failed"

    # A copy whose expected output is perturbed beyond tolerance must fail with a non-zero exit.
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "golden"
    shutil.copytree(golden_dir, bad)
    case = bad / "cases" / "g_colorfix.safetensors"
    tensors = load_file(str(case))
    tensors["out.adain"] = tensors["out.adain"] + 1e-2
    case.chmod(0o644)
    save_file(tensors, str(case))
    res = subprocess.run([sys.executable, "-m", "stablesr.golden", str(bad), "-k", "g_colorfix"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 1
    assert "FAIL g_colorfix" in res.stdout and res.stdout.strip().endswith("0 passed, 1 failed")


def test_ddim_with_guidance_through_the_pipeline_matches_the_official_script(golden_dir):
    """``pipe(sampler="ddim", guidance_scale=...)`` itself against ``h_ddim_cfg_eps`` (the DDIM script with CFG).

    The script encodes the structure latent with the CFW encoder and gets its input at the final size, so
    the pipeline is built with that one VAE and called at the model size (its resize is then the identity).
    """
    import torch
    from safetensors.torch import load_file

    from stablesr.config import ModelConfig, Quirks
    from stablesr.diffusion.sampling import RecordedNoise
    from stablesr.pipeline import StableSRPipeline

    index = json.loads((golden_dir / "index.json").read_text())
    models = golden.GoldenModels.load(golden_dir, index)
    case = next(c for c in index["cases"] if c["id"] == "h_ddim_cfg_eps")
    p = case["params"]
    t = load_file(str(golden_dir / "cases" / "h_ddim_cfg_eps.safetensors"))
    spec = models.specs["eps"]
    size = t["in.lr_image"].shape[-1]
    pipe = StableSRPipeline(models.parts.unet, models.parts.sft_adapter, models.parts.time_aware_encoder,
                            models.vae, struct_vae=None,
                            config=ModelConfig(parameterization="eps", sample_size=size, scale_factor=spec.scale_factor,
                                               linear_start=spec.linear_start, linear_end=spec.linear_end))
    pipe.set_progress_bar_config(disable=True)
    noise = RecordedNoise([t[k] for k in sorted(k for k in t if k.startswith("noise."))])
    result = pipe((t["in.lr_image"] + 1) / 2, 1.0, int(p["ddim_steps"]), sampler="ddim", eta=float(p["eta"]),
                  guidance_scale=float(p["scale"]), fidelity=float(p["dec_w"]), color_fix=p["colorfix"],
                  prompt_embeds=t["in.text_context.empty"], negative_prompt_embeds=t["in.text_context.negative"],
                  noise=noise, init="noised_lr", output_type="pt", quirks=Quirks(tile_weights=True))
    tol = {k: float(v["atol"]) for k, v in case["tolerance"].items()}  # the case's own (9.7e-4, 4.8e-5)
    torch.testing.assert_close(result.latents, t["out.samples"], rtol=0, atol=tol["out.samples"])  # 6e-5 here
    torch.testing.assert_close(result.images, t["out.x_final"], rtol=0, atol=tol["out.x_final"])  # 4e-6 here
