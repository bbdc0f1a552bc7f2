"""Scale-out: `torchrun --nproc_per_node 2 -m stablesr upscale` splits the inputs so each is processed exactly once.

Runs two CPU processes on the tiny golden model (gloo for the final count); no network, no GPU.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import require
from PIL import Image

import stablesr

pytestmark = [pytest.mark.slow,  # two torchrun jobs of two processes each
              pytest.mark.skipif(importlib.util.find_spec("torch.distributed.run") is None,
                                 reason="torch.distributed.run is not available")]

RANK_SUMMARY = re.compile(r"^\[rank (\d)/2\] done (\d+), skipped (\d+), failed (\d+) in", re.MULTILINE)
GLOBAL_SUMMARY = re.compile(r"^done (\d+), skipped (\d+), failed (\d+) in [\d.]+ s \(all 2 processes\)$",
                            re.MULTILINE)
WROTE = re.compile(r"^\[rank (\d)/2\] wrote (\S+) from ", re.MULTILINE)
# A traceback frame in our own code: the imported package's folder (the workers import the same one). A bare
# "stablesr/" would also match torchrun's own frames when the checkout or its venv sits in a folder of that name.
_PKG = Path(stablesr.__file__).parent
OUR_FRAME = re.compile('File "(?:' + "|".join(re.escape(str(p)) for p in {_PKG.absolute(), _PKG.resolve()}) + r')[/\\]')


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, tiny_weights: dict[str, Path]
              ) -> dict[str, object]:
    for key in ("ldm", "cfw", "config", "prompt_embeds"):
        require(tiny_weights[key])
    root = tmp_path_factory.mktemp("shard")
    inputs = root / "in"
    inputs.mkdir()
    real = data_dir / "real_lr"
    sources = ["0030.jpg", "ADE_val_00000114.jpg", "00017_gray.png", "children-alpha.png", "wolf_gray.jpg"]
    for i, name in enumerate(sources):
        with Image.open(real / name) as im:
            im.resize((48, 40)).save(inputs / f"img{i}{Path(name).suffix}")
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), STABLESR_HOME=str(root / "home"), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    flags = ["--checkpoint", str(tiny_weights["ldm"]), "--cfw-checkpoint", str(tiny_weights["cfw"]),
             "--config", str(tiny_weights["config"]), "--prompt-embeds", str(tiny_weights["prompt_embeds"]),
             "--steps", "1", "-s", "2", "--device", "cpu", "-v"]
    return {"root": root, "inputs": inputs, "env": env, "flags": flags}


def torchrun(workspace: dict, *extra: str, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    out = out or workspace["root"] / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "stablesr", "upscale", str(workspace["inputs"]), "-o", str(out),
               *workspace["flags"], *extra]
    return subprocess.run(command, capture_output=True, text=True, env=workspace["env"], timeout=600,
                          check=False)


def test_every_input_is_processed_exactly_once(workspace: dict) -> None:
    result = torchrun(workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    wrote = Counter(name for _, name in WROTE.findall(result.stdout))
    assert sorted(Path(n).name for n in wrote) == [f"img{i}.png" for i in range(5)]
    assert set(wrote.values()) == {1}
    ranks = {int(r): (int(d), int(s), int(f)) for r, d, s, f in RANK_SUMMARY.findall(result.stdout)}
    assert ranks == {0: (3, 0, 0), 1: (2, 0, 0)}  # indices 0, 2, 4 and 1, 3 of the sorted list
    assert GLOBAL_SUMMARY.findall(result.stdout) == [("5", "0", "0")]
    outputs = sorted(p.name for p in (workspace["root"] / "out").iterdir())
    assert outputs == [f"img{i}.png" for i in range(5)]


def test_a_failure_on_one_rank_does_not_cut_the_others_short(workspace: dict) -> None:
    """A rank with a bad file exits 1 only after the others finished (torchrun would stop them otherwise)."""
    out = workspace["root"] / "out_failure"  # its own outputs: the test does not depend on the one above
    out.mkdir()
    for i in range(5):  # existing outputs, so --skip-existing leaves only the broken file to process
        Image.new("RGB", (96, 80)).save(out / f"img{i}.png")
    (workspace["inputs"] / "zz_broken.png").write_bytes(b"not an image")
    try:
        result = torchrun(workspace, "--skip-existing", out=out)
    finally:
        (workspace["inputs"] / "zz_broken.png").unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    # torchrun itself reports a failed worker with a traceback of its own; none may come from stablesr.
    assert OUR_FRAME.search(f'File "{_PKG / "cli" / "upscale.py"}", line 1')  # the pattern does catch our frames
    assert not OUR_FRAME.search(result.stderr), result.stderr
    assert "exitcode  : -15" not in result.stderr  # no worker was killed: each exited with the job's code
    assert GLOBAL_SUMMARY.findall(result.stdout) == [("0", "5", "1")]
    errors = [line for line in result.stderr.splitlines() if "zz_broken.png" in line]
    assert len(errors) == 1 and errors[0].startswith("[rank 1/2] error: ")  # index 5 of 6 -> rank 1
