"""Shared fixtures: where ../shared lives (overridable), the tiny golden models, a fixed seed.

Missing shared data skips the tests that need it, except under ``STABLESR_REQUIRE_SHARED=1`` (set by
``.ci/run``), where it is a failure: a CI run must never go green by skipping its reference data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STABLESR_SHARED", REPO.parent / "shared"))
GOLDEN = Path(os.environ.get("STABLESR_GOLDEN", SHARED / "golden"))
DATA = SHARED / "data"
MANIFESTS = SHARED / "reference" / "manifests"
OFFICIAL_MD = SHARED / "reference" / "OFFICIAL.md"


def shared_required() -> bool:
    return os.environ.get("STABLESR_REQUIRE_SHARED", "").strip() not in ("", "0")


def require(path: Path, what: str = "") -> Path:
    """``path`` if it exists; otherwise skip the test (fail it under ``STABLESR_REQUIRE_SHARED=1``)."""
    if not path.exists():
        message = f"{path} not available" + (f" ({what})" if what else "")
        if shared_required():
            pytest.fail(f"{message}; STABLESR_REQUIRE_SHARED=1 makes missing shared data a failure", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require(GOLDEN / "index.json").parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA)


@pytest.fixture(scope="session")
def tiny_weights(golden_dir: Path) -> dict[str, Path]:
    """Official-format tiny checkpoints and configs shipped with the golden vectors."""
    return {
        "ldm": golden_dir / "weights" / "tiny_ldm.ckpt",
        "cfw": golden_dir / "weights" / "tiny_cfw.ckpt",
        "config": golden_dir / "configs" / "tiny_ldm_eps.json",
        "config_v": golden_dir / "configs" / "tiny_ldm_v.json",
        "cfw_config": golden_dir / "configs" / "tiny_cfw.json",
        "prompt_embeds": golden_dir / "weights" / "tiny_prompt_embeds.safetensors",
    }


def tiny_pipeline(tiny_weights: dict[str, Path]):
    """A fresh pipeline over the tiny official-format golden models, progress bars off."""
    from stablesr.pipeline import StableSRPipeline

    pipe = StableSRPipeline.from_single_file(tiny_weights["ldm"], tiny_weights["cfw"], config=tiny_weights["config"],
                                             prompt_embeds=tiny_weights["prompt_embeds"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def noise_image(width: int, height: int, seed: int = 0):
    """A seeded grey-noise RGB image (mean 128, sigma 40): the same pixels in every run, unlike
    ``PIL.Image.effect_noise``, whose generator no seed reaches."""
    import numpy as np
    from PIL import Image

    grey = np.random.default_rng(seed).normal(128, 40, (height, width)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))


@pytest.fixture
def one_thread():
    """The tiny networks are far too small to gain from threads; on a shared box threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def official_checkpoints() -> dict[str, dict[str, object]]:
    """OFFICIAL.md 1.1, read from the document itself: released file -> diffusion config, prediction, size.

    Tests check our tables against this (an independent source), never against tables derived from ours.
    """
    import re

    text = require(OFFICIAL_MD).read_text(encoding="utf-8")
    section = text.split("### 1.1", 1)[1].split("\n#", 1)[0]
    table: dict[str, dict[str, object]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([\w.]+\.ckpt)`", cells[0]) if len(cells) == 7 else None
        if name is None:
            continue
        config = re.search(r"`(configs/[\w/.-]+\.yaml)`", cells[2])
        prediction = re.match(r"\**(eps|v)\b", cells[4])
        size = re.match(r"(\d+)", cells[5])
        table[name.group(1)] = {"config": config.group(1) if config else None,
                                "prediction": prediction.group(1) if prediction else None,
                                "image_size": int(size.group(1)) if size else None}
    assert table, f"no checkpoint table found in {OFFICIAL_MD} section 1.1"
    return table
