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
