"""Shared fixtures: where ../shared lives (overridable), the tiny golden models, a fixed seed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STABLESR_SHARED", REPO.parent / "shared"))
GOLDEN = Path(os.environ.get("STABLESR_GOLDEN", SHARED / "golden"))
DATA = SHARED / "data"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
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


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
