"""The official code's golden vectors replay through our modules and StableSRPipeline itself (fp32, CPU)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from stablesr.testing import golden

SCRIPT_KINDS = ("ddpm_old", "canvas_tile", "ddim")


def test_every_golden_case_passes_and_script_cases_run_the_pipeline_call(golden_dir, monkeypatch):
    """All cases pass; the sampling cases (c, d, f, h ...) are replayed by ``StableSRPipeline.__call__``
    itself, once each (a spy records the call, then runs the real pipeline)."""
    from stablesr.pipeline import StableSRPipeline

    index = json.loads((golden_dir / "index.json").read_text())
    calls: list[str] = []
    current = [""]
    real_call, real_case = StableSRPipeline.__call__, golden.run_case
    monkeypatch.setattr(StableSRPipeline, "__call__",
                        lambda self, *a, **k: calls.append(current[0]) or real_call(self, *a, **k))
    monkeypatch.setattr(golden, "run_case", lambda m, root, case: current.__setitem__(0, case["id"]) or
                        real_case(m, root, case))
    out = io.StringIO()
    passed, failed = golden.run(golden_dir, out=out)
    lines = out.getvalue().splitlines()
    n_cases = len(index["cases"])
    assert failed == 0, "\n".join(lines)
    assert passed == n_cases
    assert lines[-1] == f"{n_cases} passed, 0 failed"
    assert all(line.startswith("PASS ") and "max_abs_err=" in line for line in lines[:-1])
    expected = [c["id"] for c in index["cases"] if c["kind"] in SCRIPT_KINDS]
    assert calls == expected and len(expected) >= 8


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


def _replay_old_script(golden_dir, case_id, quirks):
    """``case_id`` (an ``_old`` script case) through the pipeline with ``quirks``: (max error of samples, draws left)."""
    import torch
    from safetensors.torch import load_file

    from stablesr.diffusion.sampling import RecordedNoise

    index = json.loads((golden_dir / "index.json").read_text())
    case = next(c for c in index["cases"] if c["id"] == case_id)
    t = load_file(str(golden_dir / case["file"]))
    noise = RecordedNoise([t[k] for k in sorted((k for k in t if k.startswith("noise.")), key=lambda k: int(k[6:]))])
    p = golden.SCRIPT_DEFAULTS["ddpm_old"] | case["params"]
    with torch.no_grad():
        got = golden._through_pipeline(golden.GoldenModels.load(golden_dir, index), p, t, noise, quirks, 128,
                                       num_inference_steps=int(p["ddpm_steps"]), sampler="ddpm", init="noise",
                                       vae_tile_size=None)
    err = (got["out.samples"].double() - t["out.samples"].double()).abs().max().item()
    return err, float(case["tolerance"]["out.samples"]["atol"]), len(noise.draws) - noise.position


def test_old_script_quirks_are_each_needed(golden_dir):
    """The ``_old`` script's two quirks change the result: without either the golden case fails."""
    import dataclasses

    from stablesr.config import Quirks

    old = Quirks.official("old")
    err, tol, left = _replay_old_script(golden_dir, "c_ddpm_eps", old)
    assert err <= tol and left == 0
    err, tol, _ = _replay_old_script(golden_dir, "c_ddpm_eps", dataclasses.replace(old, structure_from_cfw=False))
    assert err > 100 * tol  # the checkpoint's own VAE differs from the CFW encoder in the tiny models
    err, tol, left = _replay_old_script(golden_dir, "c_ddpm_eps", dataclasses.replace(old, discarded_noise_draw=False))
    assert err > 100 * tol and left == 1  # every later draw shifted by one
