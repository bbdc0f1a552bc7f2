"""The GPU benchmark script's dry run on the CPU: a lent GPU's few minutes must not be the first run of its code.

``benchmarks/gpu.py --device cpu --tiny`` runs the same build, instrumentation, scenario and parity code as on
the GPU, with the tiny golden model. The parity bounds are the CPU bf16 tolerances of ``test_precision.py``
(mean |diff| <= 0.01, max <= 0.1); here 128 -> 512 px in 4 steps measured 0.0029 / 0.030.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_cpu(golden_dir):
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny", "--precision", "bf16",
           "--parity", "--scenarios", "B", "A", "--steps-a", "2"]
    env = {**os.environ, "STABLESR_GOLDEN": str(golden_dir), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["scenario"] for r in rows] == ["parity", "B", "A"]

    parity = rows[0]
    assert parity["finite"] and parity["precision"] == "bf16" and parity["against"] == "fp32"
    assert 0 < parity["max_abs_diff"] <= 0.1 and parity["mean_abs_diff"] <= 0.01  # rounded weights, same work

    for row, steps in zip(rows[1:], (4, 2)):
        assert row["out_shape"] == [1, 512, 512, 3] and row["steps"] == steps and row["model"] == "tiny golden"
        stages = row["encode_s"] + row["sample_s"] + row["decode_s"] + row["color_fix_s"]
        assert 0 < stages <= row["total_s"] * 1.001 + 1e-3  # the stage timers nest inside the total
        assert row["per_step_s"] == pytest.approx(row["sample_s"] / steps, rel=1e-3, abs=1e-4)
        assert row["peak_rss_gib"] > 0
    a = rows[2]  # fewer steps than the 200: the total is extrapolated from the measured step time
    expected = a["total_s"] - a["sample_s"] + a["per_step_s"] * 200
    assert a["total_200_s"] == pytest.approx(expected, rel=1e-3, abs=1e-2)
